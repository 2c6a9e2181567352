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
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from diffcodec import exactmath

from .context_net import ContextNet, stack_inputs
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
    arithmetic: int = 2  # 1: the first version of these rules; 2: layers fitted to one float32 sum (_IntLinear)

    def to_dict(self) -> dict:
        return asdict(self)


def _quantize_per_image(x: torch.Tensor, levels: int, per_channel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(integers in [−levels, levels], scale per image, or per image and channel) with x ≈ integers · scale.

    In x's dtype (float32 for activations): a max, a division and a rounding, each exact or correctly
    rounded.  An all-zero image gets a tiny scale and quantizes to zeros.
    """
    dims = tuple(range(2 if per_channel else 1, x.dim()))
    scale = x.abs().amax(dim=dims, keepdim=True).clamp_min_(1e-30).div_(levels)
    # No clamp needed: with scale = fl(m/levels) for m = max|x| (a normal number), |x|/scale ≤ levels·(1 + 2^−23)
    # before rounding, which rounds to at most levels for levels ≤ 2^20.
    return torch.div(x, scale).round_(), scale


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
            # Two IEEE operations in this order (a product, then a sum), in place on the fresh convolution output.
            y = F.conv2d(q, self.w_int[0], stride=self.stride, padding=pad).mul_(scale * self.w_scale32).add_(self.bias32)
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
        self._half = torch.tensor(float(self.half))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Index of the nearest grid point, offset to start at 0: half + x·2^k in one operation (x·2^k is exact, so
        # with or without a fused multiply-add the sum is rounded once, as x·2^k + half would be); round, clamp: exact.
        idx = torch.add(self._half, x, alpha=self.step_inv).round_().clamp_(0, self.last)
        out = _lookup(self.values, idx)
        if self.tail_identity and (x.device.type != "cpu" or bool(x.amax() > self.range)):  # a selection: exact
            out = torch.where(x > self.range, x, out)
        return out


def _lookup(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """values[idx] for float32 ``idx`` holding integers in [0, len(values)) (any memory layout; the result has idx's).

    A gather, exact; int32 indices and index_select are ~2x faster here than int64 and take.
    """
    i = idx.to(torch.int32)
    if i.is_contiguous():
        return values.index_select(0, i.view(-1)).view(i.shape)
    if i.dim() == 4 and i.is_contiguous(memory_format=torch.channels_last):
        p = i.permute(0, 2, 3, 1)  # memory order
        return values.index_select(0, p.reshape(-1)).view(p.shape).permute(0, 3, 1, 2)
    return values.index_select(0, i.reshape(-1)).view(i.shape)


class _IntGroupNorm:
    def __init__(self, norm: torch.nn.GroupNorm, spec: IntSpec):
        self.groups = norm.num_groups
        self.eps = float(norm.eps)
        self.weight = norm.weight.detach().float().reshape(1, -1, 1, 1)
        self.bias = norm.bias.detach().float().reshape(1, -1, 1, 1)
        self.levels = 2**spec.norm_levels_log2
        self.arithmetic = spec.arithmetic

    def affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b), float32 (B, C, 1, 1), with the normalised x = x·a + b."""
        b, c = x.shape[:2]
        q, scale = _quantize_per_image(x, self.levels)
        n = q[0, 0].numel() * (c // self.groups)
        if self.arithmetic >= 2 and n * self.levels**2 < 2**53:
            # float64 sums of integers below 2^53 are exact in any order; the sum of squares as a dot product.
            q = q.double().reshape(b * self.groups, 1, n)
            s1 = q.sum(dim=-1).reshape(b, self.groups)
            s2 = torch.bmm(q, q.transpose(1, 2)).reshape(b, self.groups)
        else:
            q = q.to(torch.int64).reshape(b, self.groups, -1)
            s1 = q.sum(dim=-1).double()  # int64 sums: exact in any order
            s2 = (q * q).sum(dim=-1).double()  # below 2^53 for the group sizes of these networks
        # The same IEEE operations as (s1 / n, s2 / n − mean²)... one at a time, on both sums at once where they are alike.
        m = torch.stack([s1, s2]).div_(n)
        mean_q = m[0]
        var_q = m[1].sub_(mean_q * mean_q).clamp_min_(0.0)
        scale = scale.reshape(b, 1).double()
        mean = mean_q * scale
        # 1 / √(var·scale² + ε): a product, a sum, a square root and a reciprocal (1 / v), each correctly rounded.
        inv = var_q.mul_(scale * scale).add_(self.eps).sqrt_().reciprocal_()
        # Both to float32, one value a channel: one repeat for the two (the same values as two repeats).
        mean, inv = torch.stack([mean, inv]).float().repeat_interleave(c // self.groups, dim=2).reshape(2, b, c, 1, 1)
        # (x − mean)·inv·γ + β as x·a + (β − mean·a): two passes over the activations instead of four.
        a = inv * self.weight
        return a, self.bias - mean * a

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.affine(x)
        return x * a + b

    def then(self, table: "_Table", x: torch.Tensor) -> torch.Tensor:
        """table(normalised x) with the table's index computed from x directly: round(x·(a·2^k) + (b·2^k + half)),
        one multiply and one add (each rounded once) instead of four passes."""
        a, b = self.affine(x)
        if self.arithmetic < 2:
            return table(x * a + b)
        a = a * table.step_inv  # exact: a power of two
        b = b * table.step_inv + table.half
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
        step = steps.pop()
        emb = self._time_embedding(step)
        h = self.input_conv(self._features(x.float()))
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
        z = self.inp(stack_inputs(self.config, xhat, y, residual, known, coded, log_sigma, bins, bin_known).float())
        for conv3, conv1 in self.blocks:
            z = conv1(self.gelu(conv3(self.gelu(z)))).add_(z)  # IEEE addition commutes: z + block(z)
        out = self.out(z)
        return out[:, :3], out[:, 3:]
