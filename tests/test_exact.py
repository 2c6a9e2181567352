"""The exact stage of format version 3 (diffcodec/exact.py): residual prediction round trips, costs, features."""

from __future__ import annotations

import math

import constriction
import numpy as np
import pytest

from diffcodec import exact
from diffcodec.entropy import decode_raw_bits, encode_raw_bits
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
    exact.write(enc, plan, exact.ExactContext(layout, mu, sd), x)
    words = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(words)
    return exact.read(dec, exact.LINEAR, exact.ExactContext(layout, mu, sd)).x, 32 * len(words), plan


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


# --------------------------------------------------------------------------- learned stage (format version 4)

def learned_inputs(h: int, w: int, seed: int = 0):
    """An RGB plane and context inputs: x̂_0 near x_0 and y = x_0 plus noise of σ_t, model space."""
    rng = np.random.default_rng(seed)
    layout = exact.ExactLayout(TileLayout(h, w, "RGB"))
    x = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    x0 = x / 127.5 - 1.0
    sigma = 0.04
    inputs = exact.ContextInputs(xhat=x0 + rng.normal(0, 0.02, x0.shape), y=x0 + rng.normal(0, sigma, x0.shape), sigma=sigma)
    return layout, x, inputs


def learned_round_trip(layout, net, x, inputs, mu=None, sd=None):
    """x: the planes (colour first); mu, sd: every plane's base Gaussians (only the rest's are used)."""
    plan = exact.plan_learned(layout, net, x, inputs, mu, sd)
    context = exact.ExactContext(layout, mu, sd, inputs, net)
    enc = constriction.stream.queue.RangeEncoder()
    encode_raw_bits(enc, plan.kind.method, 1)  # the method bit the stream puts before the exact stage
    exact.write(enc, plan, context, x)
    words = enc.get_compressed()
    dec = constriction.stream.queue.RangeDecoder(words)
    assert decode_raw_bits(dec, 1) == exact.LEARNED
    return exact.read(dec, exact.LEARNED, context).x, 32 * len(words), plan


@pytest.mark.parametrize("h, w", [(8, 8), (5, 7), (1, 1), (1, 6)])
def test_learned_round_trip_is_exact_and_the_estimate_matches_the_file(h, w):
    from conftest import tiny_context_net

    layout, x, inputs = learned_inputs(h, w)
    out, coded_bits, plan = learned_round_trip(layout, tiny_context_net(), [x], inputs)
    np.testing.assert_array_equal(out[0], x)
    assert len(out) == 1 and plan.method == exact.LEARNED and len(plan.scales) == len(layout.stages) and plan.rest is None
    # the estimate batches the six stages, the stream runs them one by one: equal up to the flush
    assert plan.bits <= coded_bits <= plan.bits + 64


def test_learned_stage_with_a_zero_network_is_the_noise_model():
    """A fresh ContextNet outputs δ = 0, λ = 0: x̂_0 with standard deviation σ_t, the baseline it learns from."""
    from diffcodec.models.context_net import ContextNet, ContextNetConfig

    layout, x, inputs = learned_inputs(8, 8)
    plan = exact.plan_learned(layout, ContextNet(ContextNetConfig(width=4, blocks=1)), [x], inputs)
    sd = np.full(x.size, inputs.sigma_pixels)
    expected = exact.stage_bits(x.reshape(-1), inputs.mu.reshape(-1), sd, exact.CONTEXT_SCALES)
    # same per-scale costs summed over stages: the best single scale bounds the per-stage choice
    assert plan.bits <= 1 + 4 * 6 + expected.min() + 1e-6
    assert exact.CONTEXT_SCALES[8] == 1.0


def test_learned_stage_reads_only_what_the_decoder_has():
    """Changing a subpixel coded at stage k changes no stage's parameters up to k (the decoder could not know it)."""
    from conftest import tiny_context_net

    net = tiny_context_net()
    layout, x, inputs = learned_inputs(6, 6)
    for k, stage in enumerate(layout.stages):
        other = x.copy()
        sel = layout.selection(stage)
        other[..., stage.channel][sel] = 255 - other[..., stage.channel][sel]
        for j in range(k + 1):
            known = [np.where(exact._known_mask(layout, layout.stages[j]), exact._normalized(inputs, v), 0.0) for v in (x, other)]
            a, b = (exact._context_outputs(net, layout, inputs, [r], [layout.stages[j]])[0] for r in known)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_context_masks_follow_the_stage_order():
    from diffcodec.models.context_net import stage_masks

    layout = exact.ExactLayout(TileLayout(5, 6, "RGB"))
    for stage, (known, coded) in zip(layout.stages, stage_masks(5, 6)):
        np.testing.assert_array_equal(coded.numpy().transpose(1, 2, 0)[..., stage.channel] == 1, layout.selection(stage))
        assert coded.sum() == layout.selection(stage).sum()
        np.testing.assert_array_equal(known.numpy().transpose(1, 2, 0) == 1, exact._known_mask(layout, stage))


def test_learned_stage_needs_a_network_and_a_colour_plane():
    from conftest import tiny_context_net

    net = tiny_context_net()
    assert exact.learned_available(exact.ExactLayout(TileLayout(4, 4, "RGB")), net)
    assert exact.learned_available(exact.ExactLayout(TileLayout(4, 4, "RGBA")), net)
    assert not exact.learned_available(exact.ExactLayout(TileLayout(4, 4, "RGB")), None)
    assert not exact.learned_available(exact.ExactLayout(TileLayout(4, 4, "L")), net)


@pytest.mark.parametrize("h, w", [(6, 5), (1, 1)])
def test_learned_stage_of_rgba_codes_alpha_with_the_linear_stage(h, w):
    """RGBA: the colour plane's six stages from the network, then the alpha plane's linear stage."""
    from conftest import tiny_context_net

    layout, x_planes, mu, sd = planes_for(h, w, "RGBA")
    x0 = x_planes[0] / 127.5 - 1.0
    inputs = exact.ContextInputs(xhat=mu[0] / 127.5 - 1.0, y=x0, sigma=0.04)
    out, coded_bits, plan = learned_round_trip(layout, tiny_context_net(), x_planes, inputs, mu, sd)
    for a, b in zip(out, x_planes):
        np.testing.assert_array_equal(a, b)
    assert len(out) == 2 and plan.rest is not None and plan.rest.method == exact.LINEAR
    assert len(plan.scales) == len(exact.colour_stages(layout)) and len(plan.rest.scales) == len(layout.rest().stages)
    assert plan.bits <= coded_bits <= plan.bits + 64


def test_bin_expectation_is_the_mean_of_the_gaussian_on_the_bins_values():
    """The preview of an offset inside a read bin: Σ k e^(−z²/2) / Σ e^(−z²/2) over k = 0..w−1 (closed form)."""
    rng = np.random.default_rng(0)
    mean, sd = rng.uniform(-30, 45, 500), rng.uniform(0.05, 20, 500)
    k = np.arange(16)[:, None]
    z2 = ((k - mean) / sd) ** 2
    weights = np.exp(-0.5 * (z2 - z2.min(0)))  # relative to the largest weight, or far means underflow to 0/0
    np.testing.assert_allclose(exact.bin_expectation(mean, sd, 16), (k * weights).sum(0) / weights.sum(0),
                               rtol=1e-12, atol=1e-12)
    # a mean far beyond an edge puts the value on that edge; one at the centre keeps it there; sd → 0 rounds
    got = exact.bin_expectation(np.array([-1e4, 1e4, 7.5, 3.2]), np.array([1.0, 1.0, 3.0, 0.01]), 16)
    np.testing.assert_allclose(got, [0.0, 15.0, 7.5, 3.0], atol=1e-9)
    # a mean 3 below the bin with sd 4 is ~2 inside it, where clipping the mean would show 0
    assert 1.5 < exact.bin_expectation(np.array([-3.0]), np.array([4.0]), 16)[0] < 3.0
