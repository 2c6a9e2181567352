"""Tests of the Gaussian diffusion process (diffcodec/diffusion.py) against closed forms.

Every reference value here is computed independently of the module, in float64,
from the formulas of Ho et al. 2020 (Eq. 4, 6, 7, 15) and Nichol & Dhariwal 2021
(Eq. 15, 17): products of Gaussians, cumulative products of (1 − β), cos².
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffcodec.diffusion import (
    GaussianDiffusion,
    ScheduleConfig,
    ScheduleKind,
    VarianceKind,
    cosine_betas,
    linear_betas,
    make_betas,
    spaced_timesteps,
)


def cosine_alpha_bar(t: float, T: int, s: float = 0.008) -> float:
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2) (Nichol & Dhariwal 2021 Eq. 17)."""

    def f(u: float) -> float:
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    return f(t) / f(0)


@pytest.fixture(scope="module", params=[ScheduleKind.LINEAR, ScheduleKind.COSINE], ids=lambda k: k.value)
def diffusion(request) -> GaussianDiffusion:
    return GaussianDiffusion.from_config(ScheduleConfig(kind=request.param, num_steps=1000))


def idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# ---------------------------------------------------------------------------- schedules

@pytest.mark.parametrize("T", [1000, 250, 4000])
def test_linear_betas_endpoints_scale_with_T(T):
    betas = linear_betas(T)
    scale = 1000 / T
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert betas[0] == pytest.approx(1e-4 * scale, rel=1e-15)
    assert betas[-1] == pytest.approx(0.02 * scale, rel=1e-15)
    np.testing.assert_allclose(np.diff(betas), (0.02 - 1e-4) * scale / (T - 1), rtol=1e-9)


@pytest.mark.parametrize("T", [1000, 100])
@pytest.mark.parametrize("frac", [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_cosine_alpha_bar_matches_closed_form(T, frac):
    t = max(1, round(frac * T))  # paper step t is array index t − 1
    d = GaussianDiffusion(cosine_betas(T))
    assert d.alphas_cumprod[t - 1] == pytest.approx(cosine_alpha_bar(t, T), rel=1e-12)


def test_cosine_last_beta_is_clipped_at_0999():
    betas = cosine_betas(1000)
    assert betas[-1] == 0.999  # f(T) = cos²(π/2) ≈ 0, so 1 − f(T)/f(T−1) ≈ 1 is clipped
    assert (betas[:-1] < 0.999).all()
    assert (np.diff(betas) > 0).all()


def test_make_betas_accepts_strings_and_rejects_unknown():
    np.testing.assert_array_equal(make_betas("linear", 10), linear_betas(10))
    np.testing.assert_array_equal(make_betas("cosine", 10), cosine_betas(10))
    with pytest.raises(ValueError):
        make_betas("quadratic", 10)


def test_schedule_config_round_trips_through_dict():
    c = ScheduleConfig(kind=ScheduleKind.LINEAR, num_steps=123)
    assert c.to_dict() == {"kind": "linear", "num_steps": 123}
    assert ScheduleConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("betas", [[0.1, 0.0], [0.5, 1.5], [[0.1, 0.2]], [-0.1]])
def test_bad_betas_are_refused(betas):
    with pytest.raises(ValueError):
        GaussianDiffusion(betas)


def test_alphas_cumprod_is_the_product_of_one_minus_beta(diffusion):
    ref = np.array([math.prod(1.0 - b for b in diffusion.betas[: i + 1]) for i in (0, 1, 9, 499, 999)])
    np.testing.assert_allclose(diffusion.alphas_cumprod[[0, 1, 9, 499, 999]], ref, rtol=1e-12)
    assert diffusion.alphas_cumprod_prev[0] == 1.0
    np.testing.assert_array_equal(diffusion.alphas_cumprod_prev[1:], diffusion.alphas_cumprod[:-1])


# ---------------------------------------------------------------------------- q(x_t | x_0)

def test_q_mean_variance_closed_form(diffusion):
    x0 = torch.linspace(-1, 1, 2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 3, 4, 4)
    for i in (0, 17, 500, 999):
        ab = float(np.prod(1.0 - diffusion.betas[: i + 1]))
        mean, var, log_var = diffusion.q_mean_variance(x0, idx(i, i))
        torch.testing.assert_close(mean, math.sqrt(ab) * x0, rtol=1e-12, atol=0)
        torch.testing.assert_close(var, torch.full_like(x0, 1 - ab), rtol=1e-12, atol=0)
        torch.testing.assert_close(log_var, torch.full_like(x0, math.log(1 - ab)), rtol=1e-12, atol=1e-15)


def test_q_sample_is_the_reparameterised_closed_form(diffusion):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = idx(0, 300, 999)
    out = diffusion.q_sample(x0, t, noise)
    for b, i in enumerate(t.tolist()):
        ab = float(np.prod(1.0 - diffusion.betas[: i + 1]))
        torch.testing.assert_close(out[b], math.sqrt(ab) * x0[b] + math.sqrt(1 - ab) * noise[b], rtol=1e-12, atol=1e-15)


def test_q_sample_empirical_moments(diffusion):
    """Mean √ᾱ x_0 and variance 1 − ᾱ over 2·10⁵ draws (5σ tolerances)."""
    n = 200_000
    gen = torch.Generator().manual_seed(1)
    i = 250
    ab = float(np.prod(1.0 - diffusion.betas[: i + 1]))
    x0 = torch.full((n, 1, 1, 1), 0.6, dtype=torch.float64)
    xt = diffusion.q_sample(x0, torch.full((n,), i), torch.randn(x0.shape, generator=gen, dtype=torch.float64))
    se = math.sqrt((1 - ab) / n)
    assert abs(float(xt.mean()) - math.sqrt(ab) * 0.6) < 5 * se
    assert abs(float(xt.var()) - (1 - ab)) < 5 * (1 - ab) * math.sqrt(2 / n)


# ---------------------------------------------------------------------------- the posterior

def bayes_posterior(betas: np.ndarray, i: int, x0: np.ndarray, xt: np.ndarray) -> tuple[np.ndarray, float]:
    """q(x_{t−1} | x_t, x_0) ∝ N(x_t; √α_t x_{t−1}, β_t) · N(x_{t−1}; √ᾱ_{t−1} x_0, 1 − ᾱ_{t−1}),
    as a product of Gaussians in x_{t−1}: precision = α_t/β_t + 1/(1 − ᾱ_{t−1})."""
    alpha = 1.0 - betas[i]
    ab_prev = float(np.prod(1.0 - betas[:i]))  # ᾱ_{t−1}; 1 for the first step
    if i == 0:  # x_0 is known exactly: a point mass
        return x0.copy(), 0.0
    prec = alpha / betas[i] + 1.0 / (1.0 - ab_prev)
    mean = (math.sqrt(alpha) * xt / betas[i] + math.sqrt(ab_prev) * x0 / (1.0 - ab_prev)) / prec
    return mean, 1.0 / prec


@pytest.mark.parametrize("i", [0, 1, 2, 10, 400, 998, 999])
def test_posterior_matches_product_of_gaussians(diffusion, i):
    rng = np.random.default_rng(i)
    x0 = rng.uniform(-1, 1, (2, 3, 4, 4))
    xt = rng.standard_normal((2, 3, 4, 4))
    ref_mean, ref_var = bayes_posterior(diffusion.betas, i, x0, xt)
    mean, var, log_var = diffusion.q_posterior_mean_variance(torch.from_numpy(x0), torch.from_numpy(xt), idx(i, i))
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(var.numpy(), ref_var, rtol=1e-10, atol=1e-300)
    if i > 0:
        np.testing.assert_allclose(log_var.numpy(), math.log(ref_var), rtol=1e-12)


def test_posterior_variance_is_beta_tilde(diffusion):
    """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t (Ho et al. 2020 Eq. 7); β̃_1 = 0, its log clipped to log β̃_2."""
    ab = np.cumprod(1.0 - diffusion.betas)
    ab_prev = np.append(1.0, ab[:-1])
    ref = (1 - ab_prev) / (1 - ab) * diffusion.betas
    np.testing.assert_allclose(diffusion.posterior_variance, ref, rtol=1e-12)
    assert diffusion.posterior_variance[0] == 0.0
    assert (diffusion.posterior_variance <= diffusion.betas).all()
    assert diffusion.posterior_log_variance_clipped[0] == pytest.approx(math.log(ref[1]), rel=1e-14)
    np.testing.assert_allclose(diffusion.posterior_log_variance_clipped[1:], np.log(ref[1:]), rtol=1e-12)


def test_respaced_posterior_is_the_bayes_posterior_of_the_original_marginals(diffusion):
    """Between kept steps s < t: q(x_s | x_t, x_0) with α_{t|s} = ᾱ_t/ᾱ_s, from the original ᾱ only."""
    keep = [0, 3, 40, 500, 999]
    spaced = diffusion.respace(keep)
    ab = np.cumprod(1.0 - diffusion.betas)
    rng = np.random.default_rng(5)
    x0, xt = rng.uniform(-1, 1, (1, 3, 2, 2)), rng.standard_normal((1, 3, 2, 2))
    for j in range(1, len(keep)):
        s, t = keep[j - 1], keep[j]
        a_ts = ab[t] / ab[s]
        prec = a_ts / (1 - a_ts) + 1 / (1 - ab[s])
        ref = (math.sqrt(a_ts) * xt / (1 - a_ts) + math.sqrt(ab[s]) * x0 / (1 - ab[s])) / prec
        mean, var, _ = spaced.q_posterior_mean_variance(torch.from_numpy(x0), torch.from_numpy(xt), idx(j))
        np.testing.assert_allclose(mean.numpy(), ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(var.numpy(), 1 / prec, rtol=1e-9)


# ---------------------------------------------------------------------------- respacing

@pytest.mark.parametrize("T", [1, 2, 7, 1000])
def test_spaced_timesteps_length_ends_sorted_unique(T):
    for count in range(1, T + 1):
        ts = spaced_timesteps(T, count)
        assert len(ts) == count  # the header stores S: a shorter chain would desynchronise decoders
        assert ts == sorted(set(ts))
        assert ts[-1] == T - 1
        if count >= 2:
            assert ts[0] == 0


@pytest.mark.parametrize("count", [0, -1, 1001])
def test_spaced_timesteps_rejects_bad_counts(count):
    with pytest.raises(ValueError):
        spaced_timesteps(1000, count)


def test_respace_with_every_step_is_the_original_chain(diffusion):
    full = diffusion.spaced(diffusion.num_steps)
    np.testing.assert_allclose(full.betas, diffusion.betas, rtol=1e-9)
    np.testing.assert_allclose(full.alphas_cumprod, diffusion.alphas_cumprod, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(full.timesteps, np.arange(diffusion.num_steps))


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 100])
def test_respaced_alpha_bar_at_kept_steps_is_the_original(diffusion, steps):
    keep = spaced_timesteps(diffusion.num_steps, steps)
    spaced = diffusion.spaced(steps)
    assert spaced.num_steps == steps
    np.testing.assert_array_equal(spaced.timesteps, keep)
    # β_i = 1 − ᾱ_k/ᾱ_prev is rounded near 1, so ᾱ is exact to ~1e-16 absolute, not relative (ᾱ_T ≈ 2e-9 for cosine).
    np.testing.assert_allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[keep], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(spaced.model_timesteps(torch.arange(steps)), torch.tensor(keep, dtype=torch.int64))


def test_respace_of_a_respaced_chain_keeps_original_timesteps(diffusion):
    once = diffusion.respace([0, 10, 20, 500, 999])
    twice = once.respace([1, 3, 4])  # indices into `once`
    np.testing.assert_array_equal(twice.timesteps, [10, 500, 999])
    np.testing.assert_allclose(twice.alphas_cumprod, diffusion.alphas_cumprod[[10, 500, 999]], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("keep", [[], [-1, 3], [5, 1000]])
def test_respace_rejects_steps_outside_the_chain(diffusion, keep):
    with pytest.raises(ValueError):
        diffusion.respace(keep)


# ---------------------------------------------------------------------------- p

def test_predict_start_from_eps_inverts_q_sample(diffusion):
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(4, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = idx(0, 1, 500, 999)
    xt = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(diffusion.predict_start_from_eps(xt, t, noise), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(diffusion.predict_eps_from_start(xt, t, x0), noise, rtol=0, atol=1e-9)


def test_p_mean_with_the_true_noise_is_the_posterior_mean(diffusion):
    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(3, 3, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = idx(1, 100, 700)
    xt = diffusion.q_sample(x0, t, noise)
    p = diffusion.p_mean_variance(xt, t, noise, None, VarianceKind.FIXED_SMALL)
    mean, _, log_var = diffusion.q_posterior_mean_variance(x0, xt, t)
    torch.testing.assert_close(p["pred_xstart"], x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(p["mean"], mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(p["log_variance"], log_var)


def test_p_mean_variance_clips_x0_hat():
    d = GaussianDiffusion(linear_betas(100))
    xt = torch.full((1, 1, 2, 2), 5.0, dtype=torch.float64)
    t = idx(50)
    p = d.p_mean_variance(xt, t, torch.zeros_like(xt), None, VarianceKind.FIXED_SMALL)
    assert float(p["pred_xstart"].max()) == 1.0
    unclipped = d.p_mean_variance(xt, t, torch.zeros_like(xt), None, VarianceKind.FIXED_SMALL, clip_denoised=False)
    assert float(unclipped["pred_xstart"].min()) > 1.0


def test_p_log_variance_learned_range_endpoints_and_midpoint(diffusion):
    t = idx(0, 1, 250, 999)
    like = torch.zeros(4, 3, 2, 2, dtype=torch.float64)
    lo = np.log(np.append(diffusion.posterior_variance[1], diffusion.posterior_variance[1:]))[t.numpy()]
    hi = np.log(diffusion.betas)[t.numpy()]

    def at(v: float) -> np.ndarray:
        out = diffusion.p_log_variance(t, like, torch.full_like(like, v), VarianceKind.LEARNED_RANGE)
        return out.numpy()[:, 0, 0, 0]

    np.testing.assert_allclose(at(-1.0), lo, rtol=1e-12)  # v = −1: log β̃ (clipped at t=1)
    np.testing.assert_allclose(at(1.0), hi, rtol=1e-12)  # v = +1: log β
    np.testing.assert_allclose(at(0.0), (lo + hi) / 2, rtol=1e-12)  # Nichol & Dhariwal Eq. 15 interpolates logs


def test_p_log_variance_fixed_kinds(diffusion):
    t = idx(0, 1, 999)
    like = torch.zeros(3, 1, 1, 1, dtype=torch.float64)
    small = diffusion.p_log_variance(t, like, None, VarianceKind.FIXED_SMALL).numpy().ravel()
    large = diffusion.p_log_variance(t, like, None, "fixed_large").numpy().ravel()
    np.testing.assert_allclose(small, diffusion.posterior_log_variance_clipped[[0, 1, 999]], rtol=1e-14)
    # improved-diffusion's fixed_large: β̃_2 at the first step, β after
    np.testing.assert_allclose(large, np.log([diffusion.posterior_variance[1], diffusion.betas[1], diffusion.betas[999]]))
    with pytest.raises(ValueError):
        diffusion.p_log_variance(t, like, None, VarianceKind.LEARNED_RANGE)


def test_exact_schedule_is_close_to_the_float_one_and_respaces_exactly():
    """Format version 5's schedule (exactmath's cos and log) within float rounding of numpy's."""
    from diffcodec.diffusion import ScheduleConfig

    a = GaussianDiffusion.from_config(ScheduleConfig())
    b = GaussianDiffusion.from_config(ScheduleConfig(), exact=True)
    assert b.exact and not a.exact
    np.testing.assert_allclose(b.betas, a.betas, rtol=1e-12)
    np.testing.assert_allclose(b.posterior_log_variance_clipped, a.posterior_log_variance_clipped, rtol=1e-13)
    np.testing.assert_allclose(b.log_betas, np.log(b.betas), rtol=1e-14)
    assert b.spaced(50, "quad").exact
    # pinned: the cosine schedule's first and last β of format version 5
    assert (b.betas[0].hex(), b.betas[-1].hex()) == ("0x1.5a51329e24000p-15", "0x1.ff7ced916872bp-1")
