"""Tests of the entropy models on constriction's range coder (diffcodec/entropy.py).

Everything is a round trip through constriction.stream.queue.RangeEncoder / RangeDecoder,
interleaving several models in one stream the way the codec does.  Note: constriction
*panics* on invalid model parameters (std 0 or NaN); its PanicException derives from
BaseException, so `except Exception` does not catch it and a panic fails these tests loudly.
"""

from __future__ import annotations

import numpy as np
import pytest
import constriction

from diffcodec.entropy import (
    MAX_UNIFORM_BITS,
    PIXEL_MODEL,
    AdaptiveCategorical,
    IndexCoder,
    StepSizeCoder,
    StepSizeCoderV1,
    chunk_count,
    chunk_level,
    decode_raw_bits,
    decode_symbol,
    encode_raw_bits,
    encode_symbol,
    pixel_gaussian_params,
)

queue = constriction.stream.queue
MAX_INDEX_BITS = 20


def decoder_for(encoder) -> "queue.RangeDecoder":
    words = encoder.get_compressed()
    return queue.RangeDecoder(words if len(words) else np.zeros(1, dtype=np.uint32))


INDICES = sorted(
    {0, 1, 2, 3, 5, 7, 100, 1000, (1 << MAX_INDEX_BITS) - 1}
    | {1 << e for e in range(MAX_INDEX_BITS)}
    | {(1 << e) - 1 for e in range(1, MAX_INDEX_BITS + 1)}
    | {(1 << e) + 1 for e in range(1, MAX_INDEX_BITS)}
)


@pytest.mark.parametrize("chunk_bits", [1, 10, 16])
def test_index_coder_round_trip(chunk_bits):
    rng = np.random.default_rng(chunk_bits)
    items = [(int(rng.integers(chunk_bits + 1)), k) for k in INDICES + list(rng.integers(0, 1 << MAX_INDEX_BITS, 200))]
    rng.shuffle(items)
    enc = queue.RangeEncoder()
    coder = IndexCoder(chunk_bits, MAX_INDEX_BITS)
    for cls, k in items:
        coder.encode(enc, cls, int(k))
    dec = decoder_for(enc)
    mirror = IndexCoder(chunk_bits, MAX_INDEX_BITS)
    assert [mirror.decode(dec, cls) for cls, _ in items] == [int(k) for _, k in items]


def test_index_coder_refuses_too_large_indices():
    coder = IndexCoder(10, MAX_INDEX_BITS)
    with pytest.raises(ValueError):
        coder.encode(queue.RangeEncoder(), 3, 1 << MAX_INDEX_BITS)


def test_index_coder_costs_little_for_indices_near_its_class():
    """Adaptive exponent models: small indices in class c ≈ e + 2 cost about e bits, not 20."""
    enc = queue.RangeEncoder()
    coder = IndexCoder(10, MAX_INDEX_BITS)
    ks = np.random.default_rng(0).integers(16, 32, 500)  # e = 5, four raw bits each
    for k in ks:
        coder.encode(enc, 7, int(k))
    bits = 32 * len(enc.get_compressed())
    assert bits < 500 * (4 + 1.0)


def test_adaptive_categorical_round_trip_and_adaptation():
    rng = np.random.default_rng(1)
    symbols = np.concatenate([rng.integers(0, 40, 300), np.full(3000, 3)])  # skewed tail exercises halving
    enc = queue.RangeEncoder()
    model = AdaptiveCategorical(np.ones(40, dtype=np.int64))
    for s in symbols:
        encode_symbol(enc, model, int(s))
    assert model.counts.sum() <= 1 << 20
    assert model.counts[3] == model.counts.max()
    dec = decoder_for(enc)
    mirror = AdaptiveCategorical(np.ones(40, dtype=np.int64))
    assert [decode_symbol(dec, mirror) for _ in symbols] == symbols.tolist()
    np.testing.assert_array_equal(mirror.counts, model.counts)


@pytest.mark.parametrize("counts", [[0, 1], [1, -1], [[1, 2]]])
def test_adaptive_categorical_rejects_bad_counts(counts):
    with pytest.raises(ValueError):
        AdaptiveCategorical(np.array(counts))


def test_encode_symbol_rejects_symbols_outside_the_alphabet():
    model = AdaptiveCategorical(np.ones(4, dtype=np.int64))
    for bad in (-1, 4):
        with pytest.raises(ValueError):
            encode_symbol(queue.RangeEncoder(), model, bad)


def test_raw_bits_round_trip_all_widths_up_to_20():
    rng = np.random.default_rng(2)
    items = []
    for bits in range(0, 21):
        hi = 1 << bits
        for v in {0, hi - 1, hi // 2, int(rng.integers(hi))}:
            items.append((bits, v))
    enc = queue.RangeEncoder()
    for bits, v in items:
        encode_raw_bits(enc, v, bits)
    dec = decoder_for(enc)
    assert [decode_raw_bits(dec, bits) for bits, _ in items] == [v for _, v in items]
    assert MAX_UNIFORM_BITS <= 16


def test_raw_bits_cost_what_they_say():
    enc = queue.RangeEncoder()
    for v in np.random.default_rng(3).integers(0, 1 << 20, 400):
        encode_raw_bits(enc, int(v), 20)
    assert 32 * len(enc.get_compressed()) <= 400 * 20 + 64


# ---------------------------------------------------------------------------- pixel model

BAD = np.array([np.nan, 0.0, -np.inf, np.inf, -1e6, 1e6, 0.1, -5.0])


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_pixel_params_are_finite_and_clamped():
    mean = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 3.0, 0.2])
    mu, std = pixel_gaussian_params(mean, BAD)  # log-variances: NaN, 0, ±inf, huge, tiny
    assert mu.dtype == np.float64 and std.dtype == np.float64
    assert np.isfinite(mu).all() and np.isfinite(std).all()
    assert (std >= 1e-2).all() and (std <= 1e4).all()
    assert mu[0] == 127.5 and mu[4] == 255.0 and mu[5] == 0.0
    assert std[0] == 1e4  # NaN → a flat model
    assert std[3] == 1e4 and std[2] == 1e-2  # log σ² = +inf / −inf


def test_pixel_params_map_eq13_bins_to_unit_bins():
    """x ∈ [-1, 1] ↦ (x + 1)·127.5; σ scales by 127.5, so the bin half-width 1/255 becomes ½."""
    mean = np.array([-1.0, 0.0, 1.0, 2 / 255 - 1])
    mu, std = pixel_gaussian_params(mean, np.full(4, 2 * np.log(0.02)))
    np.testing.assert_allclose(mu, [0.0, 127.5, 255.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(std, 0.02 * 127.5, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@pytest.mark.parametrize("case", ["ordinary", "degenerate"])
def test_pixel_symbols_round_trip(case):
    rng = np.random.default_rng(4)
    symbols = np.arange(256, dtype=np.int32)
    rng.shuffle(symbols)
    if case == "ordinary":
        mean = symbols / 127.5 - 1 + rng.normal(0, 0.05, 256)
        log_var = rng.uniform(-12, 0, 256)
    else:  # NaN and 0 std, and means far from the symbols they must code
        mean = np.resize(np.array([np.nan, np.inf, -np.inf, 40.0, -40.0, 0.0]), 256)
        log_var = np.resize(BAD, 256)
    mu, std = pixel_gaussian_params(mean, log_var)
    enc = queue.RangeEncoder()
    enc.encode(symbols, PIXEL_MODEL, mu, std)
    dec = decoder_for(enc)
    np.testing.assert_array_equal(dec.decode(PIXEL_MODEL, mu, std), symbols)


# ---------------------------------------------------------------------------- step sizes


def test_chunk_counts_are_exact_up_to_15_then_eight_per_octave():
    counts = [chunk_count(s) for s in range(1, 40)]
    assert counts[:15] == list(range(1, 16))
    assert counts[15:24] == [16, 18, 20, 22, 24, 26, 28, 30, 32]
    assert all(b > a for a, b in zip(counts, counts[1:]))
    assert all(b <= a * 9 / 8 for a, b in zip(counts[7:], counts[8:]))  # rounding up costs at most 12.5%


@pytest.mark.parametrize("count", list(range(1, 300)) + [1000, 4097, 10**6, 3 * 2**30])
def test_chunk_level_is_the_smallest_allowed_count_that_fits(count):
    s = chunk_level(count)
    assert chunk_count(s) >= count and (s == 1 or chunk_count(s - 1) < count)


@pytest.mark.parametrize("coder_class", [StepSizeCoder, StepSizeCoderV1])
@pytest.mark.parametrize("chunk_bits", [1, 10, 13, 16])
def test_step_sizes_round_trip(coder_class, chunk_bits):
    """Levels of a realistic chain (KL growing from ~0 to thousands of bits), jumps and tiny images."""
    kls = [0.0, 11.0, 8.2, 7.6, 3.0] + list(np.geomspace(9, 5000, 40)) + [20000.0, 2.0, 1e6]
    max_chunks = [3072] * (len(kls) - 2) + [5, 3072]
    enc, writer = queue.RangeEncoder(), coder_class(chunk_bits)
    expected = []
    for kl, m in zip(kls, max_chunks):
        level, chunks, cls = writer.level_for(kl, m)
        needed = 1 if kl < chunk_bits else -(-kl // chunk_bits)  # chunks of at most chunk_bits bits
        assert chunks == min(m, needed) if coder_class is StepSizeCoderV1 else min(m, needed) <= chunks <= m
        assert cls == (int(kl) if kl < chunk_bits else chunk_bits)
        writer.encode(enc, level, chunks)
        expected.append((level, chunks, cls))
    dec, reader = decoder_for(enc), coder_class(chunk_bits)
    assert [reader.decode(dec, m) for m in max_chunks] == expected


def test_step_size_changes_cost_less_than_version_1_levels():
    """On a smooth chain the change coding of version 2 spends a fraction of version 1's level bits."""
    kls = np.geomspace(9, 5000, 50)
    sizes = {}
    for coder_class in (StepSizeCoder, StepSizeCoderV1):
        enc, coder = queue.RangeEncoder(), coder_class(13)
        for kl in kls:
            level, chunks, _ = coder.level_for(float(kl), 3072)
            coder.encode(enc, level, chunks)
        sizes[coder_class] = 32 * len(enc.get_compressed())
    assert sizes[StepSizeCoder] < 0.5 * sizes[StepSizeCoderV1]
    assert sizes[StepSizeCoder] < 3 * len(kls)  # bits per step, against ~8 for version 1


def test_step_size_decoder_refuses_impossible_levels():
    enc = queue.RangeEncoder()
    encode_symbol(enc, StepSizeCoder(13).model, 0)  # a change of −16 from level 0
    with pytest.raises(ValueError):
        StepSizeCoder(13).decode(decoder_for(enc), 10)
