"""Tests of the context network's training (models/train_context.py) and of ``diffcodec train-context``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffcodec import exact
from diffcodec.cli.main import main
from diffcodec.models.checkpoint import load_model, save_checkpoint
from diffcodec.models.context_net import ContextNet, ContextNetConfig
from diffcodec.models.train_context import (
    ContextTrainConfig, discretized_gaussian_bits, evaluate, make_pairs, stage_bits, train_context_net,
)
from diffcodec.tiling import TileLayout

from conftest import make_tiny_model, tiny_checkpoint_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n: int = 6, seed: int = 0) -> np.ndarray:
    """Smooth ramps with a little noise: decoded neighbours predict a pixel far better than the noise model."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    slopes = rng.uniform(-3, 3, (n, 1, 1, 2, 3))
    ramps = rng.integers(60, 200, (n, 1, 1, 3)) + slopes[..., 0, :] * yy[..., None] + slopes[..., 1, :] * xx[..., None]
    return np.clip(np.round(ramps + rng.normal(0, 1, ramps.shape)), 0, 255).astype(np.uint8)


def test_training_loss_is_the_codec_cost():
    """stage_bits of a network equals what the codec's learned stage estimates for the same inputs."""
    net = make_tiny_model(seed=0, context=True).context
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    x0 = x / 127.5 - 1
    inputs = exact.ContextInputs(xhat=x0 + rng.normal(0, 0.02, x0.shape), y=x0 + rng.normal(0, 0.05, x0.shape), sigma=0.05)
    layout = exact.ExactLayout(TileLayout(8, 8, "RGB"))
    r = exact._normalized(inputs, x)
    outputs = exact._context_outputs(net, layout, inputs, [r] * 6, layout.stages)
    codec = 0.0
    for stage, (delta, lam) in zip(layout.stages, outputs):
        mean, sd = exact._learned_params(layout, stage, inputs, delta, lam, 1.0)
        codec += float(exact.stage_bits(x[..., stage.channel][layout.selection(stage)], mean, sd, np.array([1.0]))[0])
    chw = lambda a: torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32))  # noqa: E731
    with torch.no_grad():
        _, per_image = stage_bits(net, chw(x.astype(np.float64)), chw(inputs.xhat), chw(inputs.y), torch.tensor([0.05]))
    assert float(per_image[0]) == pytest.approx(codec, rel=1e-4)


def test_discretized_gaussian_bits_closed_form():
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    bits = discretized_gaussian_bits(torch.tensor([128.0, 0.0, 255.0]), torch.tensor([128.0, 3.0, 250.0]), torch.tensor([2.0, 2.0, 2.0]))
    assert float(bits[0]) == pytest.approx(-math.log2(phi(0.25) - phi(-0.25)), rel=1e-5)
    assert float(bits[1]) == pytest.approx(-math.log2(phi(-2.5 / 2)), rel=1e-5)  # the edge bin takes the lower tail
    assert float(bits[2]) == pytest.approx(-math.log2(1 - phi(4.5 / 2)), rel=1e-5)


def test_pairs_are_noised_states_of_the_images():
    model = make_tiny_model(seed=0)
    imgs = images(4)
    config = ContextTrainConfig(draws_per_image=2, timesteps=(10, 50))
    pairs = make_pairs(model, imgs, config)
    assert pairs["pixels"].shape == (8, 3, 32, 32) and pairs["pixels"].dtype == torch.uint8
    np.testing.assert_array_equal(pairs["pixels"][:4].permute(0, 2, 3, 1).numpy(), imgs)
    d = model.diffusion
    allowed = [math.sqrt((1 - d.alphas_cumprod[t]) / d.alphas_cumprod[t]) for t in (10, 50)]
    assert all(min(abs(float(s) - a) for a in allowed) < 1e-6 for s in pairs["sigma"])
    # y = x_t/√ᾱ is x_0 plus noise of σ_t
    x0 = pairs["pixels"].float() / 127.5 - 1
    z = (pairs["y"] - x0) / pairs["sigma"].view(-1, 1, 1, 1)
    assert abs(float(z.std()) - 1) < 0.05 and abs(float(z.mean())) < 0.05


def test_training_lowers_the_cost_from_the_noise_model():
    model = make_tiny_model(seed=0)
    config = ContextTrainConfig(steps=300, batch_size=8, crop=8, draws_per_image=2, timesteps=(15,), lr=1e-2)
    pairs = make_pairs(model, images(16), config)
    before = evaluate(ContextNet(ContextNetConfig(width=8, blocks=1)), pairs)  # δ = 0, λ = 0: x̂_0 with σ_t
    net = train_context_net(pairs, ContextNetConfig(width=8, blocks=1), config)
    assert evaluate(net, pairs) < before - 0.05


def test_cli_adds_a_context_network_that_the_codec_uses(tmp_path):
    model = make_tiny_model(seed=0)
    src = tmp_path / "tiny.pt"
    save_checkpoint(src, tiny_checkpoint_dict(model))
    np.save(tmp_path / "train.npy", images(8))
    out = tmp_path / "with-context.pt"
    r = CliRunner().invoke(main, ["train-context", str(tmp_path / "train.npy"), "--model", str(src), "-o", str(out),
                                  "--steps", "5", "--width", "8", "--blocks", "1", "--batch-size", "4", "--draws-per-image", "1"])
    assert r.exit_code == 0, r.output
    record = json.loads(r.output.strip().splitlines()[-1])
    assert record["images"] == 8 and record["train"]["steps"] == 5
    loaded = load_model(out)
    assert loaded.identity == model.identity and loaded.context is not None
    assert loaded.meta["context"]["images"] == 8
