"""Refit the exact stage's default weights (DEFAULT_WEIGHTS in diffcodec/exact.py) and print them in q units.

    python bench/exact_weights.py --data ../shared/data/cifar10-test-png --start 100 --count 48 --t 16

For each image, x_t is drawn from q(x_t | x_0) at paper step t; the residuals x_0 − x̂_0 (pixel units)
give each stage's features exactly as the codec computes them, and one least-squares fit per stage,
pooled over all images, is rounded to the format's grid (w = (q − 32)/16).  The images default to
test images 100–147, not the first 100 that the benchmarks score.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from diffcodec import exact
from diffcodec.entropy import pixel_gaussian_params
from diffcodec.images import load_folder_tiles
from diffcodec.likelihood import images_to_model_space
from diffcodec.models.checkpoint import load_model
from diffcodec.tiling import TileLayout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--count", type=int, default=48)
    ap.add_argument("--t", type=int, default=16, help="paper timestep of the start state")
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    torch.set_num_threads(1)
    model = load_model(args.model)
    pixels = load_folder_tiles(args.data, limit=args.start + args.count)[args.start :]
    x0 = images_to_model_space(pixels)
    d = model.diffusion
    i = args.t - 1
    ab = float(d.alphas_cumprod[i])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise
    with torch.no_grad():
        eps, _ = model(x_t, torch.full((len(x_t),), i))
    x0_hat = ((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).double().numpy()
    layout = exact.ExactLayout(TileLayout(32, 32, "RGB"))
    feats: dict[exact.Stage, list] = {}
    for j in range(len(pixels)):
        mu, _ = pixel_gaussian_params(x0_hat[j].reshape(-1), np.zeros(x0_hat[j].size))
        flat = pixels[j].transpose(2, 0, 1).reshape(-1).astype(np.float64)
        residual = layout.planes(flat)[0] - layout.planes(mu)[0]
        for stage in layout.stages:
            if stage.num_weights:
                y = residual[..., stage.channel][layout.selection(stage)]
                feats.setdefault(stage, []).append((layout.features(stage, residual), y))
    out = {}
    for stage, rows in feats.items():
        w = np.linalg.lstsq(np.concatenate([f for f, _ in rows]), np.concatenate([y for _, y in rows]), rcond=None)[0]
        q = np.clip(np.round(w / exact.WEIGHT_STEP) + exact.WEIGHT_OFFSET, 0, 2**exact.WEIGHT_BITS - 1).astype(int)
        out[f"{int(stage.second)},{stage.channel}"] = {"weights": np.round(w, 3).tolist(), "q": q.tolist()}
    print(json.dumps({"t": args.t, "images": len(pixels), "stages": out}, indent=1))


if __name__ == "__main__":
    main()
