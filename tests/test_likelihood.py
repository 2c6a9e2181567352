"""Tests of the negative ELBO of Ho et al. 2020 Eq. 5 (diffcodec/likelihood.py).

Two kinds of check: an *oracle* ε-model that returns the ε which makes x̂_0 equal the true
x_0 (so every L_{t−1} must vanish and L_0 has a closed form), and a tiny U-Net whose ELBO
must fall when it is trained for a few steps.  Networks run on one thread: the machine's
other core is training the real model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffcodec.diffusion import GaussianDiffusion, ScheduleConfig, ScheduleKind, VarianceKind
from diffcodec.likelihood import ELBOTerms, images_to_model_space, negative_elbo, prior_bpd, vb_terms_bpd
from diffcodec.models.train import Objective, training_losses

from conftest import make_tiny_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the network on one thread, as the codec runs it


def fixed_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8-valued images in model space, including the edge values 0 and 255."""
    pixels = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    pixels[0, 0, 0] = (0, 255, 128)
    return images_to_model_space(pixels)


def oracle(diffusion: GaussianDiffusion, x_start: torch.Tensor):
    """ε = (x_t/√ᾱ_t − x_0)/√(1/ᾱ_t − 1): the ε-prediction whose x̂_0 is exactly x_0.

    The library calls models with *original* timesteps; map them back to this chain's index.
    """
    index_of = {int(t): i for i, t in enumerate(diffusion.timesteps)}

    def model(x_t: torch.Tensor, t_orig: torch.Tensor):
        t = torch.tensor([index_of[int(v)] for v in t_orig])
        return diffusion.predict_eps_from_start(x_t, t, x_start), None

    return model


def decoder_nll_closed_form(diffusion: GaussianDiffusion, pixels: torch.Tensor) -> torch.Tensor:
    """L_0 in bits/dim when p_θ(x_0 | x_1) = N(x_0, β̃ clipped): interior bins Φ(h/σ) − Φ(−h/σ), edges Φ(h/σ)."""
    sigma = math.exp(0.5 * diffusion.posterior_log_variance_clipped[0])
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    h = 1 / 255
    interior, edge = -math.log(phi(h / sigma) - phi(-h / sigma)), -math.log(phi(h / sigma))
    x = pixels.reshape(len(pixels), -1).double()
    is_edge = (x < -0.999) | (x > 0.999)
    nats = torch.where(is_edge, torch.full_like(x, edge), torch.full_like(x, interior))
    return nats.mean(dim=1) / math.log(2)


# ---------------------------------------------------------------------------- structure

@pytest.fixture(scope="module")
def random_model_terms() -> tuple[ELBOTerms, int]:
    model = make_tiny_model(seed=0)
    chain = model.diffusion.spaced(6)
    x = fixed_images(2, 8)
    return negative_elbo(model, chain, model.variance, x, generator=torch.Generator().manual_seed(0)), chain.num_steps


def test_random_model_elbo_is_finite_positive_and_sums(random_model_terms):
    terms, steps = random_model_terms
    assert terms.prior.shape == (2,) and terms.decoder.shape == (2,) and terms.steps.shape == (2, steps - 1)
    for part in (terms.prior, terms.steps, terms.decoder, terms.total):
        assert part.dtype == torch.float64 and torch.isfinite(part).all()
    assert (terms.steps >= 0).all() and (terms.decoder > 0).all() and (terms.prior >= 0).all()
    torch.testing.assert_close(terms.total, terms.prior + terms.steps.sum(dim=1) + terms.decoder, rtol=1e-14, atol=0)
    assert (terms.total > 1.0).all()  # a random network is far worse than 1 bit/dim


def test_elbo_is_reproducible_with_a_seeded_generator():
    model = make_tiny_model(seed=0)
    chain = model.diffusion.spaced(4)
    x = fixed_images(2, 8)
    a = negative_elbo(model, chain, model.variance, x, generator=torch.Generator().manual_seed(7))
    b = negative_elbo(model, chain, model.variance, x, generator=torch.Generator().manual_seed(7))
    c = negative_elbo(model, chain, model.variance, x, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a.total, b.total, rtol=0, atol=0)
    assert not torch.equal(a.steps, c.steps)


# ---------------------------------------------------------------------------- prior

@pytest.mark.parametrize("kind, bound", [(ScheduleKind.COSINE, 1e-8), (ScheduleKind.LINEAR, 1e-4)])
def test_prior_term_closed_form_and_small_at_T1000(kind, bound):
    d = GaussianDiffusion.from_config(ScheduleConfig(kind=kind, num_steps=1000))
    x = fixed_images(3, 4).double()
    ab = float(np.prod(1.0 - d.betas))
    # KL(N(√ᾱ x, 1 − ᾱ) ‖ N(0, 1)) = ½(−1 − ln(1 − ᾱ) + (1 − ᾱ) + ᾱ x²) per dimension
    per_dim = 0.5 * (-1 - math.log1p(-ab) + (1 - ab) + ab * x**2)
    ref = per_dim.reshape(3, -1).mean(dim=1) / math.log(2)
    got = prior_bpd(d, x)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-15)
    assert (got >= 0).all() and (got < bound).all()


# ---------------------------------------------------------------------------- the oracle

@pytest.mark.parametrize("respaced", [False, True], ids=["full-chain", "respaced"])
def test_oracle_model_has_zero_step_terms_and_closed_form_decoder(respaced):
    base = GaussianDiffusion.from_config(ScheduleConfig(kind=ScheduleKind.COSINE, num_steps=40))
    chain = base.respace([0, 1, 5, 17, 30, 39]) if respaced else base
    x = fixed_images(3, 4).double()
    terms = negative_elbo(oracle(chain, x), chain, VarianceKind.FIXED_SMALL, x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms.steps, torch.zeros_like(terms.steps), rtol=0, atol=1e-9)
    torch.testing.assert_close(terms.decoder, decoder_nll_closed_form(chain, x), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(terms.total, terms.prior + terms.decoder, rtol=1e-9, atol=1e-9)


def test_vb_terms_are_kl_of_q_against_p_for_a_wrong_mean():
    """A model whose x̂_0 is off by δ everywhere: L_{t−1} = ½ (c₁ δ)² / β̃ nats per dim (equal variances)."""
    d = GaussianDiffusion.from_config(ScheduleConfig(kind=ScheduleKind.LINEAR, num_steps=50))
    x0 = torch.zeros(1, 3, 2, 2, dtype=torch.float64)
    delta = 0.25
    t = torch.tensor([20])
    xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    eps = d.predict_eps_from_start(xt, t, x0 + delta)
    got = vb_terms_bpd(d, eps, None, VarianceKind.FIXED_SMALL, x0, xt, t)
    c1, var = d.posterior_mean_coef1[20], d.posterior_variance[20]
    assert float(got) == pytest.approx(0.5 * (c1 * delta) ** 2 / var / math.log(2), rel=1e-9)


# ---------------------------------------------------------------------------- learning lowers it

def test_training_a_tiny_model_lowers_its_elbo():
    """30 hybrid-loss steps at the chain's own timesteps on 8 fixed 8×8 images; same noise before and after."""
    model = make_tiny_model(seed=0)  # a fresh copy: the session fixture must stay untouched
    chain = model.diffusion.spaced(8)
    x = fixed_images(8, 8)

    def elbo() -> float:
        return float(negative_elbo(model, chain, model.variance, x, generator=torch.Generator().manual_seed(0)).total.mean())

    before = elbo()
    net = model.net.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    t = torch.from_numpy(chain.timesteps)[torch.arange(8) % chain.num_steps]
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        noise = torch.randn(x.shape, generator=gen)
        loss = training_losses(net, model.diffusion, model.config, Objective.HYBRID, x, t, noise)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    after = elbo()
    assert math.isfinite(after)
    assert after < 0.8 * before, (before, after)
