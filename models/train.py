"""Training p_θ: L_simple, L_hybrid or L_vlb, EMA weights, resumable checkpoints, DDP.

Run as ``diffcodec train DATA... --out CKPT`` or under ``torchrun --nproc_per_node N``
(DistributedDataParallel: gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import copy
import enum
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from diffcodec.diffusion import GaussianDiffusion, ScheduleConfig, VarianceKind
from diffcodec.likelihood import images_to_model_space, vb_terms_bpd

from .checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from .data import TrainingSet
from .unet import UNet, UNetConfig


class Objective(str, enum.Enum):
    SIMPLE = "simple"  # ‖ε − ε_θ‖² (Ho et al. 2020 Eq. 14)
    HYBRID = "hybrid"  # L_simple + λ L_vlb, λ = 0.001 (Nichol & Dhariwal 2021 Eq. 16)
    VLB = "vlb"  # L_vlb with importance-sampled t (Nichol & Dhariwal 2021 Eq. 18)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64
    lr: float = 2e-4
    ema_decay: float = 0.999
    objective: Objective = Objective.HYBRID
    bf16: bool = True
    grad_clip: float = 1.0
    checkpoint_minutes: float = 10.0
    seed: int = 0
    photo_fraction: float = 0.25
    val_limit: int = 64  # validation images scored per held-out set (the first of its range)
    val_steps: int = 100  # uniform steps of the negative ELBO on them (noise seed val_seed)
    val_seed: int = 0


class ImportanceSampler:
    """Samples t ∝ √E[L_t²], from a history of 10 losses per step (Nichol & Dhariwal 2021 Eq. 18)."""

    def __init__(self, num_steps: int, history: int = 10):
        self.history = np.zeros((num_steps, history))
        self.count = np.zeros(num_steps, dtype=int)

    def weights(self) -> np.ndarray:
        if (self.count < self.history.shape[1]).any():
            return np.ones(len(self.count)) / len(self.count)
        w = np.sqrt((self.history**2).mean(axis=1))
        w = w / w.sum()
        return 0.999 * w + 0.001 / len(w)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights()
        t = rng.choice(len(w), size=n, p=w)
        return t, 1.0 / (len(w) * w[t])

    def update(self, t: np.ndarray, losses: np.ndarray) -> None:
        for ti, li in zip(t, losses):
            k = self.count[ti] % self.history.shape[1]
            self.history[ti, k] = li
            self.count[ti] += 1


def training_losses(
    net: torch.nn.Module,
    diffusion: GaussianDiffusion,
    config: UNetConfig,
    objective: Objective,
    x_start: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-image losses.  For learned variances the VLB term sees a frozen mean (Nichol & Dhariwal 2021 §3.1)."""
    x_t = diffusion.q_sample(x_start, t, noise)
    out = net(x_t, t).float()
    c = config.in_channels
    eps, var_out = (out[:, :c], out[:, c:]) if config.learn_sigma else (out, None)
    variance = VarianceKind.LEARNED_RANGE if config.learn_sigma else VarianceKind.FIXED_SMALL
    terms = {"mse": ((eps - noise) ** 2).mean(dim=(1, 2, 3))}
    if objective is not Objective.SIMPLE and config.learn_sigma:
        frozen = eps.detach() if objective is Objective.HYBRID else eps
        vb = vb_terms_bpd(diffusion, frozen, var_out, variance, x_start, x_t, t)
        # Scale so the VLB term is the sum over T steps (per-step term × T); hybrid's λ = 1/1000.
        terms["vb"] = vb * diffusion.num_steps / (1000.0 if objective is Objective.HYBRID else 1.0)
    if objective is Objective.VLB:
        terms["loss"] = terms["vb"]
    else:
        terms["loss"] = terms["mse"] + terms.get("vb", 0.0)
    return terms


class Trainer:
    """Owns the network, its EMA, the optimiser and the checkpoint file."""

    def __init__(
        self,
        data: TrainingSet,
        out: str | Path,
        unet: UNetConfig = UNetConfig(),
        schedule: ScheduleConfig = ScheduleConfig(),
        config: TrainConfig = TrainConfig(),
    ):
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.data, self.out, self.config = data, Path(out), config
        self.unet_config, self.schedule = unet, schedule
        self.diffusion = GaussianDiffusion.from_config(schedule)
        torch.manual_seed(config.seed)
        self.net = UNet(unet)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=config.lr, weight_decay=0.0)
        self.step = 0
        self.images_seen = 0
        self.sampler = ImportanceSampler(schedule.num_steps) if config.objective is Objective.VLB else None
        self.val_history: list[dict] = []  # one entry per validation (at checkpoints), kept across resumes
        self.holdout_started: int | None = 0 if data.holdout else None  # step from which the holdout was kept out
        if self.out.exists():
            self._resume()
        # Each rank draws its own batches; seeds differ by rank and by resume point.
        self.rng = np.random.default_rng([config.seed, self.rank, self.step])
        self.ddp = DistributedDataParallel(self.net) if self.world > 1 else None

    def _resume(self) -> None:
        ckpt = torch.load(self.out, map_location="cpu", weights_only=False)
        if UNetConfig.from_dict(ckpt["unet"]) != self.unet_config or ScheduleConfig.from_dict(ckpt["schedule"]) != self.schedule:
            raise ValueError(f"{self.out} was trained with another network or schedule; use a new --out")
        self.net.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        if "optimizer" in ckpt:  # a compact state (models/train-state.pt) restarts Adam's moments
            self.opt.load_state_dict(ckpt["optimizer"])
            for group in self.opt.param_groups:  # the learning rate asked for now, not the saved one
                group["lr"] = self.config.lr
        self.step, self.images_seen = ckpt["step"], ckpt.get("images_seen", 0)
        saved = ckpt.get("data", {}).get("holdout")
        if saved is not None and saved != self.data.holdout:
            raise ValueError(f"{self.out} held out {saved}, this command {self.data.holdout or 'nothing'}: "
                             "a resumed run must keep its holdout (drop --holdout to reuse the saved one)")
        self.val_history = list(ckpt.get("validation", {}).get("history", []))
        # A run file without a holdout (e.g. models/train-state.pt) has seen every image before this step.
        self.holdout_started = ckpt.get("validation", {}).get("holdout_since_step", self.step) if self.data.holdout else None
        if self.sampler is not None and "sampler" in ckpt:
            self.sampler.history, self.sampler.count = ckpt["sampler"]

    def checkpoint(self) -> dict:
        variance = VarianceKind.LEARNED_RANGE if self.unet_config.learn_sigma else VarianceKind.FIXED_SMALL
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "unet": self.unet_config.to_dict(),
            "schedule": self.schedule.to_dict(),
            "variance": variance.value,
            "objective": self.config.objective.value,
            "train_config": {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in asdict(self.config).items()},
            "data": self.data.describe(),
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "images_seen": self.images_seen,
        }
        if self.sampler is not None:
            ckpt["sampler"] = (self.sampler.history, self.sampler.count)
        if self.data.holdout:
            ckpt["validation"] = {
                "sets": {h["name"]: {"file": h["file"], "indices": [h["held_out"][0], h["held_out"][0] + min(
                    self.config.val_limit, h["held_out"][1] - h["held_out"][0])]} for h in self.data.holdout},
                "steps": self.config.val_steps, "seed": self.config.val_seed, "spacing": "uniform", "weights": "ema fp32",
                "holdout_since_step": self.holdout_started,
                "history": self.val_history,
                **({"last": self.val_history[-1]} if self.val_history else {}),
            }
        return ckpt

    def validation_images(self) -> dict[str, np.ndarray]:
        """The fixed validation subsets: the first ``val_limit`` images of each held-out range."""
        return {name: arr[: self.config.val_limit] for name, arr in self.data.validation.items()}

    def validate(self) -> dict:
        """Negative ELBO (bits/dim) of the EMA weights on each validation subset; appended to ``val_history``."""
        from diffcodec.evaluate import dataset_bpd

        from .checkpoint import export_weights, model_from_checkpoint

        model = model_from_checkpoint(export_weights(self.checkpoint(), half=False))
        entry: dict = {"step": self.step, "images_seen": self.images_seen}
        for name, images in self.validation_images().items():
            r = dataset_bpd(model, images, steps=self.config.val_steps, batch_size=64, seed=self.config.val_seed)
            entry[name] = {k: round(float(r[k]), 4) for k in ("bpd", "prior", "steps", "decoder")}
        entry["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if not self.val_history or self.val_history[-1]["step"] != self.step:
            self.val_history.append(entry)
        return entry

    def save(self, validate: bool = True) -> None:
        """Write the run file; with a holdout, score the validation subsets first (their figures go in it)."""
        if self.rank == 0:
            if validate and self.data.validation and (not self.val_history or self.val_history[-1]["step"] != self.step):
                self.validate()
            save_checkpoint(self.out, self.checkpoint())

    def train_step(self) -> dict[str, float]:
        cfg = self.config
        if self.sampler is not None:
            t_np, w_np = self.sampler.sample(cfg.batch_size, self.rng)
        else:
            t_np, w_np = self.rng.integers(self.schedule.num_steps, size=cfg.batch_size), np.ones(cfg.batch_size)
        x = images_to_model_space(self.data.batch(cfg.batch_size, self.rng, t=t_np))
        t = torch.from_numpy(t_np)
        noise = torch.from_numpy(self.rng.standard_normal(x.shape, dtype=np.float32))
        net = self.ddp or self.net
        self.net.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            terms = training_losses(net, self.diffusion, self.unet_config, cfg.objective, x, t, noise)
        loss = (terms["loss"] * torch.from_numpy(w_np).float()).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.opt.step()
        # EMA with warm-up, so that early checkpoints are not dominated by the initial weights.
        decay = min(cfg.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.net.parameters()):
                e.lerp_(p, 1.0 - decay)
        if self.sampler is not None:
            self.sampler.update(t_np, terms["vb"].detach().numpy())
        self.step += 1
        self.images_seen += cfg.batch_size * self.world
        return {k: float(v.detach().mean()) for k, v in terms.items()}

    def run(
        self,
        max_steps: int | None = None,
        max_minutes: float | None = None,
        on_step: Callable[[int, dict], None] | None = None,
        on_checkpoint: Callable[["Trainer"], None] | None = None,
    ) -> None:
        start = last_save = time.monotonic()
        while True:
            if max_steps is not None and self.step >= max_steps:
                break
            if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
                break
            stats = self.train_step()
            if not all(math.isfinite(v) for v in stats.values()):
                raise FloatingPointError(f"non-finite loss at step {self.step}: {stats}")
            if on_step is not None:
                on_step(self.step, stats)
            if time.monotonic() - last_save > 60 * self.config.checkpoint_minutes:
                self.save()
                last_save = time.monotonic()
                if on_checkpoint is not None and self.rank == 0:
                    on_checkpoint(self)
        self.save()
        if dist.is_initialized():
            dist.barrier()  # no rank leaves before rank 0 has written the final checkpoint


def saved_holdout(out: str | Path, sources: list[str]) -> list[float] | None:
    """The holdout counts a run file at ``out`` was started with, in the order of today's .npy ``sources``."""
    out = Path(out)
    if not out.exists():
        return None
    held = torch.load(out, map_location="cpu", weights_only=False).get("data", {}).get("holdout")
    if not held:
        return None
    counts = {h["file"]: h["held_out"][1] - h["held_out"][0] for h in held}
    return [float(counts.get(Path(s).name, 0)) for s in sources if Path(s).suffix == ".npy"]


def init_distributed() -> bool:
    """Join a torchrun process group if launched by torchrun (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True
