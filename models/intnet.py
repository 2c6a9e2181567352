"""Integer networks: the U-Net and the context networks computed so that every machine gets the same bits.

A float network gives different last bits on different CPUs, kernel libraries and thread counts
(../shared/notes/exactness.md), and a diffusion codec amplifies any difference into a wrong
decode.  Following Ballé, Johnston & Minnen ("Integer networks for data compression", ICLR 2019),
every number here is either an integer or the result of a correctly rounded operation in a fixed
order:

* **Linear layers** (convolutions, the time MLP, attention's projections) multiply *integer*
  activations by *integer* weights.  Activations are quantized per image to ``[−A, A]`` with the
  scale max|x| / A (a max and a division: exact and correctly rounded); weights per output channel to
  ``[−W, W]`` (fewer levels, down to W/2, where that lets the layer's sums fit one float32 sum).
  The products are summed in float32, where every partial sum is an integer below 2^24 and so
  exact in any order: an output channel's partial sums are bounded by A·Σ|w_int|, and input
  channels are split into groups whose bound is below 2^24 (one group for every layer of the
  shipped networks but the input layers), the groups' sums added in float64 (exact integers
  below 2^53).  A one-group layer is scaled back, and its bias added, in float32; a split one in
  float64: one rounding each.
* **GroupNorm** takes its mean and variance from the activations quantized to 2^20 levels per
  image, summed in float64 (exact: integers, and squares as a dot product, below 2^53 for the
  group sizes of 32×32 tiles; int64 beyond); normalising is elementwise, x·a + b.
* **SiLU** (after GroupNorm only) is a table of ``exactmath.silu`` on a grid of 2^-8 over
  [−64, 256], read at round(x·(a·2^8) + (b·2^8 + offset)): GroupNorm's affine map folded into the
  table's index (two roundings), clamped at the table's ends (a 32×32 tile's GroupNorm cannot reach
  256); **GELU** (context networks) a table of ``exactmath.gelu_tanh`` over [−64, 64] (the identity
  beyond, its first value below).
* ``IntSpec.arithmetic`` = 1 gives the first version's rules (worst-case groups, int64 statistics,
  SiLU over [−64, 64] after a separate normalisation): kept to compare against.
* **Attention's softmax** uses ``exactmath.exp``, rounds the weights to integers of 15 bits and sums
  them exactly; the weighted sum of values is an integer product in float64.
* **Sinusoidal embeddings and Fourier features** use ``exactmath.sincos_turns``.

Every image of a batch is quantized on its own, so results depend neither on the batch size nor on
how a layer's work is split across threads.  The float network is the trained object; its integer
form is derived from its weights deterministically (``quantize_*``), so the model file need not
store both.

**Execution.**  Since every sum is exact, how it is computed is free: activations are kept
channels-last; on an x86 CPU the 3×3 convolutions are oneDNN's direct ones with weights kept in
oneDNN's layout (``conv="onednn"``), everywhere else, and for 1×1 convolutions and linear layers,
im2col and one float32 GEMM (``conv="gemm"``), never F.conv2d (which may pick NNPACK's or cuDNN's
Winograd/FFT kernels: not exact).  ``IntUNet(net, spec, device=...)`` or ``.to(device)`` moves a
network to any torch device; off the CPU it runs the GEMM path, every division by a constant is by a
tensor on that device (CUDA divides by a host scalar as a product with its reciprocal), and every
call runs under :func:`exact_float32` (TF32 and reduced-precision float32 matmul off).
``conv="gemm"`` on the CPU runs the device code throughout, so tests compare the two paths.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from diffcodec import exactmath

from .context_net import ContextNet, stack_inputs
from .unet import AttentionBlock, DownsampleConv, ResBlock, UNet

_EXACT_F32 = 2**24  # float32 holds every integer below this exactly
_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-dim tensor of like's dtype on like's device (every constant used here is exact in it).

    An operation with a 0-dim tensor of the same dtype computes as with the Python number (which torch converts
    to the tensor's dtype) but skips that conversion, and on CUDA a division by it is a division, where a division
    by a host scalar is a product with the scalar's reciprocal (not correctly rounded).
    """
    key = (value, like.dtype, like.device)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = torch.tensor(value, dtype=like.dtype, device=like.device)
    return t


_FLAGS_LOCK = threading.Lock()
_FLAGS_DEPTH = 0
_FLAGS_SAVED: list = []


def _float32_flags() -> list:
    """(getter, setter, exact value) for every torch setting that lets float32 products lose bits: TF32 in cuBLAS
    and cuDNN, bf16/TF32 in oneDNN.  torch ≥ 2.9's per-backend ``fp32_precision`` settings where they exist (the
    legacy ``allow_tf32`` flags and ``set_float32_matmul_precision`` are views of them, and reading those raises
    once the two APIs have been mixed); else the legacy flags."""
    backends = torch.backends
    leaves = [getattr(getattr(backends, b, None), op, None)
              for b, op in (("cuda", "matmul"), ("cudnn", "conv"), ("cudnn", "rnn"), ("mkldnn", "matmul"), ("mkldnn", "conv"))]
    if all(leaf is not None and hasattr(leaf, "fp32_precision") for leaf in leaves):
        return [(lambda m=leaf: m.fp32_precision, lambda v, m=leaf: setattr(m, "fp32_precision", v), "ieee") for leaf in leaves]
    flags = [(torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, "highest")]
    for module in (backends.cuda.matmul, backends.cudnn):
        flags.append((lambda m=module: m.allow_tf32, lambda v, m=module: setattr(m, "allow_tf32", v), False))
    return flags


def float32_is_exact() -> bool:
    """Whether torch computes float32 matrix products and convolutions in float32 now (no TF32, no bf16)."""
    return all(get() == exact for get, _, exact in _float32_flags())


@contextlib.contextmanager
def exact_float32():
    """While inside: float32 products in IEEE float32 everywhere (TF32 off for cuBLAS and cuDNN, no bf16 or TF32 in
    oneDNN; the same as ``torch.backends.cuda.matmul.allow_tf32 = False``, ``torch.backends.cudnn.allow_tf32 = False``).

    A float32 GEMM of integers whose partial sums stay below 2^24 is exact in any summation order, but only if
    its operands are not first rounded to TF32 or bf16.  Re-entrant and thread-safe: the settings are taken when
    the first user enters and given back when the last one leaves.
    """
    global _FLAGS_DEPTH
    with _FLAGS_LOCK:
        if _FLAGS_DEPTH == 0:
            flags = _float32_flags()
            _FLAGS_SAVED[:] = [(set_, get()) for get, set_, _ in flags]
            for _, set_, exact in flags:
                set_(exact)
        _FLAGS_DEPTH += 1
    try:
        if not float32_is_exact():
            raise RuntimeError("float32 matrix products are not exact (TF32 or bf16 was enabled while an integer network ran)")
        yield
    finally:
        with _FLAGS_LOCK:
            _FLAGS_DEPTH -= 1
            if _FLAGS_DEPTH == 0:
                for set_, value in reversed(_FLAGS_SAVED):
                    set_(value)
                _FLAGS_SAVED.clear()


@dataclass(frozen=True)
class IntSpec:
    """How a float network becomes an integer one (part of the model's identity)."""

    act_max: int = 127  # activations as integers in [−act_max, act_max], one scale per image and layer
    input_act_max: int = 8191  # the first layer's inputs, one scale per image and channel (fewer if the sums need it)
    weight_max: int = 127  # weights as integers in [−weight_max, weight_max], one scale per output channel
    table_step_log2: int = 8  # SiLU/GELU tables on a grid of 2^−this
    table_range: float = 64.0  # ... over [−range, range]
    norm_levels_log2: int = 20  # GroupNorm statistics from activations quantized to ±2^this per image
    softmax_bits: int = 15  # attention weights as integers below 2^this
    arithmetic: int = 2  # 1: the first version of these rules; 2: layers fitted to one float32 sum (_IntLinear)

    def to_dict(self) -> dict:
        return asdict(self)


def _quantize_per_image(x: torch.Tensor, levels: int, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers in [−levels, levels], scale per image, or per image and channel) with x ≈ integers · scale.

    In x's dtype (float32 for activations): a max, a division and a rounding, each exact or correctly
    rounded.  An all-zero image gets a tiny scale and quantizes to zeros.
    """
    dims = tuple(range(2 if per_channel else 1, x.dim()))
    q = x.abs()
    scale = q.amax(dim=dims, keepdim=True).clamp_min_(1e-30).div_(_const(levels, x))
    # No clamp needed: with scale = fl(m/levels) for m = max|x| (a normal number), |x|/scale ≤ levels·(1 + 2^−23)
    # before rounding, which rounds to at most levels for levels ≤ 2^20.  (|x|'s memory, still in cache, takes q.)
    return torch.div(x, scale, out=q).round_(), scale


class _IntLinear:
    """A convolution (or a 1×1 one standing for a linear layer) with integer weights."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, spec: IntSpec, stride: int = 1,
                 padding: int | tuple[int, int, int, int] = 0, input_layer: bool = False):
        w = weight.detach().double()
        if w.dim() == 2:
            w = w[:, :, None, None]
        elif w.dim() == 3:
            w = w[..., None]
        peak = w.abs().amax(dim=(1, 2, 3), keepdim=True)
        taps = w.shape[2] * w.shape[3]
        self.act_max = min(spec.input_act_max, (_EXACT_F32 - 1) // (taps * spec.weight_max)) if input_layer else spec.act_max
        # An output channel's partial sums are bounded by act_max · Σ|w_int| over its inputs.  A layer gets
        # the finest weights (at most weight_max levels) for which that bound is below 2^24, so that one
        # float32 convolution sums it exactly; below weight_max / 2 it keeps weight_max and is split by
        # input channels instead.  Everything here is exact or correctly rounded: the same on every machine.
        weight_max = spec.weight_max
        while True:
            w_scale = torch.where(peak > 0, peak / weight_max, torch.ones_like(peak))
            w_int = torch.round(w / w_scale).clamp(-weight_max, weight_max)
            l1 = int(w_int.abs().sum(dim=(1, 2, 3)).max()) * self.act_max
            if input_layer or spec.arithmetic < 2 or l1 < _EXACT_F32 or 2 * weight_max <= spec.weight_max:
                break
            weight_max = max(spec.weight_max // 2, min(weight_max - 1, (weight_max * (_EXACT_F32 - 1)) // l1))
        if l1 >= _EXACT_F32 and 2 * weight_max <= spec.weight_max:  # too coarse: back to weight_max, split
            weight_max = spec.weight_max
            w_scale = torch.where(peak > 0, peak / weight_max, torch.ones_like(peak))
            w_int = torch.round(w / w_scale).clamp(-weight_max, weight_max)
        self.weight_max = weight_max
        self.w_scale = w_scale.reshape(1, -1, 1, 1)
        self.bias = (bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)).reshape(1, -1, 1, 1)
        # An input layer sees features of unlike ranges (pixels, masks, sines, log σ): each channel gets its
        # own scale and finer levels, and its products are summed on their own.
        self.per_channel = input_layer
        if taps * self.act_max * weight_max >= _EXACT_F32:
            raise ValueError("one input channel's products would not sum exactly in float32")
        if input_layer:
            self.groups = [(c, c + 1) for c in range(w.shape[1])]
        elif spec.arithmetic < 2:
            group = (_EXACT_F32 - 1) // (taps * self.act_max * weight_max)  # worst case of any weights
            self.groups = [(c, min(c + group, w.shape[1])) for c in range(0, w.shape[1], group)]
        else:  # consecutive input channels while every output channel's bound stays below 2^24
            per_in = w_int.abs().sum(dim=(2, 3)) * self.act_max  # (out, in), exact integers
            self.groups, start, acc = [], 0, torch.zeros(w.shape[0], dtype=torch.float64)
            for c in range(w.shape[1]):
                if bool(((acc + per_in[:, c]) >= _EXACT_F32).any()):
                    self.groups.append((start, c))
                    start, acc = c, torch.zeros_like(acc)
                acc = acc + per_in[:, c]
            self.groups.append((start, w.shape[1]))
        self.w_int = [w_int[:, a:b].float().contiguous() for a, b in self.groups]
        self.stride, self.padding = stride, padding
        # One part, one scale: the float32 accumulator holds the exact sum, scaled in float32.
        self.simple = len(self.groups) == 1 and not self.per_channel
        self.w_scale32, self.bias32 = self.w_scale.float(), self.bias.float()
        self._place(torch.device("cpu"), None)

    def _place(self, device: torch.device, conv: str | None) -> None:
        """Put the layer's tensors on ``device`` and prepare the forms its convolutions run in there."""
        for name in ("w_scale", "bias", "w_scale32", "bias32"):
            setattr(self, name, getattr(self, name).to(device))
        self.w_int = [w.to(device) for w in self.w_int]
        self.conv = _conv_backend(device, conv)
        kh, kw = self.w_int[0].shape[2:]
        pad = self.padding if isinstance(self.padding, tuple) else (self.padding,) * 4  # (left, right, top, bottom)
        self._geometry = (kh, kw, self.stride, pad)
        # Weights as GEMM operands: (kh·kw·C, O), rows in (i, j, c) order, the order of _im2col's columns.
        self._w_mat = [w.permute(2, 3, 1, 0).reshape(-1, w.shape[0]).contiguous() for w in self.w_int]
        self._packed: dict[tuple, tuple] = {}  # oneDNN's own weight layouts (float32, int8 or None), per input shape
        # oneDNN's int8 convolutions sum u8·s8 products in int32: exact, and ~2x faster here, where the integers fit
        # 8 bits (activations in ±127 offset by 128, weights in ±127) and the CPU sums without saturating (checked
        # per layer and shape, see _pack; else the float32 convolution, which gives the same sums).
        self._int8 = (self.conv == "onednn" and not self.per_channel and self.act_max <= 127 and self.weight_max <= 127
                      and _INT8_CONV)
        if self._int8:
            self._w_int8 = [w.to(torch.int8) for w in self.w_int]
            o = self.w_int[0].shape[0]
            self._int8_scales = (torch.ones(o, dtype=torch.float64), torch.zeros(o, dtype=torch.int64))
        self._w_scale32_2d, self._bias32_2d = self.w_scale32[:, :, 0, 0], self.bias32[:, :, 0, 0]
        if self.per_channel:  # every group is one input channel: all of them as one grouped convolution
            w = torch.cat(self.w_int, dim=1)  # (O, C, kh, kw)
            # output channel c·O + o of the grouped convolution: input channel c's products for output o
            self._w_grouped = w.transpose(0, 1).reshape(-1, 1, kh, kw).contiguous()
            self._w_bmm = w.permute(1, 2, 3, 0).reshape(w.shape[1], kh * kw, w.shape[0]).contiguous()  # (C, kh·kw, O)

    def _conv(self, q: torch.Tensor, part: int = 0) -> torch.Tensor:
        """The exact integer sums of part ``part``'s weights over q, (B, O, H', W') float32, channels-last.

        Any kernel is exact here (every partial sum an integer below 2^24 in float32), so the choice is speed:
        oneDNN's direct convolution with its own weight layout on x86 CPUs, a GEMM elsewhere (see _conv_backend).
        """
        kh, kw, stride, pad = self._geometry
        # 1×1 convolutions: one float32 GEMM (oneDNN's int8 1×1 convolutions measured slower here: 22.9 against
        # 21.9 ms a U-Net pass)
        if self.conv == "gemm" or (kh == 1 and kw == 1 and stride == 1):
            return _conv_gemm(q, self._w_mat[part], self._geometry)
        if pad[0] != pad[1] or pad[2] != pad[3]:
            q, pad = F.pad(q, pad), (0, 0, 0, 0)
        key = (part, *q.shape)
        packed = self._packed.get(key)
        if packed is None:
            packed = self._pack(part, q.shape, [pad[2], pad[0]], stride)
            if len(self._packed) >= 8:
                self._packed.clear()
            self._packed[key] = packed
        f32, i8 = packed
        if i8 is not None:
            q8 = q.add(128.0).to(torch.uint8, memory_format=torch.channels_last)
            return self._conv_int8(q8, i8, [pad[2], pad[0]], stride)
        q = q.contiguous(memory_format=torch.channels_last)
        return torch.ops.mkldnn._convolution_pointwise(q, f32, None, [pad[2], pad[0]], [stride, stride], [1, 1], 1, "none", [], None)

    def _conv_int8(self, q8: torch.Tensor, packed: torch.Tensor, padding: list[int], stride: int) -> torch.Tensor:
        """oneDNN's int8 convolution of q8 = q + 128 (uint8, zero point 128: oneDNN subtracts 128·Σw in int32) with
        scales 1: the int32 sums, converted to float32 (exact: below 2^24)."""
        ones, zeros = self._int8_scales
        return torch.ops.onednn.qconv2d_pointwise(q8, 1.0, 128, packed, ones, zeros, None, [stride, stride], padding, [1, 1], 1,
                                                  1.0, 0, torch.float32, "none", [], "")

    def _pack(self, part: int, shape: torch.Size, padding: list[int], stride: int) -> tuple:
        """(float32 weights in oneDNN's layout, int8 ones or None) for inputs of ``shape``.

        The int8 convolution is used only if it gives the float32 one's sums, bit for bit, on probes that would show
        any way it could not: every input +127 (u8 255: the largest product pairs, which CPUs without VNNI sum with
        int16 saturation) and −127, and random integers (oneDNN halves weights on some CPUs).  Integer sums either
        are exact for every input or fail these; either way the result is the same numbers.
        """
        f32 = torch.ops.mkldnn._reorder_convolution_weight(self.w_int[part], padding, [stride, stride], [1, 1], 1, list(shape))
        if not self._int8:
            return f32, None
        ones, _ = self._int8_scales
        try:
            i8 = torch.ops.onednn.qconv_prepack(self._w_int8[part], ones, 1.0, 128, [stride, stride], padding, [1, 1], 1, list(shape))
            gen = torch.Generator().manual_seed(0)
            probes = [torch.full(tuple(shape), 127.0), torch.full(tuple(shape), -127.0),
                      torch.randint(-127, 128, tuple(shape), generator=gen).float()]
            for probe in probes:
                probe = probe.contiguous(memory_format=torch.channels_last)
                want = torch.ops.mkldnn._convolution_pointwise(probe, f32, None, padding, [stride, stride], [1, 1], 1, "none", [], None)
                if not torch.equal(self._conv_int8(probe.add(128.0).to(torch.uint8), i8, padding, stride), want):
                    return f32, None
        except RuntimeError:  # no int8 convolution for this shape or CPU
            return f32, None
        return f32, i8

    def _per_channel_parts(self, q: torch.Tensor) -> list[torch.Tensor]:
        """Input channel c's exact integer sums, for every c: (B, O, H', W') float32 each."""
        kh, kw, stride, pad = self._geometry
        o, c = self.w_int[0].shape[0], q.shape[1]
        if self.conv == "gemm":
            cols, (b, ho, wo) = _im2col(q, self._geometry)  # (B·H'·W', kh·kw·C), columns in (i, j, c) order
            sums = torch.bmm(cols.view(-1, kh * kw, c).permute(2, 0, 1), self._w_bmm)  # (C, B·H'·W', O)
            return [sums[i].view(b, ho, wo, o).permute(0, 3, 1, 2) for i in range(c)]
        if pad[0] != pad[1] or pad[2] != pad[3]:
            q, pad = F.pad(q, pad), (0, 0, 0, 0)
        out = torch.mkldnn_convolution(q.contiguous(memory_format=torch.channels_last), self._w_grouped, None,
                                       [pad[2], pad[0]], [stride, stride], [1, 1], c)
        return [out[:, i * o:(i + 1) * o] for i in range(c)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            x = x.float()
        if x.dim() == 2:  # a linear layer: (B, F) @ (F, O)
            q, scale = _quantize_per_image(x, self.act_max)
            if self.simple:
                return torch.matmul(q, self._w_mat[0]).mul_(scale * self._w_scale32_2d).add_(self._bias32_2d)
            return self(x[:, :, None, None])[:, :, 0, 0]
        q, scale = _quantize_per_image(x, self.act_max, self.per_channel)
        if self.simple:
            # Two IEEE operations in this order (a product, then a sum), in place on the fresh convolution output.
            return self._conv(q).mul_(scale * self.w_scale32).add_(self.bias32)
        scale = scale.double()
        if self.per_channel:
            # Σ_c sums_c·scale_c in float64, in channel order.  Each product is exact (an integer below 2^24 times a
            # float32 scale: at most 48 significant bits), so addcmul's sum is rounded once, fused or not: the same
            # as acc + sums_c·scale_c.  A few images at a time, so that the parts stay in cache.
            b, c = q.shape[:2]
            step = max(1, (1 << 21) // (c * self.w_int[0].shape[0] * q[0, 0].numel()))
            accs = []
            for i in range(0, b, step):
                parts, s = self._per_channel_parts(q[i:i + step]), scale[i:i + step]
                acc = parts[0] * s[:, 0:1]
                for j in range(1, c):
                    acc.addcmul_(parts[j], s[:, j:j + 1])
                accs.append(acc)
            acc = (accs[0] if len(accs) == 1 else torch.cat(accs)).mul_(self.w_scale)
        else:  # a shared scale: the parts are integers, their float64 sum exact in any order (below 2^53)
            acc = self._conv(q[:, self.groups[0][0]:self.groups[0][1]], 0).double()
            for i, (a, b) in enumerate(self.groups[1:], 1):
                acc.add_(self._conv(q[:, a:b], i))
            acc.mul_(scale * self.w_scale)
        return acc.add_(self.bias).float()


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
# oneDNN's int8 convolutions where they are exact (_IntLinear._pack checks); DIFFCODEC_INT8_CONV=0 turns them off.
_INT8_CONV = os.environ.get("DIFFCODEC_INT8_CONV", "1") != "0" and hasattr(torch.ops.onednn, "qconv2d_pointwise")


def _conv_backend(device: torch.device, conv: str | None) -> str:
    """'onednn' (x86 CPUs: oneDNN's direct convolutions) or 'gemm' (im2col and a float32 matrix product: anywhere).

    Both sum the same integer products, exactly; neither is a Winograd or FFT convolution, which would not be
    exact.  (F.conv2d is not used: it may pick NNPACK's Winograd kernels where oneDNN is unavailable.)
    """
    if conv is None:
        conv = "onednn" if device.type == "cpu" and _X86 and torch.backends.mkldnn.is_available() else "gemm"
    if conv not in ("onednn", "gemm") or (conv == "onednn" and device.type != "cpu"):
        raise ValueError(f"no convolution {conv!r} on {device}: 'gemm', or 'onednn' on an x86 CPU")
    return conv


def _im2col(q: torch.Tensor, geometry: tuple) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """q's (kh, kw) patches as rows, (B·H'·W', kh·kw·C) with columns in (i, j, c) order, and (B, H', W')."""
    kh, kw, stride, (left, right, top, bottom) = geometry
    x = q.permute(0, 2, 3, 1)  # (B, H, W, C)
    if left or right or top or bottom:
        x = F.pad(x, (0, 0, left, right, top, bottom))
    x = x.contiguous()
    b, hp, wp, c = x.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    if kh == kw == stride == 1:
        return x.view(b * ho * wo, c), (b, ho, wo)
    sb, sh, sw, sc = x.stride()
    patches = x.as_strided((b, ho, wo, kh, kw, c), (sb, sh * stride, sw * stride, sh, sw, sc))
    return patches.reshape(b * ho * wo, kh * kw * c), (b, ho, wo)


def _conv_gemm(q: torch.Tensor, w_mat: torch.Tensor, geometry: tuple) -> torch.Tensor:
    """A convolution as im2col and one float32 GEMM, (B, O, H', W') channels-last.  Exact: a GEMM sums integer
    products in some order, and every partial sum is an integer below 2^24."""
    cols, (b, ho, wo) = _im2col(q, geometry)
    return torch.matmul(cols, w_mat).view(b, ho, wo, -1).permute(0, 3, 1, 2)


class _Table:
    """An elementwise function as a table on a grid (exact lookups) over [−range, top]; beyond ``top`` the
    identity (``tail_identity``) or the table's last value, below −range its first."""

    def __init__(self, fn, spec: IntSpec, tail_identity: bool = True, top: float | None = None):
        self.step_inv = float(2**spec.table_step_log2)
        self.half = int(spec.table_range * self.step_inv)
        self.last = int((spec.table_range if top is None else top) * self.step_inv) + self.half  # the last index
        grid = (torch.arange(self.last + 1, dtype=torch.float64) - self.half) / self.step_inv
        self.values = fn(grid).float()
        self.range = float(spec.table_range if top is None else top)
        self.tail_identity = tail_identity
        self._place(torch.device("cpu"), False)

    def _place(self, device: torch.device, portable: bool) -> None:
        self.values = self.values.to(device)
        self._half = torch.tensor(float(self.half), device=device)
        self._portable = portable or device.type != "cpu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Index of the nearest grid point, offset to start at 0: half + x·2^k in one operation (x·2^k is exact, so
        # with or without a fused multiply-add the sum is rounded once, as x·2^k + half would be); round, clamp: exact.
        idx = torch.add(self._half, x, alpha=self.step_inv).round_().clamp_(0, self.last)
        out = _lookup(self.values, idx)
        if self.tail_identity and (self._portable or x.amax().item() > self.range):  # a selection: exact
            out = torch.where(x > self.range, x, out)
        return out


def _lookup(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values[idx] for float32 ``idx`` holding integers in [0, len(values)) (any memory layout; the result has idx's).

    A gather, exact; int32 indices and index_select are ~2x faster here than int64 and take.
    """
    i = idx.to(torch.int32)
    if i.is_contiguous() or (i.dim() == 4 and i.is_contiguous(memory_format=torch.channels_last)):  # dense: memory order
        return values.index_select(0, i.as_strided((i.numel(),), (1,))).as_strided(i.shape, i.stride())
    return values.index_select(0, i.reshape(-1)).view(i.shape)


class _IntGroupNorm:
    def __init__(self, norm: torch.nn.GroupNorm, spec: IntSpec):
        self.groups = norm.num_groups
        self.eps = float(norm.eps)
        self.weight = norm.weight.detach().float().reshape(1, -1, 1, 1)
        self.bias = norm.bias.detach().float().reshape(1, -1, 1, 1)
        self.levels = 2**spec.norm_levels_log2
        self.arithmetic = spec.arithmetic
        self._place(torch.device("cpu"), False)

    def _place(self, device: torch.device, portable: bool) -> None:
        self.weight, self.bias = self.weight.to(device), self.bias.to(device)
        # On the CPU the per-group arithmetic (a few numbers an image) runs in numpy: the same IEEE operations in
        # the same order and precision, at a fraction of torch's per-call cost (~25 calls a normalisation).
        self._numpy = device.type == "cpu"
        if self._numpy:
            self._weight_np, self._bias_np = self.weight.reshape(-1).numpy(), self.bias.reshape(-1).numpy()

    def _sums(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(Σq, Σq², scale, n) of x quantized to ±levels per image: the sums float64 per image and group (B, G), or per
        image and channel (B, C) where x is channels-last (the group sums are then left to the caller: exact too)."""
        b, c = x.shape[:2]
        q, scale = _quantize_per_image(x, self.levels)
        n = q[0, 0].numel() * (c // self.groups)
        if self.arithmetic >= 2 and n * self.levels**2 < 2**53:
            # float64 sums of integers below 2^53 are exact in any order: per channel where the activations are
            # channels-last; else per group, the sum of squares as a dot product.
            q = q.double()
            if not q.is_contiguous() and q.is_contiguous(memory_format=torch.channels_last):
                v = q.permute(0, 2, 3, 1).reshape(b, -1, c)  # (B, H·W, C), a view
                return v.sum(dim=1), v.mul_(v).sum(dim=1), scale, n  # squares: exact integers below 2^53
            q = q.reshape(b * self.groups, 1, n)
            s1 = q.sum(dim=-1).reshape(b, self.groups)
            s2 = torch.bmm(q, q.transpose(1, 2)).reshape(b, self.groups)
        else:
            q = q.to(torch.int64).reshape(b, self.groups, -1)
            s1 = q.sum(dim=-1).double()  # int64 sums: exact in any order
            s2 = (q * q).sum(dim=-1).double()  # below 2^53 for the group sizes of these networks
        return s1, s2, scale, n

    def affine(self, x: torch.Tensor, table: "_Table | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b), float32 (B, C, 1, 1), with the normalised x = x·a + b; with ``table``, (a·2^k, b·2^k + half):
        the affine map to ``table``'s index."""
        s1, s2, scale, n = self._sums(x)
        b, c = x.shape[:2]
        if self._numpy:
            return self._affine_numpy(s1.numpy(), s2.numpy(), scale.numpy(), n, b, c, table)
        if s1.shape[1] != self.groups:  # per channel: per group (exact integer sums)
            s1, s2 = s1.view(b, self.groups, -1).sum(dim=-1), s2.view(b, self.groups, -1).sum(dim=-1)
        # s1 / n, s2 / n − mean²: IEEE operations one at a time, on both sums at once where they are alike.
        m = torch.stack([s1, s2]).div_(_const(float(n), s1))
        mean_q = m[0]
        var_q = m[1].sub_(mean_q * mean_q).clamp_min_(0.0)
        scale = scale.reshape(b, 1).double()
        mean = mean_q * scale
        # 1 / √(var·scale² + ε): a product, a sum, a square root and a reciprocal (1 / v), each correctly rounded.
        inv = var_q.mul_(scale * scale).add_(_const(self.eps, var_q)).sqrt_().reciprocal_()
        # Both to float32, one value a channel: one repeat for the two (the same values as two repeats).
        mean, inv = torch.stack([mean, inv]).float().repeat_interleave(c // self.groups, dim=2).reshape(2, b, c, 1, 1)
        # (x − mean)·inv·γ + β as x·a + (β − mean·a): two passes over the activations instead of four.
        a = inv * self.weight
        b_ = self.bias - mean * a
        if table is not None:
            a = a * _const(table.step_inv, a)  # exact: a power of two
            b_ = b_.mul_(_const(table.step_inv, b_)).add_(_const(float(table.half), b_))
        return a, b_

    def _affine_numpy(self, s1: np.ndarray, s2: np.ndarray, scale: np.ndarray, n: int, b: int, c: int,
                      table: "_Table | None") -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`affine`'s arithmetic after the sums, in numpy: operation for operation the torch code's."""
        g = self.groups
        if s1.shape[1] != g:  # per channel: per group (exact integer sums)
            s1, s2 = s1.reshape(b, g, -1).sum(axis=-1), s2.reshape(b, g, -1).sum(axis=-1)
        mean_q, m2 = s1 / float(n), s2 / float(n)
        var_q = np.maximum(m2 - mean_q * mean_q, 0.0)
        scale = scale.reshape(b, 1).astype(np.float64)
        mean = mean_q * scale
        inv = 1.0 / np.sqrt(var_q * (scale * scale) + self.eps)
        mean, inv = (np.repeat(v.astype(np.float32), c // g, axis=1) for v in (mean, inv))  # (B, C)
        a = inv * self._weight_np
        b_ = self._bias_np - mean * a
        if table is not None:
            a = a * np.float32(table.step_inv)  # exact: a power of two
            b_ = b_ * np.float32(table.step_inv) + np.float32(table.half)
        return torch.from_numpy(a).view(b, c, 1, 1), torch.from_numpy(b_).view(b, c, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.affine(x)
        return (x * a).add_(b)  # a product, then a sum: two roundings, as x·a + b

    def then(self, table: "_Table", x: torch.Tensor) -> torch.Tensor:
        """table(normalised x) with the table's index computed from x directly: round(x·(a·2^k) + (b·2^k + half)),
        one multiply and one add (each rounded once) instead of four passes."""
        if self.arithmetic < 2:
            return table(self(x))
        a, b = self.affine(x, table)
        idx = (x * a).add_(b).round_().clamp_(0, table.last)  # a product, then a sum: two roundings, as x·a + b
        return _lookup(table.values, idx)


class _IntResBlock:
    def __init__(self, block: ResBlock, spec: IntSpec, silu: _Table):
        self.norm1 = _IntGroupNorm(block.norm1, spec)
        self.conv1 = _IntLinear(block.conv1.weight, block.conv1.bias, spec, padding=1)
        self.emb = _IntLinear(block.emb.weight, block.emb.bias, spec)
        self.norm2 = _IntGroupNorm(block.norm2, spec)
        self.conv2 = _IntLinear(block.conv2.weight, block.conv2.bias, spec, padding=1)
        self.skip = _IntLinear(block.skip.weight, block.skip.bias, spec) if isinstance(block.skip, torch.nn.Conv2d) else None
        self.silu = silu
        self._emb_cache: dict[int, torch.Tensor] = {}

    def _parts(self) -> list:
        return [self.norm1, self.conv1, self.emb, self.norm2, self.conv2] + ([self.skip] if self.skip is not None else [])

    def __call__(self, x: torch.Tensor, emb_silu: torch.Tensor, t: int) -> torch.Tensor:
        """``emb_silu``: (1, 4·ch), the same for every image (each image is quantized on its own, so one row is every row's)."""
        if t not in self._emb_cache:
            self._emb_cache[t] = self.emb(emb_silu)[:, :, None, None]
        h = self.conv1(self.norm1.then(self.silu, x)).add_(self._emb_cache[t])  # in place on fresh outputs
        h = self.conv2(self.norm2.then(self.silu, h))
        return h.add_(self.skip(x) if self.skip is not None else x)  # IEEE addition commutes: the same as skip + h


class _IntAttention:
    def __init__(self, block: AttentionBlock, spec: IntSpec):
        self.norm = _IntGroupNorm(block.norm, spec)
        self.heads = block.num_heads
        self.qkv = _IntLinear(block.qkv.weight, block.qkv.bias, spec)
        self.proj = _IntLinear(block.proj.weight, block.proj.bias, spec)
        self.act_max = spec.act_max
        self.softmax_one = float(2**spec.softmax_bits)

    def _parts(self) -> list:
        return [self.norm, self.qkv, self.proj]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w, 1))
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)  # (B, heads, d, L)
        d = c // self.heads
        if x.device.type == "cpu":
            out = torch.from_numpy(self._weighted_values_numpy(q.numpy(), k.numpy(), v.numpy(), d))
            return self.proj(out.reshape(b, c, h * w, 1)).reshape(b, c, h, w).add_(x)
        qi, qs = _quantize_per_image(q, self.act_max)
        ki, ks = _quantize_per_image(k, self.act_max)
        if self.act_max**2 * d >= _EXACT_F32:
            raise ValueError("attention width too large for exact float32 logits")
        logits = torch.matmul(qi.float().transpose(-1, -2), ki.float()).double()  # (B, heads, L, L), exact
        logits = logits * ((qs.double() * ks.double()) / _const(math.sqrt(d), logits))
        logits = logits - logits.amax(dim=-1, keepdim=True)
        weights = torch.round(exactmath.exp(logits) * _const(self.softmax_one, logits))  # integers in [0, 2^bits]
        total = weights.sum(dim=-1)  # exact: integers below 2^53
        vi, vs = _quantize_per_image(v, self.act_max)
        out = torch.matmul(vi.double(), weights.transpose(-1, -2))  # float64: every partial sum an integer below 2^53
        out = out * vs.double() / total[:, :, None, :]
        out = out.float().reshape(b, c, h * w, 1)
        return self.proj(out).reshape(b, c, h, w).add_(x)  # IEEE addition commutes: x + proj(out)

    def _quantize_numpy(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_quantize_per_image` in numpy (float32): a max, a clamp, a division and a rounding, the same."""
        scale = np.maximum(np.abs(a).max(axis=(1, 2, 3), keepdims=True), np.float32(1e-30)) / np.float32(self.act_max)
        return np.rint(a / scale), scale

    def _weighted_values_numpy(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, d: int) -> np.ndarray:
        """The attention's weighted values (B, heads, d, L) float32 on the CPU: the torch code's operations in numpy
        (~20 of them on a few thousand numbers: a fraction of torch's per-call cost).  The two products are sums of
        integers, exact in any order (BLAS's too): below 2^24 in float32, below 2^53 in float64."""
        qi, qs = self._quantize_numpy(q)
        ki, ks = self._quantize_numpy(k)
        if self.act_max**2 * d >= _EXACT_F32:
            raise ValueError("attention width too large for exact float32 logits")
        mm = lambda a, b: torch.matmul(torch.from_numpy(a), torch.from_numpy(b)).numpy()  # noqa: E731  (torch's threads)
        logits = mm(qi.transpose(0, 1, 3, 2), ki).astype(np.float64)  # (B, heads, L, L), exact
        logits = logits * ((qs.astype(np.float64) * ks.astype(np.float64)) / math.sqrt(d))
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.rint(exactmath.exp(torch.from_numpy(logits)).numpy() * self.softmax_one)  # integers in [0, 2^bits]
        total = weights.sum(axis=-1)  # exact: integers below 2^53
        vi, vs = self._quantize_numpy(v)
        out = mm(vi.astype(np.float64), weights.transpose(0, 1, 3, 2))  # every partial sum an integer below 2^53
        out = out * vs.astype(np.float64) / total[:, :, None, :]
        return out.astype(np.float32)


def _place_all(parts: list, device: torch.device | str | None, conv: str | None) -> tuple[torch.device, str]:
    """Move a network's layers (and tables, norms: anything with _place) to ``device`` with convolution backend
    ``conv`` (None: the device's fastest); ``conv="gemm"`` on the CPU runs the device code throughout."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    conv = _conv_backend(device, conv)
    portable = conv == "gemm"
    seen = set()
    stack = list(parts)
    while stack:
        part = stack.pop()
        if id(part) in seen or part is None:
            continue
        seen.add(id(part))
        if isinstance(part, (list, tuple)):
            stack.extend(part)
        elif isinstance(part, _IntLinear):
            part._place(device, conv)
        elif isinstance(part, (_Table, _IntGroupNorm)):
            part._place(device, portable)
        elif hasattr(part, "_parts"):
            stack.extend(part._parts())
    return device, conv


class _Upsample:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class IntUNet:
    """The integer form of a :class:`~models.unet.UNet`: ``(x_t, t) -> float32`` output, the same bits everywhere."""

    def __init__(self, net: UNet, spec: IntSpec = IntSpec(), device: torch.device | str | None = None,
                 conv: str | None = None):
        self.config = net.config
        self.spec = spec
        c = net.config
        # SiLU after GroupNorm only: its table reaches 256, beyond what a GroupNorm of a 32×32 tile can give
        # (√n·|γ| + |β| < 160 for these networks), and is clamped there.
        self.silu = _Table(exactmath.silu, spec, tail_identity=spec.arithmetic < 2, top=256.0 if spec.arithmetic >= 2 else None)
        self.time1 = _IntLinear(net.time_mlp[0].weight, net.time_mlp[0].bias, spec)
        self.time2 = _IntLinear(net.time_mlp[2].weight, net.time_mlp[2].bias, spec)
        self.input_conv = _IntLinear(net.input_conv.weight, net.input_conv.bias, spec, padding=1, input_layer=True)

        def convert(layer):
            if isinstance(layer, ResBlock):
                return _IntResBlock(layer, spec, self.silu)
            if isinstance(layer, AttentionBlock):
                return _IntAttention(layer, spec)
            if isinstance(layer, DownsampleConv):
                return _IntLinear(layer.weight, layer.bias, spec, stride=2, padding=(0, 1, 0, 1))
            if isinstance(layer, torch.nn.Conv2d):
                return _IntLinear(layer.weight, layer.bias, spec, stride=layer.stride[0], padding=layer.padding[0])
            if isinstance(layer, torch.nn.Upsample):
                return _Upsample()
            raise TypeError(f"no integer form for {type(layer).__name__}")

        self.down = [[convert(layer) for layer in block] for block in net.down]
        self.mid = [convert(layer) for layer in net.mid]
        self.up = [[convert(layer) for layer in block] for block in net.up]
        self.out_norm = _IntGroupNorm(net.out_norm, spec)
        self.out_conv = _IntLinear(net.out_conv.weight, net.out_conv.bias, spec, padding=1)
        self._emb_cache: dict[int, torch.Tensor] = {}
        self.to(device, conv)

    def to(self, device: torch.device | str | None = None, conv: str | None = None) -> "IntUNet":
        """Run on ``device`` (default: the CPU), in place; returns self.  ``conv``: 'onednn' (x86 CPUs only) or
        'gemm' (any device: im2col and float32 GEMMs); None picks the device's fastest.  Every choice gives
        the same bits."""
        self.device, self.conv = _place_all([self.silu, self.time1, self.time2, self.input_conv, self.down, self.mid,
                                             self.up, self.out_norm, self.out_conv], device, conv)
        self._emb_cache.clear()
        for block in [*self.down, self.mid, *self.up]:
            for layer in block:
                if isinstance(layer, _IntResBlock):
                    layer._emb_cache.clear()
        return self

    def _time_embedding(self, t: int) -> torch.Tensor:
        """silu(time_mlp(sinusoid(t))) for one timestep, (1, 4·ch) float32, cached."""
        if t not in self._emb_cache:
            c = self.config
            half = c.base_channels // 2
            # frequency i: max_period^(−i/(half − shift)) = exp(−ln(10⁴)·i/(half − shift))
            ln_max_period = float.fromhex("0x1.26bb1bbb55516p+3")  # ln 10⁴
            freqs = exactmath.exp(-ln_max_period * torch.arange(half, dtype=torch.float64) / (half - c.time_freq_shift))
            sin, cos = exactmath.sincos_turns(float(t) * freqs * float.fromhex("0x1.45f306dc9c883p-3"))
            emb = torch.cat([sin, cos] if c.time_sin_first else [cos, sin]).float()[None]
            if c.base_channels % 2:
                emb = F.pad(emb, (0, 1))
            emb = emb.to(self.device)  # computed on the CPU (a few numbers): the same values anywhere
            h = self.time2(exactmath.silu(self.time1(emb)))
            self._emb_cache[t] = exactmath.silu(h)
        return self._emb_cache[t]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for n in self.config.fourier_features:
            sin, cos = exactmath.sincos_turns(x.double() * 2.0 ** (n - 1))  # sin/cos(2^n π x), exact scaling
            feats += [sin.float(), cos.float()]
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's output for x (B, C, H, W) at timestep t (B,), float32 NCHW on the network's device."""
        steps = set(t.tolist()) if isinstance(t, torch.Tensor) else {int(v) for v in t}
        if len(steps) != 1:
            raise ValueError("IntUNet takes one timestep per call")
        with exact_float32():
            return self._forward(x.to(self.device, torch.float32), int(steps.pop())).contiguous()

    def _forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        emb = self._time_embedding(step)
        h = self.input_conv(self._features(x))
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb, step) if isinstance(layer, _IntResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb, step) if isinstance(layer, _IntResBlock) else layer(h)
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb, step) if isinstance(layer, _IntResBlock) else layer(h)
        return self.out_conv(self.out_norm.then(self.silu, h))


class IntContextNet:
    """The integer form of a :class:`~models.context_net.ContextNet` (the exact stage's networks).

    GELU becomes a table of its tanh form (``exactmath.gelu_tanh``), within ~5e-4 of the erf form
    the networks were trained with.
    """

    def __init__(self, net: ContextNet, spec: IntSpec = IntSpec(), device: torch.device | str | None = None,
                 conv: str | None = None):
        self.config = net.config
        self.spec = spec
        self.gelu = _Table(exactmath.gelu_tanh, spec)
        self.inp = _IntLinear(net.inp.weight, net.inp.bias, spec, padding=1, input_layer=True)
        self.blocks = [(_IntLinear(b[1].weight, b[1].bias, spec, padding=1), _IntLinear(b[3].weight, b[3].bias, spec))
                       for b in net.blocks]
        self.out = _IntLinear(net.out.weight, net.out.bias, spec)
        self.to(device, conv)

    def to(self, device: torch.device | str | None = None, conv: str | None = None) -> "IntContextNet":
        """As :meth:`IntUNet.to`."""
        self.device, self.conv = _place_all([self.gelu, self.inp, self.blocks, self.out], device, conv)
        return self

    @torch.no_grad()
    def __call__(self, xhat: torch.Tensor, y: torch.Tensor, residual: torch.Tensor, known: torch.Tensor,
                 coded: torch.Tensor, log_sigma: torch.Tensor, bins: torch.Tensor | None = None,
                 bin_known: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ, λ) as :meth:`ContextNet.forward`, float32 on the network's device, the same bits everywhere."""
        inputs = stack_inputs(self.config, xhat, y, residual, known, coded, log_sigma, bins, bin_known)
        with exact_float32():
            z = self.inp(inputs.to(self.device, torch.float32))
            for conv3, conv1 in self.blocks:
                z = conv1(self.gelu(conv3(self.gelu(z)))).add_(z)  # IEEE addition commutes: z + block(z)
            out = self.out(z).contiguous()
        return out[:, :3], out[:, 3:]
