"""The ``diffcodec`` verbs through click's CliRunner, with the tiny random model (seconds in all).

Random models put a huge KL in every step, so encodings use tiny images, ``--steps 3`` and
the hidden ``--max-candidate-bits 8`` to keep the channel simulation cheap.  With such a
model the encoder starts the exact stage early (coding x_0 directly from x_501 is far cheaper
than channel-simulating x_1), so the files here code x_1000, x_501, then the exact image.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from diffcodec.cli.main import main
from diffcodec.container import VERSION, decode_file
from diffcodec.models import checkpoint

FAST = ["--steps", "3", "--max-candidate-bits", "8", "--spacing", "uniform"]  # t = 1000, 501, 1
VERBS = ["encode", "decode", "truncate", "info", "nll", "rd-curve", "train-context"]


def run(*args, expect: int | None = 0):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if expect is not None:
        assert result.exit_code == expect, (result.output, result.exception)
    return result


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_one_line_error(result, *words: str) -> None:
    """Non-zero exit, no traceback, and the error is one line naming what went wrong."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for w in words:
        assert w in errors[0], errors[0]


def random_image(path: Path, h: int, w: int, mode: str, seed: int = 0) -> np.ndarray:
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode).save(path)
    return pixels


def read_pixels(path: Path) -> np.ndarray:
    arr = np.asarray(Image.open(path))
    return arr[..., None] if arr.ndim == 2 else arr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(tiny_model_path) -> str:
    return str(tiny_model_path)


@pytest.fixture(scope="module")
def encoded(work, model) -> dict:
    """One 20×13 RGB image encoded with every coded state a truncation point (x_1000, x_501, x_0)."""
    image = work / "rgb.png"
    pixels = random_image(image, 13, 20, "RGB")
    out = work / "rgb.dfc"
    result = run("encode", image, "-o", out, "--model", model, "--json", *FAST)
    return {"image": image, "pixels": pixels, "dfc": out, "json": last_json(result), "stdout": result.stdout}


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_round_trip_is_exact(work, model, mode):
    image, dfc, png = work / f"rt-{mode}.png", work / f"rt-{mode}.dfc", work / f"rt-{mode}-out.png"
    pixels = random_image(image, 13, 20, mode, seed=3)
    enc = run("encode", image, "-o", dfc, "--model", model, *FAST)
    assert "lossless" in enc.stdout and "bits/dim" in enc.stdout
    dec = run("decode", dfc, "-o", png, "--model", model)
    assert "exact image" in dec.stdout
    assert np.array_equal(read_pixels(png), pixels)


def test_encode_json_last_line(encoded):
    out = encoded["json"]
    assert {"bits_total", "bpd", "steps"} <= out.keys()
    assert out["bits_total"] == 8 * encoded["dfc"].stat().st_size
    assert out["bpd"] == pytest.approx(out["bits_total"] / (13 * 20 * 3))
    for step in out["steps"]:
        assert {"t", "bits", "bpd", "rmse"} <= step.keys()
    ts = [s["t"] for s in out["steps"] if "partial" not in s]
    # The coded states down to where the exact stage starts (x_501 here, exact_from), then the exact image.
    assert ts == [1000, 501, 0]
    # Between them, a partial point after each of the exact stage's six stages but the last (RGB).
    shares = [s["partial"] for s in out["steps"] if "partial" in s]
    assert shares == pytest.approx([k / 6 for k in range(1, 6)]) and all(s["t"] == 0 for s in out["steps"][2:])
    # 5 points in the file (the default for a small file): x_T, x_501, two partial points and the exact image.
    assert out["file"]["points"] == [1000, 501, 0, 0, 0] and out["file"]["partial_points"] == 2
    assert out["file"]["complete"] and out["file"]["t"] == 0
    assert out["steps"][-1]["rmse"] == 0 and out["steps"][0]["rmse"] > 0
    bits = [s["bits"] for s in out["steps"]]
    assert bits == sorted(bits)


def test_encode_exact_method(work, model, tmp_path):
    """--exact-method picks the exact stage; "learned" needs a context network, and says so in one line."""
    from diffcodec.models.checkpoint import context_entry, load_model

    from conftest import tiny_checkpoint_dict, tiny_context_net

    image = work / "method.png"
    pixels = random_image(image, 8, 8, "RGB", seed=5)
    out = last_json(run("encode", image, "-o", tmp_path / "a.dfc", "--model", model, "--exact-method", "linear", "--json", *FAST))
    assert out["exact_method"] == "linear"
    assert_one_line_error(run("encode", image, "-o", tmp_path / "b.dfc", "--model", model, "--exact-method", "learned", *FAST,
                              expect=None), "learned exact stage", "context network")
    with_context = tmp_path / "ctx.pt"
    checkpoint.save_checkpoint(with_context, {**tiny_checkpoint_dict(load_model(model)), "context": context_entry(tiny_context_net())})
    out = last_json(run("encode", image, "-o", tmp_path / "c.dfc", "--model", with_context, "--exact-method", "learned", "--json", *FAST))
    assert out["exact_method"] == "learned"
    run("decode", tmp_path / "c.dfc", "-o", tmp_path / "c.png", "--model", with_context)
    assert np.array_equal(read_pixels(tmp_path / "c.png"), pixels)


def test_encode_target_gain(work, model, tmp_path):
    """--target-gain is encoder-only: another gain writes another stream, which decodes to the same exact image."""
    image = work / "gain.png"
    pixels = random_image(image, 16, 16, "RGB", seed=8)
    for gain in ("1.0", "2.5"):
        out = tmp_path / f"g{gain}.dfc"
        run("encode", image, "-o", out, "--model", model, "--target-gain", gain, *FAST)
        run("decode", out, "-o", tmp_path / f"g{gain}.png", "--model", model)
        assert np.array_equal(read_pixels(tmp_path / f"g{gain}.png"), pixels)
    assert (tmp_path / "g1.0.dfc").read_bytes() != (tmp_path / "g2.5.dfc").read_bytes()
    run("encode", image, "-o", tmp_path / "bad.dfc", "--model", model, "--target-gain", "0", *FAST, expect=2)
    assert not (tmp_path / "bad.dfc").exists()


@pytest.fixture(scope="module")
def coarse_model(work, model) -> Path:
    """The tiny model with a context network and a coarse-to-fine network (bins of 16 levels)."""
    from diffcodec.models.checkpoint import context_entry, load_model

    from conftest import tiny_checkpoint_dict, tiny_context_net

    path = work / "coarse.pt"
    checkpoint.save_checkpoint(path, {**tiny_checkpoint_dict(load_model(model)), "context": context_entry(tiny_context_net()),
                                      "coarse_context": context_entry(tiny_context_net(0, 16))})
    return path


def test_coarse_exact_method_end_to_end(work, model, coarse_model, tmp_path):
    """--exact-method coarse: one line without a coarse-to-fine network; with one, the table's partial points, info and
    a decode cut after the bins (every subpixel within its bin of 16 levels) and of the whole file."""
    image = work / "coarse.png"
    pixels = random_image(image, 6, 6, "RGB", seed=6)
    assert_one_line_error(run("encode", image, "-o", tmp_path / "x.dfc", "--model", model, "--exact-method", "coarse", *FAST,
                              expect=None), "coarse-to-fine")
    path = coarse_model
    dfc = tmp_path / "c.dfc"
    table = run("encode", image, "-o", dfc, "--model", path, "--exact-method", "coarse", "--points", "99", *FAST)
    assert "coarse-to-fine exact stage" in table.stdout and "0 (50%)" in table.stdout  # the bins end halfway
    info = run("info", dfc)
    assert "coarse-to-fine exact stage" in info.stdout and "0 (50%)" in info.stdout
    half = last_json(run("info", dfc, "--json"))["points"]
    at = next(k for k, p in enumerate(half, start=1) if p.get("subpixels") == pixels.size)
    run("decode", dfc, "-o", tmp_path / "bins.png", "--model", path, "--max-bytes", half[at - 1]["bytes"])
    assert np.array_equal(read_pixels(tmp_path / "bins.png") // 16, pixels // 16)
    run("decode", dfc, "-o", tmp_path / "all.png", "--model", path)
    assert np.array_equal(read_pixels(tmp_path / "all.png"), pixels)


def test_every_verb_gives_a_partial_point_the_same_share(work, coarse_model, tmp_path):
    """A point inside a coarse-to-fine exact stage: encode, info, truncate --max-bytes and decode give one share.

    Its count includes each colour subpixel's bin; `truncate` divided it by the subpixels alone and printed
    "t=0 (183%)" where `info` printed 92%.
    """
    image = work / "coarse.png"
    pixels = random_image(image, 6, 6, "RGB", seed=6)
    dfc = tmp_path / "c.dfc"
    encoded = last_json(run("encode", image, "-o", dfc, "--model", coarse_model, "--exact-method", "coarse", "--points", "99",
                            "--json", *FAST))
    info = last_json(run("info", dfc, "--json"))
    assert info["exact_symbols"] == 2 * pixels.size  # a bin and an offset per subpixel
    shares = [s["partial"] for s in encoded["steps"] if "partial" in s]
    points = [p for p in info["points"] if "subpixels" in p]
    assert [p["subpixels"] / info["exact_symbols"] for p in points] == pytest.approx(shares) and len(points) == 11
    for k, p in enumerate(info["points"], start=1):
        if "subpixels" not in p:
            continue
        share = p["subpixels"] / info["exact_symbols"]
        human = run("truncate", dfc, "--max-bytes", p["bytes"], "-o", tmp_path / "cut.dfc").stdout
        assert human.strip().endswith(f"to t=0 ({100 * share:.0f}%) (truncation point {k} of {len(info['points'])})"), human
        cut = last_json(run("truncate", dfc, "--max-bytes", p["bytes"], "-o", tmp_path / "cut.dfc", "--json"))
        assert cut["partial"] == share
        assert f"{100 * share:.0f}% of its exact stage decoded" in run("info", tmp_path / "cut.dfc").stdout
        decoded = last_json(run("decode", tmp_path / "cut.dfc", "-o", tmp_path / "cut.png", "--model", coarse_model, "--json"))
        assert decoded["partial"] == share and f"{100 * share:.0f}%" in decoded["notes"][0]


def test_encode_human_table(encoded, work, model):
    result = run("encode", encoded["image"], "-o", work / "table.dfc", "--model", model, *FAST)
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["t", "bits", "bits/dim", "RMSE", "PSNR"]
    assert "2 of the chain's 3 steps coded" in lines[0]  # the one wording of step counts (README, "Steps")
    assert [line.split()[0] for line in lines[2:5]] == ["1000", "501", "0"]
    assert lines[-1].startswith("wrote")


def test_decode_stop_at_t(encoded, work, model):
    out = work / "lossy.png"
    result = run("decode", encoded["dfc"], "-o", out, "--stop-at-t", 500, "--model", model, "--json")
    info = last_json(result)
    assert info["t"] == 501 and not info["complete"]  # the last coded state with t ≥ 500, as truncate picks
    assert Image.open(out).size == (20, 13) and Image.open(out).mode == "RGB"
    for how in ("sample", "flow"):
        run("decode", encoded["dfc"], "-o", work / f"{how}.png", "--stop-at-t", 600, "--reconstruct", how, "--model", model)
        assert Image.open(work / f"{how}.png").size == (20, 13)


@pytest.mark.parametrize("stop", [1, 2, 500, 501])
def test_decode_stop_below_exact_from_gives_its_last_lossy_state(encoded, work, model, stop):
    """The chain stopped at x_501 (exact_from), so any --stop-at-t in 1..501 gives x_501, and the file is
    neither truncated nor cut: no note (stop 1 used to print "truncated at t=0")."""
    info = last_json(run("info", encoded["dfc"], "--json"))
    assert (info["exact_from_t"], info["spacing"], info["complete"]) == (501, "uniform", True)
    assert info["version"] == VERSION
    v1 = run("info", str(Path(__file__).parent / "expected" / "codec_v1.dfc"))
    assert ".dfc version 1," in v1.output
    result = run("decode", encoded["dfc"], "-o", work / "low.png", "--stop-at-t", stop, "--model", model, "--json")
    out = last_json(result)
    assert out["t"] == 501 and not out["complete"] and out["notes"] == []
    assert "note" not in result.stderr


def test_encode_stop_at_t_writes_truncated_file(encoded, work, model):
    out = work / "early.dfc"
    result = run("encode", encoded["image"], "-o", out, "--stop-at-t", 500, "--model", model, "--json", *FAST)
    file = last_json(result)["file"]
    assert file["t"] == 501 and not file["complete"]  # the nearest point with t ≥ 500
    assert out.stat().st_size * 8 == file["bits"] < encoded["json"]["bits_total"]
    dec = run("decode", out, "-o", work / "early.png", "--model", model, "--json")
    assert last_json(dec)["t"] == 501
    assert "truncated at t=501" in dec.stderr


def test_cut_file_decodes_to_last_whole_point(encoded, work, model):
    data = encoded["dfc"].read_bytes()
    full = decode_file(data)
    head = len(data) - 4 * len(full.words)
    # chain t: x_1000, x_501 (exact_from), two partial points inside the exact stage, the exact image
    assert [(p.t, p.partial) for p in full.points] == [(3, False), (2, False), (0, True), (0, True), (0, False)]
    cuts = [len(data) - 1, head + 4 * full.points[2].end_word - 1,
            head + 4 * full.points[1].end_word + 2, head + 4 * full.points[1].end_word - 1]
    for k, cut in enumerate(cuts):
        last = decode_file(data[:cut]).points[-1]
        assert (last.t, last.partial) == [(0, True), (2, False), (2, False), (3, False)][k]
        path = work / f"cut{k}.dfc"
        path.write_bytes(data[:cut])
        result = run("decode", path, "-o", work / f"cut{k}.png", "--model", model, "--json")
        assert "cut short" in result.stderr and Image.open(work / f"cut{k}.png").size == (20, 13)
        # format 8: the words it keeps have no check of their own, and decode says so
        assert ("decoded unchecked" in result.stderr) == (last.end_word > 0)
        if last.end_word > 0:  # truncate will not give such words a fresh check
            assert_one_line_error(run("truncate", path, "--stop-at-t", 0, "-o", work / "again.dfc", expect=None),
                                  path.name, "never checked")
            assert "decoded unchecked" in run("info", path).stdout
        if last.partial:
            share = last.subpixels / (20 * 13 * 3)
            assert last_json(result)["partial"] == pytest.approx(share) and not last_json(result)["complete"]
            assert f"{100 * share:.0f}% of its subpixels exact" in result.stderr
        else:
            expected_t = {3: 1000, 2: 501}[last.t]
            assert last_json(result)["t"] == expected_t and f"t={expected_t}" in result.stderr
    # Cut inside the header, or before the first point: one clear line.
    for cut in (2, head - 3):
        path = work / "cut-header.dfc"
        path.write_bytes(data[:cut])
        assert_one_line_error(run("decode", path, "-o", work / "x.png", "--model", model, expect=None), "cut-header.dfc")


def test_corrupt_payload_is_one_clear_line(encoded, work, model):
    data = encoded["dfc"].read_bytes()
    head = len(data) - 4 * len(decode_file(data).words)
    for pos in np.linspace(head + 4, len(data) - 1, 6).astype(int):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        path = work / "corrupt.dfc"
        path.write_bytes(bytes(bad))
        result = run("decode", path, "-o", work / "corrupt.png", "--model", model, expect=None)
        assert_one_line_error(result, "payload check failed")
        assert "CORRUPT" in run("info", path).stdout  # info still describes it, and says so
    assert not (work / "corrupt.png").exists()


def test_corrupt_header_is_one_clear_line(encoded, work, model):
    bad = bytearray(encoded["dfc"].read_bytes())
    bad[6] ^= 1
    path = work / "bad-header.dfc"
    path.write_bytes(bytes(bad))
    for args in (["info", path], ["truncate", path, "--stop-at-t", 500, "-o", work / "x.dfc"],
                 ["decode", path, "-o", work / "x.png", "--model", model]):
        assert_one_line_error(run(*args, expect=None), "header check")


def test_wrong_model(encoded, work, tiny_model_path):
    other = work / "other.pt"
    ckpt = torch.load(tiny_model_path, weights_only=True)
    name = next(k for k, v in ckpt["ema"].items() if v.is_floating_point())
    ckpt["ema"][name] = ckpt["ema"][name] + 0.01
    checkpoint.save_checkpoint(other, ckpt)
    result = run("decode", encoded["dfc"], "-o", work / "x.png", "--model", other, expect=None)
    assert_one_line_error(result, "model", "--model")
    # Not a checkpoint at all, and a missing one.
    assert_one_line_error(run("decode", encoded["dfc"], "-o", work / "x.png", "--model", encoded["image"], expect=None),
                          "not a diffcodec checkpoint")
    assert_one_line_error(run("encode", encoded["image"], "-o", work / "x.dfc", "--model", work / "nope.pt", expect=None),
                          "nope.pt")


def test_missing_default_model_says_pass_model(encoded, work, monkeypatch):
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_PATH", work / "no-default.pt")
    result = run("decode", encoded["dfc"], "-o", work / "x.png", expect=None)
    assert_one_line_error(result, "--model")


def test_non_dfc_input(encoded, work, model):
    png = encoded["image"]
    assert_one_line_error(run("decode", png, "-o", work / "x.png", "--model", model, expect=None), "not a .dfc file")
    assert_one_line_error(run("info", png, expect=None), "not a .dfc file")
    assert_one_line_error(run("truncate", png, "--stop-at-t", 10, "-o", work / "x.dfc", expect=None), "not a .dfc file")
    assert_one_line_error(run("encode", encoded["dfc"], "-o", work / "x.dfc", "--model", model, expect=None),
                          "cannot read", "as an image")


def test_missing_inputs(work, model):
    missing = work / "missing"
    assert_one_line_error(run("encode", f"{missing}.png", "-o", work / "x.dfc", "--model", model, expect=None), "missing.png")
    assert_one_line_error(run("decode", f"{missing}.dfc", "-o", work / "x.png", "--model", model, expect=None), "missing.dfc")
    assert_one_line_error(run("info", f"{missing}.dfc", expect=None), "missing.dfc")
    assert_one_line_error(run("truncate", f"{missing}.dfc", "--stop-at-t", 5, "-o", work / "x.dfc", expect=None), "missing.dfc")
    assert_one_line_error(run("nll", missing, "--model", model, expect=None), "missing")
    assert_one_line_error(run("rd-curve", missing, "--model", model, expect=None), "missing")
    (work / "empty").mkdir()
    assert_one_line_error(run("rd-curve", work / "empty", "--model", model, expect=None), "no images")


def test_unwritable_outputs_fail_before_work(encoded, work, model):
    nowhere = work / "no-such-folder"
    # A bogus --model shows that the output is checked first.
    for args in (["encode", encoded["image"], "-o", nowhere / "x.dfc", "--model", "bogus.pt"],
                 ["decode", encoded["dfc"], "-o", nowhere / "x.png", "--model", "bogus.pt"],
                 ["truncate", encoded["dfc"], "--stop-at-t", 500, "-o", nowhere / "x.dfc"],
                 ["rd-curve", work, "--csv", nowhere / "rd.csv", "--model", "bogus.pt"],
                 ["rd-curve", work, "-o", nowhere / "rd.png", "--model", "bogus.pt"]):
        assert_one_line_error(run(*args, expect=None), "cannot write", "does not exist")
    assert_one_line_error(run("encode", encoded["image"], "-o", work, "--model", "bogus.pt", expect=None), "directory")
    assert_one_line_error(run("decode", encoded["dfc"], "-o", work / "x.unknown", "--model", "bogus.pt", expect=None),
                          "unknown image format")
    assert not nowhere.exists()


def test_bad_options_are_usage_errors(encoded, work, model):
    result = run("decode", encoded["dfc"], "-o", work / "x.png", "--reconstruct", "blur", "--model", model, expect=2)
    assert "Traceback" not in result.output
    result = run("decode", encoded["dfc"], "-o", work / "x.png", "--stop-at-t", 5000, "--model", model, expect=2)
    assert "--stop-at-t" in result.stderr
    result = run("encode", encoded["image"], "-o", work / "x.dfc", "--steps", 2000, "--model", model, expect=2)
    assert "--steps" in result.stderr
    assert not (work / "x.dfc").exists()


def test_debug_shows_the_traceback(encoded, work):
    result = CliRunner().invoke(main, ["--debug", "info", str(encoded["image"])])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "DfcFormatError"


def test_load_image_warnings_go_to_stderr(work, model):
    path = work / "deep.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, size=(9, 11), dtype=np.uint16)).save(path)
    result = run("encode", path, "-o", work / "deep.dfc", "--model", model, "--json", *FAST)
    assert "16-bit" in result.stderr and "16-bit" not in result.stdout
    last_json(result)


def test_truncate_then_info_shows_fewer_points(encoded, work, monkeypatch):
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL_PATH", work / "no-default.pt")  # no model is needed
    before = last_json(run("info", encoded["dfc"], "--json"))
    out = work / "short.dfc"
    result = run("truncate", encoded["dfc"], "--stop-at-t", 500, "-o", out)
    assert f"{out.stat().st_size} bytes" in result.stdout and f"{encoded['dfc'].stat().st_size} bytes" in result.stdout
    after = last_json(run("info", out, "--json"))
    assert len(after["points"]) < len(before["points"])
    assert after["points"][-1]["t"] == 501 and not after["complete"]
    assert after["total_bytes"] == out.stat().st_size == before["points"][1]["bytes"]
    # the table lists the point the file ends at alone, after x_S's (implied, with no row: version 7)
    assert [p["t"] for p in after["points"]] == [1000, 501] and after["points"][0]["bytes"] == 11 + 3
    every = work / "short-every.dfc"
    run("truncate", encoded["dfc"], "--stop-at-t", 500, "--every-point", "-o", every)
    again = last_json(run("info", every, "--json"))
    assert [p["t"] for p in again["points"]] == [p["t"] for p in before["points"][:2]]
    # x_S is the only point before t=501 and is implied in both: here the two cuts are the same file
    assert again["points"][-1]["t"] == 501 and every.read_bytes() == out.read_bytes()
    assert last_json(run("truncate", every, "--stop-at-t", 1000, "-o", work / "again.dfc", "--json"))["t"] == 1000
    human = run("info", out).stdout
    assert "truncated" in human and "20×13 RGB" in human
    again = run("truncate", out, "--stop-at-t", 0, "-o", work / "same.dfc")
    assert "already stops at t=501" in again.stderr
    assert (work / "same.dfc").read_bytes() == out.read_bytes()


def test_max_bytes_keeps_the_longest_prefix_of_points_partial_ones_included(encoded, work, model):
    info = last_json(run("info", encoded["dfc"], "--json"))
    partial = next(p for p in info["points"] if "subpixels" in p)
    out = work / "fit.dfc"
    result = run("truncate", encoded["dfc"], "--max-bytes", partial["bytes"] + 3, "-o", out, "--json")
    assert last_json(result)["output_bytes"] == partial["bytes"] == out.stat().st_size
    assert last_json(result)["partial"] == pytest.approx(partial["subpixels"] / 780) and not last_json(result)["complete"]
    human = run("info", out).stdout
    assert "truncated: decodes to x_0 with" in human and "% of the subpixels exact" in human
    # decode --max-bytes decodes what that prefix gives, without writing it
    a = last_json(run("decode", encoded["dfc"], "-o", work / "fit-a.png", "--max-bytes", partial["bytes"] + 3,
                      "--model", model, "--json"))
    b = last_json(run("decode", out, "-o", work / "fit-b.png", "--model", model, "--json"))
    assert a["partial"] == b["partial"] == pytest.approx(partial["subpixels"] / 780)
    assert np.array_equal(np.asarray(Image.open(work / "fit-a.png")), np.asarray(Image.open(work / "fit-b.png")))
    # too few bytes for the first point, or both selectors: one clear line
    assert_one_line_error(run("truncate", encoded["dfc"], "--max-bytes", 5, "-o", work / "x.dfc", expect=None), "--max-bytes")
    assert_one_line_error(run("truncate", encoded["dfc"], "--max-bytes", 500, "--stop-at-t", 3, "-o", work / "x.dfc",
                              expect=None), "exactly one")


@pytest.fixture(scope="module")
def tiles(work) -> Path:
    folder = work / "tiles"
    folder.mkdir()
    for i in range(3):
        random_image(folder / f"{i}.png", 32, 32, "RGB", seed=10 + i)
    return folder


def test_nll_json(tiles, model):
    # One torch thread: with the cores busy (a training job), two threads run the tiny net ~40× slower.
    result = run("nll", tiles, "--steps", 3, "--threads", 1, "--model", model, "--json")
    out = last_json(result)
    assert {"bpd", "prior", "steps", "decoder", "images", "tiles", "num_steps"} <= out.keys()
    assert "per_step" not in out
    assert out["images"] == 3 and out["num_steps"] == 3
    assert out["bpd"] == pytest.approx(out["prior"] + out["steps"] + out["decoder"])
    per_step = last_json(run("nll", tiles, "--steps", 3, "--limit", 1, "--threads", 1, "--model", model, "--json", "--per-step"))
    assert per_step["images"] == 1 and len(per_step["per_step"]) == 2
    human = run("nll", tiles, "--steps", 3, "--limit", 2, "--threads", 1, "--model", model).stdout
    assert "L_T" in human and "L_0" in human and "bits/dim" in human


def test_nll_tiles_a_64x64_image_like_the_codec(work, model):
    """nll cuts any image into the codec's 32×32 tiles: a 64×64 image's bound is that of its four quarters
    (the same x_t draws, tile order = name order), and a padded 13×20 image counts only its real pixels."""
    big, quarters, odd = work / "big", work / "quarters", work / "odd"
    for f in (big, quarters, odd):
        f.mkdir()
    pixels = random_image(big / "a.png", 64, 64, "RGB", seed=3)
    for k, (y, x) in enumerate([(0, 0), (0, 32), (32, 0), (32, 32)]):
        Image.fromarray(pixels[y : y + 32, x : x + 32]).save(quarters / f"{k}.png")
    args = ("--steps", 3, "--threads", 1, "--model", model, "--json", "--per-image")
    whole = last_json(run("nll", big, *args))
    parts = last_json(run("nll", quarters, *args))
    assert whole["images"] == 1 and whole["tiles"] == 4 and parts["tiles"] == 4
    assert whole["bpd"] == pytest.approx(parts["bpd"], rel=1e-9)
    assert whole["per_image"][0]["bits"] == pytest.approx(sum(r["bits"] for r in parts["per_image"]), rel=1e-9)
    assert whole["per_image"][0]["bits"] == pytest.approx(whole["bpd"] * 64 * 64 * 3, rel=1e-9)
    random_image(odd / "a.png", 13, 20, "RGB")
    out = last_json(run("nll", odd, *args))
    assert out["tiles"] == 1 and out["per_image"][0]["bits"] == pytest.approx(out["bpd"] * 13 * 20 * 3, rel=1e-9)
    assert "bound bytes" in run("nll", big, "--steps", 3, "--threads", 1, "--model", model, "--per-image").stdout


def test_rd_curve_csv_plot_json(work, model):
    folder = work / "mixed"
    folder.mkdir()
    random_image(folder / "a.png", 32, 32, "RGB", seed=1)
    random_image(folder / "b.png", 13, 20, "L", seed=2)
    csv_path, plot_path = work / "rd.csv", work / "rd.png"
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    args = ["rd-curve", folder, "--csv", csv_path, "--model", model, "--json", *FAST]
    result = run(*args, *(["-o", plot_path] if have_mpl else []))
    out = last_json(result)
    assert out["images"] == 2 and out["subpixels"] == 32 * 32 * 3 + 13 * 20
    # One point per t either image coded (the chains may stop at different t), then the exact images.
    ts = [p["t"] for p in out["points"] if p["partial"] is None]
    assert ts == sorted(set(ts), reverse=True) and ts[0] == 1000 and ts[-1] == 0 and set(ts) <= {1000, 501, 1, 0}
    # The RGB image's partial points at k/6 of its subpixels; the grey image's one at 1/2 is the RGB's 3/6.
    shares = [p["partial"] for p in out["points"] if p["partial"] is not None]
    assert shares == pytest.approx([k / 6 for k in range(1, 6)])
    assert out["points"][-1]["rmse"] == 0 and out["points"][-1]["psnr"] is None
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "t,rate_bpd,rmse,psnr,kl_bpd,partial" and len(lines) == len(out["points"]) + 1
    if have_mpl:
        assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    human = run("rd-curve", folder, "--limit", 1, "--model", model, *FAST).stdout
    assert "bits/dim" in human and "RMSE" in human


def test_step_counts_agree_across_encode_info_rd_curve_and_json(work, model):
    """One definition (README, "Steps"): S = the chain's length (--steps), coded = the states x_T … x_t0 a file
    codes; encode, info and rd-curve print the same words and their --json the same numbers."""
    folder = work / "counts"
    folder.mkdir()
    random_image(folder / "a.png", 16, 16, "RGB", seed=5)
    dfc = work / "counts.dfc"
    enc = last_json(run("encode", folder / "a.png", "-o", dfc, "--model", model, "--json", *FAST))
    info = last_json(run("info", dfc, "--json"))
    rd = last_json(run("rd-curve", folder, "--model", model, "--json", *FAST))
    coded = sum(s["t"] > 0 for s in enc["steps"])
    assert enc["num_steps"] == info["num_steps"] == rd["num_steps"] == 3
    assert enc["coded_steps"] == info["coded_steps"] == coded == rd["coded_steps"] == rd["coded_steps_per_image"][0]
    assert sum(s["point"] for s in enc["steps"]) == len(info["points"])
    words = f"{coded} of the chain's 3 steps coded"
    assert words in run("encode", folder / "a.png", "-o", dfc, "--model", model, *FAST).stdout.splitlines()[0]
    assert words in run("info", dfc).stdout
    assert words in run("rd-curve", folder, "--model", model, *FAST).stdout.splitlines()[0]


def test_rd_curve_baselines(work, model):
    folder = work / "rgba"
    folder.mkdir()
    random_image(folder / "a.png", 13, 20, "RGBA", seed=4)
    csv_path = work / "base.csv"
    result = run("rd-curve", folder, "--csv", csv_path, "--baselines", "--model", model, "--json", *FAST)
    rows = last_json(result)["baselines"]
    assert rows and all({"codec", "rate_bpd", "rmse"} <= r.keys() for r in rows)
    assert (work / "base-baselines.csv").read_text().startswith("codec,family,lossless,rate_bpd,rmse")
    if not any(r["family"] == "jpeg" for r in rows):  # JPEG cannot store alpha: skipped with a warning
        assert "jpeg" in result.stderr


@pytest.mark.parametrize("verb", VERBS)
def test_help_has_examples(verb):
    result = run(verb, "--help")
    assert "Examples:" in result.stdout
    assert f"diffcodec {verb}" in result.stdout.split("Examples:")[1]


def test_decode_refuses_a_decompression_bomb_in_one_line(work, model):
    """A 60000×60000 claim in a tiny file: one line, before the model is even loaded; --max-pixels raises the limit."""
    from test_codec import bomb_file

    bomb = work / "bomb.dfc"
    bomb.write_bytes(bomb_file())
    result = run("decode", bomb, "-o", work / "bomb.png", "--stop-at-t", 900, "--model", model, expect=None)
    assert_one_line_error(result, "60000×60000", "limit")
    small = work / "small-claim.dfc"
    small.write_bytes(bomb_file(8, 8))
    result = run("decode", small, "-o", work / "small.png", "--max-pixels", 63, "--model", model, expect=None)
    assert_one_line_error(result, "8×8", "limit")


def test_progress_off_a_terminal_prints_a_line_now_and_then(capsys, monkeypatch):
    """Not on a terminal there is no bar, but a long job says how far it is and how long is left."""
    from diffcodec.cli import common

    clock = iter([0.0, 10.0, 40.0, 45.0, 80.0])
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    with common.progress(4, "encoding", every=30.0) as update:
        for _ in range(3):
            update()
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["encoding: 2/4 (50%), 40 s so far, about 40 s left"]
    assert common._duration(185) == "3 min 05 s" and common._duration(7620) == "2 h 07 min"


def test_long_encodes_and_decodes_say_so_up_front(work, model, monkeypatch):
    """An image the codec will take over a minute on gets one line with the estimate before any work; small ones none."""
    import diffcodec.codec

    seen = []

    def estimate(model, height, width, mode, steps, decode=False, threads=1, sample_tiles=4):
        seen.append((height, width, steps, decode))
        return 3725.0

    monkeypatch.setattr(diffcodec.codec, "estimate_seconds", estimate)
    image, dfc = work / "big.png", work / "big.dfc"
    random_image(image, 130, 128, "RGB", seed=5)  # 5 × 4 tiles
    enc = run("encode", image, "-o", dfc, "--model", model, *FAST)
    assert enc.stderr.splitlines()[0] == ("encoding 128×130: about 1 h 02 min on this machine "
                                          "(estimated from one network pass; large images take longer per pixel)")
    dec = run("decode", dfc, "-o", work / "big-out.png", "--model", model)
    assert dec.stderr.splitlines()[0].startswith("decoding 128×130: about 1 h 02 min")
    assert seen == [(130, 128, 3, False), (130, 128, 2, True)]  # x_1000, x_501 and the exact stage: 3 units
    random_image(work / "small.png", 13, 20, "RGB")
    small = run("encode", work / "small.png", "-o", work / "small.dfc", "--model", model, *FAST)
    assert "about" not in small.stderr and len(seen) == 2  # 13×20: one tile, not timed


def test_progress_off_a_terminal_speaks_during_a_long_step(capsys):
    """A step can take minutes (a network pass over a photo): lines keep coming while no update does."""
    import time

    from diffcodec.cli import common

    with common.progress(4, "decoding", every=0.05) as update:
        update(0.5)
        time.sleep(0.4)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all(line.startswith("decoding: 0.5/4 (12%), ") and line.endswith(" left") for line in lines)
