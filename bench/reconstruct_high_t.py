"""RMSE of the ``mean`` reconstruction at the high-noise states, before and after the shrinkage toward the average image.

    python bench/reconstruct_high_t.py --first 3500 --count 100 --out bench/results/reconstruct_high_t.json

For validation images (training indices 3500–3999 of the lossless CIFAR-10 array, never the test
PNGs), draws x_t ~ q(x_t | x_0) at chosen states of the default chain (S = 50, quad spacing) and
reports the pooled RMSE (0–255) of the clipped model x̂_0 (the reconstruction before issue 20) and of
:func:`diffcodec.reconstruct.mean_image` (shrunk toward the prior mean with weight s²/(s² + c·σ_t²)),
for c = ``XHAT_NOISE`` and the neighbouring values given by --noise.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from diffcodec import reconstruct
from diffcodec.codec import CodecConfig
from diffcodec.diffusion import spaced_timesteps
from diffcodec.models.checkpoint import load_model
from diffcodec.tiling import TileLayout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-train-lossless-4000.npy")
    ap.add_argument("--first", type=int, default=3500)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--ts", default="1000,960,920,881,844,770,667,511,375,261,167,95,43", help="paper t of chain states")
    ap.add_argument("--noise", default="5e-4,1e-3,2e-3", help="values of XHAT_NOISE to compare")
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    images = np.load(args.data)[args.first : args.first + args.count]
    n = len(images)
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).double() / 127.5 - 1.0
    truth = (x0.numpy().reshape(-1) + 1.0) * 127.5
    kept = spaced_timesteps(model.diffusion.num_steps, CodecConfig.steps, CodecConfig.spacing)
    diffusion = model.diffusion.respace(kept)
    chain = SimpleNamespace(layout=TileLayout(32, 32 * n, "RGB"), diffusion=diffusion)
    noises = [float(c) for c in args.noise.split(",")]
    gen = torch.Generator().manual_seed(0)
    rows = []
    rmse = lambda est: float(np.sqrt(np.mean((np.clip(np.round((est + 1.0) * 127.5), 0, 255) - truth) ** 2)))  # noqa: E731
    for t in (int(v) for v in args.ts.split(",")):
        index = kept.index(t - 1)
        abar = float(diffusion.alphas_cumprod[index])
        x_t = math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            eps = torch.cat([model(b.float(), torch.full((len(b),), t - 1, dtype=torch.long))[0] for b in x_t.split(50)])
        xhat = ((x_t - math.sqrt(1.0 - abar) * eps.double()) / math.sqrt(abar)).numpy().reshape(-1)
        row = {"t": t, "clipped_xhat": rmse(xhat)}
        for c in noises:
            reconstruct.XHAT_NOISE, old = c, reconstruct.XHAT_NOISE
            row[f"shrunk_{c:g}"] = rmse(reconstruct.mean_image(chain, xhat, index))
            reconstruct.XHAT_NOISE = old
        rows.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    if args.out:
        out = {"date": time.strftime("%Y-%m-%d"), "command": "python bench/reconstruct_high_t.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
            "images": n, "xhat_noise_default": reconstruct.XHAT_NOISE, "rows": rows}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
