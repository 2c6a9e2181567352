"""Options shared by several verbs, declared once."""

from __future__ import annotations

import click


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["diffcodec.debug"] = True
    return value


debug_option = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug, help="Show full tracebacks on errors."
)
model_option = click.option(
    "--model", "model_path", type=click.Path(dir_okay=True), default=None, help="Checkpoint to use (default: the shipped model)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on the last line of stdout.")
steps_option = click.option(
    "--steps", type=click.IntRange(1, 4000), default=None, show_default="the codec default", help="Number of coded diffusion steps."
)
limit_option = click.option("--limit", type=click.IntRange(1), default=None, help="Use only the first N images (sorted by name).")


def codec_options(f):
    """Encoder settings shared by ``encode`` and ``rd-curve`` (the advanced ones only shape the search)."""
    f = click.option("--max-candidate-bits", type=click.IntRange(1, 20), default=None, hidden=True,
                     help="Cap on log2 of the channel-simulation candidates per chunk (testing).")(f)
    f = click.option("--target-gain", type=click.FloatRange(0.5, 4.0), default=None, show_default="1.4",
                     help="Advanced: aim each chunk this many times the posterior's shift from the prior (encoder-only). "
                          "1.0 makes each prefix cost closest to the KL it carries; 1.4 makes lossless files "
                          "~0.6% smaller (docs/codec.md).")(f)
    f = click.option("--chunk-bits", type=click.IntRange(1, 16), default=None, show_default="the codec default",
                     help="Advanced: KL bits per channel-simulation chunk (written to the stream).")(f)
    f = click.option("--exact-method", type=click.Choice(["auto", "linear", "learned", "coarse"]), default=None,
                     show_default="auto",
                     help="Advanced: the exact stage's model: the cheapest per image (auto), residual prediction (linear), "
                          "the model's context network (learned; RGB only) or its coarse-to-fine network (coarse; RGB "
                          "only): bins of 16 levels first, so prefixes inside the exact stage are sharp previews.")(f)
    f = click.option("--exact-from-t", type=click.IntRange(1), default=None, metavar="T", show_default="the cheapest, per image",
                     help="Advanced: start the exact stage from the coded state at t ≥ T instead of where it is cheapest.")(f)
    f = click.option("--spacing", type=click.Choice(["quad", "uniform"]), default=None, show_default="quad",
                     help="Advanced: how the coded steps spread over t (quad: dense at low noise).")(f)
    f = click.option("--search-threads", type=click.IntRange(1, 64), default=None, show_default="all cores, at most 8",
                     help="Advanced: threads searching channel-simulation candidates (does not change the file).")(f)
    f = click.option("--threads", type=click.IntRange(1, 255), default=None, show_default="the codec default",
                     help="Advanced: threads for the network (does not change the file: the stream records it "
                          "as the decoder's default).")(f)
    return f
