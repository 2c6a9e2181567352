"""The .dfc container: header, truncation-point table and range-coder payload of one image.

The codec writes one stream of 32-bit words for the whole chain (x_T, each coded
step, then x_0 losslessly). The container stores those words once, after a
table saying how many words reach each truncation point, so:

* a smaller file is made by cutting words and keeping the table row of the point it ends
  at (`truncate`);
* a file cut at any byte still reads up to the last point whose words survived
  (`decode_file` sets ``points_lost``).

Byte layout, semantics and versioning: docs/format.md.

Examples:
    >>> import numpy as np
    >>> header = StreamHeader(model_id=bytes(3), width=32, height=32, mode="RGB",
    ...                       num_steps=100, chunk_bits=12, threads=1)
    >>> points = (TruncationPoint(t=100, end_word=0, check=0),  # x_S, at no words: version 7 on stores no row for it
    ...           TruncationPoint(t=50, end_word=3, check=0),  # version 8: no check per point, one of the payload
    ...           TruncationPoint(t=0, end_word=5, check=0))
    >>> f = DfcFile(header, points, np.arange(5, dtype=np.uint32), image_crc32=0xCAFE)
    >>> data = encode_file(f)
    >>> decode_file(data) == f
    True
    >>> cut = decode_file(data[:-6])  # cut inside the 4th payload word: t=0 is lost
    >>> (cut.points[-1].t, cut.points_lost, cut.image_crc32)
    (50, 1, None)
    >>> len(encode_file(truncate(f, 50))) == describe(f)["points"][1]["bytes"]
    True
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np

from .errors import DiffcodecError
from .format import (COMPACT_MAGIC, COMPACT_VERSIONS, DEFAULT_CHUNK_BITS, DEFAULT_MODE, DEFAULT_NUM_STEPS,
                     DEFAULT_SCHEDULE_STEPS, FLAG_COARSE_TO_FINE, FLAG_CODING_FIELDS, FLAG_PARTIAL_POINTS,
                     FLAG_QUAD_SPACING, FLAG_SCHEDULE_STEPS, HEADER_CHECK_INIT, MAGIC, MAX_CHUNK_BITS, MAX_END_WORD,
                     MAX_SCHEDULE_STEPS, MAX_SIDE, MAX_STEPS, MAX_SUBPIXELS, MAX_THREADS, MAX_VARINT_BYTES,
                     MODEL_ID_BYTES, MODES, MORE_FLAGS, PAYLOAD_CHECK_INIT, READABLE_VERSIONS, SPACINGS, VERSION,
                     VERSION_BYTE_FLAG_BITS, VERSION_MASK, first_point_implied, known_flags, layout_flags,
                     min_point_bytes, model_id_bytes, payload_check)
from .profile import StreamProfile
from .timeline import Timeline

__all__ = [  # the format's constants, re-exported for the code that has always imported them from here
    "FLAG_COARSE_TO_FINE", "FLAG_PARTIAL_POINTS", "MAGIC", "MAX_SIDE", "MAX_STEPS", "MODEL_ID_BYTES", "MODES",
    "READABLE_VERSIONS", "VERSION", "known_flags", "model_id_bytes",
    "DfcFile", "DfcFormatError", "StreamHeader", "TruncationPoint", "chain_position", "decode_file", "describe",
    "cut_size", "encode_file", "fit_bytes", "head_size", "keep_points", "paper_timestep", "stream_position", "truncate",
]


class DfcFormatError(DiffcodecError):
    """Not a .dfc file, an unsupported version, or a malformed, corrupt or cut one."""


def _int(name: str, value: object, lo: int, hi: int) -> int:
    """`value` as a Python int in lo..hi, or DfcFormatError."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise DfcFormatError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value <= hi:
        raise DfcFormatError(f"{name} must be in {lo}..{hi}, got {value}")
    return value


@dataclass(frozen=True)
class StreamHeader:
    """What a decoder needs before the first word: model, image shape and coding parameters."""

    model_id: bytes  # first bytes of the model's SHA-256 identity: 3 (version 6), 4 (versions 4–5) or 8 (1–3)
    width: int  # pixels, 1..65535
    height: int  # pixels, 1..65535
    mode: str  # "L", "RGB" or "RGBA"
    num_steps: int  # S, steps of the respaced chain the stream codes, 1..4000
    chunk_bits: int  # channel-simulation chunk size parameter, 1..63
    threads: int  # torch thread count of the encoder, 1..255 (versions 1–4: the decoder must use the same; 6: not stored, 1)
    flags: int = 0  # must-understand feature bits: FLAG_PARTIAL_POINTS, FLAG_COARSE_TO_FINE (version 4); 1–3 define none
    schedule_steps: int = 1000  # T of the model's training chain: with num_steps it maps chain t to paper t
    exact_from: int = 1  # chain t of the state the exact stage codes x_0 from (1: x_1, the paper's L_0)
    spacing: str = "uniform"  # how the S steps are spread over T (diffusion.SPACINGS)
    version: int = VERSION  # format version: the payload's meaning differs, and 6 has the compact header

    def __post_init__(self) -> None:
        if self.version not in READABLE_VERSIONS:
            raise DfcFormatError(f"unsupported .dfc version {self.version}")
        if not isinstance(self.model_id, (bytes, bytearray)) or len(self.model_id) != model_id_bytes(self.version):
            raise DfcFormatError(f"model_id must be {model_id_bytes(self.version)} bytes in version {self.version}, got {self.model_id!r}")
        object.__setattr__(self, "model_id", bytes(self.model_id))
        if self.mode not in MODES:
            raise DfcFormatError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name, hi in (("width", MAX_SIDE), ("height", MAX_SIDE), ("num_steps", MAX_STEPS),
                         ("chunk_bits", MAX_CHUNK_BITS), ("threads", MAX_THREADS),
                         ("schedule_steps", MAX_SCHEDULE_STEPS), ("exact_from", MAX_STEPS)):
            object.__setattr__(self, name, _int(name, getattr(self, name), 1, hi))
        if self.spacing not in SPACINGS:
            raise DfcFormatError(f"spacing must be one of {', '.join(SPACINGS)}, got {self.spacing!r}")
        if self.version in COMPACT_VERSIONS and self.threads != 1:
            raise DfcFormatError(f"version {self.version} stores no thread count: threads must be 1, got {self.threads}")
        if self.exact_from > self.num_steps:
            raise DfcFormatError(f"exact_from={self.exact_from} > num_steps={self.num_steps}")
        flags = _int("flags", self.flags, 0, 2**63 - 1)
        if flags & ~known_flags(self.version):
            raise DfcFormatError(f"flags {flags:#x} use bits .dfc version {self.version} does not define")
        object.__setattr__(self, "flags", flags)

    @property
    def profile(self) -> StreamProfile:
        """What this file's version and flags mean for its stream (diffcodec/profile.py)."""
        return StreamProfile.of(self)

    @property
    def timeline(self) -> Timeline:
        """The chain this file codes: its steps, chain positions and paper timesteps (diffcodec/timeline.py)."""
        return Timeline.of(self)


@dataclass(frozen=True)
class TruncationPoint:
    """A place where the stream may stop: the state x_t is decodable from the first end_word words.

    A *partial* point (t = 0, ``subpixels`` > 0; files with :data:`FLAG_PARTIAL_POINTS`) lies inside the
    exact stage: the first ``subpixels`` subpixels of x_0, in the exact stage's coding order, are decoded.
    """

    t: int  # S..1: lossy state x_t (chain index); 0: the exact image, or a partial one
    end_word: int  # payload words needed to decode up to here
    check: int  # 16-bit check value of the codec; opaque to the container (version 8: none, always 0)
    subpixels: int = 0  # t = 0 only: exact-stage subpixels decoded at a partial point; 0 = not partial

    def __post_init__(self) -> None:
        object.__setattr__(self, "t", _int("t", self.t, 0, MAX_STEPS))
        object.__setattr__(self, "end_word", _int("end_word", self.end_word, 0, MAX_END_WORD))
        object.__setattr__(self, "check", _int("check", self.check, 0, 0xFFFF))
        object.__setattr__(self, "subpixels", _int("subpixels", self.subpixels, 0, MAX_SUBPIXELS))
        if self.subpixels and self.t != 0:
            raise DfcFormatError(f"only a point at t=0 can be partial, got t={self.t} with subpixels={self.subpixels}")

    @property
    def partial(self) -> bool:
        """True inside the exact stage: x_0 is known only for the first ``subpixels`` subpixels."""
        return self.subpixels > 0

    @property
    def exact(self) -> bool:
        """True for the point that decodes to the exact image."""
        return self.t == 0 and not self.partial


@dataclass(frozen=True, eq=False)
class DfcFile:
    """One coded image: header, truncation points in stream order, payload words.

    Invariants (checked on construction): at least one point; t strictly
    decreasing from at most num_steps, except that partial points (t = 0,
    ``subpixels`` strictly increasing) may follow each other and precede the
    exact image, which is last; partial points only with FLAG_PARTIAL_POINTS;
    end_word non-decreasing; ``len(words) == points[-1].end_word``;
    ``image_crc32`` given iff the last point is the exact image.
    ``points_lost`` counts table rows a cut file lost (0 otherwise); it is not
    written by `encode_file`. ``unchecked`` marks a version-8 file whose payload
    words were never checked (read from a file cut at an arbitrary byte, or with
    ``decode_file(check_payload=False)``); `encode_file` refuses to give such words
    a fresh check unless asked to.
    """

    header: StreamHeader
    points: tuple[TruncationPoint, ...]
    words: np.ndarray  # uint32 payload, read-only
    image_crc32: int | None  # zlib.crc32 of the exact image's uint8 samples, C order (H, W, C)
    points_lost: int = 0
    unchecked: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.header, StreamHeader):
            raise DfcFormatError(f"header must be a StreamHeader, got {type(self.header).__name__}")
        points = tuple(self.points)
        if not points:
            raise DfcFormatError("a .dfc file needs at least one truncation point")
        if not all(isinstance(p, TruncationPoint) for p in points):
            raise DfcFormatError("points must be TruncationPoint objects")
        if points[0].t > self.header.num_steps:
            raise DfcFormatError(f"first point has t={points[0].t} > num_steps={self.header.num_steps}")
        if first_point_implied(self.header.version) and points[0] != implied_point(self.header):
            raise DfcFormatError(
                f"a version-{self.header.version} file's first point is x_S, at no words with check 0 "
                f"({implied_point(self.header)}), got {points[0]}")
        if payload_check(self.header.version) and any(p.check for p in points):
            raise DfcFormatError(f"a version-{self.header.version} file's points have no checks (check 0): "
                                 "one check covers its payload")
        lossy_tail = [p.t for p in points if p.t != 0]
        if lossy_tail and min(lossy_tail) < self.header.exact_from:
            raise DfcFormatError(f"a lossy point has t={min(lossy_tail)} below exact_from={self.header.exact_from}")
        if any(p.partial for p in points) and not self.header.profile.partial_points:
            raise DfcFormatError("partial points need the header flag FLAG_PARTIAL_POINTS")
        for prev, cur in zip(points, points[1:]):
            if prev.exact:
                raise DfcFormatError("the exact image must be the last point")
            if prev.partial and not (cur.exact or cur.subpixels > prev.subpixels):
                raise DfcFormatError(
                    f"partial points must increase in subpixels, got {cur.subpixels} after {prev.subpixels}")
            if not prev.partial and cur.t >= prev.t:
                raise DfcFormatError(f"t must decrease along the points, got t={cur.t} after t={prev.t}")
            if cur.end_word < prev.end_word:
                raise DfcFormatError(
                    f"end_word must not decrease, got {cur.end_word} (t={cur.t}) after {prev.end_word}")
        object.__setattr__(self, "points", points)

        words = self.words
        if not isinstance(words, np.ndarray) or words.dtype != np.uint32 or words.ndim != 1:
            raise DfcFormatError("words must be a 1-D numpy.uint32 array")
        if len(words) != points[-1].end_word:
            raise DfcFormatError(
                f"payload has {len(words)} words, the last point needs exactly {points[-1].end_word}")
        if words.flags.writeable:
            words = words.copy()
            words.setflags(write=False)
        object.__setattr__(self, "words", words)

        if (self.image_crc32 is None) == self.complete:
            raise DfcFormatError("image_crc32 must be given iff the last point is the exact image")
        if self.image_crc32 is not None:
            object.__setattr__(self, "image_crc32", _int("image_crc32", self.image_crc32, 0, 0xFFFFFFFF))
        object.__setattr__(self, "points_lost", _int("points_lost", self.points_lost, 0, MAX_STEPS))
        if not isinstance(self.unchecked, bool):
            raise DfcFormatError(f"unchecked must be a bool, got {self.unchecked!r}")

    @property
    def complete(self) -> bool:
        """True when the file reaches the exact image."""
        return self.points[-1].exact

    @property
    def cut(self) -> bool:
        """True when read from a file cut short: it decodes only to points[-1].t."""
        return self.points_lost > 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DfcFile):
            return NotImplemented
        return (self.header == other.header and self.points == other.points
                and self.image_crc32 == other.image_crc32 and self.points_lost == other.points_lost
                and self.unchecked == other.unchecked
                and np.array_equal(self.words, other.words))

    __hash__ = None  # type: ignore[assignment]  # holds an array


# ---- writing ----------------------------------------------------------------------------------

def _varint(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def implied_point(h: StreamHeader) -> TruncationPoint:
    """The first point of a version-7 file, which its table does not list (format.first_point_implied)."""
    return TruncationPoint(t=h.num_steps, end_word=0, check=0)


def _coding_fields_default(h: StreamHeader) -> bool:
    return (h.mode, h.chunk_bits, h.num_steps) == (DEFAULT_MODE, DEFAULT_CHUNK_BITS, DEFAULT_NUM_STEPS)


def _header_fields(h: StreamHeader) -> bytes:
    """Magic through flags (versions 6 and 7: through schedule_steps): everything before the point count."""
    if h.version in COMPACT_VERSIONS:
        custom_t = h.schedule_steps != DEFAULT_SCHEDULE_STEPS
        coding = h.version < 7 or not _coding_fields_default(h)
        wire_flags = (h.flags | (FLAG_QUAD_SPACING if h.spacing == "quad" else 0) | (FLAG_SCHEDULE_STEPS if custom_t else 0)
                      | (FLAG_CODING_FIELDS if coding and h.version >= 7 else 0))
        coding_fields = bytes((MODES.index(h.mode) << 6 | h.chunk_bits,)) + _varint(h.num_steps) if coding else b""
        if h.version >= 7:  # the flags' low bits ride in the version byte, the rest (if any) in a varint after it
            low, high = wire_flags & (1 << VERSION_BYTE_FLAG_BITS) - 1, wire_flags >> VERSION_BYTE_FLAG_BITS
            flag_bytes = bytes((h.version | low << 4 | (MORE_FLAGS if high else 0),)) + (_varint(high) if high else b"")
            return b"".join((
                COMPACT_MAGIC, flag_bytes, h.model_id, _varint(h.width), _varint(h.height), coding_fields,
                _varint(h.num_steps - h.exact_from), _varint(h.schedule_steps) if custom_t else b"",
            ))
        return b"".join((
            COMPACT_MAGIC, bytes((h.version,)), h.model_id, _varint(h.width), _varint(h.height),
            coding_fields, _varint(h.num_steps - h.exact_from),
            _varint(wire_flags), _varint(h.schedule_steps) if custom_t else b"",
        ))
    return b"".join((
        MAGIC, bytes((h.version,)), h.model_id, _varint(h.width), _varint(h.height),
        bytes((MODES.index(h.mode) << 6 | h.chunk_bits, h.threads)),
        _varint(h.num_steps), _varint(h.schedule_steps), _varint(h.num_steps - h.exact_from),
        _varint(SPACINGS.index(h.spacing)), _varint(h.flags),
    ))


def _point_entries(h: StreamHeader, points: tuple[TruncationPoint, ...]) -> list[bytes]:
    """Table rows: (t gap, end_word delta, check). The first t is stored as num_steps - t (version 7, whose
    first point has no row: the first row's t as num_steps - 1 - t, its gap from the implied point's).

    With FLAG_PARTIAL_POINTS a row at t = 0 also stores the subpixel count's increase (0: the exact
    image), and a row after a t = 0 row stores no t gap (t stays 0).
    """
    partial_rows = h.profile.partial_points
    rows = []
    prev_t, prev_end, prev_sub = h.num_steps + 1, 0, 0
    if first_point_implied(h.version):  # the first point has no row: the rows start after it
        points, prev_t = points[1:], h.num_steps
    for p in points:
        row = b"" if partial_rows and prev_t == 0 else _varint(prev_t - 1 - p.t)
        if partial_rows and p.t == 0:
            row += _varint(p.subpixels - prev_sub if p.partial else 0)
            prev_sub = p.subpixels
        check = b"" if payload_check(h.version) else p.check.to_bytes(2, "little")
        rows.append(row + _varint(p.end_word - prev_end) + check)
        prev_t, prev_end = p.t, p.end_word
    return rows


def payload_crc(words: np.ndarray) -> int:
    """Version 8's payload check: CRC-16/CCITT-FALSE of the payload words as little-endian bytes."""
    return binascii.crc_hqx(np.asarray(words).astype("<u4", copy=False).tobytes(), PAYLOAD_CHECK_INIT)


def _head(h: StreamHeader, points: tuple[TruncationPoint, ...], image_crc32: int | None,
          words: np.ndarray | None = None) -> bytes:
    """Everything before the payload, ending with the header check (``words``: the payload, for version 8's check;
    None writes a placeholder, for sizes)."""
    out = bytearray(_header_fields(h))
    out += _varint(len(points) - first_point_implied(h.version))
    out += b"".join(_point_entries(h, points))
    if payload_check(h.version) and points[-1].end_word:  # an empty payload (a file cut at x_S) needs no check
        out += (0 if words is None else payload_crc(words)).to_bytes(2, "little")
    if image_crc32 is not None:
        out += image_crc32.to_bytes(4, "little")
    out += binascii.crc_hqx(out, HEADER_CHECK_INIT).to_bytes(2, "little")
    return bytes(out)


def head_size(h: StreamHeader, points: tuple[TruncationPoint, ...], complete: bool) -> int:
    """Bytes before the payload of a file with these points (what a prefix costs beyond its words)."""
    return len(_head(h, tuple(points), 0 if complete else None))


def encode_file(f: DfcFile, *, allow_unchecked: bool = False) -> bytes:
    """Serialize `f` (its ``points_lost`` is not stored: a cut file re-encodes as a shorter whole one).

    A version-8 file whose words were never checked (``f.unchecked``) is refused unless ``allow_unchecked``:
    its new payload check would vouch for words nobody verified.
    """
    if f.unchecked and not allow_unchecked:
        raise DfcFormatError("its payload was never checked (the file was cut at a byte no truncation point ends "
                             "at): writing it would give unverified words a fresh check; decode it instead")
    return _head(f.header, f.points, f.image_crc32, f.words) + f.words.astype("<u4", copy=False).tobytes()


# ---- reading ----------------------------------------------------------------------------------

class _Reader:
    """Reads header fields in order; running out of bytes is a DfcFormatError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DfcFormatError(f"file ends inside the .dfc {what} at byte {len(self.data)} (cut or corrupt)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "little")

    def varint(self, what: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            b = self.uint(1, what)
            value |= (b & 0x7F) << (7 * i)
            if b < 0x80:
                if b == 0 and i > 0:
                    raise DfcFormatError(f"corrupt .dfc {what}: over-long number at byte {self.pos - 1}")
                return value
        raise DfcFormatError(f"corrupt .dfc {what}: number longer than {MAX_VARINT_BYTES} bytes")


def decode_file(data: bytes, *, check_payload: bool = True) -> DfcFile:
    """Parse a .dfc file, or what is left of one cut at any byte.

    A cut file keeps the points whose words all survived (a partial trailing word
    is dropped) and sets ``points_lost``; ``image_crc32`` is then None. Raises
    DfcFormatError, and nothing else, for anything that is not a readable .dfc
    file: wrong magic, unknown version, bad header check, malformed fields, a
    cut before the first truncation point, or (version 8) a whole file whose
    payload check fails. A version-8 file cut at a byte no point ends at cannot
    be checked and is marked ``unchecked``; so is one whose check fails when
    ``check_payload`` is False (for describing a corrupt file).
    """
    data = data if isinstance(data, bytes) else memoryview(data).tobytes()
    if not data:
        raise DfcFormatError("empty file, not a .dfc file")
    compact = data.startswith(COMPACT_MAGIC)
    if not compact and not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise DfcFormatError(f"file ends inside the .dfc header at byte {len(data)} (cut or corrupt)")
        raise DfcFormatError(f"not a .dfc file (starts with {data[:len(MAGIC)]!r}, expected {MAGIC!r} or {COMPACT_MAGIC!r})")
    r = _Reader(data)
    r.take(len(COMPACT_MAGIC if compact else MAGIC), "header")
    version_byte = r.uint(1, "header")
    # Version 7 on: the version's low four bits, then wire flag bits; earlier versions are the byte itself.
    version = version_byte & VERSION_MASK if compact and version_byte & VERSION_MASK >= 7 else version_byte
    if version not in READABLE_VERSIONS or (version in COMPACT_VERSIONS) != compact:
        newer = version > VERSION if compact else version > max(v for v in READABLE_VERSIONS if v not in COMPACT_VERSIONS)
        hint = ", written by a newer diffcodec" if newer else ""
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise DfcFormatError(f"unsupported .dfc version {version}{hint} (this diffcodec reads versions {readable})")

    if compact and version >= 7:  # the rest of the flags follow the version byte
        wire_flags = version_byte >> 4 & (1 << VERSION_BYTE_FLAG_BITS) - 1
        if version_byte & MORE_FLAGS:
            wire_flags |= r.varint("header") << VERSION_BYTE_FLAG_BITS
    model_id = r.take(model_id_bytes(version), "header")
    width, height = r.varint("header"), r.varint("header")
    if compact and version >= 7:
        threads = 1
        if wire_flags & FLAG_CODING_FIELDS:
            mode_byte, num_steps = r.uint(1, "header"), r.varint("header")
        else:
            mode_byte, num_steps = MODES.index(DEFAULT_MODE) << 6 | DEFAULT_CHUNK_BITS, DEFAULT_NUM_STEPS
        exact_gap = r.varint("header")
    elif compact:
        mode_byte, threads = r.uint(1, "header"), 1
        num_steps, exact_gap, wire_flags = (r.varint("header") for _ in range(3))
    else:
        mode_byte, threads = r.uint(1, "header"), r.uint(1, "header")
        num_steps, schedule_steps, exact_gap, spacing, flags = (r.varint("header") for _ in range(5))
    if compact:
        schedule_steps = r.varint("header") if wire_flags & FLAG_SCHEDULE_STEPS else DEFAULT_SCHEDULE_STEPS
        # Unknown bits stay in flags, for StreamHeader to refuse after the header check.
        spacing, flags = (1 if wire_flags & FLAG_QUAD_SPACING else 0), wire_flags & ~layout_flags(version)
    count = r.varint("point table")
    if count * min_point_bytes(version) > len(data) - r.pos:
        raise DfcFormatError(f"file ends inside the .dfc point table of {count} points (cut or corrupt)")
    partial_rows = StreamProfile(version, flags).partial_points
    rows, t, end, sub = [], num_steps + 1, 0, 0
    if first_point_implied(version):
        rows, t = [(num_steps, 0, 0, 0)], num_steps
    for _ in range(count):
        if not (partial_rows and t == 0):
            t -= 1 + r.varint("point table")
        if partial_rows and t == 0:
            d = r.varint("point table")
            sub, row_sub = sub + d, (sub + d if d else 0)
        else:
            row_sub = 0
        end += r.varint("point table")
        rows.append((t, end, 0 if payload_check(version) else r.uint(2, "point table"), row_sub))
    stored_payload_crc = r.uint(2, "point table") if payload_check(version) and end else None
    image_crc32 = r.uint(4, "header") if rows and rows[-1][0] == 0 and rows[-1][3] == 0 else None
    covered = r.pos
    if r.uint(2, "header") != binascii.crc_hqx(data[:covered], HEADER_CHECK_INIT):
        raise DfcFormatError("corrupt .dfc file: header check failed")

    try:
        if compact and wire_flags & FLAG_SCHEDULE_STEPS and schedule_steps == DEFAULT_SCHEDULE_STEPS:
            raise DfcFormatError(f"schedule_steps {DEFAULT_SCHEDULE_STEPS} is stored though it is the default")
        if compact and version >= 7:
            if version_byte & MORE_FLAGS and not wire_flags >> VERSION_BYTE_FLAG_BITS:
                raise DfcFormatError("a flags varint of 0 is stored though the version byte could say so")
            if wire_flags & FLAG_CODING_FIELDS and mode_byte >> 6 < len(MODES) and (
                    (MODES[mode_byte >> 6], mode_byte & 0x3F, num_steps) == (DEFAULT_MODE, DEFAULT_CHUNK_BITS, DEFAULT_NUM_STEPS)):
                raise DfcFormatError("mode, chunk_bits and num_steps are stored though they are the defaults")
        if mode_byte >> 6 >= len(MODES):
            raise DfcFormatError(f"unknown mode code {mode_byte >> 6}")
        header = StreamHeader(model_id, width, height, MODES[mode_byte >> 6], num_steps, mode_byte & 0x3F,
                              threads, flags, schedule_steps, num_steps - exact_gap,
                              SPACINGS[spacing] if spacing < len(SPACINGS) else f"code {spacing}", version)
        points = tuple(TruncationPoint(*row) for row in rows)
        if not points:
            raise DfcFormatError("no truncation points")
    except DfcFormatError as exc:
        raise DfcFormatError(f"malformed .dfc header: {exc}") from None

    payload = memoryview(data)[r.pos:]
    available = len(payload) // 4
    needed = points[-1].end_word
    if len(payload) > 4 * needed:
        raise DfcFormatError(f"corrupt .dfc file: {len(payload) - 4 * needed} bytes after the payload")
    kept = sum(p.end_word <= available for p in points)  # end_word is non-decreasing
    if kept == 0:
        raise DfcFormatError(
            f"file cut before its first truncation point (t={points[0].t} needs "
            f"{points[0].end_word} payload words, {available} left)")
    words = np.frombuffer(payload, dtype="<u4", count=points[kept - 1].end_word).astype(np.uint32, copy=False)
    # Version 8: a whole file's payload is checked here; a file cut at an arbitrary byte keeps no check of its own.
    unchecked = False
    if stored_payload_crc is not None and words.size:
        if kept < len(points):
            unchecked = True
        elif payload_crc(words) != stored_payload_crc:
            if check_payload:
                raise DfcFormatError("corrupt .dfc file: payload check failed")
            unchecked = True
    return DfcFile(header, points[:kept], words, image_crc32 if kept == len(points) else None, len(points) - kept,
                   unchecked)


# ---- operations -------------------------------------------------------------------------------

def truncate(f: DfcFile, stop_at_t: int, *, every_point: bool = False) -> DfcFile:
    """Keep the words up to the last point with t >= stop_at_t (at least the first point).

    The result decodes to that point's t, which is stop_at_t when the file has a
    point there, else the nearest coarser point; its table lists that point alone
    (``every_point``: every point up to it, so that the result can be cut again at
    them, 2–4 bytes each; see :func:`keep_points`). Asking for the file's last point
    or a t finer than the file reaches returns it unchanged (compare
    ``points[-1].t`` to tell). stop_at_t must be in 0..num_steps; 0 keeps every
    point, partial ones included. The result is an ordinary file (``points_lost``
    0), even when `f` was read from a cut one.
    """
    if isinstance(stop_at_t, bool) or not isinstance(stop_at_t, Integral) or not 0 <= stop_at_t <= f.header.num_steps:
        raise DiffcodecError(f"stop_at_t must be an integer in 0..{f.header.num_steps}, got {stop_at_t!r}")
    return keep_points(f, max(1, sum(p.t >= stop_at_t for p in f.points)), every_point=every_point)  # t is non-increasing


def keep_points(f: DfcFile, n: int, *, every_point: bool = False) -> DfcFile:
    """The file cut after its first ``n`` points (1..len(points)): an ordinary, smaller file.

    Its table lists the n-th point alone: a decoder needs no other row to reach it, and
    what checks the kept words (that point's check of the payload prefix and the state it
    ends at, versions 1–7; version 8's payload check, computed here for the words kept)
    covers the earlier points too, so dropping their rows loses no protection and saves
    their bytes (2–4 each; at 0.1 bits/dim on 32×32 they were a fifth of the file). ``every_point`` keeps the rows of the points before it too, for
    a file that is to be cut again. ``n = len(points)`` returns the file's own points.
    """
    points = _kept_points(f, n, every_point)
    return DfcFile(f.header, points, f.words[:points[-1].end_word], f.image_crc32 if points[-1].exact else None,
                   unchecked=f.unchecked and points[-1].end_word > 0)


def _kept_points(f: DfcFile, n: int, every_point: bool) -> tuple[TruncationPoint, ...]:
    """The points a file cut after its n-th keeps: the n-th alone, or all up to it (and version 7's implied first)."""
    n = _int("n", n, 1, len(f.points))
    if every_point or n == len(f.points):
        return f.points[:n]
    return (f.points[0],) * (n > 1) + f.points[n - 1:n] if first_point_implied(f.header.version) else f.points[n - 1:n]


def cut_size(f: DfcFile, n: int, *, every_point: bool = False) -> int:
    """Bytes of ``encode_file(keep_points(f, n, every_point=every_point))``, without building it."""
    points = _kept_points(f, n, every_point)
    return head_size(f.header, points, points[-1].exact) + 4 * points[-1].end_word


def fit_bytes(f: DfcFile, max_bytes: int, *, every_point: bool = False) -> DfcFile | None:
    """The file cut after the last truncation point at which it is at most ``max_bytes``, or None.

    The cut is :func:`keep_points`'s (its table lists the point it ends at alone, unless
    ``every_point``).
    """
    fits = [n for n in range(1, len(f.points) + 1) if cut_size(f, n, every_point=every_point) <= max_bytes]
    return keep_points(f, fits[-1], every_point=every_point) if fits else None


def paper_timestep(h: StreamHeader, chain_t: int) -> int:
    """The paper's t (0..T) of the state at chain position ``chain_t`` (0..S) of a stream (``Timeline.paper_t``)."""
    return h.timeline.paper_t(chain_t)


def stream_position(t: int, partial: float | None) -> tuple[int, float]:
    """Sort key of a point along the stream: larger t first, then partial points by share, then the exact image."""
    return (-t, partial if partial is not None else (1.0 if t == 0 else 0.0))


def chain_position(h: StreamHeader, t: int) -> int:
    """The smallest chain position whose paper t is at least ``t`` (S if none): where --stop-at-t t stops
    (``Timeline.position_at_or_above``)."""
    return h.timeline.position_at_or_above(t)


def describe(f: DfcFile) -> dict[str, Any]:
    """JSON-able summary for ``diffcodec info --json``.

    Each point's ``bytes`` is the size of the .dfc file that `truncate` to its t
    produces (its table listing that point alone; the last point's is the file's own
    size); ``total_bytes`` is the size of ``encode_file(f)``.
    """
    h = f.header
    timeline, profile = h.timeline, h.profile
    points = []
    for k, p in enumerate(f.points, start=1):
        entry = {"t": timeline.paper_t(p.t), "chain_t": p.t, "bytes": cut_size(f, k)}
        if p.partial:
            entry["subpixels"] = p.subpixels  # the exact stage's symbols decoded, in its coding order
        points.append(entry)
    return {
        "width": h.width,
        "height": h.height,
        "mode": h.mode,
        "version": h.version,
        "model_id": h.model_id.hex(),
        "num_steps": h.num_steps,
        "schedule_steps": h.schedule_steps,
        "exact_from_t": timeline.paper_t(h.exact_from),
        "spacing": h.spacing,
        "chunk_bits": h.chunk_bits,
        "threads": h.threads if profile.threads_stored else None,  # version 6 stores none
        "flags": h.flags,
        "coarse_to_fine": profile.coarse_to_fine,
        # symbols of the exact stage (a partial point counts a prefix of them): a subpixel each, plus each colour
        # subpixel's bin in a coarse-to-fine file
        "exact_symbols": profile.exact_symbols(h),
        "points": points,
        "complete": f.complete,
        "cut": f.cut,
        "points_lost": f.points_lost,
        "unchecked": f.unchecked,  # version 8: payload words nobody could check (a byte-cut file)
        "total_bytes": points[-1]["bytes"],
    }
