"""Helpers the verbs share: loading the model and .dfc files, checking outputs early, JSON, progress.

Errors are raised as :class:`DiffcodecError` (the group in :mod:`.main` turns them into one
line, or a traceback with ``--debug``); nothing here calls ``sys.exit``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import click

from diffcodec.errors import DiffcodecError


def load_model(path: str | None, device: str | None = None):
    """The model at ``path`` (the shipped default when None); CheckpointError says what is wrong.

    ``device`` (``--device``): where its integer networks (format version 5) run; checked before the model is
    read.  Files of versions 1–4 run their float networks on the CPU whatever it says.
    """
    from diffcodec.models.checkpoint import load_model as _load

    where = check_device(device)
    model = _load(path)
    if where.type != "cpu":
        model.integer().to(where)
    return model


def check_device(name: str | None):
    """``--device`` as a torch.device: cpu (the default), cuda or cuda:N, available on this machine.

    Anything else is one line (DiffcodecError) naming what is missing, before any work is done.
    """
    import torch

    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DiffcodecError(f"--device {name}: not a device (cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DiffcodecError(f"--device {name}: the codec runs on cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise DiffcodecError(f"--device {name} is not available: {why} (torch {torch.__version__})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DiffcodecError(f"--device {name} is not available: this machine has {count} CUDA device{'s' if count != 1 else ''} "
                             f"(cuda:0{f' … cuda:{count - 1}' if count > 1 else ''})")
    return device


device_option = click.option(
    "--device", default=None, metavar="DEVICE", show_default="cpu",
    help="Where the integer networks run: cpu, cuda or cuda:N. Every device gives the same file and the same decode "
         "(the integer networks of format 5 and later are exact); the entropy coders stay on the CPU.")


def codec_config(**settings):
    """A CodecConfig from the options given (None: the codec's default)."""
    from diffcodec.codec import CodecConfig

    return CodecConfig(**{k: v for k, v in settings.items() if v is not None})


def check_steps(steps: int | None, model) -> None:
    """``--steps`` must fit the model's chain."""
    T = model.diffusion.num_steps
    if steps is not None and not 1 <= steps <= T:
        raise click.BadParameter(f"{steps} is more than the model's {T} diffusion steps", param_hint="'--steps'")


def check_stop_at_t(t: int | None, schedule_steps: int) -> None:
    if t is not None and not 0 <= t <= schedule_steps:
        raise click.BadParameter(f"{t} is not in 0..{schedule_steps} (the model's T)", param_hint="'--stop-at-t'")


def check_output(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail now, before minutes of work, if ``path`` cannot be written (by creating a scratch file beside it)."""
    p = Path(path)
    if p.is_dir():
        raise DiffcodecError(f"cannot write {what} {p}: it is a folder")
    folder = p.parent
    if not folder.is_dir():
        raise DiffcodecError(f"cannot write {what} {p}: folder {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{p.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise DiffcodecError(f"cannot write {what} {p}: {exc.strerror or exc}") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise DiffcodecError(f"cannot write {what} {p}: permission denied")
    return p


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write through a temporary file and a rename, so a failed write never leaves half a file."""
    p = Path(path)
    tmp = None
    try:
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp", delete=False) as f:
            tmp = f.name
            f.write(data)
        os.chmod(tmp, _new_file_mode(p))  # a temporary file is private (0600); the result should not be
        os.replace(tmp, p)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise DiffcodecError(f"cannot write {p}: {exc.strerror or exc}") from None


def _new_file_mode(p: Path) -> int:
    """The mode an ordinary ``open(p, "w")`` would give: the existing file's, else 0666 minus the umask."""
    try:
        return p.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise DiffcodecError(f"no such {what}: {p}") from None
    except IsADirectoryError:
        raise DiffcodecError(f"{p} is a folder, expected a {what}") from None
    except OSError as exc:
        raise DiffcodecError(f"cannot read {p}: {exc.strerror or exc}") from None


def read_dfc(path: str | os.PathLike, check_payload: bool = True):
    """Parse a .dfc file (or what is left of a cut one); a foreign or corrupt file is one line naming it.

    ``check_payload=False`` reads a file whose payload check fails as ``unchecked`` (to describe it)."""
    from diffcodec.container import DfcFormatError, decode_file

    data = read_bytes(path, ".dfc file")
    try:
        return decode_file(data, check_payload=check_payload)
    except DfcFormatError as exc:
        raise DfcFormatError(f"{path}: {exc}") from exc


def load_image(path: str | os.PathLike):
    """Read an image; its warnings (16-bit, mode conversions) go to stderr."""
    from diffcodec.images import load_image as _load

    img = _load(path)
    for w in img.warnings:
        warn(f"{path}: {w}")
    return img


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def note(message: str) -> None:
    click.echo(f"note: {message}", err=True)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def echo_json(obj: Any) -> None:
    """One line of strict JSON on stdout (NaN and infinities as null)."""
    click.echo(json.dumps(_finite(obj), allow_nan=False))


@contextlib.contextmanager
def progress(length: float, label: str, every: float = 30.0) -> Iterator[Any]:
    """Progress on stderr; yields its ``update(n=1)`` (n may be a fraction: the codec reports parts of a step).

    On a terminal, a bar with the time left.  Elsewhere (a log, a pipe, a CI job) a line every ``every``
    seconds with the count, the time so far and the time left, so a long job never sits silent: a watcher
    thread prints it even while one step runs for minutes (a network pass over a large photo).
    """
    stream = sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        with click.progressbar(length=max(length, 1), label=label, file=stream, show_eta=True) as bar:
            yield bar.update
        return
    start = last = time.monotonic()
    done = 0.0
    lock = threading.Lock()
    stop = threading.Event()

    def report(now: float) -> None:
        nonlocal last
        last = now
        count = f"{done:.0f}" if abs(done - round(done)) < 0.05 else f"{done:.1f}"
        left = f"about {_duration((now - start) / done * (length - done))} left" if done > 0 else "time left not known yet"
        click.echo(f"{label}: {count}/{length:.0f} ({100 * done / length:.0f}%), {_duration(now - start)} so far, {left}", err=True)

    def update(n: float = 1) -> None:
        nonlocal done
        with lock:
            done += n
            now = time.monotonic()
            if now - last >= every and 0 < done < length:
                report(now)

    def watch() -> None:  # a step that outlasts ``every`` is reported from here
        while not stop.wait(every):
            with lock:
                now = time.monotonic()
                if now - last >= every and done < length:
                    report(now)

    watcher = threading.Thread(target=watch, name="progress", daemon=True)
    watcher.start()
    try:
        yield update
    finally:
        stop.set()
        watcher.join()


def announce_time(model, height: int, width: int, mode: str, steps: int, verb: str, device: str | None = None,
                  decode: bool = False, threads: int | None = None) -> None:
    """One line on stderr up front when an encode or decode of this size will take over a minute here.

    The estimate times one network pass over a few tiles (diffcodec.codec.estimate_seconds, ~0.3 s); images of
    fewer than 16 tiles are not timed (they take well under a minute).
    """
    from diffcodec.codec import estimate_seconds
    from diffcodec.tiling import TileLayout

    if TileLayout(height, width, mode).num_tiles < 16 or (device not in (None, "cpu")):
        return
    import torch

    seconds = estimate_seconds(model, height, width, mode, steps=steps, decode=decode,
                               threads=threads if threads is not None else torch.get_num_threads())
    if seconds > 60:
        click.echo(f"{verb} {width}×{height}: about {_duration(seconds)} on this machine "
                   "(estimated from one network pass; large images take longer per pixel)", err=True)


def _duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 2 h 07 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def sample_rows(n: int, keep: int = 12) -> list[int]:
    """Indices of at most ``keep`` evenly spread rows of ``n``, always the first and the last."""
    if n <= keep:
        return list(range(n))
    return sorted({round(i * (n - 1) / (keep - 1)) for i in range(keep)})


def steps_summary(coded: int, num_steps: int, first_t: int, last_t: int) -> str:
    """The one wording of step counts every verb uses (README, "Steps"): coded states of the S-step chain."""
    return (f"{coded} of the chain's {num_steps} steps coded (t = {first_t} … {last_t}), then the exact stage"
            if coded else f"the chain's {num_steps} steps, none coded")


def rows_summary(coded: int, partial: int) -> str:
    """What the rows of an encode or rd-curve table are: coded states, candidate points in the exact stage, the exact image."""
    inside = f", {partial} inside the exact stage" if partial else ""
    return f"{coded} coded state{'s' if coded != 1 else ''}{inside}, the exact image"


def point_label(t: int, partial: float | None = None) -> str:
    """How tables name a point: its t, and for a partial point of the exact stage the share of x_0 that is exact."""
    return f"0 ({100 * partial:.0f}%)" if partial is not None else str(t)


PARTIAL_LEGEND = "t = 0 (k%): inside the exact stage, k% of the subpixels exact and the rest predicted"
COARSE_LEGEND = ("t = 0 (k%): inside the coarse-to-fine exact stage, k% of its symbols decoded (the colour bins first, "
                 "then the values inside them) and the rest predicted")


def fmt_psnr(psnr: float | None) -> str:
    return "inf" if psnr is None else f"{psnr:.2f}"


def psnr(rmse: float) -> float | None:
    return 20.0 * math.log10(255.0 / rmse) if rmse > 0 else None
