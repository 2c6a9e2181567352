"""Elementary functions that give the same bits on every machine.

A stream can depend only on numbers that every decoder computes identically.  IEEE 754 makes
``+ − × ÷`` and ``sqrt`` correctly rounded on every CPU and GPU, in any SIMD width, but not
``exp``, ``log``, ``sin`` or ``cos``: C math libraries, SLEEF (torch's vectorised kernels) and
CUDA's intrinsics differ in the last bits.  The functions here are built only from correctly rounded
operations, each a separate tensor operation in a fixed order (no fused multiply-add: an eager
torch ``a * b + c`` is two kernels, each rounding once), plus exact steps (``round``, ``floor``,
comparisons, selections, scaling by powers of two).  So each returns the same bits wherever it
runs, whatever its accuracy; the accuracy (a few ulp, tested against numpy) only decides how close
it stays to the float network it replaces.

Every function takes a floating tensor and returns one of the same dtype; the arithmetic is float64
throughout (a float32 result is the float64 one rounded once).  numpy arrays go through
:func:`numpy_float64`.  Each formula is written once over a few primitive operations; a CPU tensor runs
them as numpy operations on its memory (zero-copy, a fraction of torch's per-call cost on the small
arrays the codec passes), any other tensor as torch's: the same IEEE operations, so the same bits
(tests/test_exactmath.py compares the two).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

# Constants as literals, never from a math library.  ln 2 is split (fdlibm's split) so that k·ln2_hi is
# exact for every |k| < 2^20: its low 32 significand bits are zero.
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
_TWO_PI = float.fromhex("0x1.921fb54442d18p+2")
_INV_TWO_PI = float.fromhex("0x1.45f306dc9c883p-3")
_SQRT_2_OVER_PI = float.fromhex("0x1.9884533d43651p-1")
# Coefficients as correctly rounded quotients of exact integers: the same float on every machine.
_EXP_COEFFS = [1.0 / math.factorial(n) for n in range(14)]  # exp(r), |r| ≤ ln2/2: Taylor to r^13
_SIN_COEFFS = [(-1.0) ** n / math.factorial(2 * n + 1) for n in range(10)]  # sin(y)/y in y², |y| ≤ π/4
_COS_COEFFS = [(-1.0) ** n / math.factorial(2 * n) for n in range(10)]  # cos(y) in y²
_ATANH_COEFFS = [1.0 / (2 * n + 1) for n in range(12)]  # atanh(s)/s in s², |s| ≤ 0.172
# The coefficients are quotients of integers, each rounded once by IEEE division (exact integer to
# float conversion below 2^53); tests/test_exactmath.py pins them as hex literals all the same.


class _Torch:
    """The few operations below that are not Python operators, on torch tensors."""

    full_like, round, frexp, where, remainder = torch.full_like, torch.round, torch.frexp, torch.where, torch.remainder

    @staticmethod
    def clamp(x, lo, hi):
        return x.clamp(lo, hi)

    @staticmethod
    def f64(x):
        return x.double()

    @staticmethod
    def cast(x, like):
        return x.to(like.dtype)

    @staticmethod
    def pow2(k):
        return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


class _Numpy:
    """The same operations on numpy arrays: each the same IEEE operation (round half to even, frexp, a
    selection, a floor remainder of integers, exact bit building), so the same bits, with a fraction of
    torch's per-call cost on the small arrays the codec passes (a chunk's normals, one image's features)."""

    full_like, round, frexp, where, remainder, clamp = np.full_like, np.rint, np.frexp, np.where, np.remainder, np.clip

    @staticmethod
    def f64(x):
        return x.astype(np.float64, copy=False)

    @staticmethod
    def cast(x, like):
        return x.astype(like.dtype, copy=False)

    @staticmethod
    def pow2(k):
        return ((k.astype(np.int64) + 1023) << 52).view(np.float64)


_NUMPY_DTYPES = (torch.float64, torch.float32)


def _on_numpy(fn: Callable) -> Callable:
    """Run ``fn(ops, x)`` on numpy when ``x`` is a CPU tensor (zero-copy both ways; the same bits, faster on
    small tensors), on torch elsewhere (other devices, tensors that need gradients)."""

    def wrapped(x: torch.Tensor):
        if x.device.type == "cpu" and x.dtype in _NUMPY_DTYPES and not x.requires_grad:
            with np.errstate(all="ignore"):  # torch is silent on overflow to inf (exp, float32 casts): so is this
                out = fn(_Numpy, x.numpy())
            return tuple(torch.from_numpy(np.asarray(o)) for o in out) if isinstance(out, tuple) else torch.from_numpy(np.asarray(out))
        return fn(_Torch, x)

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


def _horner(ops, coeffs: list[float], z):
    """Σ coeffs[n] z^n by Horner's rule, one rounding per operation."""
    p = ops.full_like(z, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * z
        p = p + c
    return p


def _f64(fn: Callable) -> Callable:
    """Run ``fn`` in float64 and round its result once to the input's dtype."""

    def inner(ops, x):
        return ops.cast(fn(ops, ops.f64(x)), x)

    inner.__name__, inner.__doc__ = fn.__name__, fn.__doc__
    public = _on_numpy(inner)

    def checked(x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"{fn.__name__} takes a floating tensor, not {x.dtype}")
        return public(x)

    checked.__name__, checked.__doc__, checked.inner = fn.__name__, fn.__doc__, fn
    return checked


@_f64
def exp(ops, x):
    """e^x: x = k·ln 2 + r with |r| ≤ ln2/2 (Cody–Waite), e^r by Taylor, times 2^k.

    Saturates instead of overflowing: inputs are clamped to ±708, where e^x and 2^k stay normal numbers.
    """
    x = ops.clamp(x, -708.0, 708.0)
    k = ops.round(x * _INV_LN2)
    r = x - k * _LN2_HI
    r = r - k * _LN2_LO
    return _horner(ops, _EXP_COEFFS, r) * ops.pow2(k)


@_f64
def log(ops, x):
    """ln x for x > 0: x = m·2^e with m ∈ [√½, √2), ln m = 2 atanh((m − 1)/(m + 1)) by its series."""
    m, e = ops.frexp(x)  # exact: m ∈ [0.5, 1)
    small = m < float.fromhex("0x1.6a09e667f3bcdp-1")  # √½
    m = ops.where(small, m * 2.0, m)
    e = ops.f64(e - ops.cast(small, e))
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    log_m = (s * _horner(ops, _ATANH_COEFFS, z)) * 2.0
    return e * _LN2_HI + (e * _LN2_LO + log_m)


@_on_numpy
def sincos_turns(ops, u):
    """(sin 2πu, cos 2πu): u reduced exactly to the nearest quarter turn, then Taylor on |y| ≤ π/4.

    Exact reduction needs |u| < 2^50; larger arguments lose accuracy but stay reproducible.
    """
    like = u
    u = ops.f64(u)
    q = ops.round(u * 4.0)  # exact: multiply by a power of two, round
    g = u - q * 0.25  # exact for the magnitudes used (both on the same binade grid)
    y = g * _TWO_PI
    z = y * y
    s = y * _horner(ops, _SIN_COEFFS, z)
    c = _horner(ops, _COS_COEFFS, z)
    quadrant = ops.remainder(q, 4.0)
    where = ops.where
    sin = where(quadrant == 0, s, where(quadrant == 1, c, where(quadrant == 2, -s, -c)))
    cos = where(quadrant == 0, c, where(quadrant == 1, -s, where(quadrant == 2, -c, s)))
    return ops.cast(sin, like), ops.cast(cos, like)


def sin(x: torch.Tensor) -> torch.Tensor:
    """sin x through :func:`sincos_turns` (x/2π rounds once: relative error ~1e-16 of the turns)."""
    return sincos_turns(x.double() * _INV_TWO_PI)[0].to(x.dtype)


def cos(x: torch.Tensor) -> torch.Tensor:
    """cos x through :func:`sincos_turns`."""
    return sincos_turns(x.double() * _INV_TWO_PI)[1].to(x.dtype)


@_f64
def sigmoid(ops, x):
    """1 / (1 + e^−x)."""
    return 1.0 / (exp.inner(ops, -x) + 1.0)


@_f64
def silu(ops, x):
    """x·σ(x) (the U-Net's nonlinearity)."""
    return x * sigmoid.inner(ops, x)


@_f64
def gelu_tanh(ops, x):
    """GELU's tanh form, ½x(1 + tanh(√(2/π)(x + 0.044715x³))), with tanh z = 1 − 2/(e^{2z} + 1).

    Within ~1e-3 of the erf form the context networks were trained with; erf itself has no cheap
    reproducible form here.
    """
    z = (x + (x * x * x) * 0.044715) * _SQRT_2_OVER_PI
    tanh = 1.0 - 2.0 / (exp.inner(ops, z * 2.0) + 1.0)
    return (x * 0.5) * (tanh + 1.0)


def numpy_float64(fn: Callable[[torch.Tensor], torch.Tensor], a: np.ndarray) -> np.ndarray:
    """Apply one of these functions to a numpy array in float64."""
    return fn(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))).numpy()
