"""Where a prefix's bits go beyond the KL it carries: header and truncation table, or the stream.

    python bench/prefix_overhead.py --crop 128 --gains 1.0,1.4 --out bench/results/prefix_overhead_crop128.json

Encodes the centre crop of the first photo(s) once per target gain and splits each lossy prefix's
rate (the file cut after that step, as ``StepReport.bits`` counts it) into

- *head*: the header and the truncation table up to that point (every point is a row of ~4 bytes);
- *payload*: the stream's words a decoder needs there (channel-simulated indices, step levels, the
  range coder's look-ahead word and rounding to whole words),

each divided by the cumulative KL of the steps so far (the ELBO terms the prefix carries), summed
over the images at each t that all of them reach (each image's exact stage starts where its file
is smallest).  The target gain is encoder-only (docs/codec.md): above 1 each chunk aims past
the posterior, which costs index bits on purpose and buys a shorter trajectory.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from diffcodec.codec import CodecConfig, encode
from diffcodec.images import load_centre_crops
from diffcodec.models.checkpoint import load_model


def prefix_rows(steps) -> list[dict]:
    """Per lossy prefix: t, KL, and head / payload / total bits over that KL (sums over images)."""
    rows = []
    for s in steps:
        if s.partial is not None or s.t == 0 or s.kl_bits <= 0:
            continue
        head = s.bits - s.payload_bits
        rows.append({"t": s.t, "kl_bits": s.kl_bits, "head_bits": head, "payload_bits": s.payload_bits,
                     "head_over_kl": head / s.kl_bits, "payload_over_kl": s.payload_bits / s.kl_bits,
                     "total_over_kl": s.bits / s.kl_bits})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/photos")
    ap.add_argument("--crop", type=int, default=128, help="centre crop size; 0: the whole photo")
    ap.add_argument("--limit", type=int, default=1)
    ap.add_argument("--gains", default="1.0,1.4", help="target gains to compare, comma-separated")
    ap.add_argument("--model", default=None)
    ap.add_argument("--search-threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model = load_model(args.model)
    crops = load_centre_crops(args.data, args.crop or 1 << 16, args.limit)
    results = {}
    for gain in (float(g) for g in args.gains.split(",")):
        per_t: dict[int, dict] = {}
        reached: dict[int, int] = {}
        file_bits = 0
        for px in crops:
            res = encode(px, "RGB", model, CodecConfig(target_gain=gain, search_threads=args.search_threads))
            file_bits += res.bits_total
            for row in prefix_rows(res.steps):
                reached[row["t"]] = reached.get(row["t"], 0) + 1
                acc = per_t.setdefault(row["t"], {"kl_bits": 0.0, "head_bits": 0, "payload_bits": 0})
                for k in acc:
                    acc[k] += row[k]
        rows = [{"t": t, **acc, "head_over_kl": acc["head_bits"] / acc["kl_bits"],
                 "payload_over_kl": acc["payload_bits"] / acc["kl_bits"],
                 "total_over_kl": (acc["head_bits"] + acc["payload_bits"]) / acc["kl_bits"]}
                for t, acc in sorted(per_t.items(), reverse=True) if reached[t] == len(crops)]  # states every image has
        results[str(gain)] = {"file_bits": file_bits, "prefixes": rows}
        print(f"\ntarget gain {gain}: files {file_bits} bits in all")
        print("| t | KL (bits) | head ÷ KL | payload ÷ KL | prefix ÷ KL |\n|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['t']} | {r['kl_bits']:.0f} | {r['head_over_kl']:.3f} | {r['payload_over_kl']:.3f} | "
                  f"{r['total_over_kl']:.3f} |", flush=True)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, 1 torch thread",
        "command": "python bench/prefix_overhead.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                               if v is not None),
        "sizes": [f"{px.shape[1]}×{px.shape[0]}" for px in crops],
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
