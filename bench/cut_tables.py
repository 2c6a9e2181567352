"""What the truncation-point table costs a cut file, on validation images: three ways to account a prefix.

    python bench/cut_tables.py --limit 50 --out bench/results/cut_tables.json

For each image (training-set indices 3500.. of cifar10-train-lossless-4000.npy, never the test PNGs) it
encodes with the default table (a point every POINT_T_RATIO in t) and with the table before that grid
(``point_t_ratio=inf``), and rates every coded state three ways:

* ``grid``: the file cut there as ``truncate`` cuts it today, keeping every point before it (the
  codec's own step report: :attr:`StepReport.bits`);
* ``old``: the same with the table before the grid;
* ``lean``: a cut file whose table lists the cut point alone (its check protects the state it ends
  at, and a wrong earlier step leaves that state wrong too), whatever the full file's table.

Prints pooled RMSE (0–255) at fixed rates, interpolated linearly in log-rate, and the lossless sizes.

Since `truncate` writes lean cut files (2026-12-05) the codec's own step report is ``lean``, so the three
rows agree; the script still gives the lossless cost of the two tables (cut_tables.json is the run
before that change, cut_tables_v6.json with format 6's header, cut_tables_v6_trim.json with its
fewest-words prefixes too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
from diffcodec.models.checkpoint import load_model

from diffcodec.codec import CodecConfig, encode
from diffcodec.container import FLAG_PARTIAL_POINTS, TruncationPoint, head_size
from diffcodec.rdcurve import RDAccumulator, rmse_at_rate

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train-lossless-4000.npy"
RATES = (0.08, 0.1, 0.12, 0.18, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)



def lean_bits(res, step_index: int) -> int:
    """Bits of a file cut at this step whose table holds the cut point alone."""
    s = res.steps[step_index]
    h = res.file.header
    partial = s.partial is not None
    # Only the size of the subpixel count's varint matters here: 2 bytes for 128..16,383, which holds every
    # partial point of a 32×32 image (a stage is 512 subpixels).
    sub = 512 if partial else 0
    here = TruncationPoint(t=0 if s.t == 0 else _chain_t(res, s), end_word=s.payload_bits // 32, check=0, subpixels=sub)
    flags = (h.flags | FLAG_PARTIAL_POINTS) if partial else (h.flags & ~FLAG_PARTIAL_POINTS)
    header = type(h)(**{**h.__dict__, "flags": flags}) if flags != h.flags else h
    return 8 * (head_size(header, (here,), complete=False) + 4 * (s.payload_bits // 32))


def _chain_t(res, s) -> int:
    """Chain position of a lossy step (the table stores chain positions, not the paper's t)."""
    lossy = res.lossy_steps
    return res.file.header.num_steps - lossy.index(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--first", type=int, default=3500)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    images = np.load(args.data, mmap_mode="r")
    index = list(range(args.first, len(images), args.step))[: args.limit]
    model = load_model(None)
    curves = {"grid": [], "old": [], "lean": []}
    lossless = {"grid": 0, "old": 0}
    dims = 0
    t0 = time.perf_counter()
    for n, i in enumerate(index):
        pixels = np.ascontiguousarray(images[i])
        runs = {name: encode(pixels, "RGB", model, CodecConfig(search_threads=1, point_t_ratio=ratio))
                for name, ratio in (("grid", CodecConfig.point_t_ratio), ("old", math.inf))}
        d = pixels.size
        dims += d
        for name, res in runs.items():
            lossless[name] += 8 * len(res.data)
            curves[name].append(list(res.steps))
        res = runs["grid"]
        curves["lean"].append([dataclasses.replace(s, bits=lean_bits(res, k)) if s.rmse > 0 else s
                               for k, s in enumerate(res.steps)])
        print(f"[{n + 1}/{len(index)}] image {i}: {8 * len(runs['grid'].data) / d:.3f} / {8 * len(runs['old'].data) / d:.3f} bpd "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    # Pooled as rd-curve pools them (by t, partial points by share).
    table = {}
    for name, per_image in curves.items():
        acc = RDAccumulator(schedule_steps=model.diffusion.num_steps)
        for steps in per_image:
            acc.add(steps, dims // len(per_image))
        pooled = [(p.rate_bpd, p.rmse) for p in acc.curve().points if p.rmse > 0]
        table[name] = [rmse_at_rate(pooled, r) for r in RATES]
    out = {"command": "python bench/cut_tables.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                              if k not in ("data", "out")),
           "images": len(index), "rates": RATES, "rmse": table,
           "lossless_bpd": {k: v / dims for k, v in lossless.items()}}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
