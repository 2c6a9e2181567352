"""``--device``: where the integer networks run.  The CPU path keeps its bytes (the golden streams check that too);
another device gives the same file and decode (run where CUDA exists, skipped here); a device this machine lacks is
one line, no traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffcodec.cli.main import main
from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.stream import Chain
from diffcodec.tiling import TileLayout

from conftest import make_tiny_model
from test_cli import FAST, assert_one_line_error, random_image

CONFIG = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform")
HAS_CUDA = torch.cuda.is_available()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(4).integers(0, 256, size=(11, 14, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cpu_file(tiny_model, pixels) -> bytes:
    return encode(pixels, "RGB", tiny_model, CONFIG).data


@pytest.mark.parametrize("verb", ["encode", "decode", "rd-curve"])
@pytest.mark.parametrize("device, words", [
    ("cuda:97", ["--device cuda:97", "not available"]),
    ("tpu", ["--device tpu", "cpu, cuda or cuda:N"]),
    ("not a device", ["--device not a device", "not a device"]),
])
def test_a_device_this_machine_lacks_is_one_line(tmp_path, tiny_model_path, verb, device, words):
    image = tmp_path / "a.png"
    random_image(image, 8, 9, "RGB")
    dfc = tmp_path / "a.dfc"
    assert run("encode", image, "-o", dfc, "--model", tiny_model_path, *FAST).exit_code == 0
    args = {"encode": ["encode", image, "-o", tmp_path / "b.dfc"], "decode": ["decode", dfc, "-o", tmp_path / "b.png"],
            "rd-curve": ["rd-curve", tmp_path, "--limit", "1"]}[verb]
    assert_one_line_error(run(*args, "--model", tiny_model_path, "--device", device, *(FAST if verb != "decode" else [])), *words)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, tiny_model_path):
    image = tmp_path / "a.png"
    random_image(image, 8, 9, "RGB")
    assert_one_line_error(run("encode", image, "-o", tmp_path / "a.dfc", "--model", tiny_model_path, "--device", "cuda", *FAST),
                          "--device cuda is not available")


def test_device_cpu_is_the_default(tmp_path, tiny_model_path):
    image = tmp_path / "a.png"
    random_image(image, 9, 8, "RGB", seed=2)
    files = []
    for extra in ([], ["--device", "cpu"]):
        out = tmp_path / f"a{len(files)}.dfc"
        assert run("encode", image, "-o", out, "--model", tiny_model_path, *FAST, *extra).exit_code == 0
        files.append(out.read_bytes())
    assert files[0] == files[1]
    result = run("decode", tmp_path / "a0.dfc", "-o", tmp_path / "a.png", "--model", tiny_model_path, "--device", "cpu")
    assert result.exit_code == 0, result.output


def test_the_device_code_path_gives_the_same_file(pixels, cpu_file):
    """The integer networks' device code (im2col + GEMM, outputs handed back to the coders) run on the CPU: the
    same bytes and the same decode as the default path, so a GPU run only has to compute the same sums."""
    model = make_tiny_model(context=True)
    ints = model.integer().to("cpu", conv="gemm")
    assert ints.device.type == "cpu" and ints.net.conv == "gemm" and ints.context.conv == "gemm"
    reference = make_tiny_model(context=True)
    assert encode(pixels, "RGB", model, CONFIG).data == encode(pixels, "RGB", reference, CONFIG).data
    data = encode(pixels, "RGB", model, CONFIG).data
    np.testing.assert_array_equal(decode(data, model).pixels, pixels)


def test_a_repeated_prediction_is_kept_and_read_only(tiny_model):
    chain = Chain(tiny_model.integer(), TileLayout(8, 8, "RGB"), 3, 10)
    x = np.random.default_rng(0).standard_normal(3 * 32 * 32).astype(np.float32).astype(np.float64)
    calls = []
    real = chain._network_predict
    chain._network_predict = lambda *a: calls.append(a[1]) or real(*a)
    first, again, other = chain.predict(x, 2), chain.predict(x.copy(), 2), chain.predict(x, 1)
    assert calls == [2, 1]
    assert all(np.array_equal(first[k], again[k]) for k in first) and not first["mean"].flags.writeable
    with pytest.raises(ValueError):
        first["mean"][0] = 0.0


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")
def test_cuda_gives_the_cpu_file_and_decode(tmp_path, tiny_model_path, pixels, cpu_file):
    model = make_tiny_model(context=True)
    model.integer().to("cuda")
    assert model.integer().device.type == "cuda"
    reference = encode(pixels, "RGB", make_tiny_model(context=True), CONFIG).data
    data = encode(pixels, "RGB", model, CONFIG).data
    assert data == reference
    np.testing.assert_array_equal(decode(data, model).pixels, pixels)
    image = tmp_path / "a.png"
    random_image(image, 9, 8, "RGB", seed=3)
    files = []
    for device in ("cpu", "cuda", "cuda:0"):
        out = tmp_path / f"{device.replace(':', '')}.dfc"
        assert run("encode", image, "-o", out, "--model", tiny_model_path, "--device", device, *FAST).exit_code == 0
        files.append(out.read_bytes())
        result = run("decode", out, "-o", tmp_path / "b.png", "--model", tiny_model_path, "--device", device)
        assert result.exit_code == 0, result.output
    assert files[0] == files[1] == files[2]
