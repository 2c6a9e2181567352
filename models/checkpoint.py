"""Checkpoints: a network, its schedule and variance choice, saved together.

A checkpoint is a ``torch.save`` dict with ``format``, ``unet`` (UNetConfig as a
dict), ``schedule`` (ScheduleConfig as a dict), ``variance``, ``ema`` (the weights
used for coding) and, for resumable training checkpoints, ``model``, ``optimizer``
and ``step``.  An optional ``context`` entry (``{"config": ..., "weights": ...}``) holds the
exact stage's context network (:mod:`.context_net`).  The codec identifies a model by a hash of its
configs and weights, never by a name or path: :attr:`DiffusionModel.identity` (the U-Net; format
versions 1–3) or :attr:`DiffusionModel.codec_identity` (the U-Net and the context network; version 4).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from diffcodec.diffusion import GaussianDiffusion, ScheduleConfig, VarianceKind

from .context_net import ContextNet, ContextNetConfig
from .intnet import IntContextNet, IntSpec, IntUNet
from .unet import UNet, UNetConfig

CHECKPOINT_FORMAT = "diffcodec-checkpoint-1"
DEFAULT_MODEL_PATH = Path(__file__).with_name("default.pt")


class CheckpointError(ValueError):
    """A file is not a usable diffcodec checkpoint."""


class DiffusionModel:
    """A trained ε-network with the diffusion it was trained on, ready for inference."""

    def __init__(self, net: UNet, schedule: ScheduleConfig, variance: VarianceKind, meta: dict | None = None,
                 context: ContextNet | None = None, coarse: ContextNet | None = None):
        self.net = net.eval()
        self.context = context.eval() if context is not None else None
        self.coarse = coarse.eval() if coarse is not None else None  # the coarse-to-fine exact stage's network
        self.schedule = schedule
        self.variance = VarianceKind(variance)
        self.diffusion = GaussianDiffusion.from_config(schedule)
        self.meta = meta or {}
        self._identity: bytes | None = None
        self._codec_identity: bytes | None = None
        self._coarse_identity: bytes | None = None
        self._integer: IntegerModel | None = None

    @property
    def config(self) -> UNetConfig:
        return self.net.config

    @property
    def identity(self) -> bytes:
        """32-byte SHA-256 of the configs and weights (what a .dfc file names its model by)."""
        if self._identity is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.describe(), sort_keys=True).encode())
            for name, tensor in sorted(self.net.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().float().contiguous().numpy().tobytes())
            self._identity = h.digest()
        return self._identity

    @property
    def codec_identity(self) -> bytes:
        """32-byte SHA-256 of :attr:`identity` and the context network (format version 4 names its model by it).

        Equal to :attr:`identity` without a context network.  Kept apart from :attr:`identity` so that
        adding a context network to a checkpoint leaves the files of versions 1–3 decodable with it.
        """
        if self._codec_identity is None:
            if self.context is None:
                self._codec_identity = self.identity
            else:
                h = hashlib.sha256(self.identity)
                _hash_network(h, self.context)
                self._codec_identity = h.digest()
        return self._codec_identity

    @property
    def coarse_identity(self) -> bytes:
        """32-byte SHA-256 of :attr:`codec_identity` and the coarse-to-fine network: the model id of files with
        FLAG_COARSE_TO_FINE.  Adding that network to a checkpoint leaves every other file decodable with it."""
        if self.coarse is None:
            raise ValueError("the model has no coarse-to-fine network")
        if self._coarse_identity is None:
            h = hashlib.sha256(self.codec_identity)
            _hash_network(h, self.coarse)
            self._coarse_identity = h.digest()
        return self._coarse_identity

    def describe(self) -> dict:
        return {"unet": self.config.to_dict(), "schedule": self.schedule.to_dict(), "variance": self.variance.value}

    def integer(self) -> "IntegerModel":
        """This model's integer form (format version 5), derived from its weights once and kept."""
        if self._integer is None:
            self._integer = IntegerModel(self)
        return self._integer

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ε_θ(x_t, t) and the variance output (None when the variance is fixed); t are original indices."""
        out = self.net(x_t.float(), t).float()
        c = self.config.in_channels
        if self.config.learn_sigma:
            return out[:, :c], out[:, c:]
        return out, None


# Format version 5's integer networks: how the float weights become integers (models/intnet.py).  Part of
# the format: changing one changes every version-5 file's model identity.
UNET_INT_SPEC = IntSpec()  # 8-bit activations and weights: +0.2% lossless (bench/results/intnet_cost.json)
CONTEXT_INT_SPEC = IntSpec(weight_max=1023)  # the context networks lose ~5% with 8-bit weights, ~0.1% with 11-bit


class IntegerModel:
    """A :class:`DiffusionModel` computed with integer networks and an exact schedule (format version 5).

    It stands in for the float model wherever the codec calls one: the same attributes, the same call.
    """

    def __init__(self, model: "DiffusionModel"):
        self.float_model = model
        self.net = IntUNet(model.net, UNET_INT_SPEC)
        self.context = IntContextNet(model.context, CONTEXT_INT_SPEC) if model.context is not None else None
        self.coarse = IntContextNet(model.coarse, CONTEXT_INT_SPEC) if model.coarse is not None else None
        self.schedule = model.schedule
        self.variance = model.variance
        self.diffusion = GaussianDiffusion.from_config(model.schedule, exact=True)
        self.meta = model.meta

    @property
    def config(self) -> UNetConfig:
        return self.net.config

    @property
    def device(self) -> torch.device:
        """Where the integer networks run (the CPU unless moved with :meth:`to`)."""
        return self.net.device

    def to(self, device: torch.device | str | None = None, conv: str | None = None) -> "IntegerModel":
        """Run the integer networks on ``device`` (default: the CPU), in place; returns self.

        Every device gives the same bits (``IntUNet.to``); outputs come back on that device, and the codec moves
        them to the CPU where its coders need them.  The encoder's planning networks (``float_model``) stay on
        the CPU: their estimates choose where the chain stops, so a file does not depend on the device either.
        """
        for net in (self.net, self.context, self.coarse):
            if net is not None:
                net.to(device, conv)
        return self

    def _identity(self, float_identity: bytes) -> bytes:
        h = hashlib.sha256(b"diffcodec integer networks 1")
        h.update(json.dumps({"unet": UNET_INT_SPEC.to_dict(), "context": CONTEXT_INT_SPEC.to_dict()}, sort_keys=True).encode())
        h.update(float_identity)
        return h.digest()

    @property
    def codec_identity(self) -> bytes:
        """The model id of version-5 files: the float model's codec identity and how it is made integer."""
        return self._identity(self.float_model.codec_identity)

    @property
    def coarse_identity(self) -> bytes:
        return self._identity(self.float_model.coarse_identity)

    def integer(self) -> "IntegerModel":
        return self

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ε(x_t, t) and the variance output, as :meth:`DiffusionModel.__call__`, the same bits on every machine."""
        out = self.net(x_t.float(), t)
        c = self.config.in_channels
        if self.config.learn_sigma:
            return out[:, :c], out[:, c:]
        return out, None


def _hash_network(h, net: ContextNet) -> None:
    h.update(json.dumps(net.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().numpy().tobytes())


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write atomically (temporary file, then rename) so a killed job never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def export_weights(training_checkpoint: dict, half: bool = True) -> dict:
    """The shippable part of a training checkpoint: configs and EMA weights (fp16 if ``half``)."""
    ema = {k: (v.half() if half and v.is_floating_point() else v) for k, v in training_checkpoint["ema"].items()}
    keep = ("format", "unet", "schedule", "variance", "step", "images_seen", "data", "objective", "context", "coarse_context")
    out = {k: training_checkpoint[k] for k in keep if k in training_checkpoint}
    out["ema"] = ema
    return out


def load_model(path: str | os.PathLike | None = None) -> DiffusionModel:
    """Load a checkpoint (the shipped default when ``path`` is None) for inference.

    A directory is read as a diffusers UNet2DModel (config.json and weights), see :mod:`.convert`.
    """
    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    if not path.exists():
        if path == DEFAULT_MODEL_PATH:
            raise CheckpointError(f"no default model at {path}; pass --model or train one with `diffcodec train`")
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir():
        from .convert import is_diffusers_directory, load_diffusers_ddpm

        if is_diffusers_directory(path):  # published DDPM weights in diffusers' layout
            return load_diffusers_ddpm(path)
        raise CheckpointError(f"{path} is a directory without config.json, expected a diffcodec checkpoint or a diffusers model")
    try:
        with open(path, "rb") as f:
            data = f.read()
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files
        raise CheckpointError(f"{path} is not a diffcodec checkpoint ({type(exc).__name__})") from None
    return model_from_checkpoint(ckpt, source=str(path))


def model_from_checkpoint(ckpt: dict, source: str = "<checkpoint>") -> DiffusionModel:
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not a diffcodec checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None!r})")
    missing = [k for k in ("unet", "schedule", "variance", "ema") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)}")
    net = UNet(UNetConfig.from_dict(ckpt["unet"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["ema"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: weights do not match its config ({str(exc).splitlines()[0]})") from None
    meta = {k: ckpt[k] for k in ("step", "images_seen", "data", "objective") if k in ckpt}
    nets = {}
    for key in ("context", "coarse_context"):
        if key not in ckpt:
            continue
        nets[key] = ContextNet(ContextNetConfig.from_dict(ckpt[key]["config"]))
        try:
            nets[key].load_state_dict({k: v.float() for k, v in ckpt[key]["weights"].items()})
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: {key} network weights do not match its config ({str(exc).splitlines()[0]})") from None
        meta[key] = {k: v for k, v in ckpt[key].items() if k != "weights"}
    coarse = nets.get("coarse_context")
    if coarse is not None and not coarse.config.bin_width:
        raise CheckpointError(f"{source}: its coarse_context network has no bin width")
    return DiffusionModel(net, ScheduleConfig.from_dict(ckpt["schedule"]), VarianceKind(ckpt["variance"]), meta,
                          nets.get("context"), coarse)


def context_entry(net: ContextNet, **info) -> dict:
    """The checkpoint entry for a context network (fp32 weights: it is small) plus how it was trained."""
    return {"config": net.config.to_dict(), "weights": {k: v.detach().clone() for k, v in net.state_dict().items()}, **info}
