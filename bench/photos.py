"""Larger images: the codec and the classical codecs on crops of ../shared/data/photos.

    python bench/photos.py --crop 64 --out bench/results/photos_crop64.json
    python bench/photos.py --crop 256 --out bench/results/photos_crop256.json
    python bench/photos.py --crop 0 --limit 1 --out bench/results/photos_full.json   # whole photos

Takes the centre crop of each photo (crop × crop pixels; the model was trained on 32×32
tiles, so a crop is coded as (crop/32)² tiles in one stream), encodes it once, decodes it
exactly (checked), and reports the lossless bits/pixel next to PNG, WebP lossless and JPEG XL
lossless, plus the codec's rate–distortion curve pooled over the crops (as `rd-curve` pools
images) and the lossy baselines' sweeps over the same crops.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from diffcodec.baselines import available_codecs, lossy_sweep, measure
from diffcodec.codec import EXACT_METHODS, CodecConfig, decode, encode
from diffcodec.images import load_centre_crops
from diffcodec.models.checkpoint import load_model
from diffcodec.evaluate import dataset_bpd
from diffcodec.rdcurve import aggregate
from diffcodec.tiling import TileLayout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/photos")
    ap.add_argument("--crop", type=int, default=64, help="centre crop size; 0: the whole photos")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the encoder")
    ap.add_argument("--search-threads", type=int, default=None, help="PFR search threads (default: the codec's, every core)")
    ap.add_argument("--exact-method", default=CodecConfig.exact_method, choices=list(EXACT_METHODS))
    ap.add_argument("--target-gain", type=float, default=CodecConfig.target_gain,
                    help="aim of each chunk past the posterior (encoder-only; docs/codec.md)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model = load_model(args.model)
    crops = load_centre_crops(args.data, args.crop or 1 << 16, args.limit)
    megapixels = sum(px.shape[0] * px.shape[1] for px in crops) / 1e6
    rows, results = [], []
    for px in crops:
        start = time.perf_counter()
        res = encode(px, "RGB", model, CodecConfig(threads=args.threads, search_threads=args.search_threads,
                                                   exact_method=args.exact_method, target_gain=args.target_gain))
        mid = time.perf_counter()
        exact = np.array_equal(decode(res.data, model).pixels, px)
        end = time.perf_counter()
        results.append(res)
        rows.append({"bpp": 8 * len(res.data) / (px.shape[0] * px.shape[1]), "exact": bool(exact),
                     "encode_s": mid - start, "decode_s": end - mid,
                     "rd": [{"t": s.t, "partial": s.partial, "bpd": s.bits / px.size, "rmse": s.rmse} for s in res.steps]})
        print(f"{px.shape[1]}×{px.shape[0]}: {rows[-1]['bpp']:.3f} bits/pixel, exact={exact}, "
              f"encode {mid - start:.1f}s, decode {end - mid:.1f}s", flush=True)
    # The model's negative ELBO at the codec's steps, over the same crops' 32×32 tiles (the model sees tiles).
    config = CodecConfig()
    tiles = np.concatenate([TileLayout(px.shape[0], px.shape[1], "RGB").split(px) for px in crops]).transpose(0, 2, 3, 1)
    elbo = dataset_bpd(model, tiles, steps=config.steps, batch_size=64, spacing=config.spacing)
    curve = aggregate(results)
    lossless = {c.name: measure(c, crops) for c in available_codecs(lossless=True)}
    lossy = {}
    for family in ("jpeg", "webp", "avif", "jxl"):
        try:
            lossy[family] = [measure(c, crops) for c in lossy_sweep(family) if c.available()]
        except Exception as exc:  # a codec missing here is reported, not fatal
            lossy[family] = str(exc)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "crop": args.crop,
        "images": len(crops),
        "diffcodec_bpp": float(np.mean([r["bpp"] for r in rows])),
        "all_exact": all(r["exact"] for r in rows),
        "sizes": [f"{px.shape[1]}×{px.shape[0]}" for px in crops],
        "encode_s_per_megapixel": float(sum(r["encode_s"] for r in rows) / megapixels),
        "decode_s_per_megapixel": float(sum(r["decode_s"] for r in rows) / megapixels),
        "lossless_bpp": {k: 3 * v["rate_bpd"] for k, v in lossless.items()},
        "negative_elbo_bpp": 3 * elbo["bpd"],
        "file_over_elbo": float(np.mean([r["bpp"] for r in rows]) / (3 * elbo["bpd"])),
        # Headers are negligible here: how close each prefix's rate comes to the KL it carries.
        "prefix_rate_over_kl": {p.t: p.rate_bpd / p.kl_bpd for p in curve.points if p.kl_bpd > 0},
        "command": "python bench/photos.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"summary": summary, "per_image": rows, "lossy": lossy,
                                              "curve": curve.to_json()}, indent=1))


if __name__ == "__main__":
    main()
