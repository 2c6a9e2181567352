"""Format 7's static step code against format 6's adaptive one, on validation images.

    PYTHONPATH=<format-6 tree> python bench/step_code_v7.py encode --out v6.json
    PYTHONPATH=<format-7 tree> python bench/step_code_v7.py encode --out v7.json
    python bench/step_code_v7.py compare v6.json v7.json \
        --out bench/results/step_code_v7.json

``encode`` codes the images with the diffcodec on ``PYTHONPATH`` (default encoder: S = 50 quad, 32×32, one torch
and one search thread), keeps every step report (cut files' real bits, RMSE) (``lossy_prefix_bits_*``: the same t in both runs) and the lossless size, and
checks that every file decodes: the whole file to the exact image, and the file cut at each of its lossy truncation
points to the state the encoder reported (its RMSE).  The images are cut_tables.py's: CIFAR-10 training-set
indices 3500, 3510, … (validation; never the test PNGs).  ``compare`` pools each run as rd-curve does and prints
RMSE at fixed rates and lossless bits/dim.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train-lossless-4000.npy"
RATES = (0.1, 0.12, 0.18, 0.25, 0.35, 0.5)


def run_encode(args) -> None:
    import torch

    import diffcodec
    from diffcodec.codec import CodecConfig, decode, encode
    from diffcodec.container import decode_file, truncate
    from diffcodec.format import VERSION
    from diffcodec.models.checkpoint import load_model

    torch.set_num_threads(1)
    if args.photos is not None:  # centre crops of a folder of photos (validation: photos-train), indexed 0, 1, …
        from diffcodec.images import load_centre_crops

        images = load_centre_crops(args.photos, args.crop, args.limit)
        index = list(range(len(images)))
    else:
        images = np.load(args.data, mmap_mode="r")
        index = list(range(args.first, len(images), args.step))[: args.limit]
    model = load_model(None)
    out = {"tree": str(Path(diffcodec.__file__).parents[1]), "version": VERSION, "exact_method": args.exact_method,
           "target_gain": args.target_gain, "steps": args.steps, "images": []}
    t0 = time.perf_counter()
    for n, i in enumerate(index):
        pixels = np.ascontiguousarray(images[i])
        res = encode(pixels, "RGB", model, CodecConfig(search_threads=1, exact_method=args.exact_method,
                                                       target_gain=args.target_gain, steps=args.steps))
        dfc = decode_file(res.data)
        exact = bool(np.array_equal(decode(res.data, model).pixels, pixels))
        cuts_ok = None if args.no_cut_check else True  # None: not checked
        for p in dfc.points if not args.no_cut_check else ():
            if p.t == 0:
                continue
            got = decode(truncate(dfc, p.t), model)
            want = [s for s in res.steps if s.point and s.t == dfc.header.timeline.paper_t(p.t)]
            err = float(np.sqrt(np.mean((got.pixels.astype(np.float64) - pixels) ** 2)))
            cuts_ok = cuts_ok and len(want) == 1 and abs(err - want[0].rmse) < 1e-9
        out["images"].append({"index": i, "bits": 8 * len(res.data), "dims": int(pixels.size), "exact": exact,
                              "cuts_ok": cuts_ok, "steps": [{"t": s.t, "bits": s.bits, "kl_bits": s.kl_bits,
                                                             "rmse": s.rmse, "partial": s.partial} for s in res.steps]})
        print(f"[{n + 1}/{len(index)}] image {i}: {8 * len(res.data) / pixels.size:.4f} bpd, exact {exact}, cuts {cuts_ok} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    args.out.write_text(json.dumps(out) + "\n")


def pooled(run: dict, rates: tuple[float, ...] = RATES) -> tuple[list[float | None], float]:
    from diffcodec.rdcurve import RDAccumulator, rmse_at_rate

    acc = RDAccumulator(schedule_steps=1000)
    for im in run["images"]:
        acc.add([SimpleNamespace(**s) for s in im["steps"]], im["dims"])
    curve = [(p.rate_bpd, p.rmse) for p in acc.curve().points if p.rmse > 0]
    lossless = sum(im["bits"] for im in run["images"]) / sum(im["dims"] for im in run["images"])
    return [rmse_at_rate(curve, r) for r in rates], lossless


def run_compare(args) -> None:
    runs = [json.loads(Path(p).read_text()) for p in args.runs]
    if len({tuple(im["index"] for im in r["images"]) for r in runs}) != 1:
        raise SystemExit("the runs hold different images")
    rows, rates = {}, tuple(args.rates or RATES)
    print("| run | " + " | ".join(f"RMSE at {r}" for r in rates) + " | lossless bits/dim | files decode |")
    print("|---" * (len(rates) + 3) + "|")
    for path, r in zip(args.runs, runs):
        rmse, lossless = pooled(r, rates)
        ok = all(im["exact"] and im["cuts_ok"] for im in r["images"])
        ok = "cuts not checked" if ok is None or any(im["cuts_ok"] is None for im in r["images"]) else ok
        rows[args.label[len(rows)] if args.label else f"v{r['version']}"] = {
            "rmse": rmse, "lossless_bpd": lossless, "all_decode": ok, "exact_method": r.get("exact_method", "default")}
        print(f"| {list(rows)[-1]} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in rmse) + f" | {lossless:.4f} | {ok} |")
    a, b = runs[0], runs[-1]
    prefix = []
    for ia, ib in zip(a["images"], b["images"]):
        for sa, sb in zip(ia["steps"], ib["steps"]):
            if sa["t"] > 0 and sa["t"] == sb["t"]:
                prefix.append((sa["bits"], sb["bits"]))
    pa, pb = np.array(prefix, dtype=np.float64).T
    summary = {"command": "python bench/step_code_v7.py compare " + " ".join(args.runs), "images": len(a["images"]),
               "first_index": a["images"][0]["index"], "rates": rates, "runs": rows,
               "lossy_prefix_bits_ratio": float(pb.sum() / pa.sum()),
               "lossy_prefixes": len(pa), "lossy_prefix_bits_saved_per_prefix": float((pa.sum() - pb.sum()) / len(pa)),
               "lossless_bits_saved_per_image": float(sum(i["bits"] for i in a["images"]) - sum(i["bits"] for i in b["images"]))
               / len(a["images"])}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="encode and check the images with the diffcodec on PYTHONPATH")
    e.add_argument("--data", type=Path, default=DATA)
    e.add_argument("--photos", type=Path, default=None, help="instead: centre crops of the photos in this folder")
    e.add_argument("--crop", type=int, default=64, help="with --photos: the crops' side")
    e.add_argument("--first", type=int, default=3500)
    e.add_argument("--step", type=int, default=10)
    e.add_argument("--limit", type=int, default=40)
    e.add_argument("--exact-method", default="auto", choices=["auto", "learned", "coarse", "linear"])
    e.add_argument("--steps", type=int, default=50, help="CodecConfig.steps, S (the encoder's default 50)")
    e.add_argument("--target-gain", type=float, default=1.4, help="CodecConfig.target_gain (the encoder's default 1.4)")
    e.add_argument("--no-cut-check", action="store_true",
                   help="skip decoding each lossy cut (3-5x faster; the whole file is still decoded and checked exact)")
    e.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="RMSE at fixed rates and lossless bits/dim of encode's runs")
    c.add_argument("runs", nargs="+")
    c.add_argument("--rates", type=float, nargs="+", default=None, help=f"bits/dim (default {RATES})")
    c.add_argument("--label", nargs="+", default=None, help="a name per run (default: its format version)")
    c.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run_encode(args) if args.command == "encode" else run_compare(args)


if __name__ == "__main__":
    main()
