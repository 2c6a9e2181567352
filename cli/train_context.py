"""``diffcodec train-context``: fit the learned exact stage's context network to a trained model."""

from __future__ import annotations

import json

import click

from . import common
from .options import debug_option


@click.command("train-context")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--model", "model_path", type=click.Path(exists=True), default=None, help="Diffusion model checkpoint (default: the shipped one).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Write the model checkpoint with this context network added (may be --model itself).")
@click.option("--steps", type=click.IntRange(3), default=5000, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--crop", type=int, default=16, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak of the one-cycle schedule.")
@click.option("--width", type=int, default=48, show_default=True)
@click.option("--blocks", type=int, default=4, show_default=True)
@click.option("--draws-per-image", type=int, default=4, show_default=True, help="Noised states x_t per training image.")
@click.option("--photo-crops", type=int, default=1000, show_default=True, help="32×32 crops drawn from photo folders in DATA.")
@click.option("--eval-dir", type=click.Path(exists=True, file_okay=False), default=None, help="Held-out PNGs to score at the end.")
@click.option("--eval-limit", type=int, default=100, show_default=True)
@click.option("--bin-width", type=int, default=0, show_default=True,
              help="Train the coarse-to-fine network for bins of this many levels (16: docs/codec.md), starting "
                   "from the model's context network; 0 trains the six-stage one.")
@click.option("--resume", is_flag=True,
              help="Continue training the model's network of this kind (--bin-width picks which) instead of starting anew.")
@click.option("--seed", type=int, default=0, show_default=True)
@debug_option
def command(data, model_path, out, steps, batch_size, crop, lr, width, blocks, draws_per_image, photo_crops, eval_dir,
            eval_limit, bin_width, resume, seed):
    """Train the context network of the learned exact stage (format version 4) on DATA and add it to a model.

    DATA are lossless training images (.npy arrays, folders of 32×32 images or of photos, cropped).
    The diffusion model is not changed: files of versions 1–3 still decode with the result.

    \b
    Examples:
      diffcodec train-context ../shared/data/cifar10-train-lossless-4000.npy ../shared/data/photos-train \\
          --model models/default.pt -o models/default.pt --eval-dir ../shared/data/cifar10-test-png
      diffcodec train-context data.npy --model run-ema.pt -o with-context.pt --steps 2000
      diffcodec train-context ../shared/data/cifar10-train-lossless-4000.npy ../shared/data/photos-train \
          --model models/default.pt -o coarse.pt --bin-width 16 --steps 2500 --lr 5e-4
      diffcodec train-context ../shared/data/cifar10-train-lossless-4000.npy --model coarse.pt -o coarse2.pt \
          --bin-width 16 --resume --steps 1600 --lr 5e-4
    """
    import io
    from pathlib import Path

    import numpy as np
    import torch

    from diffcodec.images import load_folder_tiles
    from diffcodec.models.checkpoint import DEFAULT_MODEL_PATH, context_entry, load_model, save_checkpoint
    from diffcodec.models.context_net import ContextNet, ContextNetConfig, widened
    from diffcodec.models.data import TrainingSet
    from diffcodec.models.train_context import ContextTrainConfig, evaluate, make_pairs, train_context_net

    source = Path(model_path) if model_path else DEFAULT_MODEL_PATH
    if source.is_dir():
        raise click.ClickException("--model must be a diffcodec checkpoint file (the context network is added to it)")
    model = load_model(source)
    if bin_width and (bin_width < 2 or 256 % bin_width):
        raise click.BadParameter("must be a divisor of 256 above 1 (or 0)", param_hint="--bin-width")
    init = None
    previous: dict = {}
    if resume:
        init = model.coarse if bin_width else model.context
        kind = "coarse-to-fine" if bin_width else "context"
        if init is None:
            raise click.BadParameter(f"{source} has no {kind} network to continue", param_hint="--resume")
        if bin_width and init.config.bin_width != bin_width:
            raise click.BadParameter(f"the model's coarse-to-fine network has bin width {init.config.bin_width}",
                                     param_hint="--bin-width")
        entry = torch.load(io.BytesIO(source.read_bytes()), map_location="cpu", weights_only=True)
        previous = {k: v for k, v in entry["coarse_context" if bin_width else "context"].items() if k not in ("config", "weights")}
    elif bin_width:  # the coarse-to-fine network starts from the six-stage one, its bin inputs at zero weight
        base = model.context or ContextNet(ContextNetConfig(width=width, blocks=blocks))
        init = widened(base, bin_width)
    config = ContextTrainConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr, draws_per_image=draws_per_image, seed=seed)
    images = TrainingSet(list(data), photo_fraction=0.0)
    parts = [images.array]
    if images.photos is not None and photo_crops:
        parts.append(images.photos.sample(photo_crops, np.random.default_rng(seed)))
    array = np.concatenate(parts)
    with common.progress(len(array) * draws_per_image, "x̂_0 of the training states") as update:
        pairs = make_pairs(model, array, config, progress=update)
    recent: list[float] = []
    with common.progress(steps, "training") as update:

        def log(step: int, bits: float) -> None:
            recent.append(bits)
            update(1)
            if step % 500 == 0 or step == steps:  # a line for logs of long background runs
                click.echo(f"step {step}: {np.mean(recent[-500:]):.3f} bits/subpixel (training crops)", err=True)

        net_config = init.config if init is not None else ContextNetConfig(width=width, blocks=blocks)
        net = train_context_net(pairs, net_config, config, log=log, init=init)
    record = {"train": config.to_dict(), "images": int(len(array)), "photo_crops": int(len(array) - len(images.array)),
              "final_train_bits": float(np.mean(recent[-200:]))}
    if resume:  # keep the earlier runs' records: the network is the sum of them
        record["continued_from"] = previous
    if eval_dir:
        held = load_folder_tiles(eval_dir, limit=eval_limit)
        pairs = make_pairs(model, held, ContextTrainConfig(draws_per_image=2, seed=seed + 1))
        record["eval_bits"] = evaluate(net, pairs)
        record["eval_images"] = int(len(held))
    ckpt = torch.load(io.BytesIO(source.read_bytes()), map_location="cpu", weights_only=True)
    ckpt["coarse_context" if bin_width else "context"] = context_entry(net, **record)
    save_checkpoint(out, ckpt)
    click.echo(json.dumps(record))
