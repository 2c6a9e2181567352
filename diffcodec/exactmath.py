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
:func:`numpy_float64`.
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


def _horner(coeffs: list[float], z: torch.Tensor) -> torch.Tensor:
    """Σ coeffs[n] z^n by Horner's rule, one rounding per operation."""
    p = torch.full_like(z, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * z
        p = p + c
    return p


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """2^k (float64) for integer-valued ``k`` in −1022..1023, built from its exponent bits (exact)."""
    return ((k.to(torch.int64) + 1023) << 52).view(torch.float64)


def _f64(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run ``fn`` in float64 and round its result once to the input's dtype."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            raise TypeError(f"{fn.__name__} takes a floating tensor, not {x.dtype}")
        return fn(x.double()).to(x.dtype)

    wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
    return wrapped


@_f64
def exp(x: torch.Tensor) -> torch.Tensor:
    """e^x: x = k·ln 2 + r with |r| ≤ ln2/2 (Cody–Waite), e^r by Taylor, times 2^k.

    Saturates instead of overflowing: inputs are clamped to ±708, where e^x and 2^k stay normal numbers.
    """
    x = x.clamp(-708.0, 708.0)
    k = torch.round(x * _INV_LN2)
    r = x - k * _LN2_HI
    r = r - k * _LN2_LO
    return _horner(_EXP_COEFFS, r) * _pow2(k)


@_f64
def log(x: torch.Tensor) -> torch.Tensor:
    """ln x for x > 0: x = m·2^e with m ∈ [√½, √2), ln m = 2 atanh((m − 1)/(m + 1)) by its series."""
    m, e = torch.frexp(x)  # exact: m ∈ [0.5, 1)
    small = m < float.fromhex("0x1.6a09e667f3bcdp-1")  # √½
    m = torch.where(small, m * 2.0, m)
    e = (e - small.to(e.dtype)).double()
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    log_m = (s * _horner(_ATANH_COEFFS, z)) * 2.0
    return e * _LN2_HI + (e * _LN2_LO + log_m)


def sincos_turns(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin 2πu, cos 2πu): u reduced exactly to the nearest quarter turn, then Taylor on |y| ≤ π/4.

    Exact reduction needs |u| < 2^50; larger arguments lose accuracy but stay reproducible.
    """
    dtype = u.dtype
    u = u.double()
    q = torch.round(u * 4.0)  # exact: multiply by a power of two, round
    g = u - q * 0.25  # exact for the magnitudes used (both on the same binade grid)
    y = g * _TWO_PI
    z = y * y
    s = y * _horner(_SIN_COEFFS, z)
    c = _horner(_COS_COEFFS, z)
    quadrant = torch.remainder(q, 4.0)
    sin = torch.where(quadrant == 0, s, torch.where(quadrant == 1, c, torch.where(quadrant == 2, -s, -c)))
    cos = torch.where(quadrant == 0, c, torch.where(quadrant == 1, -s, torch.where(quadrant == 2, -c, s)))
    return sin.to(dtype), cos.to(dtype)


def sin(x: torch.Tensor) -> torch.Tensor:
    """sin x through :func:`sincos_turns` (x/2π rounds once: relative error ~1e-16 of the turns)."""
    return sincos_turns(x.double() * _INV_TWO_PI)[0].to(x.dtype)


def cos(x: torch.Tensor) -> torch.Tensor:
    """cos x through :func:`sincos_turns`."""
    return sincos_turns(x.double() * _INV_TWO_PI)[1].to(x.dtype)


@_f64
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + e^−x)."""
    return 1.0 / (exp(-x) + 1.0)


@_f64
def silu(x: torch.Tensor) -> torch.Tensor:
    """x·σ(x) (the U-Net's nonlinearity)."""
    return x * sigmoid(x)


@_f64
def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh form, ½x(1 + tanh(√(2/π)(x + 0.044715x³))), with tanh z = 1 − 2/(e^{2z} + 1).

    Within ~1e-3 of the erf form the context networks were trained with; erf itself has no cheap
    reproducible form here.
    """
    z = (x + (x * x * x) * 0.044715) * _SQRT_2_OVER_PI
    tanh = 1.0 - 2.0 / (exp(z * 2.0) + 1.0)
    return (x * 0.5) * (tanh + 1.0)


def numpy_float64(fn: Callable[[torch.Tensor], torch.Tensor], a: np.ndarray) -> np.ndarray:
    """Apply one of these functions to a numpy array in float64."""
    return fn(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))).numpy()
