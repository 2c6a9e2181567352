"""Training the exact stage's context network (models/context_net.py) for a trained diffusion model.

The network learns what the codec's learned exact stage needs: x_0's discretized Gaussian given x_t
and the subpixels already decoded.  Training pairs are made once: each image is noised to a few
states x_t ~ q(x_t | x_0) at the timesteps where the codec starts its exact stage, and the diffusion
model's x̂_0 is computed for each (the expensive part).  Then the network is fitted on random crops,
all six stages of a crop at once, minimising the stages' bits (Eq. 13's discretized Gaussian with
the edge bins taking the tails, as the codec codes them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from .context_net import ContextNet, ContextNetConfig, coarse_stage_masks, stage_masks

# Timesteps (0-based, as the model takes them) where the codec's exact stage starts: the quad-spaced
# 50-step chain's states from x_5 to x_111 (paper t = timestep + 1).
DEFAULT_TIMESTEPS = (4, 7, 10, 15, 20, 27, 34, 42, 50, 60, 81, 110)


@dataclass(frozen=True)
class ContextTrainConfig:
    steps: int = 5000
    batch_size: int = 32
    crop: int = 16  # training crops (the network sees an 11×11 window per pixel: larger crops add little)
    lr: float = 2e-3  # one-cycle peak
    draws_per_image: int = 4  # noised states per image, each at a random timestep of ``timesteps``
    timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def discretized_gaussian_bits(x: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor, top: int = 255) -> torch.Tensor:
    """−log₂ P(x) of integers x (0..top) under N(mean, sd²) with the tails in the edge bins (Eq. 13 for top = 255)."""
    lo = torch.where(x <= 0, torch.full_like(x, -1e9), x - 0.5)
    hi = torch.where(x >= top, torch.full_like(x, 1e9), x + 0.5)
    z_lo, z_hi = (lo - mean) / sd, (hi - mean) / sd
    upper = z_lo > 0  # above the mean: difference of survival functions keeps the precision
    p = torch.where(upper, torch.special.ndtr(-z_lo) - torch.special.ndtr(-z_hi),
                    torch.special.ndtr(z_hi) - torch.special.ndtr(z_lo))
    return -torch.log2(p.clamp_min(1e-12))


def stage_bits(net: ContextNet, pixels: torch.Tensor, xhat: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bits of the six stages of each image: (mean bits per coded subpixel, bits per image (B,)).

    ``pixels`` (B, 3, H, W) integers as floats; ``xhat``, ``y`` in model space; ``sigma`` (B,) is σ_t.
    """
    if net.config.bin_width:
        return coarse_stage_bits(net, pixels, xhat, y, sigma)
    b, _, h, w = pixels.shape
    masks = stage_masks(h, w)
    n = len(masks)
    known = torch.stack([k for k, _ in masks]).repeat(b, 1, 1, 1)
    coded = torch.stack([c for _, c in masks]).repeat(b, 1, 1, 1)
    s = (sigma * 127.5).view(b, 1, 1, 1)
    mu = (xhat + 1.0) * 127.5
    residual = ((pixels - mu) / s).repeat_interleave(n, 0)
    rep = lambda a: a.repeat_interleave(n, 0)  # noqa: E731
    delta, lam = net(rep(xhat), rep(y), residual * known, known, coded, rep(torch.log(sigma)))
    mean = rep(mu) + rep(s) * delta
    sd = (rep(s) * torch.exp(lam)).clamp(1e-2, 1e4)
    bits = discretized_gaussian_bits(rep(pixels), mean, sd) * coded
    per_image = bits.view(b, n, -1).sum(dim=(1, 2))
    return bits.sum() / coded.sum(), per_image


def coarse_to_fine(mean: torch.Tensor, sd: torch.Tensor, bin_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The coarse stages' Gaussian over bin indices, from the Gaussian N(mean, sd²) over pixel values.

    Bin b holds the values w·b … w·b + w − 1, the interval [w·b − ½, w·(b + 1) − ½): in the units
    u = (x + ½)/w − ½ that is [b − ½, b + ½), so Eq. 13's discretized Gaussian of mean (mean + ½)/w − ½
    and standard deviation sd/w gives each bin its mass (the edge bins take the tails, as for pixels).
    """
    return (mean + 0.5) / bin_width - 0.5, sd / bin_width


def coarse_stage_bits(net: ContextNet, pixels: torch.Tensor, xhat: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`stage_bits` for a coarse-to-fine network: six stages of bins, then six of values inside them.

    A fine stage codes x − w·b (0 … w − 1) with the discretized Gaussian of mean − w·b, its edge bins
    taking the tails, as the codec does with constriction's QuantizedGaussian.
    """
    bw = net.config.bin_width
    b, _, h, w = pixels.shape
    masks = coarse_stage_masks(h, w)
    n = len(masks)
    known = torch.stack([k for k, _, _ in masks]).repeat(b, 1, 1, 1)
    bin_known = torch.stack([k for _, k, _ in masks]).repeat(b, 1, 1, 1)
    coded = torch.stack([c for _, _, c in masks]).repeat(b, 1, 1, 1)
    is_coarse = (torch.arange(n) < n // 2).repeat(b).view(-1, 1, 1, 1)
    s = (sigma * 127.5).view(b, 1, 1, 1)
    mu = (xhat + 1.0) * 127.5
    bins = torch.div(pixels, bw, rounding_mode="floor")
    rep = lambda a: a.repeat_interleave(n, 0)  # noqa: E731
    residual = rep((pixels - mu) / s) * known
    centre = rep((bw * bins + (bw - 1) / 2 - mu) / s) * bin_known
    delta, lam = net(rep(xhat), rep(y), residual, known, coded, rep(torch.log(sigma)), centre, bin_known)
    mean = rep(mu) + rep(s) * delta
    sd = (rep(s) * torch.exp(lam)).clamp(1e-2, 1e4)
    m_c, s_c = coarse_to_fine(mean, sd, bw)
    coarse = discretized_gaussian_bits(rep(bins), m_c, s_c.clamp(1e-2, 1e4), top=256 // bw - 1)
    fine = discretized_gaussian_bits(rep(pixels - bw * bins), mean - bw * rep(bins), sd, top=bw - 1)
    bits = torch.where(is_coarse, coarse, fine) * coded
    per_image = bits.view(b, n, -1).sum(dim=(1, 2))
    return bits.sum() / (coded.sum() / 2), per_image


@torch.no_grad()
def make_pairs(model, images: np.ndarray, config: ContextTrainConfig, batch: int = 100,
               progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """x_0 pixels, x̂_0, y = x_t/√ᾱ_t and σ_t for ``draws_per_image`` random timesteps per image (uint8 (N, H, W, 3))."""
    d = model.diffusion
    gen = torch.Generator().manual_seed(config.seed)
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    idx = torch.arange(len(x0)).repeat(config.draws_per_image)
    ts = torch.tensor(config.timesteps)[torch.randint(len(config.timesteps), (len(idx),), generator=gen)]
    out = {"pixels": torch.empty(len(idx), *x0.shape[1:], dtype=torch.uint8), "xhat": torch.empty(len(idx), *x0.shape[1:]),
           "y": torch.empty(len(idx), *x0.shape[1:]), "sigma": torch.empty(len(idx))}
    for start in range(0, len(idx), batch):
        sl = slice(start, start + batch)
        xb, tb = x0[idx[sl]], ts[sl]
        abar = torch.tensor(d.alphas_cumprod, dtype=torch.float32)[tb].view(-1, 1, 1, 1)
        x_t = d.q_sample(xb, tb, torch.randn(xb.shape, generator=gen)).float()
        eps, var_out = model(x_t, tb)
        pred = d.p_mean_variance(x_t, tb, eps, var_out, model.variance)["pred_xstart"].float()
        out["pixels"][sl] = torch.from_numpy(images[idx[sl].numpy()]).permute(0, 3, 1, 2)
        out["xhat"][sl], out["y"][sl] = pred, x_t / abar.sqrt()
        out["sigma"][sl] = ((1 - abar) / abar).sqrt().view(-1)
        if progress is not None:
            progress(len(xb))
    return out


def train_context_net(pairs: dict[str, torch.Tensor], net_config: ContextNetConfig, config: ContextTrainConfig,
                      log: Callable[[int, float], None] | None = None, init: ContextNet | None = None) -> ContextNet:
    """Fit a ContextNet on ``pairs`` (make_pairs): Adam with a one-cycle schedule, random crops and flips.

    ``init`` (optional, of config ``net_config``) is the network to start from instead of a new one.
    """
    if config.steps < 3:  # the one-cycle schedule needs a step up, a step down and one between
        raise ValueError(f"training needs at least 3 steps, got {config.steps}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = ContextNet(net_config) if init is None else init.train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=max(0.05, 2.0 / config.steps))
    n, _, h, w = pairs["pixels"].shape
    c = min(config.crop, h - h % 2, w - w % 2)
    for step in range(config.steps):
        i = torch.from_numpy(rng.choice(n, config.batch_size, replace=False))
        oy, ox = (int(v) for v in rng.integers(0, (h - c + 1, w - c + 1)))
        crop = lambda a: a[i, :, oy : oy + c, ox : ox + c]  # noqa: E731
        pixels, xhat, y = crop(pairs["pixels"]).float(), crop(pairs["xhat"]), crop(pairs["y"])
        if rng.random() < 0.5:
            pixels, xhat, y = pixels.flip(3), xhat.flip(3), y.flip(3)
        loss, _ = stage_bits(net, pixels, xhat, y, pairs["sigma"][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if log is not None:
            log(step + 1, float(loss.detach()))
    return net.eval()


@torch.no_grad()
def evaluate(net: ContextNet, pairs: dict[str, torch.Tensor], batch: int = 50) -> float:
    """Bits per subpixel of the six stages over ``pairs`` (whole images)."""
    total, dims = 0.0, 0
    for start in range(0, len(pairs["pixels"]), batch):
        sl = slice(start, start + batch)
        _, per_image = stage_bits(net, pairs["pixels"][sl].float(), pairs["xhat"][sl], pairs["y"][sl], pairs["sigma"][sl])
        total += float(per_image.sum())
        dims += pairs["pixels"][sl].numel()
    return total / dims

