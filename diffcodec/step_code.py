"""How a chain step's symbols are entropy coded: the *step code* of each format version.

A step sends how it is split into chunks (its *level*) and one channel-simulation index per chunk
(docs/format.md, "The chain's steps").  Two codes exist, both with the same interface, picked by
:meth:`diffcodec.profile.StreamProfile.step_code`:

* :class:`AdaptiveStepCode`, versions 1–6: the level by ``entropy.StepSizeCoder`` (``StepSizeCoderV1`` in version
  1), each index as its exponent e = bit_length(k) under an adaptive categorical per class, then e − 1 raw bits;
* :class:`StaticStepCode`, version 7: the same symbols under **static integer tables** (``diffcodec/step_tables.py``,
  fitted on training images by ``bench/fit_step_tables.py``): the exponent per class, the level's change in two
  contexts, the mantissa's first bit, and at the high-noise chain positions of the fitted chain a "one chunk"
  flag in place of the level, with the position's own exponent table (docs/format.md, "The step code (version 7)").

Every probability comes from integer counts as ``counts / counts.sum()`` in float64 (one correctly rounded
division per entry), quantized by constriction's ``Categorical(perfect=False)``: the same model on every machine.

>>> import constriction
>>> from diffcodec.timeline import Timeline
>>> code = StaticStepCode.for_chain(13, Timeline(1000, 50, "quad"), 3072)
>>> symbols = [code.level_for(s, kl, 3072) for s, kl in ((1, 0.4), (2, 30.0))]
>>> sent = [StepSymbols(*s, indices=[5] * s[1]) for s in symbols]
>>> enc = constriction.stream.queue.RangeEncoder()
>>> for s, sym in zip((1, 2), sent):
...     code.encode(enc, s, sym)
>>> dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
>>> again = StaticStepCode.for_chain(13, Timeline(1000, 50, "quad"), 3072)
>>> [again.decode(dec, s, 3072) for s in (1, 2)] == sent
True
"""

from __future__ import annotations

from functools import lru_cache

import constriction
import numpy as np

from . import step_tables
from .coders import StepSymbols
from .entropy import IndexCoder, StepSizeCoder, StepSizeCoderV1, decode_raw_bits, encode_raw_bits
from .format import MAX_INDEX_BITS, SPACINGS

cmodel = constriction.stream.model

EXPONENTS = MAX_INDEX_BITS + 1  # e = bit_length(k) in 0..MAX_INDEX_BITS
SPAN = StepSizeCoder.SPAN  # a level's change in −16..16 is one symbol
ESCAPE = 2 * SPAN + 1  # else the escape symbol, then the level in LEVEL_RAW_BITS raw bits
LEVEL_RAW_BITS = StepSizeCoder.RAW_BITS


def level_context(previous: int, chunk_bits: int) -> int:
    """The level change's context: 0 after a one-chunk level (< chunk_bits), 1 after a level of several chunks."""
    return int(previous >= chunk_bits)


def level_symbol(level: int, previous: int) -> int:
    """The symbol of a level given the previous one: its change + SPAN, or ESCAPE."""
    delta = level - previous
    return delta + SPAN if -SPAN <= delta <= SPAN else ESCAPE


def categorical(counts) -> cmodel.Categorical:
    """constriction's model of integer ``counts`` (all ≥ 1), the same on every machine (see the module's text)."""
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or (c < 1).any():
        raise ValueError("a table's counts must be positive integers")
    return cmodel.Categorical(c / c.sum(), perfect=False)


def shifted(counts, shift: int) -> tuple[int, ...]:
    """An exponent table moved by ``shift`` exponents (the entries it leaves empty get a count of 1)."""
    n = len(counts)
    return tuple(counts[e - shift] if 0 <= e - shift < n else 1 for e in range(n))


def exponent_counts(cls: int, chunk_bits: int) -> tuple[int, ...]:
    """The exponent table of class ``cls`` for chunks of ``chunk_bits`` bits.

    Fitted chunk size: the table itself.  Another chunk size (the fallback): a one-chunk class c (c < chunk_bits,
    a chunk of c whole bits of KL, the same meaning for any chunk size) takes the fitted table of class
    min(c, F − 1), F = FITTED_CHUNK_BITS, moved by the difference; the several-chunks class (c = chunk_bits) the
    fitted several-chunks table moved by chunk_bits − F.
    """
    fitted = step_tables.FITTED_CHUNK_BITS
    if chunk_bits == fitted:
        return tuple(step_tables.EXPONENT[cls])
    base = fitted if cls == chunk_bits else min(cls, fitted - 1)
    return shifted(step_tables.EXPONENT[base], cls - base)


@lru_cache(maxsize=None)
def _class_models(chunk_bits: int) -> tuple:
    return tuple(categorical(exponent_counts(c, chunk_bits)) for c in range(chunk_bits + 1))


@lru_cache(maxsize=None)
def _shared_models() -> tuple:
    return tuple(categorical(c) for c in step_tables.LEVEL_CHANGE), categorical(step_tables.MANTISSA_TOP)


class PositionModels:
    """A chain position's models (version 7, fitted chain only): the one-chunk flag and the position's exponent
    table; ``level``: the level a one-chunk step there stands for (it is not sent)."""

    def __init__(self, one_chunk, exponent, level: int):
        self.one_chunk, self.exponent, self.level = categorical(one_chunk), categorical(exponent), level


@lru_cache(maxsize=None)
def _position_models() -> dict[int, PositionModels]:
    return {p: PositionModels(*row) for p, row in step_tables.POSITIONS.items()}


def _encode(coder, symbol: int, model) -> None:
    coder.encode(np.array([symbol], dtype=np.int32), model)


def _decode(coder, model) -> int:
    return int(coder.decode(model, 1)[0])


class AdaptiveStepCode:
    """Versions 1–6: the level by ``sizes`` (StepSizeCoder, or StepSizeCoderV1 in version 1), the indices by
    ``entropy.IndexCoder`` (adaptive exponent per class, raw mantissa).  ``step`` is unused."""

    def __init__(self, sizes: StepSizeCoder | StepSizeCoderV1, chunk_bits: int):
        self.sizes = sizes
        self.index = IndexCoder(chunk_bits, MAX_INDEX_BITS)

    def level_for(self, step: int, kl_bits: float, max_chunks: int) -> tuple[int, int, int]:
        """(level, chunks, index class) of step ``step`` carrying ``kl_bits`` over at most ``max_chunks`` chunks."""
        return self.sizes.level_for(kl_bits, max_chunks)

    def encode(self, coder, step: int, symbols: StepSymbols) -> None:
        self.sizes.encode(coder, symbols.level, symbols.chunks)
        for k in symbols.indices:
            self.index.encode(coder, symbols.cls, k)

    def decode(self, coder, step: int, max_chunks: int) -> StepSymbols:
        """The step's symbols; ValueError where the stream cannot be one the encoder wrote."""
        level, chunks, cls = self.sizes.decode(coder, max_chunks)
        return StepSymbols(level, chunks, cls, [self.index.decode(coder, cls) for _ in range(chunks)])


class StaticStepCode:
    """Version 7: every step symbol under a static integer table (``diffcodec/step_tables.py``).

    Per step s: at a position of ``positions`` (step → :class:`PositionModels`), a flag "one chunk"; if set, the
    step is one chunk, its level is the position's, and its exponent table is the position's.  Otherwise the level,
    as its change from the previous step's level (``LEVEL_CHANGE`` in context :func:`level_context`, or the escape
    and 10 raw bits), and at a flagged position it must be a level of several chunks.  Then per chunk the exponent
    e (the class's table, :func:`exponent_counts`), and for e ≥ 2 the bit below the leading one (``MANTISSA_TOP``)
    and e − 2 raw bits.  The previous level starts at 0 (version 6's x_T sends nothing).
    """

    def __init__(self, chunk_bits: int, positions: dict[int, PositionModels] | None = None):
        self.chunk_bits = chunk_bits
        self.positions = positions or {}
        self.rule = StepSizeCoder(chunk_bits)  # version 2's levels: how a step's KL becomes a level and chunks
        self.exponents = _class_models(chunk_bits)
        self.levels, self.mantissa_top = _shared_models()
        self.previous = 0

    @classmethod
    def for_chain(cls, chunk_bits: int, timeline, dims: int) -> "StaticStepCode":
        """The code of a stream of ``dims`` real dimensions on ``timeline``'s chain: with the position tables where
        chain, image size and chunk size are the fitted ones (``FITTED_CHAIN``), else the class tables alone."""
        chain = (timeline.schedule_steps, timeline.num_steps, SPACINGS.index(timeline.spacing), dims)
        fitted = chain == step_tables.FITTED_CHAIN and chunk_bits == step_tables.FITTED_CHUNK_BITS
        models = _position_models() if fitted else {}
        return cls(chunk_bits, {timeline.num_steps - p: m for p, m in models.items()})

    def level_for(self, step: int, kl_bits: float, max_chunks: int) -> tuple[int, int, int]:
        level, chunks, cls = self.rule.level_for(kl_bits, max_chunks)
        position = self.positions.get(step)
        if position is not None and level < self.chunk_bits:
            return position.level, 1, position.level  # the flag's one-chunk step: its level is the position's
        return level, chunks, cls

    def encode(self, coder, step: int, symbols: StepSymbols) -> None:
        d, level = self.chunk_bits, symbols.level
        position = self.positions.get(step)
        one = position is not None and level < d
        if position is not None:
            if one and (level != position.level or symbols.chunks != 1):
                raise ValueError(f"step {step}: a one-chunk step here has level {position.level} (level_for)")
            _encode(coder, int(one), position.one_chunk)
        if not one:
            symbol = level_symbol(level, self.previous)
            _encode(coder, symbol, self.levels[level_context(self.previous, d)])
            if symbol == ESCAPE:
                if not 0 <= level < 1 << LEVEL_RAW_BITS:
                    raise ValueError(f"step level {level} out of range")
                encode_raw_bits(coder, level, LEVEL_RAW_BITS)
        self.previous = level
        table = position.exponent if one else self.exponents[symbols.cls]
        for k in symbols.indices:
            e = int(k).bit_length()
            if e > MAX_INDEX_BITS:
                raise ValueError(f"index {k} needs more than {MAX_INDEX_BITS} bits")
            _encode(coder, e, table)
            if e >= 2:
                _encode(coder, (k >> (e - 2)) & 1, self.mantissa_top)
                encode_raw_bits(coder, k & ((1 << (e - 2)) - 1), e - 2)

    def decode(self, coder, step: int, max_chunks: int) -> StepSymbols:
        """The step's symbols; ValueError where the stream cannot be one the encoder wrote."""
        d = self.chunk_bits
        position = self.positions.get(step)
        if position is not None and _decode(coder, position.one_chunk):
            level, chunks, cls, table = position.level, 1, position.level, position.exponent
        else:
            symbol = _decode(coder, self.levels[level_context(self.previous, d)])
            if symbol == ESCAPE:
                level = decode_raw_bits(coder, LEVEL_RAW_BITS)
                if abs(level - self.previous) <= SPAN:
                    raise ValueError("an escaped level that is a change in range")
            else:
                level = self.previous + symbol - SPAN
            if level < 0:
                raise ValueError("negative step level")
            if position is not None and level < d:
                raise ValueError("a one-chunk level where the flag said several chunks")
            chunks, cls = self.rule.split(level, max_chunks)
            table = self.exponents[cls]
        self.previous = level
        indices = []
        for _ in range(chunks):
            e = _decode(coder, table)
            if e >= 2:
                e = (1 << (e - 1)) | (_decode(coder, self.mantissa_top) << (e - 2)) | decode_raw_bits(coder, e - 2)
            indices.append(e)
        return StepSymbols(level, chunks, cls, indices)
