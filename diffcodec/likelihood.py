"""The negative ELBO of Ho et al. 2020 Eq. 5 in bits/dim, term by term.

L = L_T + Σ_{t>1} L_{t−1} + L_0, with
  L_T     = KL(q(x_T | x_0) ‖ N(0, I)),
  L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)),
  L_0     = −log p_θ(x_0 | x_1)  (the discretized decoder of Eq. 13).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .diffusion import GaussianDiffusion, VarianceKind
from .losses import LOG2, discretized_gaussian_log_likelihood, nats_to_bits_per_dim, normal_kl

# A network as the library sees it: (x_t, original timesteps) -> (ε, variance output or None).
EpsModel = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


def _bits_per_dim(nats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per image, bits per dimension over all dimensions, or over those where ``mask`` is true (a tile's real pixels)."""
    if mask is None:
        return nats_to_bits_per_dim(nats)
    m = mask.to(nats.dtype)
    return (nats * m).reshape(nats.shape[0], -1).sum(dim=1) / (m.reshape(m.shape[0], -1).sum(dim=1).clamp(min=1) * LOG2)


def prior_bpd(diffusion: GaussianDiffusion, x_start: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_T in bits/dim for each image: KL(q(x_T | x_0) ‖ N(0, I)) (over the dimensions of ``mask`` when given)."""
    t = torch.full((x_start.shape[0],), diffusion.num_steps - 1, dtype=torch.long)
    mean, _, log_var = diffusion.q_mean_variance(x_start, t)
    return _bits_per_dim(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(mean)), mask)


def vb_terms_bpd(
    diffusion: GaussianDiffusion,
    eps: torch.Tensor,
    var_out: torch.Tensor | None,
    variance: VarianceKind,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_{t−1} (KL, for t index > 0) or L_0 (decoder NLL, for index 0) in bits/dim per image.

    With ``mask`` (bool, the shape of ``x_start``), per dimension where it is true: a tile's real pixels.
    """
    true_mean, _, true_log_var = diffusion.q_posterior_mean_variance(x_start, x_t, t)
    p = diffusion.p_mean_variance(x_t, t, eps, var_out, variance)
    kl = _bits_per_dim(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]), mask)
    nll = _bits_per_dim(-discretized_gaussian_log_likelihood(x_start, p["mean"], 0.5 * p["log_variance"]), mask)
    return torch.where(t == 0, nll, kl)


@dataclass
class ELBOTerms:
    """Per-image negative ELBO terms in bits/dim."""

    prior: torch.Tensor  # L_T, shape (B,)
    steps: torch.Tensor  # L_{t−1} for each chain index t ≥ 1, shape (B, S−1); column i is index i+1
    decoder: torch.Tensor  # L_0, shape (B,)

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.steps.sum(dim=1) + self.decoder


@torch.no_grad()
def negative_elbo(
    model: EpsModel,
    diffusion: GaussianDiffusion,
    variance: VarianceKind,
    x_start: torch.Tensor,
    generator: torch.Generator | None = None,
    progress: Iterator | None = None,
    mask: torch.Tensor | None = None,
) -> ELBOTerms:
    """Unbiased estimate of Eq. 5 on a batch, sampling each x_t independently from q(x_t | x_0).

    ``diffusion`` is the (possibly respaced) chain to evaluate; the network is called
    with its original timesteps.  ``mask`` (bool, like ``x_start``): average each image's terms over
    those dimensions only (the real pixels of a padded tile, :meth:`diffcodec.tiling.TileLayout.real_mask`).
    """
    b = x_start.shape[0]
    steps = torch.zeros(b, max(diffusion.num_steps - 1, 0), dtype=torch.float64)
    decoder = torch.zeros(b, dtype=torch.float64)
    for i in reversed(range(diffusion.num_steps)):
        t = torch.full((b,), i, dtype=torch.long)
        noise = torch.randn(x_start.shape, generator=generator, dtype=x_start.dtype)
        x_t = diffusion.q_sample(x_start, t, noise)
        eps, var_out = model(x_t, diffusion.model_timesteps(t))
        terms = vb_terms_bpd(diffusion, eps, var_out, variance, x_start, x_t, t, mask).double()
        if i == 0:
            decoder = terms
        else:
            steps[:, i - 1] = terms
        if progress is not None:
            next(progress, None)
    return ELBOTerms(prior=prior_bpd(diffusion, x_start, mask).double(), steps=steps, decoder=decoder)


def images_to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0
