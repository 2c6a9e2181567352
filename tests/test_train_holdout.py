"""``diffcodec train --holdout``: the last images of each .npy file are never trained on and are scored at checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffcodec.cli.main import main as cli
from diffcodec.models.data import TrainingSet, parse_holdout

TINY = ["--batch-size", "8", "--channels", "8", "--channel-mult", "1,2", "--attention", "", "--fp32",
        "--threads", "1", "--val-steps", "4", "--val-limit", "3"]


def _arrays(tmp_path):
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    np.save(b, rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    return a, b


def test_holdout_takes_the_last_images_of_each_file(tmp_path):
    a, b = _arrays(tmp_path)
    data = TrainingSet([a, b], holdout=parse_holdout("5,0.2"))
    assert [h["held_out"] for h in data.holdout] == [[15, 20], [8, 10]]
    assert np.array_equal(data.validation["a"], np.load(a)[15:]) and np.array_equal(data.validation["b"], np.load(b)[8:])
    assert len(data.array) == 15 + 8
    assert data.describe()["holdout"] == data.holdout
    with pytest.raises(ValueError):
        TrainingSet([a, b], holdout=parse_holdout("1,2,3"))


def test_held_out_images_never_in_a_batch_and_validation_reported(tmp_path, monkeypatch):
    a, b = _arrays(tmp_path)
    held = np.concatenate([np.load(a)[15:], np.load(b)[8:]])
    held = {im.tobytes() for im in held} | {im[:, ::-1].tobytes() for im in held}  # either flip
    trained = set()
    original = TrainingSet.batch

    def spy(self, n, rng, t=None):
        out = original(self, n, rng, t)
        trained.update(im.tobytes() for im in out)
        return out

    monkeypatch.setattr(TrainingSet, "batch", spy)
    out = tmp_path / "run.pt"
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(a), str(b), "-o", str(out), "--steps", "30", "--holdout", "5,2",
                                 "--checkpoint-minutes", "0.0001", *TINY])
    assert result.exit_code == 0, result.output
    assert len(trained) > 20 and not (trained & held)  # 23 trainable images drawn, none held out
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    val = ckpt["validation"]
    assert val["sets"] == {"a": {"file": "a.npy", "indices": [15, 18]}, "b": {"file": "b.npy", "indices": [8, 10]}}
    assert val["last"]["step"] == 30 and val["history"][-1] == val["last"]
    assert all(np.isfinite(val["last"][k]["bpd"]) for k in ("a", "b"))
    logged = [json.loads(line) for line in result.output.splitlines() if line.startswith("{") and "val_bpd[a]" in line]
    assert logged and logged[-1]["step"] == 30 and logged[-1]["val_bpd[b]"] == val["last"]["b"]["bpd"]

    # Same weights, same images, same noise: the figure is reproducible.
    from diffcodec.models.checkpoint import export_weights, model_from_checkpoint
    from diffcodec.evaluate import dataset_bpd

    model = model_from_checkpoint(export_weights(ckpt, half=False))
    assert round(dataset_bpd(model, np.load(a)[15:18], steps=4, seed=0)["bpd"], 4) == val["last"]["a"]["bpd"]

    # A resumed run without --holdout keeps the saved one; another holdout is refused.
    trained.clear()
    result = runner.invoke(cli, ["train", str(a), str(b), "-o", str(out), "--steps", "40", *TINY])
    assert result.exit_code == 0, result.output
    ckpt2 = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt2["data"]["holdout"] == ckpt["data"]["holdout"] and ckpt2["step"] == 40
    assert trained and not (trained & held)
    assert len(ckpt2["validation"]["history"]) > len(val["history"])
    result = runner.invoke(cli, ["train", str(a), str(b), "-o", str(out), "--steps", "45", "--holdout", "4", *TINY])
    assert result.exit_code != 0 and "holdout" in result.output
