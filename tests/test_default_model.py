"""The shipped model: it loads, and the codec round-trips a bundled image with it.

Compression targets live in BENCHMARKS.md; the bounds here only catch a broken model
(raw pixels cost 8 bits/dim, so anything near that means the model is not working).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.images import load_folder_tiles, load_image
from diffcodec.models.checkpoint import DEFAULT_MODEL_PATH, load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.exists(), reason="no shipped model")


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model()


def test_default_model_round_trip_on_a_bundled_image(model):
    img = load_image(EXAMPLES / "cifar10-test-00000.png")
    result = encode(img.pixels, img.mode, model, CodecConfig(steps=20))
    assert result.bits_total / img.pixels.size < 7.0
    np.testing.assert_array_equal(decode(result.data, model).pixels, img.pixels)
    # A lossy prefix is a recognisable image: much closer than a flat grey guess.
    lossy = decode(result.data, model, stop_at_t=result.steps[-2].t)
    flat = np.sqrt(np.mean((img.pixels.astype(float) - img.pixels.mean()) ** 2))
    assert np.sqrt(np.mean((lossy.pixels.astype(float) - img.pixels) ** 2)) < 0.7 * flat


def test_default_model_ships_a_context_network_that_pays(model):
    """The learned exact stage round-trips with the shipped networks and beats the linear one on a real image."""
    img = load_image(EXAMPLES / "cifar10-test-00000.png")
    assert model.context is not None and model.codec_identity != model.identity
    sizes = {}
    for method in ("linear", "learned"):
        result = encode(img.pixels, img.mode, model, CodecConfig(steps=20, exact_from_t=30, exact_method=method))
        np.testing.assert_array_equal(decode(result.data, model).pixels, img.pixels)
        sizes[method] = result.bits_total
    assert sizes["learned"] < sizes["linear"]


@pytest.mark.slow
def test_default_model_likelihood_on_cifar_test(model, shared_data):
    from diffcodec.evaluate import dataset_bpd

    images = load_folder_tiles(shared_data / "cifar10-test-png", limit=100)
    assert dataset_bpd(model, images, steps=100)["bpd"] < 6.0
