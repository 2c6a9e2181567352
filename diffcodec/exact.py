"""The exact stage: x_0 losslessly from the last lossy state, as an ordered list of typed stages.

From the last lossy state the model gives every subpixel a Gaussian N(μ, σ²) in pixel units (Eq. 13's
p_θ(x_0 | x_1) at x_1; x̂_0 and the variance of its noise term above x_1).  Its residuals r = x_0 − μ are
not independent: the denoiser averages noise over neighbouring pixels and across colour channels, so
neighbours share its error (bench/exact_stage.py measures the correlations; docs/codec.md).  So each
plane is coded in *checkerboard stages* (:class:`Stage`): first-pass pixels ((y + x) even) channel by
channel, then second-pass pixels, each stage's subpixels with a discretized Gaussian whose parameters
come from what the decoder already holds.  What differs between the exact stage's kinds
(:class:`~diffcodec.format.ExactKind`) is only where a stage's symbol model comes from:

* :class:`LinearStage` (format version 3): mean μ + Σ_j w_j f_j over features f_j of residuals already
  decoded (the same pixel's earlier channels; in the second pass the mean residual of the decoded
  4-neighbours and of the ring of eight around them), standard deviation c·σ.  The weights are side
  information: :class:`LinearWeights` (1 bit, then explicit weights or :data:`DEFAULT_WEIGHTS`).
* :class:`LearnedStage` (version 4, method 1): the model's context network predicts each colour
  subpixel's mean and scale from x̂_0, x_t and the residuals decoded so far.
* :class:`CoarseStage` (version 4, method 1 with ``FLAG_COARSE_TO_FINE``): the coarse-to-fine network;
  six stages code each colour subpixel's bin ⌊x_0 / w⌋, six more the offsets inside the bins.
* :class:`IndependentStage` (versions 1–2): one stage, every subpixel on its own, one scale.

Every stage codes a 4-bit scale index, then its symbols.  An RGBA image's alpha plane follows a network
kind's colour stages as a linear group of its own.  :func:`stages` lists a kind's stages in stream order.

One loop runs them (:func:`run`), on one of three *coders*: :class:`~diffcodec.coders.Writer` writes the
encoder's symbols with its plan's choices, :class:`~diffcodec.coders.Reader` reads them (up to a budget: a
partial truncation point, past which each symbol is its predicted mean), and :class:`Estimator` plans: it
picks each stage's scale and the linear weights and estimates the bits, without a range coder.  The state
they update (:class:`ExactState`) is the decoder's, so an encoder's stage sees exactly what a decoder's will.
In a file, diffcodec/stream.py's ``ExactStep`` reads the method bit and runs this loop.

Stream (after the method bit, docs/format.md "The exact stage"): the stages in order, each a 4-bit index
into :data:`EXACT_SCALES` (linear, independent) or :data:`CONTEXT_SCALES` (network stages) and its symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

import constriction

from . import exactmath
from .coders import Reader, Writer
from .entropy import PIXEL_MODEL, pixel_gaussian_params
from .format import (CONTEXT_SCALES, DEFAULT_WEIGHTS, EXACT_SCALES, LEARNED, LINEAR, LOG_SCALE_LIMIT, MEAN_LIMIT, NEAR,
                     RING, SD_MAX, SD_MIN, WEIGHT_BITS, WEIGHT_OFFSET, WEIGHT_STEP, ExactKind)
from .tiling import TileLayout

COARSE = ExactKind.COARSE  # ExactPlan.method of the coarse-to-fine stage: method bit LEARNED in a file with FLAG_COARSE_TO_FINE
INDEPENDENT = ExactKind.INDEPENDENT

__all__ = [  # the format's constants the exact stage has always exported (defined in diffcodec/format.py)
    "CONTEXT_SCALES", "DEFAULT_WEIGHTS", "EXACT_SCALES", "LEARNED", "LINEAR", "COARSE", "NEAR", "RING", "WEIGHT_BITS",
    "WEIGHT_OFFSET", "WEIGHT_STEP",
]


@dataclass(frozen=True)
class Stage:
    """A checkerboard stage of a plane: one pass (first: (y + x) even) of one channel."""

    plane: int
    second: bool  # the checkerboard's second pass: its 4-neighbours are decoded
    channel: int

    @property
    def num_weights(self) -> int:
        return self.channel + (2 * (1 + self.channel) if self.second else 0)


@dataclass(frozen=True)
class ExactPlan:
    """What the stream says about the exact stage: its kind, explicit weights (linear kind; None for the
    defaults) and a scale per stage; and the encoder's estimate of its bits."""

    weights: tuple[tuple[int, ...], ...] | None
    scales: tuple[int, ...]
    bits: float  # the encoder's estimate of the stage's cost, side information included
    method: int = LINEAR  # an ExactKind
    rest: "ExactPlan | None" = None  # network kinds: the linear stage of the planes after the colour plane (alpha)
    stage_bits: tuple[float, ...] = ()  # the estimate per stage (its symbols and scale index), this plan's stages only

    def all_stage_bits(self) -> tuple[float, ...]:
        """Per stage in coding order, the planes after the colour plane included."""
        return self.stage_bits + (self.rest.all_stage_bits() if self.rest is not None else ())

    def all_scales(self) -> tuple[int, ...]:
        """The scale index of every stage in coding order."""
        return self.scales + (self.rest.all_scales() if self.rest is not None else ())

    def all_weights(self) -> tuple[tuple[tuple[int, ...], ...] | None, ...]:
        """The weights of every linear group in coding order (None: the defaults)."""
        own = (self.weights,) if self.method == LINEAR else ()
        return own + (self.rest.all_weights() if self.rest is not None else ())

    @property
    def kind(self) -> ExactKind:
        return ExactKind(self.method)


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
    """The planes of an image as the exact stage sees them, and their checkerboard stages in coding order."""

    def __init__(self, layout: TileLayout, first_plane: int = 0):
        # per plane: (H, W, c) flat indices into the tile layout; ``first_plane`` drops the planes before it
        self.maps = layout.plane_index_maps()[first_plane:]
        self._tiles, self.first_plane = layout, first_plane
        h, w = layout.height, layout.width
        yy, xx = np.mgrid[:h, :w]
        self.first = (yy + xx) % 2 == 0
        # How many of each pixel's first-pass 4-neighbours and ring neighbours lie inside the image.
        self.neighbours = _window_sum(self.first.astype(np.float64), NEAR)
        self.ring = _window_sum(self.first.astype(np.float64), RING)
        self.stages = [Stage(k, second, ch) for k, m in enumerate(self.maps) for second in (False, True)
                       for ch in range(m.shape[2]) if self.selection(Stage(k, second, ch)).any()]

    @property
    def tiles(self) -> TileLayout:
        return self._tiles

    def rest(self) -> "ExactLayout | None":
        """The planes after the first (RGBA's alpha) as a layout of their own, or None."""
        return ExactLayout(self._tiles, self.first_plane + 1) if len(self.maps) > 1 else None

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


def _window_sum(a: np.ndarray, offsets: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Σ over ``offsets`` of a[y + dy, x + dx], zero outside the image, summed in the order given."""
    h, w = a.shape
    padded = np.pad(a, 2)
    total = np.zeros_like(a)
    for dy, dx in offsets:
        total = total + padded[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return total


def stage_bits(x: np.ndarray, mean: np.ndarray, sd: np.ndarray, scales: np.ndarray = EXACT_SCALES, top: int = 255
               ) -> np.ndarray:
    """Bits of integer samples ``x`` (0..top) under Eq. 13's discretized Gaussian for every scale in ``scales``.

    The edge bins take the tails (as :data:`PIXEL_MODEL` does); the upper tail is computed from the
    survival function so that far-off samples keep their precision.  Returns shape (len(scales),).
    """
    x_t, m_t = torch.from_numpy(x.astype(np.float64)), torch.from_numpy(mean)
    s = (torch.from_numpy(sd)[None, :] * torch.from_numpy(scales)[:, None]).clamp(SD_MIN, SD_MAX)
    lo = torch.where(x_t <= 0, torch.tensor(-math.inf, dtype=torch.float64), x_t - 0.5)
    hi = torch.where(x_t >= top, torch.tensor(math.inf, dtype=torch.float64), x_t + 0.5)
    z_lo, z_hi = (lo - m_t) / s, (hi - m_t) / s
    upper = z_lo > 0
    p = torch.where(upper, torch.special.ndtr(-z_lo) - torch.special.ndtr(-z_hi),
                    torch.special.ndtr(z_hi) - torch.special.ndtr(z_lo))
    return (-torch.log2(p.clamp_min(1e-15))).sum(dim=1).numpy()


# --------------------------------------------------------------------------- what both sides hold


@dataclass
class ExactContext:
    """What encoder and decoder hold before the exact stage, from the last lossy state.

    ``mu`` and ``sd``: per plane (H, W, c), the base Gaussian in pixel units (linear stages); ``inputs`` and
    ``net``: the context network's inputs and the network the network stages run; ``base``: versions 1–2,
    the flat mean and log-variance of every coded subpixel with the ``numerics`` that turn them into pixels.
    """

    layout: ExactLayout
    mu: list[np.ndarray] | None = None
    sd: list[np.ndarray] | None = None
    inputs: ContextInputs | None = None
    net: Any = None
    base: tuple[np.ndarray, np.ndarray] | None = None
    numerics: Any = None


class ExactState:
    """What a decoder holds inside the exact stage: the planes decoded so far, and what the stages derive from them.

    The encoder's coders (:class:`Writer`, :class:`Estimator`) store the true symbols in it as they go, the
    decoder's (:class:`Reader`) the decoded or predicted ones, so each stage computes its symbol model from the
    same numbers on both sides.
    """

    def __init__(self, context: ExactContext, truth: list[np.ndarray] | None = None, outputs: list | None = None,
                 record: list | None = None):
        self.context = context
        self.truth = truth  # the encoder's planes (uint8 (H, W, c)); None when decoding
        maps = context.layout.maps
        self.x = [np.zeros(m.shape, dtype=np.uint8) for m in maps]  # the planes as decoded (or predicted) so far
        self.residual = [np.zeros(m.shape) for m in maps]  # linear stages: x − μ of the decoded subpixels
        colour = maps[0].shape[:2] + (3,)
        self.r = np.zeros(colour)  # network stages: (x − μ)/σ_t of the decoded colour subpixels
        self.bins = np.zeros(colour, dtype=np.int64)  # coarse-to-fine: the decoded bins
        self.centre = np.zeros(colour)  # and their normalized centres
        self.bin_read = np.zeros(colour, dtype=bool)  # which bins came from the stream (or the encoder), not predicted
        self.read: int | None = None  # the Reader's: how many of the stage being stored were read (None: all)
        self.weights: dict[int, tuple[tuple[int, ...], ...]] = {}  # per linear group (its first plane): weights in force
        self.features: dict[tuple[int, int], np.ndarray] = {}  # the estimator's features, from the whole image
        self.given = outputs  # network outputs computed beforehand (the plan's batch, the encoder's for a replay)
        self.record = record  # receives every network output computed here (for a replay's ``outputs``)
        self.whole = True  # every stage so far coded in full (``given`` outputs hold only while it is)
        self.done = 0  # symbols coded so far
        self.latest: tuple[int, Any] | None = None  # the last network stage's (index, outputs)

    def network_outputs(self, index: int, compute: Callable[[], tuple[np.ndarray, np.ndarray]]):
        """(δ, λ) of the ``index``-th network stage: given beforehand while every stage was coded whole, else computed."""
        out = self.given[index] if (self.given is not None and self.whole) else compute()
        if self.record is not None:
            self.record.append(out)
        self.latest = (index, out)  # for a second look at the same stage's outputs without a second pass
        return out

    def flat(self) -> np.ndarray:
        """The planes as flat uint8 tiles (replicated channels and padding left 0)."""
        tiles = self.context.layout.tiles
        out = np.zeros(int(np.prod(tiles.shape)), dtype=np.uint8)
        for m, v in zip(self.context.layout.maps, self.x):
            out[m] = v
        return out


# --------------------------------------------------------------------------- the stages


class SymbolStage:
    """A stage that codes a 4-bit scale index, then its symbols with a discretized Gaussian of ``model``.

    A kind says where the Gaussian comes from (:meth:`params`, from what ``state`` holds), which symbols
    the encoder sends (:meth:`symbols`) and what a decoded symbol changes in the state (:meth:`store`).
    """

    scales: np.ndarray = EXACT_SCALES  # what the scale index selects
    top: int = 255  # symbols are 0..top
    model = PIXEL_MODEL
    size: int  # symbols

    def symbols(self, planes: list[np.ndarray]) -> np.ndarray:
        """The stage's symbols in coding order, from the planes of an image."""
        raise NotImplementedError

    def params(self, state: ExactState, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each symbol, with the scale correction ``scale``."""
        raise NotImplementedError

    def estimate_params(self, state: ExactState) -> tuple[np.ndarray, np.ndarray]:
        """What the plan scores each scale correction on: the parameters at scale 1."""
        return self.params(state, 1.0)

    def store(self, state: ExactState, values: np.ndarray) -> None:
        """Take the stage's symbols (decoded, predicted or the encoder's) into the state."""
        raise NotImplementedError

    def predicted(self, mean: np.ndarray) -> np.ndarray:
        """What a decoder shows for a symbol the stream has not reached: its mean, rounded into the alphabet."""
        return np.clip(np.rint(mean), 0.0, float(self.top))

    def unread(self, state: ExactState, mean: np.ndarray) -> np.ndarray:
        """The symbols a decoder shows for this stage when the stream ends before all of it is read."""
        return self.predicted(mean)

    def code(self, coder, state: ExactState) -> None:
        coder.symbols(self, state)


class LinearWeights:
    """The side information of a group of linear stages: 1 bit *explicit*, then 6 bits per weight if set."""

    def __init__(self, layout: ExactLayout):
        self.layout = layout
        self.group = layout.first_plane

    def fit(self, state: ExactState) -> tuple[tuple[tuple[int, ...], ...] | None, int, tuple[tuple[int, ...], ...]]:
        """The encoder's choice: (explicit weights or None, their bits, the weights the stages use).

        Explicit weights are least squares per stage, rounded to the format's grid; they are sent when the
        Gaussian estimate of what they save, Σ n/2·log₂(SSE_default / SSE_explicit), beats their 6 bits each.
        The features, computed here from the whole image, are kept for the stages (a decoder computes the
        same numbers from the residuals it holds: the features read only those).
        """
        layout, g = self.layout, self.group
        residual = [xi.astype(np.float64) - m for xi, m in zip(state.truth[g:], state.context.mu[g:])]
        default = layout.default_weights()
        fitted, gain, cost = [], 0.0, 0
        for k, (stage, q_default) in enumerate(zip(layout.stages, default)):
            sel = layout.selection(stage)
            f = layout.features(stage, residual[stage.plane])
            y = residual[stage.plane][..., stage.channel][sel]
            state.features[(g, k)] = f
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
        return (tuple(fitted), cost, tuple(fitted)) if explicit else (None, cost, default)

    def code(self, coder, state: ExactState) -> None:
        coder.linear_weights(self, state)


class LinearStage(SymbolStage):
    """Format version 3: mean μ + Σ w_j f_j from decoded residuals, standard deviation c·σ (c from EXACT_SCALES)."""

    def __init__(self, layout: ExactLayout, stage: Stage, index: int):
        self.layout, self.stage, self.index = layout, stage, index  # index: among the group's stages
        self.group = layout.first_plane
        self.plane = layout.first_plane + stage.plane  # in the whole image's planes
        self.sel = layout.selection(stage)
        self.size = int(self.sel.sum())

    def _base(self, state: ExactState) -> tuple[np.ndarray, np.ndarray]:
        c = self.stage.channel
        return state.context.mu[self.plane][..., c][self.sel], state.context.sd[self.plane][..., c][self.sel]

    def _mean_sd(self, state: ExactState, scale: float):
        f = state.features.get((self.group, self.index))
        if f is None:
            f = self.layout.features(self.stage, state.residual[self.plane])
        mu, sd = self._base(state)
        return _stage_params(mu, sd, f, state.weights[self.group][self.index], scale), sd

    def params(self, state, scale):
        return self._mean_sd(state, scale)[0]

    def estimate_params(self, state):
        (mean, _), sd = self._mean_sd(state, EXACT_SCALES[0])
        return mean, sd  # the base σ: the plan applies each scale and the clamp itself (stage_bits)

    def symbols(self, planes):
        return planes[self.plane][..., self.stage.channel][self.sel]

    def store(self, state, values):
        c = self.stage.channel
        state.x[self.plane][..., c][self.sel] = values.astype(np.uint8)
        state.residual[self.plane][..., c][self.sel] = values.astype(np.float64) - self._base(state)[0]


class LearnedStage(SymbolStage):
    """Format version 4, method 1: the context network's mean μ + σ_t δ and deviation σ_t e^λ, times a scale correction."""

    scales = CONTEXT_SCALES

    def __init__(self, layout: ExactLayout, stage: Stage, index: int):
        self.layout, self.stage, self.index = layout, stage, index  # index: among the network stages
        self.sel = layout.selection(stage)
        self.size = int(self.sel.sum())

    def outputs(self, state: ExactState):
        ctx = state.context
        return state.network_outputs(self.index, lambda: _context_outputs(ctx.net, self.layout, ctx.inputs, [state.r], [self.stage])[0])

    def params(self, state, scale):
        delta, lam = self.outputs(state)
        return _learned_params(self.layout, self.stage, state.context.inputs, delta, lam, scale)

    def symbols(self, planes):
        return planes[0][..., self.stage.channel][self.sel]

    def store(self, state, values):
        c, inputs = self.stage.channel, state.context.inputs
        state.x[0][..., c][self.sel] = values.astype(np.uint8)
        state.r[..., c][self.sel] = (values - inputs.mu[..., c][self.sel]) / inputs.sigma_pixels


class CoarseStage(SymbolStage):
    """``FLAG_COARSE_TO_FINE``: a colour stage's bins b = ⌊x/w⌋ (coarse) or its offsets x − w·b inside them (fine)."""

    scales = CONTEXT_SCALES

    def __init__(self, layout: ExactLayout, fine: bool, stage: Stage, index: int, bin_width: int):
        self.layout, self.fine, self.stage, self.index, self.bin_width = layout, fine, stage, index, bin_width
        self.sel = layout.selection(stage)
        self.size = int(self.sel.sum())
        self.top = bin_width - 1 if fine else 256 // bin_width - 1
        self.model = constriction.stream.model.QuantizedGaussian(0, self.top)

    def outputs(self, state: ExactState):
        ctx = state.context
        return state.network_outputs(self.index, lambda: _coarse_outputs(
            ctx.net, self.layout, ctx.inputs, [state.r], [state.centre], [(self.fine, self.stage)])[0])

    def params(self, state, scale):
        delta, lam = self.outputs(state)
        bins = state.bins[..., self.stage.channel][self.sel]
        return _coarse_params(self.layout, self.fine, self.stage, state.context.inputs, delta, lam, scale, bins, self.bin_width)

    def unread(self, state, mean):
        """An offset inside a bin read from the stream shows as its expected value given the bin (the least-squares
        guess; :func:`bin_expectation`), not as the network's mean clipped into the bin: a mean beyond the bin's
        edge says the value is near that edge, not on it.  An offset whose bin was predicted too keeps
        :meth:`predicted`."""
        guess = self.predicted(mean)
        known = state.bin_read[..., self.stage.channel][self.sel]
        if not self.fine or not known.any():
            return guess
        index, (delta, lam) = state.latest  # the outputs the Reader's params() just computed: no second pass
        assert index == self.index
        bins = state.bins[..., self.stage.channel][self.sel]
        mean, sd = _coarse_params(self.layout, True, self.stage, state.context.inputs, delta, lam, 1.0, bins, self.bin_width)
        return np.where(known, np.rint(bin_expectation(mean, sd, self.bin_width)), guess)

    def symbols(self, planes):
        x = planes[0][..., self.stage.channel][self.sel]
        bins = x.astype(np.int64) // self.bin_width
        return x - self.bin_width * bins if self.fine else bins

    def store(self, state, values):
        c, sel, bw, inputs = self.stage.channel, self.sel, self.bin_width, state.context.inputs
        if self.fine:
            x = bw * state.bins[..., c][sel] + values.astype(np.int64)
            state.x[0][..., c][sel] = x.astype(np.uint8)
            state.r[..., c][sel] = (x - inputs.mu[..., c][sel]) / inputs.sigma_pixels
        else:
            state.bins[..., c][sel] = values.astype(np.int64)
            state.centre[..., c][sel] = _centres(inputs, state.bins, bw)[..., c][sel]
            state.bin_read[..., c][sel] = np.arange(self.size) < (self.size if state.read is None else state.read)


class IndependentStage(SymbolStage):
    """Format versions 1–2: every coded subpixel on its own with the model's Gaussian, one scale (EXACT_SCALES)."""

    def __init__(self, layout: ExactLayout):
        self.layout = layout
        self.mask = np.flatnonzero(layout.tiles.lossless_mask().reshape(-1))
        self.size = len(self.mask)

    def params(self, state, scale):
        mean, log_var = state.context.base
        num = state.context.numerics
        return pixel_gaussian_params(mean, log_var + 2.0 * num.log(scale), exp=num.exp)

    def estimate_params(self, state):
        raise NotImplementedError("versions 1–2 are read only")

    def symbols(self, planes):
        flat = np.zeros(int(np.prod(self.layout.tiles.shape)), dtype=np.uint8)
        for m, v in zip(self.layout.maps, planes):
            flat[m] = v
        return flat[self.mask]

    def store(self, state, values):
        flat = state.flat()
        flat[self.mask] = values.astype(np.uint8)
        state.x = self.layout.planes(flat)


def stages(kind: ExactKind, layout: ExactLayout, bin_width: int = 0) -> list:
    """The exact stage of ``kind`` as its ordered list of stages (after the method bit)."""
    if kind == INDEPENDENT:
        return [IndependentStage(layout)]
    if kind == LINEAR:
        return _linear_group(layout)
    if kind == COARSE:
        colour = [CoarseStage(layout, fine, s, k, bin_width) for k, (fine, s) in enumerate(coarse_stages(layout))]
    else:
        colour = [LearnedStage(layout, s, k) for k, s in enumerate(colour_stages(layout))]
    rest = layout.rest()
    return colour + (_linear_group(rest) if rest is not None else [])


def _linear_group(layout: ExactLayout) -> list:
    return [LinearWeights(layout)] + [LinearStage(layout, s, k) for k, s in enumerate(layout.stages)]


def symbol_stages(stage_list: list) -> list[SymbolStage]:
    return [s for s in stage_list if isinstance(s, SymbolStage)]


def num_symbols(stage_list: list) -> int:
    """How many symbols the stages code (a partial point's count is at most this)."""
    return sum(s.size for s in symbol_stages(stage_list))


def coding_order(stage_list: list, planes: list[np.ndarray]) -> np.ndarray:
    """The stages' symbols as the stream codes them, from the planes of an image (int64).

    A partial truncation point's count is a prefix of this sequence (docs/format.md): stage after stage,
    row-major within a stage; in a coarse-to-fine stage the colour plane's bins, then its offsets inside them.
    """
    return np.concatenate([s.symbols(planes).astype(np.int64) for s in symbol_stages(stage_list)])


def run(stage_list: list, coder, state: ExactState) -> ExactState:
    """The one loop of the exact stage: each stage codes itself on ``coder`` (write, read or estimate)."""
    for stage in stage_list:
        stage.code(coder, state)
    return state


# --------------------------------------------------------------------------- the planner: a third coder


class Estimator:
    """Plans the exact stage on the encoder's image: each stage's best scale and the linear weights, and the bits.

    No range coder: a stage costs its 4-bit scale index plus −log₂ of its symbols under the discretized
    Gaussian at the best scale (:func:`stage_bits`); side information its raw bits.
    """

    def __init__(self):
        self.groups: list[dict] = []  # per run of stages of one kind: its choices and costs, in stream order

    def _group(self, network: bool) -> dict:
        if not self.groups or self.groups[-1]["network"] != network:
            self.groups.append({"network": network, "weights": None, "weight_bits": 0, "scales": [], "costs": []})
        return self.groups[-1]

    def linear_weights(self, group: LinearWeights, state: ExactState) -> None:
        explicit, cost, weights = group.fit(state)
        self.groups.append({"network": False, "weights": explicit, "weight_bits": cost if explicit is not None else 0,
                            "scales": [], "costs": []})
        state.weights[group.group] = weights

    def symbols(self, stage: SymbolStage, state: ExactState) -> None:
        group = self._group(not isinstance(stage, LinearStage))
        mean, sd = stage.estimate_params(state)
        values = stage.symbols(state.truth)
        per_scale = stage_bits(values, mean, sd, stage.scales, top=stage.top)
        group["scales"].append(int(np.argmin(per_scale)))
        group["costs"].append(4 + float(per_scale.min()))
        stage.store(state, values)
        state.done += stage.size

    def plan(self, kind: ExactKind) -> ExactPlan:
        """The plan of what was estimated; ``bits`` counts the side information, and for a network kind its method bit."""
        linear = [_linear_plan(g) for g in self.groups if not g["network"]]
        if kind == LINEAR:
            return linear[0]
        colour = self.groups[0]
        bits = 1.0 + sum(colour["costs"])
        rest = linear[0] if linear else None
        if rest is not None:
            bits += rest.bits
        return ExactPlan(weights=None, scales=tuple(colour["scales"]), bits=bits, method=kind, rest=rest,
                         stage_bits=tuple(colour["costs"]))


def _linear_plan(group: dict) -> ExactPlan:
    bits = 1.0 + group["weight_bits"]
    for c in group["costs"]:
        bits += c
    return ExactPlan(weights=group["weights"], scales=tuple(group["scales"]), bits=bits, stage_bits=tuple(group["costs"]))


# --------------------------------------------------------------------------- plan, write, read


def plan_stage(kind: ExactKind, context: ExactContext, x: list[np.ndarray]) -> ExactPlan:
    """The encoder's plan of the exact stage of ``kind`` for planes ``x`` (uint8, the colour plane first).

    The same stages as the stream, on the :class:`Estimator`.  A network kind's stages take their network
    outputs from one batch on the whole image (the masks hide what a decoder would not hold): an estimate,
    the stream recomputes each stage on its own.
    """
    stage_list = stages(kind, context.layout, _bin_width(context.net) if kind == COARSE else 0)
    estimator = Estimator()
    run(stage_list, estimator, ExactState(context, truth=x, outputs=_batch_outputs(kind, context, x)))
    return estimator.plan(kind)


def write(coder, plan: ExactPlan, context: ExactContext, x: list[np.ndarray],
          on_stage: Callable[[int], None] | None = None, outputs: list | None = None) -> ExactState:
    """Write the exact stage of planes ``x`` (uint8, the colour plane first) as planned, after its method bit.

    ``on_stage`` as for :class:`Writer`; ``outputs``, if given, receives each network stage's outputs (for
    :func:`read`'s ``outputs``).
    """
    stage_list = stages(plan.kind, context.layout, _bin_width(context.net) if plan.kind == COARSE else 0)
    return run(stage_list, Writer(coder, plan, on_stage), ExactState(context, truth=x, record=outputs))


def read(coder, kind: ExactKind, context: ExactContext, limit: float = math.inf, outputs: list | None = None) -> ExactState:
    """Read the exact stage of ``kind`` (after its method bit): the state holds the planes as uint8.

    Only the first ``limit`` symbols are read (a partial truncation point); each other one is its stage's
    predicted mean given what was read and predicted before it.  ``outputs`` (the encoder's, from
    :func:`write`) stand in for the network on stages whose earlier stages were read whole: their inputs are
    the encoder's.
    """
    stage_list = stages(kind, context.layout, _bin_width(context.net) if kind == COARSE else 0)
    return run(stage_list, Reader(coder, limit), ExactState(context, outputs=outputs))


def _bin_width(net) -> int:
    return net.config.bin_width


def _batch_outputs(kind: ExactKind, context: ExactContext, x: list[np.ndarray]) -> list | None:
    """The network stages' outputs on the whole image, all stages in one batch (the plan's estimate)."""
    layout, inputs, net = context.layout, context.inputs, context.net
    if kind == LEARNED:
        six = colour_stages(layout)
        return _context_outputs(net, layout, inputs, [_normalized(inputs, x[0])] * len(six), six)
    if kind == COARSE:
        bw = _bin_width(net)
        twelve = coarse_stages(layout)
        bins = x[0].astype(np.int64) // bw
        return _coarse_outputs(net, layout, inputs, [_normalized(inputs, x[0])] * len(twelve),
                               [_centres(inputs, bins, bw)] * len(twelve), twelve)
    return None


def plan(layout: ExactLayout, x: list[np.ndarray], mu: list[np.ndarray], sd: list[np.ndarray]) -> ExactPlan:
    """The linear stage's plan for planes ``x`` (pixel values) given base ``mu`` and ``sd`` (no method bit)."""
    return plan_stage(LINEAR, ExactContext(layout, mu, sd), x)


def plan_learned(layout: ExactLayout, net, x: list[np.ndarray], inputs: ContextInputs,
                 mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None) -> ExactPlan:
    """The learned stage's plan: a scale per colour stage, then the other planes' linear plan, method bit included.

    ``x`` are the planes' pixel values (the colour plane (H, W, 3) first); ``mu`` and ``sd`` the base
    Gaussians of all planes (only those after the colour plane are used, for the linear rest).
    """
    return plan_stage(LEARNED, ExactContext(layout, mu, sd, inputs, net), x)


def plan_coarse(layout: ExactLayout, net, x: list[np.ndarray], inputs: ContextInputs,
                mu: list[np.ndarray] | None = None, sd: list[np.ndarray] | None = None) -> ExactPlan:
    """The coarse-to-fine stage's plan, as :func:`plan_learned` (the twelve stages in one batch)."""
    return plan_stage(COARSE, ExactContext(layout, mu, sd, inputs, net), x)


# --------------------------------------------------------------------------- the linear stage's symbol model


def _weights(q: tuple[int, ...]) -> np.ndarray:
    return (np.asarray(q, dtype=np.float64) - WEIGHT_OFFSET) * WEIGHT_STEP


def _stage_params(mu: np.ndarray, sd: np.ndarray, features: np.ndarray, q: tuple[int, ...], scale: float):
    """Mean μ + w_1 f_1 + w_2 f_2 + … and deviation clip(σ · scale) of a linear stage's subpixels."""
    # Left to right with elementwise float64 ufuncs, not a BLAS product: the decoder's tables depend on it,
    # and BLAS kernels may sum in another order on another CPU.
    mean = mu.copy()
    for w, f in zip(_weights(q), features.T):
        mean = mean + w * f
    # constriction panics on NaN or a std of 0: clamp (the same on both sides).
    mean = np.nan_to_num(np.clip(mean, -MEAN_LIMIT, MEAN_LIMIT), nan=127.5)
    return mean, np.clip(sd * scale, SD_MIN, SD_MAX)


def _known(layout: ExactLayout, stage: Stage, residual: np.ndarray) -> np.ndarray:
    """The residuals a decoder holds when it reaches ``stage`` (zeros elsewhere)."""
    known = np.zeros_like(residual)
    known[layout.first] = residual[layout.first] if stage.second else 0.0
    if stage.second:
        known[~layout.first, : stage.channel] = residual[~layout.first, : stage.channel]
    else:
        known[layout.first, : stage.channel] = residual[layout.first, : stage.channel]
    return known


# --------------------------------------------------------------------------- the learned stage's symbol model


def learned_available(layout: ExactLayout, net) -> bool:
    """The learned stage needs a context network and a colour plane first (RGB, RGBA; not grey)."""
    return net is not None and layout.maps[0].shape[2] == 3


def colour_stages(layout: ExactLayout) -> list[Stage]:
    return [s for s in layout.stages if s.plane == 0]


def _context_outputs(net, layout: ExactLayout, inputs: ContextInputs, known_residuals: list[np.ndarray],
                     which: list[Stage]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(δ, λ) as float64 (H, W, 3) for each stage of ``which``, one batch row per stage.

    ``known_residuals[i]`` holds the normalized residuals (x_0 − μ)/σ_t the decoder has at that stage
    (anything elsewhere: the masks zero it).  Encoder and decoder must call this with the same batch rows
    for the numbers the coder's tables depend on: one stage per call.
    """
    from diffcodec.models.context_net import stage_masks

    h, w = layout.maps[0].shape[:2]
    masks = stage_masks(h, w)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
    n = len(which)
    xhat, y = chw(inputs.xhat).expand(n, -1, -1, -1), chw(inputs.y).expand(n, -1, -1, -1)
    order = [3 * int(s.second) + s.channel for s in which]  # stage_masks lists all six; a 1×1 image has three
    known = torch.stack([masks[i][0] for i in order])
    coded = torch.stack([masks[i][1] for i in order])
    residual = torch.stack([chw(r) for r in known_residuals]) * known
    log_sigma = torch.full((n,), inputs.log_sigma_input, dtype=torch.float32)
    with torch.no_grad():
        delta, lam = net(xhat, y, residual, known, coded, log_sigma)
    delta, lam = delta.cpu(), lam.cpu()  # the coder's tables are built on the CPU, wherever the network ran
    return [(delta[j].double().numpy().transpose(1, 2, 0), lam[j].double().numpy().transpose(1, 2, 0)) for j in range(n)]


def _learned_params(layout: ExactLayout, stage: Stage, inputs: ContextInputs, delta: np.ndarray, lam: np.ndarray,
                    scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean μ + σ_t δ and deviation σ_t e^λ · scale of the stage's subpixels (pixel units), clamped."""
    sel, c = layout.selection(stage), stage.channel
    s = inputs.sigma_pixels
    mean = inputs.mu[..., c][sel] + s * delta[..., c][sel]
    sd = s * inputs.exp(np.clip(lam[..., c][sel], -LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)) * scale
    # constriction panics on NaN or a std of 0: clamp (the same on both sides).
    return (np.nan_to_num(np.clip(mean, -MEAN_LIMIT, MEAN_LIMIT), nan=127.5),
            np.nan_to_num(np.clip(sd, SD_MIN, SD_MAX), nan=SD_MAX))


def _normalized(inputs: ContextInputs, x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float64) - inputs.mu) / inputs.sigma_pixels


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


# --------------------------------------------------------------------------- the coarse-to-fine stage's symbol model


def coarse_available(layout: ExactLayout, net) -> bool:
    """The coarse-to-fine stage needs a coarse-to-fine network and a colour plane first (RGB, RGBA)."""
    return net is not None and net.config.bin_width > 0 and layout.maps[0].shape[2] == 3


def coarse_stages(layout: ExactLayout) -> list[tuple[bool, Stage]]:
    """(fine, stage) in coding order: the colour plane's six stages coding bins, then the same six coding values."""
    six = colour_stages(layout)
    return [(False, s) for s in six] + [(True, s) for s in six]


def _coarse_outputs(net, layout: ExactLayout, inputs: ContextInputs, residuals: list[np.ndarray], centres: list[np.ndarray],
                    which: list[tuple[bool, Stage]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(δ, λ) per (fine, stage) of ``which``, one batch row each, as :func:`_context_outputs` (the masks zero what is unknown).

    ``residuals[i]`` are the normalized residuals and ``centres[i]`` the normalized bin centres the decoder
    holds at that stage (anything where it holds none: the masks zero it).
    """
    from diffcodec.models.context_net import coarse_stage_masks

    h, w = layout.maps[0].shape[:2]
    masks = coarse_stage_masks(h, w)
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32))  # noqa: E731
    n = len(which)
    order = [6 * int(fine) + 3 * int(s.second) + s.channel for fine, s in which]
    known = torch.stack([masks[i][0] for i in order])
    bin_known = torch.stack([masks[i][1] for i in order])
    coded = torch.stack([masks[i][2] for i in order])
    residual = torch.stack([chw(r) for r in residuals]) * known
    centre = torch.stack([chw(c) for c in centres]) * bin_known
    xhat, y = chw(inputs.xhat).expand(n, -1, -1, -1), chw(inputs.y).expand(n, -1, -1, -1)
    log_sigma = torch.full((n,), inputs.log_sigma_input, dtype=torch.float32)
    with torch.no_grad():
        delta, lam = net(xhat, y, residual, known, coded, log_sigma, centre, bin_known)
    delta, lam = delta.cpu(), lam.cpu()  # the coder's tables are built on the CPU, wherever the network ran
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
    return (mean + 0.5) / bin_width - 0.5, np.clip(sd / bin_width, SD_MIN, SD_MAX)


def bin_expectation(mean: np.ndarray, sd: np.ndarray, width: int) -> np.ndarray:
    """E[k | k in 0..width−1] for k ~ N(mean, sd²) sampled at the integers: Σ k·e^(−z_k²/2) / Σ e^(−z_k²/2).

    Every decoder must show the same preview, so the weights come from :func:`diffcodec.exactmath.exp` and
    every sum runs in a fixed order over elementwise IEEE operations (no BLAS, no libm).  Weights are taken
    relative to the largest (z² minus its minimum), so the denominator is at least 1.
    """
    z2 = [z * z for z in ((k - mean) / sd for k in range(width))]
    least = z2[0]
    for z in z2[1:]:
        least = np.minimum(least, z)
    num = np.zeros_like(mean)
    den = np.zeros_like(mean)
    for k, z in enumerate(z2):
        w = exactmath.numpy_float64(exactmath.exp, (least - z) * 0.5)
        num = num + w * k
        den = den + w
    return num / den


def _centres(inputs: ContextInputs, bins: np.ndarray, bin_width: int) -> np.ndarray:
    """Normalized bin centres (w·b + (w − 1)/2 − μ)/σ_t: what the network sees of a decoded bin."""
    return (bin_width * bins + (bin_width - 1) / 2.0 - inputs.mu) / inputs.sigma_pixels
