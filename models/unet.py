"""The DDPM U-Net family (Ho et al. 2020 Appendix B; Nichol & Dhariwal 2021 §2.4).

GroupNorm, sinusoidal time embedding, residual blocks with the time embedding
added after the first convolution, self-attention at chosen resolutions, dropout.
Optionally VDM-style Fourier features of the input (Kingma et al. 2021 §3.5),
which help at the low-noise end where most of the bits are.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    """Network shape; saved inside every checkpoint."""

    in_channels: int = 3
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    learn_sigma: bool = True
    fourier_features: tuple[int, ...] = (7, 8)  # exponents n of sin/cos(2^n π x); () disables
    image_size: int = 32
    num_heads: int = 1
    # Options needed to hold other DDPM implementations' weights exactly (see models/convert.py).
    norm_groups: int | None = None  # GroupNorm groups everywhere; None: 32, or fewer to keep ≥ 4 channels a group
    norm_eps: float = 1e-5
    time_sin_first: bool = False  # sinusoidal embedding as [sin, cos] (DDPM) instead of [cos, sin]
    time_freq_shift: int = 0  # frequencies exp(−ln(10⁴) · i / (half − shift)); DDPM uses 1
    downsample_pad_trailing: bool = False  # pad right/bottom only (TensorFlow 'SAME', as DDPM) instead of all round

    # Fields added after the first checkpoints: left out of to_dict() while at their defaults, so a
    # config that doesn't use them serialises, and hashes into DiffusionModel.identity, as it always did.
    _LATER_FIELDS = ("norm_groups", "norm_eps", "time_sin_first", "time_freq_shift", "downsample_pad_trailing")

    def to_dict(self) -> dict:
        d = asdict(self)
        defaults = UNetConfig()
        for key in self._LATER_FIELDS:
            if d[key] == getattr(defaults, key):
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        for key in ("channel_mult", "attention_resolutions", "fourier_features"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


def timestep_embedding(
    t: torch.Tensor, dim: int, max_period: float = 10000.0, sin_first: bool = False, freq_shift: int = 0
) -> torch.Tensor:
    """Sinusoidal embedding of (integer) timesteps, as in the Transformer and DDPM.

    Frequency i of ``dim // 2`` is ``max_period^(−i / (dim // 2 − freq_shift))``; the defaults give
    improved-diffusion's [cos, sin], while ``sin_first=True, freq_shift=1`` is DDPM's (Ho et al. 2020).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift))
    args = t.float()[:, None] * freqs[None]
    parts = [torch.sin(args), torch.cos(args)] if sin_first else [torch.cos(args), torch.sin(args)]
    emb = torch.cat(parts, dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _norm(ch: int, groups: int | None = None, eps: float = 1e-5) -> nn.GroupNorm:
    if groups is None:
        # 32 groups as in DDPM when the width allows, else the largest divisor that keeps ≥ 4 channels a group.
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if ch % g == 0 and ch // g >= 4 or g == 1)
    elif ch % groups:
        raise ValueError(f"norm_groups={groups} does not divide a layer's {ch} channels")
    return nn.GroupNorm(groups, ch, eps=eps)


class DownsampleConv(nn.Conv2d):
    """3×3 stride-2 convolution padded by one pixel on the right and bottom only.

    This is TensorFlow's 'SAME' padding for even sizes, which the original DDPM used: output j is
    centred on input pixel 2j + 1, where the symmetric ``padding=1`` convolution centres it on 2j.
    """

    def __init__(self, ch: int):
        super().__init__(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)))


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, norm: Callable[[int], nn.GroupNorm] = _norm):
        super().__init__()
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # start as identity: stabler early training
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    def __init__(self, ch: int, num_heads: int, norm: Callable[[int], nn.GroupNorm] = _norm):
        super().__init__()
        self.norm = norm(ch)
        self.num_heads = num_heads
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
        q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(b, c, h * w)
        return x + self.proj(out).reshape(b, c, h, w)


class UNet(nn.Module):
    """ε-prediction network: ``forward(x_t, t)`` returns ε (and the variance output v if learn_sigma).

    ``t`` holds original training indices 0..T−1.
    """

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        ch = config.base_channels
        emb_dim = 4 * ch
        norm = functools.partial(_norm, groups=config.norm_groups, eps=config.norm_eps)
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        in_ch = config.in_channels * (1 + 2 * len(config.fourier_features))
        self.input_conv = nn.Conv2d(in_ch, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_chs = [ch]
        cur, res = ch, config.image_size
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, ch * mult, emb_dim, config.dropout, norm)])
                cur = ch * mult
                if res in config.attention_resolutions:
                    block.append(AttentionBlock(cur, config.num_heads, norm))
                self.down.append(block)
                skip_chs.append(cur)
            if level != len(config.channel_mult) - 1:
                down = DownsampleConv(cur) if config.downsample_pad_trailing else nn.Conv2d(cur, cur, 3, stride=2, padding=1)
                self.down.append(nn.ModuleList([down]))
                skip_chs.append(cur)
                res //= 2

        self.mid = nn.ModuleList(
            [
                ResBlock(cur, cur, emb_dim, config.dropout, norm),
                AttentionBlock(cur, config.num_heads, norm),
                ResBlock(cur, cur, emb_dim, config.dropout, norm),
            ]
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + skip_chs.pop(), ch * mult, emb_dim, config.dropout, norm)])
                cur = ch * mult
                if res in config.attention_resolutions:
                    block.append(AttentionBlock(cur, config.num_heads, norm))
                if level and i == config.num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(cur, cur, 3, padding=1))
                    res *= 2
                self.up.append(block)

        self.out_norm = norm(cur)
        self.out_conv = nn.Conv2d(cur, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for n in self.config.fourier_features:
            # Fourier features resolve detail at the scale of one pixel bin (2/255 ≈ 2^-7).
            arg = x * (2.0**n * math.pi)
            feats += [torch.sin(arg), torch.cos(arg)]
        return torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        emb = self.time_mlp(timestep_embedding(t, c.base_channels, sin_first=c.time_sin_first, freq_shift=c.time_freq_shift))
        h = self.input_conv(self._features(x))
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return self.out_conv(F.silu(self.out_norm(h)))
