"""The integer networks' fast path (models/intnet.py) agrees bit for bit with a plain-numpy int64 reference.

tests/intnet_reference.py computes every sum the fast path does in float32 or float64 as an int64 sum and
repeats every rounded operation in the same precision and order, so any disagreement is either a sum the
fast path does not compute exactly or an operation it does differently from its rules (issue 17's
acceptance: random weights and inputs, and the shipped models on one image).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

from diffcodec import exactmath
from diffcodec.models.checkpoint import CONTEXT_INT_SPEC, UNET_INT_SPEC, load_model
from diffcodec.models.context_net import ContextNet, ContextNetConfig, coarse_stage_masks, stage_masks
from diffcodec.models.intnet import IntContextNet, IntSpec, IntUNet, _IntLinear
from diffcodec.models.unet import UNet, UNetConfig

import intnet_reference as ref
from test_intnet import TINY, _inputs, _randomized

IMAGES = [Path(__file__).resolve().parents[1] / "examples" / "images" / "cifar10-test-00000.png",
          Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-test-png" / "00000.png"]
# DDPM's options (models/convert.py) and two heads; an odd width (its embedding padded), two blocks a level and
# GroupNorm groups of 9 channels at 32×32 (n·2^40 ≥ 2^53: the fast path's int64 statistics).
DDPM_STYLE = UNetConfig(base_channels=16, channel_mult=(1, 2), attention_resolutions=(16,), fourier_features=(7, 8),
                        dropout=0.0, learn_sigma=False, num_heads=2, time_sin_first=True, time_freq_shift=1,
                        downsample_pad_trailing=True)
ODD = UNetConfig(base_channels=9, channel_mult=(1, 1), num_res_blocks=2, attention_resolutions=(), fourier_features=(),
                 dropout=0.0)
SPLIT = IntSpec(weight_max=4095)  # hidden layers too wide for one float32 sum: split, summed in float64

# The fast path's convolution backends where it has a choice (IntUNet(..., conv=...)): every one must agree.
BACKENDS = [None] + (["gemm"] if "conv" in inspect.signature(IntUNet).parameters else [])

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fast_nets(cls, net, spec):
    """The fast path on each backend: (name, network)."""
    return [(conv or "default", cls(net, spec) if conv is None else cls(net, spec, conv=conv)) for conv in BACKENDS]


def assert_same_bits(fast, expected: np.ndarray, what: str) -> None:
    fast = fast.numpy() if isinstance(fast, torch.Tensor) else fast
    assert fast.dtype == expected.dtype and fast.shape == expected.shape, what
    differ = fast.view(np.uint32) != expected.view(np.uint32)
    if differ.any():
        at = tuple(int(i) for i in np.argwhere(differ)[0])
        pytest.fail(f"{what}: {int(differ.sum())} of {differ.size} values differ; first at {at}: "
                    f"fast path {float(fast[at])!r}, reference {float(expected[at])!r}")


def _linear_pairs(fast, reference):
    """(name, fast path layer, reference layer) for every linear layer of two networks built alike."""
    if isinstance(fast, IntContextNet):
        yield "inp", fast.inp, reference.inp
        for i, (f, r) in enumerate(zip(fast.blocks, reference.blocks)):
            yield f"blocks.{i}.conv3", f[0], r[0]
            yield f"blocks.{i}.conv1", f[1], r[1]
        yield "out", fast.out, reference.out
        return
    for name in ("time1", "time2", "input_conv", "out_conv"):
        yield name, getattr(fast, name), getattr(reference, name)
    layers = [(f"{part}.{i}.{j}", f, r) for part in ("down", "up")
              for i, (fb, rb) in enumerate(zip(getattr(fast, part), getattr(reference, part)))
              for j, (f, r) in enumerate(zip(fb, rb))]
    layers += [(f"mid.{j}", f, r) for j, (f, r) in enumerate(zip(fast.mid, reference.mid))]
    for name, f, r in layers:
        for sub in ("conv1", "emb", "conv2", "skip", "qkv", "proj"):
            if getattr(r, sub, None) is not None:
                yield f"{name}.{sub}", getattr(f, sub), getattr(r, sub)
        if isinstance(r, ref.Linear):
            yield name, f, r


def assert_same_layer(f, r, name: str) -> None:
    """One linear layer's integer weights, their scales, act_max, and whether it is one float32 sum."""
    assert np.array_equal(torch.cat(f.w_int, dim=1).numpy(), r.w_int.astype(np.float32)), name
    assert np.array_equal(f.w_scale.numpy().reshape(-1).view(np.uint64), r.w_scale.reshape(-1).view(np.uint64)), name
    assert (f.act_max, f.weight_max, f.simple) == (r.act_max, r.weight_max, r.single_sum), name


def assert_same_integer_weights(fast, reference) -> dict:
    """Every linear layer as :func:`assert_same_layer`; how many were coarsened or split."""
    seen = {"coarsened": 0, "split": 0}
    for name, f, r in _linear_pairs(fast, reference):
        assert_same_layer(f, r, name)
        seen["coarsened"] += int(r.weight_max < fast.spec.weight_max)
        seen["split"] += int(not r.single_sum and not r.per_channel)
    return seen


# --------------------------------------------------------------------------- the reference's own parts


def test_numpy_exactmath_is_exactmath():
    """The reference's ports of exp, sin/cos in turns, SiLU and GELU give exactmath's bits."""
    x = np.concatenate([np.linspace(-800.0, 800.0, 20001), np.linspace(-3.0, 3.0, 20001), [0.0, -0.0, 1e-300, -1e-300]])
    for port, fn in ((ref.exp64, exactmath.exp), (ref.silu64, exactmath.silu), (ref.gelu_tanh64, exactmath.gelu_tanh)):
        assert np.array_equal(port(x).view(np.uint64), exactmath.numpy_float64(fn, x).view(np.uint64)), fn.__name__
    u = np.concatenate([x / 7.0, np.arange(-40, 41) * 0.125])
    for port, expected in zip(ref.sincos_turns64(u), exactmath.sincos_turns(torch.from_numpy(u))):
        assert np.array_equal(port.view(np.uint64), expected.numpy().view(np.uint64))


def test_conv_int64_is_a_convolution():
    g = np.random.default_rng(7)
    q, w = g.integers(-127, 128, size=(2, 5, 9, 8)), g.integers(-127, 128, size=(4, 5, 3, 3))
    for stride in (1, 2):
        expected = torch.nn.functional.conv2d(torch.from_numpy(q).double(), torch.from_numpy(w).double(), stride=stride)
        assert np.array_equal(ref.conv_int64(q, w, stride), expected.numpy().astype(np.int64))
    per_channel = ref.conv_int64_per_channel(q, w)
    assert np.array_equal(per_channel.sum(axis=1), ref.conv_int64(q, w))


@pytest.mark.parametrize("cin, k, spec, split", [(48, 3, UNET_INT_SPEC, False), (64, 3, CONTEXT_INT_SPEC, False),
                                                  (1500, 3, UNET_INT_SPEC, True), (600, 1, SPLIT, True)])
def test_linear_layer_at_its_bound(cin, k, spec, split):
    """Inputs that reach a layer's bound A·Σ|w_int| at an output: the one float32 sum (bound below 2^24) and the
    float64 sum of split groups (bound beyond it) are still exact."""
    g = np.random.default_rng(cin)
    weight = (g.standard_normal((8, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    bias = g.standard_normal(8).astype(np.float32)
    fast = _IntLinear(torch.from_numpy(weight), torch.from_numpy(bias), spec, padding=k // 2)
    reference = ref.Linear({"weight": weight, "bias": bias, "padding": k // 2}, spec)
    assert_same_layer(fast, reference, "layer")
    sign = np.sign(reference.w_int[0]).astype(np.float32)  # (cin, k, k)
    bound = int(np.abs(reference.w_int[0]).sum()) * reference.act_max
    assert (bound >= 2**24) == split == (not reference.single_sum)
    if k > 1:
        # Over a k×k image the centre output's window is the whole image: ±A·sign(w_int[0]) sums to ±bound there.
        x = np.stack([sign, -sign, g.standard_normal((cin, k, k)).astype(np.float32)])
        q = np.rint(sign * reference.act_max).astype(np.int64)[None]
        assert int(np.abs(ref.conv_int64(reference.pad(q), reference.w_int)).max()) == bound
    else:
        # Every pixel near the bound: sign(w_int[0]) times magnitudes in [0.5, 1], so most sums are past 2^24.
        x = sign[None] * g.uniform(0.5, 1.0, size=(2, cin, 16, 16)).astype(np.float32)
    assert_same_bits(fast(torch.from_numpy(x)), reference(x), f"{cin}×{k}×{k} layer, bound {bound}")


# --------------------------------------------------------------------------- random networks


UNET_CASES = {
    "tiny": (TINY, UNET_INT_SPEC),
    "tiny-split": (TINY, SPLIT),
    "ddpm-style": (DDPM_STYLE, IntSpec(weight_max=1023)),
    "odd-width": (ODD, UNET_INT_SPEC),
}


def _unet_inputs(seed: int) -> np.ndarray:
    """Three images: [−2.9, 2.9], a hundredth of that, all zeros (the smallest quantization scale)."""
    x = _inputs(3, seed).numpy()
    x[1] *= np.float32(0.01)
    x[2] = 0.0
    return x


@pytest.mark.parametrize("case", sorted(UNET_CASES))
def test_unet_same_bits_as_reference(case):
    config, spec = UNET_CASES[case]
    torch.manual_seed(0)
    net = _randomized(UNet(config), 0)
    reference = ref.UNetReference(ref.unet_params(net), spec)
    fast = fast_nets(IntUNet, net, spec)
    seen = assert_same_integer_weights(fast[0][1], reference)
    if spec is SPLIT:
        assert seen["split"] > 0
    if case == "ddpm-style":
        assert seen["coarsened"] > 0  # weight_max lowered for one float32 sum
    assert np.array_equal(fast[0][1].silu.values.cpu().numpy().view(np.uint32), reference.silu.values.view(np.uint32))
    for seed, t in ((1, 0), (2, 400), (3, 999)):
        x = _unet_inputs(seed)
        expected = reference(x, t)
        for backend, f in fast:
            assert_same_bits(f(torch.from_numpy(x), torch.full((3,), t)), expected, f"{case} U-Net ({backend}) at t={t}")


def _context_inputs(config: ContextNetConfig, seed: int, size: int = 16) -> list[np.ndarray]:
    """Three stages' inputs as the codec builds them (masks, residuals zero where unknown, one log σ per row);
    the third row's y is 500 times larger, so that activations pass the GELU table's end (64)."""
    g = np.random.default_rng(seed)
    normal = lambda: g.standard_normal((3, 3, size, size)).astype(np.float32)  # noqa: E731
    xhat, y, residual = np.tanh(normal()), normal(), normal()
    y[2] *= np.float32(500.0)
    log_sigma = np.array([-3.1, 0.2, 2.0], dtype=np.float32)
    if config.bin_width:
        masks = coarse_stage_masks(size, size)
        known, bin_known, coded = (np.stack([masks[i][k].numpy() for i in (0, 7, 11)]) for k in range(3))
        return [xhat, y, residual * known, known, coded, log_sigma, normal() * bin_known, bin_known]
    masks = stage_masks(size, size)
    known, coded = (np.stack([masks[i][k].numpy() for i in (0, 3, 5)]) for k in range(2))
    return [xhat, y, residual * known, known, coded, log_sigma]


@pytest.mark.parametrize("bin_width", [0, 16])
@pytest.mark.parametrize("spec", [CONTEXT_INT_SPEC, SPLIT], ids=["context-spec", "split"])
def test_context_net_same_bits_as_reference(bin_width, spec):
    torch.manual_seed(0)
    net = _randomized(ContextNet(ContextNetConfig(width=16, blocks=2, bin_width=bin_width)), 1)
    reference = ref.ContextNetReference(ref.context_params(net), spec)
    fast = fast_nets(IntContextNet, net, spec)
    seen = assert_same_integer_weights(fast[0][1], reference)
    assert seen["split"] > 0 if spec is SPLIT else seen["split"] == 0
    for seed in (1, 2):
        inputs = _context_inputs(net.config, seed)
        assert reference.inp(reference.stack(*inputs)).max() > reference.gelu.range  # the table's identity tail is used
        expected = reference(*inputs)
        for backend, f in fast:
            for name, out, e in zip(("delta", "lambda"), f(*(torch.from_numpy(a) for a in inputs)), expected):
                assert_same_bits(out, e, f"context net (bin width {bin_width}, {backend}) {name}")


def test_one_unit_in_one_weight_is_seen():
    """The comparison can fail: with one integer weight of the reference off by one, the bits differ."""
    torch.manual_seed(0)
    net = _randomized(UNet(TINY), 0)
    fast, reference = IntUNet(net, UNET_INT_SPEC), ref.UNetReference(ref.unet_params(net), UNET_INT_SPEC)
    x = _unet_inputs(1)
    out = fast(torch.from_numpy(x), torch.full((3,), 400))
    assert_same_bits(out, reference(x, 400), "unchanged")
    reference.mid[0].conv1.w_int[0, 0, 1, 1] += 1
    with pytest.raises(pytest.fail.Exception, match="values differ"):
        assert_same_bits(out, reference(x, 400), "one weight off by one")


# --------------------------------------------------------------------------- the shipped models on one image


@pytest.fixture(scope="module")
def shipped():
    try:
        model = load_model(None)
    except Exception as e:  # noqa: BLE001 - a missing or unreadable checkpoint: nothing to compare
        pytest.skip(f"the shipped model does not load: {e}")
    image = next((p for p in IMAGES if p.exists()), None)
    if image is None:
        pytest.skip("no test image")
    from diffcodec.images import load_image

    x0 = load_image(image).pixels[:32, :32, :3].transpose(2, 0, 1)[None].astype(np.float64) / 127.5 - 1.0
    return model, model.integer(), x0


def _noisy(model, x0: np.ndarray, t: int) -> tuple[np.ndarray, float]:
    abar = float(model.diffusion.alphas_cumprod[t])
    noise = np.random.default_rng(t).standard_normal(x0.shape)
    return (np.sqrt(abar) * x0 + np.sqrt(1.0 - abar) * noise).astype(np.float32), abar


def test_shipped_unet_same_bits_as_reference(shipped):
    model, integer, x0 = shipped
    reference = ref.UNetReference(ref.unet_params(model.net), UNET_INT_SPEC)
    assert_same_integer_weights(integer.net, reference)
    fast = [("model.integer()", integer.net)] + fast_nets(IntUNet, model.net, UNET_INT_SPEC)[1:]
    for t in (10, 300, 999):
        x, _ = _noisy(integer, x0, t)
        expected = reference(x, t)
        for backend, f in fast:
            assert_same_bits(f(torch.from_numpy(x), torch.tensor([t])), expected, f"shipped U-Net ({backend}) at t={t}")


def test_shipped_context_nets_same_bits_as_reference(shipped):
    """One call of each exact-stage network as the codec makes it: one stage, inputs from the U-Net at t = 10."""
    model, integer, x0 = shipped
    nets = [(name, getattr(model, name), getattr(integer, name)) for name in ("context", "coarse")]
    nets = [n for n in nets if n[1] is not None]
    if not nets:
        pytest.skip("the shipped model has no context network")
    t = 10
    x, abar = _noisy(integer, x0, t)
    eps = integer(torch.from_numpy(x), torch.tensor([t]))[0].numpy().astype(np.float64)
    xhat = np.clip((x - np.sqrt(1.0 - abar) * eps) / np.sqrt(abar), -1.0, 1.0)
    y = x / np.sqrt(abar)
    sigma = np.sqrt((1.0 - abar) / abar)
    log_sigma = exactmath.numpy_float64(exactmath.log, np.array([sigma])).astype(np.float32)
    mu = (xhat + 1.0) * 127.5
    pixels = np.rint((x0 + 1.0) * 127.5)
    residual = (pixels - mu) / (sigma * 127.5)
    for name, float_net, fast in nets:
        reference = ref.ContextNetReference(ref.context_params(float_net), CONTEXT_INT_SPEC)
        assert_same_integer_weights(fast, reference)
        h, w = x0.shape[2:]
        if float_net.config.bin_width:
            bw = float_net.config.bin_width
            known, bin_known, coded = (m.numpy()[None] for m in coarse_stage_masks(h, w)[8])
            centres = (bw * np.floor(pixels / bw) + (bw - 1) / 2.0 - mu) / (sigma * 127.5)
            extra = [(centres * bin_known).astype(np.float32), bin_known]
        else:
            known, coded = (m.numpy()[None] for m in stage_masks(h, w)[4])
            extra = []
        inputs = [xhat.astype(np.float32), y.astype(np.float32), (residual * known).astype(np.float32), known, coded,
                  log_sigma] + extra
        expected = reference(*inputs)
        for backend, f in [("model.integer()", fast)] + fast_nets(IntContextNet, float_net, CONTEXT_INT_SPEC)[1:]:
            outputs = f(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
            for out, o, e in zip(("delta", "lambda"), outputs, expected):
                assert_same_bits(o, e, f"shipped {name} network ({backend}) {out}")
