"""Turning a lossy state x_t into an image (what a truncated stream shows).

* ``mean``: the model's x̂_0 = (x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t (Ho et al. 2020 Eq. 15; the
  distortion of Table 4 and Figure 5), clipped to [−1, 1] and shrunk toward the average image
  where the noise is high (:func:`mean_image`).  Lowest RMSE, blurry at high t.
* ``sample``: ancestral sampling x_{t−1} ~ p_θ(x_{t−1} | x_t) down to x_0 (Algorithm 2 from x_t).
  Sharp, higher RMSE.
* ``flow``: deterministic DDIM (η = 0) from x_t (Song et al. 2021, Eq. 12).  In between.

Only the decoder (and the encoder's report of what a decoder shows) uses these: the stream does
not depend on them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .rng import normals_exact, stream_key

SAMPLE_SEED = 0x53414D50  # keys the noise of ``sample`` previews of format-5 files (with the user's seed and the step)

# The prior toward which x̂_0 is shrunk: per-channel mean and variance of a subpixel in model units [−1, 1]
# (CIFAR-10 training images 0–3499 of ../shared/data/cifar10-train-lossless-4000.npy, R, G, B).
PRIOR_MEAN = (-0.017, -0.037, -0.110)
PRIOR_VAR = (0.243, 0.237, 0.274)
# x̂_0's error variance taken as XHAT_NOISE · σ_t², σ_t² = (1 − ᾱ_t)/ᾱ_t (the noise of x_t/√ᾱ_t).  Chosen on
# validation images (training indices 3500–3599; bench/reconstruct_high_t.py, bench/results/reconstruct_high_t.json):
# 1e-3 takes the RMSE at t = 1000 from 140.5 to 64.8 (the average image) and at t = 960 from 72.7 to 61.2, and
# changes no state below t = 900 by more than 0.05.
XHAT_NOISE = 1e-3


def mean_image(chain, pred_xstart: np.ndarray, index: int) -> np.ndarray:
    """The ``mean`` reconstruction (flat float64 in [−1, 1]) from the model's x̂_0 at chain index ``index``.

    At high noise x̂_0 divides the network's error by √ᾱ_t (2.4e-9 at t = 1000 with the cosine schedule),
    so the clipped x̂_0 is saturated noise.  Treating it as a noisy observation of x_0 with variance
    c·σ_t² under the prior N(m, s²) per channel, the posterior mean is

        m + s² / (s² + c·σ_t²) · (clip(x̂_0) − m),

    the average image m at t = T (where x_T says nothing about x_0) and x̂_0 itself at low noise.
    Grey and alpha planes (replicated into three channels) use the mean of the three channels' priors.
    """
    layout = chain.layout
    abar = float(chain.diffusion.alphas_cumprod[index])
    sigma2 = (1.0 - abar) / abar if abar > 0 else math.inf
    mean = np.broadcast_to(np.asarray(PRIOR_MEAN).reshape(1, 3, 1, 1), layout.shape).copy()
    var = np.broadcast_to(np.asarray(PRIOR_VAR).reshape(1, 3, 1, 1), layout.shape).copy()
    per = layout.rows * layout.cols
    for k in range(layout.planes):
        if layout.mode == "L" or k == 1:  # a replicated plane: one grey prior
            mean[k * per : (k + 1) * per] = float(np.mean(PRIOR_MEAN))
            var[k * per : (k + 1) * per] = float(np.mean(PRIOR_VAR))
    mean, var = mean.reshape(-1), var.reshape(-1)
    weight = var / (var + XHAT_NOISE * sigma2)
    return mean + weight * (np.clip(pred_xstart, -1.0, 1.0) - mean)


def reconstruct_from(chain, x: np.ndarray, index: int, method: str, seed: int = 0) -> np.ndarray:
    """x̂_0 (flat float64 in [-1, 1]) from the state ``x`` at chain index ``index``."""
    pred = chain.predict(x, index)
    if method == "mean" or index == 0:
        return mean_image(chain, pred["pred_xstart"], index)
    d = chain.diffusion
    gen = torch.Generator().manual_seed(seed)
    for i in range(index, 0, -1):
        if method == "sample":
            if chain.num.exact:  # format 5: the same sample on every machine
                noise = normals_exact(stream_key(SAMPLE_SEED, seed, i), 0, len(x))
            else:
                noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).numpy()
            x = pred["mean"] + chain.num.exp(0.5 * pred["log_variance"]) * noise
        else:  # flow: x_{i−1} = √ᾱ_{i−1} x̂_0 + √(1−ᾱ_{i−1}) ε̂
            x0 = pred["pred_xstart"]
            eps = (d.sqrt_recip_alphas_cumprod[i] * x - x0) / d.sqrt_recipm1_alphas_cumprod[i]
            x = np.sqrt(d.alphas_cumprod[i - 1]) * x0 + np.sqrt(1.0 - d.alphas_cumprod[i - 1]) * eps
        x = x.astype(np.float32).astype(np.float64)
        pred = chain.predict(x, i - 1)
    return pred["mean"] if method == "sample" else pred["pred_xstart"]
