"""End-to-end tests of the progressive codec (diffcodec/codec.py) with a tiny random U-Net.

A random network predicts badly, so every step carries a huge KL; ``max_candidate_bits=8``
keeps channel simulation cheap (truncated PFR is still exactly decodable: the encoder
conditions on the sample the decoder will have).  Encoder and decoder run the network
on one thread, as the stream header says.

The encoder stops the chain where (bits so far + cost of coding x_0 directly from the state)
is smallest and starts the exact stage there (header field ``exact_from``).  With a random
model the exact stage is far cheaper than channel simulation, so ``CONFIG`` files usually
stop after two states (x_1000, x_501, then x_0).  Tests that need the whole chain (reports
over all steps, stop-at-t at every coded t, cuts and truncation at several points) use
``FULL``, which forces the exact stage to start at x_1 (the paper's L_0).

GOLDEN BITSTREAMS: tests/expected/codec_v8.sha256 holds the SHA-256 of the files produced by
:func:`golden_encoding` and the other ``golden_encoding_*`` cases (format version 8).  Versions 5 to 8
compute everything their stream depends on exactly (integer networks, diffcodec/exactmath.py; version 7's
step tables are integers), so these digests are the same on every machine: a failure is a format change.
(Version-5, -6 and -7 files made with a committed tiny model are decoded in tests/test_portability.py.)  Regenerate them only on purpose, after a
deliberate format change, with

    python tests/test_codec.py --regenerate-golden

tests/expected/codec_v1.dfc, codec_v2.dfc, codec_v2_rgba.dfc, codec_v3.dfc, codec_v4.dfc and
codec_v4_coarse.dfc are streams written by the version-1 to -4 encoders; they must keep decoding.
Those versions ran the float networks, so the streams decode exactly only where the tiny model's float
outputs are computed as on the machine that wrote them (:func:`float_machine_matches`); elsewhere the
decoder must say so rather than return a wrong image.
"""

from __future__ import annotations

import functools
import hashlib
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from diffcodec.codec import CodecConfig, StreamMismatchError, decode, encode
from diffcodec.container import DfcFormatError, chain_position, decode_file, encode_file, keep_points, paper_timestep, truncate
from diffcodec.container import FLAG_COARSE_TO_FINE, FLAG_PARTIAL_POINTS
from diffcodec.diffusion import spaced_timesteps
from diffcodec.exact import ExactLayout
from diffcodec.tiling import TileLayout
from diffcodec.errors import DiffcodecError

from conftest import make_tiny_model

GOLDEN_PATH = Path(__file__).parent / "expected" / "codec_v8.sha256"
V4_STREAMS = {"learned": Path(__file__).parent / "expected" / "codec_v4.dfc",
              "coarse": Path(__file__).parent / "expected" / "codec_v4_coarse.dfc"}
# SHA-256 of the tiny float model's outputs (float_model_digest) on the machine that wrote the stored v1–v4 streams.
FLOAT_MACHINE_DIGEST = "b5cc933e7a35e88be14f909f28405b4ea95072a0db4ab34261be8037b1d8185d"
V3_STREAM = Path(__file__).parent / "expected" / "codec_v3.dfc"
V1_STREAM = Path(__file__).parent / "expected" / "codec_v1.dfc"
V2_STREAMS = {"RGB": Path(__file__).parent / "expected" / "codec_v2.dfc", "RGBA": Path(__file__).parent / "expected" / "codec_v2_rgba.dfc"}
CONFIG = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform")
FULL = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_from_t=1)  # the whole chain, exact stage from x_1
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


def golden_digests() -> list[str]:
    """The digests of codec_v8.sha256, in GOLDEN_CASES order."""
    return [line.split()[0] for line in GOLDEN_PATH.read_text().splitlines() if line.strip() and not line.startswith("#")]


def float_model_digest() -> str:
    """SHA-256 of the tiny float models' outputs on fixed inputs: how this machine computes float networks."""
    import torch

    model = make_tiny_model(seed=0, context=True, coarse=16)
    x = torch.from_numpy(np.random.default_rng(0).integers(-4096, 4096, (2, 3, 32, 32)).astype(np.float32) / 2048)
    h = hashlib.sha256()
    for t in (0, 500, 999):
        eps, var = model(x, torch.full((2,), t))
        h.update(eps.numpy().tobytes() + var.numpy().tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def float_machine_matches() -> bool:
    """Whether this machine computes the tiny float model as the one that wrote the stored v1–v4 streams did."""
    return float_model_digest() == FLOAT_MACHINE_DIGEST


def decode_stored(data: bytes, model):
    """Decode a version 1–4 stream stored in tests/expected: exactly where the float model computes as its writer's.

    On another machine the tiny model's float outputs may differ by ~1e-6, and the decoder must then
    say so (StreamMismatchError) rather than return a wrong image: returns None in that case.
    """
    if float_machine_matches():
        return decode(data, model)
    try:
        return decode(data, model)
    except StreamMismatchError:
        return None


def image(h: int, w: int, mode: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, CHANNELS[mode]), dtype=np.uint8)


def golden_encoding(partial_points: bool = False) -> bytes:
    model = make_tiny_model(seed=0, context=True)
    config = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", threads=1, exact_method="learned",
                         partial_points=partial_points)
    return encode(image(8, 8, "RGB", seed=0), "RGB", model, config).data


def golden_encoding_rgba(method: str = "linear", partial_points: bool = False) -> bytes:
    model = make_tiny_model(seed=0, context=True)
    config = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", threads=1, exact_method=method,
                         partial_points=partial_points)
    return encode(image(5, 7, "RGBA", seed=1), "RGBA", model, config).data


def golden_encoding_rgba_learned() -> bytes:
    return golden_encoding_rgba("learned")


def golden_encoding_coarse() -> bytes:
    """The coarse-to-fine exact stage (FLAG_COARSE_TO_FINE), partial points after each of its twelve stages."""
    model = make_tiny_model(seed=0, context=True, coarse=16)
    config = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", threads=1, exact_method="coarse", points=99)
    return encode(image(8, 8, "RGB", seed=0), "RGB", model, config).data


def golden_encoding_partial() -> bytes:
    """The default encoder: partial truncation points inside the exact stage (FLAG_PARTIAL_POINTS)."""
    return golden_encoding(partial_points=True)


def golden_encoding_rgba_partial() -> bytes:
    return golden_encoding_rgba("learned", partial_points=True)


def golden_encoding_fitted_chain() -> bytes:
    """32×32 RGB on the default chain (S = 50 quad, chunks of 13 bits): version 7's position tables."""
    model = make_tiny_model(seed=0, context=True)
    config = CodecConfig(max_candidate_bits=8, threads=1, exact_from_t=400, exact_method="linear")
    return encode(image(32, 32, "RGB", seed=4), "RGB", model, config).data


def payload_start(data: bytes) -> int:
    return len(data) - 4 * len(decode_file(data).words)


def lossy_ts(result) -> list[int]:
    """Paper t of the lossy states a stream codes (the chain down to where the exact stage starts)."""
    return [s.t for s in result.lossy_steps]


@pytest.fixture(scope="module")
def rgb32(tiny_model):
    """The whole chain (FULL): x_1000, x_501, x_1, x_0."""
    pixels = image(32, 32, "RGB")
    return pixels, encode(pixels, "RGB", tiny_model, FULL)


@pytest.fixture(scope="module")
def rgb8(tiny_model):
    """Adaptive (CONFIG): the chain stops at x_501 for this image."""
    pixels = image(8, 8, "RGB")
    return pixels, encode(pixels, "RGB", tiny_model, CONFIG)


@pytest.fixture(scope="module")
def rgb8_full(tiny_model):
    pixels = image(8, 8, "RGB")
    return pixels, encode(pixels, "RGB", tiny_model, FULL)


# ---------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("config", [CONFIG, FULL, CodecConfig(steps=5, max_candidate_bits=8, spacing="quad"),
                                    CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_from_t=1, threads=2)],
                         ids=["adaptive", "full-chain", "quad", "two-threads"])
@pytest.mark.parametrize("mode, h, w", [("RGB", 32, 32), ("L", 7, 40), ("RGBA", 33, 5)])
def test_round_trip_is_exact(tiny_model, mode, h, w, config):
    pixels = image(h, w, mode, seed=h + w)
    result = encode(pixels, mode, tiny_model, config)
    out = decode(result.data, tiny_model)
    assert out.complete and out.t == 0 and out.mode == mode and out.notes == []
    assert out.pixels.dtype == np.uint8
    np.testing.assert_array_equal(out.pixels, pixels)


@pytest.mark.parametrize("gain", [0.5, 1.0, 4.0])
def test_any_target_gain_decodes_exactly(tiny_model, rgb8, gain):
    """The target gain only steers the encoder's choice of candidates: the decoder never sees it."""
    pixels, _ = rgb8
    result = encode(pixels, "RGB", tiny_model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform",
                                                          exact_from_t=1, target_gain=gain))
    np.testing.assert_array_equal(decode(result.data, tiny_model).pixels, pixels)


def test_decoding_a_dfcfile_object_equals_decoding_bytes(tiny_model, rgb8):
    pixels, result = rgb8
    np.testing.assert_array_equal(decode(result.file, tiny_model).pixels, pixels)


def test_encoding_is_deterministic(tiny_model):
    pixels = image(8, 8, "RGB", seed=3)
    calls = []
    a = encode(pixels, "RGB", tiny_model, CONFIG, on_step=calls.append)
    b = encode(pixels, "RGB", tiny_model, CONFIG)
    assert a.data == b.data
    # One unit per step of the chain (those never simulated are reported at once when the chain stops),
    # plus the exact stage: a progress bar of length S + 1 always completes.
    assert sum(calls) == CONFIG.steps + 1 and all(c > 0 for c in calls)
    calls.clear()
    encode(pixels, "RGB", tiny_model, FULL, on_step=calls.append)
    assert sum(calls) == FULL.steps + 1


def test_progress_comes_in_parts_of_a_step(tiny_model):
    """A step of a large image takes minutes: the bar is told its network batches as they finish, not only its end."""
    pixels = image(64, 32, "RGB", seed=4)  # two tiles: with batches of one, two parts to each network pass
    config = replace(CONFIG, batch_size=1)
    calls = []
    result = encode(pixels, "RGB", tiny_model, config, on_step=calls.append)
    assert sum(calls) == pytest.approx(config.steps + 1) and all(c > 0 for c in calls)
    whole = []
    encode(pixels, "RGB", tiny_model, CONFIG, on_step=whole.append)  # one batch a pass
    assert len(calls) - len(whole) >= result.coded_steps  # each pass told twice, half a pass each time
    decoded = []
    out = decode(result.data, tiny_model, on_step=decoded.append, batch_size=1)
    np.testing.assert_array_equal(out.pixels, pixels)
    assert sum(decoded) == pytest.approx(result.coded_steps + 1) and all(c > 0 for c in decoded)
    assert decoded.count(0.375) >= 2 * result.coded_steps  # a batch: half a pass at three quarters of a step


def test_step_reports(rgb32):
    pixels, result = rgb32
    steps = result.steps
    kept = spaced_timesteps(1000, FULL.steps)
    assert [s.t for s in steps if s.partial is None] == [k + 1 for k in reversed(kept)] + [0]
    # then a partial point after each stage of the exact stage but the last (6 stages of an RGB image)
    assert [s.partial for s in result.partial_steps] == pytest.approx([k / 6 for k in range(1, 6)])
    assert [s.t for s in steps[-6:]] == [0] * 6 and steps[-1].partial is None
    assert result.file.header.exact_from == 1
    bits = [s.bits for s in steps]
    assert bits == sorted(bits)
    assert bits[-1] == 8 * len(result.data) == result.bits_total
    assert all(b > 0 for b in bits)
    kl = [s.kl_bits for s in steps]
    assert kl == sorted(kl) and kl[0] >= 0
    assert steps[-1].rmse == 0.0 and all(np.isfinite(s.rmse) for s in steps)
    assert result.num_dims == pixels.size
    assert result.to_json()["bits_total"] == 8 * len(result.data)
    # each step's rate is the size of the file truncated right after it (here every state is a point)
    assert len(result.file.points) == len(steps)
    for k, (report, point) in enumerate(zip(steps, result.file.points), start=1):
        assert report.bits == 8 * len(encode_file(keep_points(result.file, k)))
        assert report.payload_bits == 32 * point.end_word  # the rest of report.bits is the header and table
        assert (report.partial is not None) == point.partial
    # partial points: RMSE falls from the last lossy state's to 0 as more of x_0 is exact
    rmse = [s.rmse for s in steps[-7:]]
    assert rmse == sorted(rmse, reverse=True) and rmse[-2] > 0


def test_adaptive_stream_codes_states_down_to_exact_from_then_x0(rgb8):
    """The step list is [x_T .. the state the exact stage codes from] + [t=0]; the header's exact_from names that state."""
    pixels, result = rgb8
    h = result.file.header
    ts = [s.t for s in result.steps if s.partial is None]
    kept = [k + 1 for k in reversed(spaced_timesteps(1000, CONFIG.steps))]  # 1000, 501, 1
    assert ts == [1000, 501, 0]  # the random model's exact stage is cheaper than channel-simulating x_1
    assert ts[:-1] == kept[: len(ts) - 1] and ts[-1] == 0
    assert (h.num_steps, h.schedule_steps, h.spacing) == (CONFIG.steps, 1000, "uniform")
    assert h.exact_from == 2 and paper_timestep(h, h.exact_from) == ts[-2]
    assert [paper_timestep(h, p.t) for p in result.file.points if not p.partial] == ts  # every coded state is a point here
    bits = [s.bits for s in result.steps]
    assert bits == sorted(bits) and bits[-1] == 8 * len(result.data)
    # each point's file size is the rate reported for its step (the 5 points are shared with the partial ones)
    for k in range(1, len(result.file.points) + 1):
        assert 8 * len(encode_file(keep_points(result.file, k))) in bits
    assert result.steps[-1].rmse == 0.0 and all(np.isfinite(s.rmse) for s in result.steps)


@pytest.mark.parametrize("steps, mode, h, w", [(3, "RGB", 8, 8), (6, "RGB", 8, 8), (5, "L", 7, 40)])
def test_adaptive_stop_is_the_cheapest_forced_stop(tiny_model, steps, mode, h, w):
    """The adaptive file is the file forced to start the exact stage where it chose, and no forced stopping
    point is more than a table row and a word smaller (the encoder's estimate counts payload bits only)."""
    pixels = image(h, w, mode, seed=steps)
    chosen = encode(pixels, mode, tiny_model, CodecConfig(steps=steps, max_candidate_bits=8, spacing="uniform"))
    forced = {}
    for t in [k + 1 for k in spaced_timesteps(1000, steps)]:
        r = encode(pixels, mode, tiny_model, CodecConfig(steps=steps, max_candidate_bits=8, spacing="uniform", exact_from_t=t))
        assert lossy_ts(r)[-1] == t and r.file.header.exact_from == steps - lossy_ts(r).index(t)
        forced[t] = r
    assert chosen.data == forced[lossy_ts(chosen)[-1]].data
    assert len(chosen.data) <= min(len(r.data) for r in forced.values()) + 8
    assert len(chosen.data) < len(forced[1].data)  # a random model: stopping early pays


@pytest.mark.parametrize("exact_from_t, expected", [
    (5000, [1000]), (1000, [1000]), (999, [1000]), (600, [1000]), (501, [1000, 501]), (500, [1000, 501]),
    (2, [1000, 501]), (1, [1000, 501, 1]),
])
def test_exact_from_t_forces_the_last_coded_state_with_t_at_least_it(tiny_model, exact_from_t, expected):
    pixels = image(8, 8, "RGB", seed=5)
    result = encode(pixels, "RGB", tiny_model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_from_t=exact_from_t))
    assert lossy_ts(result) == expected and result.steps[-1].t == 0
    h = result.file.header
    assert h.exact_from == 4 - len(expected) and paper_timestep(h, h.exact_from) == expected[-1]
    np.testing.assert_array_equal(decode(result.data, tiny_model).pixels, pixels)


def test_quad_spacing_is_written_and_decoded(tiny_model):
    pixels = image(8, 8, "RGB", seed=7)
    result = encode(pixels, "RGB", tiny_model, CodecConfig(steps=6, max_candidate_bits=8, exact_from_t=1, spacing="quad"))
    h = result.file.header
    kept = spaced_timesteps(1000, 6, "quad")
    assert h.spacing == "quad" and kept != spaced_timesteps(1000, 6)
    assert [s.t for s in result.steps if s.partial is None] == [k + 1 for k in reversed(kept)] + [0]
    point_ts = [paper_timestep(h, p.t) for p in result.file.points]  # 5 of the 7 states and 5 partial points get one
    assert set(point_ts) <= {s.t for s in result.steps} and point_ts[0] == 1000 and point_ts[-1] == 0
    assert decode_file(result.data).header.spacing == "quad"
    for t in [k + 1 for k in kept]:
        assert decode(result.data, tiny_model, stop_at_t=t).t == t
    np.testing.assert_array_equal(decode(result.data, tiny_model).pixels, pixels)


def test_truncation_points_keep_x_T_the_last_lossy_state_and_spread_over_size():
    from diffcodec.codec import _choose_points

    marks = [1, 2, 3, 4, 5, 6, 10, 20, 40, 80, 500]  # words a decoder needs after each state; the last is x_0
    assert _choose_points(marks, 5) == [0, 7, 8, 9, 10]  # targets 27 and 54 words: the free states nearest them
    assert _choose_points(marks, None) == [0, 7, 8, 9, 10]  # 500 words: the minimum of 5
    assert _choose_points(marks, 2) == [0, 10] and _choose_points(marks, 1) == [10]
    assert _choose_points(marks, 99) == list(range(11))
    assert _choose_points([3, 7], None) == [0, 1] and _choose_points([5], None) == [0]
    assert _choose_points(list(range(1, 60)) + [6000], None) == list(range(60))  # 6000 words: 60 points


def test_automatic_points_keep_every_lossy_state_within_the_t_ratio():
    """With the states' t, the automatic table lists a lossy point at least every POINT_T_RATIO in t (issue 20):
    truncate --stop-at-t T then reaches t < 1.5·T on every image size, on top of the size-spread points."""
    from diffcodec.codec import POINT_T_RATIO, _choose_points, _t_grid

    ts = [1000, 960, 920, 881, 844, 807, 770, 735, 700, 667, 634, 602, 571, 540, 511, 482, 454, 427, 401, 375, 351,
          327, 304, 282, 261, 241, 221, 202, 184, 167, 151, 136, 121, 108, 95, 83, 71, 61, 51]  # S = 50, quad
    marks = list(range(1, len(ts) + 1)) + [200, 300, 400]  # 39 lossy states, two partial candidates, x_0
    picks = _choose_points(marks, None, lossy=len(ts), ts=ts)
    lossy = [ts[i] for i in picks if i < len(ts)]
    assert lossy == [ts[i] for i in _t_grid(ts, POINT_T_RATIO)] == [1000, 667, 454, 304, 221, 151, 108, 83, 61, 51]
    assert picks[-1] == len(marks) - 1
    for T in range(51, 1001):
        reached = min(t for t in lossy if t >= T)
        assert reached < POINT_T_RATIO * T
    # A larger file's budget (1% of its words) adds size-spread points, lossy and partial, to the grid.
    big = _choose_points(list(range(1, len(ts) + 1)) + [2000, 2500, 3000], None, lossy=len(ts), ts=ts)
    assert set(picks) <= set(big) and len(big) == 30 and len(marks) - 2 in big
    assert _choose_points(marks, 5, lossy=len(ts), ts=ts) == _choose_points(marks, 5, lossy=len(ts))  # --points N: by size


def test_a_stop_before_the_last_simulated_state_recomputes_its_prediction(tiny_model, monkeypatch):
    """The encoder keeps only two predictions; stopping elsewhere recomputes one, and the file still decodes."""
    import diffcodec.codec as codec

    config = CodecConfig(steps=6, max_candidate_bits=8, spacing="uniform")
    pixels = image(8, 8, "RGB", seed=5)
    real = codec._run_chain

    def prefer_the_first_state(*args):
        search = real(*args)  # pass 1, with the stream's bits after each step made to favour stopping at x_T
        search.prefix_bits = [b if i == 0 else b + 10**6 for i, b in enumerate(search.prefix_bits)]
        return search

    calls = []
    predict = codec._Chain.predict

    def counted(self, x, index):
        calls.append(index)
        return predict(self, x, index)

    monkeypatch.setattr(codec, "_run_chain", prefer_the_first_state)
    monkeypatch.setattr(codec._Chain, "predict", counted)
    result = encode(pixels, "RGB", tiny_model, config)
    assert result.file.header.exact_from == 6  # stopped at x_T although later states were simulated
    # every simulated state once, then x_T's prediction again for the exact stage
    assert len(calls) > 2 and calls[-1] == 5 and calls[:-1] == list(range(5, 5 - len(calls) + 1, -1))
    assert result.network_evaluations == len(calls)
    np.testing.assert_array_equal(decode(result.data, tiny_model).pixels, pixels)


def test_the_file_does_not_depend_on_the_search_threads(tiny_model):
    pixels = image(9, 7, "RGB", seed=3)
    one = encode(pixels, "RGB", tiny_model, CodecConfig(steps=3, max_candidate_bits=8, exact_from_t=1, search_threads=1))
    three = encode(pixels, "RGB", tiny_model, CodecConfig(steps=3, max_candidate_bits=8, exact_from_t=1, search_threads=3))
    assert one.data == three.data and one.file.header.threads == three.file.header.threads == 1


@pytest.mark.parametrize("kwargs", [{"chunk_bits": 0}, {"chunk_bits": 17}, {"max_candidate_bits": 21}, {"threads": 0},
                                    {"spacing": "cubic"}, {"exact_from_t": 0}, {"target_gain": 0.1}, {"target_gain": 5.0},
                                    {"search_threads": 0}, {"search_threads": 65}])
def test_bad_configs_are_refused(kwargs):
    with pytest.raises(DiffcodecError):
        CodecConfig(**kwargs)


# ---------------------------------------------------------------------------- progressive decoding

CODED_T = [1000, 501, 1]  # paper t of the lossy states of a 3-step chain over T = 1000


@pytest.mark.parametrize("stop", [5000, 1000, 999, 600, 501, 500, 2, 1, 0])
@pytest.mark.parametrize("which", ["full", "adaptive"])
def test_stop_at_t_decodes_the_last_state_at_or_above_it(tiny_model, rgb8, rgb8_full, which, stop):
    """decode(stop_at_t=t) stops at the last coded state with t' ≥ t (the rule `truncate` uses); 0 is the exact image.

    The adaptive file's chain stops at x_501 (exact_from), so stop_at_t 500..1 give x_501, its last lossy state.
    """
    pixels, result = rgb8_full if which == "full" else rgb8
    coded = CODED_T if which == "full" else [1000, 501]
    assert lossy_ts(result) == coded
    out = decode(result.data, tiny_model, stop_at_t=stop)
    expected = min((t for t in coded if t >= stop), default=coded[0]) if stop > 0 else 0
    assert out.t == expected
    assert out.t >= stop or stop > coded[0]
    assert out.complete == (stop == 0) and out.notes == []
    assert out.pixels.shape == pixels.shape and out.pixels.dtype == np.uint8
    # the same state the CLI's `truncate --stop-at-t` keeps (with every coded state a point)
    header = result.file.header
    kept = truncate(result.file, chain_position(header, stop))
    assert out.t == paper_timestep(header, kept.points[-1].t)
    if stop > 0:
        assert decode(kept, tiny_model, stop_at_t=stop).t == expected
        np.testing.assert_array_equal(decode(kept, tiny_model).pixels, out.pixels)
    if which == "full":
        assert out.t == paper_timestep(header, chain_position(header, stop))


@pytest.mark.parametrize("method", ["sample", "flow"])
def test_other_reconstructions_have_the_right_shape(tiny_model, rgb8, method):
    pixels, result = rgb8  # x_501 is this file's last lossy state
    out = decode(result.data, tiny_model, stop_at_t=501, reconstruct=method, seed=1)
    assert out.t == 501 and out.pixels.shape == pixels.shape
    again = decode(result.data, tiny_model, stop_at_t=501, reconstruct=method, seed=1)
    np.testing.assert_array_equal(out.pixels, again.pixels)


def test_unknown_reconstruction_is_refused(tiny_model, rgb8):
    with pytest.raises(DiffcodecError):
        decode(rgb8[1].data, tiny_model, reconstruct="median")


def test_cut_files_decode_to_their_last_whole_point(tiny_model, rgb32):
    """A file cut at any byte: DfcFormatError inside the header (or before the first point), else the last whole point.

    The sample includes each point's exact end and the byte before it (end_word includes the range decoder's
    look-ahead word, so a cut exactly at a point's end decodes to it).
    """
    pixels, result = rgb32
    data = result.data
    head = payload_start(data)
    ends = [head + 4 * p.end_word for p in result.file.points]
    cuts = sorted({int(c) for c in np.linspace(1, len(data) - 1, 15)} | set(ends) | {e - 1 for e in ends} | {head})
    for cut in cuts:
        if cut < ends[0]:
            with pytest.raises(DfcFormatError):
                decode(data[:cut], tiny_model)
            continue
        whole = [p for p, e in zip(result.file.points, ends) if e <= cut]
        out = decode(data[:cut], tiny_model)
        assert out.t == paper_timestep(result.file.header, whole[-1].t), cut
        assert out.complete == (cut == len(data))
        assert out.pixels.shape == pixels.shape
        if out.complete:
            np.testing.assert_array_equal(out.pixels, pixels)
        elif whole[-1].partial:  # inside the exact stage: its decoded subpixels are exact
            assert out.partial == whole[-1].subpixels / pixels.size and "exact stage" in out.notes[0]
            exact_part = np.mean(out.pixels == pixels)
            assert exact_part >= out.partial
        else:
            assert out.notes and f"t={out.t}" in out.notes[0]


@pytest.mark.parametrize("config", [CONFIG, FULL], ids=["adaptive", "full-chain"])
def test_every_truncation_point_decodes(tiny_model, config):
    """Each point's end_word is min(words after its step + 1, total): the + 1 is the range decoder's look-ahead word.

    With end_word = words after the step, ~10% of points failed their check (constriction 0.5.0: 424 of 4000
    prefixes; e.g. the 8×8 RGB image of seed 0 at t=1).
    """
    for seed in range(12):
        pixels = image(8, 8, "RGB", seed=seed)
        result = encode(pixels, "RGB", tiny_model, config)
        words = len(result.file.words)
        for point in result.file.points:
            assert point.end_word <= words
            out = decode(truncate(result.file, point.t), tiny_model)
            assert out.t == paper_timestep(result.file.header, point.t)
            assert out.complete == (point.t == 0)
        assert result.file.points[-1].end_word == words


# ---------------------------------------------------------------------------- corruption

@pytest.fixture(scope="module", params=["linear", "learned"])
def flip_outcomes(request, tiny_model, rgb8):
    """Decode the 8×8 file with single payload bits flipped (every byte, varying bit): what happened each time.

    Once with the linear exact stage, once with the learned one (a tiny random context network).
    """
    if request.param == "linear":
        pixels, result = rgb8
    else:
        tiny_model = make_tiny_model(seed=0, context=True)
        pixels = image(8, 8, "RGB", seed=0)
        result = encode(pixels, "RGB", tiny_model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="learned"))
        assert result.exact_method == "learned"
    data = result.data
    outcomes = []
    for n, pos in enumerate(range(payload_start(data), len(data))):
        bit = n % 8
        corrupt = bytearray(data)
        corrupt[pos] ^= 1 << bit
        try:
            out = decode(bytes(corrupt), tiny_model)
        except BaseException as exc:  # constriction's PanicException is a BaseException
            if isinstance(exc, KeyboardInterrupt):
                raise
            outcomes.append(((pos, bit), exc))
        else:
            outcomes.append(((pos, bit), out))
    return pixels, outcomes


def test_flipped_payload_bits_never_give_a_silently_wrong_image(flip_outcomes):
    """Every flip either raises or returns the exact image (a flip in bits the decoder never reads is harmless).

    Which exceptions are allowed is the next test's subject; here nothing may return a wrong image.
    """
    pixels, outcomes = flip_outcomes
    assert len(outcomes) > 100
    raised = 0
    for where, outcome in outcomes:
        if isinstance(outcome, BaseException):
            raised += 1
            continue
        assert outcome.complete and outcome.t == 0, where
        np.testing.assert_array_equal(outcome.pixels, pixels, err_msg=str(where))
    assert raised > 0.9 * len(outcomes)


def test_flipped_payload_bits_raise_only_diffcodec_errors(flip_outcomes):
    """Corrupt data is a DiffcodecError (one line in the CLI), never constriction's AssertionError or a panic.

    Single-bit flips made constriction assert ("Tried to decode from compressed data that is invalid for
    the employed entropy model") in ~2% of cases before decode converted that to StreamMismatchError.
    """
    _, outcomes = flip_outcomes
    for where, outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, DiffcodecError):
            raise AssertionError(f"flip at byte {where[0]} bit {where[1]} raised {type(outcome).__name__}: {outcome}")
    # version 8: the container's payload check refuses every single flip before the decoder runs
    assert all(isinstance(o, DfcFormatError) and "payload check failed" in str(o) for _, o in outcomes)


def test_flipped_bits_of_a_file_cut_at_any_byte_raise_only_diffcodec_errors(tiny_model, rgb8):
    """A file cut at a byte no point ends at keeps no payload check (version 8): its flips reach the decoder.

    They may decode to a wrong image (documented: docs/format.md, "What the checks protect") but must never
    panic or raise anything but a DiffcodecError (constriction's assertions become StreamMismatchError).
    """
    data = rgb8[1].data[:-1]
    assert decode_file(data).cut
    kinds = set()
    for n, pos in enumerate(range(payload_start(data), len(data) - 3)):
        corrupt = bytearray(data)
        corrupt[pos] ^= 1 << (n % 8)
        try:
            out = decode(bytes(corrupt), tiny_model)
        except DiffcodecError as exc:
            kinds.add(type(exc).__name__)
        else:
            assert not out.complete and "decoded unchecked" in out.notes[-1]
            kinds.add("image")
    assert "image" in kinds


def test_flipped_header_bits_are_format_errors(tiny_model, rgb8):
    data = rgb8[1].data
    for pos in range(payload_start(data)):
        corrupt = bytearray(data)
        corrupt[pos] ^= 0x10
        with pytest.raises(DfcFormatError):
            decode(bytes(corrupt), tiny_model)


def test_the_wrong_model_is_refused(rgb8):
    other = make_tiny_model(seed=1)
    with pytest.raises(DiffcodecError, match="model"):
        decode(rgb8[1].data, other)


def test_a_model_with_another_schedule_length_is_refused(rgb8):
    with pytest.raises(DiffcodecError):
        decode(rgb8[1].data, make_tiny_model(seed=0, num_steps=500))


# ---------------------------------------------------------------------------- golden bitstream

def test_golden_bitstreams():
    """SHA-256 of each golden case's file (format version 8), the same on every machine.

    golden_encoding(): 8×8 RGB from seed 0, make_tiny_model(seed=0, context=True), 3 steps, K ≤ 2^8, learned
    exact stage, no partial points; golden_encoding_rgba(): 5×7 RGBA, linear exact stage;
    golden_encoding_fitted_chain(): 32×32 RGB on the default chain, where version 7's position tables apply;
    golden_encoding_rgba_learned(): the same with the learned stage (colour plane, then alpha's linear one);
    golden_encoding_partial() and golden_encoding_rgba_partial(): the default encoder, partial points in the
    exact stage; golden_encoding_coarse(): the coarse-to-fine exact stage.  The encoder picks exact_from itself.
    A failure is a format change (or a change in how the float weights become integers): regenerate only on
    purpose (module docstring).
    """
    expected = golden_digests()
    model = make_tiny_model(seed=0, context=True)
    cases = [(golden_encoding, (8, 8), "RGB", 0), (golden_encoding_rgba, (5, 7), "RGBA", 1),
             (golden_encoding_rgba_learned, (5, 7), "RGBA", 1), (golden_encoding_partial, (8, 8), "RGB", 0),
             (golden_encoding_rgba_partial, (5, 7), "RGBA", 1), (golden_encoding_coarse, (8, 8), "RGB", 0),
             (golden_encoding_fitted_chain, (32, 32), "RGB", 4)]
    assert len(expected) == len(cases)
    for digest, (encoding, shape, mode, seed) in zip(expected, cases):
        data = encoding()
        assert data[:1] == b"\xdf" and data[1] & 0x0F == 8  # the version's four bits (flag bits above them)
        assert hashlib.sha256(data).hexdigest() == digest, encoding.__name__
        coarse = encoding is golden_encoding_coarse
        np.testing.assert_array_equal(decode(data, make_tiny_model(seed=0, context=True, coarse=16) if coarse else model).pixels,
                                      image(*shape, mode, seed=seed))


@pytest.mark.parametrize("method", sorted(V4_STREAMS))
def test_version4_streams_still_decode(method):
    """Streams of format version 4 (float networks) decode exactly where the float model computes as their writer's.

    tests/expected/codec_v4.dfc and codec_v4_coarse.dfc: golden_encoding_partial() and golden_encoding_coarse()
    as the version-4 encoder wrote them.
    """
    data = V4_STREAMS[method].read_bytes()
    assert data[3] == 4 and decode_file(data).header.version == 4
    model = make_tiny_model(seed=0, context=True, coarse=16 if method == "coarse" else 0)
    result = decode_stored(data, model)
    if result is None:
        pytest.skip("this machine computes the tiny model differently from the stream's writer; the decoder said so")
    np.testing.assert_array_equal(result.pixels, image(8, 8, "RGB", seed=0))
    cut = truncate(decode_file(data), 2)
    assert decode(encode_file(cut), model).t > 0


def test_version3_stream_still_decodes():
    """A stream of format version 3 (8-byte model id, no method bit before the exact stage) decodes exactly.

    tests/expected/codec_v3.dfc: the version-3 encoder's ``encode(image(8, 8, "RGB", seed=0), "RGB",
    make_tiny_model(seed=0), CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", threads=1))``;
    machine-dependent like the golden above.  A context network in the model does not change what it
    needs: versions 1–3 name the U-Net alone.
    """
    data = V3_STREAM.read_bytes()
    assert data[3] == 3 and decode_file(data).header.version == 3
    for model in (make_tiny_model(seed=0), make_tiny_model(seed=0, context=True)):
        result = decode_stored(data, model)
        if result is not None:
            np.testing.assert_array_equal(result.pixels, image(8, 8, "RGB", seed=0))


def test_version1_stream_still_decodes():
    """A stream of format version 1 (levels coded directly, not as changes) decodes exactly.

    tests/expected/codec_v1.dfc: ``encode(image(8, 8, "RGB", seed=0), "RGB", make_tiny_model(seed=0), FULL)``
    with the version-1 encoder (chunk_bits 10); machine-dependent like the golden above.
    """
    data = V1_STREAM.read_bytes()
    assert data[3] == 1 and decode_file(data).header.version == 1
    result = decode_stored(data, make_tiny_model(seed=0))
    if result is None:
        pytest.skip("this machine computes the tiny model differently from the stream's writer; the decoder said so")
    np.testing.assert_array_equal(result.pixels, image(8, 8, "RGB", seed=0))
    cut = truncate(decode_file(data), 2)
    assert decode(encode_file(cut), make_tiny_model(seed=0)).t > 0


@pytest.mark.parametrize("mode, shape, seed", [("RGB", (8, 8), 0), ("RGBA", (5, 7), 1)])
def test_version2_streams_still_decode(mode, shape, seed):
    """Streams of format version 2 (one exact-stage scale, no residual prediction) decode exactly.

    tests/expected/codec_v2.dfc and codec_v2_rgba.dfc: ``encode(image(*shape, mode, seed), mode,
    make_tiny_model(seed=0), FULL)`` with the version-2 encoder; machine-dependent like the golden above.
    """
    data = V2_STREAMS[mode].read_bytes()
    assert data[3] == 2 and decode_file(data).header.version == 2
    result = decode_stored(data, make_tiny_model(seed=0))
    if result is None:
        pytest.skip("this machine computes the tiny model differently from the stream's writer; the decoder said so")
    np.testing.assert_array_equal(result.pixels, image(*shape, mode, seed=seed))
    cut = truncate(decode_file(data), 2)
    assert decode(encode_file(cut), make_tiny_model(seed=0)).t > 0


GOLDEN_CASES = (golden_encoding, golden_encoding_rgba, golden_encoding_rgba_learned, golden_encoding_partial,
                golden_encoding_rgba_partial, golden_encoding_coarse, golden_encoding_fitted_chain)

if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate-golden"]:
        lines = [f"{hashlib.sha256(f()).hexdigest()}  codec_v8: tests/test_codec.py {f.__name__}()" for f in GOLDEN_CASES]
        GOLDEN_PATH.write_text("# format version 8: the same on every machine\n" + "\n".join(lines) + "\n")
        print(f"wrote {GOLDEN_PATH}")
    elif sys.argv[1:] == ["--float-digest"]:
        print(float_model_digest())
    else:
        sys.exit("usage: python tests/test_codec.py --regenerate-golden | --float-digest")


# --------------------------------------------------------------------------- learned exact stage (format version 4)

def test_learned_exact_stage_round_trips_and_needs_its_context_network():
    model = make_tiny_model(seed=0, context=True)
    img = image(9, 11, "RGB", seed=3)
    res = encode(img, "RGB", model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="learned"))
    np.testing.assert_array_equal(decode(res.data, model).pixels, img)
    # the same U-Net without the context network is another model for a version-4 file
    with pytest.raises(DiffcodecError, match="encoded with model"):
        decode(res.data, make_tiny_model(seed=0))
    # a cut inside the exact stage still decodes to the last lossy state
    f = decode_file(res.data)
    assert decode(encode_file(truncate(f, min(p.t for p in f.points if p.t > 0))), model).t > 0


def test_auto_exact_method_is_never_worse_than_either():
    model = make_tiny_model(seed=0, context=True)
    img = image(8, 8, "RGB", seed=4)
    results = {m: encode(img, "RGB", model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method=m))
               for m in ("auto", "linear", "learned")}
    sizes = {m: len(r.data) for m, r in results.items()}
    assert results["linear"].exact_method == "linear" and results["learned"].exact_method == "learned"
    assert sizes["auto"] <= min(sizes["linear"], sizes["learned"]) + 4  # estimates decide; the flush may differ by a word


def test_learned_exact_stage_of_rgba_round_trips():
    model = make_tiny_model(seed=0, context=True)
    img = image(5, 7, "RGBA", seed=2)
    res = encode(img, "RGBA", model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="learned"))
    assert res.exact_method == "learned"
    np.testing.assert_array_equal(decode(res.data, model).pixels, img)


def test_learned_exact_stage_is_refused_where_it_does_not_apply():
    with pytest.raises(DiffcodecError, match="learned exact stage"):
        encode(image(4, 4, "L"), "L", make_tiny_model(seed=0, context=True), CodecConfig(steps=3, max_candidate_bits=8, exact_method="learned"))
    with pytest.raises(DiffcodecError, match="learned exact stage"):
        encode(image(4, 4, "RGB"), "RGB", make_tiny_model(seed=0), CodecConfig(steps=3, max_candidate_bits=8, exact_method="learned"))
    with pytest.raises(DiffcodecError, match="exact_method"):
        CodecConfig(exact_method="neural")
    with pytest.raises(DiffcodecError, match="learned_candidates"):
        CodecConfig(learned_candidates=0)


def test_auto_tries_the_learned_stage_only_near_the_best_state(monkeypatch):
    """With learned_candidates=1 the context network runs once in "auto" (plus six times to write the stage)."""
    from diffcodec import exact as exact_module

    calls = []
    original = exact_module.plan_stage
    monkeypatch.setattr(exact_module, "plan_stage",
                        lambda kind, *a, **k: (kind == exact_module.LEARNED and calls.append(1)) or original(kind, *a, **k))
    model = make_tiny_model(seed=0, context=True)
    res = encode(image(8, 8, "RGB", seed=4), "RGB", model, CodecConfig(**{**FULL.__dict__, "exact_from_t": None, "learned_candidates": 1}))
    assert len(calls) == 1 and len(res.steps) >= 2


# --------------------------------------------------------------------------- partial points inside the exact stage

@pytest.mark.parametrize("mode, method, stages", [("RGB", "learned", 6), ("RGB", "linear", 6), ("RGBA", "learned", 8),
                                                  ("L", "linear", 2)])
def test_partial_points_decode_to_what_the_encoder_reported(mode, method, stages):
    """A file cut after a partial point decodes to x_0 exact on a prefix of the coding order, predicted elsewhere:
    the image (and so the RMSE) the encoder reported for that point."""
    model = make_tiny_model(seed=0, context=True)
    pixels = image(6, 7, mode, seed=4)
    res = encode(pixels, mode, model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method=method,
                                                  points=99))
    assert res.exact_method == method and res.file.header.flags == FLAG_PARTIAL_POINTS
    at = [k for k, p in enumerate(res.file.points, start=1) if p.partial]
    assert len(at) == len(res.partial_steps) == stages - 1
    n = pixels.size
    planes = ExactLayout(TileLayout(6, 7, mode))
    sizes = np.cumsum(planes.stage_sizes())
    assert sizes[-1] == n and [res.file.points[k - 1].subpixels for k in at] == list(sizes[:-1])
    previous = None
    for k, report in zip(at, res.partial_steps):
        f = keep_points(res.file, k)
        out = decode(encode_file(f), model)
        assert not out.complete and out.t == 0 and out.partial == pytest.approx(report.partial)
        assert out.partial == f.points[-1].subpixels / n and "exact stage" in out.notes[0]
        assert math.sqrt(np.mean((out.pixels.astype(float) - pixels) ** 2)) == pytest.approx(report.rmse, abs=1e-9)
        # the decoded prefix is exact (grey images replicate one plane into three channels)
        assert np.sum(out.pixels == pixels) >= f.points[-1].subpixels
        if previous is not None:
            assert 8 * len(encode_file(f)) == report.bits > previous
        previous = report.bits
    np.testing.assert_array_equal(decode(res.data, model).pixels, pixels)


def test_partial_points_can_be_turned_off():
    model = make_tiny_model(seed=0, context=True)
    pixels = image(8, 8, "RGB", seed=0)
    res = encode(pixels, "RGB", model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", partial_points=False))
    assert res.file.header.flags == 0 and not res.partial_steps and not any(p.partial for p in res.file.points)


def test_corruption_before_a_partial_point_is_caught():
    """Its check covers the payload words up to it: a changed word before its end never decodes silently."""
    model = make_tiny_model(seed=0, context=True)
    pixels = image(8, 8, "RGB", seed=2)
    res = encode(pixels, "RGB", model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", points=99))
    f = res.file
    last_lossy = max(p.end_word for p in f.points if p.t > 0)
    first_partial = next(p for p in f.points if p.partial)
    assert first_partial.end_word > last_lossy
    cut = keep_points(f, f.points.index(first_partial) + 1)
    data = bytearray(encode_file(cut))
    head = payload_start(bytes(data))
    data[head + 4 * (first_partial.end_word - 1) - 1] ^= 0x10  # inside the partial point's words, after the lossy ones
    with pytest.raises(DiffcodecError):
        decode(bytes(data), model)


# --------------------------------------------------------------------------- coarse-to-fine exact stage (FLAG_COARSE_TO_FINE)

COARSE_MODEL = functools.partial(make_tiny_model, seed=0, context=True, coarse=16)


@pytest.mark.parametrize("mode, shape", [("RGB", (6, 7)), ("RGBA", (5, 7)), ("RGB", (1, 1))])
def test_coarse_partial_points_decode_to_what_the_encoder_reported(mode, shape):
    """Twelve stages: bins, then values inside them.  A cut after the bins shows every colour subpixel inside its
    bin; every partial point decodes to the image (and RMSE) the encoder reported; the whole file is exact."""
    model = COARSE_MODEL()
    pixels = image(*shape, mode, seed=4)
    res = encode(pixels, mode, model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="coarse",
                                                  points=99))
    assert res.exact_method == "coarse"
    assert res.file.header.flags == FLAG_PARTIAL_POINTS | FLAG_COARSE_TO_FINE
    ints = model.integer()  # versions 5 on name the integer form of the model
    assert res.file.header.model_id == ints.coarse_identity[:3] != ints.codec_identity[:3]
    planes = ExactLayout(TileLayout(*shape, mode))
    colour_sizes = [n for s, n in zip(planes.stages, planes.stage_sizes()) if s.plane == 0]
    alpha_sizes = [n for s, n in zip(planes.stages, planes.stage_sizes()) if s.plane > 0]
    colour = sum(colour_sizes)
    at = [k for k, p in enumerate(res.file.points, start=1) if p.partial]
    assert [res.file.points[k - 1].subpixels for k in at] == list(np.cumsum(colour_sizes * 2 + alpha_sizes)[:-1])
    assert len(at) == len(res.partial_steps)
    total = pixels.size + colour
    for k, report in zip(at, res.partial_steps):
        f = keep_points(res.file, k)
        out = decode(encode_file(f), model)
        assert not out.complete and out.t == 0 and out.partial == pytest.approx(report.partial)
        assert out.partial == f.points[-1].subpixels / total
        assert math.sqrt(np.mean((out.pixels.astype(float) - pixels) ** 2)) == pytest.approx(report.rmse, abs=1e-9)
        if f.points[-1].subpixels >= colour:  # past the bins: every colour subpixel lies in its own bin
            np.testing.assert_array_equal(out.pixels[..., :3] // 16, pixels[..., :3] // 16)
    np.testing.assert_array_equal(decode(res.data, model).pixels, pixels)


def test_coarse_files_need_their_network_and_other_files_do_not():
    """A coarse-to-fine file names the coarse network too: a model without it is refused with the usual error.
    Adding the network to a model leaves its other files decodable (their model id does not change)."""
    img = image(8, 8, "RGB", seed=3)
    config = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="coarse")
    res = encode(img, "RGB", COARSE_MODEL(), config)
    with pytest.raises(DiffcodecError, match="encoded with model"):
        decode(res.data, make_tiny_model(seed=0, context=True))
    with pytest.raises(DiffcodecError, match="encoded with model"):
        decode(res.data, make_tiny_model(seed=0, context=True, coarse=32))
    learned = encode(img, "RGB", make_tiny_model(seed=0, context=True), replace(config, exact_method="learned"))
    np.testing.assert_array_equal(decode(learned.data, COARSE_MODEL()).pixels, img)
    with pytest.raises(DiffcodecError, match="coarse-to-fine"):
        encode(img, "RGB", make_tiny_model(seed=0, context=True), config)
    with pytest.raises(DiffcodecError, match="coarse-to-fine"):
        encode(image(4, 4, "L"), "L", COARSE_MODEL(), config)
    with pytest.raises(DiffcodecError, match="coarse_margin"):
        CodecConfig(coarse_margin=0.9)


def test_auto_writes_the_coarse_stage_on_small_images_or_within_its_margin():
    """"auto" writes the coarse-to-fine stage on images of at most coarse_max_pixels pixels.  On larger ones, with
    coarse_margin above 1, it compares it with the cheapest other one at the chosen state: a large margin takes
    it, a margin just above 1 only where it is cheaper.  At the default margin (1) it is not tried: the files
    are those of a model without the network.  A grey image never takes it."""
    model = COARSE_MODEL()
    img = image(8, 8, "RGB", seed=5)
    small = CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", coarse_max_pixels=64)
    assert encode(img, "RGB", model, small).data == encode(img, "RGB", model, replace(small, exact_method="coarse")).data
    base = replace(small, coarse_max_pixels=63)  # an 8x8 image is now a large one
    assert encode(img, "RGB", model, replace(base, coarse_margin=100.0)).exact_method == "coarse"
    strict = encode(img, "RGB", model, replace(base, coarse_margin=1.0 + 1e-9))
    sizes = {m: len(encode(img, "RGB", model, replace(base, exact_method=m)).data) for m in ("coarse", "learned", "linear")}
    assert strict.exact_method in sizes and len(strict.data) <= min(sizes.values()) + 8  # the plan decides on estimates
    assert encode(img, "RGB", model, base).data == encode(img, "RGB", make_tiny_model(seed=0, context=True), base).data
    assert encode(image(8, 8, "L"), "L", model, replace(base, coarse_margin=100.0)).exact_method == "linear"


def test_corruption_of_a_coarse_file_is_caught_or_harmless():
    """Every payload byte of a coarse-to-fine stream flipped in turn: a clean error or the exact image."""
    model = COARSE_MODEL()
    img = image(6, 6, "RGB", seed=7)
    res = encode(img, "RGB", model, CodecConfig(steps=3, max_candidate_bits=8, spacing="uniform", exact_method="coarse"))
    head = payload_start(res.data)
    for i in range(head, len(res.data)):
        data = bytearray(res.data)
        data[i] ^= 0x5A
        try:
            out = decode(bytes(data), model)
        except DiffcodecError:
            continue
        if out.complete:
            np.testing.assert_array_equal(out.pixels, img)


# --------------------------------------------------------------------------- decompression bombs (issue 18)

def bomb_file(width: int = 60000, height: int = 60000) -> bytes:
    """A small, well-formed .dfc (valid CRCs, made with the container API) whose header claims a huge image."""
    from diffcodec.container import StreamHeader, TruncationPoint, DfcFile

    model = make_tiny_model(seed=0)
    header = StreamHeader(model_id=model.integer().codec_identity[:3], width=width, height=height, mode="RGB",
                          num_steps=3, chunk_bits=8, threads=1, schedule_steps=1000, exact_from=1)
    dfc = DfcFile(header=header, points=(TruncationPoint(3, 0, 0), TruncationPoint(2, 2, 0)), words=np.zeros(2, dtype=np.uint32), image_crc32=None)
    return encode_file(dfc)


def test_a_file_claiming_too_many_pixels_is_refused_before_allocating():
    from diffcodec.codec import DEFAULT_MAX_PIXELS, ImageTooLargeError

    data = bomb_file()
    assert len(data) < 100 and DEFAULT_MAX_PIXELS == 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError, match="60000×60000"):
        decode(data, make_tiny_model(seed=0), stop_at_t=900)
    with pytest.raises(ImageTooLargeError):
        decode(bomb_file(8, 8), make_tiny_model(seed=0), max_pixels=63)


def test_time_estimate_scales_one_timed_pass(tiny_model, monkeypatch):
    """estimate_seconds: a pass over 4 tiles, timed, per tile × the image's tiles × passes ÷ the network's share."""
    import diffcodec.codec as codec

    clock = iter([10.0, 10.4])  # the timed pass (after the warm-up) takes 0.4 s: 0.1 s a tile
    monkeypatch.setattr(codec.time, "perf_counter", lambda: next(clock))
    seconds = codec.estimate_seconds(tiny_model, 128, 96, "RGB", steps=50)  # 4 × 3 tiles
    assert seconds == pytest.approx(0.1 * 12 * 51 / codec._ENCODE_NETWORK_TIME_SHARE)
    clock = iter([0.0, 0.4])
    assert codec.estimate_seconds(tiny_model, 128, 96, "RGB", steps=9, decode=True) == pytest.approx(
        0.1 * 12 * 10 / codec._DECODE_NETWORK_TIME_SHARE)
