"""The two directions of the stream's one loop: :class:`Writer` (encoder) and :class:`Reader` (decoder).

Every stage of the stream (diffcodec/stream.py: the chain's steps; diffcodec/exact.py: the exact stage's
stages) codes itself through one of these, so a stage is written once for both sides: it asks for its
side information and symbols, and gets the encoder's values written or the decoder's read back.
(The exact stage's planner, :class:`diffcodec.exact.Estimator`, is a third coder of the same calls.)

* ``raw(value, bits)``: raw bits (a method bit, a scale index, weights);
* ``step(code, step, symbols, max_chunks)``: chain step ``step``'s level and chunk indices (:class:`StepSymbols`)
  under the stream's step code (:mod:`diffcodec.step_code`);
  ``shared_step(symbols)``: a step that codes nothing (version 6's x_T);
* ``linear_weights(group, state)`` and ``symbols(stage, state)``: an exact-stage group's weights, and a
  stage's scale index and symbols under the Gaussian the stage computes from ``state``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .entropy import decode_raw_bits, encode_raw_bits
from .errors import DiffcodecError
from .format import SCALE_BITS, WEIGHT_BITS


class StreamMismatchError(DiffcodecError):
    """The decoder's state disagrees with the encoder's: corrupt data, or other model/numerics."""


@dataclass
class StepSymbols:
    """What one channel-simulated step sends: its level (how it is split into chunks), the chunks' index
    class and each chunk's index."""

    level: int
    chunks: int
    cls: int
    indices: list[int]


class Writer:
    """Writes the encoder's values into a range encoder, the exact stage with ``plan``'s weights and scales.

    Records where each stage ends: ``step_words`` (the words after each chain step) and ``stage_marks``
    ((symbols written, words) after each exact-stage symbol stage: where a partial point may go); and
    ``exact_start``, the coder's position where the exact stage begins (a decoder may seek there).
    """

    def __init__(self, coder, plan=None, on_stage: Callable[[int], None] | None = None):
        self.coder = coder
        self._scales = iter(plan.all_scales() if plan is not None else ())
        self._weights = iter(plan.all_weights() if plan is not None else ())
        self.on_stage = on_stage
        self.step_words: list[int] = []
        self.stage_marks: list[tuple[int, int]] = []
        self.exact_start = None

    def raw(self, value: int, bits: int) -> int:
        encode_raw_bits(self.coder, value, bits)
        return value

    def step(self, code, step: int, symbols: StepSymbols, max_chunks: int) -> StepSymbols:
        code.encode(self.coder, step, symbols)
        self.step_words.append(self.coder.num_words())
        return symbols

    def shared_step(self, symbols: StepSymbols) -> StepSymbols:
        """A step taken from the shared randomness alone (version 6's x_T): nothing is written."""
        self.step_words.append(self.coder.num_words())
        return symbols

    def enter_exact(self) -> None:
        self.exact_start = self.coder.pos()

    def expect_symbols(self, symbols: int) -> None:
        pass

    def linear_weights(self, group, state) -> None:
        weights = next(self._weights)
        self.raw(int(weights is not None), 1)
        for q in weights or ():
            for v in q:
                self.raw(v, WEIGHT_BITS)
        state.weights[group.group] = weights if weights is not None else group.layout.default_weights()

    def symbols(self, stage, state) -> None:
        scale = next(self._scales)
        mean, sd = stage.params(state, stage.scales[scale])
        self.raw(scale, SCALE_BITS)
        values = stage.symbols(state.truth)
        self.coder.encode(values.astype(np.int32), stage.model, mean, sd)
        stage.store(state, values)
        state.done += stage.size
        self.stage_marks.append((state.done, self.coder.num_words()))
        if self.on_stage is not None:
            self.on_stage(state.done)


class Reader:
    """Reads the stream from a range decoder; of the exact stage only the first ``budget`` symbols.

    Past the budget (a partial truncation point) nothing more is read: a stage's scale index is 0 and its
    symbols are its predicted means, computed from what was read and predicted before them.
    """

    def __init__(self, coder, budget: float = math.inf):
        self.coder = coder
        self.budget = budget

    def raw(self, default: int, bits: int) -> int:
        """``bits`` raw bits, or ``default`` once the budget is spent."""
        return decode_raw_bits(self.coder, bits) if self.budget > 0 else default

    def step(self, code, step: int, symbols: StepSymbols | None, max_chunks: int) -> StepSymbols:
        try:
            return code.decode(self.coder, step, max_chunks)
        except ValueError as exc:
            raise StreamMismatchError(f"stream is corrupt ({exc})") from None
        except AssertionError:  # constriction: words no encoder could have written for these models
            raise StreamMismatchError("stream is corrupt (the entropy decoder met an impossible symbol)") from None

    def shared_step(self, symbols: StepSymbols) -> StepSymbols:
        """A step taken from the shared randomness alone (version 6's x_T): nothing is read."""
        return symbols

    def linear_weights(self, group, state) -> None:
        if self.raw(0, 1):
            weights = tuple(tuple(self.raw(0, WEIGHT_BITS) for _ in range(s.num_weights)) for s in group.layout.stages)
        else:
            weights = group.layout.default_weights()
        state.weights[group.group] = weights

    def enter_exact(self) -> None:
        pass

    def expect_symbols(self, symbols: int) -> None:
        """The exact stage about to be read codes ``symbols``: a budget beyond them is a corrupt table."""
        if self.budget != math.inf and self.budget > symbols:
            raise StreamMismatchError("a partial truncation point lies beyond the exact stage: the file is corrupt")

    def symbols(self, stage, state) -> None:
        scale = self.raw(0, SCALE_BITS)
        mean, sd = stage.params(state, stage.scales[scale])
        take = int(min(stage.size, self.budget))
        values = stage.predicted(mean) if take == stage.size else stage.unread(state, mean)
        if take:
            values[:take] = self.coder.decode(stage.model, mean[:take], sd[:take])
        self.budget -= take
        state.whole = state.whole and take == stage.size
        state.read = take
        try:
            stage.store(state, values)
        finally:
            state.read = None
        state.done += take
