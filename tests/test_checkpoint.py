"""Tests of checkpoints (models/checkpoint.py) and of the trainer's resumable checkpoints (models/train.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from diffcodec.diffusion import ScheduleConfig, VarianceKind
from diffcodec.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    context_entry,
    export_weights,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
)
from diffcodec.models.data import TrainingSet
from diffcodec.models.train import Objective, TrainConfig, Trainer

from conftest import TINY_UNET, make_tiny_model, tiny_checkpoint_dict, tiny_context_net


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: the network on one thread, as the codec runs it


def outputs(model, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    return model(x, torch.tensor([0, 999]))


# ---------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("learn_sigma", [True, False])
def test_save_load_round_trip(tmp_path, learn_sigma):
    model = make_tiny_model(seed=3, learn_sigma=learn_sigma)
    path = tmp_path / "sub" / "tiny.pt"  # parent directories are created
    save_checkpoint(path, tiny_checkpoint_dict(model))
    assert path.is_file() and not path.with_suffix(".pt.tmp").exists()
    loaded = load_model(path)
    assert loaded.identity == model.identity and len(loaded.identity) == 32
    assert loaded.describe() == model.describe()
    assert loaded.variance is model.variance
    assert loaded.schedule == model.schedule
    eps, var = outputs(loaded)
    ref_eps, ref_var = outputs(model)
    torch.testing.assert_close(eps, ref_eps, rtol=0, atol=0)
    if learn_sigma:
        torch.testing.assert_close(var, ref_var, rtol=0, atol=0)
        assert eps.shape == var.shape == (2, 3, 32, 32)
    else:
        assert ref_var is None and var is None


def test_identity_depends_on_weights_and_config():
    a, b = make_tiny_model(seed=0), make_tiny_model(seed=0)
    assert a.identity == b.identity
    assert make_tiny_model(seed=1).identity != a.identity
    assert make_tiny_model(seed=0, num_steps=500).identity != a.identity  # same weights, other schedule


def test_context_network_round_trips_and_names_version_4_files_only(tmp_path):
    plain, with_context = make_tiny_model(seed=0), make_tiny_model(seed=0, context=True)
    # versions 1–3 name the U-Net alone: adding a context network keeps their files decodable
    assert with_context.identity == plain.identity
    assert plain.codec_identity == plain.identity and with_context.codec_identity != plain.identity
    assert make_tiny_model(seed=0, context=True).codec_identity == with_context.codec_identity
    other = make_tiny_model(seed=0)
    other.context = tiny_context_net(seed=1).eval()
    assert other.codec_identity != with_context.codec_identity
    path = tmp_path / "ctx.pt"
    save_checkpoint(path, {**tiny_checkpoint_dict(with_context), "context": context_entry(with_context.context, steps=7)})
    loaded = load_model(path)
    assert loaded.codec_identity == with_context.codec_identity and loaded.meta["context"]["steps"] == 7
    args = [torch.randn(1, 3, 4, 4) for _ in range(5)] + [torch.zeros(1)]
    for a, b in zip(loaded.context(*args), with_context.context(*args)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # export keeps it
    training = {**tiny_checkpoint_dict(with_context), "context": context_entry(with_context.context)}
    assert "context" in export_weights(training)


def test_mismatched_context_weights_are_refused(tmp_path):
    model = make_tiny_model(seed=0, context=True)
    entry = context_entry(model.context)
    entry["config"] = {"width": 16, "blocks": 1}
    path = tmp_path / "bad.pt"
    save_checkpoint(path, {**tiny_checkpoint_dict(model), "context": entry})
    with pytest.raises(CheckpointError, match="context network weights do not match"):
        load_model(path)


def test_export_weights_is_fp16_and_loads(tmp_path):
    model = make_tiny_model(seed=4)
    training = {**tiny_checkpoint_dict(model), "model": model.net.state_dict(), "optimizer": {"state": {}},
                "step": 17, "images_seen": 1088, "objective": "hybrid"}
    shipped = export_weights(training)
    assert "model" not in shipped and "optimizer" not in shipped
    assert shipped["step"] == 17 and shipped["format"] == CHECKPOINT_FORMAT
    assert all(v.dtype == torch.float16 for v in shipped["ema"].values() if v.is_floating_point())
    full = export_weights(training, half=False)
    assert all(v.dtype == torch.float32 for v in full["ema"].values() if v.is_floating_point())
    save_checkpoint(tmp_path / "ship.pt", shipped)
    loaded = load_model(tmp_path / "ship.pt")
    assert loaded.meta["step"] == 17
    assert loaded.identity != model.identity  # weights were rounded to fp16
    eps, _ = outputs(loaded)
    ref, _ = outputs(model)
    torch.testing.assert_close(eps, ref, rtol=0, atol=5e-3)


# ---------------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError):
        load_model(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", bytes(range(256)) * 4, b"PK\x03\x04" + bytes(60)])
def test_foreign_files(tmp_path, content):
    path = tmp_path / "foreign.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model(path)


class Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_model(path)
    assert "unpickled" not in capsys.readouterr().out  # weights_only: nothing was executed


@pytest.mark.parametrize("edit", ["format", "no_ema", "no_unet", "shape", "not_a_dict"])
def test_wrong_content_is_refused(tmp_path, edit):
    ckpt = tiny_checkpoint_dict(make_tiny_model(seed=0))
    if edit == "format":
        ckpt["format"] = "diffcodec-checkpoint-999"
    elif edit == "no_ema":
        del ckpt["ema"]
    elif edit == "no_unet":
        del ckpt["unet"]
    elif edit == "shape":
        ckpt["unet"] = {**ckpt["unet"], "base_channels": 16}
    else:
        ckpt = [ckpt]
    path = tmp_path / f"{edit}.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError):
        load_model(path)


# ---------------------------------------------------------------------------- training checkpoints

@pytest.fixture
def training_set(tmp_path) -> TrainingSet:
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    return TrainingSet([path])


TRAIN = TrainConfig(batch_size=2, bf16=False, checkpoint_minutes=1e6, objective=Objective.HYBRID)
SCHEDULE = ScheduleConfig(num_steps=100)


def test_trainer_writes_a_checkpoint_that_resumes(tmp_path, training_set):
    out = tmp_path / "run" / "ckpt.pt"
    trainer = Trainer(training_set, out, unet=TINY_UNET, schedule=SCHEDULE, config=TRAIN)
    losses = []
    trainer.run(max_steps=3, on_step=lambda step, stats: losses.append(stats["loss"]))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert out.is_file()

    resumed = Trainer(training_set, out, unet=TINY_UNET, schedule=SCHEDULE, config=TRAIN)
    assert resumed.step == 3 and resumed.images_seen == 6
    for name, tensor in trainer.net.state_dict().items():
        torch.testing.assert_close(resumed.net.state_dict()[name], tensor, rtol=0, atol=0)
    for name, tensor in trainer.ema.state_dict().items():
        torch.testing.assert_close(resumed.ema.state_dict()[name], tensor, rtol=0, atol=0)
    saved_opt, live_opt = resumed.opt.state_dict()["state"], trainer.opt.state_dict()["state"]
    assert saved_opt.keys() == live_opt.keys() and len(saved_opt) > 0
    for key, state in live_opt.items():
        torch.testing.assert_close(saved_opt[key]["exp_avg_sq"], state["exp_avg_sq"], rtol=0, atol=0)
    resumed.run(max_steps=4)
    assert resumed.step == 4

    # the training checkpoint is also a usable model (its EMA weights), with its provenance
    model = load_model(out)
    assert model.meta["step"] == 4 and model.meta["objective"] == "hybrid"
    assert model.variance is VarianceKind.LEARNED_RANGE and model.schedule == SCHEDULE
    eps, var = outputs(model)
    assert torch.isfinite(eps).all() and torch.isfinite(var).all()


def test_resuming_applies_the_learning_rate_asked_for(tmp_path, training_set):
    """Adam's moments come back from the checkpoint, the learning rate from the command (to fine-tune lower)."""
    out = tmp_path / "ckpt.pt"
    Trainer(training_set, out, unet=TINY_UNET, schedule=SCHEDULE, config=TRAIN).run(max_steps=2)
    lower = Trainer(training_set, out, unet=TINY_UNET, schedule=SCHEDULE, config=replace(TRAIN, lr=5e-5))
    assert [g["lr"] for g in lower.opt.param_groups] == [5e-5]
    assert len(lower.opt.state_dict()["state"]) > 0


def test_trainer_refuses_to_resume_another_network(tmp_path, training_set):
    out = tmp_path / "ckpt.pt"
    Trainer(training_set, out, unet=TINY_UNET, schedule=SCHEDULE, config=TRAIN).run(max_steps=1)
    with pytest.raises(ValueError, match="another network or schedule"):
        Trainer(training_set, out, unet=TINY_UNET, schedule=ScheduleConfig(num_steps=200), config=TRAIN)


def test_coarse_images_only_replace_high_noise_entries(tmp_path):
    black, white = tmp_path / "lossless.npy", tmp_path / "coarse.npy"
    np.save(black, np.zeros((8, 32, 32, 3), np.uint8))
    np.save(white, np.full((8, 32, 32, 3), 255, np.uint8))
    rng = np.random.default_rng(0)
    t = np.array([0, 99, 100, 999] * 250)

    always = TrainingSet([black], coarse_sources=[white], coarse_min_t=100, coarse_fraction=1.0)
    coarse = always.batch(len(t), rng, t=t).reshape(len(t), -1).max(axis=1) == 255
    np.testing.assert_array_equal(coarse, t >= 100)
    assert always.describe()["coarse_images"] == 8

    half = TrainingSet([black], coarse_sources=[white], coarse_min_t=100, coarse_fraction=0.5)
    coarse = half.batch(len(t), rng, t=t).reshape(len(t), -1).max(axis=1) == 255
    assert not coarse[t < 100].any() and 0.4 < coarse[t >= 100].mean() < 0.6
    # without timesteps (or without a coarse set) batches are lossless only
    assert half.batch(64, rng).max() == 0


def test_coarse_sources_must_be_image_sets(tmp_path):
    from PIL import Image

    np.save(tmp_path / "a.npy", np.zeros((2, 32, 32, 3), np.uint8))
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (80, 60)).save(tmp_path / "photos" / "p.png")
    with pytest.raises(ValueError, match="coarse"):
        TrainingSet([tmp_path / "a.npy"], coarse_sources=[tmp_path / "photos"])
