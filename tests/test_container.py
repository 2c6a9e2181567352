"""Tests of the .dfc container (diffcodec/container.py, docs/format.md).

The golden vector tests/expected/container_v4.dfc is `encode_file(GOLDEN_V4)`. It pins
the byte layout: regenerate it only for a deliberate format change (which also
bumps VERSION, see docs/format.md), with

    python tests/test_container.py --regenerate-golden
"""

from __future__ import annotations

import binascii
from dataclasses import replace
import doctest
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffcodec import container
from diffcodec.container import (
    MAGIC, MAX_SIDE, MAX_STEPS, VERSION, DfcFile, DfcFormatError, StreamHeader, TruncationPoint,
    chain_position, decode_file, describe, encode_file, fit_bytes, keep_points, paper_timestep, truncate,
)
from diffcodec.diffusion import SPACINGS
from diffcodec.errors import DiffcodecError
from diffcodec.format import first_point_implied

GOLDEN_PATH = Path(__file__).parent / "expected" / "container_v3.dfc"
GOLDEN_V4_PATH = Path(__file__).parent / "expected" / "container_v4.dfc"
# Same layout, older version bytes: still read.
OLDER_GOLDEN = {1: Path(__file__).parent / "expected" / "container_v1.dfc", 2: Path(__file__).parent / "expected" / "container_v2.dfc"}

# exact_from and spacing take non-default values, so the vector pins how they are stored (S − exact_from,
# then the spacing code before flags: swapping two adjacent fields would change the bytes).
GOLDEN = DfcFile(
    header=StreamHeader(model_id=bytes.fromhex("0123456789abcdef"), width=32, height=24, mode="RGB",
                        num_steps=1000, chunk_bits=12, threads=2, exact_from=10, spacing="quad", version=3),
    points=(
        TruncationPoint(t=1000, end_word=1, check=0x1111),
        TruncationPoint(t=999, end_word=3, check=0x2222),
        TruncationPoint(t=500, end_word=3, check=0x3333),  # no words between two points
        TruncationPoint(t=10, end_word=20, check=0x4444),
        TruncationPoint(t=0, end_word=160, check=0xFFFF),  # 140-word delta: a two-byte varint
    ),
    words=(np.arange(160, dtype=np.uint64) * 0x9E3779B9 % 2**32).astype(np.uint32),
    image_crc32=0xDEADBEEF,
)

# Version 4: the same file with a 4-byte model id (the header offsets below are version 3's).
GOLDEN_V4 = DfcFile(header=replace(GOLDEN.header, model_id=bytes.fromhex("01234567"), version=4), points=GOLDEN.points,
                    words=GOLDEN.words, image_crc32=GOLDEN.image_crc32)

# Version 4 with partial points inside the exact stage (FLAG_PARTIAL_POINTS): rows at t = 0 carry the
# subpixel count's increase (0 for the exact image) and, after the first, no t gap.
GOLDEN_PARTIAL_PATH = Path(__file__).parent / "expected" / "container_v4_partial.dfc"
GOLDEN_PARTIAL = DfcFile(
    header=replace(GOLDEN_V4.header, flags=container.FLAG_PARTIAL_POINTS),
    points=(
        TruncationPoint(t=1000, end_word=1, check=0x1111),
        TruncationPoint(t=500, end_word=3, check=0x3333),
        TruncationPoint(t=10, end_word=20, check=0x4444),
        TruncationPoint(t=0, end_word=60, check=0x5555, subpixels=384),  # pass 1, channel 0 of 32×24
        TruncationPoint(t=0, end_word=100, check=0x6666, subpixels=1152),  # pass 1 whole
        TruncationPoint(t=0, end_word=160, check=0xFFFF),
    ),
    words=GOLDEN.words, image_crc32=GOLDEN.image_crc32,
)

# Version 6, the compact header: one magic byte, 3 bytes of model id, no thread count, the spacing and "T is
# stored" as bits of the flags varint; here with partial points, quad spacing and the default T (not stored).
GOLDEN_V6_PATH = Path(__file__).parent / "expected" / "container_v6.dfc"
GOLDEN_V6 = DfcFile(
    header=replace(GOLDEN_PARTIAL.header, model_id=bytes.fromhex("012345"), threads=1, version=6),
    points=(TruncationPoint(t=1000, end_word=0, check=0x1111), *GOLDEN_PARTIAL.points[1:]),  # x_T needs no words
    words=GOLDEN.words, image_crc32=GOLDEN.image_crc32,
)
# Version 7: the version byte carries the flags' low bits, the mode byte and S are stored only when they are not
# the defaults (here they are not: S = 1000, chunk_bits 12), and the first point (x_S, no words) has no row.
GOLDEN_V7_PATH = Path(__file__).parent / "expected" / "container_v7.dfc"
GOLDEN_V7 = DfcFile(
    header=replace(GOLDEN_V6.header, version=7),
    points=(TruncationPoint(t=1000, end_word=0, check=0), *GOLDEN_V6.points[1:]),
    words=GOLDEN.words, image_crc32=GOLDEN.image_crc32,
)
# A default 32×32 file (RGB, chunk_bits 13, S = 50, quad, T = 1000) cut at x_S: its header alone.
GOLDEN_V7_FLOOR = DfcFile(
    header=StreamHeader(model_id=bytes.fromhex("abcdef"), width=32, height=32, mode="RGB", num_steps=50, chunk_bits=13,
                        threads=1, exact_from=8, spacing="quad", version=7),
    points=(TruncationPoint(t=50, end_word=0, check=0),), words=np.zeros(0, np.uint32), image_crc32=None,
)
# Version 8: version 7 with no check in the rows and one CRC-16 of the payload after the table.
GOLDEN_V8_PATH = Path(__file__).parent / "expected" / "container_v8.dfc"
GOLDEN_V8 = DfcFile(
    header=replace(GOLDEN_V7.header, version=8),
    points=tuple(replace(p, check=0) for p in GOLDEN_V7.points),
    words=GOLDEN.words, image_crc32=GOLDEN.image_crc32,
)
GOLDEN_V8_FLOOR = DfcFile(header=replace(GOLDEN_V7_FLOOR.header, version=8), points=GOLDEN_V7_FLOOR.points,
                          words=GOLDEN_V7_FLOOR.words, image_crc32=None)
GOLDEN_V6_T = DfcFile(header=replace(GOLDEN_V6.header, schedule_steps=4000, spacing="uniform"), points=GOLDEN_V6.points,
                      words=GOLDEN.words, image_crc32=GOLDEN.image_crc32)

SMALL = DfcFile(
    header=StreamHeader(model_id=bytes(4), width=1, height=1, mode="L", num_steps=3, chunk_bits=1, threads=1, version=5),
    points=(TruncationPoint(3, 0, 0), TruncationPoint(1, 1, 0xABCD), TruncationPoint(0, 2, 0x0102)),
    words=np.array([0xFFFFFFFF, 0x00000001], dtype=np.uint32),
    image_crc32=0,
)


def head_len(f: DfcFile, data: bytes) -> int:
    return len(data) - 4 * len(f.words)


def resealed(f: DfcFile, edit: Callable[[bytearray], None]) -> bytes:
    """encode_file(f) with `edit` applied to the header bytes and the header check recomputed."""
    data = encode_file(f)
    body = bytearray(data[:head_len(f, data) - 2])
    edit(body)
    return bytes(body) + binascii.crc_hqx(bytes(body), 0xFFFF).to_bytes(2, "little") + data[head_len(f, data):]


def assert_cut_behaviour(f: DfcFile, data: bytes, k: int) -> None:
    """decode_file(data[:k]) is exactly the points of f whose words fit, or a DfcFormatError."""
    available = max(0, k - head_len(f, data)) // 4
    kept = tuple(p for p in f.points if p.end_word <= available)
    if k < head_len(f, data) or not kept:
        with pytest.raises(DfcFormatError):
            decode_file(data[:k])
        return
    g = decode_file(data[:k])
    assert g.header == f.header
    assert g.points == kept
    assert g.points_lost == len(f.points) - len(kept)
    assert g.cut == (k < len(data))
    np.testing.assert_array_equal(g.words, f.words[:kept[-1].end_word])
    assert g.image_crc32 == (f.image_crc32 if k == len(data) else None)
    # version 8: words read from a file cut short have no check of their own
    assert g.unchecked == (container.payload_check(f.header.version) and k < len(data) and kept[-1].end_word > 0)
    assert encode_file(g, allow_unchecked=True) == encode_file(keep_points(f, len(kept), every_point=True))


def assert_only_format_errors(data: bytes) -> None:
    """Decoding raises DfcFormatError or gives a file that re-encodes canonically."""
    try:
        g = decode_file(data)
    except DfcFormatError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    if g.cut:
        again = decode_file(encode_file(g, allow_unchecked=True))
        assert again.points == g.points and not again.cut
    else:
        assert encode_file(g) == data  # every readable whole file has exactly one encoding


# ---- fixed vectors ------------------------------------------------------------------------------

def test_golden_vector() -> None:
    data = GOLDEN_V4_PATH.read_bytes()
    assert encode_file(GOLDEN_V4) == data, "format changed: see the module docstring before regenerating"
    assert decode_file(data) == GOLDEN_V4


def test_version3_golden_vector_is_still_read_and_differs_only_in_the_model_id() -> None:
    data = GOLDEN_PATH.read_bytes()
    assert encode_file(GOLDEN) == data and decode_file(data) == GOLDEN and data[3] == 3
    v4 = GOLDEN_V4_PATH.read_bytes()
    assert data[4:12] == bytes.fromhex("0123456789abcdef") and v4[4:8] == bytes.fromhex("01234567")
    n3, n4 = head_len(GOLDEN, data), head_len(GOLDEN_V4, v4)
    # all else equal but the header check at the end of the head
    assert n4 == n3 - 4 and data[12:n3 - 2] == v4[8:n4 - 2] and data[n3:] == v4[n4:]


def test_model_id_length_follows_the_version() -> None:
    assert [container.model_id_bytes(v) for v in (1, 2, 3, 4, 5, 6, 7)] == [8, 8, 8, 4, 4, 3, 3]
    with pytest.raises(DfcFormatError, match=f"model_id must be 3 bytes in version {VERSION}"):
        StreamHeader(bytes(4), 1, 1, "L", num_steps=3, chunk_bits=1, threads=1)
    with pytest.raises(DfcFormatError, match="model_id must be 4 bytes in version 5"):
        StreamHeader(bytes(8), 1, 1, "L", num_steps=3, chunk_bits=1, threads=1, version=5)
    with pytest.raises(DfcFormatError, match="model_id must be 8 bytes in version 3"):
        StreamHeader(bytes(4), 1, 1, "L", num_steps=3, chunk_bits=1, threads=1, version=3)


@pytest.mark.parametrize("version", sorted(OLDER_GOLDEN))
def test_older_golden_vectors_are_still_read(version) -> None:
    """Versions 2 and 3 changed only the payload's meaning: an older file parses, keeps its version and re-encodes to itself."""
    data = OLDER_GOLDEN[version].read_bytes()
    old = DfcFile(header=replace(GOLDEN.header, version=version), points=GOLDEN.points, words=GOLDEN.words,
                  image_crc32=GOLDEN.image_crc32)
    assert data[3] == version and decode_file(data) == old and encode_file(old) == data
    assert data[4:-2 - 4 * len(GOLDEN.words) - 4] == GOLDEN_PATH.read_bytes()[4:-2 - 4 * len(GOLDEN.words) - 4]


def test_docstring_examples() -> None:
    assert doctest.testmod(container).failed == 0


def test_partial_points_golden_vector() -> None:
    data = encode_file(GOLDEN_PARTIAL)
    assert data == GOLDEN_PARTIAL_PATH.read_bytes()
    assert decode_file(data) == GOLDEN_PARTIAL
    # The table's t = 0 rows: 0 gap, subpixel increase, end_word delta, check; then the crc and header check.
    assert data[35:54] == bytes.fromhex("09 80 03 28 55 55 80 06 28 66 66 00 3c ff ff ef be ad de")


def test_partial_points_are_not_the_exact_image() -> None:
    f = keep_points(GOLDEN_PARTIAL, 5)
    assert not f.complete and f.image_crc32 is None and f.points[-1].partial
    assert decode_file(encode_file(f)) == f
    assert GOLDEN_PARTIAL.complete and GOLDEN_PARTIAL.points[-1].exact


def test_truncate_keeps_partial_points_only_at_t0() -> None:
    assert truncate(GOLDEN_PARTIAL, 0) == GOLDEN_PARTIAL
    assert [p.t for p in truncate(GOLDEN_PARTIAL, 10, every_point=True).points] == [1000, 500, 10]
    assert [p.t for p in truncate(GOLDEN_PARTIAL, 10).points] == [10]
    assert truncate(GOLDEN_PARTIAL, 10).header.flags == container.FLAG_PARTIAL_POINTS  # still readable as is
    lean = keep_points(GOLDEN_PARTIAL, 4)  # a partial point alone
    assert lean.points == GOLDEN_PARTIAL.points[3:4] and decode_file(encode_file(lean)) == lean


@pytest.mark.parametrize("every_point", [False, True])
def test_fit_bytes_keeps_the_longest_prefix_that_fits(every_point: bool) -> None:
    sizes = [container.cut_size(GOLDEN_PARTIAL, k, every_point=every_point) for k in range(1, len(GOLDEN_PARTIAL.points) + 1)]
    assert sizes == sorted(sizes)
    if not every_point:
        assert sizes == [p["bytes"] for p in describe(GOLDEN_PARTIAL)["points"]]
    for k, size in enumerate(sizes, start=1):
        fitted = fit_bytes(GOLDEN_PARTIAL, size, every_point=every_point)
        assert len(encode_file(fitted)) == size
        assert fitted.points[-1] == GOLDEN_PARTIAL.points[k - 1]
        if k > 1:
            assert fit_bytes(GOLDEN_PARTIAL, size - 1, every_point=every_point).points[-1] == GOLDEN_PARTIAL.points[k - 2]
    assert fit_bytes(GOLDEN_PARTIAL, sizes[0] - 1, every_point=every_point) is None


def test_a_cut_lists_its_own_point_alone() -> None:
    # What the codec's step reports rate a prefix by: the header, one row, the words.
    for k in range(1, len(GOLDEN_PARTIAL.points)):
        lean, every = keep_points(GOLDEN_PARTIAL, k), keep_points(GOLDEN_PARTIAL, k, every_point=True)
        assert lean.points == (GOLDEN_PARTIAL.points[k - 1],) and every.points == GOLDEN_PARTIAL.points[:k]
        np.testing.assert_array_equal(lean.words, every.words)
        assert len(encode_file(lean)) < len(encode_file(every)) or k == 1
        assert decode_file(encode_file(lean)) == lean
    assert keep_points(GOLDEN_PARTIAL, len(GOLDEN_PARTIAL.points)) == GOLDEN_PARTIAL  # its own table, unchanged


def test_describe_names_partial_points() -> None:
    d = describe(GOLDEN_PARTIAL)
    assert [p.get("subpixels") for p in d["points"]] == [None, None, None, 384, 1152, None]
    assert d["points"][-1]["bytes"] == len(encode_file(GOLDEN_PARTIAL))


@pytest.mark.parametrize("f", [GOLDEN, SMALL, GOLDEN_PARTIAL], ids=["golden", "small", "partial"])
def test_round_trip(f: DfcFile) -> None:
    g = decode_file(encode_file(f))
    assert g == f and g.complete and not g.cut
    assert g.words.dtype == np.uint32 and not g.words.flags.writeable


def test_payload_is_little_endian_words_at_the_end() -> None:
    data = encode_file(SMALL)
    assert data[:4] == MAGIC + bytes([5])
    assert encode_file(GOLDEN_V6)[:2] == container.COMPACT_MAGIC + bytes([6])
    assert encode_file(GOLDEN_V7)[:2] == container.COMPACT_MAGIC + bytes([0xD7])  # 7 | flags partial, quad | more flags
    assert data[-8:] == bytes.fromhex("ffffffff01000000")


# ---- cutting and truncation ---------------------------------------------------------------------

@pytest.mark.parametrize("f", [GOLDEN, SMALL, GOLDEN_PARTIAL], ids=["golden", "small", "partial"])
def test_cut_at_every_byte(f: DfcFile) -> None:
    data = encode_file(f)
    for k in range(len(data) + 1):
        assert_cut_behaviour(f, data, k)


def test_cut_message_names_what_is_missing() -> None:
    data = encode_file(GOLDEN)
    with pytest.raises(DfcFormatError, match="ends inside the .dfc header"):
        decode_file(data[:10])
    with pytest.raises(DfcFormatError, match="cut before its first truncation point"):
        decode_file(data[:head_len(GOLDEN, data) + 3])
    g = decode_file(data[:-1])
    assert (g.points[-1].t, g.points_lost, g.image_crc32) == (10, 1, None)


@pytest.mark.parametrize(("stop_at_t", "final_t"), [
    (1000, 1000), (999, 999), (998, 999), (500, 500), (11, 500), (10, 10), (1, 10), (0, 0),
])
def test_truncate_keeps_points_down_to_stop_at_t(stop_at_t: int, final_t: int) -> None:
    g = truncate(GOLDEN, stop_at_t)
    assert g.points[-1].t == final_t
    assert g.points == (GOLDEN if final_t == 0 else truncate(GOLDEN, stop_at_t, every_point=True)).points[-len(g.points):]
    assert len(g.points) == (len(GOLDEN.points) if final_t == 0 else 1)
    np.testing.assert_array_equal(g.words, GOLDEN.words[:g.points[-1].end_word])
    assert g.image_crc32 == (GOLDEN.image_crc32 if final_t == 0 else None)
    data = encode_file(g)
    assert decode_file(data) == g
    assert len(data) == next(p["bytes"] for p in describe(GOLDEN)["points"] if p["t"] == final_t)


def test_truncate_above_the_first_point_keeps_the_first() -> None:
    lossy = truncate(GOLDEN, 10, every_point=True)
    shifted = DfcFile(lossy.header, lossy.points[1:], lossy.words, None)  # first point t=999 < S=1000
    assert truncate(shifted, 1000).points == (shifted.points[0],)
    assert truncate(lossy, 0) == lossy  # nothing finer to give: unchanged


@pytest.mark.parametrize("stop_at_t", [-1, 1001, 2.0, True, "5"])
def test_truncate_rejects_t_outside_the_chain(stop_at_t: object) -> None:
    with pytest.raises(DiffcodecError, match="stop_at_t"):
        truncate(GOLDEN, stop_at_t)  # type: ignore[arg-type]


# ---- foreign, corrupt and malformed input -------------------------------------------------------

@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty file"),
    (b"DF", "ends inside the .dfc header"),
    (b"\x89PNG\r\n\x1a\n", "not a .dfc file"),
    (b"DFC\x06" + bytes(40), "unsupported .dfc version 6, written by a newer diffcodec"),
    (b"DFC\x00" + bytes(40), "unsupported .dfc version 0"),
    (encode_file(SMALL) + b"\x00", "1 bytes after the payload"),
])
def test_foreign_input_is_one_clear_line(data: bytes, message: str) -> None:
    with pytest.raises(DfcFormatError, match=message) as info:
        decode_file(data)
    assert "\n" not in str(info.value)


def test_every_single_bit_flip_in_the_header_and_table_is_caught() -> None:
    data = encode_file(GOLDEN)
    for i in range(head_len(GOLDEN, data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(DfcFormatError):
                decode_file(bytes(bad))


def test_payload_corruption_is_left_to_the_codec_checks() -> None:
    data = bytearray(encode_file(GOLDEN))
    data[-1] ^= 0x80
    g = decode_file(bytes(data))
    assert g.points == GOLDEN.points and g.words[-1] != GOLDEN.words[-1]


# Offsets in GOLDEN's header: 12 width, 13 height, 14 mode<<6|chunk_bits, 15 threads, 16-17 S, 18-19 T,
# 20-21 S − exact_from (990), 22 spacing code (1 = quad), 23 flags, 24 count.
@pytest.mark.parametrize(("edit", "message"), [
    (lambda b: b.__setitem__(12, 0), "width must be in 1..65535"),
    (lambda b: b.__setitem__(14, 0xC0 | 12), "unknown mode code 3"),
    (lambda b: b.__setitem__(14, 0x40), "chunk_bits must be in 1..63"),
    (lambda b: b.__setitem__(15, 0), "threads must be in 1..255"),
    (lambda b: b.__setitem__(23, 1), "flags 0x1"),
    (lambda b: b.__setitem__(slice(24, 25), b"\xff\x7f"), "ends inside the .dfc point table"),
    (lambda b: b.__setitem__(slice(12, 13), b"\xa0\x00"), "over-long number"),
    # S − exact_from = 1000: exact_from 0 (a stored gap can never make exact_from > S; see the construction tests).
    (lambda b: b.__setitem__(slice(20, 22), b"\xe8\x07"), "exact_from must be in 1..4000, got 0"),
    (lambda b: b.__setitem__(slice(20, 22), b"\xff\xff\x03"), "exact_from must be in 1..4000, got -64535"),
    # S − exact_from = 900: exact_from 100, but the file has a lossy point at t=10 (the chain stopped before it).
    (lambda b: b.__setitem__(slice(20, 22), b"\x84\x07"), "a lossy point has t=10 below exact_from=100"),
    (lambda b: b.__setitem__(22, 2), "spacing must be one of uniform, quad, got 'code 2'"),
    (lambda b: b.__setitem__(22, 0x7F), "spacing must be one of uniform, quad, got 'code 127'"),
    (lambda b: b.__setitem__(slice(22, 23), b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"), "got 'code 9223372036854775808'"),
    # S=4001 and S=999 shift every t by one, so the last point is no longer t=0: drop image_crc32 too.
    (lambda b: (b.__setitem__(slice(16, 18), b"\xa1\x1f"), b.__delitem__(slice(-4, None))),
     "num_steps must be in 1..4000"),
    (lambda b: (b.__setitem__(slice(16, 18), b"\xe7\x07"), b.__delitem__(slice(-4, None))),
     "t must be in 0..4000, got -1"),
])
def test_well_sealed_but_invalid_header_is_refused(edit: Callable[[bytearray], None], message: str) -> None:
    with pytest.raises(DfcFormatError, match=message) as info:
        decode_file(resealed(GOLDEN, edit))
    assert type(info.value) is DfcFormatError and "\n" not in str(info.value)


def test_header_offsets_of_the_new_fields() -> None:
    """The fields after T, in order: S − exact_from, spacing code, flags (what the offsets above assume)."""
    data = encode_file(GOLDEN)
    assert data[16:25] == bytes.fromhex("e807" "e807" "de07" "01" "00" "05")  # S, T, 1000 − 10, quad, flags, 5 points
    small = encode_file(SMALL)
    assert small[12:18] == bytes.fromhex("03" "e807" "02" "00" "00")  # S=3, T=1000, 3 − 1, uniform, flags (4-byte id)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("exact_from", [1, 2, 3])
def test_exact_from_and_spacing_round_trip(exact_from: int, spacing: str) -> None:
    h = StreamHeader(bytes(4), 1, 1, "L", num_steps=3, chunk_bits=1, threads=1, exact_from=exact_from, spacing=spacing,
                     version=5)
    lowest = (TruncationPoint(exact_from, 1, 0xABCD),) if exact_from < 3 else ()  # the last lossy state, x_exact_from
    f = DfcFile(h, (TruncationPoint(3, 0, 0), *lowest, TruncationPoint(0, 2, 0x0102)), SMALL.words, image_crc32=0)
    g = decode_file(encode_file(f))
    assert g == f and (g.header.exact_from, g.header.spacing) == (exact_from, spacing)


def test_file_without_points_is_refused() -> None:
    body = bytearray(encode_file(SMALL)[:18])  # magic through flags (4-byte model id), then a point count of 0
    assert body[-3:] == b"\x02\x00\x00"  # S − exact_from = 2, spacing uniform, flags 0
    with pytest.raises(DfcFormatError, match="no truncation points"):
        decode_file(bytes(body) + bytes([0]) + binascii.crc_hqx(body + b"\0", 0xFFFF).to_bytes(2, "little"))


# ---- construction -------------------------------------------------------------------------------

def _header(**changes: object) -> StreamHeader:
    fields: dict[str, object] = dict(model_id=bytes(4), width=4, height=4, mode="L", num_steps=10,
                                     chunk_bits=8, threads=1, version=5)
    return StreamHeader(**{**fields, **changes})  # type: ignore[arg-type]


def _file(points: list[tuple[int, int]], n_words: int | None = None, crc: int | None = 0,
          words: np.ndarray | None = None, exact_from: int = 1) -> DfcFile:
    pts = tuple(TruncationPoint(t, e, 0) for t, e in points)
    if words is None:
        words = np.zeros(n_words if n_words is not None else (pts[-1].end_word if pts else 0), np.uint32)
    return DfcFile(_header(exact_from=exact_from), pts, words, crc)


def _partial_file(points: list[tuple[int, int, int]], crc: int | None = 0) -> DfcFile:
    pts = tuple(TruncationPoint(t, e, 0, sub) for t, e, sub in points)
    return DfcFile(_header(flags=container.FLAG_PARTIAL_POINTS), pts, np.zeros(pts[-1].end_word, np.uint32), crc)


@pytest.mark.parametrize("build", [
    lambda: _header(model_id=bytes(7)),
    lambda: _header(model_id="01234567"),
    lambda: _header(width=0),
    lambda: _header(height=MAX_SIDE + 1),
    lambda: _header(width=3.0),
    lambda: _header(width=True),
    lambda: _header(mode="CMYK"),
    lambda: _header(num_steps=0),
    lambda: _header(num_steps=MAX_STEPS + 1),
    lambda: _header(chunk_bits=64),
    lambda: _header(threads=256),
    lambda: _header(flags=4),  # no version defines bit 2
    lambda: _header(flags=container.FLAG_COARSE_TO_FINE, version=3, model_id=bytes(8)),  # a version-4 flag
    lambda: _header(flags=container.FLAG_PARTIAL_POINTS, version=3, model_id=bytes(8)),  # a version-4 flag
    lambda: _header(exact_from=11),  # exact_from > num_steps = 10
    lambda: _header(num_steps=1, exact_from=2),
    lambda: _header(exact_from=0),
    lambda: _header(exact_from=MAX_STEPS + 1),
    lambda: _header(exact_from=2.0),
    lambda: _header(spacing="linear"),
    lambda: _header(spacing="code 7"),  # what decode_file passes for an unknown spacing code
    lambda: _header(spacing=None),
    lambda: _header(spacing=0),
    lambda: TruncationPoint(-1, 0, 0),
    lambda: TruncationPoint(0, -1, 0),
    lambda: TruncationPoint(0, 0, 0x10000),
    lambda: _file([]),
    lambda: _file([(11, 0), (0, 1)]),  # first t above num_steps
    lambda: _file([(5, 0), (5, 1), (0, 2)]),  # t not decreasing
    lambda: _file([(5, 0), (6, 1)]),
    lambda: _file([(5, 2), (0, 1)]),  # end_word decreasing
    lambda: _file([(5, 0), (0, 2)], n_words=3),
    lambda: _file([(0, 2)], words=np.zeros(2, np.int64)),
    lambda: _file([(0, 2)], words=np.zeros((1, 2), np.uint32)),
    lambda: _file([(5, 0), (0, 2)], crc=None),  # complete without image_crc32
    lambda: _file([(5, 0), (1, 2)], crc=0),  # lossy with image_crc32
    lambda: _file([(0, 2)], crc=2**32),
    lambda: _file([(10, 0), (4, 1), (0, 2)], exact_from=5),  # a lossy point below exact_from
    lambda: _file([(4, 1)], crc=None, exact_from=5),  # also in a lossy (truncated) file
    lambda: TruncationPoint(3, 0, 0, subpixels=5),  # only t = 0 can be partial
    lambda: TruncationPoint(0, 0, 0, subpixels=-1),
    lambda: _partial_file([(5, 0, 0), (0, 1, 9), (0, 2, 9), (0, 3, 0)]),  # subpixels not increasing
    lambda: _partial_file([(5, 0, 0), (0, 1, 9), (0, 2, 4), (0, 3, 0)]),
    lambda: _partial_file([(5, 0, 0), (0, 1, 0), (0, 2, 4)], crc=None),  # the exact image before a partial point
    lambda: _partial_file([(5, 0, 0), (0, 1, 3), (0, 2, 4)], crc=0),  # partial: no image_crc32
    lambda: _partial_file([(5, 0, 0), (0, 1, 3), (0, 2, 0)], crc=None),  # exact: image_crc32 needed
    lambda: DfcFile(_header(), (TruncationPoint(5, 0, 0), TruncationPoint(0, 1, 0, 3)), np.zeros(1, np.uint32), None),  # no flag
])
def test_invalid_fields_are_refused_on_construction(build: Callable[[], object]) -> None:
    with pytest.raises(DfcFormatError):
        build()


def test_lossy_points_down_to_exact_from_are_accepted() -> None:
    f = _file([(10, 0), (5, 1), (0, 2)], exact_from=5)
    assert decode_file(encode_file(f)) == f
    assert _file([(10, 0), (0, 2)], exact_from=5).complete  # the point at exact_from need not be in the table
    assert _file([(10, 0)], crc=None, exact_from=10).points[-1].t == 10
    assert StreamHeader(bytes(3), 4, 4, "L", 10, 8, 1, exact_from=np.int64(10)).exact_from == 10


def test_construction_normalises_numpy_ints_and_freezes_words() -> None:
    p = TruncationPoint(np.int64(3), np.uint64(2), np.uint16(7))
    assert (type(p.t), type(p.end_word), type(p.check)) == (int, int, int)
    words = np.array([1, 2], np.uint32)
    f = DfcFile(_header(), (p,), words, None)
    words[0] = 99
    assert f.words[0] == 1 and not f.words.flags.writeable


# ---- describe and size -------------------------------------------------------------------------

def test_describe_is_json_and_sizes_match_real_files() -> None:
    d = json.loads(json.dumps(describe(GOLDEN)))
    assert d["model_id"] == "0123456789abcdef" and (d["width"], d["height"], d["mode"]) == (32, 24, "RGB")
    assert d["complete"] and not d["cut"] and d["total_bytes"] == len(encode_file(GOLDEN))
    assert [p["t"] for p in d["points"]] == [1000, 999, 500, 10, 0]  # S = T: paper t = chain t for any spacing
    assert (d["exact_from_t"], d["spacing"], d["num_steps"], d["schedule_steps"]) == (10, "quad", 1000, 1000)
    for p in d["points"]:
        assert p["bytes"] == len(encode_file(truncate(GOLDEN, p["t"])))
    cut = describe(decode_file(encode_file(GOLDEN)[:-1]))
    assert (cut["complete"], cut["cut"], cut["points_lost"]) == (False, True, 1)


def test_overhead_of_a_cifar_size_file() -> None:
    """8 points, 1700-byte payload, 32x32 RGB: 58 bytes of framing (docs/format.md, "Size")."""
    ends = [2, 40, 90, 150, 210, 250, 290, 425]
    for spacing in SPACINGS:
        f = DfcFile(StreamHeader(bytes(4), 32, 32, "RGB", num_steps=100, chunk_bits=12, threads=2, spacing=spacing,
                                 version=5),
                    tuple(TruncationPoint(t, e, 0xABCD) for t, e in zip([100, 50, 25, 12, 6, 3, 1, 0], ends)),
                    np.zeros(425, np.uint32), image_crc32=0x12345678)
        assert len(encode_file(f)) - 1700 == 58, spacing
        v6 = DfcFile(replace(f.header, model_id=bytes(3), threads=1, version=6), f.points, f.words, f.image_crc32)
        assert len(encode_file(v6)) - 1700 == 51, spacing  # magic 2, model id 1, threads 1, T 2, spacing 1 fewer


def test_overhead_figures_of_the_size_section() -> None:
    """The other figures of docs/format.md, "Size"."""
    # S = 1000: S and S − exact_from take two bytes each, and so do the three gaps of 128 or more steps.
    ends = [2, 40, 90, 150, 210, 250, 290, 425]
    f = DfcFile(StreamHeader(bytes(4), 32, 32, "RGB", num_steps=1000, chunk_bits=12, threads=2, version=5),
                tuple(TruncationPoint(t, e, 0xABCD) for t, e in zip([1000, 500, 250, 120, 60, 30, 10, 0], ends)),
                np.zeros(425, np.uint32), image_crc32=0x12345678)
    assert len(encode_file(f)) - 1700 == 63
    # Only x_T and x_0 (the chain stopped right after x_T: exact_from = S), S < 128, payload < 128 words.
    h = StreamHeader(bytes(4), 32, 32, "RGB", num_steps=100, chunk_bits=12, threads=2, exact_from=100, version=5)
    two = DfcFile(h, (TruncationPoint(100, 2, 0xABCD), TruncationPoint(0, 100, 0xABCD)), np.zeros(100, np.uint32), 0)
    assert len(encode_file(two)) - 400 == 33


# ---- fuzzing: about 200 examples in all, a second or two -----------------------------------------

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # the CPU may be busy training


@st.composite
def dfc_files(draw: st.DrawFn) -> DfcFile:
    num_steps = draw(st.integers(1, MAX_STEPS))
    n = draw(st.integers(1, min(num_steps + 1, 10)))
    ts = sorted(draw(st.sets(st.integers(0, num_steps), min_size=n, max_size=n)), reverse=True)
    ends = sorted(draw(st.lists(st.integers(0, 200), min_size=n, max_size=n)))
    version = draw(st.sampled_from(container.READABLE_VERSIONS))
    if first_point_implied(version):  # the first point is x_S at no words
        ts, ends = [num_steps] + [t for t in ts if t != num_steps][: n - 1], [0] + ends[1:]
    seed = draw(st.integers(0, 2**32 - 1))
    lowest_lossy = min((t for t in ts if t > 0), default=num_steps)
    id_bytes = container.model_id_bytes(version)
    header = StreamHeader(
        version=version, model_id=draw(st.binary(min_size=id_bytes, max_size=id_bytes)), width=draw(st.integers(1, MAX_SIDE)),
        height=draw(st.integers(1, MAX_SIDE)), mode=draw(st.sampled_from(["L", "RGB", "RGBA"])),
        num_steps=num_steps, chunk_bits=draw(st.integers(1, 63)),
        threads=1 if version in container.COMPACT_VERSIONS else draw(st.integers(1, 255)),
        schedule_steps=draw(st.sampled_from([1000, 1000, 1, 4000, 100_000])),
        exact_from=draw(st.integers(1, lowest_lossy)), spacing=draw(st.sampled_from(SPACINGS)))
    subs = [0] * len(ts)
    if version >= 4 and draw(st.booleans()):  # partial points in the exact stage, maybe without the exact image
        header = replace(header, flags=container.FLAG_PARTIAL_POINTS)
        if ts[-1] == 0:
            parts = sorted(draw(st.sets(st.integers(1, 10**6), min_size=1, max_size=3)))
            final = draw(st.booleans())
            ts = ts[:-1] + [0] * (len(parts) + final)
            subs = [0] * (len(ts) - len(parts) - final) + parts + [0] * final
            ends = sorted(ends + draw(st.lists(st.integers(0, 200), min_size=len(ts) - len(ends), max_size=len(ts) - len(ends))))
    checks = st.just(0) if container.payload_check(version) else st.integers(0, 0xFFFF)  # version 8: none per point
    points = tuple(TruncationPoint(t, e, draw(checks), sub) for t, e, sub in zip(ts, ends, subs))
    if first_point_implied(version):
        points = (container.implied_point(header), *points[1:])
    words = np.random.default_rng(seed).integers(0, 2**32, ends[-1], dtype=np.uint32)
    crc = draw(st.integers(0, 2**32 - 1)) if points[-1].exact else None
    return DfcFile(header, points, words, crc)


@settings(FUZZ, max_examples=60)
@given(dfc_files(), st.floats(0, 1))
def test_fuzz_round_trip_and_cut(f: DfcFile, where: float) -> None:
    data = encode_file(f)
    assert decode_file(data) == f
    assert_cut_behaviour(f, data, round(where * len(data)))


@settings(FUZZ, max_examples=40)
@given(st.binary(max_size=64) | st.binary(max_size=64).map(lambda b: MAGIC + bytes([5]) + b)
       | st.binary(max_size=64).map(lambda b: container.COMPACT_MAGIC + bytes([VERSION]) + b))
def test_fuzz_random_bytes(data: bytes) -> None:
    assert_only_format_errors(data)


_EDITS = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 4)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
)


@settings(FUZZ, max_examples=100)
@given(st.sampled_from([GOLDEN, SMALL, GOLDEN_PARTIAL, GOLDEN_V6, GOLDEN_V6_T, GOLDEN_V7, GOLDEN_V7_FLOOR, GOLDEN_V8,
                        GOLDEN_V8_FLOOR]),
       st.lists(_EDITS, min_size=1, max_size=4),
       st.booleans())
def test_fuzz_mutated_files(f: DfcFile, edits: list[tuple[str, int, object]], in_header: bool) -> None:
    data = bytearray(encode_file(f))
    span = head_len(f, bytes(data)) + 4 if in_header else len(data) + 1  # mostly hit the header and table
    for kind, pos, arg in edits:
        i = pos % max(1, min(span, len(data) + 1))
        if kind == "set" and i < len(data):
            data[i] = arg  # type: ignore[assignment]
        elif kind == "flip" and i < len(data):
            data[i] ^= 1 << arg  # type: ignore[operator]
        elif kind == "insert":
            data[i:i] = arg  # type: ignore[assignment]
        elif kind == "delete":
            del data[i:i + arg]  # type: ignore[operator]
        elif kind == "cut":
            del data[i:]
    assert_only_format_errors(bytes(data))


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate-golden"]:
        sys.exit(__doc__)
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    for path, f in ((GOLDEN_V4_PATH, GOLDEN_V4), (GOLDEN_PARTIAL_PATH, GOLDEN_PARTIAL), (GOLDEN_V6_PATH, GOLDEN_V6),
                    (GOLDEN_V7_PATH, GOLDEN_V7), (GOLDEN_V8_PATH, GOLDEN_V8)):
        path.write_bytes(encode_file(f))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def test_stream_position_orders_lossy_then_partial_then_exact():
    from diffcodec.container import stream_position

    order = [(1000, None), (8, None), (0, 0.2), (0, 0.5), (0, None)]
    keys = [stream_position(t, p) for t, p in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_coarse_to_fine_flag_round_trips_and_counts_its_symbols() -> None:
    """FLAG_COARSE_TO_FINE (version 4) changes no byte layout; describe() counts a bin more per colour subpixel."""
    flags = container.FLAG_PARTIAL_POINTS | container.FLAG_COARSE_TO_FINE
    pts = (TruncationPoint(5, 0, 0), TruncationPoint(0, 1, 0, 3), TruncationPoint(0, 2, 0))
    f = DfcFile(_header(flags=flags, mode="RGB"), pts, np.zeros(2, np.uint32), 0)
    g = decode_file(encode_file(f))
    assert g.header.flags == flags and [p.subpixels for p in g.points] == [0, 3, 0]
    d = describe(g)
    h = g.header
    assert d["coarse_to_fine"] and d["exact_symbols"] == h.width * h.height * (len(h.mode) + 3)
    plain = describe(_partial_file([(5, 0, 0), (0, 1, 3), (0, 2, 0)]))
    assert not plain["coarse_to_fine"] and plain["exact_symbols"] == h.width * h.height * 1  # an L image


# ---- version 6: the compact header ----------------------------------------------------------------

def test_version6_golden_vector() -> None:
    data = GOLDEN_V6_PATH.read_bytes()
    assert encode_file(GOLDEN_V6) == data, "format changed: see the module docstring before regenerating"
    assert decode_file(data) == GOLDEN_V6
    # magic, version, model id, 32, 24, RGB | chunk 12, S = 1000, S − exact_from = 990, flags partial | quad, 6 points
    assert data[:14] == bytes.fromhex("df" "06" "012345" "20" "18" "4c" "e807" "de07" "05" "06")
    # x_T's row: t gap 0, no words (end_word 0), its check
    assert data[14:18] == bytes.fromhex("00" "00" "1111")
    # 7 bytes fewer than version 4: magic 2, model id 1, threads 1, T 2, spacing 1 (now a flag bit)
    assert len(data) == len(GOLDEN_PARTIAL_PATH.read_bytes()) - 7


def test_version6_stores_t_only_when_it_is_not_the_default() -> None:
    data, default = encode_file(GOLDEN_V6_T), encode_file(GOLDEN_V6)
    assert data[12:15] == bytes.fromhex("09" "a01f")  # flags partial | T stored, then T = 4000
    assert len(data) == len(default) + 2 and decode_file(data) == GOLDEN_V6_T
    # T = 1000 stored explicitly would be a second encoding of the same header: refused.
    body = bytearray(default[:head_len(GOLDEN_V6, default) - 2])
    assert body[12] == 0x05
    body[12:13] = bytes.fromhex("0d" "e807")
    sealed = bytes(body) + binascii.crc_hqx(bytes(body), 0xFFFF).to_bytes(2, "little") + default[head_len(GOLDEN_V6, default):]
    with pytest.raises(DfcFormatError, match="stored though it is the default"):
        decode_file(sealed)


def test_version6_refuses_unknown_flag_bits_and_a_thread_count() -> None:
    data = encode_file(GOLDEN_V6)
    body = bytearray(data[:head_len(GOLDEN_V6, data) - 2])
    body[12] |= 0x10  # a bit version 6 does not define
    sealed = bytes(body) + binascii.crc_hqx(bytes(body), 0xFFFF).to_bytes(2, "little") + data[head_len(GOLDEN_V6, data):]
    with pytest.raises(DfcFormatError, match="flags"):
        decode_file(sealed)
    with pytest.raises(DfcFormatError, match="stores no thread count"):
        replace(GOLDEN_V6.header, threads=2)


def test_version6_magic_and_version_must_agree() -> None:
    data = encode_file(GOLDEN_V6)
    with pytest.raises(DfcFormatError, match="unsupported .dfc version 5"):
        decode_file(data[:1] + bytes([5]) + data[2:])
    with pytest.raises(DfcFormatError, match="unsupported .dfc version 6"):
        decode_file(MAGIC + bytes([6]) + data[2:])
    with pytest.raises(DfcFormatError, match="ends inside the .dfc header"):
        decode_file(data[:1])


@pytest.mark.parametrize("f", [GOLDEN_V6, GOLDEN_V6_T], ids=["default-t", "t-stored"])
def test_version6_cut_at_every_byte(f: DfcFile) -> None:
    data = encode_file(f)
    for k in range(len(data) + 1):
        assert_cut_behaviour(f, data, k)



def test_version6_x_T_alone_is_a_file_of_its_header() -> None:
    first = keep_points(GOLDEN_V6, 1)
    data = encode_file(first)
    assert len(first.words) == 0 and len(data) == 14 + 4 + 2  # header fields and count, x_T's row, header check
    assert decode_file(data) == first


# ---- version 7: flags in the version byte, default coding fields, the implied first point --------------

def _resealed_head(f: DfcFile, head: bytes) -> bytes:
    """A file with `f`'s payload after the header bytes `head` (its check recomputed)."""
    data = encode_file(f)
    return head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "little") + data[head_len(f, data):]


def test_version7_golden_vector() -> None:
    data = GOLDEN_V7_PATH.read_bytes()
    assert encode_file(GOLDEN_V7) == data, "format changed: see the module docstring before regenerating"
    assert decode_file(data) == GOLDEN_V7
    # magic, version 7 | flags partial | quad in bits 4-6 | more flags (coding fields stored), flags >> 3 = 2,
    # model id, 32, 24, RGB | chunk 12, S = 1000, S − exact_from = 990, 5 rows (x_S has none)
    assert data[:14] == bytes.fromhex("df" "d7" "02" "012345" "20" "18" "4c" "e807" "de07" "05")
    # the first row is t = 500's: t gap 1000 − 1 − 500 = 499, end_word 3, its check
    assert data[14:19] == bytes.fromhex("f303" "03" "3333")
    # 4 bytes fewer than version 6: x_S's row (t gap, end_word, 2-byte check); the flags' byte moved
    assert len(data) == len(GOLDEN_V6_PATH.read_bytes()) - 4


def test_version7_default_file_cut_at_x_S_is_11_bytes() -> None:
    """The floor of every default 32x32 prefix: 88 bits, 0.029 bits/dim (issue 19: at most 0.03)."""
    data = encode_file(GOLDEN_V7_FLOOR)
    # magic, version 7 | quad, model id, 32, 32, S − exact_from = 42, no rows, header check
    assert data[:9] == bytes.fromhex("df" "47" "abcdef" "20" "20" "2a" "00") and len(data) == 11
    assert decode_file(data) == GOLDEN_V7_FLOOR
    assert 8 * len(data) / (32 * 32 * 3) < 0.03


def test_version7_stores_each_header_one_way() -> None:
    head = encode_file(GOLDEN_V7_FLOOR)[:-2]
    # the defaults stored explicitly (coding fields flag, RGB | 13, S = 50): a second encoding, refused
    explicit = bytes([head[0], 0x80 | head[1], 0x02]) + head[2:7] + bytes([1 << 6 | 13, 50]) + head[7:]
    with pytest.raises(DfcFormatError, match="stored though they are the defaults"):
        decode_file(_resealed_head(GOLDEN_V7_FLOOR, explicit))
    # "more flags" with none: refused
    with pytest.raises(DfcFormatError, match="flags varint of 0"):
        decode_file(_resealed_head(GOLDEN_V7_FLOOR, bytes([head[0], 0x80 | head[1], 0x00]) + head[2:]))
    # a version-6 byte never carries flag bits: 0x16 is no version this reads
    v6 = encode_file(GOLDEN_V6)
    with pytest.raises(DfcFormatError, match="unsupported .dfc version 22"):
        decode_file(v6[:1] + bytes([0x16]) + v6[2:])


def test_version7_coding_fields_round_trip_when_not_default() -> None:
    for change in ({"mode": "L"}, {"chunk_bits": 12}, {"num_steps": 100, "exact_from": 8}, {"schedule_steps": 4000}):
        h = replace(GOLDEN_V7_FLOOR.header, **change)
        f = DfcFile(h, (container.implied_point(h),), np.zeros(0, np.uint32), None)
        data = encode_file(f)
        assert decode_file(data) == f and len(data) == 11 + 3  # a flags byte, then mode and S, or T's two bytes


def test_version7_first_point_is_implied() -> None:
    with pytest.raises(DfcFormatError, match="first point is x_S"):
        replace(GOLDEN_V7, points=(TruncationPoint(t=1000, end_word=0, check=0x1111), *GOLDEN_V7.points[1:]))
    with pytest.raises(DfcFormatError, match="first point is x_S"):
        replace(GOLDEN_V7, points=GOLDEN_V7.points[1:])
    # a cut keeps x_S's point for free: the table lists the cut point alone, as in version 6
    cut = container.keep_points(GOLDEN_V7, 3)
    assert cut.points == (GOLDEN_V7.points[0], GOLDEN_V7.points[2])
    # a 21-byte head: 16 of header, the t = 10 row (gap 989: 2 bytes, 20 words, check 2), the header check
    assert len(encode_file(cut)) == container.cut_size(GOLDEN_V7, 3) == 21 + 4 * 20
    assert decode_file(encode_file(cut)) == cut


# ---- version 8: one check of the payload instead of a check per row -----------------------------------

def test_version8_golden_vector() -> None:
    data = GOLDEN_V8_PATH.read_bytes()
    assert encode_file(GOLDEN_V8) == data, "format changed: see the module docstring before regenerating"
    assert decode_file(data) == GOLDEN_V8
    # the same header as version 7's but for the version's low bits
    assert data[:14] == bytes.fromhex("df" "d8" "02" "012345" "20" "18" "4c" "e807" "de07" "05")
    # the first row is t = 500's: t gap 499, end_word 3, and no check
    assert data[14:17] == bytes.fromhex("f303" "03")
    # 2 bytes fewer a row (5 rows), 2 more for the payload's check
    assert len(data) == len(GOLDEN_V7_PATH.read_bytes()) - 2 * 5 + 2
    head = head_len(GOLDEN_V8, data)
    crc = binascii.crc_hqx(GOLDEN.words.astype("<u4").tobytes(), 0xFFFF)
    # after the rows: the payload check, image_crc32, the header check
    assert data[head - 8:head - 6] == crc.to_bytes(2, "little")
    assert data[head - 6:head - 2] == GOLDEN.image_crc32.to_bytes(4, "little")


def test_version8_points_carry_no_check() -> None:
    with pytest.raises(DfcFormatError, match="points have no checks"):
        replace(GOLDEN_V8, points=(*GOLDEN_V8.points[:-1], replace(GOLDEN_V8.points[-1], check=1)))


def test_version8_payload_check_catches_every_flipped_payload_bit_of_the_golden_vector() -> None:
    data = encode_file(GOLDEN_V8)
    head = head_len(GOLDEN_V8, data)
    for i in range(head, len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(DfcFormatError, match="payload check failed"):
                decode_file(bytes(bad))


def test_version8_cut_files_have_their_own_check_and_byte_cuts_read_unchecked() -> None:
    for n in range(2, len(GOLDEN_V8.points) + 1):
        cut = container.keep_points(GOLDEN_V8, n)
        data = encode_file(cut)
        assert decode_file(data) == cut and len(data) == container.cut_size(GOLDEN_V8, n)
        if cut.words.size:  # a flipped payload bit of a truncated file is caught by its own check
            bad = bytearray(data)
            bad[-1] ^= 0x80
            with pytest.raises(DfcFormatError, match="payload check failed"):
                decode_file(bytes(bad))
    # a cut at a byte no point ends at keeps the points whose words survived; their words are not checkable
    data = encode_file(GOLDEN_V8)
    cut = decode_file(data[:-3])
    assert cut.cut and cut.unchecked and cut.points == GOLDEN_V8.points[:len(cut.points)]


def test_version8_unchecked_words_are_not_given_a_fresh_check() -> None:
    """A byte-cut file's words stay unchecked through truncate and keep_points, and encode_file refuses them:
    otherwise a corrupt byte-cut file, cut again, would come out with a valid check."""
    data = bytearray(encode_file(GOLDEN_V8)[:-3])
    data[head_len(GOLDEN_V8, encode_file(GOLDEN_V8)) + 2] ^= 0x04  # a flipped payload bit in the kept words
    cut = decode_file(bytes(data))
    assert cut.unchecked
    for smaller in (container.keep_points(cut, len(cut.points) - 1), container.truncate(cut, cut.points[-2].t)):
        assert smaller.unchecked == (smaller.points[-1].end_word > 0)
    with pytest.raises(DfcFormatError, match="never checked"):
        encode_file(container.keep_points(cut, len(cut.points) - 1))
    assert describe(cut)["unchecked"]
    # a cut that keeps no words (x_S alone) has nothing to check
    assert not container.keep_points(cut, 1).unchecked


def test_version8_a_failed_payload_check_can_still_be_described() -> None:
    data = bytearray(encode_file(GOLDEN_V8))
    data[-1] ^= 0x01
    with pytest.raises(DfcFormatError, match="payload check failed"):
        decode_file(bytes(data))
    f = decode_file(bytes(data), check_payload=False)
    assert f.unchecked and not f.cut and f.complete


def test_version8_default_file_cut_at_x_S_is_still_11_bytes() -> None:
    """No payload words, no payload check: the floor stays 0.029 bits/dim."""
    data = encode_file(GOLDEN_V8_FLOOR)
    assert data[:9] == bytes.fromhex("df" "48" "abcdef" "20" "20" "2a" "00") and len(data) == 11
    assert decode_file(data) == GOLDEN_V8_FLOOR
