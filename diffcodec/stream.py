"""The stream, written once: an ordered list of typed stages, coded by one loop.

A .dfc payload is one range-coder stream (docs/format.md; docs/codec.md, "Stream order"):

    ChainStep(0), ChainStep(1), … ChainStep(last_step), ExactStep()

Step s codes the state at chain position S − s (x_T first) as a level and one channel-simulation index per
chunk (version 6 codes nothing for x_T: :data:`SHARED_X_T`); its Gaussian p_θ(x | previous state) comes from the state decoded before it (``Chain.step_prior``).
:class:`ExactStep` codes x_0: a method bit (versions 4–5), then the stages of the kind it selects
(:func:`diffcodec.exact.stages`), each computing its symbol model from what is decoded before it.

:func:`run` codes a prefix of :func:`stages` on a coder (:mod:`diffcodec.coders`: the encoder's ``Writer``,
the decoder's ``Reader``) against a *state*, what that side holds: the decoder's :class:`DecodingState`
rebuilds each state from the symbols; the encoder's :class:`EncodingState` already knows them from its
search, and reads the stream back through the decoder's ``Reader`` to preview what a cut file shows.
What a version changes (step code, numerics, exact stages) comes from the header's
:class:`~diffcodec.profile.StreamProfile`, the time coordinates from its :class:`~diffcodec.timeline.Timeline`.
"""

from __future__ import annotations

import binascii
import math
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from . import exact
from .channel import decode_chunks
from .coders import StepSymbols, StreamMismatchError  # noqa: F401  (StreamMismatchError: re-exported)
from .diffusion import GaussianDiffusion, spaced_timesteps
from .entropy import pixel_gaussian_params
from .format import CHUNK_KEY, METHOD_BITS, PADDING_KEY, STATE_CHECK_INIT, STREAM_SEED, ExactKind
from .numerics import FLOAT, Numerics
from .profile import StreamProfile
from .rng import raw_uint64, stream_key
from .tiling import TileLayout
from .timeline import Timeline


def state_check(words: np.ndarray, end_word: int, state: np.ndarray) -> int:
    """16-bit check of the data prefix and the decoder's state at a truncation point."""
    crc = binascii.crc_hqx(words[:end_word].astype("<u4").tobytes(), STATE_CHECK_INIT)
    return binascii.crc_hqx(state.astype("<f4").tobytes(), crc)


# Chain.predict keeps its latest predictions within this many bytes (states included): ~100 KB each for a 32×32
# image, so a whole chain; on large images the few latest (a prediction is ~100 MB per megapixel).
PREDICTION_CACHE_BYTES = 64 << 20


class Chain:
    """What encoder and decoder compute identically: the chain, the layout and p_θ at each state."""

    def __init__(self, model, layout: TileLayout, steps: int, chunk_bits: int, batch_size: int = 64, spacing: str = "uniform",
                 numerics: Numerics = FLOAT):
        self.num = numerics  # how this file's version computes what the stream depends on
        self.model = numerics.model(model)  # the integer networks in version 5
        self.layout = layout
        self.chunk_bits = chunk_bits
        self.batch_size = batch_size
        T = self.model.diffusion.num_steps
        self.timeline = Timeline(T, steps, spacing)
        self.diffusion: GaussianDiffusion = self.model.diffusion.respace(spaced_timesteps(T, steps, spacing))
        self.real = layout.real_mask().reshape(-1)
        self.pad_idx = np.flatnonzero(~self.real)
        self.real_idx = np.flatnonzero(self.real)
        self._predictions: list[tuple[int, np.ndarray, dict[str, np.ndarray]]] = []  # (index, state, prediction)
        self._prediction_bytes = 0
        # Told each network batch's share of a pass (tiles done / tiles) as it finishes: a pass over a photo takes
        # tens of seconds, and progress bars should move within it.  Set by the encoder and decoder while they report.
        self.on_batch: Callable[[float], None] | None = None

    @property
    def num_steps(self) -> int:
        return self.diffusion.num_steps

    @cached_property
    def planes(self) -> exact.ExactLayout:
        """The image's planes as the exact stage codes them."""
        return exact.ExactLayout(self.layout)

    def paper_t(self, index: int) -> int:
        """Paper timestep (1..T) of the state at chain index ``index``."""
        return self.timeline.paper_t_of_index(index)

    def predict(self, x: np.ndarray, index: int) -> dict[str, np.ndarray]:
        """p_θ(x_{i−1} | x_i) mean and log-variance and x̂_0 at chain index ``index``, float64, flat (read-only).

        The latest predictions are kept (up to :data:`PREDICTION_CACHE_BYTES`): the encoder asks again for states of
        its first pass when it tries the learned exact stage on them, and the same state through the same network
        gives the same prediction, so a kept one is returned instead of running the network again.
        """
        for i, kept_x, pred in self._predictions:
            if i == index and np.array_equal(kept_x, x):
                return dict(pred)
        pred = self._network_predict(x, index)
        for v in pred.values():
            v.flags.writeable = False  # shared with the cache: a caller that wrote into one would corrupt it
        size = x.nbytes + sum(v.nbytes for v in pred.values())
        if size <= PREDICTION_CACHE_BYTES:
            self._predictions.append((index, np.array(x, copy=True), pred))
            self._prediction_bytes += size
            while self._prediction_bytes > PREDICTION_CACHE_BYTES:  # forget the oldest
                _, old_x, old = self._predictions.pop(0)
                self._prediction_bytes -= old_x.nbytes + sum(v.nbytes for v in old.values())
        return dict(pred)

    def _network_predict(self, x: np.ndarray, index: int) -> dict[str, np.ndarray]:
        eps_parts, var_parts = [], []
        t_orig = int(self.diffusion.timesteps[index])
        x_t = torch.from_numpy(x.reshape(self.layout.shape).astype(np.float32))
        for start in range(0, len(x_t), self.batch_size):
            xb = x_t[start : start + self.batch_size]
            eps, var_out = self.model(xb, torch.full((len(xb),), t_orig, dtype=torch.long))
            eps_parts.append(eps.cpu())  # the integer networks may run on another device (IntegerModel.to)
            var_parts.append(var_out.cpu() if var_out is not None else None)
            if self.on_batch is not None:
                self.on_batch(len(xb) / len(x_t))
        eps = torch.cat(eps_parts).double()
        var_out = torch.cat(var_parts).double() if var_parts[0] is not None else None
        t = torch.full((len(x_t),), index, dtype=torch.long)
        out = self.diffusion.p_mean_variance(x_t.double(), t, eps, var_out, self.model.variance)
        return {k: v.numpy().reshape(-1) for k, v in out.items()}

    def prior_params(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(np.prod(self.layout.shape))
        return np.zeros(n), np.ones(n)

    def step_prior(self, step: int, pred: dict[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and deviation of p_θ for step ``step``: N(0, I) for x_T, else from the previous state's prediction."""
        if step == 0:
            return self.prior_params()
        return pred["mean"], self.num.exp(0.5 * pred["log_variance"])

    def chunks(self, step: int, count: int) -> list[np.ndarray]:
        """Random partition of the real dimensions into ``count`` chunks (shared randomness, no sorting of floats)."""
        n = len(self.real_idx)
        if count == 1:
            return [self.real_idx]
        raw = raw_uint64(stream_key(STREAM_SEED, step, CHUNK_KEY), 0, n)
        ids = ((raw >> np.uint64(32)) * np.uint64(count)) >> np.uint64(32)
        order = np.argsort(ids, kind="stable")
        bounds = np.cumsum(np.bincount(ids.astype(np.int64), minlength=count))[:-1]
        return [self.real_idx[part] for part in np.split(order, bounds)]

    def chunk_key(self, step: int, chunk: int) -> np.ndarray:
        """The shared-randomness key of a step's chunk (its candidates)."""
        return stream_key(STREAM_SEED, step, chunk + 1)

    def state_after(self, step: int, symbols: StepSymbols, mu_p: np.ndarray, sd_p: np.ndarray,
                    parts: list[np.ndarray] | None = None) -> np.ndarray:
        """The state step ``step`` leads to: each chunk's chosen candidate under p_θ, padding from the prior.

        Float64 values of the float32 state both sides hold.  ``parts``: the step's chunks, if already known.
        """
        x = np.empty(len(mu_p))
        parts = parts or self.chunks(step, symbols.chunks)
        keys = [self.chunk_key(step, j) for j in range(len(parts))]
        eps = decode_chunks(keys, list(symbols.indices), [len(dims) for dims in parts], self.num.normals)
        for dims, e in zip(parts, eps):
            x[dims] = mu_p[dims] + sd_p[dims] * e
        self.fill_padding(x, step, mu_p, sd_p)
        return x.astype(np.float32).astype(np.float64)

    def fill_padding(self, x: np.ndarray, step: int, mu_p: np.ndarray, sd_p: np.ndarray) -> None:
        """Padding follows the prior, from shared randomness: it costs no bits."""
        if len(self.pad_idx):
            eps = self.num.normals(stream_key(STREAM_SEED, step, PADDING_KEY), 0, len(self.pad_idx))
            x[self.pad_idx] = mu_p[self.pad_idx] + sd_p[self.pad_idx] * eps

    def x0_from_pixels(self, tiles_u8: np.ndarray) -> np.ndarray:
        return tiles_u8.reshape(-1).astype(np.float64) / 127.5 - 1.0

    def pixels_from_x0(self, x0_hat: np.ndarray) -> np.ndarray:
        """x̂_0 in [-1, 1] (flat) -> uint8 tiles."""
        v = np.clip(np.round((x0_hat + 1.0) * 127.5), 0, 255).astype(np.uint8)
        return v.reshape(self.layout.shape)

    # ---- the exact stage from a state

    def exact_params(self, pred: dict[str, np.ndarray], index: int, mask: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and base log-variance of the exact stage from the state at chain index ``index`` (flat, masked).

        At index 0 this is Eq. 13's p_θ(x_0 | x_1); above it, x̂_0 with the variance of its noise term.
        """
        if index == 0:
            mean, log_var = pred["mean"], pred["log_variance"]
        else:
            d = self.diffusion
            mean = pred["pred_xstart"]
            log_var = np.full(len(mean), self.num.log((1.0 - d.alphas_cumprod[index]) / d.alphas_cumprod[index]))
        return (mean, log_var) if mask is None else (mean[mask], log_var[mask])

    def context_inputs(self, pred: dict[str, np.ndarray], x: np.ndarray, index: int) -> exact.ContextInputs:
        """The network stages' inputs at the state x (flat, chain index ``index``): x̂_0, x_t/√ᾱ_t, σ_t."""
        abar = float(self.diffusion.alphas_cumprod[index])
        planes = self.planes
        xhat, y = planes.planes(pred["pred_xstart"])[0], planes.planes(x / math.sqrt(abar))[0]  # the colour plane
        sigma = math.sqrt((1.0 - abar) / abar)
        return exact.ContextInputs(xhat=xhat, y=y, sigma=sigma, log_sigma=self.num.log(sigma), exp=self.num.exp)

    def exact_context(self, kind: ExactKind, pred: dict[str, np.ndarray], x: np.ndarray, index: int,
                      planning: bool = False) -> exact.ExactContext:
        """What the exact stage of ``kind`` starts from at the state ``x`` (chain index ``index``).

        ``planning``: the encoder's search runs the float context networks where the chain runs integer ones
        (``IntegerModel.float_model``): a plan only estimates costs, and the decoder never repeats it, while
        what is written, and every preview of what a decoder shows, runs the chain's own networks.  Float
        networks are ~2x faster here (bench/intnet_pass_speed.py).
        """
        planes = self.planes
        if kind == exact.INDEPENDENT:
            return exact.ExactContext(planes, base=self.exact_params(pred, index, self.layout.lossless_mask().reshape(-1)),
                                      numerics=self.num)
        mu, sd = pixel_gaussian_params(*self.exact_params(pred, index), exp=self.num.exp)
        mu, sd = planes.planes(mu), planes.planes(sd)
        if kind == exact.LINEAR:
            return exact.ExactContext(planes, mu, sd)
        model = getattr(self.model, "float_model", self.model) if planning else self.model
        net = model.coarse if kind == exact.COARSE else model.context
        available = exact.coarse_available if kind == exact.COARSE else exact.learned_available
        if not available(planes, net):
            raise StreamMismatchError("the stream's exact stage needs a context network and a colour image")
        return exact.ExactContext(planes, mu, sd, self.context_inputs(pred, x, index), net)


def step_code(profile: StreamProfile, chain: Chain):
    """The code of the chain's steps for one coding pass (fresh for each pass, identical on both sides):
    ``profile.step_code`` for ``chain``'s chunk size, chain and real dimensions (diffcodec/step_code.py)."""
    return profile.step_code(chain.chunk_bits, chain.timeline, len(chain.real_idx))


# --------------------------------------------------------------------------- the stages


# Version 6's x_T: one chunk, its first candidate, i.e. the normals of the shared randomness at (step 0, chunk 0)
# under p(x_T) = N(0, I). KL(q(x_T | x_0) ‖ p(x_T)) is ~1e-6 bits for the shipped schedules, so the state a
# channel simulation would pick is no better than this one, and it costs no bits (versions 1–5 spent ~2 words).
# level and cls are not coded: the step code's state stays as it starts.
SHARED_X_T = StepSymbols(level=0, chunks=1, cls=0, indices=[0])


class ChainStep:
    """Step ``step`` of the chain: the state at chain position S − step, channel-simulated against p_θ."""

    def __init__(self, step: int):
        self.step = step

    def code(self, coder, state) -> None:
        if self.step == 0 and state.profile.shared_x_T:
            symbols = coder.shared_step(SHARED_X_T)
        else:
            symbols = coder.step(state.steps, self.step, state.step_symbols(self.step), len(state.chain.real_idx))
        state.took_step(self.step, symbols)


class ExactStep:
    """The exact stage: its method bit (versions 4–5), then the stages of the kind it selects."""

    def code(self, coder, state) -> None:
        profile = state.profile
        coder.enter_exact()
        method = coder.raw(state.method_bit(), METHOD_BITS) if profile.has_method_bit else None
        kind = profile.exact_kind(method)
        context = state.exact_context(kind)
        stage_list = exact.stages(kind, context.layout, context.net.config.bin_width if kind == exact.COARSE else 0)
        coder.expect_symbols(exact.num_symbols(stage_list))
        exact_state = exact.run(stage_list, coder, state.exact_state(context))
        state.took_exact(kind, stage_list, exact_state)


def stages(timeline: Timeline) -> list:
    """The stream's stages in order: the chain's steps down to ``exact_from``, then the exact stage."""
    return [ChainStep(s) for s in range(timeline.last_step + 1)] + [ExactStep()]


def run(stage_list: list, coder, state):
    """The one loop: each stage codes itself on ``coder`` (write or read) against ``state``."""
    for stage in stage_list:
        stage.code(coder, state)
    return state


# --------------------------------------------------------------------------- the two sides' states


class _State:
    """What both sides' states share: the chain, the profile and the chain's step code; the exact stage's result."""

    def __init__(self, chain: Chain, profile: StreamProfile, timeline: Timeline):
        self.chain, self.profile, self.timeline = chain, profile, timeline
        self.steps = step_code(profile, chain)
        self.kind: ExactKind | None = None
        self.stage_list: list = []
        self.exact: exact.ExactState | None = None  # after the exact stage: its planes

    def took_exact(self, kind: ExactKind, stage_list: list, exact_state: exact.ExactState) -> None:
        self.kind, self.stage_list, self.exact = kind, stage_list, exact_state


class DecodingState(_State):
    """The decoder's side: it rebuilds each state from the step's symbols, running p_θ on the state before.

    ``on_state(step, x)`` is called after each chain step (the decoder verifies its points there).
    """

    def __init__(self, chain: Chain, profile: StreamProfile, timeline: Timeline,
                 on_state: Callable[[int, np.ndarray], None] | None = None):
        super().__init__(chain, profile, timeline)
        self.on_state = on_state
        self.step = -1  # the last step decoded
        self.x = np.zeros(int(np.prod(chain.layout.shape)))
        self._pred: dict[str, np.ndarray] | None = None

    def prediction(self) -> dict[str, np.ndarray]:
        """p_θ at the current state, computed once (only when a later stage needs it)."""
        if self._pred is None:
            self._pred = self.chain.predict(self.x, self.timeline.index_of_step(self.step))
        return self._pred

    def step_symbols(self, step: int) -> None:
        return None  # nothing known: the coder reads them

    def took_step(self, step: int, symbols: StepSymbols) -> None:
        mu_p, sd_p = self.chain.step_prior(step, self.prediction() if step > 0 else None)
        self.x = self.chain.state_after(step, symbols, mu_p, sd_p)
        self.step, self._pred = step, None
        if self.on_state is not None:
            self.on_state(step, self.x)

    def method_bit(self) -> int:
        return 0  # read, not known

    def exact_context(self, kind: ExactKind) -> exact.ExactContext:
        return self.chain.exact_context(kind, self.prediction(), self.x, self.timeline.index_of_step(self.step))

    def exact_state(self, context: exact.ExactContext) -> exact.ExactState:
        return exact.ExactState(context)


class EncodingState(_State):
    """The encoder's side: every state, its symbols, the plan of the exact stage and the image are known.

    Writing, it hands the coder the symbols and records the network stages' outputs in ``outputs``; reading
    back (``replay``, the decoder's ``Reader`` on the words written), it checks that the symbols read are the
    ones written and gives the recorded outputs to the stages whose inputs are the encoder's.
    """

    def __init__(self, chain: Chain, profile: StreamProfile, timeline: Timeline, symbols: list[StepSymbols],
                 stop_state: np.ndarray, stop_pred: dict[str, np.ndarray], plan: exact.ExactPlan,
                 pixel_planes: list[np.ndarray], outputs: list, replay: bool = False):
        super().__init__(chain, profile, timeline)
        self.symbols, self.stop_state, self.stop_pred = symbols, stop_state, stop_pred
        self.plan, self.pixel_planes, self.outputs, self.replay = plan, pixel_planes, outputs, replay

    def step_symbols(self, step: int) -> StepSymbols:
        return self.symbols[step]

    def took_step(self, step: int, symbols: StepSymbols) -> None:
        if symbols != self.symbols[step]:
            raise AssertionError(f"step {step} reads back other symbols than were written")

    def method_bit(self) -> int:
        return self.plan.kind.method

    def exact_context(self, kind: ExactKind) -> exact.ExactContext:
        return self.chain.exact_context(kind, self.stop_pred, self.stop_state, self.timeline.index_of_step(self.timeline.last_step))

    def exact_state(self, context: exact.ExactContext) -> exact.ExactState:
        if self.replay:
            return exact.ExactState(context, outputs=self.outputs)
        return exact.ExactState(context, truth=self.pixel_planes, record=self.outputs)
