"""``diffcodec nll``: the model's negative ELBO (bits/dim) on a folder of images, tiled as the codec tiles them."""

from __future__ import annotations

import click

from . import common
from .options import debug_option, json_option, limit_option, model_option


@click.command("nll", short_help="Negative ELBO (bits/dim) of the model on a folder of images (any size).")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1, 4000), default=100, show_default=True,
              help="Respaced diffusion steps of the bound (the model's T gives the full bound).")
@limit_option
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True, help="Images per network call.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the x_t samples of the estimate.")
@click.option("--spacing", type=click.Choice(["uniform", "quad"]), default="uniform", show_default=True,
              help="How the steps spread over t (the codec's default is 50 steps, quad).")
@click.option("--threads", type=click.IntRange(1), default=None, show_default="torch's default",
              help="Torch threads (1 is much faster while another job keeps the cores busy).")
@click.option("--per-step", is_flag=True, help="With --json, also list each step's L_{t−1} and the timesteps.")
@click.option("--per-image", is_flag=True, help="Also give each image's bound in bits and bytes (to compare with its .dfc file).")
@model_option
@json_option
@debug_option
def command(folder, steps, limit, batch_size, seed, spacing, threads, per_step, per_image, model_path, as_json):
    """Negative ELBO (Ho et al. 2020, Eq. 5) in bits/dim over the images in FOLDER.

    Reports the total and its terms: L_T (prior), Σ L_{t−1} (the steps) and L_0 (the
    discretized decoder). This is an estimate: each x_t is sampled once per image. Images of
    any size are cut into 32×32 tiles as the codec cuts them (grey and alpha planes as
    replicated tiles), and only real pixels count, not the padding: for RGB images the
    figure is per subpixel, like the bits/dim of a .dfc file of the same image.

    \b
    Examples:
      diffcodec nll ../shared/data/cifar10-test-png --limit 100
      diffcodec nll cifar-test/ --steps 1000 --json --model run.pt
      diffcodec nll my-photos/ --steps 50 --spacing quad --per-image   # compare with each file's size
    """
    import contextlib

    from diffcodec.codec import torch_threads
    from diffcodec.evaluate import tiled_bpd
    from diffcodec.images import list_images
    from diffcodec.tiling import TileLayout

    files = list_images(folder)[:limit]
    images = []
    for path in files:
        img = common.load_image(path)
        images.append((img.pixels, img.mode))
    model = common.load_model(model_path)
    common.check_steps(steps, model)
    tiles = sum(TileLayout(p.shape[0], p.shape[1], m).num_tiles for p, m in images)
    threads_ctx = torch_threads(threads) if threads else contextlib.nullcontext()
    # One update per step of each batch of tiles: a batch of 64 tiles at 100 steps takes about a minute.
    with threads_ctx, common.progress(tiles * steps, f"{tiles} tiles × {steps} steps") as update:
        result = tiled_bpd(model, images, steps=steps, batch_size=batch_size, seed=seed, spacing=spacing, on_step=update)
    rows = [{"name": p.name, "bits": b, "bytes": b / 8, "bpd": d}
            for p, b, d in zip(files, result["image_bits"], result["image_bpd"])]

    if as_json:
        keys = (["bpd", "prior", "steps", "decoder", "images", "tiles", "num_steps"]
                + (["per_step", "timesteps"] if per_step else []))
        out = {k: result[k] for k in keys}
        if per_image:
            out["per_image"] = rows
        common.echo_json(out)
        return
    n = result["images"]
    click.echo(f"{folder}: {n} image{'s' if n != 1 else ''} ({result['tiles']} tiles of 32×32), {result['num_steps']} steps")
    click.echo(f"  L_T      (prior)    {result['prior']:.4f} bits/dim")
    click.echo(f"  ΣL_t−1   (steps)    {result['steps']:.4f} bits/dim")
    click.echo(f"  L_0      (decoder)  {result['decoder']:.4f} bits/dim")
    click.echo(f"  total    −ELBO      {result['bpd']:.4f} bits/dim")
    if per_image:
        click.echo(f"  {'image':<32} {'bound bytes':>12} {'bits/dim':>9}")
        for r in rows:
            click.echo(f"  {r['name']:<32} {r['bytes']:>12.1f} {r['bpd']:>9.4f}")
