"""How visible the 32×32 model tiles are in a lossy preview: error next to tile borders against error inside tiles.

    python bench/tile_seams.py --image ../shared/data/photos-train/002.png --crop 96 --out seams.json

Encodes a crop of ``--crop``×``--crop`` pixels (its top-left corner at the image centre), decodes the file cut at
each of its lossy truncation points and, per point, compares the RMSE (0–255) of the pixels on either side of an
internal tile border (the two columns or rows that meet there) with the RMSE of all other pixels.  A ratio near 1
means no seam; the tiles are coded independently, so a preview's errors jump where two tiles meet.  Issue 18's
target: no visible seams at any truncation point.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def border_mask(h: int, w: int, tile: int = 32) -> np.ndarray:
    """True on the pixels next to an internal tile border (both sides of it)."""
    m = np.zeros((h, w), dtype=bool)
    for k in range(tile, h, tile):
        m[k - 1 : k + 1, :] = True
    for k in range(tile, w, tile):
        m[:, k - 1 : k + 1] = True
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--reconstruct", default="mean", choices=["mean", "sample", "flow"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from diffcodec.codec import CodecConfig, decode, encode
    from diffcodec.container import decode_file, truncate
    from diffcodec.models.checkpoint import load_model

    torch.set_num_threads(1)
    model = load_model(None)
    full = np.asarray(Image.open(args.image).convert("RGB"))
    y0, x0 = full.shape[0] // 2, full.shape[1] // 2
    pixels = np.ascontiguousarray(full[y0 : y0 + args.crop, x0 : x0 + args.crop])
    t0 = time.perf_counter()
    res = encode(pixels, "RGB", model, CodecConfig(search_threads=1))
    dfc = decode_file(res.data)
    edge = border_mask(*pixels.shape[:2])
    rows = []
    for p in dfc.points:
        if p.t == 0:
            continue
        out = decode(truncate(dfc, p.t), model, reconstruct=args.reconstruct)
        err = (out.pixels.astype(np.float64) - pixels) ** 2
        border, inside = float(np.sqrt(err[edge].mean())), float(np.sqrt(err[~edge].mean()))
        rows.append({"t": out.t, "rmse_border": border, "rmse_inside": inside,
                     "ratio": border / inside})
        print(f"t={out.t:4d}  border {border:7.3f}  inside {inside:7.3f}  ratio {border / inside:.3f}", flush=True)
    summary = {"command": "python bench/tile_seams.py --image {} --crop {} --reconstruct {}".format(args.image, args.crop, args.reconstruct),
               "image": str(args.image), "crop": args.crop, "border_pixels": int(edge.sum()), "points": rows,
               "seconds": time.perf_counter() - t0}
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
