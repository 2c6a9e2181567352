"""Shared randomness that never changes: normals from Philox-4x64 counters through a fixed Box–Muller.

Encoder and decoder must draw the *same* candidates on every machine and every
library version.  Library normal samplers may change their algorithm, so the
normals here come from raw Philox-4x64-10 outputs (a fixed, counter-based
function of key and counter) through our own Box–Muller transform in float64.
Random access is exact: normal ``j`` of a stream depends only on ``(key, j)``,
so the decoder can regenerate one window without the rest.  Golden values in
tests/test_rng.py pin this; change it only with a new format version.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import torch
from numpy.random import Philox

from . import exactmath

_TWO_PI = 2.0 * np.pi
_INV_2_53 = 1.0 / 9007199254740992.0  # 2^-53


def stream_key(*ids: int) -> np.ndarray:
    """A 128-bit Philox key from a tuple of non-negative integers (seed, step, chunk, ...)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(ids)}Q", *ids), digest_size=16, person=b"diffcodec-rng-v1").digest()
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)


def raw_uint64(key: np.ndarray, start: int, count: int) -> np.ndarray:
    """Outputs ``start .. start+count-1`` of the Philox-4x64-10 stream with this key (4 outputs per counter)."""
    block, offset = divmod(start, 4)
    gen = Philox(key=key, counter=np.array([block, 0, 0, 0], dtype=np.uint64))
    return gen.random_raw(offset + count)[offset:]


def normals(key: np.ndarray, start: int, count: int) -> np.ndarray:
    """Standard normals ``start .. start+count-1`` of the stream (float64, Box–Muller on output pairs)."""
    if count <= 0:
        return np.zeros(0)
    first_pair = start // 2
    last_pair = (start + count - 1) // 2
    raw = raw_uint64(key, 2 * first_pair, 2 * (last_pair - first_pair + 1)).reshape(-1, 2)
    # Top 53 bits to (0, 1): never 0, so the log is finite.
    u1 = ((raw[:, 0] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53
    u2 = ((raw[:, 1] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = _TWO_PI * u2
    pairs = np.empty((len(raw), 2))
    pairs[:, 0] = radius * np.cos(angle)
    pairs[:, 1] = radius * np.sin(angle)
    flat = pairs.reshape(-1)
    skip = start - 2 * first_pair
    return flat[skip : skip + count]


def normals_exact(key: np.ndarray, start: int, count: int) -> np.ndarray:
    """:func:`normals` for format version 5: the same Box–Muller on the same pairs, with ``exactmath``'s
    log and sin/cos in place of the math library's, so every machine draws the same bits.

    The angle is 2π·u2 as a number of turns, reduced exactly.  Golden values in tests/test_rng.py.
    """
    if count <= 0:
        return np.zeros(0)
    first_pair = start // 2
    last_pair = (start + count - 1) // 2
    raw = raw_uint64(key, 2 * first_pair, 2 * (last_pair - first_pair + 1)).reshape(-1, 2)
    u1 = torch.from_numpy(((raw[:, 0] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53)
    u2 = torch.from_numpy(((raw[:, 1] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53)
    radius = torch.sqrt(exactmath.log(u1) * -2.0)
    sin, cos = exactmath.sincos_turns(u2)
    pairs = torch.stack([radius * cos, radius * sin], dim=1).numpy()
    flat = pairs.reshape(-1)
    skip = start - 2 * first_pair
    return flat[skip : skip + count]


def normals_float32(key: np.ndarray, count: int) -> np.ndarray:
    """``normals(key, 0, count)`` to within ~3e-6, in float32 and about seven times faster.

    Only for the encoder's PFR search, which merely ranks candidates: the sample it sends is
    regenerated exactly by :func:`normals` on both sides, so this approximation never reaches the
    stream.  The radius keeps float64 (its log is steep near u1 → 0); the angle uses the top 24 bits
    of the second output and float32 trigonometry, which numpy vectorises (its float64 cos and sin
    are most of ``normals``' time).
    """
    if count <= 0:
        return np.zeros(0, dtype=np.float32)
    raw = raw_uint64(key, 0, 2 * ((count + 1) // 2)).reshape(-1, 2)
    u1 = ((raw[:, 0] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53
    radius = np.sqrt(-2.0 * np.log(u1)).astype(np.float32)
    angle = ((raw[:, 1] >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(_TWO_PI / 2**24)
    pairs = np.empty((len(raw), 2), dtype=np.float32)
    np.multiply(radius, np.cos(angle), out=pairs[:, 0])
    np.multiply(radius, np.sin(angle), out=pairs[:, 1])
    return pairs.reshape(-1)[:count]


def permutation(key: np.ndarray, n: int) -> np.ndarray:
    """A shared random permutation of ``range(n)``: argsort of raw outputs (ties broken by index)."""
    return np.argsort(raw_uint64(key, 0, n), kind="stable")
