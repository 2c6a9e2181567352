"""Tests of the chain steps' codes (diffcodec/step_code.py) and format 7's static tables (diffcodec/step_tables.py).

Round trips through constriction's range coder, with the position tables (the fitted chain: T = 1000, S = 50 quad,
32×32 RGB, chunks of 13 bits) and without them (the fallback: any other chain, size or chunk size); tables that
are integers; garbage streams that fail as a corrupt stream, never as a constriction panic (PanicException derives
from BaseException: ``except Exception`` would not catch it, and a panic fails these tests loudly).
"""

from __future__ import annotations

import constriction
import numpy as np
import pytest

from diffcodec import step_tables
from diffcodec.coders import Reader, StepSymbols, StreamMismatchError, Writer
from diffcodec.format import MAX_INDEX_BITS, READABLE_VERSIONS
from diffcodec.profile import StreamProfile
from diffcodec.entropy import encode_raw_bits
from diffcodec.step_code import (ESCAPE, EXPONENTS, LEVEL_RAW_BITS, AdaptiveStepCode, StaticStepCode, exponent_counts,
                                 level_symbol, shifted)
from diffcodec.timeline import Timeline

queue = constriction.stream.queue
FITTED = Timeline(1000, 50, "quad")
DIMS = 3072

# (chunk_bits, timeline, dims): the fitted chain (position tables) and fallbacks (class tables alone)
CHAINS = {
    "fitted": (13, FITTED, DIMS),
    "other size": (13, FITTED, 64 * 64 * 3),
    "other S": (13, Timeline(1000, 20, "quad"), DIMS),
    "uniform": (13, Timeline(1000, 50, "uniform"), DIMS),
    "chunk bits 8": (8, FITTED, DIMS),
    "chunk bits 16": (16, FITTED, DIMS),
    "chunk bits 1": (1, Timeline(1000, 6, "uniform"), 10),
}


def kl_path(num_steps: int, rng) -> list[float]:
    """Step KLs like a chain's: tiny at high noise, growing to thousands of bits, with jitter and a few jumps."""
    base = np.geomspace(0.3, 4000, num_steps) * rng.uniform(0.5, 1.5, num_steps)
    base[rng.integers(0, num_steps, 2)] *= 40  # a jump beyond the level change's ±16 (an escape)
    return [float(v) for v in base]


def random_index(kl: float, chunk_bits: int, rng) -> int:
    e = int(np.clip(round(min(kl, chunk_bits) + rng.normal(0, 3)), 0, MAX_INDEX_BITS))
    return 0 if e == 0 else int(rng.integers(1 << (e - 1), 1 << e))


def symbols_for(code, chunk_bits: int, num_steps: int, max_chunks: int, seed: int) -> list[StepSymbols]:
    rng = np.random.default_rng(seed)
    out = [None]  # step 0: x_T, shared randomness (format 6 on)
    for step, kl in enumerate(kl_path(num_steps, rng)[1:], start=1):
        level, chunks, cls = code.level_for(step, kl, max_chunks)
        out.append(StepSymbols(level, chunks, cls, [random_index(kl / chunks, chunk_bits, rng) for _ in range(chunks)]))
    return out


def write(make, symbols: list[StepSymbols], max_chunks: int) -> np.ndarray:
    writer, code = Writer(queue.RangeEncoder()), make()
    for step, sym in enumerate(symbols[1:], start=1):
        writer.step(code, step, sym, max_chunks)
    return writer.coder.get_compressed()


@pytest.mark.parametrize("chain", sorted(CHAINS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_static_code_round_trips(chain, seed):
    chunk_bits, timeline, dims = CHAINS[chain]
    make = lambda: StaticStepCode.for_chain(chunk_bits, timeline, dims)  # noqa: E731
    assert bool(make().positions) == (chain == "fitted")
    symbols = symbols_for(make(), chunk_bits, timeline.num_steps, dims, seed)
    words = write(make, symbols, dims)
    reader, code = Reader(queue.RangeDecoder(words)), make()
    assert [reader.step(code, s, None, dims) for s in range(1, len(symbols))] == symbols[1:]


def test_the_position_flag_codes_the_high_noise_steps_in_few_bits():
    """At the fitted chain's flagged positions a one-chunk step sends no level and is the position's level."""
    assert step_tables.POSITIONS, "the fitted tables flag some high-noise positions"
    code = StaticStepCode.for_chain(13, FITTED, DIMS)
    for position, (_, _, level) in step_tables.POSITIONS.items():
        step = FITTED.num_steps - position
        assert code.level_for(step, 0.7, DIMS) == (level, 1, level)
        assert code.level_for(step, 500.0, DIMS)[1] > 1  # a large step still gets its chunks (flag "no")
    flagged = sorted(FITTED.num_steps - p for p in step_tables.POSITIONS)
    symbols = [None] + [StepSymbols(*code.level_for(s, 0.7, DIMS), [3]) if s in flagged else None for s in range(1, 50)]
    symbols = symbols[: flagged[-1] + 1]
    # Only flagged steps: write those alone (a step's position is its own, whatever came before).
    enc, fresh = queue.RangeEncoder(), StaticStepCode.for_chain(13, FITTED, DIMS)
    for s in flagged:
        fresh.encode(enc, s, symbols[s])
    dec, again = queue.RangeDecoder(enc.get_compressed()), StaticStepCode.for_chain(13, FITTED, DIMS)
    assert [again.decode(dec, s, DIMS) for s in flagged] == [symbols[s] for s in flagged]
    assert 32 * len(enc.get_compressed()) < 8 * len(flagged) + 64  # a flag, an exponent, a mantissa bit each


def test_a_one_chunk_step_at_a_flagged_position_must_carry_the_position_s_level():
    code = StaticStepCode.for_chain(13, FITTED, DIMS)
    position, (_, _, level) = next(iter(step_tables.POSITIONS.items()))
    with pytest.raises(ValueError, match="one-chunk step"):
        code.encode(queue.RangeEncoder(), FITTED.num_steps - position, StepSymbols((level + 1) % 13, 1, 0, [1]))


def test_an_index_beyond_max_index_bits_is_refused():
    with pytest.raises(ValueError, match="bits"):
        StaticStepCode(13).encode(queue.RangeEncoder(), 1, StepSymbols(5, 1, 5, [1 << MAX_INDEX_BITS]))


def test_the_tables_are_positive_integers_of_the_right_shapes():
    t = step_tables
    d = t.FITTED_CHUNK_BITS
    assert len(t.EXPONENT) == d + 1 and all(len(row) == EXPONENTS for row in t.EXPONENT)
    assert len(t.LEVEL_CHANGE) == 2 and all(len(row) == 34 for row in t.LEVEL_CHANGE)
    assert len(t.MANTISSA_TOP) == 2
    rows = [*t.EXPONENT, *t.LEVEL_CHANGE, t.MANTISSA_TOP]
    for one, exponent, level in t.POSITIONS.values():
        rows += [one, exponent]
        assert len(one) == 2 and len(exponent) == EXPONENTS and type(level) is int and 0 <= level < d
    for row in rows:
        assert all(type(c) is int and c >= 1 for c in row) and sum(row) < 1 << 24
    T, S, spacing, dims = t.FITTED_CHAIN
    assert all(type(v) is int for v in t.FITTED_CHAIN) and all(1 <= p < S for p in t.POSITIONS)


def test_other_chunk_sizes_move_the_fitted_exponent_tables():
    fitted = step_tables.FITTED_CHUNK_BITS
    assert exponent_counts(fitted, fitted) == step_tables.EXPONENT[fitted]
    assert exponent_counts(fitted + 3, fitted + 3) == shifted(step_tables.EXPONENT[fitted], 3)
    assert exponent_counts(fitted + 1, fitted + 3) == shifted(step_tables.EXPONENT[fitted - 1], 2)
    assert exponent_counts(4, 8) == step_tables.EXPONENT[4] and exponent_counts(8, 8) == step_tables.EXPONENT[fitted][5:] + (1,) * 5
    assert shifted((5, 6, 7), 1) == (1, 5, 6) and shifted((5, 6, 7), -1) == (6, 7, 1)


@pytest.mark.parametrize("chain", ["fitted", "chunk bits 8"])
@pytest.mark.parametrize("seed", range(40))
def test_garbage_streams_fail_as_corrupt_streams(chain, seed):
    """Random words decode to symbols or to StreamMismatchError (a DiffcodecError), never to a panic or another error."""
    chunk_bits, timeline, dims = CHAINS[chain]
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << 32, int(rng.integers(1, 40)), dtype=np.uint64).astype(np.uint32)
    reader, code = Reader(queue.RangeDecoder(words)), StaticStepCode.for_chain(chunk_bits, timeline, dims)
    try:
        for s in range(1, timeline.num_steps):
            sym = reader.step(code, s, None, dims)
            assert 1 <= sym.chunks <= dims and all(0 <= k < 1 << MAX_INDEX_BITS for k in sym.indices)
    except StreamMismatchError:
        pass


def test_a_stream_that_is_not_the_encoder_s_is_refused():
    """Escapes of a change in range and, at a flagged position, a one-chunk level after the flag said "several"."""
    code = StaticStepCode(13)
    enc = queue.RangeEncoder()
    enc.encode(np.array([ESCAPE], dtype=np.int32), code.levels[0])  # escape …
    encode_raw_bits(enc, 3, LEVEL_RAW_BITS)  # … of level 3, a change of +3
    with pytest.raises(StreamMismatchError, match="escaped"):
        Reader(queue.RangeDecoder(enc.get_compressed())).step(StaticStepCode(13), 1, None, DIMS)
    position = next(iter(step_tables.POSITIONS))
    flagged = StaticStepCode.for_chain(13, FITTED, DIMS)
    enc = queue.RangeEncoder()
    enc.encode(np.array([0], dtype=np.int32), flagged.positions[FITTED.num_steps - position].one_chunk)  # "several"
    enc.encode(np.array([level_symbol(2, 0)], dtype=np.int32), flagged.levels[0])  # … but a one-chunk level
    with pytest.raises(StreamMismatchError, match="flag"):
        Reader(queue.RangeDecoder(enc.get_compressed())).step(StaticStepCode.for_chain(13, FITTED, DIMS),
                                                               FITTED.num_steps - position, None, DIMS)


@pytest.mark.parametrize("version", READABLE_VERSIONS)
def test_each_version_has_its_step_code(version):
    code = StreamProfile(version).step_code(13, FITTED, DIMS)
    assert type(code) is (StaticStepCode if version >= 7 else AdaptiveStepCode)
    assert StreamProfile(version).static_steps == (version >= 7)


def test_a_file_on_the_fitted_chain_round_trips_through_the_position_tables(tiny_model):
    """A 32×32 RGB image on the default chain (S = 50 quad, chunks of 13 bits): version 7's position tables."""
    from diffcodec.codec import CodecConfig, decode, encode
    from diffcodec.container import decode_file, truncate

    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    res = encode(pixels, "RGB", tiny_model, CodecConfig(steps=50, max_candidate_bits=8, exact_from_t=400))
    f = decode_file(res.data)
    assert f.header.profile.static_steps and (f.header.num_steps, f.header.spacing, f.header.chunk_bits) == (50, "quad", 13)
    assert f.header.exact_from < min(step_tables.POSITIONS)  # the flagged steps are all coded
    np.testing.assert_array_equal(decode(res.data, tiny_model).pixels, pixels)
    for p in f.points[:-1]:
        decode(truncate(f, p.t), tiny_model)  # every cut decodes (its payload check passes)


def test_docstring_example():
    import doctest

    from diffcodec import step_code

    assert doctest.testmod(step_code).failed == 0
