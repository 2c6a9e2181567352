"""Training runs under torchrun with DistributedDataParallel (gloo on CPU): 2 processes, tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_process_torchrun_trains_and_checkpoints(tmp_path):
    data = tmp_path / "tiny.npy"
    np.save(data, np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    out = tmp_path / "run.pt"
    cmd = [
        "torchrun", "--nproc_per_node", "2", "--master_port", "29517", "-m", "diffcodec.cli.main",
        "train", str(data), "-o", str(out), "--steps", "3", "--batch-size", "4",
        "--channels", "8", "--channel-mult", "1,2", "--attention", "", "--fp32",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["step"] == 3
    # Each step consumed a batch on each of the two ranks.
    assert ckpt["images_seen"] == 3 * 4 * 2
    assert "saved" in result.stdout
