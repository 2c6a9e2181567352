"""``diffcodec truncate``: a smaller .dfc file that decodes to a coarser t, without the model."""

from __future__ import annotations

import click

from . import common
from .options import debug_option, json_option


@click.command("truncate")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--stop-at-t", type=click.IntRange(0), metavar="T", default=None,
              help="Keep the truncation points with t ≥ T: the result decodes to the nearest point at or above T.")
@click.option("--max-bytes", type=click.IntRange(1), metavar="N", default=None,
              help="Instead: cut at the last truncation point at which the file fits in N bytes (partial points of the exact "
                   "stage included).")
@click.option("--every-point", is_flag=True,
              help="Keep the table rows of the points before the cut too, so that the result can be cut again at them "
                   "(2–4 bytes each); by default the table lists the point the file ends at alone.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The smaller .dfc file to write.")
@json_option
@debug_option
def command(input, stop_at_t, max_bytes, every_point, output, as_json):
    """Cut the .dfc file INPUT down to what decodes to t = T (or fits in N bytes) and write it to OUTPUT.

    No model is needed: the file's header maps T to its truncation points. The file
    keeps only the points it has, so the result stops at the nearest point with t ≥ T
    (`diffcodec info` lists them). With --max-bytes it cuts at the last point that
    fits, which may be inside the exact stage (x_0 exact in part). The result's table
    lists the point it ends at alone (the smallest file; its check covers everything
    before it), unless --every-point. A file cut at a byte no point ends at is refused
    when its format (version 8) could not check its words: decode it instead. OUTPUT may be INPUT.

    \b
    Examples:
      diffcodec truncate photo.dfc --stop-at-t 500 -o photo-500.dfc
      diffcodec truncate photo.dfc --max-bytes 20000 -o photo-20k.dfc
      diffcodec info photo.dfc        # which t values the file can stop at
    """
    from diffcodec.container import DfcFormatError, describe, encode_file, fit_bytes, truncate
    from diffcodec.errors import DiffcodecError

    if (stop_at_t is None) == (max_bytes is None):
        raise click.UsageError("give exactly one of --stop-at-t and --max-bytes")
    dfc = common.read_dfc(input)
    common.check_output(output)
    h = dfc.header
    timeline, profile = h.timeline, h.profile
    before = describe(dfc)
    if max_bytes is not None:
        out = fit_bytes(dfc, max_bytes, every_point=every_point)
        if out is None:
            raise DiffcodecError(f"{input}: its first truncation point needs {before['points'][0]['bytes']} bytes, "
                                 f"more than --max-bytes {max_bytes}")
    else:
        common.check_stop_at_t(stop_at_t, h.schedule_steps)
        out = truncate(dfc, timeline.position_at_or_above(stop_at_t), every_point=every_point)
    try:
        data = encode_file(out)  # refuses a byte-cut format-8 file's unchecked words
    except DfcFormatError as exc:
        raise DfcFormatError(f"{input}: {exc}") from None
    common.write_bytes(output, data)

    t_before = timeline.paper_t(dfc.points[-1].t)
    t_after = timeline.paper_t(out.points[-1].t)
    if dfc.cut:
        common.note(f"{input} is cut short ({dfc.points_lost} truncation points lost); it reached t={t_before}")
    k = dfc.points.index(out.points[-1]) + 1  # which of the input's points the result ends at
    if stop_at_t is not None and k == len(dfc.points) and t_before > stop_at_t:
        common.note(f"{input} already stops at t={t_before}: written unchanged")
    elif stop_at_t is not None and t_after > stop_at_t:
        common.note(f"no truncation point at t={stop_at_t}: stopped at t={t_after}, the nearest point above it")
    share = lambda f: profile.partial_share(h, f.points[-1].subpixels) if f.points[-1].partial else None  # noqa: E731
    label = lambda f: common.point_label(timeline.paper_t(f.points[-1].t), share(f))  # noqa: E731
    if as_json:
        common.echo_json({"input_bytes": before["total_bytes"], "output": str(output), "output_bytes": len(data),
                          "t": t_after, "point": k, "points": len(out.points), "complete": out.complete,
                          "partial": share(out)})
        return
    click.echo(f"{input}: {before['total_bytes']} bytes to t={label(dfc)} -> {output}: {len(data)} bytes to t={label(out)} "
               f"(truncation point {k} of {len(dfc.points)})")
