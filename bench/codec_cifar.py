"""Measure the codec on CIFAR-10 test PNGs: file size against the model's negative ELBO, prefix rates, speed.

    python bench/codec_cifar.py --data ../shared/data/cifar10-test-png --limit 20 \
        --out bench/results/codec_cifar.json

For each image: encode, decode fully (checking the exact round trip), and time both.
The model's negative ELBO at the same steps is measured separately on the same images
(``dataset_bpd``, an independent Monte Carlo estimate), and so is the time of the network
evaluations alone (one pass of the model over the same chain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from diffcodec.codec import EXACT_METHODS, CodecConfig, _Chain, available_cores, decode, encode, torch_threads
from diffcodec.evaluate import dataset_bpd
from diffcodec.images import load_folder_tiles
from diffcodec.models.checkpoint import load_model
from diffcodec.rdcurve import aggregate
from diffcodec.tiling import TileLayout


def network_seconds(model, pixels: np.ndarray, steps: int, threads: int, spacing: str = "uniform") -> float:
    """Time of S network evaluations of one 32×32 image (one per state of the chain), alone."""
    chain = _Chain(model, TileLayout(32, 32, "RGB"), steps, chunk_bits=10, spacing=spacing)
    x = np.random.default_rng(0).standard_normal(3 * 32 * 32)
    with torch_threads(threads):
        start = time.perf_counter()
        for index in range(chain.num_steps - 1, -1, -1):
            chain.predict(x, index)
        return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--steps", type=int, default=CodecConfig.steps)
    ap.add_argument("--chunk-bits", type=int, default=CodecConfig.chunk_bits)
    ap.add_argument("--extra-candidate-bits", type=int, default=CodecConfig.extra_candidate_bits)
    ap.add_argument("--max-candidate-bits", type=int, default=CodecConfig.max_candidate_bits)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--search-threads", type=int, default=None, help="PFR search threads (default: the codec's, every core)")
    ap.add_argument("--spacing", default=CodecConfig.spacing, choices=["uniform", "quad"])
    ap.add_argument("--exact-method", default=CodecConfig.exact_method, choices=list(EXACT_METHODS))
    ap.add_argument("--learned-candidates", type=int, default=CodecConfig.learned_candidates)
    ap.add_argument("--learned-margin", type=float, default=CodecConfig.learned_margin)
    ap.add_argument("--coarse-margin", type=float, default=CodecConfig.coarse_margin)
    ap.add_argument("--model", default=None)
    ap.add_argument("--elbo-images", type=int, default=None, help="images for the ELBO estimate (default: --limit)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model = load_model(args.model)
    images = load_folder_tiles(args.data, limit=args.limit)
    config = CodecConfig(steps=args.steps, chunk_bits=args.chunk_bits, extra_candidate_bits=args.extra_candidate_bits,
                         max_candidate_bits=args.max_candidate_bits, threads=args.threads, spacing=args.spacing,
                         search_threads=args.search_threads, exact_method=args.exact_method,
                         learned_candidates=args.learned_candidates, learned_margin=args.learned_margin,
                         coarse_margin=args.coarse_margin)
    dims = images[0].size
    rows, results = [], []
    for i, px in enumerate(images):
        t0 = time.perf_counter()
        res = encode(px, "RGB", model, config)
        t1 = time.perf_counter()
        dec = decode(res.data, model)
        t2 = time.perf_counter()
        results.append(res)
        header_bits = 8 * (len(res.data) - 4 * len(res.file.words))
        last_lossy = res.lossy_steps[-1]
        rows.append({
            "bytes": len(res.data),
            # Where the bits go (the lossy part's words include the range coder's one-word look-ahead).
            "header_bits": header_bits,
            "channel_bits": last_lossy.bits - header_bits,
            "channel_kl_bits": last_lossy.kl_bits,
            "exact_bits": res.steps[-1].bits - last_lossy.bits,
            "exact_ideal_bits": res.steps[-1].kl_bits - last_lossy.kl_bits,
            "bpd": 8 * len(res.data) / dims,
            "trajectory_kl_bpd": res.steps[-1].kl_bits / dims,
            "exact": bool(np.array_equal(dec.pixels, px)),
            "exact_method": res.exact_method,
            "encode_s": t1 - t0,
            "decode_s": t2 - t1,
            # Network passes each side needs: the encoder's states (a few past its stop), the decoder's lossy states.
            "encode_evaluations": res.network_evaluations,
            "decode_evaluations": len(res.lossy_steps),
            "prefix_bits": [s.bits for s in res.steps],
            "prefix_kl_bits": [s.kl_bits for s in res.steps],
            "rmse": [s.rmse for s in res.steps],
            "t": [s.t for s in res.steps],
            "partial": [s.partial for s in res.steps],  # partial points of the exact stage: share of x_0 exact
        })
        print(f"[{i + 1}/{len(images)}] {rows[-1]['bpd']:.3f} bpd (trajectory KL {rows[-1]['trajectory_kl_bpd']:.3f}), "
              f"exact={rows[-1]['exact']}, encode {t1 - t0:.2f}s, decode {t2 - t1:.2f}s", flush=True)

    with torch_threads(args.threads):
        elbo = dataset_bpd(model, images[: args.elbo_images or args.limit], steps=args.steps, batch_size=1,
                           spacing=args.spacing)
    net_s = network_seconds(model, images[0], args.steps, args.threads, args.spacing)
    curve = aggregate(results)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s), "
                   f"{args.search_threads or available_cores()} search thread(s)",
        "command": "python bench/codec_cifar.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "model": model.meta,
        "images": len(rows),
        "steps": args.steps,
        "file_bpd": float(np.mean([r["bpd"] for r in rows])),
        "trajectory_kl_bpd": float(np.mean([r["trajectory_kl_bpd"] for r in rows])),
        "negative_elbo_bpd": elbo["bpd"],
        "elbo_breakdown": {k: elbo[k] for k in ("prior", "steps", "decoder")},
        "file_over_elbo": float(np.mean([r["bpd"] for r in rows]) / elbo["bpd"]),
        "file_over_trajectory_kl": float(sum(r["bytes"] * 8 for r in rows) / sum(r["prefix_kl_bits"][-1] for r in rows)),
        # Prefixes carrying under 0.01 bits/dim are all header; their ratio says nothing about the coding.
        "prefix_rate_over_kl_max": max(p.rate_bpd / p.kl_bpd for p in curve.points if p.kl_bpd > 0.01),
        "prefix_rate_over_kl_at_t": {(p.t if p.partial is None else f"0 ({100 * p.partial:.0f}%)"): p.rate_bpd / p.kl_bpd
                                     for p in curve.points if p.kl_bpd > 0.01},
        "exact_from_t": [min(t for t in r["t"] if t > 0) for r in rows],
        "exact_methods": {m: sum(r["exact_method"] == m for r in rows) for m in EXACT_METHODS[1:]},
        "breakdown_bits_per_image": {k: float(np.mean([r[k] for r in rows])) for k in
                                     ("header_bits", "channel_bits", "channel_kl_bits", "exact_bits", "exact_ideal_bits")},
        "all_exact": all(r["exact"] for r in rows),
        "encode_s_per_image": float(np.mean([r["encode_s"] for r in rows])),
        "decode_s_per_image": float(np.mean([r["decode_s"] for r in rows])),
        "network_s_per_evaluation": net_s / args.steps,
        # Each side's time against the time of the network passes it needed (the speed target).
        "encode_over_network": float(sum(r["encode_s"] for r in rows) / (net_s / args.steps * sum(r["encode_evaluations"] for r in rows))),
        "decode_over_network": float(sum(r["decode_s"] for r in rows) / (net_s / args.steps * sum(r["decode_evaluations"] for r in rows))),
        "rmse_at_t": {p.t: p.rmse for p in curve.points},
        "rate_bpd_at_t": {p.t: p.rate_bpd for p in curve.points},
    }
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "per_image": rows}, indent=1))


if __name__ == "__main__":
    main()
