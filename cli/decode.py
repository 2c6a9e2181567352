"""``diffcodec decode``: a .dfc file (whole, truncated or cut) back to an image."""

from __future__ import annotations

from pathlib import Path

import click

from . import common
from .options import debug_option, json_option, model_option

LOSSY_SUFFIXES = {".jpg", ".jpeg", ".webp", ".gif"}


def _steps_to_decode(header, last_chain_t: int, stop_at_t: int) -> int:
    """How many times the codec reports progress for this decode (mirrors diffcodec.codec.decode)."""
    timeline = header.timeline
    target = min(timeline.step_at_or_above(stop_at_t), timeline.step_of_position(last_chain_t))
    return min(target, timeline.last_step) + 1 + (target == timeline.exact_step)


@click.command("decode")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Image to write; the format follows the suffix (PNG keeps a lossless decode exact).")
@click.option("--stop-at-t", type=click.IntRange(0), metavar="T", default=0, show_default=True,
              help="Stop at the file's last truncation point with t ≥ T: the image of `truncate --stop-at-t T` "
                   "(0: the exact image, if the file holds it).")
@click.option("--any-state", is_flag=True,
              help="Advanced: with --stop-at-t, stop at the last coded state with t ≥ T even between truncation "
                   "points (the decoder runs the chain; no cut file gives that image).")
@click.option("--max-bytes", type=click.IntRange(1), metavar="N", default=None,
              help="Decode only what the first truncation points within N bytes give, as a download of N bytes would.")
@click.option("--reconstruct", type=click.Choice(["mean", "sample", "flow"]), default="mean", show_default=True,
              help="How a lossy state becomes an image: mean x̂_0 (lowest RMSE), ancestral sampling, or DDIM flow.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed of --reconstruct sample.")
@click.option("--max-pixels", type=click.IntRange(0), metavar="N", default=None, show_default="Pillow's, 89,478,485",
              help="Refuse a file whose image has more pixels than this (0: no limit): a small file can claim a huge image.")
@model_option
@common.device_option
@json_option
@debug_option
def command(input, output, stop_at_t, max_bytes, reconstruct, seed, max_pixels, any_state, model_path, device, as_json):
    """Decode the .dfc file INPUT into the image OUTPUT.

    A truncated file decodes to its last truncation point; a file cut at any byte (an
    interrupted download) decodes to its last whole truncation point and says so on stderr.
    A point inside the exact stage gives x_0 exact in part, the rest predicted. --stop-at-t T
    gives exactly what `truncate --stop-at-t T` then `decode` gives.

    \b
    Examples:
      diffcodec decode photo.dfc -o photo.png
      diffcodec decode photo.dfc -o preview.png --stop-at-t 500
      diffcodec decode photo.dfc -o preview.png --max-bytes 20000
      diffcodec decode photo.dfc -o sample.png --stop-at-t 300 --reconstruct sample --seed 1 --model run.pt
      diffcodec decode photo.dfc -o photo.png --device cuda:1
    """
    from diffcodec.codec import DEFAULT_MAX_PIXELS, UNCHECKED_NOTE, check_image_size, decode
    from diffcodec.errors import DiffcodecError
    from diffcodec.images import save_image

    common.check_output(output)
    suffix = Path(output).suffix.lower()
    _check_image_suffix(output)
    dfc = common.read_dfc(input)
    if max_bytes is not None:
        from diffcodec.container import describe, fit_bytes

        fitted = fit_bytes(dfc, max_bytes)
        if fitted is None:
            raise DiffcodecError(f"{input}: its first truncation point needs {describe(dfc)['points'][0]['bytes']} bytes, "
                                 f"more than --max-bytes {max_bytes}")
        dfc = dfc if len(fitted.points) == len(dfc.points) else fitted
        if dfc is fitted:
            common.note(f"--max-bytes {max_bytes}: decoding the first {describe(dfc)['total_bytes']} bytes of {input}, "
                        f"{len(dfc.points)} of its truncation points")
    h = dfc.header
    timeline = h.timeline
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else (max_pixels or None)
    check_image_size(h, limit)  # before the model is loaded or anything allocated
    common.check_stop_at_t(stop_at_t, h.schedule_steps)
    cut, lost = dfc.cut, f"{dfc.points_lost} truncation point{'s' if dfc.points_lost != 1 else ''} lost"
    aim = timeline.paper_t_of_step(timeline.step_at_or_above(stop_at_t))  # the coded state --any-state gives (0: x_0)
    between = None  # the file has points below T but none at T: the nearest coded state, where decode stops instead
    if stop_at_t > 0 and not any_state:
        from diffcodec.container import truncate

        kept = truncate(dfc, timeline.position_at_or_above(stop_at_t))
        if len(kept.points) < len(dfc.points):
            if timeline.paper_t(kept.points[-1].t) > aim:
                between = aim
            dfc = kept
    if h.mode == "RGBA" and suffix in {".jpg", ".jpeg"}:
        raise DiffcodecError(f"cannot write {output}: JPEG has no alpha channel and {input} is RGBA; use .png")
    model = common.load_model(model_path, device)
    units = _steps_to_decode(h, dfc.points[-1].t, stop_at_t)
    common.announce_time(model, h.height, h.width, h.mode, units - 1, "decoding", device=device, decode=True)
    with common.progress(units, "decoding") as update:
        result = decode(dfc, model, stop_at_t=stop_at_t, reconstruct=reconstruct, seed=seed, on_step=update, max_pixels=limit)

    notes = []
    if result.partial is None:
        share = None
    elif h.profile.coarse_to_fine:
        share = f"x_0 with {100 * result.partial:.0f}% of its coarse-to-fine exact stage (colour bins first)"
    else:
        share = f"x_0 with {100 * result.partial:.0f}% of its subpixels exact"
    if share is not None:  # the data ran out inside the exact stage
        how = f"is cut short ({lost})" if cut else "stops inside the exact stage"
        notes.append(f"{input} {how}: decoded to {share}, the rest predicted")
    elif between is not None:
        notes.append(f"no truncation point at t={stop_at_t}: decoded to t={result.t}, the nearest point above it, as "
                     f"truncate does (--any-state decodes the coded state at t={between})")
    elif result.t > aim:  # data ran out
        if cut:
            notes.append(f"{input} is cut short ({lost}): decoded to t={result.t}, its last whole truncation point")
        else:
            notes.append(f"{input} is truncated at t={timeline.paper_t(dfc.points[-1].t)}: decoded to t={result.t}")
    elif cut:
        notes.append(f"{input} is cut short ({lost}), but t={result.t} did not need them")
    if dfc.unchecked:
        notes.append(f"{input}: {UNCHECKED_NOTE}")
    if result.complete and suffix in LOSSY_SUFFIXES:
        common.warn(f"{output}: {suffix} is a lossy format, so the written image is not the exact one; use .png")
    for n in notes:
        common.note(n)
    save_image(result.pixels, output, result.mode)

    height, width = result.pixels.shape[:2]
    if as_json:
        common.echo_json({"output": str(output), "t": result.t, "complete": result.complete, "width": width,
                          "height": height, "mode": result.mode,
                          "reconstruct": None if result.complete or share else reconstruct,
                          "partial": result.partial, "cut": cut, "notes": notes})
        return
    what = ("exact image (checksum verified)" if result.complete else share if share
            else f"t={result.t}, {reconstruct} reconstruction")
    click.echo(f"wrote {output}: {width}×{height} {result.mode}, {what}")


def _check_image_suffix(output: str) -> None:
    """Refuse an output suffix Pillow cannot write, before decoding."""
    from PIL import Image

    from diffcodec.errors import DiffcodecError

    Image.init()
    suffix = Path(output).suffix.lower()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise DiffcodecError(f"cannot write {output}: unknown image format {suffix or '(no suffix)'}; use .png")
