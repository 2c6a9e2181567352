"""Published DDPM weights (diffusers layout) load as our U-Net and compute the same ε.

The diffusers comparisons skip when diffusers is not installed (``pip install 'diffcodec[diffusers]'``);
the regression test of our own U-Net's output runs always.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffcodec.diffusion import GaussianDiffusion, ScheduleConfig, ScheduleKind, VarianceKind
from diffcodec.likelihood import negative_elbo
from diffcodec.models.checkpoint import CheckpointError, load_model
from diffcodec.models.convert import load_diffusers_ddpm, unet_config_from_diffusers
from diffcodec.models.unet import UNet, UNetConfig

# config.json of google/ddpm-cifar10-32 (Ho et al. 2020's CIFAR-10 model, 35.7M parameters).
DDPM_CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.1.1",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# The same network, narrower, for speed (8 groups keep ≥ 4 channels a group at width 32).
SMALL_CONFIG = {**DDPM_CIFAR10_CONFIG, "block_out_channels": [32, 64, 64, 64], "norm_num_groups": 8, "dropout": 0.1}


@pytest.fixture
def diffusers():
    return pytest.importorskip("diffusers")


def _random_diffusers_unet(diffusers, config: dict, seed: int = 0):
    """A UNet2DModel with every parameter random (diffusers zero-initialises none, but be sure)."""
    torch.manual_seed(seed)
    net = diffusers.UNet2DModel.from_config(config).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def _assert_same_eps(reference, model, batch: int = 4, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    t = torch.tensor([0, 1, 500, 999][:batch])
    with torch.no_grad():
        expected = reference(x, t).sample
    eps, var_out = model(x, t)
    assert var_out is None
    assert eps.shape == expected.shape
    torch.testing.assert_close(eps, expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- our U-Net
@pytest.mark.parametrize(
    "kwargs, expected_sum, expected_abs_sum, expected_first",
    [
        (
            dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), image_size=16, num_heads=2),
            -98.50639643706381,
            380.4779302421957,
            [-0.16334835, -0.13704908, -0.17767142, -0.18154731, -0.18479058, -0.14933312],
        ),
        (
            dict(
                base_channels=16, channel_mult=(1, 2), num_res_blocks=2, attention_resolutions=(16,), image_size=16,
                learn_sigma=False, fourier_features=(),
            ),
            200.83809763379395,
            205.1822317186743,
            [0.06424403, 0.03165917, 0.08931154, 0.07318871, 0.05137242, 0.02018531],
        ),
    ],
)
def test_default_unet_output_unchanged(kwargs, expected_sum, expected_abs_sum, expected_first):
    """Golden values from the U-Net before the diffusers options were added (bit-exact there)."""
    config = UNetConfig(**kwargs)
    torch.manual_seed(0)
    net = UNet(config).eval()
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised layers would hide most of the network
            p.copy_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        out = net(x, torch.tensor([0, 737])).double()
    assert out.sum().item() == pytest.approx(expected_sum, rel=1e-5, abs=1e-3)
    assert out.abs().sum().item() == pytest.approx(expected_abs_sum, rel=1e-5)
    np.testing.assert_allclose(out.flatten()[:6].numpy(), expected_first, rtol=1e-5, atol=1e-6)


def test_old_config_dicts_load_and_serialise_unchanged():
    old = {
        "in_channels": 3, "base_channels": 64, "channel_mult": [1, 2, 2], "num_res_blocks": 1, "attention_resolutions": [16],
        "dropout": 0.1, "learn_sigma": True, "fourier_features": [7, 8], "image_size": 32, "num_heads": 1,
    }
    config = UNetConfig.from_dict(old)
    assert config == UNetConfig()
    # New options at their defaults stay out of the dict, so model identities do not change.
    assert json.loads(json.dumps(config.to_dict())) == old
    ddpm = unet_config_from_diffusers(DDPM_CIFAR10_CONFIG)
    assert UNetConfig.from_dict(json.loads(json.dumps(ddpm.to_dict()))) == ddpm


def test_ddpm_config_maps_to_paper_network():
    config = unet_config_from_diffusers(DDPM_CIFAR10_CONFIG)
    assert (config.base_channels, config.channel_mult, config.num_res_blocks) == (128, (1, 2, 2, 2), 2)
    assert config.attention_resolutions == (16,) and config.num_heads == 1
    assert (config.norm_groups, config.norm_eps) == (32, 1e-6)
    assert config.time_sin_first and config.time_freq_shift == 1 and config.downsample_pad_trailing
    assert not config.learn_sigma and config.fourier_features == ()


# ---------------------------------------------------------------------------------------------- ε matches diffusers
def test_small_ddpm_matches_diffusers_safetensors(diffusers, tmp_path):
    pytest.importorskip("safetensors")
    reference = _random_diffusers_unet(diffusers, SMALL_CONFIG)
    reference.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    model = load_model(tmp_path)
    assert model.variance is VarianceKind.FIXED_LARGE
    assert model.schedule == ScheduleConfig(kind=ScheduleKind.LINEAR, num_steps=1000)
    assert sum(p.numel() for p in model.net.parameters()) == sum(p.numel() for p in reference.parameters())
    _assert_same_eps(reference, model)


def test_small_ddpm_matches_diffusers_bin_with_legacy_attention_names(diffusers, tmp_path):
    """Checkpoints saved before diffusers 0.14 (google/ddpm-cifar10-32's) name attention query/key/value/proj_attn."""
    reference = _random_diffusers_unet(diffusers, SMALL_CONFIG, seed=3)
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, tensor in reference.state_dict().items():
        for new, old in legacy.items():
            key = key.replace(f".{new}.", f".{old}.")
        state[key] = tensor.clone()
    assert any(".proj_attn." in k for k in state)
    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIG))
    torch.save(state, tmp_path / "diffusion_pytorch_model.bin")
    _assert_same_eps(reference, load_diffusers_ddpm(tmp_path))


def test_multi_head_attention_matches_diffusers(diffusers, tmp_path):
    config = {**SMALL_CONFIG, "attention_head_dim": 16}  # 4 heads of 16 channels at both attending widths
    reference = _random_diffusers_unet(diffusers, config)
    reference.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    assert model.config.num_heads == 4
    _assert_same_eps(reference, model, batch=2)


def test_real_width_ddpm_cifar10_matches_diffusers(diffusers, tmp_path):
    reference = _random_diffusers_unet(diffusers, DDPM_CIFAR10_CONFIG)
    assert sum(p.numel() for p in reference.parameters()) == 35_746_307  # the paper's 35.7M
    reference.save_pretrained(tmp_path)
    _assert_same_eps(reference, load_model(tmp_path), batch=2)


def test_pipeline_directory_and_scheduler_config(diffusers, tmp_path):
    reference = _random_diffusers_unet(diffusers, SMALL_CONFIG)
    reference.save_pretrained(tmp_path / "unet")
    scheduler = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000)
    scheduler.save_pretrained(tmp_path / "scheduler")
    model = load_model(tmp_path)
    assert model.schedule == ScheduleConfig(kind=ScheduleKind.COSINE, num_steps=1000)
    np.testing.assert_allclose(model.diffusion.alphas_cumprod, scheduler.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7)
    _assert_same_eps(reference, model, batch=2)


def test_loaded_model_gives_finite_likelihood(diffusers, tmp_path):
    reference = _random_diffusers_unet(diffusers, SMALL_CONFIG)
    reference.save_pretrained(tmp_path)
    model = load_model(tmp_path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    terms = negative_elbo(model, model.diffusion.spaced(3), model.variance, x, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(terms.total).all() and (terms.total > 0).all()


# ---------------------------------------------------------------------------------------------- schedule
def test_linear_schedule_and_posterior_match_ddpm_scheduler(diffusers):
    scheduler = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", variance_type="fixed_small"
    )
    ours = GaussianDiffusion.from_config(ScheduleConfig(kind=ScheduleKind.LINEAR, num_steps=1000))
    np.testing.assert_allclose(ours.betas, scheduler.betas.numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.alphas_cumprod, scheduler.alphas_cumprod.numpy(), rtol=1e-5, atol=1e-7)
    # β̃_t, the variance DDPMScheduler samples with for variance_type="fixed_small" (it clamps β̃_1 = 0 to 1e-20).
    # It forms β_t = 1 − ᾱ_t / ᾱ_{t−1} in float32, which cancels to ~6e-8 / 1e-4 ≈ 6e-4 relative error at small t.
    theirs = np.array([scheduler._get_variance(t).item() for t in range(1000)])
    np.testing.assert_allclose(ours.posterior_variance[1:], theirs[1:], rtol=1e-3)
    assert ours.posterior_variance[0] == 0 and theirs[0] <= 1e-20

    # Posterior mean μ̃_t(x̂_0, x_t) and x̂_0(ε): DDPMScheduler.step adds √β̃_t · z, which we redraw from its seed.
    # Its float32 β_t (above) puts ~5e-5 into the mean's coefficients at small t.
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    for t in (0, 1, 10, 500, 999):
        out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(7))
        index = torch.full((2,), t)
        p = ours.p_mean_variance(x_t.double(), index, eps.double(), None, VarianceKind.FIXED_SMALL)
        torch.testing.assert_close(out.pred_original_sample.double(), p["pred_xstart"], atol=1e-4, rtol=1e-4)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7)) if t > 0 else torch.zeros_like(x_t)
        mean = out.prev_sample.double() - np.sqrt(ours.posterior_variance[t]) * noise.double()
        torch.testing.assert_close(mean, p["mean"], atol=2e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "change, message",
    [
        ({"_class_name": "UNet2DConditionModel"}, "not a diffusers UNet2DModel"),
        ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]}, "CrossAttnDownBlock2D"),
        ({"up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]}, "not mirrored"),
        ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift='scale_shift'"),
        ({"time_embedding_type": "fourier"}, "time_embedding_type"),
        ({"out_channels": 6}, "out_channels=6"),
        ({"attention_head_dim": 16, "block_out_channels": [32, 64, 64, 128]}, "attention_head_dim=16: every attention layer must get one head count"),
        ({"sample_size": None}, "sample_size"),
        ({"block_out_channels": [32, 48, 64, 64]}, "multiples"),
    ],
)
def test_unsupported_config_is_a_clear_error(tmp_path, change, message):
    (tmp_path / "config.json").write_text(json.dumps({**SMALL_CONFIG, **change}))
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_model(tmp_path)


def test_missing_weights_file_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIG))
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors nor diffusion_pytorch_model.bin"):
        load_model(tmp_path)


def test_directory_without_config_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="without config.json"):
        load_model(tmp_path)


def test_unmapped_and_missing_tensors_are_named(diffusers, tmp_path):
    reference = _random_diffusers_unet(diffusers, SMALL_CONFIG)
    state = dict(reference.state_dict())
    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIG))

    torch.save({**state, "extra_head.weight": torch.zeros(3)}, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="'extra_head.weight' has no place"):
        load_model(tmp_path)

    del state["mid_block.attentions.0.to_v.bias"]
    torch.save(state, tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="mid_block.attentions.0.to_v.bias"):
        load_model(tmp_path)


def test_wrong_shapes_are_an_error(diffusers, tmp_path):
    reference = _random_diffusers_unet(diffusers, SMALL_CONFIG)
    (tmp_path / "config.json").write_text(json.dumps({**SMALL_CONFIG, "in_channels": 1, "out_channels": 1}))
    torch.save(reference.state_dict(), tmp_path / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"'input_conv.weight' has shape \(32, 3, 3, 3\), the config implies \(32, 1, 3, 3\)"):
        load_model(tmp_path)
