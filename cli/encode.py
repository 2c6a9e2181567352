"""``diffcodec encode``: code an image into a progressive .dfc file and report its rate-distortion steps."""

from __future__ import annotations

import click

from . import common
from .options import codec_options, debug_option, json_option, model_option, steps_option


@click.command("encode")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .dfc file to write.")
@steps_option
@click.option("--stop-at-t", type=click.IntRange(0), metavar="T", default=None,
              help="Write the file truncated at the nearest truncation point with t ≥ T (default: the whole, lossless file).")
@click.option("--points", type=click.IntRange(1), metavar="N", default=None,
              help="Advanced: number of truncation points in the file, spread over its size (default: a lossy point every 1.5× in t, "
                   "so that truncate --stop-at-t T reaches t < 1.5·T, plus about 1% of the payload in points where that is more; "
                   "x_T, the last lossy state and the exact image always have one).")
@codec_options
@model_option
@common.device_option
@json_option
@debug_option
def command(image, output, steps, stop_at_t, points, threads, search_threads, spacing, exact_from_t, exact_method,
            target_gain, chunk_bits, max_candidate_bits, model_path, device, as_json):
    """Encode IMAGE (PNG, JPEG, …; 8-bit L, RGB or RGBA, any size) into the .dfc file OUTPUT.

    Prints, for each truncation point of the file, the diffusion time t, the bits of the file
    cut there (what `truncate` writes), bits/dim, and the RMSE (0–255) and PSNR of the image a
    decoder shows there; --json lists every coded state. The whole file decodes to the exact
    image (t = 0).

    \b
    Examples:
      diffcodec encode photo.png -o photo.dfc
      diffcodec encode photo.png -o photo.dfc --steps 50 --json
      diffcodec encode photo.png -o preview.dfc --stop-at-t 500 --model run.pt
      diffcodec encode photo.png -o photo.dfc --device cuda   # the same file, networks on the GPU
    """
    from diffcodec.codec import encode
    from diffcodec.container import describe, encode_file, truncate

    common.check_output(output)
    img = common.load_image(image)
    model = common.load_model(model_path, device)
    common.check_steps(steps, model)
    common.check_stop_at_t(stop_at_t, model.diffusion.num_steps)
    config = common.codec_config(steps=steps, chunk_bits=chunk_bits, max_candidate_bits=max_candidate_bits,
                                 spacing=spacing, exact_from_t=exact_from_t, exact_method=exact_method,
                                 target_gain=target_gain,
                                 threads=threads, search_threads=search_threads, points=points)
    h, w = img.pixels.shape[:2]
    common.announce_time(model, h, w, img.mode, config.steps, "encoding", device=device, threads=config.threads)
    with common.progress(config.steps + 1, "encoding") as update:
        result = encode(img.pixels, img.mode, model, config, on_step=update)

    dfc = result.file
    data = result.data
    timeline = dfc.header.timeline
    if stop_at_t is not None:
        dfc = truncate(dfc, timeline.position_at_or_above(stop_at_t))
        data = encode_file(dfc)
    common.write_bytes(output, data)
    t_reached = timeline.paper_t(dfc.points[-1].t)
    n = result.num_dims

    if as_json:
        out = result.to_json()
        out["file"] = {"path": str(output), "bits": 8 * len(data), "bpd": 8 * len(data) / n, "t": t_reached,
                       "complete": dfc.complete, "points": [p["t"] for p in describe(dfc)["points"]],
                       "partial_points": sum(p.partial for p in dfc.points)}
        common.echo_json(out)
        return

    click.echo(f"{image}: {w}×{h} {img.mode}, {n} subpixels; {common.steps_summary(result.coded_steps, result.num_steps, result.lossy_steps[0].t, result.lossy_steps[-1].t)}")
    click.echo(f"{'t':>8} {'bits':>10} {'bits/dim':>9} {'RMSE':>8} {'PSNR':>7}")
    # The file's truncation points: what truncate and decode --stop-at-t can stop at (info lists the same).
    points = [i for i, s in enumerate(result.steps) if s.point]
    rows = [points[i] for i in common.sample_rows(len(points), keep=16)]
    for i in rows:
        s = result.steps[i]
        click.echo(f"{common.point_label(s.t, s.partial):>8} {s.bits:>10} {s.bits / n:>9.4f} {s.rmse:>8.3f} "
                   f"{common.fmt_psnr(common.psnr(s.rmse)):>7}")
    shown = "the file's truncation points" if len(rows) == len(points) else f"{len(rows)} of the file's {len(points)} truncation points"
    click.echo(f"({shown}; --json lists all {len(result.steps)} rows: {common.rows_summary(result.coded_steps, len(result.partial_steps))})")
    if result.partial_steps:
        click.echo(f"({common.COARSE_LEGEND if result.exact_method == 'coarse' else common.PARTIAL_LEGEND})")
    what = "lossless" if dfc.complete else f"truncated at t={t_reached}"
    click.echo(f"wrote {output}: {len(data)} bytes, {8 * len(data) / n:.4f} bits/dim ({what})")
