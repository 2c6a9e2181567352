"""diffcodec.rdcurve: pooling per-image step reports into one curve, its CSV files and its plot."""

from __future__ import annotations

import csv
import doctest
import math
import sys

import numpy as np
import pytest

from diffcodec import rdcurve
from diffcodec.codec import CodecConfig, StepReport, encode
from diffcodec.errors import DiffcodecError
from diffcodec.rdcurve import RDAccumulator, aggregate


def reports(ts, bits, rmse, kl=None):
    kl = kl if kl is not None else [0.9 * b for b in bits]
    return [StepReport(t=t, bits=b, kl_bits=k, rmse=r) for t, b, r, k in zip(ts, bits, rmse, kl)]


def test_doctests():
    assert doctest.testmod(rdcurve, raise_on_error=False).failed == 0


def test_pooling_weights_by_subpixels():
    acc = RDAccumulator(schedule_steps=1000)
    acc.add(reports([1000, 500, 0], [10, 50, 400], [30.0, 10.0, 0.0]), num_dims=100)
    acc.add(reports([1000, 500, 0], [30, 90, 2000], [20.0, 5.0, 0.0]), num_dims=300)
    curve = acc.curve()
    assert (curve.n_images, curve.n_subpixels, curve.schedule_steps) == (2, 400, 1000)
    p = curve.points
    assert [q.t for q in p] == [1000, 500, 0]
    assert p[1].rate_bpd == pytest.approx(140 / 400)
    assert p[1].rmse == pytest.approx(math.sqrt((10.0**2 * 100 + 5.0**2 * 300) / 400))
    assert p[1].psnr == pytest.approx(20 * math.log10(255 / p[1].rmse))
    assert p[1].kl_bpd == pytest.approx(0.9 * 140 / 400)
    assert p[2].rmse == 0 and p[2].psnr is None
    js = curve.to_json()
    assert js["coded_steps"] == 2 and js["coded_steps_per_image"] == [2, 2] and js["points"][0]["t"] == 1000


def test_images_stopping_at_different_t_carry_their_last_state_forward():
    """Images may stop their chains at different t (adaptive exact stage).  The curve has a point at every t
    of any image; at a t an image has no state for, it contributes its last state with a larger t (what
    ``decode --stop-at-t t`` gives: rate, KL and RMSE of that state), and at t=0 its exact image."""
    acc = RDAccumulator(schedule_steps=1000)
    # A stops its chain at t=500 (exact stage from x_500); B goes on to t=250 but has no state at t=750.
    acc.add(reports([1000, 750, 500, 0], [10, 30, 60, 400], [30.0, 20.0, 10.0, 0.0], kl=[9, 27, 54, 380]), num_dims=100)
    acc.add(reports([1000, 500, 250, 0], [20, 50, 90, 700], [25.0, 12.0, 6.0, 0.0], kl=[18, 45, 81, 650]), num_dims=300)
    curve = acc.curve()
    assert (curve.n_images, curve.n_subpixels) == (2, 400)
    p = curve.points
    assert [q.t for q in p] == [1000, 750, 500, 250, 0]
    # t=1000: both first states.  t=750: A's x_750, B's x_1000.  t=500: both x_500.
    # t=250: A's x_500 (its last lossy state; not its exact image), B's x_250.  t=0: both exact images.
    assert [q.rate_bpd for q in p] == pytest.approx([30 / 400, 50 / 400, 110 / 400, 150 / 400, 1100 / 400])
    assert [q.kl_bpd for q in p] == pytest.approx([27 / 400, 45 / 400, 99 / 400, 135 / 400, 1030 / 400])
    expected_rmse = [
        math.sqrt((30.0**2 * 100 + 25.0**2 * 300) / 400),  # 26.339...
        math.sqrt((20.0**2 * 100 + 25.0**2 * 300) / 400),  # 23.848...
        math.sqrt((10.0**2 * 100 + 12.0**2 * 300) / 400),  # 11.533...
        math.sqrt((10.0**2 * 100 + 6.0**2 * 300) / 400),  # 7.211...
        0.0,
    ]
    assert [q.rmse for q in p] == pytest.approx(expected_rmse)
    assert p[3].rmse == pytest.approx(math.sqrt(52.0))  # (10000 + 10800) / 400, by hand
    assert p[-1].psnr is None
    # The same pair added in the other order gives the same curve.
    swapped = RDAccumulator(schedule_steps=1000)
    swapped.add(reports([1000, 500, 250, 0], [20, 50, 90, 700], [25.0, 12.0, 6.0, 0.0], kl=[18, 45, 81, 650]), num_dims=300)
    swapped.add(reports([1000, 750, 500, 0], [10, 30, 60, 400], [30.0, 20.0, 10.0, 0.0], kl=[9, 27, 54, 380]), num_dims=100)
    q2 = swapped.curve().points
    assert [q.t for q in q2] == [q.t for q in p]
    assert [q.rate_bpd for q in q2] == pytest.approx([q.rate_bpd for q in p])
    assert [q.rmse for q in q2] == pytest.approx([q.rmse for q in p])


def test_bad_step_reports_are_refused():
    with pytest.raises(DiffcodecError, match="no images"):
        RDAccumulator().curve()
    with pytest.raises(DiffcodecError, match="no RMSE"):
        RDAccumulator().add(reports([1000, 0], [10, 100], [float("nan"), 0.0]), num_dims=10)
    with pytest.raises(DiffcodecError, match="decreasing t"):
        RDAccumulator().add(reports([1000, 1000, 0], [10, 20, 100], [3.0, 2.0, 0.0]), num_dims=10)
    with pytest.raises(DiffcodecError, match="no steps"):
        RDAccumulator().add([], num_dims=10)


def test_aggregate_real_encodings_of_mixed_images(tiny_model):
    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB"), (rng.integers(0, 256, (7, 9, 1), dtype=np.uint8), "L")]
    config = CodecConfig(steps=2, max_candidate_bits=8)
    results = [encode(px, mode, tiny_model, config) for px, mode in images]
    curve = aggregate(results, schedule_steps=tiny_model.diffusion.num_steps)
    n = sum(px.size for px, _ in images)
    assert curve.n_subpixels == n
    # Each image may stop its chain at its own t: the curve has a point at every t of either.
    assert [p.position for p in curve.points] == sorted({s.position for r in results for s in r.steps})
    assert curve.points[-1].t == 0 and curve.points[-1].partial is None
    # The last point is the whole files: exact, at the real total size.
    assert curve.points[-1].rate_bpd == pytest.approx(sum(8 * len(r.data) for r in results) / n)
    assert curve.points[-1].rmse == 0
    rates = [p.rate_bpd for p in curve.points]
    assert rates == sorted(rates)


def test_partial_points_pool_by_their_share_and_never_borrow_the_exact_image():
    """At a partial row an image without that share counts with its last point before it, never its exact image."""
    acc = RDAccumulator()
    acc.add([StepReport(t=1000, bits=10, kl_bits=9.0, rmse=40.0), StepReport(t=0, bits=50, kl_bits=45.0, rmse=6.0, partial=0.5),
             StepReport(t=0, bits=90, kl_bits=80.0, rmse=0.0)], num_dims=10)
    acc.add([StepReport(t=1000, bits=20, kl_bits=19.0, rmse=30.0), StepReport(t=0, bits=100, kl_bits=95.0, rmse=0.0)],
            num_dims=10)
    curve = acc.curve()
    assert [(p.t, p.partial) for p in curve.points] == [(1000, None), (0, 0.5), (0, None)]
    half = curve.points[1]
    assert half.rate_bpd == pytest.approx((50 + 20) / 20) and half.rmse == pytest.approx(math.sqrt((36 * 10 + 900 * 10) / 20))
    assert curve.points[-1].rate_bpd == pytest.approx(190 / 20) and curve.points[-1].rmse == 0


def test_csv_files(tmp_path):
    acc = RDAccumulator()
    acc.add(reports([1000, 0], [10, 100], [3.0, 0.0]), num_dims=10)
    path = tmp_path / "rd.csv"
    rdcurve.write_csv(acc.curve(), path)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == list(rdcurve.CSV_COLUMNS)
    assert [float(r["t"]) for r in rows] == [1000, 0]
    assert float(rows[0]["rate_bpd"]) == 1.0 and rows[1]["psnr"] == "inf" and float(rows[1]["psnr"]) == math.inf

    assert rdcurve.baselines_csv_path(path) == tmp_path / "rd-baselines.csv"
    baseline = {"codec": "png", "family": "png", "lossless": True, "rate_bpd": 5.0, "rmse": 0.0, "psnr": None,
                "total_bytes": 7, "n_images": 1, "n_subpixels": 10, "extra": "ignored"}
    rdcurve.write_baselines_csv([baseline], rdcurve.baselines_csv_path(path))
    rows = list(csv.DictReader(rdcurve.baselines_csv_path(path).open()))
    assert rows[0]["codec"] == "png" and rows[0]["psnr"] == "inf"


def test_baseline_points_skip_what_cannot_code_the_set():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 10, 4), dtype=np.uint8), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)]
    skipped = []
    rows = rdcurve.baseline_points(images, on_skip=skipped.append)
    assert rows, "Pillow always provides PNG and WebP"
    assert all(r["n_images"] == 2 for r in rows)
    assert all(r["rmse"] == 0 for r in rows if r["lossless"])
    assert not any(r["family"] == "jpeg" for r in rows) and any("jpeg" in s for s in skipped)
    lossy_only = rdcurve.baseline_points(images[1:], lossless=False)
    assert lossy_only and not any(r["lossless"] for r in lossy_only)


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    acc = RDAccumulator(schedule_steps=1000)
    acc.add(reports([1000, 500, 1, 0], [10, 50, 300, 400], [30.0, 10.0, 4.0, 0.0]), num_dims=100)
    baselines = [
        {"codec": "webp-q0", "family": "webp", "lossless": False, "rate_bpd": 1.0, "rmse": 20.0},
        {"codec": "webp-q50", "family": "webp", "lossless": False, "rate_bpd": 2.0, "rmse": 8.0},
        {"codec": "png", "family": "png", "lossless": True, "rate_bpd": 5.0, "rmse": 0.0},
    ]
    for name, rows in (("plain.png", []), ("with-baselines.png", baselines)):
        rdcurve.plot(acc.curve(), tmp_path / name, rows)
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DiffcodecError, match="cannot write plot"):
        rdcurve.plot(acc.curve(), tmp_path / "no-such-folder" / "x.png")


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    acc = RDAccumulator()
    acc.add(reports([1000, 0], [10, 100], [3.0, 0.0]), num_dims=10)
    with pytest.raises(DiffcodecError, match="pip install matplotlib"):
        rdcurve.plot(acc.curve(), tmp_path / "x.png")


def test_rmse_at_rate_is_linear_in_log_rate_and_never_extrapolates():
    from diffcodec.rdcurve import rmse_at_rate

    curve = [(1.0, 4.0), (0.25, 10.0)]  # unsorted on purpose
    assert rmse_at_rate(curve, 0.5) == pytest.approx(7.0)  # halfway in log-rate
    assert rmse_at_rate(curve, 1.0) == 4.0
    assert rmse_at_rate(curve, 2.0) is None and rmse_at_rate(curve, 0.1) is None
