"""The progressive codec: Algorithms 3 and 4 of Ho et al. 2020 with real channel simulation.

Encoder (Algorithm 3): send x_T ~ q(x_T | x_0) using p(x_T) = N(0, I); for each coded
step send x_{t−1} ~ q(x_{t−1} | x_t, x_0) using p_θ(x_{t−1} | x_t); finally send x_0
exactly with a discretized Gaussian (Eq. 13).  Decoder (Algorithm 4) mirrors it.
Everything goes through one constriction range coder; the container records how many
words each truncation point needs, so any prefix decodes.

Each step's dimensions (over all tiles) are split into chunks of about
``chunk_bits`` bits of KL; the number of chunks is side information, coded per step.

The exact stage need not start at x_1.  Channel simulation costs ~20% more than the KL
on the large low-noise steps, while coding x_0 directly from x_t with the discretized
Gaussian N(x̂_0(x_t), (c·σ_t)²), σ_t = √((1−ᾱ_t)/ᾱ_t), costs about the ELBO's remaining
terms.  So the encoder runs the chain, measures at each state the bits spent so far plus
the exact-stage cost from there, and stops the chain where that total is smallest
(``exact_from`` in the header).  At x_1 the exact stage is the paper's L_0: mean μ_θ(x_1, 1)
and σ_1 from the model, times c.
See docs/format.md for the stream and docs/codec.md for the design.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import math
import os
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import constriction
import numpy as np
import torch

from . import exact
from .channel import decode_chunk, encode_chunks, kl_nats, log_weight_coefficients
from .container import (FLAG_COARSE_TO_FINE, FLAG_PARTIAL_POINTS, MODEL_ID_BYTES, VERSION, DfcFile, StreamHeader, TruncationPoint, head_size,
                        stream_position)
from .diffusion import SPACINGS, GaussianDiffusion, spaced_timesteps
from .entropy import (
    PIXEL_MODEL,
    IndexCoder,
    StepSizeCoder,
    StepSizeCoderV1,
    decode_raw_bits,
    encode_raw_bits,
    pixel_gaussian_params,
)
from .errors import DiffcodecError
from .exact import EXACT_SCALES
from .numerics import EXACT, FLOAT, Numerics, for_version
from .reconstruct import mean_image
from .rng import raw_uint64, stream_key
from .tiling import TileLayout

MAX_INDEX_BITS = 20  # format constant: PFR indices are < 2^20
STREAM_SEED = 0x444643  # mixed into every shared-randomness key of format versions 1 and 2
_LN2 = math.log(2.0)
EXACT_METHODS = ("auto", "linear", "learned", "coarse")  # CodecConfig.exact_method
# The chain runs on until prefix + exact stage exceeds its best by STOP_TOLERANCE, or by
# SKIP_TOLERANCE when the next step would carry over 1% of that best in KL (the last, expensive steps).
STOP_TOLERANCE = 1.02
SKIP_TOLERANCE = 1.005


# A file's header says how large its image is, and a decoder allocates for that before reading anything
# else: a small file can claim billions of pixels (a decompression bomb).  Pillow's limit, which users
# know (PIL.Image.MAX_IMAGE_PIXELS), unless the caller raises it.
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class ImageTooLargeError(DiffcodecError):
    """The file claims more pixels than the decoder was allowed to allocate for."""


def check_image_size(header: StreamHeader, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a header that claims more than ``max_pixels`` pixels (None: no limit)."""
    pixels = header.width * header.height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(f"the file claims a {header.width}×{header.height} image ({pixels:,} pixels), more than "
                                 f"the limit of {max_pixels:,}: a decompression bomb, unless you trust it and raise the limit")


class StreamMismatchError(DiffcodecError):
    """The decoder's state disagrees with the encoder's: corrupt data, or other model/numerics."""


@dataclass(frozen=True)
class CodecConfig:
    """Encoder settings.  ``steps`` and ``chunk_bits`` are written to the stream; the rest only shape the search."""

    steps: int = 50  # with quad spacing: measured as good as 100 and twice as fast (docs/codec.md)
    # Larger chunks pay PFR's per-chunk overhead fewer times; fewer spare candidates bias the sample
    # toward p but make indices cheaper.  Measured in docs/codec.md ("Chunk size, candidates and target gain").
    chunk_bits: int = 13
    extra_candidate_bits: int = 3  # K = 2^(⌈chunk KL⌉ + this)
    max_candidate_bits: int = 16
    threads: int = 1  # torch threads: written to the stream (version 5 decodes the same on any count; 1–4 must match)
    # Threads searching PFR candidates (None: every core this process may use, at most 8).  Encoder-only:
    # the chosen indices do not depend on it, so it is not written to the stream.
    search_threads: int | None = None
    points: int | None = None  # truncation points in the file (None: automatic)
    batch_size: int = 64
    exact_from_t: int | None = None  # paper t the exact stage starts from (None: the encoder picks the cheapest)
    # Truncated PFR pulls its sample toward p (fidelity ~0.9), so later steps must resend what it missed.
    # Aiming each chunk at μ_p + g·(μ_q − μ_p) instead of μ_q recovers part of it (docs/codec.md).
    # Encoder-only: the decoder never sees the target, so any gain decodes.
    target_gain: float = 1.4
    spacing: str = "quad"  # how the steps spread over T: "uniform" or "quad" (dense at low noise)
    # The exact stage: "auto" writes the cheapest, "linear" (residual prediction, as in version 3), "learned"
    # (the model's context network for the colour plane; RGB and RGBA images) or "coarse" (the coarse-to-fine
    # network: bins first, so the exact stage's partial points are previews to within a bin).
    exact_method: str = "auto"
    # Encoder-only: above 1, "auto" also tries the coarse-to-fine stage (where the model has one) and writes it
    # when it costs at most this many times the cheapest other stage from the same state: better previews
    # inside the exact stage for a slightly larger lossless file.  At 1 (the default) "auto" does not try it:
    # the shipped network costs ~1% more than the learned stage (docs/codec.md), so it would not be chosen.
    coarse_margin: float = 1.0
    # Encoder-only: "auto" tries the learned stage (the context network costs ~6 linear plans) on at most
    # this many states whose total with the linear stage is within ``learned_margin`` of the best.
    learned_candidates: int = 6
    learned_margin: float = 1.04
    # Truncation-point candidates after each stage of the exact stage (format flag FLAG_PARTIAL_POINTS):
    # a prefix past the last lossy state then decodes to x_0 exact in part, predicted elsewhere.
    partial_points: bool = True

    def __post_init__(self):
        if not 1 <= self.chunk_bits <= 16:
            raise DiffcodecError("chunk_bits must be in 1..16")
        if not 1 <= self.max_candidate_bits <= MAX_INDEX_BITS:
            raise DiffcodecError(f"max_candidate_bits must be in 1..{MAX_INDEX_BITS}")
        if not 1 <= self.threads <= 255:
            raise DiffcodecError("threads must be in 1..255")
        if self.search_threads is not None and not 1 <= self.search_threads <= 64:
            raise DiffcodecError("search_threads must be in 1..64")
        if self.spacing not in SPACINGS:
            raise DiffcodecError(f"spacing must be one of {', '.join(SPACINGS)}, got {self.spacing!r}")
        if self.exact_from_t is not None and self.exact_from_t < 1:
            raise DiffcodecError("exact_from_t must be at least 1")
        if not 0.5 <= self.target_gain <= 4.0:
            raise DiffcodecError("target_gain must be in 0.5..4")
        if self.coarse_margin < 1.0:
            raise DiffcodecError("coarse_margin must be at least 1")
        if self.learned_candidates < 1 or self.learned_margin < 1.0:
            raise DiffcodecError("learned_candidates must be at least 1 and learned_margin at least 1")
        if self.exact_method not in EXACT_METHODS:
            raise DiffcodecError(f"exact_method must be one of {', '.join(EXACT_METHODS)}, got {self.exact_method!r}")


@dataclass
class StepReport:
    """One coded step as the encoder saw it."""

    t: int  # paper timestep of the state after this step; 0 is the exact image
    bits: int  # real bits of the file cut right after this step (header and table included)
    kl_bits: float  # cumulative ideal cost (KL, and −log₂ p for the exact stage)
    rmse: float  # RMSE on the 0–255 scale of the mean reconstruction x̂_0 available here
    chunks: int = 0
    # Of ``bits``, those of the stream's words (the rest are the header and the truncation table).
    payload_bits: int = 0
    # A partial point inside the exact stage (t = 0): the share of x_0's subpixels decoded exactly; the rest
    # are predicted.  None for lossy states and for the exact image.
    partial: float | None = None
    # Whether the file's table lists this row as a truncation point (where `truncate` and `decode --stop-at-t`
    # can stop); the other rows are what a table with a point there would give.
    point: bool = False

    @property
    def position(self) -> tuple[int, float]:
        """Sort key along the stream: larger t first, then partial points, then the exact image."""
        return stream_position(self.t, self.partial)


@dataclass
class EncodeResult:
    data: bytes
    file: DfcFile
    steps: list[StepReport]
    num_dims: int
    network_evaluations: int = 0  # passes of p_θ over the image the encoder ran (states simulated, some past the stop)
    exact_method: str = "linear"  # the exact stage written: "linear", "learned" or "coarse"

    @property
    def bits_total(self) -> int:
        return 8 * len(self.data)

    @property
    def lossy_steps(self) -> list[StepReport]:
        """The chain's coded states x_T … x_exact_from (``steps`` then lists partial points and the exact image)."""
        return [s for s in self.steps if s.t > 0]

    @property
    def partial_steps(self) -> list[StepReport]:
        """The points inside the exact stage, after each of its stages but the last (may be empty)."""
        return [s for s in self.steps if s.partial is not None]

    @property
    def num_steps(self) -> int:
        """S, the length of the chain (``--steps``, in the header): the states the encoder may code."""
        return self.file.header.num_steps

    @property
    def coded_steps(self) -> int:
        """The states this file codes, x_T down to where the exact stage starts (docs/codec.md, "Steps")."""
        return len(self.lossy_steps)

    def to_json(self) -> dict:
        return {
            "bits_total": self.bits_total,
            "bpd": self.bits_total / self.num_dims,
            "exact_method": self.exact_method,
            "num_steps": self.num_steps,
            "coded_steps": self.coded_steps,
            "steps": [_step_json(s, self.num_dims) for s in self.steps],
        }


def _step_json(s: StepReport, num_dims: int) -> dict:
    out = {"t": s.t, "bits": s.bits, "bpd": s.bits / num_dims, "kl_bpd": s.kl_bits / num_dims, "rmse": s.rmse,
           "point": s.point}
    if s.partial is not None:
        out["partial"] = s.partial  # share of x_0's subpixels exact at this point inside the exact stage
    return out


@dataclass
class DecodeResult:
    pixels: np.ndarray
    mode: str
    t: int  # timestep of the state decoded (0: exact image, or a partial one)
    complete: bool
    notes: list[str] = field(default_factory=list)
    partial: float | None = None  # a partial point of the exact stage: the share of subpixels decoded exactly


def available_cores(cap: int = 8) -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one), at most ``cap``."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, cap))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the network with exactly ``n`` threads: outputs differ at ~1e-6 between thread counts."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class _Chain:
    """What encoder and decoder compute identically: the chain, the layout and p_θ at each state."""

    def __init__(self, model, layout: TileLayout, steps: int, chunk_bits: int, batch_size: int = 64, spacing: str = "uniform",
                 numerics: Numerics = FLOAT):
        self.num = numerics  # how this file's version computes what the stream depends on
        self.model = numerics.model(model)  # the integer networks in version 5
        self.layout = layout
        self.chunk_bits = chunk_bits
        self.batch_size = batch_size
        self.diffusion: GaussianDiffusion = self.model.diffusion.respace(
            spaced_timesteps(self.model.diffusion.num_steps, steps, spacing))
        self.real = layout.real_mask().reshape(-1)
        self.pad_idx = np.flatnonzero(~self.real)
        self.real_idx = np.flatnonzero(self.real)

    @property
    def num_steps(self) -> int:
        return self.diffusion.num_steps

    def paper_t(self, index: int) -> int:
        """Paper timestep (1..T) of the state at chain index ``index``."""
        return int(self.diffusion.timesteps[index]) + 1

    def predict(self, x: np.ndarray, index: int) -> dict[str, np.ndarray]:
        """p_θ(x_{i−1} | x_i) mean and log-variance and x̂_0 at chain index ``index``, float64, flat."""
        eps_parts, var_parts = [], []
        t_orig = int(self.diffusion.timesteps[index])
        x_t = torch.from_numpy(x.reshape(self.layout.shape).astype(np.float32))
        for start in range(0, len(x_t), self.batch_size):
            xb = x_t[start : start + self.batch_size]
            eps, var_out = self.model(xb, torch.full((len(xb),), t_orig, dtype=torch.long))
            eps_parts.append(eps)
            var_parts.append(var_out)
        eps = torch.cat(eps_parts).double()
        var_out = torch.cat(var_parts).double() if var_parts[0] is not None else None
        t = torch.full((len(x_t),), index, dtype=torch.long)
        out = self.diffusion.p_mean_variance(x_t.double(), t, eps, var_out, self.model.variance)
        return {k: v.numpy().reshape(-1) for k, v in out.items()}

    def prior_params(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(np.prod(self.layout.shape))
        return np.zeros(n), np.ones(n)

    def chunks(self, step: int, count: int) -> list[np.ndarray]:
        """Random partition of the real dimensions into ``count`` chunks (shared randomness, no sorting of floats)."""
        n = len(self.real_idx)
        if count == 1:
            return [self.real_idx]
        raw = raw_uint64(stream_key(STREAM_SEED, step, 0xA5), 0, n)
        ids = ((raw >> np.uint64(32)) * np.uint64(count)) >> np.uint64(32)
        order = np.argsort(ids, kind="stable")
        bounds = np.cumsum(np.bincount(ids.astype(np.int64), minlength=count))[:-1]
        return [self.real_idx[part] for part in np.split(order, bounds)]

    def fill_padding(self, x: np.ndarray, step: int, mu_p: np.ndarray, sd_p: np.ndarray) -> None:
        """Padding follows the prior, from shared randomness: it costs no bits."""
        if len(self.pad_idx):
            eps = self.num.normals(stream_key(STREAM_SEED, step, 0x9A), 0, len(self.pad_idx))
            x[self.pad_idx] = mu_p[self.pad_idx] + sd_p[self.pad_idx] * eps

    def x0_from_pixels(self, tiles_u8: np.ndarray) -> np.ndarray:
        return tiles_u8.reshape(-1).astype(np.float64) / 127.5 - 1.0

    def pixels_from_x0(self, x0_hat: np.ndarray) -> np.ndarray:
        """x̂_0 in [-1, 1] (flat) -> uint8 tiles."""
        v = np.clip(np.round((x0_hat + 1.0) * 127.5), 0, 255).astype(np.uint8)
        return v.reshape(self.layout.shape)




def _state_check(words: np.ndarray, end_word: int, state: np.ndarray) -> int:
    """16-bit check of the data prefix and the decoder's state at a truncation point."""
    crc = binascii.crc_hqx(words[:end_word].astype("<u4").tobytes(), 0xFFFF)
    return binascii.crc_hqx(state.astype("<f4").tobytes(), crc)


# The automatic table gives every lossy state x_t a point within this factor of t: the lossy points, from x_T
# down, are each the lowest coded state with t ≥ (the previous point's t) / POINT_T_RATIO, so
# `truncate --stop-at-t T` reaches a state with t < POINT_T_RATIO · T (or the chain's next state, where the
# chain itself is coarser) on every image size.  Measured in docs/codec.md ("Where a file can be cut").
POINT_T_RATIO = 1.5


def _choose_points(marks: list[int], requested: int | None, lossy: int | None = None, ts: list[int] | None = None,
                   ratio: float = POINT_T_RATIO) -> list[int]:
    """Which candidates (0-based, in stream order) get a truncation point, from the words each needs.

    The candidates are the ``lossy`` states (all but the last candidate when None), then the partial
    points inside the exact stage, then the exact image.  The exact image, the last lossy state (the
    best preview) and x_T (so that a cut file decodes from its first few dozen bytes on) always get a
    point.  With ``ts`` (the paper t of each lossy state) and the automatic count, the lossy states on a
    grid of ratio ``ratio`` in t get one too (:data:`POINT_T_RATIO`).  The others are shared between the
    lossy prefix and the exact stage in proportion to their sizes, and spread evenly over each part's
    *size*, so a cut at any byte loses about the same share.
    """
    n = len(marks)
    lossy = n - 1 if lossy is None else lossy
    grid = _t_grid(ts[:lossy], ratio) if (ts is not None and requested is None) else []
    if requested is None:
        # ~4 bytes of table per point: keep the table near 1% of the payload, but never below 5 points.
        requested = max(5, marks[-1] // 100)
    requested = max(1, min(requested, n))
    picks = {n - 1}
    for s in (0, lossy - 1):
        if len(picks) < requested and s >= 0:
            picks.add(s)
    picks.update(grid)
    spare = requested - len(picks)
    lossy_free = [s for s in range(1, max(lossy - 1, 1)) if s not in picks]
    exact_free = list(range(lossy, n - 1))
    if spare <= 0 or not (lossy_free or exact_free):
        return sorted(picks)
    last_lossy = marks[max(lossy - 1, 0)]
    lossy_span, exact_span = last_lossy - marks[0], marks[-1] - last_lossy
    n_exact = min(len(exact_free), int(spare * exact_span / max(lossy_span + exact_span, 1)))
    n_lossy = min(len(lossy_free), spare - n_exact)
    n_exact = min(len(exact_free), spare - n_lossy)
    for free, count, lo, hi in ((lossy_free, n_lossy, marks[0], last_lossy), (exact_free, n_exact, last_lossy, marks[-1])):
        for target in lo + (hi - lo) * np.arange(1, count + 1) / (count + 1):
            s = min(free, key=lambda i: (abs(marks[i] - target), i))
            picks.add(s)
            free.remove(s)
    return sorted(picks)


def _t_grid(ts: list[int], ratio: float) -> list[int]:
    """The lossy states (indices into ``ts``, decreasing t) that keep consecutive points within ``ratio`` in t.

    From x_T down, each is the lowest state with t ≥ (the previous one's t) / ratio, or the next state when
    even that is below it.  So for any T between the last state's t and ts[0], the first of them with t ≥ T
    has t < ratio · T unless it is the next state of the chain after one below T.

    >>> _t_grid([1000, 960, 844, 700, 571, 454, 351, 261, 184, 121, 71], 1.5)
    [0, 3, 5, 7, 9, 10]
    """
    picks, i = [0], 0
    while i < len(ts) - 1:
        below = [j for j in range(i + 1, len(ts)) if ts[j] * ratio >= ts[i]]
        i = below[-1] if below else i + 1
        picks.append(i)
    return picks


class _Models:
    """The adaptive entropy models of one coding pass (fresh for each pass, identical on both sides)."""

    def __init__(self, chunk_bits: int, version: int = VERSION):
        self.index = IndexCoder(chunk_bits, MAX_INDEX_BITS)
        self.sizes = StepSizeCoderV1(chunk_bits) if version == 1 else StepSizeCoder(chunk_bits)


@dataclass
class _StepRecord:
    """What one channel-simulated step sends: enough to write it again into a fresh coder."""

    level: int
    chunks: int
    cls: int
    indices: list[int]


def _write_step(coder, models: _Models, rec: _StepRecord) -> None:
    models.sizes.encode(coder, rec.level, rec.chunks)
    for k in rec.indices:
        models.index.encode(coder, rec.cls, k)


def _exact_params(chain: _Chain, pred: dict[str, np.ndarray], index: int, mask: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and base log-variance of the exact stage from the state at chain index ``index`` (flat, masked).

    At index 0 this is Eq. 13's p_θ(x_0 | x_1); above it, x̂_0 with the variance of its noise term.
    """
    if index == 0:
        mean, log_var = pred["mean"], pred["log_variance"]
    else:
        d = chain.diffusion
        mean = pred["pred_xstart"]
        log_var = np.full(len(mean), chain.num.log((1.0 - d.alphas_cumprod[index]) / d.alphas_cumprod[index]))
    return (mean, log_var) if mask is None else (mean[mask], log_var[mask])


def _exact_planes(chain: _Chain, planes: exact.ExactLayout, pred: dict[str, np.ndarray], index: int):
    """The exact stage's base Gaussians (pixel units) as planes: (means, stds), each a list of (H, W, c)."""
    mu, sd = pixel_gaussian_params(*_exact_params(chain, pred, index), exp=chain.num.exp)
    return planes.planes(mu), planes.planes(sd)


def _context_inputs(chain: _Chain, planes: exact.ExactLayout, pred: dict[str, np.ndarray], x: np.ndarray, index: int
                    ) -> exact.ContextInputs:
    """The learned exact stage's inputs at the state x (flat, chain index ``index``): x̂_0, x_t/√ᾱ_t, σ_t."""
    abar = float(chain.diffusion.alphas_cumprod[index])
    xhat, y = planes.planes(pred["pred_xstart"])[0], planes.planes(x / math.sqrt(abar))[0]  # the colour plane
    sigma = math.sqrt((1.0 - abar) / abar)
    return exact.ContextInputs(xhat=xhat, y=y, sigma=sigma, log_sigma=chain.num.log(sigma), exp=chain.num.exp)


def _planning_nets(chain: _Chain):
    """The context networks the encoder's *search* runs (which state to stop at, which exact-stage method and
    scales to write): the float ones where the chain runs integer networks.  A plan only estimates costs and
    the decoder never repeats it; what is written, and every replay of what a decoder shows, runs the
    chain's own (integer) networks.  Float networks are ~2x faster here (bench/intnet_pass_speed.py)."""
    model = getattr(chain.model, "float_model", chain.model)
    return model.context, model.coarse


def _plan_learned(chain: _Chain, planes: exact.ExactLayout, pixel_planes, pred, x, index: int) -> exact.ExactPlan:
    inputs = _context_inputs(chain, planes, pred, x, index)
    return exact.plan_learned(planes, _planning_nets(chain)[0], pixel_planes, inputs, *_exact_planes(chain, planes, pred, index))


def _plan_coarse(chain: _Chain, planes: exact.ExactLayout, pixel_planes, pred, x, index: int) -> exact.ExactPlan:
    inputs = _context_inputs(chain, planes, pred, x, index)
    return exact.plan_coarse(planes, _planning_nets(chain)[1], pixel_planes, inputs, *_exact_planes(chain, planes, pred, index))


def _plan_exact(chain: _Chain, planes: exact.ExactLayout, pixel_planes, pred, x, index: int, method: str) -> exact.ExactPlan:
    """The exact stage from this state, method bit included: "learned" where it applies, else "linear"."""
    if method == "learned" and exact.learned_available(planes, chain.model.context):
        return _plan_learned(chain, planes, pixel_planes, pred, x, index)
    linear = exact.plan(planes, pixel_planes, *_exact_planes(chain, planes, pred, index))
    return dataclasses.replace(linear, bits=linear.bits + 1)


def _simulate_step(chain: _Chain, config: CodecConfig, sizes: StepSizeCoder, step: int, rng,
                   x_new, mu_q, sd_q, mu_p, sd_p):
    """Channel-simulate one step over all real dimensions; fills ``x_new`` with the decoder's sample."""
    r = chain.real_idx
    kl_dims = kl_nats(mu_q[r], sd_q[r], mu_p[r], sd_p[r]) / _LN2
    # A chunk holds at least one dimension, however large its KL.
    level, n_chunks, cls = sizes.level_for(float(kl_dims.sum()), len(r))
    parts = chain.chunks(step, n_chunks)
    keys, coeffs, counts = [], [], []
    for j, dims in enumerate(parts):
        chunk_kl = float(kl_nats(mu_q[dims], sd_q[dims], mu_p[dims], sd_p[dims]).sum() / _LN2)
        keys.append(stream_key(STREAM_SEED, step, j + 1))
        target = mu_p[dims] + config.target_gain * (mu_q[dims] - mu_p[dims])
        coeffs.append(log_weight_coefficients(target, sd_q[dims], mu_p[dims], sd_p[dims]))
        counts.append(1 << min(config.max_candidate_bits, max(0, math.ceil(chunk_kl)) + config.extra_candidate_bits))
    ks = encode_chunks(keys, coeffs, counts, rng, workers=config.search_threads or available_cores())
    for key, dims, k in zip(keys, parts, ks):
        x_new[dims] = mu_p[dims] + sd_p[dims] * decode_chunk(key, k, len(dims), chain.num.normals)
    return _StepRecord(level, n_chunks, cls, ks), float(kl_dims.sum())


def encode(
    pixels: np.ndarray,
    mode: str,
    model,
    config: CodecConfig = CodecConfig(),
    on_step: Callable[[int], None] | None = None,
) -> EncodeResult:
    """Encode uint8 (H, W, C) pixels into a .dfc stream (Algorithm 3)."""
    from .container import encode_file, chain_position

    layout = TileLayout(pixels.shape[0], pixels.shape[1], mode)
    if config.exact_method == "learned" and not exact.learned_available(exact.ExactLayout(layout), model.context):
        raise DiffcodecError("the learned exact stage needs a model with a context network and a colour image (RGB or RGBA)")
    if config.exact_method == "coarse" and not exact.coarse_available(exact.ExactLayout(layout), model.coarse):
        raise DiffcodecError("the coarse-to-fine exact stage needs a model with a coarse-to-fine network and a colour "
                             "image (RGB or RGBA)")
    chain = _Chain(model, layout, config.steps, config.chunk_bits, config.batch_size, config.spacing, numerics=EXACT)
    model = chain.model  # version 5: everything below runs the integer networks
    tiles = layout.split(pixels)
    x0 = chain.x0_from_pixels(tiles)
    real = chain.real
    exact_mask = layout.lossless_mask().reshape(-1)
    symbols = tiles.reshape(-1)[exact_mask].astype(np.int32)
    planes = exact.ExactLayout(layout)
    pixel_planes = planes.planes(tiles.reshape(-1))
    rng = np.random.default_rng([STREAM_SEED, layout.height, layout.width])  # private PFR arrivals; files are reproducible
    diffusion = chain.diffusion
    S = chain.num_steps
    n_dims = int(pixels.size)
    header_for = lambda exact_from, partial=False, coarse=False: StreamHeader(  # noqa: E731
        model_id=(model.coarse_identity if coarse else model.codec_identity)[:MODEL_ID_BYTES], width=layout.width,
        height=layout.height, mode=mode, num_steps=S, chunk_bits=config.chunk_bits, threads=config.threads,
        schedule_steps=model.diffusion.num_steps, exact_from=exact_from, spacing=config.spacing,
        flags=(FLAG_PARTIAL_POINTS if partial else 0) | (FLAG_COARSE_TO_FINE if coarse else 0),
    )
    forced_stop = None
    if config.exact_from_t is not None:
        forced_stop = S - chain_position(header_for(1), max(1, config.exact_from_t))

    # Pass 1: run the chain.  A live coder measures each step's real bits; each state's exact-stage
    # cost is measured too, so the chain can stop where prefix + exact stage is cheapest.
    live, live_models = constriction.stream.queue.RangeEncoder(), _Models(config.chunk_bits)
    records, states, reports, exact_costs = [], [], [], []
    # Only the latest prediction and the one of the cheapest state so far are kept: a prediction is
    # ~100 MB per megapixel, one per step would not fit in memory for large images.
    pred, best_pred, best_step = None, None, -1
    kl_total = 0.0
    best_total = math.inf
    past_best = False
    with torch_threads(config.threads):
        x = np.zeros_like(x0)
        for step in range(S):
            index = S - 1 - step  # chain index of the state this step produces
            if step == 0:
                mu_p, sd_p = chain.prior_params()
                mu_q = diffusion.sqrt_alphas_cumprod[index] * x0
                sd_q = np.full_like(x0, math.sqrt(1.0 - diffusion.alphas_cumprod[index]))
            else:
                mu_p, sd_p = pred["mean"], chain.num.exp(0.5 * pred["log_variance"])
                c1, c2 = diffusion.posterior_mean_coef1[index + 1], diffusion.posterior_mean_coef2[index + 1]
                mu_q = c1 * x0 + c2 * x
                sd_q = np.full_like(x0, math.sqrt(diffusion.posterior_variance[index + 1]))
                if past_best and forced_stop is None:
                    r = chain.real_idx
                    if kl_nats(mu_q[r], sd_q[r], mu_p[r], sd_p[r]).sum() / _LN2 > 0.01 * best_total:
                        break  # an expensive step, most likely simulated only to be discarded
            x_new = np.empty_like(x0)
            rec, kl_bits = _simulate_step(chain, config, live_models.sizes, step, rng, x_new, mu_q, sd_q, mu_p, sd_p)
            chain.fill_padding(x_new, step, mu_p, sd_p)
            x = x_new.astype(np.float32).astype(np.float64)  # the state both sides hold is float32
            _write_step(live, live_models, rec)
            kl_total += kl_bits
            records.append(rec)
            states.append(x.astype(np.float32))
            pred = chain.predict(x, index)
            # "auto" runs the chain on the linear stage's costs; the learned one is tried on the best states below.
            exact_costs.append(_plan_exact(chain, planes, pixel_planes, pred, x, index, config.exact_method))
            prefix_bits = 32 * live.num_words()
            reports.append(StepReport(t=chain.paper_t(index), bits=0, kl_bits=kl_total,
                                      rmse=_rmse(layout, chain.pixels_from_x0(mean_image(chain, pred["pred_xstart"], index)), pixels),
                                      chunks=rec.chunks))
            if on_step is not None:
                on_step(1)
            total = prefix_bits + exact_costs[-1].bits
            if total < best_total:
                best_total, best_pred, best_step = total, pred, step
            if forced_stop is not None:
                if step == forced_stop:
                    break
            elif total > STOP_TOLERANCE * best_total and step >= 2:
                break  # past the cheapest stopping point: later steps only cost more
            past_best = total > SKIP_TOLERANCE * best_total and step >= 2

    if on_step is not None and len(records) < S:
        on_step(S - len(records))  # steps past the stopping point are never simulated: a progress bar completes
    # Predictions kept from pass 1; any other state's is recomputed: the same state through the same
    # network gives the same prediction.
    evaluations = len(records)
    predictions = {best_step: best_pred, len(records) - 1: pred}
    del pred, best_pred

    def prediction(step: int) -> dict[str, np.ndarray]:
        nonlocal evaluations
        if step not in predictions:
            with torch_threads(config.threads):
                predictions[step] = chain.predict(states[step].astype(np.float64), S - 1 - step)
            evaluations += 1
        return predictions[step]

    def with_learned(step: int) -> exact.ExactPlan:
        """The cheaper of pass 1's (linear) plan at ``step`` and the learned stage there."""
        with torch_threads(config.threads):
            learned = _plan_learned(chain, planes, pixel_planes, prediction(step), states[step].astype(np.float64), S - 1 - step)
        return min(exact_costs[step], learned, key=lambda p: p.bits)

    # Choose where the chain stops and the exact stage's method and scales.
    try_learned = config.exact_method in ("auto", "coarse") and exact.learned_available(planes, model.context)
    if forced_stop is None:
        live_bits = _replay_bits(records, config.chunk_bits)
        totals = [b + c.bits for b, c in zip(live_bits, exact_costs)]
        if try_learned:
            # The learned stage saves a few % of the exact stage, so it can only win near the linear optimum:
            # try it on the few states closest to it (the context network costs ~6 linear plans).
            best = min(totals)
            near = sorted((t, s) for s, t in enumerate(totals) if t <= config.learned_margin * best)[: config.learned_candidates]
            for _, s in near:
                exact_costs[s] = with_learned(s)
                totals[s] = live_bits[s] + exact_costs[s].bits
        stop = int(np.argmin(totals))
    else:
        stop = min(forced_stop, len(records) - 1)
        if try_learned:
            exact_costs[stop] = with_learned(stop)
    index = S - 1 - stop
    stop_pred = prediction(stop)
    predictions.clear()
    try_coarse = config.exact_method == "coarse" or (config.exact_method == "auto" and config.coarse_margin > 1.0)
    if try_coarse and exact.coarse_available(planes, model.coarse):
        # Tried at the chosen stop only: it costs twice the learned stage's network passes.
        with torch_threads(config.threads):
            coarse = _plan_coarse(chain, planes, pixel_planes, stop_pred, states[stop].astype(np.float64), index)
        if config.exact_method == "coarse" or coarse.bits <= config.coarse_margin * exact_costs[stop].bits:
            exact_costs[stop] = coarse

    # Pass 2: write the stream: steps 0..stop, then the exact stage from the state after ``stop``.
    coder, models = constriction.stream.queue.RangeEncoder(), _Models(config.chunk_bits)
    marks = []
    for rec in records[: stop + 1]:
        _write_step(coder, models, rec)
        marks.append(coder.num_words())
    plan = exact_costs[stop]
    stage_marks: list[tuple[int, int]] = []  # (subpixels written, words) after each exact-stage stage
    recorder = _Recorder(coder)  # what the exact stage writes, so the encoder can replay partial decodes
    on_stage = lambda done: stage_marks.append((done, coder.num_words()))  # noqa: E731
    coarse = plan.method == exact.COARSE
    stage_outputs: list | None = None  # the network's outputs per stage, reused by the replays below
    if plan.method in (exact.LEARNED, exact.COARSE):
        write = exact.encode_coarse if coarse else exact.encode_learned
        stage_outputs = []
        with torch_threads(config.threads):  # the decoder runs the context network on the header's thread count
            write(recorder, planes, model.coarse if coarse else model.context, plan, pixel_planes,
                  _context_inputs(chain, planes, stop_pred, states[stop].astype(np.float64), index),
                  *_exact_planes(chain, planes, stop_pred, index), on_stage=on_stage, outputs=stage_outputs)
    else:
        encode_raw_bits(recorder, exact.LINEAR, 1)
        exact.encode(recorder, planes, plan, pixel_planes, *_exact_planes(chain, planes, stop_pred, index), on_stage=on_stage)
    words = coder.get_compressed()
    if on_step is not None:
        on_step(1)
    # A range decoder reads one word ahead: a prefix needs the word after the step's last one.
    partials = stage_marks[:-1] if config.partial_points else []  # the last stage ends at the exact image
    marks = [min(m + 1, len(words)) for m in marks] + [min(w + 1, len(words)) for _, w in partials] + [len(words)]
    reports = reports[: stop + 1]
    kl_prefix = reports[-1].kl_bits
    if partials:
        # What a decoder shows at each partial point, by the decoder's own code on the symbols just written.
        exact_seq = _coding_order(planes, pixel_planes, model.coarse if coarse else None)
        costs = np.cumsum(plan.all_stage_bits())
        with torch_threads(config.threads):
            for j, (done, _) in enumerate(partials):
                flat = _decode_exact(_Replay(recorder.symbols), chain, planes, stop_pred, states[stop].astype(np.float64),
                                     index, VERSION, limit=done, coarse=coarse, known_outputs=stage_outputs)
                reports.append(StepReport(t=0, bits=0, kl_bits=kl_prefix + float(costs[j]), partial=done / len(exact_seq),
                                          rmse=_rmse(layout, layout.fill_replicated(flat.reshape(layout.shape)), pixels)))
    reports.append(StepReport(t=0, bits=0, kl_bits=kl_prefix + exact_costs[stop].bits, rmse=0.0))

    point_states = _choose_points(marks, config.points, lossy=stop + 1, ts=[r.t for r in reports[: stop + 1]])
    header = header_for(S - stop, partial=any(stop < s < len(marks) - 1 for s in point_states), coarse=coarse)
    points = []
    for s in point_states:
        if s <= stop:
            points.append(TruncationPoint(t=S - s, end_word=marks[s], check=_state_check(words, marks[s], states[s][real])))
        elif s < len(marks) - 1:
            done = partials[s - stop - 1][0]
            points.append(TruncationPoint(t=0, end_word=marks[s], subpixels=done,
                                          check=_state_check(words, marks[s], exact_seq[:done].astype(np.float32))))
        else:
            points.append(TruncationPoint(t=0, end_word=marks[s], check=_state_check(words, marks[s], symbols.astype(np.float32))))
    dfc = DfcFile(header=header, points=tuple(points), words=words, image_crc32=zlib.crc32(pixels.tobytes()))
    data = encode_file(dfc)
    # Each step's rate is the size of the file truncated right after it: the points before it, one for it, its words.
    chosen = set(point_states)
    kept: list[TruncationPoint] = []
    for s, (r, m) in enumerate(zip(reports, marks)):
        final = s == len(marks) - 1
        sub = partials[s - stop - 1][0] if stop < s < len(marks) - 1 else 0
        here = TruncationPoint(t=0 if s > stop else S - s, end_word=m, check=0, subpixels=sub)
        r.bits = 8 * (head_size(header, (*kept, here), complete=final) + 4 * m)
        r.payload_bits = 32 * m
        if s in chosen:
            kept.append(points[len(kept)])
            r.point = True
    assert reports[-1].bits == 8 * len(data)
    return EncodeResult(data=data, file=dfc, steps=reports, num_dims=n_dims, network_evaluations=evaluations,
                        exact_method={exact.LINEAR: "linear", exact.LEARNED: "learned", exact.COARSE: "coarse"}[plan.method])


def _coding_order(planes: exact.ExactLayout, pixel_planes: list[np.ndarray], coarse_net=None) -> np.ndarray:
    """The exact stage's symbols in stream order (a partial point's count is a prefix of it)."""
    if coarse_net is None:
        return planes.coding_order(pixel_planes)
    return exact.coarse_coding_order(planes, pixel_planes, coarse_net.config.bin_width)


class _Recorder:
    """A range encoder that also keeps every symbol array written through it (for :class:`_Replay`)."""

    def __init__(self, coder):
        self.coder, self.symbols = coder, []

    def encode(self, symbols, *args) -> None:
        self.coder.encode(symbols, *args)
        self.symbols.append(np.asarray(symbols))


class _Replay:
    """Stands in for a range decoder: returns the arrays a :class:`_Recorder` saw, in order."""

    def __init__(self, arrays: list[np.ndarray]):
        self._arrays = iter(arrays)

    def decode(self, model, *args) -> np.ndarray:
        n = args[0] if len(args) == 1 and isinstance(args[0], int) else len(args[0])
        return next(self._arrays)[:n]


def _replay_bits(records: list[_StepRecord], chunk_bits: int) -> list[int]:
    """Bits of the stream after each step (range-coder words), for choosing where the chain stops."""
    coder, models = constriction.stream.queue.RangeEncoder(), _Models(chunk_bits)
    out = []
    for rec in records:
        _write_step(coder, models, rec)
        out.append(32 * coder.num_words())
    return out


def _rmse(layout: TileLayout, tiles_u8: np.ndarray, pixels: np.ndarray) -> float:
    recon = layout.merge(tiles_u8)
    return float(np.sqrt(np.mean((recon.astype(np.float64) - pixels.astype(np.float64)) ** 2)))


def _decode_step(coder, models: _Models, chain: _Chain, step: int, x_new, mu_p, sd_p) -> None:
    try:
        _, n_chunks, cls = models.sizes.decode(coder, len(chain.real_idx))
    except ValueError as exc:
        raise StreamMismatchError(f"stream is corrupt ({exc})") from None
    for j, dims in enumerate(chain.chunks(step, n_chunks)):
        k = models.index.decode(coder, cls)
        x_new[dims] = mu_p[dims] + sd_p[dims] * decode_chunk(stream_key(STREAM_SEED, step, j + 1), k, len(dims), chain.num.normals)


def decode(
    data: bytes | DfcFile,
    model,
    stop_at_t: int = 0,
    reconstruct: str = "mean",
    seed: int = 0,
    on_step: Callable[[int], None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
) -> DecodeResult:
    """Decode a .dfc stream (Algorithm 4) down to the last coded state with t ≥ ``stop_at_t`` that the data holds.

    A file whose header claims more than ``max_pixels`` pixels (None: no limit) is refused with
    :class:`ImageTooLargeError` before anything is allocated for it.  ``batch_size``: tiles per network
    call (format 5 decodes the same with any; versions 1–4 need the encoder's, the default).

    Any coded state, listed in the table or not.  ``diffcodec decode --stop-at-t T`` first cuts the file at
    its last truncation point with t ≥ T (:func:`diffcodec.container.truncate`, as ``diffcodec truncate``
    does), so that it shows what the cut file shows; ``--any-state`` calls this directly.

    ``reconstruct`` turns a lossy state x_t into an image: ``mean`` is x̂_0 = (x_t − √(1−ᾱ_t) ε_θ)/√ᾱ_t
    (the paper's Table 4 / Figure 5 distortion; shrunk toward the average image at high noise,
    :func:`diffcodec.reconstruct.mean_image`), ``sample`` runs ancestral sampling from x_t,
    ``flow`` runs deterministic DDIM from x_t.  A complete stream decoded to t = 0 is the exact image.
    """
    from .container import decode_file

    dfc = data if isinstance(data, DfcFile) else decode_file(data)
    check_image_size(dfc.header, max_pixels)
    try:
        return _decode(dfc, model, stop_at_t, reconstruct, seed, on_step, batch_size)
    except AssertionError:
        # constriction asserts when corrupt data decodes to a symbol the model cannot produce.
        raise StreamMismatchError("the stream is corrupt (the entropy decoder met an impossible symbol)") from None


def _decode(data, model, stop_at_t: int, reconstruct: str, seed: int, on_step, batch_size: int = 64) -> DecodeResult:
    from .container import decode_file
    from .reconstruct import reconstruct_from

    dfc = data if isinstance(data, DfcFile) else decode_file(data)
    h = dfc.header
    coarse = bool(h.flags & FLAG_COARSE_TO_FINE)
    numerics = for_version(h.version)
    model = numerics.model(model)  # the integer networks for version 5
    if coarse and model.coarse is None:
        identity = b"\0" * len(h.model_id)  # the file names a coarse-to-fine network the loaded model lacks
    else:
        identity = (model.identity if h.version < 4 else model.coarse_identity if coarse else model.codec_identity)
    identity = identity[: len(h.model_id)]
    if h.model_id != identity:
        raise DiffcodecError(
            f"stream was encoded with model {h.model_id.hex()}, but the loaded model is {identity.hex()}; "
            "pass the encoder's checkpoint with --model"
        )
    if reconstruct not in ("mean", "sample", "flow"):
        raise DiffcodecError(f"unknown reconstruction {reconstruct!r} (mean, sample or flow)")
    if h.schedule_steps != model.diffusion.num_steps:
        raise DiffcodecError(f"stream uses a {h.schedule_steps}-step schedule, the model has {model.diffusion.num_steps}")
    layout = TileLayout(h.height, h.width, h.mode)
    chain = _Chain(model, layout, h.num_steps, h.chunk_bits, batch_size, spacing=h.spacing, numerics=numerics)
    S = chain.num_steps
    last_step = S - h.exact_from  # the chain's last coded step; the exact stage follows it
    # Step s produces the state with chain t = S − s; the exact stage is "step" last_step + 1.
    points = {(last_step + 1 if p.t == 0 else S - p.t): p for p in dfc.points if not p.partial}
    # A file that ends at a partial point reaches the exact stage, in part.
    last_available = last_step + 1 if dfc.points[-1].t == 0 else max(points)
    # The last coded state with t ≥ stop_at_t (the rule `truncate` uses); stop_at_t = 0 is the exact image.
    if stop_at_t <= 0:
        wanted = last_step + 1
    else:
        wanted = max((s for s in range(last_step + 1) if chain.paper_t(S - 1 - s) >= stop_at_t), default=0)
    target = min(wanted, last_available)
    notes = []
    if target < wanted:
        notes.append(f"stream ends early: decoded to t={_t_of(chain, target, last_step)}, its last whole truncation point")

    words = np.asarray(dfc.words, dtype=np.uint32)
    coder = constriction.stream.queue.RangeDecoder(words if len(words) else np.zeros(1, dtype=np.uint32))
    models = _Models(h.chunk_bits, h.version)
    real = chain.real
    # Versions 1–4 must run the network on the encoder's thread count; version 5 is exact on any, and
    # takes the encoder's as a default.
    with torch_threads(h.threads):
        x = np.zeros(int(np.prod(layout.shape)))
        pred = None
        for step in range(min(target, last_step) + 1):
            index = S - 1 - step
            if step == 0:
                mu_p, sd_p = chain.prior_params()
            else:
                mu_p, sd_p = pred["mean"], chain.num.exp(0.5 * pred["log_variance"])
            x_new = np.empty_like(x)
            _decode_step(coder, models, chain, step, x_new, mu_p, sd_p)
            chain.fill_padding(x_new, step, mu_p, sd_p)
            x = x_new.astype(np.float32).astype(np.float64)
            if step in points:
                _verify(words, points[step], x.astype(np.float32)[real], chain.paper_t(index))
            if on_step is not None:
                on_step(1)
            if step < target:
                pred = chain.predict(x, index)

        if target == last_step + 1:
            index = S - 1 - last_step
            partials = [p for p in dfc.points if p.partial]
            limit = math.inf if dfc.complete else partials[-1].subpixels
            planes = exact.ExactLayout(layout) if h.version >= 3 else None
            coarse_net = model.coarse if coarse else None
            if planes is not None and not dfc.complete and limit > _num_symbols(planes, coarse_net):
                raise StreamMismatchError("a partial truncation point lies beyond the exact stage: the file is corrupt")
            flat = _decode_exact(coder, chain, planes, pred, x, index, h.version, limit, coarse=coarse)
            if partials:
                seq = _coding_order(planes, planes.planes(flat), coarse_net)
                for p in partials:
                    _verify(words, p, seq[: p.subpixels].astype(np.float32), 0)
            pixels = layout.merge(layout.fill_replicated(flat.reshape(layout.shape)))
            if on_step is not None:
                on_step(1)
            if not dfc.complete:
                share = limit / len(seq)
                what = "of its symbols are decoded (colour bins first)" if coarse else "of the subpixels are exact"
                notes.append(f"stream ends inside the exact stage: {100 * share:.0f}% {what}, the rest predicted")
                return DecodeResult(pixels=pixels, mode=h.mode, t=0, complete=False, notes=notes, partial=share)
            _verify(words, points[target], flat[layout.lossless_mask().reshape(-1)].astype(np.float32), 0)
            if dfc.image_crc32 is not None and zlib.crc32(pixels.tobytes()) != dfc.image_crc32:
                raise StreamMismatchError("decoded image fails its checksum: the stream is corrupt")
            return DecodeResult(pixels=pixels, mode=h.mode, t=0, complete=True, notes=notes)

        index = S - 1 - target
        x0_hat = reconstruct_from(chain, x, index, reconstruct, seed)
        pixels = layout.merge(chain.pixels_from_x0(x0_hat))
    return DecodeResult(pixels=pixels, mode=h.mode, t=chain.paper_t(index), complete=False, notes=notes)


def _num_symbols(planes: exact.ExactLayout, coarse_net=None) -> int:
    """How many symbols the exact stage codes: a subpixel each, and a bin more for each colour subpixel when coarse."""
    colour = sum(planes.stage_sizes()[: len(exact.colour_stages(planes))]) if coarse_net is not None else 0
    return sum(planes.stage_sizes()) + colour


def _decode_exact(coder, chain: _Chain, planes: exact.ExactLayout | None, pred, x: np.ndarray, index: int, version: int,
                  limit: float = math.inf, coarse: bool = False, known_outputs: list | None = None) -> np.ndarray:
    """The exact stage from the state x at chain index ``index``: x_0's pixels as flat uint8 tiles.

    Past ``limit`` subpixels (coding order; a partial truncation point) each is its stage's predicted
    mean.  The encoder runs this on a :class:`_Replay` of what it wrote, so it reports what a decoder shows.
    """
    layout = chain.layout
    flat = np.zeros(int(np.prod(layout.shape)), dtype=np.uint8)
    mask = layout.lossless_mask().reshape(-1)
    if version >= 3:
        if version >= 4 and decode_raw_bits(coder, 1) == exact.LEARNED:
            net = chain.model.coarse if coarse else chain.model.context
            available = exact.coarse_available if coarse else exact.learned_available
            if not available(planes, net):
                raise StreamMismatchError("the stream's exact stage needs a context network and a colour image")
            read = exact.decode_coarse if coarse else exact.decode_learned
            values = read(coder, planes, net, _context_inputs(chain, planes, pred, x, index),
                          *_exact_planes(chain, planes, pred, index), limit=limit, known_outputs=known_outputs)
        else:
            values = exact.decode(coder, planes, *_exact_planes(chain, planes, pred, index), limit=limit)
        for m, v in zip(planes.maps, values):
            flat[m] = v
    else:  # versions 1 and 2: one scale, every subpixel independent (no partial points)
        scale = decode_raw_bits(coder, 4)
        mean, log_var = _exact_params(chain, pred, index, mask)
        mu, sd = pixel_gaussian_params(mean, log_var + 2.0 * chain.num.log(EXACT_SCALES[scale]), exp=chain.num.exp)
        flat[mask] = coder.decode(PIXEL_MODEL, mu, sd).astype(np.uint8)
    return flat


def _t_of(chain: _Chain, step: int, last_step: int) -> int:
    return 0 if step > last_step else chain.paper_t(chain.num_steps - 1 - step)


def _verify(words: np.ndarray, point: TruncationPoint, state: np.ndarray, t: int) -> None:
    if _state_check(words, point.end_word, state) != point.check:
        raise StreamMismatchError(
            f"check failed at t={t}: the stream is corrupt, or this machine computes the model differently "
            "from the encoder's (model, thread count, CPU)"
        )
