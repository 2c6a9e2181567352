"""``diffcodec truncate``: a smaller .dfc file that decodes to a coarser t, without the model."""

from __future__ import annotations

import click

from . import common
from .options import debug_option, json_option


@click.command("truncate")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("--stop-at-t", type=click.IntRange(0), metavar="T", required=True,
              help="Keep the truncation points with t ≥ T: the result decodes to the nearest point at or above T.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The smaller .dfc file to write.")
@json_option
@debug_option
def command(input, stop_at_t, output, as_json):
    """Cut the .dfc file INPUT down to what decodes to t = T and write it to OUTPUT.

    No model is needed: the file's header maps T to its truncation points. The file
    keeps only the points it has, so the result stops at the nearest point with t ≥ T
    (`diffcodec info` lists them). OUTPUT may be INPUT.

    \b
    Examples:
      diffcodec truncate photo.dfc --stop-at-t 500 -o photo-500.dfc
      diffcodec info photo.dfc        # which t values the file can stop at
    """
    from diffcodec.container import chain_position, describe, encode_file, paper_timestep, truncate

    dfc = common.read_dfc(input)
    common.check_output(output)
    h = dfc.header
    common.check_stop_at_t(stop_at_t, h.schedule_steps)
    before = describe(dfc)
    out = truncate(dfc, chain_position(h, stop_at_t))
    data = encode_file(out)
    common.write_bytes(output, data)

    t_before = paper_timestep(h, dfc.points[-1].t)
    t_after = paper_timestep(h, out.points[-1].t)
    if dfc.cut:
        common.note(f"{input} is cut short ({dfc.points_lost} truncation points lost); it reached t={t_before}")
    if len(out.points) == len(dfc.points) and t_before > stop_at_t:
        common.note(f"{input} already stops at t={t_before}: written unchanged")
    elif t_after > stop_at_t:
        common.note(f"no truncation point at t={stop_at_t}: stopped at t={t_after}, the nearest point above it")
    if as_json:
        common.echo_json({"input_bytes": before["total_bytes"], "output": str(output), "output_bytes": len(data),
                          "t": t_after, "points": len(out.points)})
        return
    click.echo(f"{input}: {before['total_bytes']} bytes to t={t_before} -> {output}: {len(data)} bytes to t={t_after} "
               f"({len(out.points)} of {len(dfc.points)} truncation points)")
