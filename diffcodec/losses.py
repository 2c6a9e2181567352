"""Pure KL and likelihood functions for Gaussian diffusion terms.

Units are stated on each function: the KL and log-likelihood functions work in
nats; :func:`nats_to_bits_per_dim` converts.
"""

from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats.

    Closed form: ½(−1 + log σ₂² − log σ₁² + σ₁²/σ₂² + (μ₁ − μ₂)²/σ₂²).
    These are the terms L_{t−1} of Ho et al. 2020 Eq. 5 and L_T when the second
    argument is the prior N(0, I).
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Φ(x) via erf (exact up to float precision, unlike the tanh approximation)."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, bin_half_width: float = 1.0 / 255.0
) -> torch.Tensor:
    """log p_θ(x_0 | x_1) of Ho et al. 2020 Eq. 13, elementwise, in nats.

    ``x`` holds pixel values scaled to [-1, 1] (multiples of 2/255 minus 1).  Each
    value owns the bin [x − 1/255, x + 1/255]; the outer bins are open to ±∞, so
    the 256 probabilities of one subpixel sum to exactly 1.
    """
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + bin_half_width))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - bin_half_width))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


def nats_to_bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Sum over all but the batch dimension, divided by the number of dimensions and ln 2."""
    dims = nats[0].numel()
    return nats.reshape(nats.shape[0], -1).sum(dim=1) / (dims * LOG2)
