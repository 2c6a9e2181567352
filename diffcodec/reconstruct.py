"""Turning a lossy state x_t into an image (what a truncated stream shows).

* ``mean``: x̂_0 = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, clipped (Ho et al. 2020 Eq. 15; the
  distortion of Table 4 and Figure 5).  Lowest RMSE, blurry at high t.
* ``sample``: ancestral sampling x_{t−1} ~ p_θ(x_{t−1} | x_t) down to x_0 (Algorithm 2 from x_t).
  Sharp, higher RMSE.
* ``flow``: deterministic DDIM (η = 0) from x_t (Song et al. 2021, Eq. 12).  In between.
"""

from __future__ import annotations

import numpy as np
import torch


def reconstruct_from(chain, x: np.ndarray, index: int, method: str, seed: int = 0) -> np.ndarray:
    """x̂_0 (flat float64 in [-1, 1]) from the state ``x`` at chain index ``index``."""
    pred = chain.predict(x, index)
    if method == "mean" or index == 0:
        return pred["pred_xstart"]
    d = chain.diffusion
    gen = torch.Generator().manual_seed(seed)
    for i in range(index, 0, -1):
        if method == "sample":
            noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).numpy()
            x = pred["mean"] + np.exp(0.5 * pred["log_variance"]) * noise
        else:  # flow: x_{i−1} = √ᾱ_{i−1} x̂_0 + √(1−ᾱ_{i−1}) ε̂
            x0 = pred["pred_xstart"]
            eps = (d.sqrt_recip_alphas_cumprod[i] * x - x0) / d.sqrt_recipm1_alphas_cumprod[i]
            x = np.sqrt(d.alphas_cumprod[i - 1]) * x0 + np.sqrt(1.0 - d.alphas_cumprod[i - 1]) * eps
        x = x.astype(np.float32).astype(np.float64)
        pred = chain.predict(x, i - 1)
    return pred["mean"] if method == "sample" else pred["pred_xstart"]
