"""``diffcodec nll``: the model's negative ELBO (bits/dim) on a folder of 32×32 RGB images."""

from __future__ import annotations

import click

from . import common
from .options import debug_option, json_option, limit_option, model_option


@click.command("nll", short_help="Negative ELBO (bits/dim) of the model on a folder of 32×32 RGB images.")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1, 4000), default=100, show_default=True,
              help="Respaced diffusion steps of the bound (the model's T gives the full bound).")
@limit_option
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per network call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the x_t samples of the estimate.")
@click.option("--threads", type=click.IntRange(1), default=None, show_default="torch's default",
              help="Torch threads (1 is much faster while another job keeps the cores busy).")
@click.option("--per-step", is_flag=True, help="With --json, also list each step's L_{t−1} and the timesteps.")
@model_option
@json_option
@debug_option
def command(folder, steps, limit, batch_size, seed, threads, per_step, model_path, as_json):
    """Negative ELBO (Ho et al. 2020, Eq. 5) in bits/dim over the 32×32 RGB images in FOLDER.

    Reports the total and its terms: L_T (prior), Σ L_{t−1} (the steps) and L_0 (the
    discretized decoder). This is an estimate: each x_t is sampled once per image.

    \b
    Examples:
      diffcodec nll ../shared/data/cifar10-test-png --limit 100
      diffcodec nll cifar-test/ --steps 1000 --json --model run.pt
    """
    import contextlib

    from diffcodec.codec import torch_threads
    from diffcodec.evaluate import dataset_bpd
    from diffcodec.images import load_folder_tiles

    images = load_folder_tiles(folder, limit=limit)
    model = common.load_model(model_path)
    common.check_steps(steps, model)
    threads_ctx = torch_threads(threads) if threads else contextlib.nullcontext()
    with threads_ctx, common.progress(len(images), "images") as update:
        result = dataset_bpd(model, images, steps=steps, batch_size=batch_size, seed=seed, on_batch=update)

    if as_json:
        keys = ["bpd", "prior", "steps", "decoder", "images", "num_steps"] + (["per_step", "timesteps"] if per_step else [])
        common.echo_json({k: result[k] for k in keys})
        return
    n = result["images"]
    click.echo(f"{folder}: {n} image{'s' if n != 1 else ''}, {result['num_steps']} steps")
    click.echo(f"  L_T      (prior)    {result['prior']:.4f} bits/dim")
    click.echo(f"  ΣL_t−1   (steps)    {result['steps']:.4f} bits/dim")
    click.echo(f"  L_0      (decoder)  {result['decoder']:.4f} bits/dim")
    click.echo(f"  total    −ELBO      {result['bpd']:.4f} bits/dim")
