"""The baselines of issue 19 on a folder of images: HEVC intra (what BPG is) and two progressive files.

Measures, with ``diffcodec.baselines.measure`` (rate from the real sizes, RMSE on the 0-255
scale pooled over every subpixel of the set):

* ``hevc444``, ``hevc420``: x265 ``--preset veryslow --ctu 32`` one intra frame at 15 QPs,
  decoded by libde265, sizes BPG-style (slice NAL units + 8 bytes); the same encodings'
  raw sizes (slice NAL units alone, exactly 8 bytes an image fewer) are reported beside them.
* ``j2k-layers``: one JPEG 2000 file per image with 16 quality layers (the last lossless),
  cut after each layer.
* ``jpeg-prog-q75``, ``jpeg-prog-q95``: one progressive JPEG per image, cut after each scan.

and prints RMSE interpolated at fixed rates (linear in log-rate between settings or cuts, as
bench/report.py does), beside diffcodec's own curves on the same images when
bench/results/rd_cifar500*.json exist and the best of JPEG, WebP, AVIF and JPEG XL from
bench/results/baselines_lossy.json.

Example:
    python bench/baselines_progressive.py --data ../shared/data/cifar10-test-png \\
        --out bench/results/baselines_progressive.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from diffcodec import baselines
from diffcodec.errors import DiffcodecError
from diffcodec.images import IMAGE_SUFFIXES, load_image
from diffcodec.rdcurve import rmse_at_rate

FAMILIES = ("hevc444", "hevc420", "j2k-layers", "jpeg-prog-q75", "jpeg-prog-q95")
RATES = (0.12, 0.18, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
RESULTS = Path(__file__).resolve().parent / "results"



def reference_curves(n_images: int) -> dict[str, list[list[tuple[float, float]]]]:
    """Earlier results on the same images, each a list of curves whose lowest RMSE at a rate counts:
    diffcodec's curves, and JPEG, WebP, AVIF and JPEG XL together (their lower envelope)."""
    found: dict[str, list[list[tuple[float, float]]]] = {}
    for name, label in (("rd_cifar500.json", "diffcodec (default)"), ("rd_cifar500_coarse.json", "diffcodec --exact-method coarse")):
        path = RESULTS / name
        if path.exists():
            data = json.loads(path.read_text())
            if data["images"] == n_images:
                found[f"{label}, {name}"] = [[(p["rate_bpd"], p["rmse"]) for p in data["curve"]["points"]]]
    path = RESULTS / "baselines_lossy.json"
    if path.exists():
        data = json.loads(path.read_text())
        if data["n_images"] == n_images:
            found["best of JPEG/WebP/AVIF/JPEG XL, baselines_lossy.json"] = [
                [(r["rate_bpd"], r["rmse"]) for r in rows if not r["lossless"]]
                for family, rows in data["curves"].items() if family in ("jpeg", "webp", "avif", "jxl")]
    return found


# Single files cut at their truncation points: what a file cut to at most a rate decodes to is its best
# cut at or below that rate (a step function, as BENCHMARKS.md's other tables give diffcodec's prefixes).
PROGRESSIVE = ("j2k-layers", "jpeg-prog-q75", "jpeg-prog-q95")


def step_rmse(curve: list[tuple[float, float]], rate: float) -> float | None:
    """The lowest RMSE among the points at or below ``rate`` (None if there is none)."""
    below = [e for r, e in curve if 0 < r <= rate]
    return min(below) if below else None


def tables(curves: dict[str, list[dict]], n_images: int) -> dict:
    """RMSE at RATES: every curve interpolated (issue 19's table), and single-file curves as step functions."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for family, rows in curves.items():
        label = family + (", BPG-style size" if family.startswith("hevc") else "")
        lines[label] = [(r["rate_bpd"], r["rmse"]) for r in rows]
        if family.startswith("hevc"):
            lines[family + ", raw size"] = [(r["raw_rate_bpd"], r["rmse"]) for r in rows]
    interpolated = {label: [rmse_at_rate(c, rate) for rate in RATES] for label, c in lines.items()}
    step = {label: [step_rmse(c, rate) for rate in RATES] for label, c in lines.items() if label in PROGRESSIVE}
    # Earlier results, when they were measured on as many images (the same ones when --data and --limit match theirs).
    for label, group in reference_curves(n_images).items():
        cells = []
        for rate in RATES:
            found = [e for e in (rmse_at_rate(c, rate) for c in group) if e is not None]
            cells.append(min(found) if found else None)
        interpolated[label] = cells
        if label.startswith("diffcodec"):
            step[label] = [step_rmse(group[0], rate) for rate in RATES]
    return {
        "rates": list(RATES),
        "table": interpolated,
        "table_note": "RMSE linear in log-rate between adjacent settings or cuts (None outside a curve); "
                      "for JPEG/WebP/AVIF/JPEG XL the lowest of the four",
        "step_table": step,
        "step_table_note": "single files cut at their truncation points: the lowest RMSE of a cut at or below the rate",
    }


def print_tables(report: dict) -> None:
    for key in ("table", "step_table"):
        print(f"\n{report[key + '_note']}\n")
        print("| rate (bits/dim) | " + " | ".join(f"{r:g}" for r in report["rates"]) + " |")
        print("|---|" + "---|" * len(report["rates"]))
        for label, cells in report[key].items():
            print(f"| {label} | " + " | ".join("–" if e is None else f"{e:.2f}" for e in cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="folder of images (sorted by name)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--tables-from", type=Path, default=None,
                        help="measure nothing: recompute the tables of this results file (e.g. after the reference files changed)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated (default: {','.join(FAMILIES)})")
    args = parser.parse_args(argv)
    if args.tables_from is not None:
        report = json.loads(args.tables_from.read_text())
        report.update(tables(report["curves"], report["n_images"]))
        print_tables(report)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return 0
    if args.data is None:
        parser.error("--data is required (unless --tables-from)")

    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not paths:
        parser.error(f"no images in {args.data}")
    images = [load_image(p).pixels for p in paths]
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in families:
        try:
            baselines.lossy_sweep(family)
        except DiffcodecError as exc:
            parser.error(str(exc))

    curves: dict[str, list[dict]] = {}
    unavailable = []
    start = time.perf_counter()
    for family in families:
        sweep = baselines.lossy_sweep(family)
        if not type(sweep[0]).available():
            print(f"{family}: not available here, skipped", file=sys.stderr)
            unavailable.append(family)
            continue
        rows = []
        for codec in sweep:
            result = baselines.measure(codec, images)
            if isinstance(codec, baselines.HEVC):
                # The same encodings counted without the BPG-style header: slice NAL units alone.
                raw_bytes = result["total_bytes"] - codec.BPG_HEADER_BYTES * result["n_images"]
                result["raw_total_bytes"] = raw_bytes
                result["raw_rate_bpd"] = 8 * raw_bytes / result["n_subpixels"]
            rows.append(result)
            print(f"{codec.name:24s} {result['rate_bpd']:.3f} bits/dim  rmse {result['rmse']:6.2f}", file=sys.stderr, flush=True)
        curves[family] = rows

    report = {
        "script": "bench/baselines_progressive.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "data": str(args.data),
        "n_images": len(images),
        "first_image": paths[0].name,
        "last_image": paths[-1].name,
        "unavailable": unavailable,
        "versions": baselines.library_versions(),
        "seconds": time.perf_counter() - start,
        **tables(curves, len(images)),
        "curves": curves,
    }
    print_tables(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
