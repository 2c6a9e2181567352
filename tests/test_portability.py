"""Formats 5, 6, 7 and 8 decode to the same pixels on every machine: committed files under other CPUs' kernels.

tests/expected/portable/ holds a tiny model (tiny_model.pt: random initialisation itself differs between
kernel sets, so the model travels as a file) and version-8 files made with it (portable/v5/, v6/ and v7/:
the same images as the version-5, -6 and -7 encoders wrote them, which must keep decoding the same
everywhere): the learned and the
coarse-to-fine exact stage, an RGBA image (linear alpha plane), and an image of six tiles.  Each case
decodes every one of them at every truncation point (lossy prefixes, partial points, the exact image;
the first point also with the ``sample`` and ``flow`` previews)
in a fresh interpreter whose torch, oneDNN, MKL or numpy kernels are limited to what another CPU would
use (../shared/notes/exactness.md), or with another thread count or tile batch size, and the pixels
must be identical to this process's; the complete decodes must be the original images.  A second
test encodes under the same settings and compares the bytes.

Regenerate the files only on purpose, after a deliberate format change (the digests in
tests/expected/codec_v8.sha256 change with them; the model file is kept if present, and the files of
older versions are kept as they are):

    python tests/test_portability.py --regenerate
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.container import decode_file, encode_file, keep_points
from diffcodec.models.checkpoint import context_entry, load_model, save_checkpoint

from conftest import make_tiny_model, tiny_checkpoint_dict
from other_cpus import run_digest

FOLDER = Path(__file__).parent / "expected" / "portable"
MODEL = FOLDER / "tiny_model.pt"
V5_FOLDER = FOLDER / "v5"  # the same cases as format 5 wrote them (decoded, never re-encoded)
V6_FOLDER = FOLDER / "v6"  # and as format 6 wrote them (the adaptive step models)
V7_FOLDER = FOLDER / "v7"  # and as format 7 wrote them (a check in every table row)
FAST = dict(steps=3, max_candidate_bits=8, spacing="uniform", search_threads=1, points=99)
# name: (height, width, mode, seed, exact method)
CASES = {
    "learned.dfc": (8, 8, "RGB", 0, "learned"),
    "coarse.dfc": (8, 8, "RGB", 0, "coarse"),
    "rgba.dfc": (5, 7, "RGBA", 1, "auto"),
    "tiles.dfc": (40, 72, "RGB", 2, "learned"),  # 2 × 3 tiles of 32×32: batching matters
}
NO_AVX512 = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
SETTINGS = {
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    "numpy-without-avx512": {"NPY_DISABLE_CPU_FEATURES": NO_AVX512},
    "baseline-x86-64": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE",
                        "NPY_DISABLE_CPU_FEATURES": NO_AVX512},
    "one-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "two-threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    "tile-batch-1": {"DIFFCODEC_TEST_BATCH": "1"},
}


def image(h: int, w: int, mode: str, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, {"RGB": 3, "RGBA": 4}[mode]), dtype=np.uint8)


def config(method: str) -> CodecConfig:
    return CodecConfig(exact_method=method, **FAST)


def decode_digest(folder: Path, batch_size: int = 64) -> str:
    """SHA-256 over every case decoded at every truncation point (pixels and t), in a fixed order."""
    model = load_model(MODEL)
    h = hashlib.sha256()
    for name in CASES:
        dfc = decode_file((folder / name).read_bytes())
        for k in range(1, len(dfc.points) + 1):
            result = decode(encode_file(keep_points(dfc, k)), model, batch_size=batch_size)
            h.update(f"{name} {k} {result.t} {result.partial}".encode() + result.pixels.tobytes())
        for how in ("sample", "flow"):  # the other previews of a lossy state
            result = decode(encode_file(keep_points(dfc, 1)), model, reconstruct=how, seed=3, batch_size=batch_size)
            h.update(f"{name} {how} {result.t}".encode() + result.pixels.tobytes())
    return h.hexdigest()


def encode_digest(folder: Path) -> str:
    model = load_model(MODEL)
    h = hashlib.sha256()
    for name, (height, width, mode, seed, method) in CASES.items():
        h.update(encode(image(height, width, mode, seed), mode, model, config(method)).data)
    return h.hexdigest()


_SCRIPT = """
import os, sys
sys.argv = ["x"]
from pathlib import Path
from test_portability import {function}
print({function}(Path({folder!r}){batch}))
"""


def _in_subprocess(function: str, env: dict[str, str], folder: Path = FOLDER) -> str:
    batch = f", batch_size={int(env['DIFFCODEC_TEST_BATCH'])}" if "DIFFCODEC_TEST_BATCH" in env else ""
    return run_digest(_SCRIPT.format(function=function, folder=str(folder), batch=batch), env)


@pytest.fixture(scope="module")
def native() -> dict[str, str]:
    """This process's digests; the complete decodes checked against the original images first."""
    model = load_model(MODEL)
    for name, (height, width, mode, seed, _) in CASES.items():
        for folder, version in ((FOLDER, 8), (V7_FOLDER, 7), (V6_FOLDER, 6), (V5_FOLDER, 5)):
            data = (folder / name).read_bytes()
            assert decode_file(data).header.version == version
            np.testing.assert_array_equal(decode(data, model).pixels, image(height, width, mode, seed), err_msg=name)
    return {"decode": decode_digest(FOLDER), "encode": encode_digest(FOLDER), "decode v5": decode_digest(V5_FOLDER),
            "decode v6": decode_digest(V6_FOLDER), "decode v7": decode_digest(V7_FOLDER)}


def test_the_committed_files_are_what_the_encoder_writes(native):
    """The files were written by this format: re-encoding the same images gives the same bytes."""
    model = load_model(MODEL)
    for name, (height, width, mode, seed, method) in CASES.items():
        assert encode(image(height, width, mode, seed), mode, model, config(method)).data == (FOLDER / name).read_bytes(), name


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_every_prefix_decodes_to_the_same_pixels(native, setting):
    assert _in_subprocess("decode_digest", SETTINGS[setting]) == native["decode"]


@pytest.mark.parametrize("setting", ["baseline-x86-64", "aten-avx2", "two-threads"])
def test_the_encoder_writes_the_same_bytes(native, setting):
    assert _in_subprocess("encode_digest", SETTINGS[setting]) == native["encode"]


@pytest.mark.parametrize("setting", ["baseline-x86-64", "two-threads"])
def test_version5_files_still_decode_the_same_everywhere(native, setting):
    """Files of format 5 (before the compact header) keep decoding, to the same pixels on every machine."""
    assert _in_subprocess("decode_digest", SETTINGS[setting], V5_FOLDER) == native["decode v5"]


@pytest.mark.parametrize("setting", ["baseline-x86-64", "two-threads"])
def test_version6_files_still_decode_the_same_everywhere(native, setting):
    """Files of format 6 (adaptive step models) keep decoding, to the same pixels on every machine."""
    assert _in_subprocess("decode_digest", SETTINGS[setting], V6_FOLDER) == native["decode v6"]


@pytest.mark.parametrize("setting", ["baseline-x86-64", "two-threads"])
def test_version7_files_still_decode_the_same_everywhere(native, setting):
    """Files of format 7 (a state check in every table row) keep decoding, to the same pixels on every machine."""
    assert _in_subprocess("decode_digest", SETTINGS[setting], V7_FOLDER) == native["decode v7"]


def regenerate() -> None:
    FOLDER.mkdir(parents=True, exist_ok=True)
    if not MODEL.exists():  # the older versions' files were made with it: keep it
        model = make_tiny_model(seed=0, context=True, coarse=16)
        save_checkpoint(MODEL, {**tiny_checkpoint_dict(model), "context": context_entry(model.context),
                                "coarse_context": context_entry(model.coarse)})
    model = load_model(MODEL)
    for name, (height, width, mode, seed, method) in CASES.items():
        (FOLDER / name).write_bytes(encode(image(height, width, mode, seed), mode, model, config(method)).data)
    print(f"wrote {MODEL} and {len(CASES)} files in {FOLDER}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_portability.py --regenerate")
    sys.path.insert(0, str(Path(__file__).parent))
    regenerate()
