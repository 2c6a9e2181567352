"""Where a default file can be cut: the truncation points of each rule, what they cost, and where `truncate` lands.

    python bench/truncation_points.py --count 12 --mosaics 3 --crops 2 --ratios 1.5,1.7,2.0 \
        --out bench/results/truncation_points.json

Encodes each image once with every candidate a point (the stream's words do not depend on which
points the table lists), then, for the rule before issue 20 ("size": x_T, the last lossy state, the
exact image, and about 1% of the payload in points spread over the file's size) and for the t-grid
of each ratio (POINT_T_RATIO in diffcodec/codec.py; the "size" rule's share of partial points is
kept), rebuilds the file with that rule's table and measures its bytes, and for every T from the
last lossy state's t to 1000 the state `truncate --stop-at-t T` reaches (no model involved: the
same function the verb calls).  Images: validation CIFAR-10 (training indices from --first, never
the test set) at 32×32, 2×2 mosaics of them at 64×64, and centre crops of photos-train at 128×128.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from diffcodec.codec import CodecConfig, _choose_points, encode
from diffcodec.container import (FLAG_PARTIAL_POINTS, DfcFile, chain_position, encode_file, paper_timestep,
                                 truncate)
from diffcodec.images import load_centre_crops
from diffcodec.models.checkpoint import load_model


def with_points(full: DfcFile, picks: list[int]) -> bytes:
    points = tuple(full.points[i] for i in picks)
    flags = full.header.flags if any(p.partial for p in points) else full.header.flags & ~FLAG_PARTIAL_POINTS
    return encode_file(DfcFile(replace(full.header, flags=flags), points, full.words, full.image_crc32))


def evaluate(full: DfcFile, picks: list[int]) -> dict:
    from diffcodec.container import decode_file

    data = with_points(full, picks)
    f = decode_file(data)
    h = f.header
    lossy_ts = [paper_timestep(h, p.t) for p in f.points if p.t > 0]
    asked = range(max(1, lossy_ts[-1]), h.schedule_steps + 1)
    reached = [paper_timestep(h, truncate(f, chain_position(h, T)).points[-1].t) for T in asked]
    return {"bytes": len(data), "points": len(f.points), "lossy_points": len(lossy_ts),
            "partial_points": sum(p.partial for p in f.points), "lossy_ts": lossy_ts,
            "worst_ratio": max(r / T for r, T in zip(reached, asked)),
            "reached": {T: paper_timestep(h, truncate(f, chain_position(h, T)).points[-1].t) for T in (900, 500, 300, 100)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-train-lossless-4000.npy")
    ap.add_argument("--photos", default="../shared/data/photos-train")
    ap.add_argument("--first", type=int, default=3500)
    ap.add_argument("--count", type=int, default=12, help="32×32 validation images")
    ap.add_argument("--mosaics", type=int, default=3, help="64×64 mosaics of four validation images (after those)")
    ap.add_argument("--crops", type=int, default=2, help="128×128 centre crops of photos-train")
    ap.add_argument("--ratios", default="1.5,1.7,2.0")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    data = np.load(args.data)
    first = args.first
    images = [("32x32", data[first + i]) for i in range(args.count)]
    start = first + args.count
    for k in range(args.mosaics):
        q = data[start + 4 * k : start + 4 * k + 4]
        images.append(("64x64", np.concatenate([np.concatenate(q[:2], axis=1), np.concatenate(q[2:], axis=1)], axis=0)))
    images += [("128x128", c) for c in load_centre_crops(args.photos, 128, limit=args.crops)]
    ratios = [float(r) for r in args.ratios.split(",")]
    rows = []
    for k, (size, pixels) in enumerate(images):
        t0 = time.perf_counter()
        result = encode(pixels, "RGB", model, CodecConfig(points=100_000))
        full = result.file
        marks = [p.end_word for p in full.points]
        lossy = sum(p.t > 0 for p in full.points)
        ts = [s.t for s in result.lossy_steps]
        old = _choose_points(marks, None, lossy=lossy)
        row = {"size": size, "lossless_bytes_all_points": len(result.data), "size_rule": evaluate(full, old)}
        for r in ratios:
            row[f"ratio_{r:g}"] = evaluate(full, _choose_points(marks, None, lossy=lossy, ts=ts, ratio=r))
        rows.append(row)
        print(f"[{k + 1}/{len(images)}] {size}: size rule {row['size_rule']['bytes']} B, "
              + ", ".join(f"ratio {r:g} {row[f'ratio_{r:g}']['bytes']} B (worst {row[f'ratio_{r:g}']['worst_ratio']:.2f})"
                          for r in ratios) + f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
    summary = {}
    for size in dict.fromkeys(s for s, _ in images):
        sub = [r for r in rows if r["size"] == size]
        base = np.mean([r["size_rule"]["bytes"] for r in sub])
        summary[size] = {"images": len(sub), "size_rule_bytes": base}
        for rule in ["size_rule"] + [f"ratio_{r:g}" for r in ratios]:
            summary[size][rule] = {
                "mean_bytes": float(np.mean([r[rule]["bytes"] for r in sub])),
                "extra_bytes": float(np.mean([r[rule]["bytes"] for r in sub]) - base),
                "extra_percent": float(100 * (np.mean([r[rule]["bytes"] for r in sub]) / base - 1)),
                "mean_points": float(np.mean([r[rule]["points"] for r in sub])),
                "mean_lossy_points": float(np.mean([r[rule]["lossy_points"] for r in sub])),
                "mean_partial_points": float(np.mean([r[rule]["partial_points"] for r in sub])),
                "worst_ratio": float(max(r[rule]["worst_ratio"] for r in sub)),
                "reached_at_300": sorted({r[rule]["reached"][300] for r in sub}),
                "reached_at_500": sorted({r[rule]["reached"][500] for r in sub}),
            }
    print(json.dumps(summary, indent=1))
    if args.out:
        out = {"date": time.strftime("%Y-%m-%d"), "command": "python bench/truncation_points.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
            "summary": summary, "per_image": rows}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
