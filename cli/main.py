"""The ``diffcodec`` command: a click group whose verbs live one per module."""

from __future__ import annotations

import sys

import click

from diffcodec.errors import DiffcodecError

from .options import debug_option


class DiffcodecGroup(click.Group):
    """Turns library errors into one line on stderr and a non-zero exit (``--debug`` shows the traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (DiffcodecError, OSError, ValueError) as exc:
            if ctx.meta.get("diffcodec.debug"):
                raise
            message = exc.strerror + f": {exc.filename}" if isinstance(exc, OSError) and exc.strerror and exc.filename else str(exc)
            raise click.ClickException(message) from None


@click.group(cls=DiffcodecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffcodec")
@debug_option
def main() -> None:
    """Progressive lossy-to-lossless image compression with a denoising diffusion model.

    Any prefix of a .dfc file decodes to an image; the whole file decodes to the exact image.
    """


def _register() -> None:
    from . import train

    main.add_command(train.train)
    for name in ("encode", "decode", "truncate", "info", "nll", "rd_curve", "train_context"):
        try:
            module = __import__(f"{__package__}.{name}", fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        main.add_command(getattr(module, "command"))


_register()

if __name__ == "__main__":
    sys.exit(main())
