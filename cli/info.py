"""``diffcodec info``: what a .dfc file holds, read from its header alone (no model needed)."""

from __future__ import annotations

import click

from . import common
from .options import debug_option, json_option

CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


@click.command("info")
@click.argument("input", type=click.Path(dir_okay=False))
@json_option
@debug_option
def command(input, as_json):
    """Describe the .dfc file INPUT: image, model, coding parameters and truncation points.

    Each truncation point is listed with the size of the file `diffcodec truncate` makes
    for it, and that size in bits/dim.

    \b
    Examples:
      diffcodec info photo.dfc
      diffcodec info photo.dfc --json | python -m json.tool
    """
    from diffcodec.container import describe

    dfc = common.read_dfc(input, check_payload=False)  # describe a corrupt file too, and say so
    d = describe(dfc)
    h = dfc.header
    timeline, profile = h.timeline, h.profile
    d["coded_steps"] = timeline.last_step + 1  # x_T … x_exact_from: the states the stream codes
    if as_json:
        common.echo_json(d)
        return
    dims = d["width"] * d["height"] * CHANNELS[d["mode"]]
    if d["complete"]:
        state = "complete: the whole file decodes to the exact image"
    else:
        last = d["points"][-1]
        reach = (f"x_0 with {100 * profile.partial_share(h, last['subpixels']):.0f}% of its exact stage decoded"
                 if "subpixels" in last else f"t={last['t']}")
        state = (f"cut short: {d['points_lost']} truncation point(s) lost, decodes to {reach}" if d["cut"]
                 else f"truncated: decodes to {reach}")
    if d["unchecked"]:
        state += (" (its payload has no check of its own: decoded unchecked)" if d["cut"]
                  else "; CORRUPT: its payload check fails, decoding refuses it")
    click.echo(f"{input}: .dfc version {d['version']}, {d['total_bytes']} bytes, {8 * d['total_bytes'] / dims:.4f} bits/dim")
    click.echo(f"  image     {d['width']}×{d['height']} {d['mode']}")
    click.echo(f"  model     {d['model_id']} (T={d['schedule_steps']})")
    click.echo(f"  chain     {common.steps_summary(d['coded_steps'], d['num_steps'], timeline.paper_t(h.num_steps), d['exact_from_t'])}"
               + (" (coarse-to-fine)" if d["coarse_to_fine"] else ""))
    threads = f", {d['threads']} thread(s)" if d["threads"] is not None else ""
    click.echo(f"  coding    {d['spacing']} spacing, chunk_bits {d['chunk_bits']}{threads}")
    click.echo(f"  state     {state}")
    click.echo(f"  points    {len(d['points'])}")
    click.echo(f"  {'t':>8} {'bytes':>10} {'bits/dim':>9}")
    for p in d["points"]:
        label = common.point_label(p["t"], profile.partial_share(h, p["subpixels"]) if "subpixels" in p else None)
        click.echo(f"  {label:>8} {p['bytes']:>10} {8 * p['bytes'] / dims:>9.4f}")
    if any("subpixels" in p for p in d["points"]):
        click.echo(f"  ({common.COARSE_LEGEND if d['coarse_to_fine'] else common.PARTIAL_LEGEND})")
