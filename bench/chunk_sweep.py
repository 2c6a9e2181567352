"""How chunk size, spare candidates and the target gain trade index cost against sample fidelity (docs/codec.md).

    python bench/chunk_sweep.py --limit 6 --out bench/results/chunk_sweep.json

Encodes the same test images with several (chunk_bits, extra_candidate_bits, max_candidate_bits,
target_gain) settings at the default steps and reports, per setting: file bits/dim, the realized KL of the
trajectory (a sample biased toward p makes later steps carry more), where the exact stage
started, and encode seconds per image (one torch thread, one search thread).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from diffcodec.codec import CodecConfig, encode
from diffcodec.images import load_folder_tiles
from diffcodec.models.checkpoint import load_model

# The first row is the codec's settings before 2026-11-24; (13, 3, 16, 1.4) is the default since.
SETTINGS = [(10, 5, 16, 1.0), (13, 3, 16, 1.0), (10, 5, 16, 1.4), (13, 2, 16, 1.4), (13, 3, 16, 1.4), (13, 3, 16, 1.8),
            (14, 3, 17, 1.4)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--model", default=None)
    ap.add_argument("--settings", default=None, metavar="C,E,M,G[,S];...",
                    help="settings to sweep: chunk_bits, extra and max candidate bits, target gain, optionally steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    settings = SETTINGS if args.settings is None else [
        tuple(float(v) if i == 3 else int(v) for i, v in enumerate(item.split(","))) for item in args.settings.split(";")]

    model = load_model(args.model)
    images = load_folder_tiles(args.data, limit=args.limit)
    dims = images[0].size
    rows = []
    for chunk_bits, extra, most, gain, *steps in settings:
        config = replace(CodecConfig(), chunk_bits=chunk_bits, extra_candidate_bits=extra, max_candidate_bits=most,
                         target_gain=gain, search_threads=1, steps=steps[0] if steps else CodecConfig().steps)
        start = time.perf_counter()
        results = [encode(px, "RGB", model, config) for px in images]
        seconds = (time.perf_counter() - start) / len(images)
        rows.append({
            "chunk_bits": chunk_bits, "extra_candidate_bits": extra, "max_candidate_bits": most, "target_gain": gain,
            "steps": config.steps,
            "file_bpd": float(np.mean([r.bits_total for r in results]) / dims),
            "trajectory_kl_bpd": float(np.mean([r.steps[-1].kl_bits for r in results]) / dims),
            "exact_from_t": [r.lossy_steps[-1].t for r in results],
            "encode_s_per_image": seconds,
        })
        print(json.dumps(rows[-1]), flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "images": len(images), "steps": CodecConfig().steps,
           "command": "python bench/chunk_sweep.py " + " ".join(f"--{k} {shlex.quote(str(v))}" for k, v in vars(args).items() if v is not None),
           "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
