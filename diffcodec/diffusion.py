"""The Gaussian diffusion process of DDPM, computed once per schedule.

Conventions (as in Ho et al. 2020 and Nichol & Dhariwal 2021):

* Images live in [-1, 1]; pixel value ``v`` in 0..255 maps to ``v / 127.5 - 1``.
* The chain has ``T`` noising steps.  Arrays are indexed by ``i = 0 .. T-1``, where
  index ``i`` is the paper's step ``t = i + 1`` (so ``betas[0]`` is β_1).
* A respaced chain keeps a subsequence of the original steps; ``timesteps[i]``
  is the original index the network was trained on, so the network is always
  called with original indices.

Every schedule array is computed in float64 once, when the object is built.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from . import exactmath


class ScheduleKind(str, enum.Enum):
    LINEAR = "linear"  # Ho et al. 2020 §4: β from 1e-4 to 0.02 at T=1000
    COSINE = "cosine"  # Nichol & Dhariwal 2021 §3.2


class VarianceKind(str, enum.Enum):
    FIXED_SMALL = "fixed_small"  # Σ = β̃_t (Ho et al. 2020 §3.2)
    FIXED_LARGE = "fixed_large"  # Σ = β_t
    LEARNED_RANGE = "learned_range"  # Nichol & Dhariwal 2021 Eq. 15


def linear_betas(num_steps: int) -> np.ndarray:
    """β_t linear from 1e-4 to 0.02, rescaled for T != 1000 (Ho et al. 2020 §4)."""
    scale = 1000.0 / num_steps
    return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999, exact: bool = False) -> np.ndarray:
    """β_t from ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2) (Nichol & Dhariwal 2021 Eq. 17).

    ``exact``: the cosine from :mod:`diffcodec.exactmath` (a quarter turn times the same fraction),
    so every machine builds the same schedule (format version 5); otherwise the math library's.
    """

    def f(t: float) -> float:
        if exact:
            turns = torch.tensor([(t / num_steps + s) / (1 + s) * 0.25], dtype=torch.float64)
            return float(exactmath.sincos_turns(turns)[1][0]) ** 2
        return math.cos((t / num_steps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(num_steps)]
    return np.array(betas, dtype=np.float64)


def make_betas(kind: ScheduleKind | str, num_steps: int, exact: bool = False) -> np.ndarray:
    kind = ScheduleKind(kind)
    if kind is ScheduleKind.LINEAR:
        return linear_betas(num_steps)  # + − × ÷ only (numpy's linspace): the same everywhere
    return cosine_betas(num_steps, exact=exact)


SPACINGS = ("uniform", "quad")


def spaced_timesteps(num_steps: int, count: int, spacing: str = "uniform") -> list[int]:
    """``count`` original indices spread over ``0..num_steps-1``, always keeping 0 and T-1.

    ``uniform`` spaces them evenly (DDPM's strided sampling); ``quad`` spaces them like
    (i/(count−1))², dense at low noise where most of the bits are and sparse at high noise
    where each step carries a few bits (Nichol & Dhariwal 2021 §4 use the same idea for DDIM).
    Keeping index 0 means the last coded step is the paper's t=1, so L_0 is always
    the discretized decoder of Eq. 13 at the schedule's smallest noise level.
    """
    if not 1 <= count <= num_steps:
        raise ValueError(f"steps must be in 1..{num_steps}, got {count}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if count == 1:
        return [num_steps - 1]
    u = np.linspace(0.0, 1.0, count)
    raw = np.round((u**2 if spacing == "quad" else u) * (num_steps - 1)).astype(int)
    # Strictly increasing: push collisions at the dense end apart (count ≤ num_steps makes room).
    for i in range(1, count):
        raw[i] = max(raw[i], raw[i - 1] + 1)
    for i in range(count - 2, -1, -1):
        raw[i] = min(raw[i], raw[i + 1] - 1)
    return [int(v) for v in raw]


@dataclass(frozen=True)
class ScheduleConfig:
    """What defines a training chain; saved inside checkpoints."""

    kind: ScheduleKind = ScheduleKind.COSINE
    num_steps: int = 1000

    def to_dict(self) -> dict:
        return {"kind": ScheduleKind(self.kind).value, "num_steps": self.num_steps}

    @classmethod
    def from_dict(cls, d: dict) -> "ScheduleConfig":
        return cls(kind=ScheduleKind(d["kind"]), num_steps=int(d["num_steps"]))


def _gather(arr: np.ndarray, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """arr[idx] as a tensor broadcastable against ``like`` (batch first)."""
    out = torch.from_numpy(arr).to(device=like.device)[idx.long()].to(like.dtype)
    return out.reshape(-1, *([1] * (like.dim() - 1)))


class GaussianDiffusion:
    """Forward process q and the reverse-process parameterisation of p_θ.

    Args:
        betas: β for each step of this chain, float64.
        timesteps: original training index for each step of this chain
            (``range(len(betas))`` for the training chain itself).
        exact: take every logarithm from :mod:`diffcodec.exactmath` (format version 5: the same bits on
            every machine) instead of numpy's.
    """

    def __init__(self, betas: Sequence[float] | np.ndarray, timesteps: Sequence[int] | None = None, exact: bool = False):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.betas = betas
        self.num_steps = len(betas)
        self.exact = exact
        log = (lambda a: exactmath.numpy_float64(exactmath.log, a)) if exact else np.log
        self.timesteps = np.asarray(timesteps if timesteps is not None else range(len(betas)), dtype=np.int64)
        if len(self.timesteps) != self.num_steps:
            raise ValueError("one timestep per beta")

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) β_t  (Ho et al. 2020 Eq. 7)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃_1 = 0; clip its log to β̃_2 as improved-diffusion does, so log-variances stay finite.
        floor = self.posterior_variance[1] if self.num_steps > 1 else betas[0]
        self.posterior_log_variance_clipped = log(np.append(floor, self.posterior_variance[1:]))
        self.log_betas = log(betas)
        # improved-diffusion uses β̃_1 at the first step of the fixed large variance, so L_0 is not dominated by β_1.
        self.log_large_variance = log(np.append(self.posterior_variance[1] if self.num_steps > 1 else betas[0], betas[1:]))
        # μ̃_t = coef1 · x_0 + coef2 · x_t  (Ho et al. 2020 Eq. 7)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: ScheduleConfig, exact: bool = False) -> "GaussianDiffusion":
        return cls(make_betas(config.kind, config.num_steps, exact=exact), exact=exact)

    def respace(self, keep: Sequence[int]) -> "GaussianDiffusion":
        """The chain restricted to the original indices ``keep`` (Nichol & Dhariwal 2021 §4).

        β is rebuilt from the kept ᾱ: β_i = 1 − ᾱ_{keep[i]} / ᾱ_{keep[i-1]}, which is the
        exact marginal of the skipped steps, so q(x_t | x_0) is unchanged at kept steps.
        """
        keep = sorted(set(int(k) for k in keep))
        if not keep or keep[0] < 0 or keep[-1] >= self.num_steps:
            raise ValueError("respaced steps must lie in the original chain")
        last = 1.0
        betas = []
        for k in keep:
            ac = self.alphas_cumprod[k]
            betas.append(1.0 - ac / last)
            last = ac
        return GaussianDiffusion(betas, timesteps=[int(self.timesteps[k]) for k in keep], exact=self.exact)

    def spaced(self, steps: int, spacing: str = "uniform") -> "GaussianDiffusion":
        """Respaced chain of ``steps`` steps (the paper's strided sampling; see :func:`spaced_timesteps`)."""
        return self.respace(spaced_timesteps(self.num_steps, steps, spacing))

    # ------------------------------------------------------------------ q
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (Ho et al. 2020 Eq. 4). Returns mean, variance, log-variance."""
        mean = _gather(self.sqrt_alphas_cumprod, t, x_start) * x_start
        var = _gather(1.0 - self.alphas_cumprod, t, x_start)
        return mean, var.expand_as(x_start), torch.log(var).expand_as(x_start)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. 2020 Eq. 4)."""
        return _gather(self.sqrt_alphas_cumprod, t, x_start) * x_start + _gather(
            self.sqrt_one_minus_alphas_cumprod, t, x_start
        ) * noise

    def q_posterior_mean_variance(
        self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. 2020 Eq. 6–7). Returns μ̃, β̃, log β̃ (clipped)."""
        mean = _gather(self.posterior_mean_coef1, t, x_t) * x_start + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        var = _gather(self.posterior_variance, t, x_t).expand_as(x_t)
        log_var = _gather(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
        return mean, var, log_var

    # ------------------------------------------------------------------ p
    def predict_start_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t (Ho et al. 2020 Eq. 15; the Table 4 / Figure 5 reconstruction)."""
        return _gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def predict_eps_from_start(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        return (_gather(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x_start) / _gather(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def p_log_variance(self, t: torch.Tensor, like: torch.Tensor, var_out: torch.Tensor | None, kind: VarianceKind) -> torch.Tensor:
        """log Σ_θ(x_t, t): fixed β̃ or β (Ho et al. 2020 §3.2) or the learned interpolation
        log Σ = v log β_t + (1 − v) log β̃_t with v = (out + 1)/2 (Nichol & Dhariwal 2021 Eq. 15)."""
        kind = VarianceKind(kind)
        if kind is VarianceKind.FIXED_SMALL:
            return _gather(self.posterior_log_variance_clipped, t, like).expand_as(like)
        if kind is VarianceKind.FIXED_LARGE:
            return _gather(self.log_large_variance, t, like).expand_as(like)
        if var_out is None:
            raise ValueError("learned variance needs the network's variance output")
        min_log = _gather(self.posterior_log_variance_clipped, t, like)
        max_log = _gather(self.log_betas, t, like)
        frac = (var_out + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        eps: torch.Tensor,
        var_out: torch.Tensor | None,
        variance: VarianceKind,
        clip_denoised: bool = True,
    ) -> dict[str, torch.Tensor]:
        """p_θ(x_{t-1} | x_t) = N(μ_θ, Σ_θ) with μ_θ = μ̃_t(x̂_0(ε_θ), x_t) (Ho et al. 2020 Eq. 11).

        ``t`` indexes *this* chain.  ``clip_denoised`` clips x̂_0 to [-1, 1] before forming
        the mean, as every DDPM implementation does at sampling and likelihood time.
        """
        pred_xstart = self.predict_start_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
        log_var = self.p_log_variance(t, x_t, var_out, variance)
        return {"mean": mean, "log_variance": log_var, "pred_xstart": pred_xstart}

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Original training indices for this chain's indices ``t`` (what the network is called with)."""
        return torch.from_numpy(self.timesteps).to(t.device)[t.long()]
