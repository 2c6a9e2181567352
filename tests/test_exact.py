"""The exact stage of format version 3 (diffcodec/exact.py): residual prediction round trips, costs, features."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest

from diffcodec import exact
from diffcodec.tiling import TileLayout


def planes_for(h: int, w: int, mode: str, seed: int = 0, correlated: bool = True):
    """Pixel planes with residuals that share a smooth field (spatially and across channels), plus μ and σ."""
    rng = np.random.default_rng(seed)
    layout = exact.ExactLayout(TileLayout(h, w, mode))
    x, mu, sd = [], [], []
    for m in layout.maps:
        field = rng.normal(0, 6, (h, w, 1))
        if correlated:
            field = (field + np.roll(field, 1, 0) + np.roll(field, 1, 1)) / 2
        mean = rng.uniform(20, 235, m.shape)
        noise = rng.normal(0, 2, m.shape)
        x.append(np.clip(np.round(mean + field + noise), 0, 255).astype(np.uint8))
        mu.append(mean)
        sd.append(np.full(m.shape, 5.0))
    return layout, x, mu, sd


def round_trip(layout, x, mu, sd) -> tuple[list[np.ndarray], int, exact.ExactPlan]:
    plan = exact.plan(layout, x, mu, sd)
    enc = constriction.stream.queue.RangeEncoder()
    exact.encode(enc, layout, plan, x, mu, sd)
    words = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(words)
    return exact.decode(dec, layout, mu, sd), 32 * len(words), plan


@pytest.mark.parametrize("h, w, mode", [(8, 8, "RGB"), (5, 7, "RGBA"), (9, 4, "L"), (1, 1, "RGB"), (1, 6, "L"), (3, 1, "RGBA")])
def test_round_trip_is_exact(h, w, mode):
    layout, x, mu, sd = planes_for(h, w, mode)
    out, _, _ = round_trip(layout, x, mu, sd)
    for a, b in zip(out, x):
        np.testing.assert_array_equal(a, b)


def test_explicit_weights_are_sent_when_they_pay_and_the_estimate_matches_the_file():
    layout, x, mu, sd = planes_for(48, 48, "RGB", correlated=True)
    out, coded_bits, plan = round_trip(layout, x, mu, sd)
    assert plan.weights is not None and len(plan.scales) == len(layout.stages) == 6
    # the plan's estimate is the real size up to the coder's flush (< 64 bits)
    assert plan.bits <= coded_bits <= plan.bits + 64
    # prediction beats coding every subpixel on its own with the best single scale
    flat_x = np.concatenate([p.reshape(-1) for p in x])
    flat_mu = np.concatenate([p.reshape(-1) for p in mu])
    independent = exact.stage_bits(flat_x, flat_mu, np.full(len(flat_x), 5.0)).min()
    assert coded_bits < 0.97 * independent


def test_tiny_images_keep_the_default_weights():
    layout, x, mu, sd = planes_for(2, 2, "RGB", correlated=False)
    assert exact.plan(layout, x, mu, sd).weights is None


def test_features_read_only_what_the_decoder_has():
    """A stage's features are the same whatever the residual holds where the decoder has decoded nothing yet."""
    layout, x, mu, sd = planes_for(7, 9, "RGB")
    residual = x[0].astype(np.float64) - mu[0]
    for stage in layout.stages:
        decoded = np.zeros(residual.shape, dtype=bool)
        if stage.second:
            decoded[layout.first] = True
            decoded[~layout.first, : stage.channel] = True
        else:
            decoded[layout.first, : stage.channel] = True
        garbage = np.where(decoded, residual, 1e6)
        np.testing.assert_array_equal(layout.features(stage, residual), layout.features(stage, garbage))
        np.testing.assert_array_equal(layout.features(stage, residual), layout.features(stage, exact._known(layout, stage, residual)))
        assert stage.num_weights == layout.features(stage, residual).shape[1]


def test_stage_order_and_weight_counts():
    layout = exact.ExactLayout(TileLayout(4, 4, "RGBA"))
    got = [(s.plane, int(s.second), s.channel, s.num_weights) for s in layout.stages]
    assert got == [(0, 0, 0, 0), (0, 0, 1, 1), (0, 0, 2, 2), (0, 1, 0, 2), (0, 1, 1, 5), (0, 1, 2, 8),
                   (1, 0, 0, 0), (1, 1, 0, 2)]
    assert [len(q) for q in layout.default_weights()] == [s.num_weights for s in layout.stages]


def test_neighbour_features_are_means_over_the_first_pass_pixels_inside_the_image():
    layout = exact.ExactLayout(TileLayout(4, 5, "L"))
    residual = np.arange(20, dtype=np.float64).reshape(4, 5, 1)
    stage = layout.stages[-1]
    assert stage.second and stage.num_weights == 2
    f = layout.features(stage, residual)
    # second-pass pixels in row-major order: (0,1) is the first; its 4-neighbours inside are (0,0), (0,2), (1,1)
    assert f[0, 0] == pytest.approx((0 + 2 + 6) / 3)
    # its ring: (2,0) and (2,2) at dy = 2, (1,3) at dx = 2 (dy = 1); the rest fall outside
    assert f[0, 1] == pytest.approx((10 + 12 + 8) / 3)


def test_stage_bits_closed_form():
    """−log₂ of Eq. 13's bin probability: Φ(½/σ) − Φ(−½/σ) at the mean; the edge bin takes the tail."""
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    bits = exact.stage_bits(np.array([128]), np.array([128.0]), np.array([1.0]))
    for c, b in zip(exact.EXACT_SCALES, bits):
        assert b == pytest.approx(-math.log2(phi(0.5 / c) - phi(-0.5 / c)), rel=1e-9)
    # x = 255 far above the mean: the survival function keeps the precision
    bits = exact.stage_bits(np.array([255]), np.array([0.0]), np.array([100.0]))
    c = exact.EXACT_SCALES[-1]
    assert bits[-1] == pytest.approx(-math.log2(1 - phi(254.5 / (100 * c))), rel=1e-6)
