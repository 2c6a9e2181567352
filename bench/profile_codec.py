"""Where encode and decode spend their time: network, channel simulation, entropy coding, the rest.

    python bench/profile_codec.py --limit 4 --out bench/results/profile_cifar.json
    python bench/profile_codec.py --data ../shared/data/photos --crop 128 --limit 2 \
        --out bench/results/profile_photo128.json

Runs the default codec under cProfile (one torch thread, as the stream header says) and sums
the cumulative time of the functions that make up each component:

- network: ``Chain._network_predict`` (the U-Net passes and the posterior arithmetic around them);
- channel simulation: the PFR search (``encode_chunks``: shared normals, FFT correlations,
  arrival times) and the decoder's regeneration of the chosen windows (``decode_chunks``);
- entropy coding: the steps' symbols (levels, indices) through constriction's range coder
  (diffcodec/step_code.py's ``encode`` and ``decode``);
- exact stage: diffcodec/exact.py, i.e. the encoder's plan at each state (residual prediction,
  least squares, the cost of every scale; the context network where the learned stage is tried) and
  the coding of x_0 (``run``, through which every plan, write and read goes, and ``_batch_outputs``,
  the plans' batched context networks);
- other: the rest (chunk partitions, KL, tiling, container, checks).

cProfile adds a little overhead to every Python call, so the total is a few percent above the
plain timings of bench/codec_cifar.py; the shares are what this script is for.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import time
from pathlib import Path

import numpy as np

from diffcodec.codec import CodecConfig, available_cores, decode, encode
from diffcodec.images import load_centre_crops, load_folder_tiles
from diffcodec.models.checkpoint import load_model


def component_seconds(stats: pstats.Stats, total: float) -> dict[str, float]:
    """Seconds per component from a profile (cumulative times of the functions that make up each one)."""
    cum: dict[tuple[str, str], float] = {}
    for (filename, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        cum[(filename, name)] = cum.get((filename, name), 0.0) + ct

    def part(module: str, *names: str) -> float:
        return sum(v for (f, n), v in cum.items() if f.endswith(module) and n in names)

    network = part("stream.py", "_network_predict")  # the U-Net passes (Chain.predict's cache misses)
    channel = part("channel.py", "encode_chunks", "decode_chunks")  # PFR search; the decoder's regeneration
    entropy = part("step_code.py", "encode", "decode")  # the steps' symbols through constriction's range coder
    # every plan, write and read of x_0 goes through exact.run; the plans' batched context networks run before it
    exact = part("exact.py", "run", "_batch_outputs")
    return {"network": network, "channel simulation": channel, "entropy coding": entropy, "exact stage": exact,
            "other": max(0.0, total - network - channel - entropy - exact), "total": total}


def profiled(fn, *args, **kwargs):
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    out = fn(*args, **kwargs)
    prof.disable()
    total = time.perf_counter() - start
    return out, component_seconds(pstats.Stats(prof), total)


def load_inputs(data: str, crop: int | None, limit: int) -> list[np.ndarray]:
    return load_folder_tiles(data, limit=limit) if crop is None else load_centre_crops(data, crop, limit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--crop", type=int, default=None, help="centre crop of this size (photos); default: whole 32×32 images")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--search-threads", type=int, default=None, help="PFR search threads (default: the codec's, every core)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model = load_model(args.model)
    images = load_inputs(args.data, args.crop, args.limit)
    config = CodecConfig(search_threads=args.search_threads)
    totals = {"encode": {}, "decode": {}}
    pixels = 0
    for px in images:
        res, enc = profiled(encode, px, "RGB", model, config)
        dec_res, dec = profiled(decode, res.data, model)
        assert np.array_equal(dec_res.pixels, px), "decode is not exact"
        pixels += px.shape[0] * px.shape[1]
        for side, parts in (("encode", enc), ("decode", dec)):
            for k, v in parts.items():
                totals[side][k] = totals[side].get(k, 0.0) + v
        print(f"{px.shape[1]}×{px.shape[0]}: encode {enc['total']:.2f}s (network {enc['network']:.2f}, channel "
              f"{enc['channel simulation']:.2f}, entropy {enc['entropy coding']:.2f}); decode {dec['total']:.2f}s", flush=True)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, 1 torch thread, {args.search_threads or available_cores()} search thread(s)",
        "command": "python bench/profile_codec.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                             if v is not None),
        "images": len(images),
        "pixels_per_image": pixels // len(images),
        "config": {"steps": config.steps, "chunk_bits": config.chunk_bits, "spacing": config.spacing},
        "seconds_per_image": {side: {k: v / len(images) for k, v in parts.items()} for side, parts in totals.items()},
        "seconds_per_megapixel": {side: {k: v * 1e6 / pixels for k, v in parts.items()} for side, parts in totals.items()},
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
