"""The exact stage's context network: x_0's distribution from x_t and the subpixels already decoded.

Format version 4's learned exact stage (diffcodec/exact.py) codes x_0 in the same six stages as the
linear one of version 3: two checkerboard passes, channel by channel.  For each stage this small
convolutional network sees, per pixel,

- x̂_0 (the diffusion model's prediction from x_t, model space [-1, 1]) and y = x_t / √ᾱ_t
  (x_0 plus Gaussian noise of standard deviation σ_t = √((1 − ᾱ_t)/ᾱ_t)),
- the residuals r = (x_0 − x̂_0) / σ_t (pixel units over pixel units) of the subpixels already decoded, zero elsewhere,
  with a mask of which ones those are and a mask of which ones this stage codes,
- log σ_t,

and returns, per subpixel, a mean offset δ and a log-scale λ: the stage codes x_0 with the
discretized Gaussian of Eq. 13 of mean x̂_0 + σ_t δ and standard deviation σ_t e^λ (pixel units).
The residuals of decoded neighbours tell the network what the denoiser got wrong nearby; the masks
let one network serve all six stages.  It is fully convolutional: any image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

IN_CHANNELS = 16  # x̂_0 (3), y (3), known residuals (3), known mask (3), coded mask (3), log σ_t (1)


@dataclass(frozen=True)
class ContextNetConfig:
    width: int = 48
    blocks: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ContextNetConfig":
        return cls(**d)


class ContextNet(nn.Module):
    """3×3 convolution, ``blocks`` residual blocks (GELU, 3×3, GELU, 1×1), 1×1 to (δ, λ) for 3 channels."""

    def __init__(self, config: ContextNetConfig = ContextNetConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.inp = nn.Conv2d(IN_CHANNELS, w, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 1)) for _ in range(config.blocks)
        )
        self.out = nn.Conv2d(w, 6, 1)
        # Start at δ = 0, λ = 0: x̂_0 with the noise's own σ_t, the linear stage's baseline.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, xhat: torch.Tensor, y: torch.Tensor, residual: torch.Tensor, known: torch.Tensor,
                coded: torch.Tensor, log_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ, λ), each (B, 3, H, W).  ``residual`` must be zero where ``known`` is; ``log_sigma`` is (B,)."""
        b, _, h, w = xhat.shape
        feats = torch.cat([xhat, y, residual, known, coded, log_sigma.view(b, 1, 1, 1).expand(b, 1, h, w)], dim=1)
        z = self.inp(feats)
        for block in self.blocks:
            z = z + block(z)
        out = self.out(z)
        return out[:, :3], out[:, 3:]


def stage_masks(height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(known, coded) masks (3, H, W) of the six stages of a 3-channel plane, in coding order.

    Pass 0 codes the pixels with (y + x) even, pass 1 the others; within a pass, channel 0, 1, 2.
    The same order as :class:`diffcodec.exact.ExactLayout`'s stages.
    """
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    first = ((yy + xx) % 2 == 0).float()
    out = []
    for second in (False, True):
        for c in range(3):
            known, coded = torch.zeros(3, height, width), torch.zeros(3, height, width)
            pass_pixels = 1.0 - first if second else first
            if second:
                known[:] = first
            known[:c] += pass_pixels
            coded[c] = pass_pixels
            out.append((known, coded))
    return out
