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


def test_coarse_training_loss_is_the_codec_cost():
    """coarse_stage_bits (the coarse-to-fine training loss) equals the codec's estimate of its twelve stages."""
    from conftest import tiny_context_net

    net = tiny_context_net(0, bin_width=16)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    x0 = x / 127.5 - 1
    inputs = exact.ContextInputs(xhat=x0 + rng.normal(0, 0.05, x0.shape), y=x0 + rng.normal(0, 0.1, x0.shape), sigma=0.1)
    layout = exact.ExactLayout(TileLayout(8, 8, "RGB"))
    plan = exact.plan_coarse(layout, net, [x], inputs)
    # the plan takes each stage's best scale and adds 4 bits per stage and the method bit; at scale 1:
    stages = exact.coarse_stages(layout)
    bins = x.astype(np.int64) // 16
    outputs = exact._coarse_outputs(net, layout, inputs, [exact._normalized(inputs, x)] * 12,
                                    [exact._centres(inputs, bins, 16)] * 12, stages)
    codec = 0.0
    for (fine, stage), (delta, lam) in zip(stages, outputs):
        sel, c = layout.selection(stage), stage.channel
        mean, sd = exact._coarse_params(layout, fine, stage, inputs, delta, lam, 1.0, bins[..., c][sel], 16)
        symbols, top = (x[..., c][sel] - 16 * bins[..., c][sel], 15) if fine else (bins[..., c][sel], 15)
        codec += float(exact.stage_bits(symbols, mean, sd, np.array([1.0]), top=top)[0])
    assert plan.bits <= codec + 1 + 4 * 12 + 1e-9
    chw = lambda a: torch.from_numpy(a.transpose(2, 0, 1)[None].astype(np.float32))  # noqa: E731
    with torch.no_grad():
        loss, per_image = stage_bits(net, chw(x.astype(np.float64)), chw(inputs.xhat), chw(inputs.y), torch.tensor([0.1]))
    assert float(per_image[0]) == pytest.approx(codec, rel=1e-4)
    assert float(loss) == pytest.approx(codec / x.size, rel=1e-4)  # bits per subpixel, bins included


def test_bin_mass_is_the_sum_of_its_pixel_masses():
    """coarse_to_fine: Eq. 13's discretized Gaussian over bins in u = (x + ½)/w − ½ gives each bin the mass of its w
    pixel values (edge bins with the tails), so coding bins then offsets costs what the pixel Gaussian says
    wherever the offsets' Gaussian puts no mass outside the bin."""
    from diffcodec.models.train_context import coarse_to_fine

    mean = torch.tensor([100.3, 3.0, 250.0, 77.7], dtype=torch.float64)
    sd = torch.tensor([9.0, 20.0, 4.0, 0.5], dtype=torch.float64)
    m_u, s_u = coarse_to_fine(mean, sd, 16)
    for b in range(16):
        bins = discretized_gaussian_bits(torch.full((4,), float(b), dtype=torch.float64), m_u, s_u, top=15)
        pixels = torch.arange(16 * b, 16 * b + 16, dtype=torch.float64)
        mass = (2.0 ** -discretized_gaussian_bits(pixels[None, :].expand(4, -1), mean[:, None].double(),
                                                   sd[:, None].double())).sum(dim=1)
        np.testing.assert_allclose(2.0 ** -bins.double().numpy(), mass.numpy(), rtol=1e-5, atol=1e-10)  # both clamp at 1e-12


def test_widened_network_starts_as_the_six_stage_one():
    """The coarse-to-fine network fine-tuned from the shipped one: with zero weights on the bin inputs its fine
    stages predict what the six-stage network predicts."""
    from conftest import tiny_context_net
    from diffcodec.models.context_net import widened

    base = tiny_context_net(0)
    wide = widened(base, 16)
    assert wide.config.bin_width == 16 and wide.config.width == base.config.width
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(2, 3, 8, 8, generator=g) for _ in range(5)] + [torch.randn(2, generator=g)]
    with torch.no_grad():
        d0, l0 = base(*args)
        d1, l1 = wide(*args, torch.randn(2, 3, 8, 8, generator=g), torch.ones(2, 3, 8, 8))
    torch.testing.assert_close(d0, d1)
    torch.testing.assert_close(l0, l1)
    with pytest.raises(ValueError, match="divisor"):
        ContextNet(ContextNetConfig(width=8, blocks=1, bin_width=12))


def test_cli_adds_a_coarse_to_fine_network(tmp_path):
    model = make_tiny_model(seed=0, context=True)
    src = tmp_path / "tiny.pt"
    from diffcodec.models.checkpoint import context_entry

    save_checkpoint(src, {**tiny_checkpoint_dict(model), "context": context_entry(model.context)})
    np.save(tmp_path / "train.npy", images(8))
    out = tmp_path / "with-coarse.pt"
    args = ["train-context", str(tmp_path / "train.npy"), "--model", str(src), "-o", str(out), "--steps", "3",
            "--batch-size", "4", "--draws-per-image", "1"]
    r = CliRunner().invoke(main, args + ["--bin-width", "12"])
    assert r.exit_code != 0 and "divisor of 256" in r.output
    r = CliRunner().invoke(main, args + ["--bin-width", "16"])
    assert r.exit_code == 0, r.output
    loaded = load_model(out)
    # the six-stage network is kept as it was: files written without the coarse stage still decode
    assert loaded.codec_identity == load_model(src).codec_identity
    assert loaded.coarse is not None and loaded.coarse.config.bin_width == 16
    assert loaded.coarse.config.width == model.context.config.width  # started from the model's context network
    assert loaded.coarse_identity != loaded.codec_identity


def test_cli_resume_continues_the_models_network(tmp_path):
    model = make_tiny_model(seed=0, context=True)
    src = tmp_path / "tiny.pt"
    from diffcodec.models.checkpoint import context_entry

    np.save(tmp_path / "train.npy", images(8))
    base = ["train-context", str(tmp_path / "train.npy"), "--steps", "3", "--batch-size", "4", "--draws-per-image", "1"]
    save_checkpoint(src, tiny_checkpoint_dict(model))
    r = CliRunner().invoke(main, base + ["--model", str(src), "-o", str(tmp_path / "x.pt"), "--resume"])
    assert r.exit_code != 0 and "no context network to continue" in r.output
    save_checkpoint(src, {**tiny_checkpoint_dict(model), "context": context_entry(model.context, images=8)})
    r = CliRunner().invoke(main, base + ["--model", str(src), "-o", str(tmp_path / "x.pt"), "--resume", "--bin-width", "16"])
    assert r.exit_code != 0 and "no coarse-to-fine network" in r.output
    out = tmp_path / "resumed.pt"
    r = CliRunner().invoke(main, base + ["--model", str(src), "-o", str(out), "--resume", "--lr", "1e-2"])
    assert r.exit_code == 0, r.output
    loaded = load_model(out)
    assert loaded.context.config == model.context.config  # the model's network, not a new one of the default size
    assert loaded.codec_identity != model.codec_identity  # its weights moved on
    assert loaded.meta["context"]["continued_from"] == {"images": 8}


def test_cli_refuses_too_few_steps_for_the_schedule(tmp_path):
    r = CliRunner().invoke(main, ["train-context", str(tmp_path), "-o", str(tmp_path / "x.pt"), "--steps", "2"])
    assert r.exit_code == 2 and "--steps" in r.output and "x>=3" in r.output
    with pytest.raises(ValueError, match="at least 3 steps"):
        train_context_net({}, ContextNetConfig(width=8, blocks=1), ContextTrainConfig(steps=2))
