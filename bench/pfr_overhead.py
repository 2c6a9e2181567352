"""What one PFR chunk costs against its KL, as the chunk's KL grows: the floor under a prefix's rate.

    python bench/pfr_overhead.py --out bench/results/pfr_overhead.json

For chunks of KL k bits (q = N(δ, I) against p = N(0, I) on 64 dimensions, δ random and scaled to
k bits; no target gain, so this is PFR alone), the codec's own search (``encode_chunks``) picks an
index among 2^(k + 3) candidates, as the codec's spare candidate bits do.  Its cost is what the
codec's index code pays: e = bit_length(index) through an adaptive categorical (counted here as the
empirical entropy of e over the chunks, which that model approaches) plus e − 1 raw bits.  The
table gives that cost over k, the ideal E[log₂(index + 1)], and the sample's fidelity
⟨δ, ε⟩/‖δ‖² (1 for an exact sample of q).

Li & El Gamal (2018) bound PFR's code length by KL + log₂(KL + 1) + O(1); the table measures how
fast that overhead shrinks relative to k, and what the search costs for it (candidates per chunk).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

from diffcodec.channel import decode_chunk, encode_chunks, log_weight_coefficients
from diffcodec.rng import stream_key

LN2 = math.log(2.0)


def entropy_bits(values: list[int]) -> float:
    counts = np.array(list(Counter(values).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def measure(kl_bits: float, chunks: int, dims: int, spare_bits: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(chunks):
        delta = rng.normal(size=dims)
        deltas.append(delta * math.sqrt(2 * kl_bits * LN2 / (delta @ delta)))  # equal variances: KL = ‖δ‖²/2 nats
    ones, zeros = np.ones(dims), np.zeros(dims)
    coeffs = [log_weight_coefficients(delta, ones, zeros, ones) for delta in deltas]
    keys = [stream_key(4242, seed, j) for j in range(chunks)]
    candidates = 1 << int(round(kl_bits + spare_bits))
    start = time.perf_counter()
    ks = encode_chunks(keys, coeffs, [candidates] * chunks, np.random.default_rng(seed))
    seconds = (time.perf_counter() - start) / chunks
    exponents = [int(k).bit_length() for k in ks]
    code_bits = entropy_bits(exponents) + float(np.mean([max(e - 1, 0) for e in exponents]))
    fidelity = [delta @ decode_chunk(key, k, dims) / (delta @ delta) for delta, key, k in zip(deltas, keys, ks)]
    return {
        "kl_bits": kl_bits,
        "candidates": candidates,
        "chunks": chunks,
        "code_bits": code_bits,
        "code_over_kl": code_bits / kl_bits,
        "mean_log2_index": float(np.mean(np.log2(np.array(ks, dtype=np.float64) + 1.0))),
        "fidelity": float(np.mean(fidelity)),
        "search_s_per_chunk": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kl-bits", default="2,4,6,8,10,13,16,18", help="chunk KLs to measure, comma-separated")
    ap.add_argument("--chunks", type=int, default=300, help="chunks per KL")
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--spare-bits", type=int, default=3, help="candidates = 2^(KL + this), as the codec's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    rows = []
    print("| chunk KL (bits) | candidates | index code (bits) | ÷ KL | E[log₂(k*+1)] | fidelity | search s/chunk |")
    print("|---|---|---|---|---|---|---|")
    for kl in (float(v) for v in args.kl_bits.split(",")):
        r = measure(kl, args.chunks, args.dims, args.spare_bits, args.seed)
        rows.append(r)
        print(f"| {kl:g} | 2^{int(math.log2(r['candidates']))} | {r['code_bits']:.2f} | {r['code_over_kl']:.3f} | "
              f"{r['mean_log2_index']:.2f} | {r['fidelity']:.3f} | {r['search_s_per_chunk']:.4f} |", flush=True)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, 1 search thread",
        "command": "python bench/pfr_overhead.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                            if v is not None),
        "rows": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
