"""The exact stage of format version 3: x_0 losslessly from the last lossy state, predicting residuals.

From the last lossy state the model gives every subpixel a Gaussian N(μ, σ²) in pixel units
(Eq. 13's p_θ(x_0 | x_1) at x_1; x̂_0 and the variance of its noise term above x_1).  The
residuals r = x_0 − μ are not independent: the denoiser averages noise over neighbouring pixels
and across colour channels, so neighbours share its error (bench/exact_stage.py measures the
correlations; docs/codec.md "Residual prediction").

So each plane is coded in two checkerboard passes and, within a pass, channel by channel.  A
*stage* (plane, pass, channel) codes its subpixels with the discretized Gaussian of Eq. 13 with
mean μ + Σ_j w_j f_j and standard deviation c·σ, where the features f_j are residuals the decoder
already has: the same pixel's earlier channels, then (second pass only) the mean residual of the
pixel's decoded 4-neighbours in the same channel and in each earlier channel, then the same over
the ring of eight first-pass pixels around them.  Each stage has its own scale c.

Stream (after the last lossy step, docs/format.md): 1 bit (0: :data:`DEFAULT_WEIGHTS`, 1: explicit
weights follow as 6 bits each, w = (q − 32)/16), then for every non-empty stage in order a 4-bit index
into :data:`EXACT_SCALES` followed by that stage's symbols.

Format version 4 puts one bit before that: 0 is the linear stage above, 1 the *learned* stage.  The
learned stage (for the colour plane of RGB and RGBA images, with a model that carries a context
network, models/context_net.py) codes the colour plane's six stages with the mean and scale the
context network predicts from x̂_0, x_t and the residuals decoded so far; per stage a 4-bit index
into :data:`CONTEXT_SCALES` corrects its scale, then the stage's symbols.  An RGBA image's alpha
plane follows as a linear stage of its own (weights flag, weights, scales, symbols).  The encoder plans both and
writes the cheaper.

With the container flag ``FLAG_COARSE_TO_FINE`` the learned stage is *coarse-to-fine* (the model's
second context network, with a bin width w): twelve stages, the six above coding each subpixel's
bin ⌊x_0 / w⌋ first, then the same six coding x_0 − w·bin inside the known bins, each with a 4-bit
scale index.  A prefix that ends after the bins shows every subpixel to within its bin, so the
exact stage's partial points are useful previews (docs/codec.md, "Coarse-to-fine exact stage").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import constriction

from .entropy import PIXEL_MODEL, decode_raw_bits, encode_raw_bits
from .tiling import TileLayout

# c in N(mean, (c·σ)²): 2^(k/4) for k = −12..3, i.e. 2^-3 .. 2^0.75, as literals: a math library's pow
# need not give these last bits everywhere, and the decoder's tables depend on them.
EXACT_SCALES = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p-3", "0x1.306fe0a31b715p-3", "0x1.6a09e667f3bcdp-3", "0x1.ae89f995ad3adp-3",
    "0x1.0000000000000p-2", "0x1.306fe0a31b715p-2", "0x1.6a09e667f3bcdp-2", "0x1.ae89f995ad3adp-2",
    "0x1.0000000000000p-1", "0x1.306fe0a31b715p-1", "0x1.6a09e667f3bcdp-1", "0x1.ae89f995ad3adp-1",
    "0x1.0000000000000p+0", "0x1.306fe0a31b715p+0", "0x1.6a09e667f3bcdp+0", "0x1.ae89f995ad3adp+0",
)])
WEIGHT_BITS = 6
WEIGHT_OFFSET = 32  # w = (q − 32)/16: q in 0..63 covers −2 .. 1.9375
WEIGHT_STEP = 1.0 / 16.0
# Per stage (pass, channel) of a 3-channel plane and of a 1-channel plane, in q units, features in the
# order ExactLayout.features gives them.  Least squares pooled over CIFAR-10 test images 100–147 at
# t = 16, the median start of the exact stage (x_t drawn from q, shipped model of 2026-11-23):
# `python bench/exact_weights.py` prints them.  A 1-channel plane takes the colour plane's channel 0.
DEFAULT_WEIGHTS = {
    3: {(0, 0): (), (0, 1): (39,), (0, 2): (35, 38), (1, 0): (46, 31), (1, 1): (42, 51, 17, 27, 37),
        (1, 2): (35, 41, 52, 27, 18, 26, 33, 37)},
    1: {(0, 0): (), (1, 0): (46, 31)},
}


@dataclass(frozen=True)
class Stage:
    plane: int
    second: bool  # the checkerboard's second pass: its 4-neighbours are decoded
    channel: int

    @property
    def num_weights(self) -> int:
        return self.channel + (2 * (1 + self.channel) if self.second else 0)


# The learned stage's scale corrections 2^((k − 8)/8), k = 0..15 (2^-1 .. 2^0.875), as literals likewise.
CONTEXT_SCALES = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p-1", "0x1.172b83c7d517bp-1", "0x1.306fe0a31b715p-1", "0x1.4bfdad5362a27p-1",
    "0x1.6a09e667f3bcdp-1", "0x1.8ace5422aa0dbp-1", "0x1.ae89f995ad3adp-1", "0x1.d5818dcfba487p-1",
    "0x1.0000000000000p+0", "0x1.172b83c7d517bp+0", "0x1.306fe0a31b715p+0", "0x1.4bfdad5362a27p+0",
    "0x1.6a09e667f3bcdp+0", "0x1.8ace5422aa0dbp+0", "0x1.ae89f995ad3adp+0", "0x1.d5818dcfba487p+0",
)])
LINEAR, LEARNED = 0, 1  # the method bit of format version 4
COARSE = 2  # ExactPlan.method of the coarse-to-fine stage: method bit LEARNED in a file with FLAG_COARSE_TO_FINE


@dataclass(frozen=True)
class ExactPlan:
    """What the stream says about the exact stage: its method, explicit weights (linear method; None for
    the defaults) and a scale per stage."""

    weights: tuple[tuple[int, ...], ...] | None
    scales: tuple[int, ...]
    bits: float  # the encoder's estimate of the stage's cost, side information included
    method: int = LINEAR
    rest: "ExactPlan | None" = None  # learned method: the linear stage of the planes after the colour plane (alpha)
    stage_bits: tuple[float, ...] = ()  # the estimate per stage (its symbols and scale index), this plan's stages only

    def all_stage_bits(self) -> tuple[float, ...]:
        """Per stage in coding order, the planes after the colour plane included."""
        return self.stage_bits + (self.rest.all_stage_bits() if self.rest is not None else ())


@dataclass(frozen=True)
class ContextInputs:
    """What the learned stage's network sees besides the residuals, for the one 3-channel plane.

    ``xhat`` and ``y`` are (H, W, 3) in model space: x̂_0 and x_t/√ᾱ_t; ``sigma`` is σ_t = √((1−ᾱ_t)/ᾱ_t)
    in model units.  Built identically by encoder and decoder from the state both hold.
    """

    xhat: np.ndarray
    y: np.ndarray
    sigma: float
    log_sigma: float | None = None  # ln σ_t as the format version computes it (None: math.log, versions ≤ 4)
    exp: Callable[[np.ndarray], np.ndarray] = np.exp  # the format version's exp (diffcodec/numerics.py)

    @property
    def log_sigma_input(self) -> float:
        return math.log(self.sigma) if self.log_sigma is None else self.log_sigma

    @property
    def mu(self) -> np.ndarray:
        return (self.xhat + 1.0) * 127.5  # pixel units, float64

    @property
    def sigma_pixels(self) -> float:
        return self.sigma * 127.5


class ExactLayout:
    """The planes of an image as the exact stage sees them, and their stages in coding order."""

    def __init__(self, layout: TileLayout, first_plane: int = 0):
        # per plane: (H, W, c) flat indices into the tile layout; ``first_plane`` drops the planes before it
        self.maps = layout.plane_index_maps()[first_plane:]
        self._tiles, self._first_plane = layout, first_plane
        h, w = layout.height, layout.width
        yy, xx = np.mgrid[:h, :w]
        self.first = (yy + xx) % 2 == 0
        # How many of each pixel's first-pass 4-neighbours and ring neighbours lie inside the image.
        self.neighbours = _window_sum(self.first.astype(np.float64), NEAR)
        self.ring = _window_sum(self.first.astype(np.float64), RING)
        self.stages = [Stage(k, second, ch) for k, m in enumerate(self.maps) for second in (False, True)
                       for ch in range(m.shape[2]) if self.selection(Stage(k, second, ch)).any()]

    def rest(self) -> "ExactLayout | None":
        """The planes after the first (RGBA's alpha) as a layout of their own, or None."""
        return ExactLayout(self._tiles, self._first_plane + 1) if len(self.maps) > 1 else None

    def planes(self, flat: np.ndarray) -> list[np.ndarray]:
        return [flat[m] for m in self.maps]

    def default_weights(self) -> tuple[tuple[int, ...], ...]:
        return tuple(DEFAULT_WEIGHTS[self.maps[s.plane].shape[2]][(int(s.second), s.channel)] for s in self.stages)

    def features(self, stage: Stage, residual: np.ndarray) -> np.ndarray:
        """(n, num_weights) features of the stage's subpixels from the plane's decoded residuals."""
        sel = self.selection(stage)
        cols = [residual[..., j][sel] for j in range(stage.channel)]
        if stage.second:
            order = (stage.channel, *range(stage.channel))
            for offsets, count in ((NEAR, self.neighbours), (RING, self.ring)):
                for j in order:
                    total = _window_sum(np.where(self.first, residual[..., j], 0.0), offsets)
                    cols.append((total / np.maximum(count, 1.0))[sel])
        return np.stack(cols, axis=1) if cols else np.zeros((int(sel.sum()), 0))

    def selection(self, stage: Stage) -> np.ndarray:
        """Pixels (H, W) the stage codes: the checkerboard's first or second pass."""
        return ~self.first if stage.second else self.first

    def stage_sizes(self) -> list[int]:
        """Subpixels of each stage, in coding order."""
        return [int(self.selection(s).sum()) for s in self.stages]

    def coding_order(self, x: list[np.ndarray]) -> np.ndarray:
        """The planes' subpixels as the stream codes them: stage after stage, row-major within a stage.

        A partial truncation point's subpixel count is a prefix of this sequence (docs/format.md).
        """
        return np.concatenate([x[s.plane][..., s.channel][self.selection(s)] for s in self.stages])


def _read(coder, mean: np.ndarray, sd: np.ndarray, budget: float, model=PIXEL_MODEL, top: int = 255
          ) -> tuple[np.ndarray, int]:
    """The stage's symbols (0..top): the first ``budget`` from the coder, the rest predicted; and how many were read."""
    take = int(min(len(mean), budget))
    values = np.clip(np.rint(mean), 0.0, float(top))  # what a decoder shows for a symbol the stream has not reached
    if take:
        values[:take] = coder.decode(model, mean[:take], sd[:take])
    return values, take


# Offsets (dy, dx) of a second-pass pixel's first-pass neighbours: the four nearest, then the ring of
# eight at distance √5 (odd |dy| + |dx|, so first-pass too).
NEAR = ((-1, 0), (1, 0), (0, -1), (0, 1))
RING = ((-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (1, -2), (-1, 2), (1, 2))


def _window_sum(a: np.ndarray, offsets: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Σ over ``offsets`` of a[y + dy, x + dx], zero outside the image, summed in the order given."""
    h, w = a.shape
    padded = np.pad(a, 2)
    total = np.zeros_like(a)
    for dy, dx in offsets:
        total = total + padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return total


def _weights(q: tuple[int, ...]) -> np.ndarray:
    return (np.asarray(q, dtype=np.float64) - WEIGHT_OFFSET) * WEIGHT_STEP


def _stage_params(mu: np.ndarray, sd: np.ndarray, features: np.ndarray, q: tuple[int, ...], scale: int):
    # μ + w_1 f_1 + w_2 f_2 + … left to right with elementwise float64 ufuncs, not a BLAS product: the
    # decoder's tables depend on it, and BLAS kernels may sum in another order on another CPU.
    mean = mu.copy()
    for w, f in zip(_weights(q), features.T):
        mean = mean + w * f
    # constriction panics on NaN or a std of 0: clamp (the same on both sides).
    mean = np.nan_to_num(np.clip(mean, -1e4, 1e4), nan=127.5)
    return mean, np.clip(sd * EXACT_SCALES[scale], 1e-2, 1e4)


def stage_bits(x: np.ndarray, mean: np.ndarray, sd: np.ndarray, scales: np.ndarray = EXACT_SCALES, top: int = 255
               ) -> np.ndarray:
    """Bits of integer samples ``x`` (0..top) under Eq. 13's discretized Gaussian for every scale in ``scales``.

    The edge bins take the tails (as :data:`PIXEL_MODEL` does); the upper tail is computed from the
    survival function so that far-off samples keep their precision.  Returns shape (len(scales),).
    """
    x_t, m_t = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(mean)
    s = (torch.from_numpy(sd)[None, :] * torch.from_numpy(scales)[:, None]).clamp(1e-2, 1e4)
    lo = torch.where(x_t <= 0, torch.tensor(-math.inf, dtype=torch.float64), x_t - 0.5)
    hi = torch.where(x_t >= top, torch.tensor(math.inf, dtype=torch.float64), x_t + 0.5)
    z_lo, z_hi = (lo - m_t) / s, (hi - m_t) / s
    upper = z_lo > 0
    p = torch.where(upper, torch.special.ndtr(-z_lo) - torch.special.ndtr(-z_hi),
                    torch.special.ndtr(z_hi) - torch.special.ndtr(z_lo))
    return (-torch.log2(p.clamp_min(1e-15))).sum(dim=1).numpy()


def plan(layout: ExactLayout, x: list[np.ndarray], mu: list[np.ndarray], sd: list[np.ndarray]) -> ExactPlan:
    """The encoder's choice of weights and scales for planes ``x`` (pixel values) given base ``mu`` and ``sd``.

    Explicit weights are least squares per stage, rounded to the format's grid; they are sent when the
    Gaussian estimate of what they save, Σ n/2·log₂(SSE_default / SSE_explicit), beats their 6 bits each.
    """
    residual = [xi.astype(np.float64) - m for xi, m in zip(x, mu)]
    default = layout.default_weights()
    fitted, feats, gain, cost = [], [], 0.0, 0
    for stage, q_default in zip(layout.stages, default):
        sel = layout.selection(stage)
        f = layout.features(stage, residual[stage.plane])
        y = residual[stage.plane][..., stage.channel][sel]
        feats.append(f)
        if not stage.num_weights:
            fitted.append(())
            continue
        w = np.linalg.lstsq(f, y, rcond=None)[0]
        q = tuple(int(v) for v in np.clip(np.round(w / WEIGHT_STEP) + WEIGHT_OFFSET, 0, 2**WEIGHT_BITS - 1))
        fitted.append(q)
        sse = [float(np.sum((y - f @ _weights(qq)) ** 2)) + 1e-9 for qq in (q_default, q)]
        gain += 0.5 * len(y) * math.log2(sse[0] / sse[1])
        cost += WEIGHT_BITS * len(q)
    explicit = gain > cost
    chosen = tuple(fitted) if explicit else default
    bits, scales, stage_costs = 1.0 + (cost if explicit else 0), [], []
    for stage, q, f in zip(layout.stages, chosen, feats):
        sel = layout.selection(stage)
        c = stage.channel
        mean, _ = _stage_params(mu[stage.plane][..., c][sel], sd[stage.plane][..., c][sel], f, q, 0)
        per_scale = stage_bits(x[stage.plane][..., c][sel], mean, sd[stage.plane][..., c][sel])
        scales.append(int(np.argmin(per_scale)))
        stage_costs.append(4 + float(per_scale.min()))
        bits += stage_costs[-1]
    return ExactPlan(weights=tuple(fitted) if explicit else None, scales=tuple(scales), bits=bits, stage_bits=tuple(stage_costs))


def encode(coder, layout: ExactLayout, p: ExactPlan, x: list[np.ndarray], mu: list[np.ndarray], sd: list[np.ndarray],
           on_stage: Callable[[int], None] | None = None) -> None:
    """Write the exact stage of planes ``x`` (uint8) as planned.

    ``on_stage(n)`` is called after each stage's symbols with the subpixels written so far: where the
    encoder may put a partial truncation point.
    """
    encode_raw_bits(coder, int(p.weights is not None), 1)
    weights = p.weights if p.weights is not None else layout.default_weights()
    if p.weights is not None:
        for q in p.weights:
            for v in q:
                encode_raw_bits(coder, v, WEIGHT_BITS)
    residual = [xi.astype(np.float64) - m for xi, m in zip(x, mu)]
    done = 0
    for stage, q, scale in zip(layout.stages, weights, p.scales):
        sel, c = layout.selection(stage), stage.channel
        known = _known(layout, stage, residual[stage.plane])
        mean, s = _stage_params(mu[stage.plane][..., c][sel], sd[stage.plane][..., c][sel],
                                layout.features(stage, known), q, scale)
        encode_raw_bits(coder, scale, 4)
        coder.encode(x[stage.plane][..., c][sel].astype(np.int32), PIXEL_MODEL, mean, s)
        done += int(sel.sum())
        if on_stage is not None:
            on_stage(done)


def decode(coder, layout: ExactLayout, mu: list[np.ndarray], sd: list[np.ndarray], limit: float = math.inf
           ) -> list[np.ndarray]:
    """Read the exact stage: the planes as uint8 (H, W, c).

    Only the first ``limit`` subpixels (coding order) are read; the others get their stage's predicted
    mean, computed from what was read and predicted before them (a partial truncation point's image).
    """
    if limit > 0:
        explicit = decode_raw_bits(coder, 1)
    else:
        explicit = 0  # nothing of this stage was written: predict with the default weights
    if explicit:
        weights = tuple(tuple(decode_raw_bits(coder, WEIGHT_BITS) for _ in range(s.num_weights)) for s in layout.stages)
    else:
        weights = layout.default_weights()
    x = [np.zeros(m.shape, dtype=np.uint8) for m in mu]
    residual = [np.zeros(m.shape) for m in mu]
    for stage, q in zip(layout.stages, weights):
        sel, c, k = layout.selection(stage), stage.channel, stage.plane
        scale = decode_raw_bits(coder, 4) if limit > 0 else 0
        mean, s = _stage_params(mu[k][..., c][sel], sd[k][..., c][sel], layout.features(stage, residual[k]), q, scale)
        values, read = _read(coder, mean, s, limit)
        limit -= read
        x[k][..., c][sel] = values.astype(np.uint8)
        residual[k][..., c][sel] = values.astype(np.float64) - mu[k][..., c][sel]
    return x


def _known(layout: ExactLayout, stage: Stage, residual: np.ndarray) -> np.ndarray:
    """The residuals a decoder holds when it reaches ``stage`` (zeros elsewhere): the encoder's features match its own."""
    known = np.zeros_like(residual)
    known[layout.first] = residual[layout.first] if stage.second else 0.0
    if stage.second:
        known[~layout.first, : stage.channel] = residual[~layout.first, : stage.channel]
    else:
        known[layout.first, : stage.channel] = residual[layout.first, : stage.channel]
    return known


# --------------------------------------------------------------------------- learned stage (format version 4)

def learned_available(layout: ExactLayout, net) -> bool:
    """The learned stage needs a context network and a colour plane first (RGB, RGBA; not grey)."""
    return net is not None and layout.maps[0].shape[2] == 3


def colour_stages(layout: ExactLayout) -> list[Stage]:
    return [s for s in layout.stages if s.plane == 0]


def _context_outputs(net, layout: ExactLayout, inputs: ContextInputs, known_residuals: list[np.ndarray],
                     stages: list[Stage]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(δ, λ) as float64 (H, W, 3) for each of ``stages``, one batch row per stage.

    ``known_residuals[i]`` holds the normalized residuals (x_0 − μ)/σ_t the decoder has at that stage
    (zeros elsewhere).  Encoder and decoder must call this with the same batch rows for the numbers the
    coder's tables depend on (outputs differ at ~1e-6 between batch sizes): one stage per call.
    """
    from diffcodec.models.context_net import stage_masks

    h, w = layout.maps[0].shape[:2]
    masks = stage_masks(h, w)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
    n = len(stages)
    xhat, y = chw(inputs.xhat).expand(n, -1, -1, -1), chw(inputs.y).expand(n, -1, -1, -1)
    order = [3 * int(s.second) + s.channel for s in stages]  # stage_masks lists all six; a 1×1 image has three
    known = torch.stack([masks[i][0] for i in order])
    coded = torch.stack([masks[i][1] for i in order])
    residual = torch.stack([chw(r) for r in known_residuals]) * known
    log_sigma = torch.full((n,), inputs.log_sigma_input, dtype=torch.float32)
    with torch.no_grad():
        delta, lam = net(xhat, y, residual, known, coded, log_sigma)
    return [(delta[j].double().numpy().transpose(1, 2, 0), lam[j].double().numpy().transpose(1, 2, 0)) for j in range(n)]


def _learned_params(layout: ExactLayout, stage: Stage, inputs: ContextInputs, delta: np.ndarray, lam: np.ndarray,
                    scale: float) -> tuple[np.ndarray, np.ndarray]:
    sel, c = layout.selection(stage), stage.channel
    s = inputs.sigma_pixels
    mean = inputs.mu[..., c][sel] + s * delta[..., c][sel]
    sd = s * inputs.exp(np.clip(lam[..., c][sel], -30.0, 30.0)) * scale
    # constriction panics on NaN or a std of 0: clamp (the same on both sides).
    return np.nan_to_num(np.clip(mean, -1e4, 1e4), nan=127.5), np.nan_to_num(np.clip(sd, 1e-2, 1e4), nan=1e4)


def _normalized(inputs: ContextInputs, x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) - inputs.mu) / inputs.sigma_pixels


def plan_learned(layout: ExactLayout, net, x: list[np.ndarray], inputs: ContextInputs,
                 mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None) -> ExactPlan:
    """The encoder's estimate of the learned stage: a scale per colour stage, then the other planes' linear plan.

    ``x`` are the planes' pixel values (the colour plane (H, W, 3) first); ``mu`` and ``sd`` the base
    Gaussians of all planes (only those after the colour plane are used, for the linear rest).  The
    colour plane's six stages go in one batch: an estimate (the stream recomputes each on its own).
    """
    stages = colour_stages(layout)
    r = _normalized(inputs, x[0])
    outputs = _context_outputs(net, layout, inputs, [r] * len(stages), stages)
    per_stage = []
    for stage, (delta, lam) in zip(stages, outputs):
        mean, s = _learned_params(layout, stage, inputs, delta, lam, 1.0)
        per_stage.append(stage_bits(x[0][..., stage.channel][layout.selection(stage)], mean, s, CONTEXT_SCALES))
    return _network_plan(LEARNED, per_stage, layout, x, mu, sd)


def _network_plan(method: int, per_stage: list[np.ndarray], layout: ExactLayout, x: list[np.ndarray],
                  mu: list[np.ndarray] | None, sd: list[np.ndarray] | None) -> ExactPlan:
    """A network stage's plan from each stage's bits per scale correction: the best scale (4 bits) per stage,
    the method bit, then the planes after the colour plane (alpha) as a linear plan."""
    scales = tuple(int(np.argmin(per)) for per in per_stage)
    stage_costs = tuple(4 + float(per.min()) for per in per_stage)
    bits = 1.0 + sum(stage_costs)
    rest = None
    if layout.rest() is not None:
        rest = plan(layout.rest(), x[1:], mu[1:], sd[1:])
        bits += rest.bits
    return ExactPlan(weights=None, scales=scales, bits=bits, method=method, rest=rest, stage_bits=stage_costs)


def encode_learned(coder, layout: ExactLayout, net, p: ExactPlan, x: list[np.ndarray], inputs: ContextInputs,
                   mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None,
                   on_stage: Callable[[int], None] | None = None, outputs: list | None = None) -> None:
    """Write the learned stage of planes ``x`` (uint8, the colour plane first) as planned, method bit included.

    ``on_stage`` as for :func:`encode`; ``outputs``, if given, receives each stage's network outputs (for
    :func:`decode_learned`'s ``known_outputs``).
    """
    encode_raw_bits(coder, LEARNED, 1)
    r = _normalized(inputs, x[0])
    done = 0
    for stage, scale in zip(colour_stages(layout), p.scales):
        known = np.zeros_like(r)
        known_mask = _known_mask(layout, stage)
        known[known_mask] = r[known_mask]
        (delta, lam), = _context_outputs(net, layout, inputs, [known], [stage])
        if outputs is not None:
            outputs.append((delta, lam))
        mean, s = _learned_params(layout, stage, inputs, delta, lam, CONTEXT_SCALES[scale])
        encode_raw_bits(coder, scale, 4)
        sel = layout.selection(stage)
        coder.encode(x[0][..., stage.channel][sel].astype(np.int32), PIXEL_MODEL, mean, s)
        done += int(sel.sum())
        if on_stage is not None:
            on_stage(done)
    if p.rest is not None:
        encode(coder, layout.rest(), p.rest, x[1:], mu[1:], sd[1:],
               on_stage=None if on_stage is None else (lambda n: on_stage(done + n)))


def decode_learned(coder, layout: ExactLayout, net, inputs: ContextInputs,
                   mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None, limit: float = math.inf,
                   known_outputs: list | None = None) -> list[np.ndarray]:
    """Read the learned stage (after its method bit): the planes as uint8, the colour plane first.

    ``limit`` as for :func:`decode`: past it, each subpixel is the network's mean given what was read
    and predicted before it.  ``known_outputs`` (the encoder's, from :func:`encode_learned`) stand in for
    the network on stages whose earlier stages were read whole: their inputs are the encoder's.
    """
    x = np.zeros(inputs.xhat.shape, dtype=np.uint8)
    r = np.zeros(inputs.xhat.shape)
    whole = True  # every stage so far read in full
    for k, stage in enumerate(colour_stages(layout)):
        sel, c = layout.selection(stage), stage.channel
        scale = decode_raw_bits(coder, 4) if limit > 0 else 0
        if whole and known_outputs is not None:
            delta, lam = known_outputs[k]
        else:
            (delta, lam), = _context_outputs(net, layout, inputs, [r], [stage])
        mean, s = _learned_params(layout, stage, inputs, delta, lam, CONTEXT_SCALES[scale])
        values, read = _read(coder, mean, s, limit)
        whole = whole and read == len(mean)
        limit -= read
        x[..., c][sel] = values.astype(np.uint8)
        r[..., c][sel] = (values - inputs.mu[..., c][sel]) / inputs.sigma_pixels
    rest = layout.rest()
    return [x] + (decode(coder, rest, mu[1:], sd[1:], limit) if rest is not None else [])


def _known_mask(layout: ExactLayout, stage: Stage) -> np.ndarray:
    """(H, W, 3) bool: the subpixels a decoder holds when it reaches ``stage``."""
    h, w = layout.first.shape
    m = np.zeros((h, w, 3), dtype=bool)
    if stage.second:
        m[layout.first] = True
        m[~layout.first, : stage.channel] = True
    else:
        m[layout.first, : stage.channel] = True
    return m


# --------------------------------------------------------------------------- coarse-to-fine stage (FLAG_COARSE_TO_FINE)

def coarse_available(layout: ExactLayout, net) -> bool:
    """The coarse-to-fine stage needs a coarse-to-fine network and a colour plane first (RGB, RGBA)."""
    return net is not None and net.config.bin_width > 0 and layout.maps[0].shape[2] == 3


def coarse_stages(layout: ExactLayout) -> list[tuple[bool, Stage]]:
    """(fine, stage) in coding order: the colour plane's six stages coding bins, then the same six coding values."""
    six = colour_stages(layout)
    return [(False, s) for s in six] + [(True, s) for s in six]


def _symbol_models(bin_width: int):
    """constriction models of the coarse stages' bins (0 … 256/w − 1) and of the fine stages' offsets (0 … w − 1)."""
    return (constriction.stream.model.QuantizedGaussian(0, 256 // bin_width - 1),
            constriction.stream.model.QuantizedGaussian(0, bin_width - 1))


def _coarse_outputs(net, layout: ExactLayout, inputs: ContextInputs, residuals: list[np.ndarray], centres: list[np.ndarray],
                    stages: list[tuple[bool, Stage]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(δ, λ) per (fine, stage), one batch row each, as :func:`_context_outputs` (the masks zero what is unknown).

    ``residuals[i]`` are the normalized residuals and ``centres[i]`` the normalized bin centres the decoder
    holds at that stage (anything where it holds none: the masks zero it).
    """
    from diffcodec.models.context_net import coarse_stage_masks

    h, w = layout.maps[0].shape[:2]
    masks = coarse_stage_masks(h, w)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
    n = len(stages)
    order = [6 * int(fine) + 3 * int(s.second) + s.channel for fine, s in stages]
    known = torch.stack([masks[i][0] for i in order])
    bin_known = torch.stack([masks[i][1] for i in order])
    coded = torch.stack([masks[i][2] for i in order])
    residual = torch.stack([chw(r) for r in residuals]) * known
    centre = torch.stack([chw(c) for c in centres]) * bin_known
    xhat, y = chw(inputs.xhat).expand(n, -1, -1, -1), chw(inputs.y).expand(n, -1, -1, -1)
    log_sigma = torch.full((n,), inputs.log_sigma_input, dtype=torch.float32)
    with torch.no_grad():
        delta, lam = net(xhat, y, residual, known, coded, log_sigma, centre, bin_known)
    return [(delta[j].double().numpy().transpose(1, 2, 0), lam[j].double().numpy().transpose(1, 2, 0)) for j in range(n)]


def _coarse_params(layout: ExactLayout, fine: bool, stage: Stage, inputs: ContextInputs, delta: np.ndarray,
                   lam: np.ndarray, scale: float, bins: np.ndarray, bin_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the stage's symbols: bins (coarse) or offsets x − w·bin (fine).

    Bin b holds [w·b − ½, w·b + w − ½) of the pixel axis, which is [b − ½, b + ½) in u = (x + ½)/w − ½: the
    pixel Gaussian's mass per bin is Eq. 13's discretized Gaussian in u (the training loss computes the same).
    """
    mean, sd = _learned_params(layout, stage, inputs, delta, lam, scale)
    if fine:
        return mean - bin_width * bins, sd
    return (mean + 0.5) / bin_width - 0.5, np.clip(sd / bin_width, 1e-2, 1e4)


def _centres(inputs: ContextInputs, bins: np.ndarray, bin_width: int) -> np.ndarray:
    """Normalized bin centres (w·b + (w − 1)/2 − μ)/σ_t: what the network sees of a decoded bin."""
    return (bin_width * bins + (bin_width - 1) / 2.0 - inputs.mu) / inputs.sigma_pixels


def plan_coarse(layout: ExactLayout, net, x: list[np.ndarray], inputs: ContextInputs,
                mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None) -> ExactPlan:
    """The encoder's estimate of the coarse-to-fine stage, as :func:`plan_learned` (the twelve stages in one batch)."""
    bw = net.config.bin_width
    stages = coarse_stages(layout)
    bins = x[0].astype(np.int64) // bw
    r, centre = _normalized(inputs, x[0]), _centres(inputs, bins, bw)
    outputs = _coarse_outputs(net, layout, inputs, [r] * len(stages), [centre] * len(stages), stages)
    per_stage = []
    for (fine, stage), (delta, lam) in zip(stages, outputs):
        sel, c = layout.selection(stage), stage.channel
        b = bins[..., c][sel]
        mean, s = _coarse_params(layout, fine, stage, inputs, delta, lam, 1.0, b, bw)
        symbols, top = (x[0][..., c][sel] - bw * b, bw - 1) if fine else (b, 256 // bw - 1)
        per_stage.append(stage_bits(symbols, mean, s, CONTEXT_SCALES, top=top))
    return _network_plan(COARSE, per_stage, layout, x, mu, sd)


def encode_coarse(coder, layout: ExactLayout, net, p: ExactPlan, x: list[np.ndarray], inputs: ContextInputs,
                  mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None,
                  on_stage: Callable[[int], None] | None = None, outputs: list | None = None) -> None:
    """Write the coarse-to-fine stage of planes ``x`` (uint8, the colour plane first) as planned, method bit included.

    ``on_stage(n)`` is called after each stage with the symbols written so far (bins count as symbols);
    ``outputs`` as for :func:`encode_learned`.
    """
    bw = net.config.bin_width
    bin_model, fine_model = _symbol_models(bw)
    encode_raw_bits(coder, LEARNED, 1)
    bins = x[0].astype(np.int64) // bw
    r, centre = _normalized(inputs, x[0]), _centres(inputs, bins, bw)
    everything = np.ones(r.shape, dtype=bool)
    done = 0
    for (fine, stage), scale in zip(coarse_stages(layout), p.scales):
        exact_known = _known_mask(layout, stage) if fine else np.zeros(r.shape, dtype=bool)
        bin_known = everything if fine else _known_mask(layout, stage)
        (delta, lam), = _coarse_outputs(net, layout, inputs, [np.where(exact_known, r, 0.0)],
                                        [np.where(bin_known, centre, 0.0)], [(fine, stage)])
        if outputs is not None:
            outputs.append((delta, lam))
        sel, c = layout.selection(stage), stage.channel
        b = bins[..., c][sel]
        mean, s = _coarse_params(layout, fine, stage, inputs, delta, lam, CONTEXT_SCALES[scale], b, bw)
        encode_raw_bits(coder, scale, 4)
        if fine:
            coder.encode((x[0][..., c][sel] - bw * b).astype(np.int32), fine_model, mean, s)
        else:
            coder.encode(b.astype(np.int32), bin_model, mean, s)
        done += int(sel.sum())
        if on_stage is not None:
            on_stage(done)
    if p.rest is not None:
        encode(coder, layout.rest(), p.rest, x[1:], mu[1:], sd[1:],
               on_stage=None if on_stage is None else (lambda n: on_stage(done + n)))


def decode_coarse(coder, layout: ExactLayout, net, inputs: ContextInputs,
                  mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None, limit: float = math.inf,
                  known_outputs: list | None = None) -> list[np.ndarray]:
    """Read the coarse-to-fine stage (after its method bit): the planes as uint8, the colour plane first.

    Only the first ``limit`` symbols are read (bins, then offsets, in coding order).  An unread bin is
    the bin of its predicted mean; an unread value is the fine stage's mean, clipped to its bin.
    ``known_outputs`` as for :func:`decode_learned`.
    """
    bw = net.config.bin_width
    bin_model, fine_model = _symbol_models(bw)
    shape = inputs.xhat.shape
    bins = np.zeros(shape, dtype=np.int64)
    x = np.zeros(shape, dtype=np.uint8)
    r, centre = np.zeros(shape), np.zeros(shape)
    whole = True  # every stage so far read in full
    for k, (fine, stage) in enumerate(coarse_stages(layout)):
        sel, c = layout.selection(stage), stage.channel
        scale = decode_raw_bits(coder, 4) if limit > 0 else 0
        if whole and known_outputs is not None:
            delta, lam = known_outputs[k]
        else:
            (delta, lam), = _coarse_outputs(net, layout, inputs, [r], [centre], [(fine, stage)])
        b = bins[..., c][sel]
        mean, s = _coarse_params(layout, fine, stage, inputs, delta, lam, CONTEXT_SCALES[scale], b, bw)
        if fine:
            offsets, read = _read(coder, mean, s, limit, fine_model, bw - 1)
            values = bw * b + offsets.astype(np.int64)
            x[..., c][sel] = values.astype(np.uint8)
            r[..., c][sel] = (values - inputs.mu[..., c][sel]) / inputs.sigma_pixels
        else:
            decoded, read = _read(coder, mean, s, limit, bin_model, 256 // bw - 1)
            bins[..., c][sel] = decoded.astype(np.int64)
            centre[..., c][sel] = _centres(inputs, bins, bw)[..., c][sel]
        limit -= read
        whole = whole and read == len(mean)
    rest = layout.rest()
    return [x] + (decode(coder, rest, mu[1:], sd[1:], limit) if rest is not None else [])


def coarse_coding_order(layout: ExactLayout, x: list[np.ndarray], bin_width: int) -> np.ndarray:
    """The coarse-to-fine stage's symbols as the stream codes them: the colour plane's bins stage by stage, then
    its offsets inside the bins, then the planes after it (alpha) as :meth:`ExactLayout.coding_order`.

    A partial truncation point's count is a prefix of this sequence (docs/format.md).
    """
    colour = x[0].astype(np.int64)
    bins = colour // bin_width
    parts = [bins[..., s.channel][layout.selection(s)] for s in colour_stages(layout)]
    parts += [(colour - bin_width * bins)[..., s.channel][layout.selection(s)] for s in colour_stages(layout)]
    rest = layout.rest()
    if rest is not None:
        parts.append(rest.coding_order(x[1:]).astype(np.int64))
    return np.concatenate(parts)
