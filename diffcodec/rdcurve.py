"""Rate-distortion curves of the progressive codec over a set of images (``diffcodec rd-curve``).

Every image is encoded once; each coded step of the chain is a truncation point, so one
encoding gives a whole curve (Ho et al. 2020, Figure 5 and Table 4).  The chain's timesteps
are the same for every image, but each image stops its chain where its exact stage is
cheapest; at a t below that, an image counts with its last coded state (what
``decode --stop-at-t --any-state`` gives).  The points pool into one curve for the set:

* rate: real stream bits summed over the images, divided by the set's subpixels
  (a subpixel is one channel of one pixel), in bits/dim;
* distortion: RMSE on the 0–255 scale pooled over every subpixel of the set,
  √(Σ_i rmse_i² · n_i / Σ_i n_i), not a mean of per-image RMSEs; PSNR from that pooled MSE;
* ``kl_bpd``: the ideal cost of the same prefix (Σ KL, and −log₂ p for the exact stage).

Example, pooling two images by hand:

>>> from diffcodec.codec import StepReport
>>> acc = RDAccumulator()
>>> acc.add([StepReport(t=1000, bits=100, kl_bits=90.0, rmse=40.0),
...          StepReport(t=0, bits=1000, kl_bits=950.0, rmse=0.0)], num_dims=100)
>>> acc.add([StepReport(t=1000, bits=300, kl_bits=280.0, rmse=20.0),
...          StepReport(t=0, bits=3000, kl_bits=2900.0, rmse=0.0)], num_dims=300)
>>> curve = acc.curve()
>>> [(p.t, p.rate_bpd, round(p.rmse, 3)) for p in curve.points]
[(1000, 1.0, 26.458), (0, 10.0, 0.0)]
>>> curve.points[-1].psnr is None  # exact: infinite PSNR
True
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .container import stream_position
from .errors import DiffcodecError

CSV_COLUMNS = ("t", "rate_bpd", "rmse", "psnr", "kl_bpd", "partial")
BASELINE_CSV_COLUMNS = ("codec", "family", "lossless", "rate_bpd", "rmse", "psnr", "total_bytes", "n_images", "n_subpixels")


def psnr_from_rmse(rmse: float) -> float | None:
    """PSNR in dB on the 0–255 scale; None for an exact reconstruction (infinite PSNR)."""
    return 20.0 * math.log10(255.0 / rmse) if rmse > 0 else None


def rmse_at_rate(curve: Iterable[tuple[float, float]], rate: float) -> float | None:
    """RMSE at ``rate`` on a curve of (rate, RMSE) points, linear in log-rate between the two around it.

    None outside the curve's rates: no extrapolation.  How bench/ compares curves at fixed rates.
    """
    points = sorted(curve)
    for (r0, e0), (r1, e1) in itertools.pairwise(points):
        if r0 <= rate <= r1 and r1 > r0:
            w = (math.log(rate) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return e0 + w * (e1 - e0)
    return None


@dataclass(frozen=True)
class RDPoint:
    """The set's rate and distortion when every stream is cut right after the step reaching ``t``."""

    t: int  # paper timestep of the state (0: the exact image)
    rate_bpd: float  # real bits / subpixels
    rmse: float  # pooled RMSE, 0–255 scale, of the mean reconstruction x̂_0
    psnr: float | None  # dB; None when rmse == 0
    kl_bpd: float  # ideal (KL) bits / subpixels
    # A partial point inside the exact stage (t = 0): the share of x_0's subpixels exact; None otherwise.
    partial: float | None = None

    @property
    def position(self) -> tuple[int, float]:
        """Sort key along the stream: larger t first, then partial points, then the exact image."""
        return stream_position(self.t, self.partial)


@dataclass
class RDCurve:
    """A rate-distortion curve over a set of images, coarsest state (largest t) first."""

    points: list[RDPoint]
    n_images: int
    n_subpixels: int
    schedule_steps: int | None = None  # T of the model's chain: the plot's x axis is T − t
    num_steps: int | None = None  # S, the length of the coded chain (``--steps``), when known
    coded_per_image: tuple[int, int] = (0, 0)  # fewest and most states an image's file codes

    @property
    def coded_steps(self) -> int:
        """Distinct coded states over the set (rows with t > 0): each image codes some of the chain's S."""
        return sum(p.t > 0 for p in self.points)

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.n_images,
            "subpixels": self.n_subpixels,
            "num_steps": self.num_steps,
            "coded_steps": self.coded_steps,
            "coded_steps_per_image": list(self.coded_per_image),
            "schedule_steps": self.schedule_steps,
            "points": [asdict(p) for p in self.points],
        }


@dataclass
class RDAccumulator:
    """Pools per-step reports of several encodings into one :class:`RDCurve`, one image at a time.

    Images may stop their chain at different t (the encoder starts the exact stage where it is
    cheapest).  At a t an image has no state for, it contributes what ``decode --any-state --stop-at-t t``
    gives: its last state with a larger t, at that state's rate.  Partial points inside the exact
    stage are rows at t = 0 keyed by their share of exact subpixels (the same shares for images of
    one mode); an image without a row at a share contributes its last point before it.
    """

    schedule_steps: int | None = None
    num_steps: int | None = None  # S of the encodings (``--steps``), for the report
    _images: list = field(default_factory=list)
    n_images: int = 0
    n_subpixels: int = 0

    def add(self, steps: Sequence[Any], num_dims: int) -> None:
        """Add one image's :class:`~diffcodec.codec.StepReport` list (``num_dims`` subpixels)."""
        if num_dims <= 0:
            raise DiffcodecError("an image with no subpixels cannot be added to a curve")
        ts = [int(s.t) for s in steps]
        if not ts:
            raise DiffcodecError("an encoding with no steps cannot be added to a curve")
        keys = [stream_position(int(s.t), getattr(s, "partial", None)) for s in steps]
        if any(b <= a for a, b in zip(keys, keys[1:])):
            raise DiffcodecError(f"steps must have decreasing t, got {ts[:6]}…")
        rmse = np.array([s.rmse for s in steps], dtype=np.float64)
        if not np.all(np.isfinite(rmse)):
            raise DiffcodecError("a step report has no RMSE")
        bits = np.array([s.bits for s in steps], dtype=np.float64)
        kl = np.array([s.kl_bits for s in steps], dtype=np.float64)
        self._images.append((keys, bits, kl, rmse**2 * num_dims, sum(t > 0 for t in ts)))
        self.n_images += 1
        self.n_subpixels += int(num_dims)

    def curve(self) -> RDCurve:
        if not self._images:
            raise DiffcodecError("no images were added to the curve")
        exact = stream_position(0, None)
        all_keys = sorted({k for keys, *_ in self._images for k in keys})
        totals = np.zeros((len(all_keys), 3))
        for keys, bits, kl, se, _ in self._images:
            j = 0
            for row, key in enumerate(all_keys):
                # Advance to the image's last point at or before this one (its exact image only at the exact row).
                while j + 1 < len(keys) and keys[j + 1] <= key and (keys[j + 1] != exact or key == exact):
                    j += 1
                if key == exact:
                    j = len(keys) - 1
                totals[row] += (bits[j], kl[j], se[j])
        n = self.n_subpixels
        points = []
        for key, (bits, kl, se) in zip(all_keys, totals):
            rmse = math.sqrt(se / n)
            partial = key[1] if key[0] == 0 and key != exact else None
            points.append(RDPoint(t=-key[0], rate_bpd=float(bits / n), rmse=rmse, psnr=psnr_from_rmse(rmse), kl_bpd=float(kl / n),
                                  partial=partial))
        coded = [c for *_, c in self._images]
        return RDCurve(points=points, n_images=self.n_images, n_subpixels=n, schedule_steps=self.schedule_steps,
                       num_steps=self.num_steps, coded_per_image=(min(coded), max(coded)))


def aggregate(encodings: Iterable[Any], schedule_steps: int | None = None) -> RDCurve:
    """One curve from :class:`~diffcodec.codec.EncodeResult` objects (their ``steps`` and ``num_dims``)."""
    acc = RDAccumulator(schedule_steps=schedule_steps)
    for result in encodings:
        acc.add(result.steps, result.num_dims)
        acc.num_steps = getattr(result, "num_steps", None)
    return acc.curve()


# ---- baselines ---------------------------------------------------------------------------------


def baseline_points(
    images: Sequence[np.ndarray],
    on_skip: Callable[[str], None] | None = None,
    lossless: bool = True,
) -> list[dict[str, Any]]:
    """Measure every available classical codec on ``images`` (the set as a whole).

    Each lossy family (:func:`diffcodec.baselines.lossy_sweep`) gives one point per setting;
    with ``lossless`` each available lossless codec adds one point at rmse 0.  A codec that
    cannot code every image (JPEG has no alpha channel) is skipped and ``on_skip`` is told why.
    Returns :func:`diffcodec.baselines.measure` dicts, lowest rate first within each family.
    """
    from .baselines import available_codecs, lossy_sweep, measure

    rows: list[dict[str, Any]] = []
    groups = [(c.family, lossy_sweep(c.family)) for c in available_codecs(lossless=False)]
    if lossless:
        groups += [(c.name, [c]) for c in available_codecs(lossless=True)]
    for name, settings in groups:
        try:
            measured = [measure(codec, images) for codec in settings]
        except DiffcodecError as exc:
            if on_skip is not None:
                on_skip(f"{name} skipped: {exc}")
            continue
        rows.extend(sorted(measured, key=lambda r: r["rate_bpd"]) if len(measured) > 1 else measured)
    return rows


# ---- files -------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    if value is None:
        return "inf"  # PSNR of an exact reconstruction
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(curve: RDCurve, path: str | Path) -> None:
    """One row per coded step: t, rate_bpd, rmse, psnr (``inf`` when exact), kl_bpd, partial (empty but at
    partial points inside the exact stage, where it is the share of exact subpixels and t is 0)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for p in curve.points:
            writer.writerow(["" if c == "partial" and p.partial is None else _cell(getattr(p, c)) for c in CSV_COLUMNS])


def write_baselines_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One row per baseline setting (:func:`baseline_points`)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(BASELINE_CSV_COLUMNS)
        for r in rows:
            writer.writerow([_cell(r[c]) for c in BASELINE_CSV_COLUMNS])


def baselines_csv_path(csv_path: str | Path) -> Path:
    """Where the baselines go beside a curve CSV: ``<stem>-baselines.csv``."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}-baselines.csv")


# ---- plot --------------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Raise DiffcodecError with an install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise DiffcodecError("plotting needs matplotlib: pip install matplotlib (or leave out -o to write only the CSV)") from None


def plot(curve: RDCurve, path: str | Path, baselines: Sequence[dict[str, Any]] = (), title: str | None = None) -> None:
    """Three panels as in Ho et al. 2020 Figure 5: distortion vs steps, rate vs steps, distortion vs rate.

    The x axis of the first two is reverse-process steps T − t (T from the curve, else the
    largest t).  Rates are on a log axis: the lossy prefixes cost ~0.1–1 bits/dim, the lossless
    file several.  The exact image (T − t = T) is drawn apart from the chain, with a dotted line:
    the chain stops at x_t0 (t0 ≈ 35 on CIFAR-10) and the exact stage codes x_0 directly from there,
    most of the file in one go, so the rate "jumps" there.  Baselines appear on the third panel:
    one line per lossy family, a marker at rmse 0 for each lossless codec.  The format follows
    the file suffix.
    """
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    T = curve.schedule_steps if curve.schedule_steps is not None else max(p.t for p in curve.points)
    chain = [p for p in curve.points if p.t > 0]  # the lossy states; partial points all sit at t = 0: the RD panel shows them
    exact = [p for p in curve.points if p.t == 0 and p.partial is None]
    steps = [T - p.t for p in chain]

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_d, ax_r, ax_rd = fig.subplots(1, 3)
    marker = "." if len(curve.points) <= 60 else None
    ax_d.plot(steps, [p.rmse for p in chain], color="C0", marker=marker, label="lossy states (mean x̂_0)")
    ax_r.plot(steps, [p.rate_bpd for p in chain], color="C0", marker=marker, label="lossy states")
    if exact and chain:
        e, last = exact[0], chain[-1]
        ax_d.plot([T - last.t, T], [last.rmse, e.rmse], color="C0", linestyle=":")
        ax_d.plot([T], [e.rmse], color="C3", marker="*", linestyle="none", label="exact image")
        ax_r.plot([T - last.t, T], [last.rate_bpd, e.rate_bpd], color="C0", linestyle=":")
        ax_r.plot([T], [e.rate_bpd], color="C3", marker="*", linestyle="none",
                  label=f"exact image: the exact stage, coded\ndirectly from x_t at the chain's end")
    ax_d.set_xlabel("reverse process steps (T − t)")
    ax_d.set_ylabel("distortion (RMSE, 0–255)")
    ax_r.set_xlabel("reverse process steps (T − t)")
    ax_r.set_ylabel("rate (bits/dim, log scale)")
    ax_r.set_yscale("log")
    ax_rd.plot([p.rate_bpd for p in curve.points], [p.rmse for p in curve.points], color="C0", marker=marker,
               label="diffcodec")
    ax_rd.set_xscale("log")
    ax_rd.set_xlabel("rate (bits/dim, log scale)")
    ax_rd.set_ylabel("distortion (RMSE, 0–255)")

    families: dict[str, list[dict[str, Any]]] = {}
    for row in baselines:
        families.setdefault(row["family"] if not row["lossless"] else row["codec"], []).append(row)
    for k, (name, rows) in enumerate(families.items(), start=1):
        rows = sorted(rows, key=lambda r: r["rate_bpd"])
        style = dict(marker="x", linestyle="none") if rows[0]["lossless"] else dict(marker=".", linestyle="-")
        ax_rd.plot([r["rate_bpd"] for r in rows], [r["rmse"] for r in rows], color=f"C{k % 10}", label=name, **style)
    for ax in (ax_d, ax_r, ax_rd):
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize="x-small")
    n = curve.n_images
    lo, hi = curve.coded_per_image
    coded = f"{lo}" if lo == hi else f"{lo}–{hi}"
    chain_len = f" of the chain's {curve.num_steps}" if curve.num_steps else ""
    fig.suptitle(title or f"{n} image{'s' if n != 1 else ''}, {coded}{chain_len} steps coded per image, then the exact stage")
    try:
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as exc:
        raise DiffcodecError(f"cannot write plot {path}: {exc}") from None
