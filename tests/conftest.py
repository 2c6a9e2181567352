"""Shared fixtures: tiny random models (fast round trips), paths to the shared data (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffcodec.diffusion import ScheduleConfig, VarianceKind
from diffcodec.models.checkpoint import CHECKPOINT_FORMAT, DiffusionModel, save_checkpoint
from diffcodec.models.context_net import ContextNet, ContextNetConfig
from diffcodec.models.unet import UNet, UNetConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_UNET = UNetConfig(base_channels=8, channel_mult=(1, 2), attention_resolutions=(16,), fourier_features=(7,), dropout=0.0)


def make_tiny_model(seed: int = 0, learn_sigma: bool = True, num_steps: int = 1000, context: bool = False,
                    coarse: int = 0) -> DiffusionModel:
    """A random 32×32 U-Net with non-zero output layer (a zero-initialised one would predict ε = 0).

    ``context``: with a tiny random context network for the learned exact stage (tiny_context_net);
    ``coarse``: with a tiny random coarse-to-fine network for bins of this width (0: none).
    """
    torch.manual_seed(seed)
    config = UNetConfig(**{**TINY_UNET.to_dict(), "learn_sigma": learn_sigma})
    net = UNet(config)
    with torch.no_grad():
        for p in net.out_conv.parameters():
            p.normal_(0.0, 0.05)
    variance = VarianceKind.LEARNED_RANGE if learn_sigma else VarianceKind.FIXED_SMALL
    return DiffusionModel(net, ScheduleConfig(num_steps=num_steps), variance,
                          context=tiny_context_net(seed) if context else None,
                          coarse=tiny_context_net(seed, coarse) if coarse else None)


def tiny_context_net(seed: int = 0, bin_width: int = 0) -> ContextNet:
    """A random context network with a small non-zero output layer (zero-initialised it would be the identity)."""
    torch.manual_seed(seed + 1000 + bin_width)
    net = ContextNet(ContextNetConfig(width=8, blocks=1, bin_width=bin_width))
    with torch.no_grad():
        net.out.weight.normal_(0.0, 0.05)
    return net


def tiny_checkpoint_dict(model: DiffusionModel) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "unet": model.config.to_dict(),
        "schedule": model.schedule.to_dict(),
        "variance": model.variance.value,
        "ema": model.net.state_dict(),
    }


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a test module (outputs differ at ~1e-6 between thread counts)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_model() -> DiffusionModel:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    save_checkpoint(path, tiny_checkpoint_dict(tiny_model))
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
