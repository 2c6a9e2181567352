"""models/intnet.py: integer networks close to their float originals, and the same bits on every CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from diffcodec.models.context_net import ContextNet, ContextNetConfig
from diffcodec.models.intnet import (IntContextNet, IntSpec, IntUNet, _IntLinear, _quantize_per_image, exact_float32,
                                     float32_is_exact)
from diffcodec.models.unet import UNet, UNetConfig

from other_cpus import OTHER_CPUS, run_digest

TINY = UNetConfig(base_channels=16, channel_mult=(1, 2), attention_resolutions=(16,), fourier_features=(7,), dropout=0.0)


def _randomized(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (the zero-initialised output layers would hide whole paths).

    Uniform values from PCG64 integers: torch's and numpy's normal samplers differ between CPU kernels,
    and the cross-CPU test needs the same weights everywhere.
    """
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            u = torch.from_numpy(rng.integers(-1000, 1001, size=p.shape).astype(np.float32) / 1000 * 1.7)
            if name.endswith("weight") and p.dim() > 1:
                p.copy_(u / (p[0].numel() ** 0.5))
            else:
                p.copy_(u * 0.1 + (1.0 if "norm" in name and "weight" in name else 0.0))
    return net.eval()


def _inputs(batch: int, seed: int = 1) -> torch.Tensor:
    """Inputs every CPU builds identically (integers from PCG64, scaled by a power of two)."""
    ints = np.random.default_rng(seed).integers(-12000, 12000, size=(batch, 3, 32, 32))
    return torch.from_numpy(ints.astype(np.float32) / 4096)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return _randomized(UNet(TINY), 0)


@torch.no_grad()
def test_int_unet_close_to_float(unet):
    x = _inputs(3)
    for t in (0, 400, 999):
        ref = unet(x, torch.full((3,), t))
        out = IntUNet(unet)(x, torch.full((3,), t))
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert float((out - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt()) < 0.05


def test_int_unet_does_not_depend_on_batch(unet):
    net, x, t = IntUNet(unet), _inputs(5), 300
    whole = net(x, torch.full((5,), t))
    for i in (0, 3):
        assert torch.equal(net(x[i : i + 1], torch.full((1,), t)), whole[i : i + 1])


def test_int_unet_one_timestep_per_call(unet):
    with pytest.raises(ValueError):
        IntUNet(unet)(_inputs(2), torch.tensor([1, 2]))


def test_int_linear_equals_float64_reference():
    g = torch.Generator().manual_seed(3)
    spec = IntSpec(act_max=127, weight_max=127, arithmetic=1)
    weight, bias = torch.randn(40, 300, 3, 3, generator=g), torch.randn(40, generator=g)
    layer = _IntLinear(weight, bias, spec, padding=1)
    assert len(layer.groups) > 1  # 300·9 products of 127·127 exceed 2^24: the sum is split
    for a, b in layer.groups:
        assert (b - a) * 9 * 127 * 127 < 2**24
    x = torch.randn(2, 300, 8, 8, generator=g)
    q, scale = _quantize_per_image(x, 127)
    w_int = torch.cat(layer.w_int, dim=1).double()
    reference = F.conv2d(q.double(), w_int, padding=1) * (scale.double() * layer.w_scale) + layer.bias
    assert torch.equal(layer(x), reference.float())
    assert float(q.abs().max()) <= 127 and float((w_int - w_int.round()).abs().max()) == 0


def test_int_linear_groups_bounded_by_weights():
    """Arithmetic 2: a layer's groups from its own weights' bound A·Σ|w_int| < 2^24, one group where it fits."""
    g = torch.Generator().manual_seed(4)
    for cin, wmax, act in ((300, 127, 127), (64, 1023, 127), (2000, 127, 127)):
        weight, bias = torch.randn(40, cin, 3, 3, generator=g), torch.randn(40, generator=g)
        layer = _IntLinear(weight, bias, IntSpec(act_max=act, weight_max=wmax), padding=1)
        assert wmax // 2 <= layer.weight_max <= wmax
        for (a, b), w in zip(layer.groups, layer.w_int):
            assert float(w.abs().sum(dim=(1, 2, 3)).max()) * act < 2**24
            assert float((w - w.round()).abs().max()) == 0 and float(w.abs().max()) <= layer.weight_max
        x = torch.randn(2, cin, 8, 8, generator=g) * 3.0
        q, scale = _quantize_per_image(x, act)
        w_int = torch.cat(layer.w_int, dim=1).double()
        exact = F.conv2d(q.double(), w_int, padding=1)  # the exact integer sums
        if layer.simple:
            reference = exact.float() * (scale * layer.w_scale32) + layer.bias32
        else:
            reference = (exact * (scale.double() * layer.w_scale) + layer.bias).float()
        assert torch.equal(layer(x), reference)
    assert layer.weight_max == 127 and len(layer.groups) > 1  # 2000 channels: split, not coarsened


def test_group_norm_then_table():
    """GroupNorm's statistics in float64 equal int64's; the fused SiLU equals its definition."""
    from diffcodec.models.intnet import _IntGroupNorm, _Table
    from diffcodec import exactmath
    g = torch.Generator().manual_seed(5)
    norm = torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(16, generator=g) * 0.1)
    x = torch.randn(3, 16, 32, 32, generator=g) * 5.0
    new, old = _IntGroupNorm(norm, IntSpec()), _IntGroupNorm(norm, IntSpec(arithmetic=1))
    assert torch.equal(new(x), old(x))
    table = _Table(exactmath.silu, IntSpec(), tail_identity=False, top=256.0)
    a, b = new.affine(x)
    idx = torch.round(x * (a * 256.0) + (b * 256.0 + table.half)).clamp(0, table.last).long()
    assert torch.equal(new.then(table, x), table.values[idx])
    ref = torch.nn.functional.silu(norm(x)).detach()
    assert float((new.then(table, x) - ref).abs().max()) < 3e-3


@torch.no_grad()
def test_int_context_net_close_to_float():
    torch.manual_seed(0)
    for bin_width in (0, 16):
        net = _randomized(ContextNet(ContextNetConfig(width=16, blocks=2, bin_width=bin_width)), 1)
        g = torch.Generator().manual_seed(2)
        parts = [torch.randn(2, 3, 16, 16, generator=g) for _ in range(3)] + [torch.ones(2, 3, 16, 16), torch.zeros(2, 3, 16, 16),
                                                                             torch.tensor([-1.0, 2.0])]
        extra = [torch.randn(2, 3, 16, 16, generator=g), torch.ones(2, 3, 16, 16)] if bin_width else []
        ref = net(*parts, *extra)
        out = IntContextNet(net, IntSpec(weight_max=1023))(*parts, *extra)
        for r, o in zip(ref, out):
            assert float((o - r).pow(2).mean().sqrt() / r.pow(2).mean().sqrt()) < 0.02


def _bits(t: torch.Tensor) -> torch.Tensor:
    """A float32 tensor's bit patterns (so that -0.0 and 0.0, or two NaNs, compare as what they are)."""
    return t.detach().cpu().contiguous().view(torch.int32)


def _assert_same_bits(a, b):
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype == torch.float32 and x.shape == y.shape
        assert torch.equal(_bits(x), _bits(y))


def _context_inputs(batch: int, bin_width: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    parts = [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(3)]
    parts += [(torch.rand(batch, 3, 16, 16, generator=g) > 0.5).float(), (torch.rand(batch, 3, 16, 16, generator=g) > 0.5).float(),
              torch.randn(batch, generator=g)]
    if bin_width:
        parts += [torch.randn(batch, 3, 16, 16, generator=g), (torch.rand(batch, 3, 16, 16, generator=g) > 0.5).float()]
    return parts


@pytest.mark.parametrize("arithmetic", [1, 2])
def test_gemm_path_is_bit_identical(unet, arithmetic):
    """conv="gemm" (im2col + float32 GEMMs and the device code throughout: what runs on a GPU) gives the CPU path's bits."""
    spec = IntSpec(arithmetic=arithmetic)
    fast, gemm = IntUNet(unet, spec), IntUNet(unet, spec, conv="gemm")
    assert fast.conv in ("onednn", "gemm") and gemm.conv == "gemm"
    for batch, t in ((1, 999), (3, 300), (2, 0)):
        x = _inputs(batch, seed=batch)
        _assert_same_bits(fast(x, torch.full((batch,), t)), gemm(x, torch.full((batch,), t)))
    x = _inputs(2)[:, :, 8:24, 4:28]  # another tile size: 16×24
    _assert_same_bits(fast(x, torch.full((2,), 40)), gemm(x, torch.full((2,), 40)))
    for bin_width in (0, 16):
        net = _randomized(ContextNet(ContextNetConfig(width=16, blocks=2, bin_width=bin_width)), 1)
        cspec = IntSpec(weight_max=1023, arithmetic=arithmetic)
        a, b = IntContextNet(net, cspec), IntContextNet(net, cspec, conv="gemm")
        for batch in (1, 3):
            parts = _context_inputs(batch, bin_width)
            _assert_same_bits(a(*parts), b(*parts))


def test_gemm_path_is_bit_identical_for_the_shipped_networks():
    from diffcodec.models.checkpoint import CONTEXT_INT_SPEC, UNET_INT_SPEC, CheckpointError, load_model
    try:
        model = load_model()
    except CheckpointError:
        pytest.skip("no shipped model")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 32, 32, generator=g)
    fast, gemm = IntUNet(model.net, UNET_INT_SPEC), IntUNet(model.net, UNET_INT_SPEC, conv="gemm")
    _assert_same_bits(fast(x, torch.full((2,), 150)), gemm(x, torch.full((2,), 150)))
    ctx = [IntContextNet(model.context, CONTEXT_INT_SPEC, conv=c) for c in (None, "gemm")]
    parts = _context_inputs(2, 0, seed=8)
    parts = [torch.nn.functional.interpolate(p, size=(32, 32)) if p.dim() == 4 else p for p in parts]
    _assert_same_bits(ctx[0](*parts), ctx[1](*parts))


def _linear_layers(net) -> list[_IntLinear]:
    found, seen, stack = [], set(), [net]
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, _IntLinear):
            found.append(o)
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif hasattr(o, "__dict__") and not isinstance(o, torch.Tensor):
            stack.extend(vars(o).values())
    return found


def _int8_used(net) -> int:
    return sum(p[1] is not None for layer in _linear_layers(net) for p in layer._packed.values())


def _without_int8(net):
    for layer in _linear_layers(net):
        layer._int8 = False
        layer._packed.clear()
    return net


def _vnni_here() -> bool:
    import os
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_vnni" in flags and "ONEDNN_MAX_CPU_ISA" not in os.environ and os.environ.get("DIFFCODEC_INT8_CONV") != "0"


def test_int8_convolutions_give_the_float32_sums(unet):
    """oneDNN's int8 convolutions (u8·s8 products summed in int32) where the CPU sums them without saturating: the
    float32 convolutions' bits, on random networks at the bound of their sums too."""
    x = _inputs(3)
    for spec in (IntSpec(), IntSpec(act_max=127, weight_max=127, arithmetic=2)):
        fast, plain = IntUNet(unet, spec), _without_int8(IntUNet(unet, spec))
        for batch, t in ((1, 999), (3, 300)):
            _assert_same_bits(fast(x[:batch], torch.full((batch,), t)), plain(x[:batch], torch.full((batch,), t)))
        if _vnni_here():
            assert _int8_used(fast) > 0 and _int8_used(plain) == 0
    layer = _IntLinear(torch.full((8, 40, 3, 3), 0.5), torch.zeros(8), IntSpec(), padding=1)  # sums at A·Σ|w| ≈ 2^22
    q = torch.full((2, 40, 6, 6), 3.0)
    _assert_same_bits(layer(q), _without_int8(_IntLinear(torch.full((8, 40, 3, 3), 0.5), torch.zeros(8), IntSpec(), padding=1))(q))


def test_an_int8_kernel_that_saturates_is_not_used(unet, monkeypatch):
    """The probes catch a kernel whose large sums are wrong (CPUs without VNNI saturate products in int16): the layer
    keeps the float32 convolution, and the network its bits."""
    reference = _without_int8(IntUNet(unet))(_inputs(2), torch.full((2,), 500))
    real = _IntLinear._conv_int8

    def saturating(self, *args):
        out = real(self, *args)
        return out.clamp(-30000.0, 30000.0)

    monkeypatch.setattr(_IntLinear, "_conv_int8", saturating)
    net = IntUNet(unet)
    _assert_same_bits(net(_inputs(2), torch.full((2,), 500)), reference)
    assert _int8_used(net) == 0


def test_to_moves_and_switches_paths(unet):
    net, x, t = IntUNet(unet), _inputs(2), torch.full((2,), 500)
    reference = net(x, t)
    assert net.to("cpu", conv="gemm") is net and net.conv == "gemm" and net.device == torch.device("cpu")
    _assert_same_bits(net(x, t), reference)
    net.to()
    _assert_same_bits(net(x, t), reference)
    with pytest.raises(ValueError):
        net.to("cpu", conv="winograd")


def test_exact_float32_overrides_reduced_precision_and_restores_it(unet):
    """Float32 matmuls in bf16 ("medium" precision: oneDNN on CPUs with bf16) would round the context networks' 10-bit
    weights; the networks run with IEEE float32 anyway, and the caller's setting is given back."""
    net = _randomized(ContextNet(ContextNetConfig(width=16, blocks=2)), 1)
    ints, parts = IntContextNet(net, IntSpec(weight_max=1023), conv="gemm"), _context_inputs(2, 0)
    unet_ints, x, t = IntUNet(unet, conv="gemm"), _inputs(2), torch.full((2,), 700)
    reference, unet_reference = ints(*parts), unet_ints(x, t)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert not float32_is_exact()
        _assert_same_bits(ints(*parts), reference)
        _assert_same_bits(unet_ints(x, t), unet_reference)
        with exact_float32():
            assert float32_is_exact()
            with exact_float32():  # re-entrant
                assert float32_is_exact()
            assert float32_is_exact()
        assert not float32_is_exact() and torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_gives_the_cpu_bits(unet):
    """On a GPU (GEMM convolutions, TF32 off even if the caller turned it on): the CPU's bits."""
    x, t = _inputs(3), torch.full((3,), 250)
    reference = IntUNet(unet)(x, t)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        gpu = IntUNet(unet, device="cuda")
        out = gpu(x.cuda(), t.cuda())
        assert out.device.type == "cuda"
        _assert_same_bits(out, reference)
        _assert_same_bits(IntUNet(unet).to("cuda")(x, t), reference)  # CPU inputs are moved
        net = _randomized(ContextNet(ContextNetConfig(width=16, blocks=2, bin_width=16)), 1)
        parts = _context_inputs(2, 16)
        _assert_same_bits(IntContextNet(net, IntSpec(weight_max=1023), device="cuda")(*[p.cuda() for p in parts]),
                          IntContextNet(net, IntSpec(weight_max=1023))(*parts))
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)  # given back
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


_DIGEST_SCRIPT = """
import hashlib, torch
from test_intnet import TINY, _inputs, _randomized
from diffcodec.models.context_net import ContextNet, ContextNetConfig
from diffcodec.models.intnet import IntContextNet, IntUNet
from diffcodec.models.unet import UNet
torch.manual_seed(0)
h = hashlib.sha256()
for conv in (None, "gemm"):  # oneDNN's convolutions, and im2col + GEMMs (the device path)
    net = IntUNet(_randomized(UNet(TINY), 0), conv=conv)
    for t in (999, 300, 0):
        h.update(net(_inputs(2), torch.full((2,), t)).numpy().tobytes())
    ctx = IntContextNet(_randomized(ContextNet(ContextNetConfig(width=16, blocks=2)), 1), conv=conv)
    x = _inputs(2, seed=5)
    for out in ctx(x, x * 0.5, x * 2.0, torch.ones_like(x), torch.zeros_like(x), torch.tensor([-1.0, 2.0])):
        h.update(out.numpy().tobytes())
print(h.hexdigest())
"""


@pytest.mark.parametrize("cpu", sorted(OTHER_CPUS))
def test_same_bits_under_other_cpu_kernels(cpu):
    assert run_digest(_DIGEST_SCRIPT, OTHER_CPUS[cpu]) == run_digest(_DIGEST_SCRIPT, {"OMP_NUM_THREADS": "1"})
