"""Issue 20's acceptance: a default file cut by `truncate` at several t decodes to ever better images near each t.

Uses the shipped model on a bundled 32×32 image (one encode and a few short decodes: seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from diffcodec.cli.main import main
from diffcodec.codec import POINT_T_RATIO
from diffcodec.models.checkpoint import DEFAULT_MODEL_PATH

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "images" / "cifar10-test-00000.png"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason="no shipped model")


def run(*args) -> dict:
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cut_default_file_decodes_near_each_t_and_improves(tmp_path, one_torch_thread):
    whole = tmp_path / "img.dfc"
    run("encode", EXAMPLE, "-o", whole)
    original = np.asarray(Image.open(EXAMPLE)).astype(np.float64)
    rmses, sizes = [], []
    for t in (900, 500, 300, 100):
        cut = tmp_path / f"img-{t}.dfc"
        out = run("truncate", whole, "--stop-at-t", t, "-o", cut)
        # The stated distance: the point reached has t ≥ T and t < POINT_T_RATIO · T (1.5; docs/codec.md).
        assert t <= out["t"] < POINT_T_RATIO * t, (t, out["t"])
        decoded = run("decode", cut, "-o", tmp_path / f"cut-{t}.png")
        assert decoded["t"] == out["t"]
        # decode --stop-at-t on the whole file gives the same image as the cut file.
        assert run("decode", whole, "--stop-at-t", t, "-o", tmp_path / f"whole-{t}.png")["t"] == out["t"]
        cut_pixels = np.asarray(Image.open(tmp_path / f"cut-{t}.png"))
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"whole-{t}.png")), cut_pixels)
        rmses.append(float(np.sqrt(np.mean((cut_pixels - original) ** 2))))
        sizes.append(out["output_bytes"])
    assert all(a > b for a, b in zip(rmses, rmses[1:])), rmses
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    assert rmses[0] < 80  # t = 1000 is the average image, not saturated noise (RMSE 139 before issue 20)


def test_point_t_ratio_inf_is_the_table_rule_before_the_grid():
    # CodecConfig(point_t_ratio=math.inf) reproduces the table before issue 20's grid (what
    # bench/results/rd_cifar500_v5_oldtable.json measures); the grid adds points at high t.
    import math

    from diffcodec.codec import _choose_points

    marks = list(range(10, 500, 10))  # 49 candidates: 40 lossy states, 8 partial points, the exact image
    ts = [1000 - 24 * i for i in range(40)]
    without = _choose_points(marks, None, lossy=40, ts=ts, ratio=math.inf)
    assert without == _choose_points(marks, None, lossy=40, ts=None)
    grid = _choose_points(marks, None, lossy=40, ts=ts)
    assert len(grid) > len(without)
