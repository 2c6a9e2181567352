"""A plain-numpy reference of the integer networks (models/intnet.py, arithmetic 2), for tests only.

The fast path (``IntUNet``, ``IntContextNet``) sums integer products in float32 or float64 and claims
the sums are exact because every partial sum is an integer the accumulator holds.  This module does
not repeat that float code: it computes every convolution and matmul as int64 sums of int64 products
(im2col, then an integer matmul), GroupNorm's statistics as int64 sums, looks tables up by index,
rounds the softmax weights to integers as the rules say, and only then converts to float.  Every
correctly rounded operation (scales, divisions, square roots, the scale-back and the bias) is the
same IEEE operation in the same precision and order as the fast path's, in numpy, so the two agree
bit for bit exactly when the fast path's claims of exactness hold.

It also derives the integer weights from the float ones (``quantize_weights``: the per-output-channel
scales and the coarsening of arithmetic 2) and decides from them, by the rule, which layers are one
float32 sum.  The elementary functions (exp, sin/cos in turns, SiLU, GELU's tanh form) are numpy
ports of ``diffcodec.exactmath``, operation by operation.  torch appears only in :func:`unet_params`
and :func:`context_params`, which read a float network's tensors out as numpy arrays.

Only arithmetic 2 is covered (the rules of format version 5); the float networks, CUDA and the
``tail_identity`` SiLU of arithmetic 1 are not.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from diffcodec import exactmath

F32, F64 = np.float32, np.float64
EXACT_F32 = 2**24  # float32 holds every integer below this
EXACT_F64 = 2**53


# --------------------------------------------------------------------------- exactmath in numpy


def _horner(coeffs: list[float], z: np.ndarray) -> np.ndarray:
    p = np.full_like(z, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * z
        p = p + c
    return p


def exp64(x: np.ndarray) -> np.ndarray:
    """exactmath.exp in float64: Cody–Waite reduction, Taylor, times 2^k from the exponent bits."""
    x = np.clip(np.asarray(x, dtype=F64), -708.0, 708.0)
    k = np.rint(x * exactmath._INV_LN2)
    r = x - k * exactmath._LN2_HI
    r = r - k * exactmath._LN2_LO
    pow2 = ((k.astype(np.int64) + 1023) << 52).view(F64)
    return _horner(exactmath._EXP_COEFFS, r) * pow2


def sincos_turns64(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exactmath.sincos_turns in float64: (sin 2πu, cos 2πu)."""
    u = np.asarray(u, dtype=F64)
    q = np.rint(u * 4.0)
    g = u - q * 0.25
    y = g * exactmath._TWO_PI
    z = y * y
    s = y * _horner(exactmath._SIN_COEFFS, z)
    c = _horner(exactmath._COS_COEFFS, z)
    quadrant = np.remainder(q, 4.0)
    sin = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [s, c, -s], -c)
    cos = np.select([quadrant == 0, quadrant == 1, quadrant == 2], [c, -s, -c], s)
    return sin, cos


def silu64(x: np.ndarray) -> np.ndarray:
    """exactmath.silu in float64: x · 1/(e^−x + 1)."""
    x = np.asarray(x, dtype=F64)
    return x * (1.0 / (exp64(-x) + 1.0))


def gelu_tanh64(x: np.ndarray) -> np.ndarray:
    """exactmath.gelu_tanh in float64."""
    x = np.asarray(x, dtype=F64)
    z = (x + (x * x * x) * 0.044715) * exactmath._SQRT_2_OVER_PI
    tanh = 1.0 - 2.0 / (exp64(z * 2.0) + 1.0)
    return (x * 0.5) * (tanh + 1.0)


# --------------------------------------------------------------------------- integer building blocks


def quantize_per_image(x: np.ndarray, levels: int, per_channel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(int64 integers in [−levels, levels], float32 scale per image or per image and channel).

    float32 throughout: max|x| (exact), clamped at 1e-30, divided by ``levels``; x / scale rounded half to even.
    """
    x = np.asarray(x, dtype=F32)
    axes = tuple(range(2 if per_channel else 1, x.ndim))
    scale = np.maximum(np.abs(x).max(axis=axes, keepdims=True), F32(1e-30)) / F32(levels)
    q = np.rint(x / scale)
    assert np.abs(q).max() <= levels
    return q.astype(np.int64), scale


def conv_int64(q: np.ndarray, w: np.ndarray, stride: int = 1) -> np.ndarray:
    """Exact integer convolution, already padded: q (B, C, H, W) and w (O, C, kh, kw) int64 -> (B, O, Ho, Wo) int64."""
    b, c = q.shape[:2]
    o, _, kh, kw = w.shape
    win = sliding_window_view(q, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # (B, C, Ho, Wo, kh, kw)
    ho, wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(b * ho * wo, c * kh * kw)
    out = np.einsum("lk,ok->lo", cols, w.reshape(o, c * kh * kw))  # int64 products, int64 sums
    return out.reshape(b, ho, wo, o).transpose(0, 3, 1, 2)


def conv_int64_per_channel(q: np.ndarray, w: np.ndarray, stride: int = 1) -> np.ndarray:
    """Each input channel's integer convolution on its own: (B, C, O, Ho, Wo) int64."""
    return np.stack([conv_int64(q[:, i : i + 1], w[:, i : i + 1], stride) for i in range(q.shape[1])], axis=1)


def quantize_weights(weight: np.ndarray, spec, input_layer: bool = False) -> dict:
    """A layer's integer weights from its float ones, by the rules of arithmetic 2 (all in float64, exact or
    correctly rounded): per output channel w_scale = peak / weight_max, w_int = round(w / w_scale); the finest
    weight_max ≤ spec.weight_max (down to half of it) for which act_max · Σ|w_int| < 2^24, else spec.weight_max."""
    w = np.asarray(weight, dtype=F64)
    w = w.reshape(w.shape[0], w.shape[1], *(w.shape[2:] + (1, 1))[:2])
    peak = np.abs(w).max(axis=(1, 2, 3), keepdims=True)
    taps = w.shape[2] * w.shape[3]
    act_max = min(spec.input_act_max, (EXACT_F32 - 1) // (taps * spec.weight_max)) if input_layer else spec.act_max

    def at(weight_max):
        w_scale = np.where(peak > 0, peak / F64(weight_max), 1.0)
        w_int = np.clip(np.rint(w / w_scale), -weight_max, weight_max)
        return w_scale, w_int, int(np.abs(w_int).sum(axis=(1, 2, 3)).max()) * act_max

    weight_max = spec.weight_max
    w_scale, w_int, l1 = at(weight_max)
    while not (input_layer or l1 < EXACT_F32 or 2 * weight_max <= spec.weight_max):
        weight_max = max(spec.weight_max // 2, min(weight_max - 1, (weight_max * (EXACT_F32 - 1)) // l1))
        w_scale, w_int, l1 = at(weight_max)
    if l1 >= EXACT_F32 and 2 * weight_max <= spec.weight_max:
        weight_max = spec.weight_max
        w_scale, w_int, l1 = at(weight_max)
    assert taps * act_max * weight_max < EXACT_F32
    return {"w_int": w_int.astype(np.int64), "w_scale": w_scale.reshape(-1), "weight_max": weight_max,
            "act_max": act_max, "bound": l1}


class Linear:
    """A convolution (or a linear layer as a 1×1 one) with integer weights.

    Hidden layers: one int64 sum per output; scaled back (x scale · w_scale) and biased in float32 when the
    layer's bound act_max · Σ|w_int| is below 2^24 (the fast path's one float32 sum), in float64 otherwise.
    Input layers: per image and channel scales, each channel's integer sum times its scale added in float64
    in channel order, then · w_scale and + bias in float64.
    """

    def __init__(self, p: dict, spec, input_layer: bool = False):
        d = quantize_weights(p["weight"], spec, input_layer)
        self.w_int, self.act_max, self.weight_max = d["w_int"], d["act_max"], d["weight_max"]
        self.w_scale = d["w_scale"].reshape(1, -1, 1, 1)
        bias = p.get("bias")
        bias = np.zeros(self.w_int.shape[0], dtype=F32) if bias is None else bias
        self.bias = np.asarray(bias, dtype=F64).reshape(1, -1, 1, 1)
        self.stride, self.padding = p.get("stride", 1), p.get("padding", 0)
        self.per_channel = input_layer
        self.single_sum = not input_layer and d["bound"] < EXACT_F32

    def pad(self, q: np.ndarray) -> np.ndarray:
        p = self.padding
        left, right, top, bottom = p if isinstance(p, tuple) else (p, p, p, p)
        return np.pad(q, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = x.ndim == 2
        if flat:
            x = x[:, :, None, None]
        q, scale = quantize_per_image(x, self.act_max, self.per_channel)
        q = self.pad(q)
        if self.per_channel:
            parts = conv_int64_per_channel(q, self.w_int, self.stride)  # (B, C, O, Ho, Wo)
            assert np.abs(parts).max(initial=0) < EXACT_F32
            scale = scale.astype(F64)
            acc = parts[:, 0].astype(F64) * scale[:, 0:1]
            for i in range(1, parts.shape[1]):
                acc = acc + parts[:, i].astype(F64) * scale[:, i : i + 1]
            y = ((acc * self.w_scale) + self.bias).astype(F32)
        else:
            s = conv_int64(q, self.w_int, self.stride)
            if self.single_sum:
                assert np.abs(s).max(initial=0) < EXACT_F32
                y = s.astype(F32) * (scale * self.w_scale.astype(F32)) + self.bias.astype(F32)
            else:
                assert np.abs(s).max(initial=0) < EXACT_F64
                y = (s.astype(F64) * (scale.astype(F64) * self.w_scale) + self.bias).astype(F32)
        return y[:, :, 0, 0] if flat else y


class Table:
    """An elementwise function on a grid of 2^−k over [−range, top], read at round(x·2^k + half) clamped to the
    grid; beyond ``range`` the identity if ``tail_identity``."""

    def __init__(self, fn, spec, tail_identity: bool, top: float | None = None):
        self.step_inv = 2.0**spec.table_step_log2
        self.half = int(spec.table_range * self.step_inv)
        self.range = float(spec.table_range if top is None else top)
        self.last = int(self.range * self.step_inv) + self.half
        grid = (np.arange(self.last + 1, dtype=F64) - self.half) / self.step_inv
        self.values = fn(grid).astype(F32)
        self.tail_identity = tail_identity

    def index(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x), 0, self.last).astype(np.int64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.values[self.index(x * F32(self.step_inv) + F32(self.half))]
        return np.where(x > F32(self.range), x, out) if self.tail_identity else out


class GroupNorm:
    """Statistics of the activations quantized to ±2^20 per image, as int64 sums; mean and 1/√(var + ε) in
    float64, each operation rounded once; then x·a + b in float32 with a = inv·γ, b = β − mean·a."""

    def __init__(self, p: dict, spec):
        self.groups, self.eps = p["groups"], float(p["eps"])
        self.weight = np.asarray(p["weight"], dtype=F32).reshape(1, -1, 1, 1)
        self.bias = np.asarray(p["bias"], dtype=F32).reshape(1, -1, 1, 1)
        self.levels = 2**spec.norm_levels_log2

    def affine(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, c = x.shape[:2]
        q, scale = quantize_per_image(x, self.levels)
        n = q[0, 0].size * (c // self.groups)
        q = q.reshape(b, self.groups, n)
        s1, s2 = q.sum(axis=-1), (q * q).sum(axis=-1)  # int64: exact
        mean_q = s1.astype(F64) / F64(n)
        var_q = np.maximum(s2.astype(F64) / F64(n) - mean_q * mean_q, 0.0)
        scale = scale.reshape(b, 1).astype(F64)
        mean = mean_q * scale
        inv = 1.0 / np.sqrt(var_q * (scale * scale) + self.eps)
        per_channel = lambda v: np.repeat(v.astype(F32), c // self.groups, axis=1).reshape(b, c, 1, 1)  # noqa: E731
        a = per_channel(inv) * self.weight
        return a, self.bias - per_channel(mean) * a

    def __call__(self, x: np.ndarray) -> np.ndarray:
        a, b = self.affine(x)
        return x * a + b

    def then(self, table: Table, x: np.ndarray) -> np.ndarray:
        """table(x·a + b) with the affine map folded into the index: round(x·(a·2^k) + (b·2^k + half))."""
        a, b = self.affine(x)
        a = a * F32(table.step_inv)
        b = b * F32(table.step_inv) + F32(table.half)
        return table.values[table.index(x * a + b)]


# --------------------------------------------------------------------------- the networks


class ResBlock:
    def __init__(self, p: dict, spec, silu: Table):
        self.norm1, self.norm2 = GroupNorm(p["norm1"], spec), GroupNorm(p["norm2"], spec)
        self.conv1, self.conv2, self.emb = Linear(p["conv1"], spec), Linear(p["conv2"], spec), Linear(p["emb"], spec)
        self.skip = Linear(p["skip"], spec) if p["skip"] is not None else None
        self.silu = silu

    def __call__(self, x: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """``emb``: the time MLP's SiLU output for this timestep, (1, 4·ch): every image's row."""
        h = self.conv1(self.norm1.then(self.silu, x)) + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.norm2.then(self.silu, h))
        return (self.skip(x) if self.skip is not None else x) + h


class Attention:
    """Logits from integer q·k (int64), softmax weights round(exp(logit − max)·2^bits) as integers, their
    weighted sum of integer values in int64, then · v's scale / Σ weights in float64."""

    def __init__(self, p: dict, spec):
        self.norm = GroupNorm(p["norm"], spec)
        self.heads = p["heads"]
        self.qkv, self.proj = Linear(p["qkv"], spec), Linear(p["proj"], spec)
        self.act_max = spec.act_max
        self.softmax_one = float(2**spec.softmax_bits)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        b, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w, 1)).reshape(b, 3, self.heads, d, h * w)
        qi, qs = quantize_per_image(qkv[:, 0], self.act_max)
        ki, ks = quantize_per_image(qkv[:, 1], self.act_max)
        vi, vs = quantize_per_image(qkv[:, 2], self.act_max)
        logits = np.einsum("bhdi,bhdj->bhij", qi, ki)  # int64
        assert np.abs(logits).max() < EXACT_F32
        logits = logits.astype(F64) * ((qs.astype(F64) * ks.astype(F64)) / np.sqrt(F64(d)))
        logits = logits - logits.max(axis=-1, keepdims=True)
        weights = np.rint(exp64(logits) * self.softmax_one).astype(np.int64)  # integers in [0, 2^bits]
        total = weights.sum(axis=-1)  # int64
        out = np.einsum("bhdj,bhij->bhdi", vi, weights)  # int64
        assert np.abs(out).max() < EXACT_F64 and total.max() < EXACT_F64
        out = out.astype(F64) * vs.astype(F64) / total.astype(F64)[:, :, None, :]
        out = out.astype(F32).reshape(b, c, h * w, 1)
        return x + self.proj(out).reshape(b, c, h, w)


def _upsample(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=2).repeat(2, axis=3)


class UNetReference:
    """IntUNet's forward pass in numpy: ``(x (B, 3, H, W) float32, t) -> float32 output``."""

    def __init__(self, params: dict, spec):
        if spec.arithmetic != 2:
            raise ValueError("the reference covers arithmetic 2 only")
        self.config = params["config"]
        self.silu = Table(silu64, spec, tail_identity=False, top=256.0)
        self.time1, self.time2 = Linear(params["time1"], spec), Linear(params["time2"], spec)
        self.input_conv = Linear(params["input_conv"], spec, input_layer=True)

        def build(p):
            return {"res": lambda: ResBlock(p, spec, self.silu), "attn": lambda: Attention(p, spec),
                    "conv": lambda: Linear(p, spec), "upsample": lambda: _upsample}[p["kind"]]()

        self.down = [[build(p) for p in block] for block in params["down"]]
        self.mid = [build(p) for p in params["mid"]]
        self.up = [[build(p) for p in block] for block in params["up"]]
        self.out_norm = GroupNorm(params["out_norm"], spec)
        self.out_conv = Linear(params["out_conv"], spec)

    def time_embedding(self, t: int) -> np.ndarray:
        """SiLU of the time MLP of the sinusoidal embedding: (1, 4·ch) float32."""
        c = self.config
        half = c.base_channels // 2
        ln_max_period = float.fromhex("0x1.26bb1bbb55516p+3")  # ln 10⁴
        freqs = exp64((-ln_max_period * np.arange(half, dtype=F64)) / F64(half - c.time_freq_shift))
        sin, cos = sincos_turns64((F64(t) * freqs) * exactmath._INV_TWO_PI)
        emb = np.concatenate([sin, cos] if c.time_sin_first else [cos, sin]).astype(F32)[None]
        if c.base_channels % 2:
            emb = np.pad(emb, ((0, 0), (0, 1)))
        h = self.time2(silu64(self.time1(emb)).astype(F32))
        return silu64(h).astype(F32)

    def features(self, x: np.ndarray) -> np.ndarray:
        feats = [x]
        for n in self.config.fourier_features:
            sin, cos = sincos_turns64(x.astype(F64) * 2.0 ** (n - 1))
            feats += [sin.astype(F32), cos.astype(F32)]
        return np.concatenate(feats, axis=1)

    def __call__(self, x: np.ndarray, t: int) -> np.ndarray:
        emb = self.time_embedding(int(t))
        run = lambda layer, h: layer(h, emb) if isinstance(layer, ResBlock) else layer(h)  # noqa: E731
        h = self.input_conv(self.features(np.asarray(x, dtype=F32)))
        hs = [h]
        for block in self.down:
            for layer in block:
                h = run(layer, h)
            hs.append(h)
        for layer in self.mid:
            h = run(layer, h)
        for block in self.up:
            h = np.concatenate([h, hs.pop()], axis=1)
            for layer in block:
                h = run(layer, h)
        return self.out_conv(self.out_norm.then(self.silu, h))


class ContextNetReference:
    """IntContextNet's forward pass in numpy: the inputs as float32 arrays, ``log_sigma`` (B,); -> (δ, λ)."""

    def __init__(self, params: dict, spec):
        if spec.arithmetic != 2:
            raise ValueError("the reference covers arithmetic 2 only")
        self.config = params["config"]
        self.gelu = Table(gelu_tanh64, spec, tail_identity=True)
        self.inp = Linear(params["inp"], spec, input_layer=True)
        self.blocks = [(Linear(a, spec), Linear(b, spec)) for a, b in params["blocks"]]
        self.out = Linear(params["out"], spec)

    def stack(self, xhat, y, residual, known, coded, log_sigma, bins=None, bin_known=None) -> np.ndarray:
        """The input channels in the order of ``models.context_net.stack_inputs``, float32."""
        b, _, h, w = xhat.shape
        parts = [xhat, y, residual, known, coded, np.broadcast_to(np.reshape(log_sigma, (b, 1, 1, 1)), (b, 1, h, w))]
        if self.config.bin_width:
            parts += [bins, bin_known]
        return np.concatenate([np.asarray(p, dtype=F32) for p in parts], axis=1)

    def __call__(self, *inputs) -> tuple[np.ndarray, np.ndarray]:
        """(δ, λ), each (B, 3, H, W), from the inputs of :meth:`stack`."""
        z = self.inp(self.stack(*inputs))
        for conv3, conv1 in self.blocks:
            z = z + conv1(self.gelu(conv3(self.gelu(z))))
        out = self.out(z)
        return out[:, :3], out[:, 3:]


# --------------------------------------------------------------------------- reading a float network (torch only here)


def _tensor(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _conv(m, **extra) -> dict:
    return {"weight": _tensor(m.weight), "bias": None if m.bias is None else _tensor(m.bias), **extra}


def _norm(m) -> dict:
    return {"weight": _tensor(m.weight), "bias": _tensor(m.bias), "groups": m.num_groups, "eps": m.eps}


def unet_params(net) -> dict:
    """A float :class:`~models.unet.UNet`'s weights and layout as numpy arrays and plain dicts."""
    import torch

    from diffcodec.models.unet import AttentionBlock, DownsampleConv, ResBlock as TorchResBlock

    def layer(m) -> dict:
        if isinstance(m, TorchResBlock):
            skip = _conv(m.skip) if isinstance(m.skip, torch.nn.Conv2d) else None
            return {"kind": "res", "norm1": _norm(m.norm1), "conv1": _conv(m.conv1, padding=1), "emb": _conv(m.emb),
                    "norm2": _norm(m.norm2), "conv2": _conv(m.conv2, padding=1), "skip": skip}
        if isinstance(m, AttentionBlock):
            return {"kind": "attn", "norm": _norm(m.norm), "heads": m.num_heads, "qkv": _conv(m.qkv), "proj": _conv(m.proj)}
        if isinstance(m, DownsampleConv):
            return {"kind": "conv", **_conv(m, stride=2, padding=(0, 1, 0, 1))}
        if isinstance(m, torch.nn.Conv2d):
            return {"kind": "conv", **_conv(m, stride=m.stride[0], padding=m.padding[0])}
        if isinstance(m, torch.nn.Upsample):
            return {"kind": "upsample"}
        raise TypeError(f"no reference for {type(m).__name__}")

    return {"config": net.config, "time1": _conv(net.time_mlp[0]), "time2": _conv(net.time_mlp[2]),
            "input_conv": _conv(net.input_conv, padding=1),
            "down": [[layer(m) for m in block] for block in net.down], "mid": [layer(m) for m in net.mid],
            "up": [[layer(m) for m in block] for block in net.up],
            "out_norm": _norm(net.out_norm), "out_conv": _conv(net.out_conv, padding=1)}


def context_params(net) -> dict:
    """A float :class:`~models.context_net.ContextNet`'s weights as numpy arrays and plain dicts."""
    return {"config": net.config, "inp": _conv(net.inp, padding=1),
            "blocks": [(_conv(b[1], padding=1), _conv(b[3])) for b in net.blocks], "out": _conv(net.out)}
