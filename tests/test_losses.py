"""Tests of the pure KL and likelihood functions (diffcodec/losses.py) against closed forms.

Reference values use Python's ``math`` in float64 (erf, log), never the module's own helpers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffcodec.channel import kl_nats
from diffcodec.losses import (
    LOG2,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    nats_to_bits_per_dim,
    normal_kl,
)


def t64(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------- normal_kl (nats)

def test_kl_of_equal_gaussians_is_zero():
    mean = torch.linspace(-3, 3, 7, dtype=torch.float64)
    logvar = torch.linspace(-8, 2, 7, dtype=torch.float64)
    torch.testing.assert_close(normal_kl(mean, logvar, mean, logvar), torch.zeros(7, dtype=torch.float64), rtol=0, atol=1e-15)


def test_kl_hand_derived_values_and_asymmetry():
    # KL(N(1, 1) ‖ N(0, 4)) = ½(−1 + ln 4 + 1/4 + 1/4) = ln 2 − 1/4
    forward = normal_kl(t64(1.0), t64(0.0), t64(0.0), t64(math.log(4.0)))
    # KL(N(0, 4) ‖ N(1, 1)) = ½(−1 − ln 4 + 4 + 1) = 2 − ln 2
    backward = normal_kl(t64(0.0), t64(math.log(4.0)), t64(1.0), t64(0.0))
    assert float(forward) == pytest.approx(math.log(2) - 0.25, rel=1e-14)
    assert float(backward) == pytest.approx(2 - math.log(2), rel=1e-14)
    assert float(forward) != pytest.approx(float(backward), rel=0.1)
    # a pure mean shift with unit variances: ½ Δμ²
    assert float(normal_kl(t64(0.3), t64(0.0), t64(-0.5), t64(0.0))) == pytest.approx(0.5 * 0.8**2, rel=1e-14)


def test_kl_matches_monte_carlo():
    """E_q[log q(z) − log p(z)] over 4·10⁵ draws, within 5 standard errors."""
    m1, s1, m2, s2 = 0.4, 0.7, -0.2, 1.3
    z = np.random.default_rng(0).normal(m1, s1, 400_000)
    log_ratio = (-0.5 * ((z - m1) / s1) ** 2 - math.log(s1)) - (-0.5 * ((z - m2) / s2) ** 2 - math.log(s2))
    kl = float(normal_kl(t64(m1), t64(2 * math.log(s1)), t64(m2), t64(2 * math.log(s2))))
    assert abs(log_ratio.mean() - kl) < 5 * log_ratio.std() / math.sqrt(len(z))
    assert kl > 0


def test_kl_agrees_with_the_channel_simulation_kl():
    rng = np.random.default_rng(1)
    mq, mp = rng.normal(size=50), rng.normal(size=50)
    sq, sp = rng.uniform(0.1, 2, 50), rng.uniform(0.1, 2, 50)
    ours = normal_kl(*(torch.from_numpy(v) for v in (mq, 2 * np.log(sq), mp, 2 * np.log(sp)))).numpy()
    np.testing.assert_allclose(ours, kl_nats(mq, sq, mp, sp), rtol=1e-10, atol=1e-14)
    assert (ours >= 0).all()


# ---------------------------------------------------------------------------- Eq. 13 decoder (nats)

PIXELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0


def direct_bin_probabilities(mean: float, std: float) -> np.ndarray:
    """P(pixel v) = Φ((x_v + 1/255 − μ)/σ) − Φ((x_v − 1/255 − μ)/σ), outer bins open to ±∞."""
    phi = lambda z: 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))  # noqa: E731
    out = []
    for v in range(256):
        x = v / 127.5 - 1.0
        hi = 1.0 if v == 255 else phi((x + 1 / 255 - mean) / std)
        lo = 0.0 if v == 0 else phi((x - 1 / 255 - mean) / std)
        out.append(hi - lo)
    return np.array(out)


MEANS = [-1.3, -1.0, -0.999, -0.5, 0.0, 0.00392, 0.77, 1.0, 1.4]
STDS = [1e-3, 0.004, 0.05, 0.5, 3.0]


@pytest.mark.parametrize("mean", MEANS)
@pytest.mark.parametrize("std", STDS)
def test_discretized_probabilities_sum_to_one(mean, std):
    ll = discretized_gaussian_log_likelihood(PIXELS, torch.full_like(PIXELS, mean), torch.full_like(PIXELS, math.log(std)))
    assert torch.isfinite(ll).all() and (ll <= 0).all()
    assert float(ll.exp().sum()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("mean", MEANS)
@pytest.mark.parametrize("std", STDS)
def test_discretized_matches_direct_cdf(mean, std):
    ll = discretized_gaussian_log_likelihood(PIXELS, torch.full_like(PIXELS, mean), torch.full_like(PIXELS, math.log(std)))
    ref = direct_bin_probabilities(mean, std)
    big = ref > 1e-10  # where the module's 1e-12 floor and float cancellation do not matter
    np.testing.assert_allclose(ll.numpy()[big], np.log(ref[big]), rtol=1e-6, atol=1e-9)
    # everywhere: the probability itself is right to ~1e-12 absolute
    np.testing.assert_allclose(ll.exp().numpy(), ref, rtol=0, atol=2e-12)


def test_discretized_edge_bins_are_open():
    """Pixel 0 owns (−∞, −1 + 1/255] and 255 owns [1 − 1/255, ∞): a mean far outside still has mass there."""
    ll = discretized_gaussian_log_likelihood(t64(-1.0, 1.0), t64(-5.0, 5.0), t64(math.log(0.01), math.log(0.01)))
    torch.testing.assert_close(ll, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_discretized_float32_inputs_agree_with_float64():
    """What the trainer feeds it: float32 pixels from images_to_model_space."""
    x32 = (torch.arange(256, dtype=torch.float32) / 127.5 - 1.0)
    means = torch.linspace(-0.9, 0.9, 256)
    log_scales = torch.full((256,), math.log(0.05))
    ll32 = discretized_gaussian_log_likelihood(x32, means, log_scales)
    ll64 = discretized_gaussian_log_likelihood(x32.double(), means.double(), log_scales.double())
    assert ll32.dtype == torch.float32
    moderate = ll64 > -20
    torch.testing.assert_close(ll32.double()[moderate], ll64[moderate], rtol=1e-3, atol=1e-4)


def test_standard_normal_cdf_values():
    x = t64(-3.0, -1.0, 0.0, 0.5, 2.0)
    ref = [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()]
    np.testing.assert_allclose(approx_standard_normal_cdf(x).numpy(), ref, rtol=1e-14)
    assert float(approx_standard_normal_cdf(t64(1.959963984540054))) == pytest.approx(0.975, rel=1e-12)


# ---------------------------------------------------------------------------- units

def test_nats_to_bits_per_dim():
    nats = torch.zeros(2, 3, 4, 5, dtype=torch.float64)
    nats[0] = LOG2  # one bit per dimension
    nats[1, 0, 0, 0] = 60 * LOG2  # 60 bits in one of 60 dimensions
    torch.testing.assert_close(nats_to_bits_per_dim(nats), t64(1.0, 1.0), rtol=1e-14, atol=0)
    nats[1, 2, 3, 4] = 60 * LOG2
    assert float(nats_to_bits_per_dim(nats)[1]) == pytest.approx(2.0, rel=1e-14)
    assert LOG2 == math.log(2)
