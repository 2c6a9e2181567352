"""``diffcodec train``: train p_θ on lossless images (single process or torchrun)."""

from __future__ import annotations

import json
import sys
import time

import click

from .options import debug_option


@click.command("train")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Checkpoint file (resumed if it exists).")
@click.option("--steps", "max_steps", type=int, default=None, help="Stop after this many optimiser steps in total.")
@click.option("--minutes", type=float, default=None, help="Stop after this many minutes of this run.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True)
@click.option("--objective", type=click.Choice(["simple", "hybrid", "vlb"]), default="hybrid", show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "linear"]), default="cosine", show_default=True)
@click.option("--channels", type=int, default=48, show_default=True, help="Base width of the U-Net.")
@click.option("--channel-mult", default="1,2,3", show_default=True, help="Width multiplier per resolution level.")
@click.option("--res-blocks", type=int, default=1, show_default=True)
@click.option("--attention", default="8", show_default=True, help="Resolutions with self-attention (comma separated).")
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option("--fixed-variance", is_flag=True, help="Fixed Σ = β̃ instead of learned variances.")
@click.option("--no-fourier", is_flag=True, help="Disable Fourier-feature inputs.")
@click.option("--photo-fraction", type=float, default=0.25, show_default=True, help="Share of each batch cropped from photo folders.")
@click.option("--coarse", "coarse", multiple=True, type=click.Path(exists=True),
              help="Lossy 32×32 images (e.g. the CIFAR-10 JPEG tarball) used only at high noise; repeatable.")
@click.option("--coarse-min-t", type=int, default=100, show_default=True, help="Lowest timestep that may use --coarse images.")
@click.option("--coarse-fraction", type=float, default=0.5, show_default=True,
              help="Share of images at t ≥ --coarse-min-t drawn from --coarse.")
@click.option("--bf16/--fp32", default=True, show_default=True, help="bf16 autocast on CPU.")
@click.option("--checkpoint-minutes", type=float, default=10.0, show_default=True)
@click.option("--eval-dir", type=click.Path(exists=True, file_okay=False), default=None, help="Held-out PNGs to score at each checkpoint.")
@click.option("--eval-limit", type=int, default=64, show_default=True)
@click.option("--holdout", default=None, metavar="N|FRACTION[,...]",
              help="Hold out the LAST N images (or this fraction) of every .npy source, or one value per .npy file "
                   "in order (e.g. 500,300), never train on them, and score the first --val-limit of each at every "
                   "checkpoint (validation bits/dim, logged and stored in the run file). A resumed run keeps its "
                   "saved holdout.")
@click.option("--val-limit", type=click.IntRange(1), default=64, show_default=True,
              help="Validation images per held-out set (the first of its range; fixed noise seed).")
@click.option("--val-steps", type=click.IntRange(2), default=100, show_default=True,
              help="Uniform steps of the validation negative ELBO.")
@click.option("--threads", type=click.IntRange(1), default=None, show_default="torch's default",
              help="Torch threads (1 leaves the other cores free).")
@click.option("--export", type=click.Path(dir_okay=False), default=None, help="Also write the fp16 EMA weights here at each checkpoint.")
@click.option("--seed", type=int, default=0, show_default=True)
@debug_option
def train(data, out, max_steps, minutes, batch_size, lr, objective, schedule, channels, channel_mult, res_blocks, attention,
          dropout, fixed_variance, no_fourier, photo_fraction, coarse, coarse_min_t, coarse_fraction, bf16, checkpoint_minutes,
          eval_dir, eval_limit, holdout, val_limit, val_steps, threads, export, seed):
    """Train the reverse process p_θ on DATA (.npy arrays, image folders, CIFAR tarballs).

    Folders of 32×32 images are used whole; folders of larger photos are cropped at several scales.

    \b
    Examples:
      diffcodec train ../shared/data/cifar10-train-lossless-4000.npy ../shared/data/photos-train -o run.pt --minutes 120
      diffcodec train cifar10-train-lossless-4000.npy flowers32-lossless-3000.npy -o run.pt --holdout 500,300 --threads 1
      torchrun --nproc_per_node 2 -m diffcodec.cli.main train data.npy -o run.pt --steps 1000
    """
    from diffcodec.diffusion import ScheduleConfig, ScheduleKind
    from diffcodec.models.checkpoint import export_weights, model_from_checkpoint, save_checkpoint
    from diffcodec.models.data import TrainingSet, parse_holdout
    from diffcodec.models.train import Objective, TrainConfig, Trainer, init_distributed, saved_holdout
    from diffcodec.models.unet import UNetConfig

    if threads:
        import torch

        torch.set_num_threads(threads)
    init_distributed()
    unet = UNetConfig(
        base_channels=channels,
        channel_mult=tuple(int(v) for v in channel_mult.split(",")),
        num_res_blocks=res_blocks,
        attention_resolutions=tuple(int(v) for v in attention.split(",") if v),
        dropout=dropout,
        learn_sigma=not fixed_variance,
        fourier_features=() if no_fourier else (7, 8),
    )
    config = TrainConfig(batch_size=batch_size, lr=lr, objective=Objective(objective), bf16=bf16,
                         checkpoint_minutes=checkpoint_minutes, seed=seed, photo_fraction=photo_fraction,
                         val_limit=val_limit, val_steps=val_steps)
    try:
        holdout_values = parse_holdout(holdout)
        if holdout_values is None:  # a resumed run keeps the holdout it was started with
            holdout_values = saved_holdout(out, list(data))
        data_set = TrainingSet(list(data), photo_fraction=photo_fraction, coarse_sources=list(coarse),
                               coarse_min_t=coarse_min_t, coarse_fraction=coarse_fraction, holdout=holdout_values)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        trainer = Trainer(data_set, out, unet, ScheduleConfig(ScheduleKind(schedule)), config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if trainer.rank == 0:
        n = sum(p.numel() for p in trainer.net.parameters())
        click.echo(f"{n / 1e6:.2f}M parameters, resuming at step {trainer.step}" if trainer.step else f"{n / 1e6:.2f}M parameters")
        for h in data_set.holdout:
            click.echo(f"holdout: {h['file']} images {h['held_out'][0]}-{h['held_out'][1] - 1} never trained on "
                       f"(validation: the first {min(val_limit, h['held_out'][1] - h['held_out'][0])} of them)"
                       + (f"; the run file's steps before {trainer.holdout_started} did not hold them out"
                          if trainer.holdout_started else ""), err=True)

    def log_validation(tr: Trainer) -> None:
        if tr.val_history and tr.val_history[-1]["step"] == tr.step:
            v = tr.val_history[-1]
            click.echo(json.dumps({"step": v["step"], "images_seen": v["images_seen"],
                                   **{f"val_bpd[{k}]": r["bpd"] for k, r in v.items() if isinstance(r, dict)},
                                   "time": v["time"][-8:]}), err=True)

    eval_images = None
    if eval_dir and trainer.rank == 0:
        from diffcodec.images import load_folder_tiles

        eval_images = load_folder_tiles(eval_dir, limit=eval_limit)

    def on_checkpoint(tr: Trainer) -> None:
        log_validation(tr)
        ckpt = tr.checkpoint()
        if export:
            save_checkpoint(export, export_weights(ckpt))
        if eval_images is not None:
            from diffcodec.evaluate import dataset_bpd

            model = model_from_checkpoint(export_weights(ckpt, half=False))
            bpd = dataset_bpd(model, eval_images, steps=100, batch_size=64)
            click.echo(json.dumps({"step": tr.step, "images_seen": tr.images_seen, "eval_bpd_s100": round(bpd["bpd"], 4),
                                   "time": time.strftime("%H:%M:%S")}), err=True)

    start, seen0 = time.monotonic(), trainer.images_seen
    # A live bar when a person watches a bounded run; plain log lines otherwise (nohup, CI, torchrun).
    bar = None
    if trainer.rank == 0 and max_steps is not None and sys.stderr.isatty():
        bar = click.progressbar(length=max(max_steps - trainer.step, 0), label="training", file=sys.stderr,
                                item_show_func=lambda s: s)

    def on_step(step: int, stats: dict) -> None:
        if trainer.rank != 0:
            return
        rate = (trainer.images_seen - seen0) / max(time.monotonic() - start, 1e-9)
        if bar is not None:
            bar.update(1, f"loss {stats['loss']:.4f} {rate:.0f} img/s")
        elif step % 20 == 0:
            parts = " ".join(f"{k}={v:.4f}" for k, v in stats.items())
            click.echo(f"step {step} {parts} {rate:.1f} img/s", err=True)

    if bar is not None:
        with bar:
            trainer.run(max_steps=max_steps, max_minutes=minutes, on_step=on_step, on_checkpoint=on_checkpoint)
    else:
        trainer.run(max_steps=max_steps, max_minutes=minutes, on_step=on_step, on_checkpoint=on_checkpoint)
    if trainer.rank == 0:
        log_validation(trainer)
        if export:
            save_checkpoint(export, export_weights(trainer.checkpoint()))
        click.echo(f"saved {out} at step {trainer.step}")

