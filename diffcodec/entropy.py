"""Entropy models on top of constriction's range coder, shared by encoder and decoder.

Every table here is built from integers or from parameters both sides compute
identically, so encoder and decoder always hold the same models.
"""

from __future__ import annotations

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


def pixel_gaussian_params(mean: np.ndarray, log_variance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 13's Gaussian in pixel units (0–255 scale): mean and std as float64, std clamped away from 0.

    x ∈ [-1, 1] maps to pixel (x + 1) · 127.5, so the bin [x − 1/255, x + 1/255] becomes [v − ½, v + ½].
    """
    mu = (mean.astype(np.float64) + 1.0) * 127.5
    std = np.exp(0.5 * log_variance.astype(np.float64)) * 127.5
    # constriction panics on a std of 0 or NaN: clamp (NaN becomes the upper bound, a flat model).
    std = np.nan_to_num(std, nan=1e4, posinf=1e4)
    return np.nan_to_num(np.clip(mu, -1e4, 1e4), nan=127.5), np.clip(std, 1e-2, 1e4)


PIXEL_MODEL = cmodel.QuantizedGaussian(0, 255)  # bins [v − ½, v + ½]; the tails fall into 0 and 255 (Eq. 13)
