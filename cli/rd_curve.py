"""``diffcodec rd-curve``: the rate-distortion curve of a set of images, one encoding per image."""

from __future__ import annotations

import click

from . import common
from .options import codec_options, debug_option, json_option, limit_option, model_option, steps_option


@click.command("rd-curve")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Write the curve here (columns t, rate_bpd, rmse, psnr, kl_bpd, partial); with --baselines also <stem>-baselines.csv.")
@click.option("-o", "--output", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the three-panel plot here (PNG, PDF or SVG; needs matplotlib).")
@steps_option
@limit_option
@click.option("--baselines", is_flag=True, help="Also measure the classical codecs available here on the same images.")
@codec_options
@model_option
@common.device_option
@json_option
@debug_option
def command(folder, csv_path, plot_path, steps, limit, baselines, threads, search_threads, spacing, exact_from_t, exact_method,
            target_gain, chunk_bits, max_candidate_bits, model_path, device, as_json):
    """Encode every image in FOLDER once and report the set's rate and distortion at each coded step.

    Rate is bits/dim of the real streams cut after the step (with a truncation point there),
    summed over the images; distortion is the RMSE (0–255) over all their pixels of the mean
    reconstruction there. Images may have any size and mode. Each image's chain stops where its
    exact stage is cheapest; at a t below that, an image counts with its last coded state (what
    decode --stop-at-t --any-state gives). Step counts as everywhere (README, "Steps"). The plot
    follows Figure 5 of Ho et al. 2020: distortion and rate against reverse steps, and
    distortion against rate (with the classical codecs when --baselines is given).

    \b
    Examples:
      diffcodec rd-curve testset/ --csv rd.csv -o rd.png
      diffcodec rd-curve ../shared/data/cifar10-test-png --limit 50 --steps 100 --baselines --csv rd.csv -o rd.png
      diffcodec rd-curve testset/ --json --model run.pt
    """
    from diffcodec import rdcurve
    from diffcodec.codec import encode
    from diffcodec.images import list_images

    # Everything that can fail cheaply fails before the first encoding.
    for path, what in ((csv_path, "CSV"), (plot_path, "plot")):
        if path is not None:
            common.check_output(path, what)
    baselines_csv = rdcurve.baselines_csv_path(csv_path) if (baselines and csv_path) else None
    if baselines_csv is not None:
        common.check_output(baselines_csv, "baselines CSV")
    if plot_path is not None:
        rdcurve.require_matplotlib()
    files = list_images(folder)[:limit]
    model = common.load_model(model_path, device)
    common.check_steps(steps, model)
    config = common.codec_config(steps=steps, chunk_bits=chunk_bits, max_candidate_bits=max_candidate_bits,
                                 spacing=spacing, exact_from_t=exact_from_t, exact_method=exact_method, threads=threads,
                                 search_threads=search_threads, target_gain=target_gain)

    acc = rdcurve.RDAccumulator(schedule_steps=model.diffusion.num_steps, num_steps=config.steps)
    kept_images = []
    # One update per coded step of every image (a photo takes minutes), not one per image.
    with common.progress(len(files) * (config.steps + 1), f"encoding {len(files)} image{'s' if len(files) != 1 else ''}") as update:
        for path in files:
            img = common.load_image(path)
            result = encode(img.pixels, img.mode, model, config, on_step=update)
            acc.add(result.steps, result.num_dims)
            if baselines:
                kept_images.append(img.pixels)
    curve = acc.curve()

    baseline_rows = []
    if baselines:
        common.note(f"measuring the classical codecs on the same {len(kept_images)} image(s)…")
        baseline_rows = rdcurve.baseline_points(kept_images, on_skip=common.warn)
        if not baseline_rows:
            common.warn("no classical codec could code these images")
    if csv_path is not None:
        rdcurve.write_csv(curve, csv_path)
    if baselines_csv is not None:
        rdcurve.write_baselines_csv(baseline_rows, baselines_csv)
    if plot_path is not None:
        rdcurve.plot(curve, plot_path, baseline_rows)

    if as_json:
        out = curve.to_json()
        if baselines:
            out["baselines"] = [{k: r[k] for k in rdcurve.BASELINE_CSV_COLUMNS} for r in baseline_rows]
        common.echo_json(out)
        return
    lo, hi = curve.coded_per_image
    click.echo(f"{folder}: {curve.n_images} image{'s' if curve.n_images != 1 else ''}, {curve.n_subpixels} subpixels; "
               f"{lo if lo == hi else f'{lo}–{hi}'} of the chain's {curve.num_steps} steps coded per image, then the exact stage")
    click.echo(f"{'t':>8} {'bits/dim':>9} {'RMSE':>8} {'PSNR':>7} {'KL bits/dim':>12}")
    rows = common.sample_rows(len(curve.points))
    for i in rows:
        p = curve.points[i]
        click.echo(f"{common.point_label(p.t, p.partial):>8} {p.rate_bpd:>9.4f} {p.rmse:>8.3f} {common.fmt_psnr(p.psnr):>7} "
                   f"{p.kl_bpd:>12.4f}")
    partial = sum(p.partial is not None for p in curve.points)
    inside = f", {partial} inside the exact stage" if partial else ""
    what = f"{curve.coded_steps} distinct coded states over the images{inside}, the exact image"
    shown = f"{len(rows)} of {len(curve.points)} rows shown" if len(rows) < len(curve.points) else f"{len(rows)} rows"
    click.echo(f"({shown}: {what}; --csv or --json give them all)")
    if any(p.partial is not None for p in curve.points):
        click.echo(f"({common.PARTIAL_LEGEND})")
    if baseline_rows:
        click.echo(f"{'baseline':<20} {'bits/dim':>9} {'RMSE':>8} {'PSNR':>7}")
        for r in baseline_rows:
            click.echo(f"{r['codec']:<20} {r['rate_bpd']:>9.4f} {r['rmse']:>8.3f} {common.fmt_psnr(r['psnr']):>7}")
    for path in (csv_path, baselines_csv, plot_path):
        if path is not None:
            click.echo(f"wrote {path}")
