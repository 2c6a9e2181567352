"""Print the tables of BENCHMARKS.md from the JSON/CSV files bench/run_all.sh writes.

    python bench/report.py            # reads bench/results/, prints Markdown
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from diffcodec.rdcurve import rmse_at_rate

RESULTS = Path(__file__).resolve().parent / "results"


def last_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip().startswith("{")]
    return json.loads(lines[-1]) if lines else None


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))



def point_label(t, partial) -> str:
    """A table's name for a point: t, or for a partial point of the exact stage "0 (k%)" (k% of x_0 exact)."""
    return f"0 ({100 * float(partial):.0f}%)" if partial not in (None, "") else str(t)


def main() -> None:
    nll100 = last_json(RESULTS / "nll_s100.json")
    nll1000 = last_json(RESULTS / "nll_s1000_50.json")
    codec = json.loads((RESULTS / "codec_cifar.json").read_text())["summary"] if (RESULTS / "codec_cifar.json").exists() else None
    lossless = json.loads((RESULTS / "baselines_lossless.json").read_text())["results"]

    print("### Lossless, CIFAR-10 test images (bits/dim)\n")
    print("| method | bits/dim | images | source |\n|---|---|---|---|")
    if codec:
        print(f"| **diffcodec, full .dfc files** (S={codec['steps']}, quad spacing) | **{codec['file_bpd']:.3f}** | {codec['images']} | codec_cifar.json |")
        print(f"| its model's negative ELBO at the same steps | {codec['negative_elbo_bpd']:.3f} | {codec['images']} | codec_cifar.json |")
    rd_full = [r for r in read_csv(RESULTS / "rd_cifar100.csv") if r["t"] == "0" and not r.get("partial")]
    if rd_full:
        print(f"| **diffcodec, full .dfc files** (default: S=50, quad) | **{float(rd_full[0]['rate_bpd']):.3f}** | 100 | rd_cifar100.csv |")
    all500 = RESULTS / "rd_cifar500.json"
    if all500.exists():
        d = json.loads(all500.read_text())
        print(f"| **diffcodec, full .dfc files** (default: S=50, quad) | **{d['lossless_bpd']:.3f}** | {d['images']} | rd_cifar500.json |")
    if nll100:
        print(f"| model's negative ELBO, 100 uniform steps | {nll100['bpd']:.3f} | {nll100['images']} | nll_s100.json |")
    if nll1000:
        print(f"| model's negative ELBO, 1000 steps | {nll1000['bpd']:.3f} | {nll1000['images']} | nll_s1000_50.json |")
    for r in lossless:
        if r["codec"] in ("png", "webp-lossless", "jxl-lossless-e9", "jxl-lossless-e7"):
            print(f"| {r['codec']} | {r['rate_bpd']:.3f} | {r['n_images']} | baselines_lossless.json |")
    print("| DDPM (Ho et al. 2020, Table 2), L_simple / L_vlb-trained models, NLL bound | ≤ 3.75 / ≤ 3.70 | 10,000 | paper |")
    print("| Improved DDPM (Nichol & Dhariwal 2021), L_vlb | 2.94 | 10,000 | paper |")

    rd = read_csv(RESULTS / "rd_cifar100.csv")
    base = read_csv(RESULTS / "rd_cifar100-baselines.csv")
    if rd:
        curves: dict[str, list[tuple[float, float]]] = {}
        for row in base:
            family = row.get("family") or row.get("codec", "?").split("-")[0]
            if row.get("lossless") in ("True", "true", "1"):
                continue
            curves.setdefault(family, []).append((float(row["rate_bpd"]), float(row["rmse"])))
        families = sorted(curves)
        print("\n### Progressive lossy, CIFAR-10 test images: RMSE (0–255) at the same rate\n")
        print("| t | rate (bits/dim) | diffcodec RMSE | PSNR (dB) | " + " | ".join(families) + " |")
        print("|---|---|---|---|" + "---|" * len(families))
        shown = [r for r in rd if float(r["rate_bpd"]) > 0]
        step = max(1, len(shown) // 14)
        for r in shown[::step] + ([shown[-1]] if shown[-1] not in shown[::step] else []):
            rate, rmse = float(r["rate_bpd"]), float(r["rmse"])
            cells = []
            for f in families:
                e = rmse_at_rate(curves[f], rate)
                cells.append("–" if e is None else f"{e:.2f}")
            psnr = "∞" if rmse == 0 else f"{20 * math.log10(255 / rmse):.2f}"
            print(f"| {point_label(r['t'], r.get('partial'))} | {rate:.3f} | {rmse:.2f} | {psnr} | " + " | ".join(cells) + " |")
        print("\n(–: the codec has no setting at that rate on 32×32 images; its smallest files are larger.)")
        full = read_csv(RESULTS / "rd_cifar100_full.csv")
        coarse = read_csv(RESULTS / "rd_cifar100_coarse.csv")
        print("\n#### At fixed rates: the best prefix at or below the rate (a step function, as a cut file decodes) "
              "against the classical codecs interpolated between their settings\n")
        cols = (["diffcodec (default)"] + (["diffcodec, coarse-to-fine (--exact-method coarse)"] if coarse else [])
                + (["diffcodec, whole chain (--exact-from-t 1)"] if full else []) + families)
        print("| rate (bits/dim) | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        for rate in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0):
            cells = []
            for curve in [c for c in (rd, coarse, full) if c]:
                below = [float(r["rmse"]) for r in curve if 0 < float(r["rate_bpd"]) <= rate]
                cells.append(f"{min(below):.2f}" if below else "–")
            for f in families:
                e = rmse_at_rate(curves[f], rate)
                cells.append("–" if e is None else f"{e:.2f}")
            print(f"| {rate:.2f} | " + " | ".join(cells) + " |")
        for curve, what in ((coarse, "coarse-to-fine"), (full, "whole chain's")):
            lossless_rate = [float(r["rate_bpd"]) for r in curve if float(r["rmse"]) == 0]
            if lossless_rate:
                print(f"\n(The {what} lossless files: {lossless_rate[0]:.3f} bits/dim, against {float(shown[-1]['rate_bpd']):.3f} "
                      "for the default, which starts the exact stage where the lossless file is smallest.)")
        print("\nFor reference (not measured here): DDPM's Table 4 (progressive coding bound on the CIFAR-10 test set, "
              "35.7M model) gives RMSE 18.5 at 0.054 bits/dim, 12.0 at 0.120 and 0.95 at 1.776; UQDM (ICLR 2025) reports "
              "21.9 dB at 0.28 bits/dim and 31.2 dB at 0.93.")

    if all500.exists():
        fixed_rate_table_500(json.loads(all500.read_text()))
    coarse500 = RESULTS / "rd_cifar500_coarse.json"
    if coarse500.exists():
        fixed_rate_table_500(json.loads(coarse500.read_text()), "diffcodec, coarse-to-fine", coarse500.name)

    if codec:
        speed_rows = [(codec, "default")]
        single = RESULTS / "codec_cifar_1thread.json"
        if single.exists():
            speed_rows.append((json.loads(single.read_text())["summary"], "1 search thread"))
        print("\n### Speed, 32×32 image, 1 torch thread\n")
        print("| search threads | encode s/image | decode s/image | network s per pass | encode ÷ its network passes | "
              "decode ÷ its network passes |\n|---|---|---|---|---|---|")
        for row, label in speed_rows:
            if "encode_over_network" in row:
                print(f"| {label} ({row['machine']}) | {row['encode_s_per_image']:.2f} | {row['decode_s_per_image']:.2f} | "
                      f"{row['network_s_per_evaluation']:.4f} | {row['encode_over_network']:.2f} | {row['decode_over_network']:.2f} |")
        print(f"\nfile ÷ negative ELBO: {codec['file_over_elbo']:.3f}; file ÷ realized KL of its own trajectory: "
              f"{codec['file_over_trajectory_kl']:.3f}; exact round trip on all: {codec['all_exact']}")
        b = codec.get("breakdown_bits_per_image")
        if b:
            elbo_bits = codec["negative_elbo_bpd"] * 3072
            total = b["header_bits"] + b["channel_bits"] + b["exact_bits"]
            print(f"\n#### Where the bits of a 32×32 file go (S={codec['steps']}, mean of {codec['images']} images)\n")
            print("| part | bits | ideal bits | ratio |\n|---|---|---|---|")
            print(f"| header and point table | {b['header_bits']:.0f} | 0 | – |")
            print(f"| channel-simulated steps x_T … x_exact_from | {b['channel_bits']:.0f} | {b['channel_kl_bits']:.0f} (their KL) | "
                  f"{b['channel_bits'] / b['channel_kl_bits']:.3f} |")
            print(f"| exact stage (x_0 from x_exact_from) | {b['exact_bits']:.0f} | {b['exact_ideal_bits']:.0f} (−log₂ p) | "
                  f"{b['exact_bits'] / b['exact_ideal_bits']:.3f} |")
            print(f"| **file** | **{total:.0f}** | {elbo_bits:.0f} (negative ELBO at S={codec['steps']}) | **{total / elbo_bits:.3f}** |")

    profile_tables()
    sweep = RESULTS / "chunk_sweep.json"
    if sweep.exists():
        d = json.loads(sweep.read_text())
        print(f"\n### Chunk size, spare candidates, target gain, steps ({d['images']} images, 1 thread)\n")
        print("| chunk_bits | extra candidate bits | max candidate bits | target gain | steps | file bits/dim | trajectory KL bits/dim | "
              "exact stage from t (median) | encode s/image |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in d["rows"]:
            print(f"| {r['chunk_bits']} | {r['extra_candidate_bits']} | {r['max_candidate_bits']} | {r['target_gain']} | "
                  f"{r.get('steps', d['steps'])} | {r['file_bpd']:.3f} | {r['trajectory_kl_bpd']:.3f} | "
                  f"{statistics.median(r['exact_from_t']):g} | {r['encode_s_per_image']:.2f} |")

    photo_files = sorted(RESULTS.glob("photos_crop*.json"), key=lambda p: int(p.stem.split("crop")[1]))
    for photos in photo_files + sorted(RESULTS.glob("photos_full*.json")):
        data = json.loads(photos.read_text())
        s = data["summary"]
        what = f"centre crops {s['crop']}×{s['crop']}" if s["crop"] else "whole photos (" + ", ".join(s.get("sizes", [])) + ")"
        print(f"\n### Photos: {what} of {s['images']} photos, lossless (bits/pixel)\n")
        print("| method | bits/pixel |\n|---|---|")
        print(f"| diffcodec (exact: {s['all_exact']}) | {s['diffcodec_bpp']:.3f} |")
        for k, v in s["lossless_bpp"].items():
            print(f"| {k} | {v:.3f} |")
        print(f"\nencode {s['encode_s_per_megapixel']:.0f} s/megapixel, decode {s['decode_s_per_megapixel']:.0f} s/megapixel "
              f"(one torch thread; {photos.name})")
        if "curve" in data:
            photo_rd_table(data, s["crop"])


def fixed_rate_table_500(data: dict, label: str = "diffcodec (default)", source: str = "rd_cifar500.json") -> None:
    """The best prefix at or below fixed rates on all images of ``source``, against baselines_lossy.json (same images)."""
    lossy = json.loads((RESULTS / "baselines_lossy.json").read_text())
    curves = {f: [(r["rate_bpd"], r["rmse"]) for r in rows if not r["lossless"]] for f, rows in lossy["curves"].items()}
    points = data["curve"]["points"]
    print(f"\n#### All {data['images']} test images: the best prefix at or below each rate ({source}) against the "
          f"classical codecs on the same {lossy['n_images']} images (baselines_lossy.json)\n")
    print(f"| rate (bits/dim) | {label} | " + " | ".join(curves) + " |\n|---|---|" + "---|" * len(curves))
    for rate in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0):
        below = [p["rmse"] for p in points if 0 < p["rate_bpd"] <= rate]
        cells = [f"{min(below):.2f}" if below else "–"]
        for f in curves:
            e = rmse_at_rate(curves[f], rate)
            cells.append("–" if e is None else f"{e:.2f}")
        print(f"| {rate:.2f} | " + " | ".join(cells) + " |")
    print(f"\n(Lossless: {data['lossless_bpd']:.3f} bits/dim, every file exact: {data['all_exact']}; exact stage per image: "
          + ", ".join(f"{k} {v}" for k, v in data["exact_methods"].items() if v) + ".)")


def profile_tables() -> None:
    """Share of encode and decode time per component (bench/profile_codec.py)."""
    for path in sorted(RESULTS.glob("profile_*.json")):
        d = json.loads(path.read_text())
        per = "image" if d["pixels_per_image"] == 1024 else "megapixel"
        table = d["seconds_per_image"] if per == "image" else d["seconds_per_megapixel"]
        side = int(round(d["pixels_per_image"] ** 0.5))
        print(f"\n### Where the time goes: {side}×{side} images, S = {d['config']['steps']}, {d['machine']} ({path.name})\n")
        print(f"| component | encode s/{per} | share | decode s/{per} | share |\n|---|---|---|---|---|")
        for k in ("network", "channel simulation", "entropy coding", "exact stage", "other", "total"):
            if k not in table["encode"]:
                continue
            e, dd = table["encode"][k], table["decode"][k]
            print(f"| {k} | {e:.2f} | {100 * e / table['encode']['total']:.0f}% | {dd:.2f} | {100 * dd / table['decode']['total']:.0f}% |")


def photo_rd_table(data: dict, crop: int) -> None:
    """diffcodec's pooled curve on the crops against the lossy sweeps at the same rate (bits/pixel = 3 × bits/dim)."""
    curves = {f: [(r["rate_bpd"], r["rmse"]) for r in rows] for f, rows in data["lossy"].items() if isinstance(rows, list)}
    families = sorted(curves)
    print(f"\n#### Photos {f'{crop}×{crop}' if crop else 'whole'}: RMSE (0–255) at the same rate\n")
    print("| t | bits/pixel | diffcodec RMSE | PSNR (dB) | " + " | ".join(families) + " |")
    print("|---|---|---|---|" + "---|" * len(families))
    shown = [p for p in data["curve"]["points"] if p["rate_bpd"] > 0]
    step = max(1, len(shown) // 12)
    for p in shown[::step] + ([shown[-1]] if shown[-1] not in shown[::step] else []):
        cells = []
        for f in families:
            e = rmse_at_rate(curves[f], p["rate_bpd"])
            cells.append("–" if e is None else f"{e:.2f}")
        psnr = "∞" if p["rmse"] == 0 else f"{20 * math.log10(255 / p['rmse']):.2f}"
        print(f"| {point_label(p['t'], p.get('partial'))} | {3 * p['rate_bpd']:.3f} | {p['rmse']:.2f} | {psnr} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
