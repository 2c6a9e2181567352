"""The ``mean`` reconstruction: the average image where x_t says nothing, the model's x̂_0 where it says much."""

from __future__ import annotations

import numpy as np

from diffcodec.codec import _Chain
from diffcodec.reconstruct import PRIOR_MEAN, mean_image
from diffcodec.tiling import TileLayout


def test_mean_image_is_the_prior_mean_at_T_and_the_clipped_prediction_at_low_noise(tiny_model):
    layout = TileLayout(20, 40, "RGB")
    chain = _Chain(tiny_model, layout, 50, 13, spacing="quad")
    xhat = np.random.default_rng(0).normal(0.0, 30.0, int(np.prod(layout.shape)))  # saturated, as at t = T
    top = mean_image(chain, xhat, chain.num_steps - 1).reshape(layout.shape)
    np.testing.assert_allclose(top, np.broadcast_to(np.reshape(PRIOR_MEAN, (1, 3, 1, 1)), layout.shape), atol=1e-3)
    low = mean_image(chain, xhat, 0)
    np.testing.assert_allclose(low, np.clip(xhat, -1, 1), atol=1e-3)


def test_mean_image_of_a_grey_image_is_grey(tiny_model):
    layout = TileLayout(8, 8, "L")
    chain = _Chain(tiny_model, layout, 50, 13, spacing="quad")
    top = mean_image(chain, np.zeros(int(np.prod(layout.shape))), chain.num_steps - 1).reshape(layout.shape)
    assert np.ptp(top) < 1e-12
