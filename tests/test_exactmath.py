"""diffcodec.exactmath: accuracy against torch's own functions, and bits pinned as golden values.

GOLDEN VALUES: format version 5 computes its schedule, variances and shared randomness with these
functions, so the hex literals below are part of the format.  If one fails, fix the code; never
"update" a literal without a new format version.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from diffcodec import exactmath as em

from other_cpus import OTHER_CPUS, run_digest

GRID = (torch.arange(-100000, 100001, dtype=torch.float64) * 7 + 3) / 2**14  # exact values in about ±43


def _ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / torch.finfo(torch.float64).eps / b.abs().clamp_min(1e-300)).max())


def test_exp_accuracy():
    x = torch.linspace(-700, 700, 100001, dtype=torch.float64)
    assert _ulps(em.exp(x), torch.exp(x)) < 4


def test_log_accuracy():
    x = torch.exp(torch.linspace(-700, 700, 100001, dtype=torch.float64))
    assert float((em.log(x) - torch.log(x)).abs().max()) < 4e-16 * 700
    near_one = torch.linspace(0.5, 2.0, 100001, dtype=torch.float64)
    assert float((em.log(near_one) - torch.log(near_one)).abs().max()) < 4e-16


def test_sin_cos_accuracy():
    u = torch.linspace(-3, 3, 100001, dtype=torch.float64)
    s, c = em.sincos_turns(u)
    assert float((s - torch.sin(2 * torch.pi * u)).abs().max()) < 4e-15
    assert float((c - torch.cos(2 * torch.pi * u)).abs().max()) < 4e-15
    x = torch.linspace(-1000, 1000, 100001, dtype=torch.float64)
    assert float((em.sin(x) - torch.sin(x)).abs().max()) < 1e-12  # x/2π rounds once: ~1e-16 of 160 turns
    assert float((em.cos(x) - torch.cos(x)).abs().max()) < 1e-12


def test_activations_accuracy():
    x = torch.linspace(-30, 30, 20001, dtype=torch.float64)
    assert float((em.silu(x) - torch.nn.functional.silu(x)).abs().max()) < 1e-14
    assert float((em.gelu_tanh(x) - torch.nn.functional.gelu(x, approximate="tanh")).abs().max()) < 1e-14
    assert float((em.sigmoid(x) - torch.sigmoid(x)).abs().max()) < 1e-15


def test_dtype_kept_and_float32_is_rounded_float64():
    x32 = torch.tensor([0.5, -3.25, 7.0], dtype=torch.float32)
    out = em.exp(x32)
    assert out.dtype == torch.float32
    assert torch.equal(out, em.exp(x32.double()).float())
    with pytest.raises(TypeError):
        em.exp(torch.tensor([1, 2]))


def test_saturation_instead_of_overflow():
    out = em.exp(torch.tensor([-1e6, 1e6], dtype=torch.float64))
    assert torch.isfinite(out).all() and out[0] >= 0


def test_numpy_wrapper():
    a = np.array([0.0, 1.0, -2.5])
    assert np.array_equal(em.numpy_float64(em.exp, a), em.exp(torch.from_numpy(a)).numpy())


def test_golden_coefficients():
    blob = b"".join(c.hex().encode() for c in em._EXP_COEFFS + em._SIN_COEFFS + em._COS_COEFFS + em._ATANH_COEFFS)
    assert hashlib.sha256(blob).hexdigest() == "007b6b399384748243ceb7dac8fa6ec1ec897a239ad39151363ed4d9541e140a"


def test_golden_values():
    hexes = lambda t: [v.hex() for v in t.tolist()]  # noqa: E731
    assert hexes(em.exp(torch.tensor([1.0, -0.5, 10.0, 1e-3, 0.1], dtype=torch.float64))) == [
        "0x1.5bf0a8b14576ap+1", "0x1.368b2fc6f960ap-1", "0x1.5829dcf950560p+14", "0x1.0041919b7ee34p+0", "0x1.1aec7b35a00d4p+0"]
    assert hexes(em.log(torch.tensor([2.0, 10.0, 0.1, 1e-300, 1.5], dtype=torch.float64))) == [
        "0x1.62e42fefa39efp-1", "0x1.26bb1bbb55516p+1", "-0x1.26bb1bbb55515p+1", "-0x1.5963447f87fb5p+9", "0x1.9f323ecbf984cp-2"]
    s, c = em.sincos_turns(torch.tensor([0.1, 0.3, -0.45, 12.375], dtype=torch.float64))
    assert hexes(s) == ["0x1.2cf2304755a5ep-1", "0x1.e6f0e13445500p-1", "-0x1.3c6ef372fe94ep-2", "0x1.6a09e667f3bccp-1"]
    assert hexes(c) == ["0x1.9e3779b97f4a8p-1", "-0x1.3c6ef372fe94ep-2", "-0x1.e6f0e13445500p-1", "-0x1.6a09e667f3bcdp-1"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numpy_and_torch_operations_give_the_same_bits(dtype):
    """CPU tensors are computed with numpy's operations (faster on small arrays), others with torch's: the same
    IEEE operations in the same order, so the same bits; here the torch path is forced by requires_grad."""
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(20000, generator=g, dtype=torch.float64) * s for s in (1e-3, 1.0, 30.0, 800.0, 1e7)]).to(dtype)
    x = x.reshape(10, -1)[:, ::3]  # strided too
    forced = x.clone().requires_grad_(True)
    for f in (em.exp, em.sigmoid, em.silu, em.gelu_tanh, em.sin, em.cos):
        assert torch.equal(f(x), f(forced).detach()), f.__name__
    assert torch.equal(em.log(x.abs() + 1e-30), em.log(forced.abs() + 1e-30).detach())
    for a, b in zip(em.sincos_turns(x), em.sincos_turns(forced)):
        assert a.dtype == dtype and torch.equal(a, b.detach())


_DIGEST_SCRIPT = """
import hashlib, torch
from diffcodec import exactmath as em

from other_cpus import OTHER_CPUS, run_digest
u = (torch.arange(-100000, 100001, dtype=torch.float64) * 7 + 3) / 2**14
h = hashlib.sha256()
for f in (em.exp, em.sin, em.cos, em.silu, em.gelu_tanh, em.sigmoid):
    h.update(f(u).numpy().tobytes())
h.update(em.log(u.abs() + 1e-3).numpy().tobytes())
s, c = em.sincos_turns(u)
h.update(s.numpy().tobytes() + c.numpy().tobytes())
g = u.clone().requires_grad_(True)  # torch's operations (the path off the CPU) rather than numpy's
for f in (em.exp, em.silu, em.gelu_tanh):
    h.update(f(g).detach().numpy().tobytes())
h.update(em.sincos_turns(g)[0].detach().numpy().tobytes())
print(h.hexdigest())
"""

@pytest.mark.parametrize("cpu", sorted(OTHER_CPUS))
def test_same_bits_under_other_cpu_kernels(cpu):
    assert run_digest(_DIGEST_SCRIPT, OTHER_CPUS[cpu]) == run_digest(_DIGEST_SCRIPT, {})
