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

The stream itself (its stages and the one loop that writes and reads them) is diffcodec/stream.py;
this module searches the chain, chooses, and turns streams into files and back.
See docs/format.md for the stream and docs/codec.md for the design.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import constriction
import numpy as np
import torch

from . import exact
from .channel import encode_chunks, kl_nats, log_weight_coefficients
from .coders import Reader, StepSymbols, StreamMismatchError, Writer
from .container import DfcFile, StreamHeader, TruncationPoint, encode_file, head_size, stream_position
from .diffusion import SPACINGS
from .errors import DiffcodecError
from .format import FLAG_PARTIAL_POINTS, MAX_INDEX_BITS, STREAM_SEED, ExactKind
from .numerics import EXACT
from .profile import StreamProfile
from .reconstruct import mean_image
from .stream import SHARED_X_T, Chain, DecodingState, EncodingState, run, stages, state_check, step_code
from .tiling import TileLayout

__all__ = ["CodecConfig", "DecodeResult", "EncodeResult", "StepReport", "StreamMismatchError", "decode", "encode"]

_Chain = Chain  # its name before diffcodec/stream.py (tests and bench scripts build one)
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


# What decode says of a version-8 file read from a cut at an arbitrary byte (DfcFile.unchecked).
UNCHECKED_NOTE = ("cut at a byte no truncation point ends at: its payload has no check of its own, so what it keeps "
                  "was decoded unchecked (a file cut by diffcodec truncate has a check of its own)")


def check_image_size(header: StreamHeader, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a header that claims more than ``max_pixels`` pixels (None: no limit)."""
    pixels = header.width * header.height
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(f"the file claims a {header.width}×{header.height} image ({pixels:,} pixels), more than "
                                 f"the limit of {max_pixels:,}: a decompression bomb, unless you trust it and raise the limit")


# The automatic table gives every lossy state x_t a point within this factor of t: the lossy points, from x_T
# down, are each the lowest coded state with t ≥ (the previous point's t) / POINT_T_RATIO, so
# `truncate --stop-at-t T` reaches a state with t < POINT_T_RATIO · T (or the chain's next state, where the
# chain itself is coarser) on every image size.  Measured in docs/codec.md ("Where a file can be cut").
POINT_T_RATIO = 1.5


@dataclass(frozen=True)
class CodecConfig:
    """Encoder settings.  ``steps`` and ``chunk_bits`` are written to the stream; the rest only shape the search."""

    steps: int = 50  # with quad spacing: measured as good as 100 and twice as fast (docs/codec.md)
    # Larger chunks pay PFR's per-chunk overhead fewer times; fewer spare candidates bias the sample
    # toward p but make indices cheaper.  Measured in docs/codec.md ("Chunk size, candidates and target gain").
    chunk_bits: int = 13
    extra_candidate_bits: int = 3  # K = 2^(⌈chunk KL⌉ + this)
    max_candidate_bits: int = 16
    threads: int = 1  # torch threads of the encoder (versions 5–6 decode the same on any count, and 6 does not store it)
    # Threads searching PFR candidates (None: every core this process may use, at most 8).  Encoder-only:
    # the chosen indices do not depend on it, so it is not written to the stream.
    search_threads: int | None = None
    points: int | None = None  # truncation points in the file (None: automatic)
    # The automatic table's grid in t (POINT_T_RATIO); math.inf: no grid, the rule before it (x_T, the last
    # lossy state, the exact image and points for ~1% of the payload; bench/results/rd_cifar500_v5_oldtable.json).
    point_t_ratio: float = POINT_T_RATIO
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
    # Encoder-only: "auto" writes the coarse-to-fine stage (where the model has one) on images of at most this
    # many pixels: its partial points are previews to within a bin, which on 40 validation images cut RMSE at
    # 1.5-2 bits/dim by 37-39% for +0.12% lossless (BENCHMARKS.md, "The coarse-to-fine stage by default").
    # Larger images keep the learned stage: on 64x64 photo crops coarse-to-fine cost +1.46% lossless, and its
    # decoder runs twice the network passes (BENCHMARKS.md).  0: never by default.
    coarse_max_pixels: int = 32 * 32
    # Encoder-only: above 1, "auto" also tries the coarse-to-fine stage on larger images and writes it when it
    # costs at most this many times the cheapest other stage from the same state.
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
        if self.coarse_max_pixels < 0:
            raise DiffcodecError("coarse_max_pixels must be at least 0")
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


class _Progress:
    """Reports work to an ``on_step`` callback in chain steps, in parts of a step where a step takes long.

    A bar of ``total`` units (the chain's steps, and one for the exact stage) gets each step as its parts finish:
    the network pass batch by batch (``Chain.on_batch``), then the rest of the step.  The shares only shape how
    smoothly a bar moves; what it is told never passes ``total`` and :meth:`finish` tops it up to exactly that.
    """

    def __init__(self, on_step: Callable[[float], None] | None, total: float):
        self.on_step, self.total, self.done = on_step, float(total), 0.0

    def __call__(self, amount: float) -> None:
        amount = min(amount, self.total - self.done)
        if self.on_step is not None and amount > 0:
            self.done += amount
            self.on_step(amount)

    def share(self, part: float) -> Callable[[float], None]:
        """A callback reporting ``part`` of a unit times what it is told (a network batch's share of the pass)."""
        return lambda fraction: self(part * fraction)

    def finish(self) -> None:
        self(self.total - self.done)


# How an encoder's step divides between its parts (a 128x128 photo crop: network 45%, channel simulation 19%,
# the exact stage's plan ~20% of the time, bench/results/profile_photo128_v8.json), for progress bars only.
_ENCODE_SHARES = {"network": 0.5, "simulation": 0.25, "plan": 0.25}
# A decoder's step is mostly its network pass (86% on the same crop).
_DECODE_NETWORK_SHARE = 0.75


# The U-Net's share of an encode's time, for estimates: 45%, 46% and 37% on 128-, 256- and 512-pixel photo crops
# (BENCHMARKS.md, "Where a photo's encode goes"); the smallest, as larger images take longer per pixel.  A
# decode is mostly network passes (86% on the 128-pixel crop).
_ENCODE_NETWORK_TIME_SHARE = 0.37
_DECODE_NETWORK_TIME_SHARE = 0.85


def estimate_seconds(model, height: int, width: int, mode: str, steps: int = CodecConfig.steps, decode: bool = False,
                     threads: int = CodecConfig.threads, sample_tiles: int = 4) -> float:
    """Roughly how long encoding (``decode``: decoding whole) an image of this size takes here, in seconds.

    Times one pass of the stream's U-Net over a few tiles (after one pass to warm it up), and scales it by the
    passes the codec runs (about one per step) and the network's measured share of the codec's time.  Large
    images take longer per pixel than the crops the shares come from, so this is a lower estimate there.
    """
    layout = TileLayout(height, width, mode)
    net = EXACT.model(model)
    n = min(layout.num_tiles, sample_tiles)
    x = torch.zeros((n,) + tuple(layout.shape[1:]))
    t = torch.full((n,), model.diffusion.num_steps // 2, dtype=torch.long)
    with torch_threads(threads):  # the encoder's torch threads (CodecConfig.threads)
        net(x, t)  # the first pass prepares the kernels' weight layouts for this shape
        start = time.perf_counter()
        net(x, t)
        per_tile = (time.perf_counter() - start) / n
    share = _DECODE_NETWORK_TIME_SHARE if decode else _ENCODE_NETWORK_TIME_SHARE
    return per_tile * layout.num_tiles * (steps + 1) / share


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
        # ~2 bytes of table per point (4 before format 8): keep the table near 0.5-1% of the payload, never below 5.
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



# --------------------------------------------------------------------------- the encoder


def encode(
    pixels: np.ndarray,
    mode: str,
    model,
    config: CodecConfig = CodecConfig(),
    on_step: Callable[[float], None] | None = None,
) -> EncodeResult:
    """Encode uint8 (H, W, C) pixels into a .dfc stream (Algorithm 3).

    ``on_step`` is told the work done, in steps of the chain: ``config.steps + 1`` in all (the last one is the exact
    stage), reported in parts of a step as they finish (a network batch, the channel simulation, the plan).

    Pass 1 (:func:`_run_chain`) channel-simulates the chain, measuring at each state the stream so far and
    the exact stage from there, and stops past the cheapest; :func:`_choose` picks the state the exact stage
    starts from and its kind; pass 2 (:func:`_write`) writes the stream's stages on a
    :class:`~diffcodec.coders.Writer`, and reads what a decoder shows inside the exact stage back with the
    decoder's own :class:`~diffcodec.coders.Reader`; :func:`_file` makes the truncation points and the file.
    """
    layout = TileLayout(pixels.shape[0], pixels.shape[1], mode)
    planes = exact.ExactLayout(layout)
    if config.exact_method == "learned" and not exact.learned_available(planes, model.context):
        raise DiffcodecError("the learned exact stage needs a model with a context network and a colour image (RGB or RGBA)")
    if config.exact_method == "coarse" and not exact.coarse_available(planes, model.coarse):
        raise DiffcodecError("the coarse-to-fine exact stage needs a model with a coarse-to-fine network and a colour "
                             "image (RGB or RGBA)")
    chain = Chain(model, layout, config.steps, config.chunk_bits, config.batch_size, config.spacing, numerics=EXACT)
    image = _Image(chain, pixels)
    progress = _Progress(on_step, chain.num_steps + 1)
    with torch_threads(config.threads):  # versions 5–6 compute the stream the same on any count; the search's float networks do not
        search = _run_chain(chain, image, config, progress)
        progress(chain.num_steps - len(search.symbols))  # steps past the stopping point are never simulated: a bar completes
        stop, plan, stop_pred = _choose(chain, image, search, config, progress.share(0.5))
        written = _write(chain, image, search, stop, plan, stop_pred, config.partial_points)
        progress(0.25)
        previews = []
        for done, _ in written.partials:
            previews.append(_preview(written, done))
            progress(0.25 / len(written.partials))
        progress.finish()
    return _file(chain, image, search, written, previews, config)


class _Image:
    """The image as the encoder's stages see it."""

    def __init__(self, chain: Chain, pixels: np.ndarray):
        layout = chain.layout
        tiles = layout.split(pixels)
        self.pixels = pixels
        self.x0 = chain.x0_from_pixels(tiles)
        self.planes = chain.planes.planes(tiles.reshape(-1))  # per plane (H, W, c) uint8: the exact stage's truth
        self.exact_symbols = tiles.reshape(-1)[layout.lossless_mask().reshape(-1)].astype(np.int32)  # the exact image's check
        self.layout = layout

    def rmse(self, tiles_u8: np.ndarray) -> float:
        """RMSE on the 0–255 scale of the image these tiles show."""
        recon = self.layout.merge(tiles_u8)
        return float(np.sqrt(np.mean((recon.astype(np.float64) - self.pixels.astype(np.float64)) ** 2)))


class _Predictions:
    """p_θ at the states of pass 1.  Only the latest and the cheapest state's are kept: a prediction is ~100 MB per
    megapixel, one per step would not fit in memory for large images.  Any other is recomputed (the same state
    through the same network gives the same prediction), and counted in ``evaluations``."""

    def __init__(self, chain: Chain, states: list[np.ndarray], kept: dict[int, dict], evaluations: int):
        self.chain, self.states, self.kept, self.evaluations = chain, states, kept, evaluations

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        if step not in self.kept:
            self.kept[step] = self.chain.predict(self.states[step].astype(np.float64), self.chain.timeline.index_of_step(step))
            self.evaluations += 1
        return self.kept[step]

    def only(self, step: int) -> dict[str, np.ndarray]:
        """The prediction at ``step``, forgetting the others."""
        pred = self(step)
        self.kept = {step: pred}
        return pred


@dataclass
class _Search:
    """What pass 1 measured along the chain, state by state (index: the step that produced the state)."""

    symbols: list[StepSymbols]  # what each step sends
    states: list[np.ndarray]  # the state after each step, float32 as both sides hold it
    reports: list[StepReport]  # t, KL so far, the mean reconstruction's RMSE
    plans: list[exact.ExactPlan]  # the exact stage from each state, method bit included
    prefix_bits: list[int]  # the stream's bits after each step
    predictions: _Predictions
    forced_stop: int | None  # --exact-from-t's step


def _run_chain(chain: Chain, image: _Image, config: CodecConfig, progress: _Progress) -> _Search:
    """Pass 1: channel-simulate the chain, measuring each state's stream so far and exact stage from there.

    A live coder measures each step's real bits; "auto" measures the linear exact stage (the learned one is
    tried on the best states in :func:`_choose`).  The chain runs on until prefix + exact stage exceeds its best
    by STOP_TOLERANCE, or by SKIP_TOLERANCE when the next step would carry over 1% of that best in KL (the last,
    expensive steps, most likely simulated only to be discarded).
    """
    tl, d = chain.timeline, chain.diffusion
    forced = None if config.exact_from_t is None else tl.step_at_or_above(max(1, config.exact_from_t))
    kind = ExactKind.LEARNED if config.exact_method == "learned" else ExactKind.LINEAR
    live = Writer(constriction.stream.queue.RangeEncoder())
    profile = StreamProfile()  # the version this encoder writes
    code = step_code(profile, chain)
    rng = np.random.default_rng([STREAM_SEED, chain.layout.height, chain.layout.width])  # private PFR arrivals; files are reproducible
    search = _Search([], [], [], [], [], None, forced)
    x0, r = image.x0, chain.real_idx
    x = np.zeros_like(x0)
    pred, best_pred, best_step, best_total, kl_total, past_best = None, None, -1, math.inf, 0.0, False
    for step in range(tl.num_steps):
        index = tl.index_of_step(step)
        mu_p, sd_p = chain.step_prior(step, pred)
        if step == 0:  # q(x_T | x_0)
            mu_q = d.sqrt_alphas_cumprod[index] * x0
            sd_q = np.full_like(x0, math.sqrt(1.0 - d.alphas_cumprod[index]))
        else:  # q(x_{t−1} | x_t, x_0), Eq. 7
            c1, c2 = d.posterior_mean_coef1[index + 1], d.posterior_mean_coef2[index + 1]
            mu_q = c1 * x0 + c2 * x
            sd_q = np.full_like(x0, math.sqrt(d.posterior_variance[index + 1]))
            if past_best and forced is None and kl_nats(mu_q[r], sd_q[r], mu_p[r], sd_p[r]).sum() / _LN2 > 0.01 * best_total:
                break  # an expensive step, most likely simulated only to be discarded
        if step == 0 and profile.shared_x_T:  # x_T from the shared randomness, in no bits
            symbols, kl_bits = SHARED_X_T, float(kl_nats(mu_q[r], sd_q[r], mu_p[r], sd_p[r]).sum() / _LN2)
            x = chain.state_after(step, symbols, mu_p, sd_p)
            live.shared_step(symbols)
        else:
            symbols, kl_bits, x = _simulate_step(chain, config, code, step, rng, mu_q, sd_q, mu_p, sd_p)
            live.step(code, step, symbols, len(r))
        progress(_ENCODE_SHARES["simulation"])
        kl_total += kl_bits
        chain.on_batch = progress.share(_ENCODE_SHARES["network"])
        try:
            pred = chain.predict(x, index)
        finally:
            chain.on_batch = None
        search.symbols.append(symbols)
        search.states.append(x.astype(np.float32))
        search.plans.append(_plan(chain, image, kind, pred, x, index))
        search.prefix_bits.append(32 * live.step_words[-1])
        search.reports.append(StepReport(t=tl.paper_t_of_step(step), bits=0, kl_bits=kl_total, chunks=symbols.chunks,
                                         rmse=image.rmse(chain.pixels_from_x0(mean_image(chain, pred["pred_xstart"], index)))))
        progress(_ENCODE_SHARES["plan"])
        total = search.prefix_bits[-1] + search.plans[-1].bits
        if total < best_total:
            best_total, best_pred, best_step = total, pred, step
        if forced is not None:
            if step == forced:
                break
        elif total > STOP_TOLERANCE * best_total and step >= 2:
            break  # past the cheapest stopping point: later steps only cost more
        past_best = total > SKIP_TOLERANCE * best_total and step >= 2
    search.predictions = _Predictions(chain, search.states, {best_step: best_pred, len(search.states) - 1: pred},
                                      evaluations=len(search.states))
    return search


def _simulate_step(chain: Chain, config: CodecConfig, code, step: int, rng, mu_q, sd_q, mu_p, sd_p
                   ) -> tuple[StepSymbols, float, np.ndarray]:
    """Channel-simulate one step over all real dimensions: its symbols, its KL in bits and the decoder's state."""
    r = chain.real_idx
    kl_dims = kl_nats(mu_q[r], sd_q[r], mu_p[r], sd_p[r]) / _LN2
    # A chunk holds at least one dimension, however large its KL.
    level, n_chunks, cls = code.level_for(step, float(kl_dims.sum()), len(r))
    parts = chain.chunks(step, n_chunks)
    keys, coeffs, counts = [], [], []
    for j, dims in enumerate(parts):
        chunk_kl = float(kl_nats(mu_q[dims], sd_q[dims], mu_p[dims], sd_p[dims]).sum() / _LN2)
        keys.append(chain.chunk_key(step, j))
        target = mu_p[dims] + config.target_gain * (mu_q[dims] - mu_p[dims])
        coeffs.append(log_weight_coefficients(target, sd_q[dims], mu_p[dims], sd_p[dims]))
        counts.append(1 << min(config.max_candidate_bits, max(0, math.ceil(chunk_kl)) + config.extra_candidate_bits))
    ks = encode_chunks(keys, coeffs, counts, rng, workers=config.search_threads or available_cores())
    symbols = StepSymbols(level, n_chunks, cls, ks)
    return symbols, float(kl_dims.sum()), chain.state_after(step, symbols, mu_p, sd_p, parts)


def _plan(chain: Chain, image: _Image, kind: ExactKind, pred: dict[str, np.ndarray], x: np.ndarray, index: int
          ) -> exact.ExactPlan:
    """The exact stage of ``kind`` from the state x (chain index ``index``), its method bit included.

    Runs the float "planning" networks (``Chain.exact_context``): a plan only estimates costs.
    """
    plan = exact.plan_stage(kind, chain.exact_context(kind, pred, x, index, planning=True), image.planes)
    return dataclasses.replace(plan, bits=plan.bits + 1) if kind == ExactKind.LINEAR else plan


def _choose(chain: Chain, image: _Image, search: _Search, config: CodecConfig,
            on_part: Callable[[float], None] = lambda fraction: None) -> tuple[int, exact.ExactPlan, dict[str, np.ndarray]]:
    """Where the chain stops (a step of pass 1), the exact stage written there, and p_θ at that state.

    Pass 1 measured the linear stage ("learned": the learned one) at every state.  The learned stage saves a few %
    of the exact stage, so it can only win near the linear optimum: "auto" tries it on the few states closest to it
    (the context network costs ~6 linear plans).  The coarse-to-fine stage is planned at the chosen state only (it
    costs twice the learned stage's network passes), and "auto" writes it there on small images
    (``coarse_max_pixels``) or within ``coarse_margin``.
    """
    plans = list(search.plans)
    tl = chain.timeline
    try_learned = config.exact_method in ("auto", "coarse") and exact.learned_available(chain.planes, chain.model.context)

    def with_learned(step: int) -> exact.ExactPlan:
        """The cheaper of pass 1's plan at ``step`` and the learned stage there."""
        learned = _plan(chain, image, ExactKind.LEARNED, search.predictions(step), search.states[step].astype(np.float64),
                        tl.index_of_step(step))
        return min(plans[step], learned, key=lambda p: p.bits)

    if search.forced_stop is None:
        totals = [b + p.bits for b, p in zip(search.prefix_bits, plans)]
        if try_learned:
            best = min(totals)
            near = sorted((t, s) for s, t in enumerate(totals) if t <= config.learned_margin * best)[: config.learned_candidates]
            for _, s in near:
                plans[s] = with_learned(s)
                totals[s] = search.prefix_bits[s] + plans[s].bits
                on_part(1 / len(near))  # each costs a context network over the image: minutes on a photo
        stop = int(np.argmin(totals))
    else:
        stop = min(search.forced_stop, len(search.states) - 1)
        if try_learned:
            plans[stop] = with_learned(stop)
    plan = plans[stop]
    stop_pred = search.predictions.only(stop)
    small = chain.layout.height * chain.layout.width <= config.coarse_max_pixels
    try_coarse = config.exact_method == "coarse" or (config.exact_method == "auto" and (small or config.coarse_margin > 1.0))
    if try_coarse and exact.coarse_available(chain.planes, chain.model.coarse):
        coarse = _plan(chain, image, ExactKind.COARSE, stop_pred, search.states[stop].astype(np.float64), tl.index_of_step(stop))
        if config.exact_method == "coarse" or small or coarse.bits <= config.coarse_margin * plan.bits:
            plan = coarse
    return stop, plan, stop_pred


@dataclass
class _Written:
    """Pass 2: the stream written, and what is needed to read parts of it back."""

    words: np.ndarray
    writer: Writer
    state: EncodingState
    stop: int
    plan: exact.ExactPlan
    partials: list[tuple[int, int]]  # (symbols, words) after each exact-stage stage that may get a partial point


def _write(chain: Chain, image: _Image, search: _Search, stop: int, plan: exact.ExactPlan, stop_pred: dict,
           partial_points: bool) -> _Written:
    """Pass 2: the stream's stages written on a Writer: the chain's steps 0..stop, then the exact stage as planned."""
    timeline = chain.timeline.stopping_at(stop)
    # The payload does not depend on whether the table gets partial points (FLAG_PARTIAL_POINTS): chosen later.
    profile = StreamProfile.for_writing(partial_points=False, coarse_to_fine=plan.kind == ExactKind.COARSE)
    state = EncodingState(chain, profile, timeline, search.symbols, search.states[stop].astype(np.float64), stop_pred, plan,
                          image.planes, outputs=[])
    writer = Writer(constriction.stream.queue.RangeEncoder(), plan)
    run(stages(timeline), writer, state)
    partials = writer.stage_marks[:-1] if partial_points else []  # the last stage ends at the exact image
    return _Written(writer.coder.get_compressed(), writer, state, stop, plan, partials)


def _preview(written: _Written, done: int) -> np.ndarray:
    """What a decoder shows when the file ends after ``done`` symbols of the exact stage: flat uint8 tiles.

    The decoder's own loop on the words written (from where the exact stage starts), with the network outputs
    the encoder computed for the stages read whole: their inputs are the encoder's.
    """
    w, s = written, written.state
    decoder = constriction.stream.queue.RangeDecoder(w.words)
    decoder.seek(*w.writer.exact_start)
    replay = EncodingState(s.chain, s.profile, s.timeline, s.symbols, s.stop_state, s.stop_pred, s.plan, s.pixel_planes,
                           outputs=s.outputs, replay=True)
    run(stages(s.timeline)[-1:], Reader(decoder, budget=done), replay)
    return replay.exact.flat()


@dataclass
class _Candidate:
    """A place the file may have a truncation point: after a chain step, inside the exact stage, or its end."""

    position: int  # the header's chain position of the state there (0 inside and after the exact stage)
    end_word: int  # the words a decoder needs to get there
    checked: np.ndarray  # what the point's check covers: the state, the symbols decoded, or the exact image's subpixels
    subpixels: int = 0  # a partial point: the exact stage's symbols decoded there

    def point(self, words: np.ndarray | None = None, implied: bool = False) -> TruncationPoint:
        """Its truncation point (check 0 without ``words``: for sizes, and in version 8, whose points have no check;
        and at version 7's implied first point)."""
        check = 0 if words is None or implied else state_check(words, self.end_word, self.checked)
        return TruncationPoint(t=self.position, end_word=self.end_word, check=check, subpixels=self.subpixels)


# The encoder gives each lossy prefix of a stream with at most this many chunk indices the fewest words it decodes
# from: the range decoder's look-ahead word is rarely needed (32 bits of every small cut file, a tenth of one at
# 0.1 bits/dim). Each try replays the steps' entropy coding (no network), so a larger stream, where a word does
# not matter, keeps the look-ahead word.
TRIM_MAX_CHUNKS = 20_000


def _fewest_words(words: np.ndarray, symbols: list[StepSymbols], steps: int, end_word: int, chain: Chain) -> int:
    """The fewest payload words (at most ``end_word``, which decodes) from which steps 0 … ``steps`` − 1 decode to
    ``symbols``, the decoder reading zeros beyond them.

    Whether a prefix decodes right only grows with its length (the zero-padded value grows toward the stream's,
    which lies in the interval of the symbols), so a bisection finds the fewest.
    """
    profile = StreamProfile()

    def decodes(n: int) -> bool:
        reader = Reader(constriction.stream.queue.RangeDecoder(words[:n] if n else np.zeros(1, dtype=np.uint32)))
        code, max_chunks = step_code(profile, chain), len(chain.real_idx)
        try:
            for s in range(steps):
                got = reader.shared_step(SHARED_X_T) if s == 0 and profile.shared_x_T else reader.step(code, s, None, max_chunks)
                if got != symbols[s]:
                    return False
        except (ValueError, AssertionError, StreamMismatchError):
            return False
        return True

    lo, hi = max(0, end_word - 3) - 1, end_word  # decodes(hi); one or two words fewer usually do
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decodes(mid) else (mid, hi)
    return hi


def _file(chain: Chain, image: _Image, search: _Search, written: _Written, previews: list[np.ndarray],
          config: CodecConfig) -> EncodeResult:
    """The truncation points, the file, and a report for each place it may be cut."""
    w, stop, plan = written, written.stop, written.plan
    words, timeline, real, layout = w.words, w.state.timeline, chain.real, chain.layout
    kind = plan.kind
    # A range decoder reads one word ahead: a prefix needs the word after the stage's last one; a prefix of no
    # words (version 6's x_T) needs none.
    ahead = lambda m: min(m + 1, len(words)) if m else 0  # noqa: E731
    exact_seq = exact.coding_order(w.state.stage_list, image.planes)
    candidates = ([_Candidate(timeline.position_of_step(s), ahead(m), search.states[s][real]) for s, m in enumerate(w.writer.step_words)]
                  + [_Candidate(0, ahead(m), exact_seq[:done].astype(np.float32), done) for done, m in w.partials]
                  + [_Candidate(0, len(words), image.exact_symbols.astype(np.float32))])
    if sum(sym.chunks for sym in search.symbols[: stop + 1]) <= TRIM_MAX_CHUNKS:
        for s, c in enumerate(candidates[: stop + 1]):
            if c.end_word:
                c.end_word = _fewest_words(words, search.symbols, s + 1, c.end_word, chain)
    for prev, c in zip(candidates, candidates[1:]):
        c.end_word = max(c.end_word, prev.end_word)  # each is the fewest for itself; kept in order whatever happens
    reports = search.reports[: stop + 1]
    point_rows = _choose_points([c.end_word for c in candidates], config.points, lossy=stop + 1, ts=[r.t for r in reports],
                                ratio=config.point_t_ratio)
    partial = any(candidates[s].subpixels for s in point_rows)
    profile = StreamProfile.for_writing(partial_points=partial, coarse_to_fine=kind == ExactKind.COARSE)
    if profile.first_point_implied:  # x_S's point costs nothing: every file has it
        point_rows = sorted(set(point_rows) | {0})
    header = StreamHeader(
        model_id=profile.model_identity(chain.model), width=layout.width, height=layout.height, mode=layout.mode,
        num_steps=timeline.num_steps, chunk_bits=chain.chunk_bits, threads=config.threads if profile.threads_stored else 1,
        schedule_steps=timeline.schedule_steps, exact_from=timeline.exact_from, spacing=timeline.spacing,
        flags=profile.flags, version=profile.version,
    )
    kl_prefix = reports[-1].kl_bits
    costs = np.cumsum(plan.all_stage_bits())
    for j, ((done, _), flat) in enumerate(zip(w.partials, previews)):
        reports.append(StepReport(t=0, bits=0, kl_bits=kl_prefix + float(costs[j]), partial=profile.partial_share(header, done, kind),
                                  rmse=image.rmse(layout.fill_replicated(flat.reshape(layout.shape)))))
    reports.append(StepReport(t=0, bits=0, kl_bits=kl_prefix + plan.bits, rmse=0.0))

    implied = profile.first_point_implied
    # Version 8's points carry no check (the container checks the payload once): the words stay out of them.
    checked_words = words if profile.point_checks else None
    points = tuple(candidates[s].point(checked_words, implied=implied and s == 0) for s in point_rows)
    dfc = DfcFile(header=header, points=points, words=words, image_crc32=zlib.crc32(image.pixels.tobytes()))
    data = encode_file(dfc)
    # Each row's rate is the size of the file truncated right after it (container.keep_points): the header, a
    # table listing that point alone, its words; the last row's is the whole file's.
    partial_header = dataclasses.replace(header, flags=header.flags | FLAG_PARTIAL_POINTS)
    for s, (report, c) in enumerate(zip(reports, candidates)):
        cut_header = partial_header if c.subpixels else header
        cut_points = (candidates[0].point(),) * (implied and s > 0) + (c.point(),)
        report.bits = 8 * (head_size(cut_header, cut_points, complete=False) + 4 * c.end_word)
        report.payload_bits = 32 * c.end_word
        report.point = s in point_rows
    reports[-1].bits = 8 * len(data)
    return EncodeResult(data=data, file=dfc, steps=reports, num_dims=int(image.pixels.size),
                        network_evaluations=search.predictions.evaluations, exact_method=kind.name.lower())


# --------------------------------------------------------------------------- the decoder

RECONSTRUCTIONS = ("mean", "sample", "flow")


def decode(
    data: bytes | DfcFile,
    model,
    stop_at_t: int = 0,
    reconstruct: str = "mean",
    seed: int = 0,
    on_step: Callable[[float], None] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    batch_size: int = 64,
) -> DecodeResult:
    """Decode a .dfc stream (Algorithm 4) down to the last coded state with t ≥ ``stop_at_t`` that the data holds.

    ``on_step`` is told the work done in chain steps (one per coded state decoded, and one for the exact stage),
    in parts of a step as the network's batches finish.

    A file whose header claims more than ``max_pixels`` pixels (None: no limit) is refused with
    :class:`ImageTooLargeError` before anything is allocated for it.  ``batch_size``: tiles per network
    call (formats 5 and 6 decode the same with any; versions 1–4 need the encoder's, the default).

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
        result = _decode(dfc, model, stop_at_t, reconstruct, seed, on_step, batch_size)
    except AssertionError:
        # constriction asserts when corrupt data decodes to a symbol the model cannot produce.
        raise StreamMismatchError("the stream is corrupt (the entropy decoder met an impossible symbol)") from None
    if dfc.unchecked:
        result.notes.append(UNCHECKED_NOTE)
    return result


def _decode(dfc: DfcFile, model, stop_at_t: int, reconstruct: str, seed: int, on_step, batch_size: int = 64) -> DecodeResult:
    from .reconstruct import reconstruct_from

    h = dfc.header
    profile, timeline = h.profile, h.timeline
    model = profile.numerics.model(model)  # the integer networks from version 5 on
    identity = profile.model_identity(model)
    if h.model_id != identity:
        raise DiffcodecError(
            f"stream was encoded with model {h.model_id.hex()}, but the loaded model is {identity.hex()}; "
            "pass the encoder's checkpoint with --model"
        )
    if reconstruct not in RECONSTRUCTIONS:
        raise DiffcodecError(f"unknown reconstruction {reconstruct!r} (mean, sample or flow)")
    if h.schedule_steps != model.diffusion.num_steps:
        raise DiffcodecError(f"stream uses a {h.schedule_steps}-step schedule, the model has {model.diffusion.num_steps}")
    layout = TileLayout(h.height, h.width, h.mode)
    chain = Chain(model, layout, h.num_steps, h.chunk_bits, batch_size, spacing=h.spacing, numerics=profile.numerics)
    points = {timeline.step_of_position(p.t): p for p in dfc.points if not p.partial}
    partials = [p for p in dfc.points if p.partial]
    # A file that ends at a partial point reaches the exact stage, in part.
    last_available = timeline.exact_step if dfc.points[-1].t == 0 else max(points)
    # The last coded state with t ≥ stop_at_t (the rule `truncate` uses); stop_at_t = 0 is the exact image.
    wanted = timeline.step_at_or_above(stop_at_t)
    target = min(wanted, last_available)
    notes = []
    if target < wanted:
        notes.append(f"stream ends early: decoded to t={timeline.paper_t_of_step(target)}, its last whole truncation point")

    words = np.asarray(dfc.words, dtype=np.uint32)
    limit = partials[-1].subpixels if partials and not dfc.complete else math.inf  # a partial point: the symbols it reaches

    # One unit per coded state, one for the exact stage: each state's network pass reports its batches as they
    # finish and the state the rest (the pass that predicts from a state comes before the next state).
    progress = _Progress(on_step, min(target, timeline.last_step) + 1 + (target == timeline.exact_step))
    chain.on_batch = progress.share(_DECODE_NETWORK_SHARE)

    def reached(step: int, x: np.ndarray) -> None:
        if profile.point_checks and step in points and not (step == 0 and profile.first_point_implied):  # x_S's has none
            _verify(words, points[step], x.astype(np.float32)[chain.real], timeline.paper_t_of_step(step))
        progress(1 - _DECODE_NETWORK_SHARE)

    coder = Reader(constriction.stream.queue.RangeDecoder(words if len(words) else np.zeros(1, dtype=np.uint32)), limit)
    state = DecodingState(chain, profile, timeline, on_state=reached)
    # Versions 1–4 must run the network on the encoder's thread count; version 5 is exact on any, and
    # takes the encoder's as a default; version 6 stores none and runs on torch's (set it with torch.set_num_threads
    # or OMP_NUM_THREADS).
    threads = torch_threads(h.threads) if profile.threads_stored else contextlib.nullcontext()
    with threads:
        run(stages(timeline)[: target + 1], coder, state)
        chain.on_batch = None  # reconstruction's passes ("sample" runs one per remaining step) are not the bar's
        if target < timeline.exact_step:
            index = timeline.index_of_step(target)
            x0_hat = reconstruct_from(chain, state.x, index, reconstruct, seed)
            progress.finish()
            return DecodeResult(pixels=layout.merge(chain.pixels_from_x0(x0_hat)), mode=h.mode, t=chain.paper_t(index),
                                complete=False, notes=notes)

    flat = state.exact.flat()
    if partials and profile.point_checks:
        seq = exact.coding_order(state.stage_list, state.exact.x)
        for p in partials:
            _verify(words, p, seq[: p.subpixels].astype(np.float32), 0)
    pixels = layout.merge(layout.fill_replicated(flat.reshape(layout.shape)))
    progress.finish()
    if not dfc.complete:
        share = profile.partial_share(h, limit, state.kind)
        what = "of its symbols are decoded (colour bins first)" if state.kind == ExactKind.COARSE else "of the subpixels are exact"
        notes.append(f"stream ends inside the exact stage: {100 * share:.0f}% {what}, the rest predicted")
        return DecodeResult(pixels=pixels, mode=h.mode, t=0, complete=False, notes=notes, partial=share)
    if profile.point_checks:
        _verify(words, points[target], flat[layout.lossless_mask().reshape(-1)].astype(np.float32), 0)
    if dfc.image_crc32 is not None and zlib.crc32(pixels.tobytes()) != dfc.image_crc32:
        raise StreamMismatchError("decoded image fails its checksum: the stream is corrupt, or this machine decodes "
                                  "differently from the encoder's")
    return DecodeResult(pixels=pixels, mode=h.mode, t=0, complete=True, notes=notes)


def _verify(words: np.ndarray, point: TruncationPoint, state: np.ndarray, t: int) -> None:
    if state_check(words, point.end_word, state) != point.check:
        raise StreamMismatchError(
            f"check failed at t={t}: the stream is corrupt, or this machine computes the model differently "
            "from the encoder's (model, thread count, CPU)"
        )
