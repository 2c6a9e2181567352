"""A study for issue 18's seams: x̂_0 from a second tiling, shifted by half a tile, blended with the codec's.

    python bench/seam_blend.py --image ../shared/data/photos-train/002.png --crop 96 \
        --out bench/results/seam_blend.json

The codec's "mean" preview runs the U-Net on each 32×32 tile alone, so its errors jump where tiles meet
(bench/tile_seams.py measures that on real cut files).  Here, for states drawn from q(x_t | x_0) at a few chain
positions (S = 50 quad, the integer networks), x̂_0 is computed on the codec's tiling (A), on a tiling shifted by
16 pixels over the image reflect-padded by 16 (B), and blended with per-pixel weights: A's fall to 0 at its
internal tile borders, B's at its own tile borders and at the image's edges (min over the two axes of the
distance, A's capped at 16).  Printed per state: RMSE (0–255) over all pixels, over the pixels either side of
A's internal borders, over the others, and their ratio.  A study: nothing in diffcodec changes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def axis_weight(n: int, borders: list[float], cap: float | None = None) -> np.ndarray:
    """Distance from each pixel centre to the nearest of ``borders`` (capped)."""
    c = np.arange(n) + 0.5
    d = np.min(np.abs(c[:, None] - np.asarray(borders, dtype=float)[None, :]), axis=1) if borders else np.full(n, np.inf)
    return np.minimum(d, cap) if cap is not None else d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--crop", type=int, default=96, help="a multiple of 32")
    ap.add_argument("--indices", type=int, nargs="+", default=[45, 35, 30, 25, 20], help="chain positions (S = 50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from diffcodec.models.checkpoint import load_model
    from diffcodec.numerics import EXACT
    from diffcodec.reconstruct import mean_image
    from diffcodec.stream import Chain
    from diffcodec.tiling import TileLayout

    torch.set_num_threads(1)
    model = load_model(None)
    full = np.asarray(Image.open(args.image).convert("RGB"))
    y0, x0, n = full.shape[0] // 2, full.shape[1] // 2, args.crop
    px = full[y0 : y0 + n, x0 : x0 + n].astype(np.float64) / 127.5 - 1.0
    a, b = TileLayout(n, n, "RGB"), TileLayout(n + 32, n + 32, "RGB")
    ca = Chain(model, a, 50, 13, spacing="quad", numerics=EXACT)
    cb = Chain(model, b, 50, 13, spacing="quad", numerics=EXACT)
    inner = list(range(32, n, 32))
    wa = np.minimum.outer(axis_weight(n, inner, 16), axis_weight(n, inner, 16))
    shifted = list(range(16, n, 32)) + [0, n]
    wb = np.minimum.outer(axis_weight(n, shifted), axis_weight(n, shifted))
    edge = np.zeros((n, n), dtype=bool)
    for k in inner:
        edge[k - 1 : k + 1, :] = True
        edge[:, k - 1 : k + 1] = True
    rng = np.random.default_rng(args.seed)
    rows = []
    for index in args.indices:
        abar = float(ca.diffusion.alphas_cumprod[index])
        xt = np.sqrt(abar) * px + np.sqrt(1.0 - abar) * rng.standard_normal(px.shape)
        pa = a._plane_of_tiles(mean_image(ca, ca.predict(a._tiles_of_plane(xt).reshape(-1), index)["pred_xstart"],
                                          index).reshape(a.shape))
        xtb = np.pad(xt, ((16, 16), (16, 16), (0, 0)), mode="reflect")
        pb = b._plane_of_tiles(mean_image(cb, cb.predict(b._tiles_of_plane(xtb).reshape(-1), index)["pred_xstart"],
                                          index).reshape(b.shape))[16 : 16 + n, 16 : 16 + n]
        blend = (wa[..., None] * pa + wb[..., None] * pb) / (wa + wb)[..., None]
        t = ca.paper_t(index)
        for name, p in (("codec tiling", pa), ("shifted tiling", pb), ("blend", blend)):
            err = ((p - px) * 127.5) ** 2
            r_all, r_edge, r_in = (float(np.sqrt(err[m].mean())) for m in (np.ones_like(edge), edge, ~edge))
            rows.append({"t": t, "x0_hat": name, "rmse": r_all, "rmse_border": r_edge, "rmse_inside": r_in,
                         "ratio": r_edge / r_in})
            print(f"t={t:4d} {name:15s} all {r_all:7.3f}  border {r_edge:7.3f}  inside {r_in:7.3f}  ratio {r_edge / r_in:.3f}",
                  flush=True)
    if args.out:
        cmd = f"python bench/seam_blend.py --image {args.image} --crop {args.crop} --out {args.out}"
        args.out.write_text(json.dumps({"command": cmd, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
