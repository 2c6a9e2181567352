"""Tests of the shared randomness (diffcodec/rng.py).

GOLDEN VALUES: encoder and decoder regenerate every channel-simulation candidate from
these streams, so the literals below are part of .dfc format version 1.  If one of these
tests fails, every .dfc file written so far decodes to garbage (or fails its checks):
do not "update" the literals; fix the code, or introduce a new format version with a new
personalisation string / STREAM_SEED and keep version 1 readable.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from diffcodec.rng import normals, normals_exact, normals_float32, permutation, raw_uint64, stream_key

KEY = stream_key(1, 2, 3)

# blake2b-128 of <QQQ 1,2,3 with person=b"diffcodec-rng-v1", as two little-endian uint64
GOLDEN_KEY = [0x13F1BE86A2499C9C, 0xCD52026CD184FB1B]

# Philox-4x64-10 outputs 0..7 of that key
GOLDEN_RAW = [
    4274318164415763740,
    17908053060703042564,
    7183923955007096875,
    1018730737243157545,
    12424866278784002804,
    11534921254943968348,
    9392455472029582474,
    5727162614667236631,
]

# Box–Muller (float64) of the pairs above: normals 0..7
GOLDEN_NORMALS = [
    1.6814183219763892,
    -0.31202403510112614,
    1.2914961280907025,
    0.46703535602925333,
    -0.6274168453494383,
    -0.6298604978496165,
    -0.4309051509610917,
    1.0790194620369096,
]


def test_golden_stream_key():
    assert KEY.dtype == np.uint64 and KEY.shape == (2,)
    assert [int(v) for v in KEY] == GOLDEN_KEY


def test_golden_raw_uint64():
    out = raw_uint64(KEY, 0, 8)
    assert out.dtype == np.uint64
    assert [int(v) for v in out] == GOLDEN_RAW


def test_golden_normals():
    np.testing.assert_allclose(normals(KEY, 0, 8), GOLDEN_NORMALS, rtol=1e-12, atol=0)
    np.testing.assert_allclose(normals(KEY, 5, 3), GOLDEN_NORMALS[5:8], rtol=1e-12, atol=0)


def test_box_muller_is_the_documented_transform():
    """Normals 2j, 2j+1 are √(−2 ln u₁)·(cos, sin)(2π u₂) with u = (top 53 bits + ½)/2⁵³ of raw 2j, 2j+1."""
    raw = raw_uint64(KEY, 0, 8).reshape(-1, 2)
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    r = np.sqrt(-2 * np.log(u[:, 0]))
    ref = np.stack([r * np.cos(2 * np.pi * u[:, 1]), r * np.sin(2 * np.pi * u[:, 1])], axis=1).ravel()
    np.testing.assert_array_equal(normals(KEY, 0, 8), ref)


@pytest.mark.parametrize("start", [0, 1, 2, 3, 4, 5, 7, 8, 13, 1001])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 11])
def test_random_access_is_consistent(start, count):
    np.testing.assert_array_equal(raw_uint64(KEY, start, count), raw_uint64(KEY, 0, start + count)[start:])
    np.testing.assert_array_equal(normals(KEY, start, count), normals(KEY, 0, start + count)[start:])
    assert len(normals(KEY, start, count)) == count


def test_empty_and_nonpositive_counts():
    assert normals(KEY, 3, 0).shape == (0,)
    assert normals(KEY, 3, -2).shape == (0,)
    assert raw_uint64(KEY, 5, 0).shape == (0,)


def test_stream_key_is_deterministic_and_separates_ids():
    assert np.array_equal(stream_key(1, 2, 3), stream_key(1, 2, 3))
    keys = {tuple(int(v) for v in stream_key(*ids)) for ids in [(1, 2, 3), (1, 2, 4), (3, 2, 1), (1, 2), (1, 2, 3, 0), (0,)]}
    assert len(keys) == 6  # order, length and trailing zeros all matter
    assert not np.array_equal(normals(stream_key(1, 2, 3), 0, 4), normals(stream_key(1, 2, 4), 0, 4))


def test_stream_key_rejects_negative_ids():
    with pytest.raises(struct.error):  # never silently wrapped to 2^64 − 1
        stream_key(-1)


@pytest.mark.parametrize("n", [0, 1, 2, 10, 1000])
def test_permutation_is_a_permutation(n):
    p = permutation(stream_key(7, n), n)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))
    np.testing.assert_array_equal(p, permutation(stream_key(7, n), n))


def test_permutation_golden():
    np.testing.assert_array_equal(permutation(stream_key(7), 10), [7, 0, 5, 1, 9, 3, 8, 2, 6, 4])


def test_normals_moments_over_1e5_draws():
    x = normals(stream_key(42), 0, 100_000)
    n = len(x)
    assert np.isfinite(x).all()
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs((x**3).mean()) < 5 * np.sqrt(15 / n)  # symmetric
    assert abs((x**4).mean() - 3) < 5 * np.sqrt(96 / n)  # Gaussian tails, not uniform or Laplace
    # neighbours are uncorrelated, including the two halves of a Box–Muller pair
    assert abs(np.mean(x[::2] * x[1::2])) < 5 / np.sqrt(n / 2)
    assert abs(np.mean(x[1:-1:2] * x[2::2])) < 5 / np.sqrt(n / 2)


@pytest.mark.parametrize("count", [0, 1, 7, 4096])
def test_float32_normals_approximate_the_shared_ones(count):
    """The encoder's search ranks candidates with these; they must be the same normals to float32 accuracy."""
    approx = normals_float32(KEY, count)
    assert approx.dtype == np.float32 and approx.shape == (count,)
    np.testing.assert_allclose(approx, normals(KEY, 0, count), rtol=0, atol=1e-5)


# Format version 5: the same pairs through exactmath's log and sin/cos (normals 0..7 of KEY).
GOLDEN_NORMALS_EXACT = ["0x1.ae716e5fc8a67p+0", "-0x1.3f833a894d19bp-2", "0x1.4a9f7d810f68ep+0", "0x1.de3e8430e2ac2p-2",
                        "-0x1.413cc7df787cap-1", "-0x1.427d133e9cde2p-1", "-0x1.b93f332c392c1p-2", "0x1.143a9e95322fbp+0"]


def test_golden_normals_exact():
    assert [v.hex() for v in normals_exact(KEY, 0, 8)] == GOLDEN_NORMALS_EXACT


def test_normals_exact_random_access_and_closeness():
    whole = normals_exact(KEY, 0, 1001)
    for start, count in ((0, 1), (3, 5), (500, 501), (1000, 1)):
        assert np.array_equal(normals_exact(KEY, start, count), whole[start : start + count])
    assert np.abs(whole - normals(KEY, 0, 1001)).max() < 1e-13  # the same transform, other last bits
    assert len(normals_exact(KEY, 5, 0)) == 0
