"""Entropy models on top of constriction's range coder, shared by encoder and decoder.

Every table here is built from integers or from parameters both sides compute
identically, so encoder and decoder always hold the same models.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import constriction

cmodel = constriction.stream.model

MAX_UNIFORM_BITS = 16  # raw bits are coded in pieces of at most this many bits


class AdaptiveCategorical:
    """A categorical model over ``0..size-1`` whose counts grow with each coded symbol (identical on both sides)."""

    def __init__(self, initial_counts: np.ndarray, increment: int = 24):
        counts = np.asarray(initial_counts, dtype=np.int64)
        if counts.ndim != 1 or (counts <= 0).any():
            raise ValueError("initial counts must be positive")
        self.counts = counts.copy()
        self.increment = increment

    def model(self) -> cmodel.Categorical:
        return cmodel.Categorical(self.counts / self.counts.sum(), perfect=False)

    def update(self, symbol: int) -> None:
        self.counts[symbol] += self.increment
        if self.counts.sum() > 1 << 20:  # keep adapting: halve old evidence
            self.counts = (self.counts + 1) // 2


def encode_symbol(coder, model: AdaptiveCategorical, symbol: int) -> None:
    if not 0 <= symbol < len(model.counts):
        raise ValueError(f"symbol {symbol} outside the alphabet of {len(model.counts)}")
    coder.encode(np.array([symbol], dtype=np.int32), model.model())
    model.update(symbol)


def decode_symbol(coder, model: AdaptiveCategorical) -> int:
    symbol = int(coder.decode(model.model(), 1)[0])
    model.update(symbol)
    return symbol


def encode_raw_bits(coder, value: int, bits: int) -> None:
    """``bits`` uniform bits of ``value`` (low pieces first)."""
    while bits > 0:
        piece = min(bits, MAX_UNIFORM_BITS)
        coder.encode(np.array([value & ((1 << piece) - 1)], dtype=np.int32), cmodel.Uniform(1 << piece))
        value >>= piece
        bits -= piece


def decode_raw_bits(coder, bits: int) -> int:
    value, shift = 0, 0
    while bits > 0:
        piece = min(bits, MAX_UNIFORM_BITS)
        value |= int(coder.decode(cmodel.Uniform(1 << piece), 1)[0]) << shift
        shift += piece
        bits -= piece
    return value


class IndexCoder:
    """Codes channel-simulation indices k ≥ 0 as e = bit_length(k) plus the e−1 bits below the leading one.

    The exponent e gets an adaptive categorical per *class* (the chunk's KL in whole bits, 0..chunk_bits),
    initialised around e ≈ class − 2, where PFR indices of a chunk with that KL concentrate.
    """

    def __init__(self, chunk_bits: int, max_index_bits: int):
        self.max_index_bits = max_index_bits
        size = max_index_bits + 1
        e = np.arange(size)
        self.models = []
        for cls in range(chunk_bits + 1):
            centre = max(cls - 2, 0)
            self.models.append(AdaptiveCategorical(1 + 6 * np.maximum(0, 5 - np.abs(e - centre))))

    def encode(self, coder, cls: int, k: int) -> None:
        e = int(k).bit_length()
        if e > self.max_index_bits:
            raise ValueError(f"index {k} needs more than {self.max_index_bits} bits")
        encode_symbol(coder, self.models[cls], e)
        if e > 1:
            encode_raw_bits(coder, k - (1 << (e - 1)), e - 1)

    def decode(self, coder, cls: int) -> int:
        e = decode_symbol(coder, self.models[cls])
        if e <= 1:
            return e
        return (1 << (e - 1)) + decode_raw_bits(coder, e - 1)


def pixel_gaussian_params(mean: np.ndarray, log_variance: np.ndarray, exp: Callable[[np.ndarray], np.ndarray] = np.exp
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 13's Gaussian in pixel units (0–255 scale): mean and std as float64, std clamped away from 0.

    x ∈ [-1, 1] maps to pixel (x + 1) · 127.5, so the bin [x − 1/255, x + 1/255] becomes [v − ½, v + ½].
    """
    mu = (mean.astype(np.float64) + 1.0) * 127.5
    std = exp(0.5 * log_variance.astype(np.float64)) * 127.5  # exp: the format version's (numerics.py)
    # constriction panics on a std of 0 or NaN: clamp (NaN becomes the upper bound, a flat model).
    std = np.nan_to_num(std, nan=1e4, posinf=1e4)
    return np.nan_to_num(np.clip(mu, -1e4, 1e4), nan=127.5), np.clip(std, 1e-2, 1e4)


PIXEL_MODEL = cmodel.QuantizedGaussian(0, 255)  # bins [v − ½, v + ½]; the tails fall into 0 and 255 (Eq. 13)


# --------------------------------------------------------------------------- step sizes
# Before a step's chunk indices, the stream says how the step is split: a *level* symbol.
# Levels 0..chunk_bits−1: one chunk whose KL is that many whole bits (the index models' class);
# level chunk_bits − 1 + s, s ≥ 1: ``chunk_count(s)`` chunks of at most chunk_bits bits each.


def chunk_count(s: int) -> int:
    """The s-th allowed chunk count (s ≥ 1): 1..15 exactly, then 8 values per octave (16, 18, …, 30, 32, 36, …).

    Rounding a step's chunk count up to this set (at most 12.5% more chunks) lets the level of
    the largest steps grow by one or two per step instead of jumping by dozens.
    """
    if s < 8:
        return s
    octave, j = divmod(s - 8, 8)
    return (8 + j) << octave


def chunk_level(count: int) -> int:
    """The smallest s with ``chunk_count(s) ≥ count`` (count ≥ 1)."""
    s = 1
    while chunk_count(s) < count:
        s += 1
    return s


class StepSizeCoderV1:
    """Format version 1: one adaptive categorical over the levels themselves.

    Multi-chunk levels saturate at ``ESCAPE_CHUNKS`` chunks, after which the count follows
    as a 6-bit length and raw bits (13 bits or more on every large low-noise step).
    """

    ESCAPE_CHUNKS = 31

    def __init__(self, chunk_bits: int):
        self.chunk_bits = chunk_bits
        self.model = AdaptiveCategorical(np.full(chunk_bits + self.ESCAPE_CHUNKS + 1, 4, dtype=np.int64))

    def level_for(self, kl_bits: float, max_chunks: int) -> tuple[int, int, int]:
        d = self.chunk_bits
        if kl_bits < d:
            return int(kl_bits), 1, int(kl_bits)
        chunks = max(1, math.ceil(kl_bits / d))
        return d - 1 + min(chunks, self.ESCAPE_CHUNKS), min(chunks, max_chunks), d

    def encode(self, coder, level: int, chunks: int) -> None:
        encode_symbol(coder, self.model, level)
        if chunks >= self.ESCAPE_CHUNKS:
            bits = chunks.bit_length()
            encode_raw_bits(coder, bits, 6)
            encode_raw_bits(coder, chunks, bits)

    def decode(self, coder, max_chunks: int) -> tuple[int, int, int]:
        level = decode_symbol(coder, self.model)
        d = self.chunk_bits
        if level < d:
            return level, 1, level
        chunks = level - d + 1
        if chunks >= self.ESCAPE_CHUNKS:
            chunks = decode_raw_bits(coder, decode_raw_bits(coder, 6))
        if chunks > max_chunks:
            raise ValueError("more chunks than dimensions")
        return level, chunks, d


class StepSizeCoder:
    """Format version 2: each step's level coded as the change from the previous step's level.

    Along the chain a step's KL grows smoothly (tens of bits per step at high noise, thousands
    at low noise), so the level moves by 0, +1 or +2 most of the time: an adaptive categorical
    over the change in −16..16 plus an escape (then the level in 10 raw bits).
    """

    SPAN = 16
    ESCAPE = 2 * SPAN + 1
    RAW_BITS = 10

    def __init__(self, chunk_bits: int):
        self.chunk_bits = chunk_bits
        delta = np.arange(-self.SPAN, self.SPAN + 1)
        counts = 1 + np.round(np.where(delta >= 0, 48.0, 16.0) * 0.5 ** np.abs(delta)).astype(np.int64)
        self.model = AdaptiveCategorical(np.append(counts, 1))
        self.previous = 0

    def level_for(self, kl_bits: float, max_chunks: int) -> tuple[int, int, int]:
        """(level, chunks, index class) for a step carrying ``kl_bits`` over at most ``max_chunks`` chunks."""
        d = self.chunk_bits
        if kl_bits < d:
            level = int(kl_bits)
            return level, 1, level
        level = d - 1 + chunk_level(math.ceil(kl_bits / d))
        return level, *self.split(level, max_chunks)

    def split(self, level: int, max_chunks: int) -> tuple[int, int]:
        """(chunks, index class) of a level; a chunk holds at least one dimension."""
        d = self.chunk_bits
        if level < d:
            return 1, level
        return max(1, min(chunk_count(level - d + 1), max_chunks)), d

    def encode(self, coder, level: int, chunks: int) -> None:
        delta = level - self.previous
        if -self.SPAN <= delta <= self.SPAN:
            encode_symbol(coder, self.model, delta + self.SPAN)
        else:
            if not 0 <= level < 1 << self.RAW_BITS:
                raise ValueError(f"step level {level} out of range")
            encode_symbol(coder, self.model, self.ESCAPE)
            encode_raw_bits(coder, level, self.RAW_BITS)
        self.previous = level

    def decode(self, coder, max_chunks: int) -> tuple[int, int, int]:
        symbol = decode_symbol(coder, self.model)
        level = decode_raw_bits(coder, self.RAW_BITS) if symbol == self.ESCAPE else self.previous + symbol - self.SPAN
        if level < 0:
            raise ValueError("negative step level")
        self.previous = level
        return level, *self.split(level, max_chunks)
