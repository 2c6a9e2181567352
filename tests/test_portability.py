"""Format version 5 files are the same bits on every machine: encode and decode under other CPUs' kernels.

Each case runs a fresh interpreter with torch, oneDNN and MKL limited to the kernels an AVX2-only or a
baseline x86-64 CPU would use (tests/other_cpus.py; ../shared/notes/exactness.md), and with another
thread count.  The model comes from a checkpoint file: random initialisation itself differs between
kernel sets.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.models.checkpoint import context_entry, save_checkpoint

from conftest import make_tiny_model, tiny_checkpoint_dict
from other_cpus import OTHER_CPUS, run_digest

CONFIG = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="coarse", search_threads=1)
IMAGE = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)

_SCRIPT = """
import hashlib, numpy as np
from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.models.checkpoint import load_model
model = load_model({model!r})
image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
config = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="coarse", search_threads=1)
data = encode(image, "RGB", model, config).data
theirs = decode(open({stream!r}, "rb").read(), model)
print(hashlib.sha256(data).hexdigest(), hashlib.sha256(theirs.pixels.tobytes()).hexdigest(), theirs.t)
"""


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """(checkpoint path, stream path, expected output line) from this process's own kernels."""
    model = make_tiny_model(seed=0, context=True, coarse=16)
    folder = tmp_path_factory.mktemp("portable")
    ckpt = {**tiny_checkpoint_dict(model), "context": context_entry(model.context), "coarse_context": context_entry(model.coarse)}
    save_checkpoint(folder / "tiny.pt", ckpt)
    data = encode(IMAGE, "RGB", model, CONFIG).data
    assert data[3] == 5
    (folder / "a.dfc").write_bytes(data)
    decoded = decode(data, model)
    assert np.array_equal(decoded.pixels, IMAGE)
    line = f"{hashlib.sha256(data).hexdigest()} {hashlib.sha256(decoded.pixels.tobytes()).hexdigest()} 0"
    return str(folder / "tiny.pt"), str(folder / "a.dfc"), line


@pytest.mark.parametrize("cpu", [*sorted(OTHER_CPUS), "two-threads"])
def test_same_file_and_same_decode_on_other_cpus(native, cpu):
    model, stream, expected = native
    env = OTHER_CPUS.get(cpu, {"OMP_NUM_THREADS": "2"})
    assert run_digest(_SCRIPT.format(model=model, stream=stream), env) == expected
