"""Published DDPM weights in diffusers' layout, converted to a :class:`DiffusionModel`.

A diffusers ``UNet2DModel`` directory (``config.json`` plus ``diffusion_pytorch_model.safetensors``
or ``.bin``), such as google/ddpm-cifar10-32, is the network of Ho et al. 2020 Appendix B.  Our
:class:`UNet` holds it exactly once :func:`unet_config_from_diffusers` sets the options DDPM differs
in (32 GroupNorm groups with ε = 1e-6, a [sin, cos] time embedding with frequency shift 1, stride-2
convolutions padded right/bottom only); :func:`convert_diffusers_state_dict` then renames every
tensor, and fuses the attention's separate q/k/v projections into our single ``qkv`` convolution.

Only ``torch`` is needed; ``safetensors`` is used when the weights come in that format.  Example::

    model = load_diffusers_ddpm("ddpm-cifar10-32")   # a downloaded google/ddpm-cifar10-32
    eps, _ = model(x_t, t)                           # ε_θ(x_t, t), t = original indices 0..999
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from diffcodec.diffusion import ScheduleConfig, ScheduleKind, VarianceKind

from .checkpoint import CheckpointError, DiffusionModel
from .unet import AttentionBlock, ResBlock, UNet, UNetConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SCHEDULER_CONFIG_NAME = "scheduler_config.json"

# UNet2DModel's constructor defaults, which apply to any key a config.json leaves out.
_DIFFUSERS_DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "sample_size": None,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896),
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}
# Settings our U-Net has no counterpart for: each must keep the one value DDPM uses.
_FIXED_SETTINGS = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "act_fn": "silu",
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}
_DOWN_BLOCKS = {"DownBlock2D": False, "AttnDownBlock2D": True}  # block type -> has attention
_UP_BLOCKS = {"UpBlock2D": False, "AttnUpBlock2D": True}

# Tensor names inside one layer: ours -> diffusers'.
_RESNET_NAMES = {"norm1": "norm1", "conv1": "conv1", "emb": "time_emb_proj", "norm2": "norm2", "conv2": "conv2", "skip": "conv_shortcut"}
# Attention projections: current diffusers names, then the names of checkpoints saved before diffusers 0.14
# (google/ddpm-cifar10-32 among them), which diffusers itself renames on load.
_ATTENTION_NAMES = {"q": ("to_q", "query"), "k": ("to_k", "key"), "v": ("to_v", "value"), "out": ("to_out.0", "proj_attn")}


# ---------------------------------------------------------------------------------------------- config
def unet_config_from_diffusers(config: dict, source: str = CONFIG_NAME) -> UNetConfig:
    """The :class:`UNetConfig` that computes exactly what a diffusers ``UNet2DModel`` config describes.

    Raises :class:`CheckpointError` naming the first setting that our U-Net cannot represent.
    """
    if not isinstance(config, dict) or config.get("_class_name") != "UNet2DModel":
        name = config.get("_class_name") if isinstance(config, dict) else None
        raise CheckpointError(f"{source}: describes {name!r}, not a diffusers UNet2DModel")
    cfg = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in config.items() if not k.startswith("_")}}

    for key, value in _FIXED_SETTINGS.items():
        if cfg[key] != value:
            raise CheckpointError(f"{source}: unsupported UNet2DModel setting {key}={cfg[key]!r} (only {value!r} is supported)")

    channels = [int(c) for c in cfg["block_out_channels"]]
    down, up = list(cfg["down_block_types"]), list(cfg["up_block_types"])
    if not channels or not len(channels) == len(down) == len(up):
        raise CheckpointError(f"{source}: block_out_channels, down_block_types and up_block_types differ in length")
    for kind in down:
        if kind not in _DOWN_BLOCKS:
            raise CheckpointError(f"{source}: unsupported down block type {kind!r} (supported: {', '.join(_DOWN_BLOCKS)})")
    for kind in up:
        if kind not in _UP_BLOCKS:
            raise CheckpointError(f"{source}: unsupported up block type {kind!r} (supported: {', '.join(_UP_BLOCKS)})")
    # Our U-Net puts attention by resolution, so level i must have it on the way down and back up alike.
    attention = [_DOWN_BLOCKS[kind] for kind in down]
    if attention != [_UP_BLOCKS[kind] for kind in reversed(up)]:
        raise CheckpointError(f"{source}: attention in down_block_types {down} and up_block_types {up} is not mirrored")

    base = channels[0]
    if any(c % base for c in channels):
        raise CheckpointError(f"{source}: block_out_channels {channels} are not multiples of the first")
    if cfg["out_channels"] != cfg["in_channels"]:
        raise CheckpointError(
            f"{source}: out_channels={cfg['out_channels']} must equal in_channels={cfg['in_channels']} (an ε-prediction)"
        )
    if cfg["time_embedding_dim"] not in (None, 4 * base):
        raise CheckpointError(f"{source}: unsupported time_embedding_dim={cfg['time_embedding_dim']} (only 4 × block_out_channels[0])")
    groups = cfg["norm_num_groups"]
    if not isinstance(groups, int) or cfg["attn_norm_num_groups"] not in (None, groups):
        raise CheckpointError(
            f"{source}: unsupported norm_num_groups={groups!r}, attn_norm_num_groups={cfg['attn_norm_num_groups']!r}"
        )
    if cfg["freq_shift"] != int(cfg["freq_shift"]):
        raise CheckpointError(f"{source}: unsupported freq_shift={cfg['freq_shift']!r} (an integer)")
    if cfg["downsample_padding"] not in (0, 1):
        raise CheckpointError(f"{source}: unsupported downsample_padding={cfg['downsample_padding']!r} (0 or 1)")

    size = cfg["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if not isinstance(size, int) or size % 2 ** (len(channels) - 1):
        raise CheckpointError(f"{source}: sample_size={cfg['sample_size']!r} must be one size divisible by 2^{len(channels) - 1}")

    # diffusers gives every attention layer C // attention_head_dim heads (one head when None);
    # ours has one head count for the whole network.
    attention_channels = [c for c, a in zip(channels, attention) if a] + [channels[-1]]  # the middle block always attends
    head_dim = cfg["attention_head_dim"]
    heads = {1 if head_dim is None else c // head_dim for c in attention_channels}
    if len(heads) != 1 or (head_dim is not None and any(c % head_dim for c in attention_channels)):
        raise CheckpointError(f"{source}: unsupported attention_head_dim={head_dim!r}: every attention layer must get one head count")

    return UNetConfig(
        in_channels=int(cfg["in_channels"]),
        base_channels=base,
        channel_mult=tuple(c // base for c in channels),
        num_res_blocks=int(cfg["layers_per_block"]),
        attention_resolutions=tuple(size >> level for level, a in enumerate(attention) if a),
        dropout=float(cfg["dropout"]),
        learn_sigma=False,
        fourier_features=(),
        image_size=size,
        num_heads=heads.pop(),
        norm_groups=groups,
        norm_eps=float(cfg["norm_eps"]),
        time_sin_first=not cfg["flip_sin_to_cos"],
        time_freq_shift=int(cfg["freq_shift"]),
        downsample_pad_trailing=cfg["downsample_padding"] == 0,
    )


# ---------------------------------------------------------------------------------------------- weights
def _kind(layer: nn.Module) -> str:
    if isinstance(layer, ResBlock):
        return "resnet"
    if isinstance(layer, AttentionBlock):
        return "attention"
    return "plain"  # a convolution, linear layer or GroupNorm: weight and bias as they are


def _our_layers(net: UNet) -> Iterator[tuple[str, str]]:
    """(module name, kind) of every layer holding weights, in forward order."""
    yield "input_conv", "plain"
    yield "time_mlp.0", "plain"
    yield "time_mlp.2", "plain"
    for k, block in enumerate(net.down):
        for i, layer in enumerate(block):
            yield f"down.{k}.{i}", _kind(layer)
    for i, layer in enumerate(net.mid):
        yield f"mid.{i}", _kind(layer)
    for k, block in enumerate(net.up):
        for i, layer in enumerate(block):
            if not isinstance(layer, nn.Upsample):
                yield f"up.{k}.{i}", _kind(layer)
    yield "out_norm", "plain"
    yield "out_conv", "plain"


def _diffusers_layers(config: UNetConfig) -> Iterator[tuple[str, str]]:
    """(module name, kind) of every layer of the equivalent UNet2DModel, in the same forward order."""
    levels = len(config.channel_mult)
    attention = [(config.image_size >> level) in config.attention_resolutions for level in range(levels)]
    yield "conv_in", "plain"
    yield "time_embedding.linear_1", "plain"
    yield "time_embedding.linear_2", "plain"
    for level in range(levels):
        for j in range(config.num_res_blocks):
            yield f"down_blocks.{level}.resnets.{j}", "resnet"
            if attention[level]:
                yield f"down_blocks.{level}.attentions.{j}", "attention"
        if level != levels - 1:
            yield f"down_blocks.{level}.downsamplers.0.conv", "plain"
    yield "mid_block.resnets.0", "resnet"
    yield "mid_block.attentions.0", "attention"
    yield "mid_block.resnets.1", "resnet"
    for i in range(levels):
        level = levels - 1 - i
        for j in range(config.num_res_blocks + 1):
            yield f"up_blocks.{i}.resnets.{j}", "resnet"
            if attention[level]:
                yield f"up_blocks.{i}.attentions.{j}", "attention"
        if level:
            yield f"up_blocks.{i}.upsamplers.0.conv", "plain"
    yield "conv_norm_out", "plain"
    yield "conv_out", "plain"


def convert_diffusers_state_dict(state: dict[str, torch.Tensor], net: UNet, source: str = "weights") -> dict[str, torch.Tensor]:
    """A diffusers UNet2DModel state dict renamed (and q/k/v fused) into ``net``'s layout, float32.

    Every tensor of ``state`` must be used and every parameter of ``net`` filled, else
    :class:`CheckpointError` names the first one left over.
    """
    wanted = net.state_dict()
    remaining = {k: v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}

    def take(name: str, *alternatives: str) -> torch.Tensor:
        for key in (name, *alternatives):
            if key in remaining:
                return remaining.pop(key).float()
        raise CheckpointError(f"{source}: no tensor {name!r}")

    ours, theirs = list(_our_layers(net)), list(_diffusers_layers(net.config))
    if [kind for _, kind in ours] != [kind for _, kind in theirs]:  # the two walks above disagree: a bug here
        raise AssertionError("diffusers and diffcodec U-Net layers do not line up")
    for (mine, kind), (their, _) in zip(ours, theirs):
        if kind == "plain":
            for p in ("weight", "bias"):
                out[f"{mine}.{p}"] = take(f"{their}.{p}")
        elif kind == "resnet":
            for my_layer, their_layer in _RESNET_NAMES.items():
                if f"{mine}.{my_layer}.weight" in wanted:  # no skip convolution when the width is kept
                    for p in ("weight", "bias"):
                        out[f"{mine}.{my_layer}.{p}"] = take(f"{their}.{their_layer}.{p}")
        else:
            for p in ("weight", "bias"):
                out[f"{mine}.norm.{p}"] = take(f"{their}.group_norm.{p}")
                # Ours is one 1×1 Conv1d giving [q; k; v] (heads contiguous within each), theirs three Linears.
                qkv = [take(*(f"{their}.{n}.{p}" for n in _ATTENTION_NAMES[part])) for part in "qkv"]
                fused = torch.cat(qkv, dim=0)
                proj = take(*(f"{their}.{n}.{p}" for n in _ATTENTION_NAMES["out"]))
                out[f"{mine}.qkv.{p}"] = fused[..., None] if p == "weight" else fused
                out[f"{mine}.proj.{p}"] = proj[..., None] if p == "weight" else proj

    if remaining:
        first = sorted(remaining)[0]
        raise CheckpointError(f"{source}: tensor {first!r} has no place in the converted network ({len(remaining)} unused)")
    unfilled = [k for k in wanted if k not in out]
    if unfilled:
        raise CheckpointError(f"{source}: nothing fills {unfilled[0]!r} ({len(unfilled)} parameters unfilled)")
    for key, tensor in out.items():
        if tensor.shape != wanted[key].shape:
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(tensor.shape)}, the config implies {tuple(wanted[key].shape)}")
    return out


def _read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_path, bin_path = (directory / name for name in WEIGHTS_NAMES)
    if safetensors_path.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            if not bin_path.is_file():
                raise CheckpointError(
                    f"{safetensors_path} needs the safetensors package: pip install 'diffcodec[diffusers]'"
                ) from None
        else:
            try:
                return load_file(str(safetensors_path), device="cpu")
            except Exception as exc:  # safetensors raises its own error types for damaged files
                raise CheckpointError(f"{safetensors_path}: unreadable safetensors file ({exc})") from None
    if bin_path.is_file():
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for foreign files
            raise CheckpointError(f"{bin_path}: unreadable PyTorch weights ({type(exc).__name__})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{bin_path}: not a state dict of tensors")
        return state
    raise CheckpointError(f"{directory}: has {CONFIG_NAME} but neither {' nor '.join(WEIGHTS_NAMES)}")


# ---------------------------------------------------------------------------------------------- schedule
def schedule_from_diffusers(config: dict | None, source: str = SCHEDULER_CONFIG_NAME) -> ScheduleConfig:
    """Our :class:`ScheduleConfig` for a diffusers scheduler config (DDPM's linear one when None)."""
    if config is None:
        return ScheduleConfig(kind=ScheduleKind.LINEAR, num_steps=1000)  # Ho et al. 2020 §4
    steps = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        raise CheckpointError(f"{source}: explicit trained_betas are not supported")
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise CheckpointError(f"{source}: prediction_type={config['prediction_type']!r} unsupported (only 'epsilon')")
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        # Ours is β from 1e-4 to 0.02, stretched by 1000/T: the same only when the endpoints agree.
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        scale = 1000.0 / steps
        if abs(start - 1e-4 * scale) > 1e-12 or abs(end - 0.02 * scale) > 1e-12:
            raise CheckpointError(f"{source}: linear betas {start}..{end} over {steps} steps are not DDPM's")
        return ScheduleConfig(kind=ScheduleKind.LINEAR, num_steps=steps)
    if kind == "squaredcos_cap_v2":  # Nichol & Dhariwal 2021 Eq. 17 with s = 0.008, β ≤ 0.999, as ours
        return ScheduleConfig(kind=ScheduleKind.COSINE, num_steps=steps)
    raise CheckpointError(f"{source}: unsupported beta_schedule {kind!r} (linear or squaredcos_cap_v2)")


# ---------------------------------------------------------------------------------------------- loading
def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None


def is_diffusers_directory(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a diffusers model or pipeline directory."""
    path = Path(path)
    return path.is_dir() and ((path / CONFIG_NAME).is_file() or (path / "unet" / CONFIG_NAME).is_file())


def load_diffusers_ddpm(path: str | os.PathLike) -> DiffusionModel:
    """Load a diffusers DDPM (e.g. google/ddpm-cifar10-32) as a :class:`DiffusionModel`.

    ``path`` is the model directory (``config.json`` with the weights beside it) or a pipeline
    directory holding ``unet/``.  A ``scheduler_config.json`` there, or in ``scheduler/``, gives the
    schedule; without one it is DDPM's (linear β from 1e-4 to 0.02, T = 1000).
    """
    root = Path(path)
    unet_dir = root if (root / CONFIG_NAME).is_file() else root / "unet"
    if not (unet_dir / CONFIG_NAME).is_file():
        raise CheckpointError(f"{root}: no {CONFIG_NAME} (expected a diffusers UNet2DModel directory)")
    unet_config = unet_config_from_diffusers(_read_json(unet_dir / CONFIG_NAME), source=str(unet_dir / CONFIG_NAME))
    try:
        net = UNet(unet_config)
    except ValueError as exc:  # e.g. norm_num_groups not dividing a layer's width
        raise CheckpointError(f"{unet_dir / CONFIG_NAME}: {exc}") from None
    net.load_state_dict(convert_diffusers_state_dict(_read_state_dict(unet_dir), net, source=str(unet_dir)))

    candidates = (root / SCHEDULER_CONFIG_NAME, root / "scheduler" / SCHEDULER_CONFIG_NAME)
    scheduler_path = next((p for p in candidates if p.is_file()), None)
    scheduler = _read_json(scheduler_path) if scheduler_path else None
    schedule = schedule_from_diffusers(scheduler, source=str(scheduler_path))

    # The likelihood DDPM reports (Ho et al. 2020 Table 2, 3.70–3.75 bits/dim on CIFAR-10) was computed
    # by its code with model_var_type='fixedlarge': Σ_t = β_t, except log β̃_2 at the first step so the
    # decoder L_0 is not swamped by the tiny β_1.  That is exactly our FIXED_LARGE.  The diffusers
    # scheduler's variance_type (fixed_small, Σ = β̃_t) is a sampling choice and says nothing here.
    return DiffusionModel(net, schedule, VarianceKind.FIXED_LARGE, meta={"imported_from": "diffusers UNet2DModel"})
