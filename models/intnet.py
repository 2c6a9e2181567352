"""Integer networks: the U-Net and the context networks computed so that every machine gets the same bits.

A float network gives different last bits on different CPUs, kernel libraries and thread counts
(../shared/notes/exactness.md), and a diffusion codec amplifies any difference into a wrong
decode.  Following Ballé, Johnston & Minnen ("Integer networks for data compression", ICLR 2019),
every number here is either an integer or the result of a correctly rounded operation in a fixed
order:

* **Linear layers** (convolutions, the time MLP, attention's projections) multiply *integer*
  activations by *integer* weights.  Activations are quantized per image to ``[−A, A]`` with the
  scale max|x| / A (a max and a division: exact and correctly rounded); weights per output channel to
  ``[−W, W]``.  The products are summed in float32, where every partial sum is an integer below
  2^24 and so exact in any order: input channels are split into groups small enough for that
  bound, and the groups' sums added in float64 (exact integers below 2^53).  The accumulator is then
  scaled back, and the bias added, in float64: one rounding each.
* **GroupNorm** takes its mean and variance from the activations quantized to 2^20 levels per
  image, summed as int64 (exact); normalising is elementwise.
* **SiLU** is a table of ``exactmath.silu`` on a grid of 2^-8 over [−64, 64] (inputs beyond pass
  through or give 0); **GELU** (context networks) likewise with ``exactmath.gelu_tanh``.
* **Attention's softmax** uses ``exactmath.exp``, rounds the weights to integers of 15 bits and sums
  them exactly; the weighted sum of values is an integer product in float64.
* **Sinusoidal embeddings and Fourier features** use ``exactmath.sincos_turns``.

Every image of a batch is quantized on its own, so results depend neither on the batch size nor on
how a layer's work is split across threads.  The float network is the trained object; its integer
form is derived from its weights deterministically (``quantize_*``), so the model file need not
store both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from diffcodec import exactmath

from .context_net import ContextNet
from .unet import AttentionBlock, DownsampleConv, ResBlock, UNet

_EXACT_F32 = 2**24  # float32 holds every integer below this exactly


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

    def to_dict(self) -> dict:
        return asdict(self)


def _quantize_per_image(x: torch.Tensor, levels: int, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers in [−levels, levels], scale per image, or per image and channel) with x ≈ integers · scale.

    In x's dtype (float32 for activations): a max, a division and a rounding, each exact or correctly
    rounded.  An all-zero image gets a tiny scale and quantizes to zeros.
    """
    dims = tuple(range(2 if per_channel else 1, x.dim()))
    scale = x.abs().amax(dim=dims, keepdim=True).clamp_min(1e-30) / levels
    return torch.round(x / scale).clamp_(-levels, levels), scale


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
        self.w_scale = torch.where(peak > 0, peak / spec.weight_max, torch.ones_like(peak)).reshape(1, -1, 1, 1)
        w_int = torch.round(w / self.w_scale.reshape(-1, 1, 1, 1)).clamp(-spec.weight_max, spec.weight_max)
        self.bias = (bias.detach().double() if bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)).reshape(1, -1, 1, 1)
        # An input layer sees features of unlike ranges (pixels, masks, sines, log σ): each channel gets its
        # own scale and finer levels, and its products are summed on their own.
        self.per_channel = input_layer
        taps = w.shape[2] * w.shape[3]
        self.act_max = min(spec.input_act_max, (_EXACT_F32 - 1) // (taps * spec.weight_max)) if input_layer else spec.act_max
        per_channel = taps * self.act_max * spec.weight_max
        if per_channel >= _EXACT_F32:
            raise ValueError("one input channel's products would not sum exactly in float32")
        group = 1 if input_layer else (_EXACT_F32 - 1) // per_channel  # input channels whose products sum exactly in float32
        self.groups = [(c, min(c + group, w.shape[1])) for c in range(0, w.shape[1], group)]
        self.w_int = [w_int[:, a:b].float().contiguous() for a, b in self.groups]
        self.stride, self.padding = stride, padding
        # One part, one scale: the float32 accumulator holds the exact sum, scaled in float32.
        self.simple = len(self.groups) == 1 and not self.per_channel
        self.w_scale32, self.bias32 = self.w_scale.float(), self.bias.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 2
        if squeeze:
            x = x[:, :, None, None]
        q, scale = _quantize_per_image(x.float(), self.act_max, self.per_channel)
        if isinstance(self.padding, tuple):
            q, pad = F.pad(q, self.padding), 0
        else:
            pad = self.padding
        if self.simple:
            y = F.conv2d(q, self.w_int[0], stride=self.stride, padding=pad) * (scale * self.w_scale32) + self.bias32
            return y[:, :, 0, 0] if squeeze else y
        acc = None
        scale = scale.double()
        for (a, b), w in zip(self.groups, self.w_int):
            part = F.conv2d(q[:, a:b], w, stride=self.stride, padding=pad).double()  # exact: integers below 2^24
            if self.per_channel:
                part = part * scale[:, a:b]  # one channel a group: its own scale
            acc = part if acc is None else acc + part  # in a fixed order; exact while the sums are integers below 2^53
        y = acc * (self.w_scale if self.per_channel else scale * self.w_scale)
        y = (y + self.bias).float()
        return y[:, :, 0, 0] if squeeze else y


class _Table:
    """An elementwise function as a table on a grid (exact lookups), identity or 0 beyond its range."""

    def __init__(self, fn, spec: IntSpec, tail_identity: bool = True):
        self.step_inv = float(2**spec.table_step_log2)
        self.half = int(spec.table_range * self.step_inv)
        grid = torch.arange(-self.half, self.half + 1, dtype=torch.float64) / self.step_inv
        self.values = fn(grid).float()
        self.range = float(spec.table_range)
        self.tail_identity = tail_identity

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Index of the nearest grid point, offset to start at 0 (x·2^k is exact; the add and round are IEEE).
        idx = torch.round(x * self.step_inv + self.half).clamp_(0, 2 * self.half).long()
        out = torch.take(self.values, idx)  # a gather: twice as fast as indexing here
        if self.tail_identity:
            out = torch.where(x > self.range, x, out)
        return out


class _IntGroupNorm:
    def __init__(self, norm: torch.nn.GroupNorm, spec: IntSpec):
        self.groups = norm.num_groups
        self.eps = float(norm.eps)
        self.weight = norm.weight.detach().float().reshape(1, -1, 1, 1)
        self.bias = norm.bias.detach().float().reshape(1, -1, 1, 1)
        self.levels = 2**spec.norm_levels_log2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        q, scale = _quantize_per_image(x, self.levels)
        q = q.to(torch.int64).reshape(b, self.groups, -1)
        n = q.shape[-1]
        s1 = q.sum(dim=-1).double()  # int64 sums: exact in any order
        s2 = (q * q).sum(dim=-1).double()  # below 2^53 for the group sizes of these networks
        mean_q = s1 / n
        var_q = (s2 / n - mean_q * mean_q).clamp_min(0.0)
        scale = scale.reshape(b, 1).double()
        mean = mean_q * scale
        inv = 1.0 / torch.sqrt(var_q * (scale * scale) + self.eps)
        per_channel = c // self.groups
        mean = mean.repeat_interleave(per_channel, dim=1).reshape(b, c, 1, 1).float()
        inv = inv.repeat_interleave(per_channel, dim=1).reshape(b, c, 1, 1).float()
        # (x − mean)·inv·γ + β as x·a + (β − mean·a): two passes over the activations instead of four.
        a = inv * self.weight
        return x * a + (self.bias - mean * a)


class _IntResBlock:
    def __init__(self, block: ResBlock, spec: IntSpec, silu: _Table):
        self.norm1 = _IntGroupNorm(block.norm1, spec)
        self.conv1 = _IntLinear(block.conv1.weight, block.conv1.bias, spec, padding=1)
        self.emb = _IntLinear(block.emb.weight, block.emb.bias, spec)
        self.norm2 = _IntGroupNorm(block.norm2, spec)
        self.conv2 = _IntLinear(block.conv2.weight, block.conv2.bias, spec, padding=1)
        self.skip = _IntLinear(block.skip.weight, block.skip.bias, spec) if isinstance(block.skip, torch.nn.Conv2d) else None
        self.silu = silu

    def __call__(self, x: torch.Tensor, emb_silu: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.silu(self.norm1(x)))
        h = h + self.emb(emb_silu)[:, :, None, None]
        h = self.conv2(self.silu(self.norm2(h)))
        return (self.skip(x) if self.skip is not None else x) + h


class _IntAttention:
    def __init__(self, block: AttentionBlock, spec: IntSpec):
        self.norm = _IntGroupNorm(block.norm, spec)
        self.heads = block.num_heads
        self.qkv = _IntLinear(block.qkv.weight, block.qkv.bias, spec)
        self.proj = _IntLinear(block.proj.weight, block.proj.bias, spec)
        self.act_max = spec.act_max
        self.softmax_one = float(2**spec.softmax_bits)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w, 1))
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)  # (B, heads, d, L)
        d = c // self.heads
        qi, qs = _quantize_per_image(q, self.act_max)
        ki, ks = _quantize_per_image(k, self.act_max)
        if self.act_max**2 * d >= _EXACT_F32:
            raise ValueError("attention width too large for exact float32 logits")
        logits = torch.matmul(qi.float().transpose(-1, -2), ki.float()).double()  # (B, heads, L, L), exact
        logits = logits * ((qs.double() * ks.double()) / math.sqrt(d))
        logits = logits - logits.amax(dim=-1, keepdim=True)
        weights = torch.round(exactmath.exp(logits) * self.softmax_one)  # integers in [0, 2^bits]
        total = weights.sum(dim=-1)  # exact: integers below 2^53
        vi, vs = _quantize_per_image(v, self.act_max)
        out = torch.matmul(vi.double(), weights.transpose(-1, -2))  # float64: every partial sum an integer below 2^53
        out = out * vs.double() / total[:, :, None, :]
        out = out.float().reshape(b, c, h * w, 1)
        return x + self.proj(out).reshape(b, c, h, w)


class _Upsample:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


class IntUNet:
    """The integer form of a :class:`~models.unet.UNet`: ``(x_t, t) -> float32`` output, the same bits everywhere."""

    def __init__(self, net: UNet, spec: IntSpec = IntSpec()):
        self.config = net.config
        self.spec = spec
        c = net.config
        self.silu = _Table(exactmath.silu, spec)
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
        steps = set(int(v) for v in t)
        if len(steps) != 1:
            raise ValueError("IntUNet takes one timestep per call")
        emb = self._time_embedding(steps.pop()).expand(len(x), -1)
        h = self.input_conv(self._features(x.float()))
        hs = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, emb) if isinstance(layer, _IntResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, _IntResBlock) else layer(h)
        for block in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in block:
                h = layer(h, emb) if isinstance(layer, _IntResBlock) else layer(h)
        return self.out_conv(self.silu(self.out_norm(h)))


class IntContextNet:
    """The integer form of a :class:`~models.context_net.ContextNet` (the exact stage's networks).

    GELU becomes a table of its tanh form (``exactmath.gelu_tanh``), within ~5e-4 of the erf form
    the networks were trained with.
    """

    def __init__(self, net: ContextNet, spec: IntSpec = IntSpec()):
        self.config = net.config
        self.spec = spec
        self.gelu = _Table(exactmath.gelu_tanh, spec)
        self.inp = _IntLinear(net.inp.weight, net.inp.bias, spec, padding=1, input_layer=True)
        self.blocks = [(_IntLinear(b[1].weight, b[1].bias, spec, padding=1), _IntLinear(b[3].weight, b[3].bias, spec))
                       for b in net.blocks]
        self.out = _IntLinear(net.out.weight, net.out.bias, spec)

    @torch.no_grad()
    def __call__(self, xhat: torch.Tensor, y: torch.Tensor, residual: torch.Tensor, known: torch.Tensor,
                 coded: torch.Tensor, log_sigma: torch.Tensor, bins: torch.Tensor | None = None,
                 bin_known: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(δ, λ) as :meth:`ContextNet.forward`, float32, the same bits everywhere."""
        b, _, h, w = xhat.shape
        parts = [xhat, y, residual, known, coded, log_sigma.view(b, 1, 1, 1).expand(b, 1, h, w)]
        if self.config.bin_width:
            if bins is None or bin_known is None:
                raise ValueError("a coarse-to-fine context network needs bins and bin_known")
            parts += [bins, bin_known]
        z = self.inp(torch.cat([p.float() for p in parts], dim=1))
        for conv3, conv1 in self.blocks:
            z = z + conv1(self.gelu(conv3(self.gelu(z))))
        out = self.out(z)
        return out[:, :3], out[:, 3:]
