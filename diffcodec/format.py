"""The constants of the .dfc format, section by section as docs/format.md describes them.

Every number a file's bytes depend on and that is not computed from the image or the model lives here,
so that the format's definition and this module can be read side by side.  Code elsewhere imports them
from here (``container``, ``exact``, ``stream`` and ``codec`` re-export the names older code used).
Changing any value is a format change: a new version (docs/format.md, "Versioning policy").
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

# ---- Byte layout ------------------------------------------------------------------------------

MAGIC = b"DFC"  # versions 1–5: the first three bytes, then the version byte
COMPACT_MAGIC = b"\xdf"  # version 6 on: one byte, then the version byte ("Compact header (version 6)")
VERSION = 8  # what this diffcodec writes
# The payload's meaning differs ("Versions"); 6 has the compact header; 7 is 6 with static step tables; 8 is 7
# with one payload check instead of a check per table row.
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
COMPACT_VERSIONS = (6, 7, 8)  # the versions whose files start with COMPACT_MAGIC
MODEL_ID_BYTES = 3  # version 6; versions 4 and 5 store 4, versions 1–3 store 8 (model_id_bytes)
DEFAULT_SCHEDULE_STEPS = 1000  # version 6 stores T only when it is not this (FLAG_SCHEDULE_STEPS)
MODES = ("L", "RGB", "RGBA")  # stored as 0, 1, 2 in the top two bits of the mode byte
SPACINGS = ("uniform", "quad")  # the spacing field's codes 0 and 1 (diffcodec.diffusion.spaced_timesteps)
MAX_SIDE = 65535
MAX_STEPS = 4000
MAX_CHUNK_BITS = 63  # the low six bits of the mode byte
MAX_THREADS = 255
MAX_SCHEDULE_STEPS = 100_000
MAX_END_WORD = 2**63 - 1
MAX_SUBPIXELS = 4 * MAX_SIDE * MAX_SIDE
MAX_VARINT_BYTES = 10  # enough for any 64-bit value
MIN_POINT_BYTES = 4  # a point row's dt and dw varints of one byte each, then the 2-byte check (version 8: no check)

# Flag bits (must-understand: a file with a bit its reader does not know is refused).  Versions 1–3 define none.
FLAG_PARTIAL_POINTS = 1  # version 4: the table has points inside the exact stage (rows at t = 0 carry a count)
# Version 4: the learned exact stage is coarse-to-fine (bins first, then values inside them), with the
# model's coarse-to-fine network; the model id names that network too (DiffusionModel.coarse_identity).
FLAG_COARSE_TO_FINE = 2
# Version 6 packs two header fields into the flags varint as layout bits (not StreamHeader.flags): the spacing
# (set: quad, clear: uniform) and whether a schedule_steps varint follows (clear: T = DEFAULT_SCHEDULE_STEPS).
FLAG_QUAD_SPACING = 4
FLAG_SCHEDULE_STEPS = 8
LAYOUT_FLAGS = FLAG_QUAD_SPACING | FLAG_SCHEDULE_STEPS  # version 6's
# Version 7 adds one: whether the mode/chunk_bits byte and num_steps follow (clear: the defaults below, which
# the writer must then use: a field equal to its default is never stored, so each header has one encoding).
FLAG_CODING_FIELDS = 16
DEFAULT_MODE, DEFAULT_CHUNK_BITS, DEFAULT_NUM_STEPS = "RGB", 13, 50  # version 7 with FLAG_CODING_FIELDS clear
# Version 7 keeps the version in the low four bits of its version byte and the wire flags' bits 0–2 in bits
# 4–6; bit 7 set means a varint of the wire flags' bits from 3 on follows.  A default file's flags cost no byte.
VERSION_MASK = 0x0F
VERSION_BYTE_FLAG_BITS = 3
MORE_FLAGS = 0x80


def layout_flags(version: int) -> int:
    """The wire flag bits of a compact header that stand for header fields (never in StreamHeader.flags)."""
    return LAYOUT_FLAGS | (FLAG_CODING_FIELDS if version >= 7 else 0)


def first_point_implied(version: int) -> bool:
    """Version 7: every file's first truncation point is x_S (t = num_steps, no words, check 0) and has no row.

    x_S is the shared randomness's (the header decides it), so its check could only repeat the header's; a
    file cut there is its header alone.
    """
    return version >= 7


def payload_check(version: int) -> bool:
    """Version 8: the table's rows carry no check; one CRC-16 of the payload follows the table instead.

    A row's check (versions 1–7) covered the payload prefix and the decoder's state at its point, so that a
    file cut at any byte could verify what it kept; it cost 2 bytes a row, ~1% of a lossless 32×32 file
    whose table lists a point every 1.5× in t.  Version 8 checks the whole payload once (a file that
    ``truncate`` cuts gets the check of the words it keeps; a file with no payload words, cut at x_S, has none)
    and the exact image by ``image_crc32``; only a file cut at an arbitrary byte decodes with its payload
    unchecked.
    """
    return version >= 8


def min_point_bytes(version: int) -> int:
    """The fewest bytes a table row takes: dt and dw of one byte each, plus the check before version 8."""
    return MIN_POINT_BYTES - 2 * payload_check(version)


def model_id_bytes(version: int) -> int:
    """Bytes of model identity a file of ``version`` stores: 8 before version 4, then 4, from version 6 on 3.

    A few bytes tell models apart (up to version 7 a wrong model is also caught by the per-point checks,
    which cover the states the model computes): 4 saved 4 bytes of every file, ~0.2% of a 32×32 one; 3 save one more,
    ~2.6% of a 32×32 file cut at 0.1 bits/dim.
    """
    return 8 if version < 4 else 4 if version < 6 else MODEL_ID_BYTES


def known_flags(version: int) -> int:
    """The flag bits a file of ``version`` may set."""
    return FLAG_PARTIAL_POINTS | FLAG_COARSE_TO_FINE if version >= 4 else 0


# ---- What the checks protect ------------------------------------------------------------------

HEADER_CHECK_INIT = 0xFFFF  # CRC-16/CCITT-FALSE via binascii.crc_hqx, over magic through image_crc32
STATE_CHECK_INIT = 0xFFFF  # a point's check: crc_hqx over the payload prefix, then over the decoder's state
PAYLOAD_CHECK_INIT = 0xFFFF  # version 8's payload check: crc_hqx over the payload words (little-endian)

# ---- The chain's steps ----------------------------------------------------------------------

STREAM_SEED = 0x444643  # mixed into every shared-randomness key of the stream (rng.stream_key)
CHUNK_KEY = 0xA5  # stream_key(STREAM_SEED, step, CHUNK_KEY): the step's random partition into chunks
PADDING_KEY = 0x9A  # stream_key(STREAM_SEED, step, PADDING_KEY): the normals of the tiles' padding
MAX_INDEX_BITS = 20  # a chunk's channel-simulation index is below 2^20
# Version 7 codes the steps' symbols with static integer tables: diffcodec/step_tables.py (part of the format,
# generated by bench/fit_step_tables.py), read by diffcodec/step_code.py.

# ---- The exact stage (version 4) --------------------------------------------------------------

METHOD_BITS = 1  # raw bits of the method, before the exact stage (versions 4 and 5)
LINEAR, LEARNED = 0, 1  # the method's values: the linear stage, the learned (or, with FLAG_COARSE_TO_FINE, coarse-to-fine) one
SCALE_BITS = 4  # raw bits of each stage's scale index


class ExactKind(IntEnum):
    """The exact stages a file can hold (``StreamProfile.exact_kind`` says which one a file's method selects)."""

    LINEAR = LINEAR  # method 0, and version 3's only stage (no method bit)
    LEARNED = LEARNED  # method 1
    COARSE = 2  # method 1 in a file with FLAG_COARSE_TO_FINE
    INDEPENDENT = 3  # versions 1–2: one scale, every subpixel independent (no method bit)

    @property
    def method(self) -> int:
        """The method bit that selects this kind (versions 4 and 5; versions 1–2's kind has none)."""
        if self is ExactKind.INDEPENDENT:
            raise ValueError("versions 1–2 have no exact-stage method")
        return LINEAR if self is ExactKind.LINEAR else LEARNED


# The learned stage's scale corrections 2^((k − 8)/8), k = 0..15 (2^-1 .. 2^0.875), as literals: a math
# library's pow need not give these last bits everywhere, and the decoder's tables depend on them.
CONTEXT_SCALES = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p-1", "0x1.172b83c7d517bp-1", "0x1.306fe0a31b715p-1", "0x1.4bfdad5362a27p-1",
    "0x1.6a09e667f3bcdp-1", "0x1.8ace5422aa0dbp-1", "0x1.ae89f995ad3adp-1", "0x1.d5818dcfba487p-1",
    "0x1.0000000000000p+0", "0x1.172b83c7d517bp+0", "0x1.306fe0a31b715p+0", "0x1.4bfdad5362a27p+0",
    "0x1.6a09e667f3bcdp+0", "0x1.8ace5422aa0dbp+0", "0x1.ae89f995ad3adp+0", "0x1.d5818dcfba487p+0",
)])
MEAN_LIMIT = 1e4  # every exact-stage mean is clipped to ±this (pixel units); NaN becomes 127.5
SD_MIN, SD_MAX = 1e-2, 1e4  # and every standard deviation to this range (a NaN one of the learned stage to SD_MAX)
LOG_SCALE_LIMIT = 30.0  # the context network's λ is clipped to ±this before e^λ

# ---- The linear stage (version 3) -------------------------------------------------------------

# c in N(mean, (c·σ)²): 2^(k/4) for k = −12..3, i.e. 2^-3 .. 2^0.75, as literals likewise.
EXACT_SCALES = np.array([float.fromhex(h) for h in (
    "0x1.0000000000000p-3", "0x1.306fe0a31b715p-3", "0x1.6a09e667f3bcdp-3", "0x1.ae89f995ad3adp-3",
    "0x1.0000000000000p-2", "0x1.306fe0a31b715p-2", "0x1.6a09e667f3bcdp-2", "0x1.ae89f995ad3adp-2",
    "0x1.0000000000000p-1", "0x1.306fe0a31b715p-1", "0x1.6a09e667f3bcdp-1", "0x1.ae89f995ad3adp-1",
    "0x1.0000000000000p+0", "0x1.306fe0a31b715p+0", "0x1.6a09e667f3bcdp+0", "0x1.ae89f995ad3adp+0",
)])
WEIGHT_BITS = 6
WEIGHT_OFFSET = 32  # w = (q − 32)/16: q in 0..63 covers −2 .. 1.9375
WEIGHT_STEP = 1.0 / 16.0
# Per stage (pass, channel) of a 3-channel plane and of a 1-channel plane, in q units, features in the
# order ExactLayout.features gives them.  Least squares pooled over CIFAR-10 test images 100–147 at
# t = 16, the median start of the exact stage (x_t drawn from q, shipped model of 2026-11-23):
# `python bench/exact_weights.py` prints them.  A 1-channel plane takes the colour plane's channel 0.
DEFAULT_WEIGHTS = {
    3: {(0, 0): (), (0, 1): (39,), (0, 2): (35, 38), (1, 0): (46, 31), (1, 1): (42, 51, 17, 27, 37),
        (1, 2): (35, 41, 52, 27, 18, 26, 33, 37)},
    1: {(0, 0): (), (1, 0): (46, 31)},
}
# Offsets (dy, dx) of a second-pass pixel's first-pass neighbours: the four nearest, then the ring of
# eight at distance √5 (odd |dy| + |dx|, so first-pass too).
NEAR = ((-1, 0), (1, 0), (0, -1), (0, 1))
RING = ((-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (1, -2), (-1, 2), (1, 2))
