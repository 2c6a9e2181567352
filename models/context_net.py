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

With ``bin_width`` w > 0 the same network serves the *coarse-to-fine* exact stage (docs/codec.md,
"Coarse-to-fine exact stage"): twelve stages, the six above first coding each subpixel's bin
⌊x_0 / w⌋ and then six more coding its value inside the bin.  It then also sees, per subpixel, the
normalized centre of its bin where the bin is decoded, (w·b + (w − 1)/2 − μ)/σ_t, and a mask of
those: the bins of neighbours tell the fine stages (and the later coarse ones) where the image is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

IN_CHANNELS = 16  # x̂_0 (3), y (3), known residuals (3), known mask (3), coded mask (3), log σ_t (1)
BIN_CHANNELS = 6  # coarse-to-fine only: bin centres as normalized residuals (3), known-bin mask (3)


@dataclass(frozen=True)
class ContextNetConfig:
    width: int = 48
    blocks: int = 4
    bin_width: int = 0  # > 0: the coarse-to-fine network, for bins of this many levels (a divisor of 256)

    @property
    def in_channels(self) -> int:
        return IN_CHANNELS + (BIN_CHANNELS if self.bin_width else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.bin_width:
            del d["bin_width"]  # the dict is hashed into the codec identity: older networks keep theirs
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ContextNetConfig":
        return cls(**d)


class ContextNet(nn.Module):
    """3×3 convolution, ``blocks`` residual blocks (GELU, 3×3, GELU, 1×1), 1×1 to (δ, λ) for 3 channels."""

    def __init__(self, config: ContextNetConfig = ContextNetConfig()):
        super().__init__()
        self.config = config
        w = config.width
        if config.bin_width and (config.bin_width < 2 or 256 % config.bin_width):
            raise ValueError(f"bin_width must be a divisor of 256 above 1, not {config.bin_width}")
        self.inp = nn.Conv2d(config.in_channels, w, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GELU(), nn.Conv2d(w, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 1)) for _ in range(config.blocks)
        )
        self.out = nn.Conv2d(w, 6, 1)
        # Start at δ = 0, λ = 0: x̂_0 with the noise's own σ_t, the linear stage's baseline.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, xhat: torch.Tensor, y: torch.Tensor, residual: torch.Tensor, known: torch.Tensor,
                coded: torch.Tensor, log_sigma: torch.Tensor, bins: torch.Tensor | None = None,
                bin_known: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ, λ), each (B, 3, H, W).  ``residual`` must be zero where ``known`` is not; ``log_sigma`` is (B,).

        ``bins`` and ``bin_known`` (coarse-to-fine networks only): the normalized bin centres, zero where
        ``bin_known`` is not set.
        """
        z = self.inp(stack_inputs(self.config, xhat, y, residual, known, coded, log_sigma, bins, bin_known))
        for block in self.blocks:
            z = z + block(z)
        out = self.out(z)
        return out[:, :3], out[:, 3:]


def stack_inputs(config: ContextNetConfig, xhat: torch.Tensor, y: torch.Tensor, residual: torch.Tensor, known: torch.Tensor,
                 coded: torch.Tensor, log_sigma: torch.Tensor, bins: torch.Tensor | None = None,
                 bin_known: torch.Tensor | None = None) -> torch.Tensor:
    """The network's input channels in order (IN_CHANNELS, then BIN_CHANNELS for a coarse-to-fine network)."""
    b, _, h, w = xhat.shape
    parts = [xhat, y, residual, known, coded, log_sigma.view(b, 1, 1, 1).expand(b, 1, h, w)]
    if config.bin_width:
        if bins is None or bin_known is None:
            raise ValueError("a coarse-to-fine context network needs bins and bin_known")
        parts += [bins, bin_known]
    return torch.cat(parts, dim=1)


def widened(net: ContextNet, bin_width: int) -> ContextNet:
    """A coarse-to-fine network that starts as ``net``: its weights, zero weights on the bin inputs.

    Fine-tuning from the shipped six-stage network is much cheaper than training from scratch.
    """
    config = ContextNetConfig(width=net.config.width, blocks=net.config.blocks, bin_width=bin_width)
    out = ContextNet(config)
    state = net.state_dict()
    weight = torch.zeros_like(out.inp.weight)
    weight[:, :IN_CHANNELS] = state["inp.weight"]
    state = {**state, "inp.weight": weight}
    out.load_state_dict(state)
    return out


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


def coarse_stage_masks(height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(known, bin_known, coded) masks (3, H, W) of the twelve coarse-to-fine stages, in coding order.

    Stages 0–5 code bins in the order of :func:`stage_masks` (no exact value known, the earlier stages'
    bins known); stages 6–11 code values inside the bins in the same order (every bin known).
    """
    six = stage_masks(height, width)
    ones = torch.ones(3, height, width)
    coarse = [(torch.zeros_like(k), k, c) for k, c in six]
    fine = [(k, ones, c) for k, c in six]
    return coarse + fine
