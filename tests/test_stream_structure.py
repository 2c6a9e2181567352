"""The stream's structure: the format's constants (diffcodec/format.py), the profile a header resolves to
(diffcodec/profile.py), the time coordinates (diffcodec/timeline.py) and the stages the stream lists."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest

from diffcodec import container, coders, exact, format, profile, stream, timeline
from diffcodec.diffusion import SPACINGS, spaced_timesteps
from diffcodec.entropy import StepSizeCoder, StepSizeCoderV1
from diffcodec.format import FLAG_COARSE_TO_FINE, FLAG_PARTIAL_POINTS, ExactKind
from diffcodec.numerics import EXACT, FLOAT
from diffcodec.profile import StreamProfile
from diffcodec.tiling import TileLayout
from diffcodec.timeline import Timeline

DOCS = Path(__file__).resolve().parents[1] / "docs" / "format.md"


@pytest.mark.parametrize("module", [timeline, profile])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


def test_the_format_module_is_the_one_source_of_its_constants():
    assert format.SPACINGS == SPACINGS  # the spacing field's codes are the order of diffusion's spacings
    for name in ("MAGIC", "VERSION", "READABLE_VERSIONS", "MODEL_ID_BYTES", "FLAG_PARTIAL_POINTS", "FLAG_COARSE_TO_FINE",
                 "MAX_SIDE", "MAX_STEPS", "model_id_bytes", "known_flags"):
        assert getattr(container, name) is getattr(format, name), name
    for name in ("EXACT_SCALES", "CONTEXT_SCALES", "DEFAULT_WEIGHTS", "NEAR", "RING", "WEIGHT_BITS", "LINEAR", "LEARNED"):
        assert getattr(exact, name) is getattr(format, name), name
    np.testing.assert_allclose(format.EXACT_SCALES, 2.0 ** ((np.arange(16) - 12) / 4), rtol=1e-15)
    np.testing.assert_allclose(format.CONTEXT_SCALES, 2.0 ** ((np.arange(16) - 8) / 8), rtol=1e-15)
    assert "diffcodec/format.py" in DOCS.read_text()


@pytest.mark.parametrize("T, S, spacing", [(1000, 3, "uniform"), (1000, 50, "quad"), (1000, 1, "uniform"), (20, 20, "quad"),
                                           (4000, 97, "quad")])
def test_timeline_conversions_are_the_chain_s(T, S, spacing):
    kept = spaced_timesteps(T, S, spacing)
    for exact_from in sorted({1, max(1, S // 2), S}):
        tl = Timeline(T, S, spacing, exact_from)
        assert tl.last_step == S - exact_from and tl.exact_step == tl.last_step + 1
        assert tl.paper_t(0) == 0 and tl.position_of_step(tl.exact_step) == 0 and tl.step_of_position(0) == tl.exact_step
        for step in range(tl.last_step + 1):
            index, position = tl.index_of_step(step), tl.position_of_step(step)
            assert (index, position) == (S - 1 - step, S - step) and tl.step_of_position(position) == step
            assert tl.paper_t_of_step(step) == tl.paper_t(position) == tl.paper_t_of_index(index) == kept[index] + 1
        for t in sorted({0, 1, 2, T // 3, T - 1, T, T + 5} | {k + 1 for k in kept}):
            # the smallest position whose paper t is at least t (S if none), and the last coded step at or above t
            positions = [p for p in range(1, S + 1) if kept[p - 1] + 1 >= t]
            assert tl.position_at_or_above(t) == (0 if t <= 0 else min(positions, default=S))
            steps = [s for s in range(tl.last_step + 1) if kept[S - 1 - s] + 1 >= t]
            assert tl.step_at_or_above(t) == (tl.exact_step if t <= 0 else max(steps, default=0))


def header(version: int = 5, flags: int = 0, mode: str = "RGB", width: int = 7, height: int = 5, exact_from: int = 2):
    return container.StreamHeader(model_id=bytes(format.model_id_bytes(version)), width=width, height=height, mode=mode,
                                  num_steps=3, chunk_bits=8, threads=1, flags=flags, exact_from=exact_from, version=version)


def test_a_header_resolves_its_profile_and_timeline():
    h = header(flags=FLAG_PARTIAL_POINTS | FLAG_COARSE_TO_FINE)
    assert h.profile == StreamProfile(5, FLAG_PARTIAL_POINTS | FLAG_COARSE_TO_FINE)
    assert h.timeline == Timeline(1000, 3, "uniform", 2)
    assert container.paper_timestep(h, 2) == h.timeline.paper_t(2) == 501
    assert container.chain_position(h, 500) == h.timeline.position_at_or_above(500) == 2


@pytest.mark.parametrize("version", format.READABLE_VERSIONS)
def test_what_each_version_means(version):
    p = StreamProfile(version, format.known_flags(version))
    assert p.numerics is (EXACT if version >= 5 else FLOAT) and p.threads_must_match == (version < 5)
    assert p.threads_stored == (version < 6) and p.shared_x_T == (version >= 6)
    assert type(p.step_sizes(8)) is (StepSizeCoderV1 if version == 1 else StepSizeCoder)
    assert p.model_id_bytes == (8 if version < 4 else 4 if version < 6 else 3)
    assert p.has_method_bit == (version >= 4) and p.partial_points == (version >= 4) and p.coarse_to_fine == (version >= 4)
    kinds = {p.exact_kind(m) for m in (None, 0, 1)}
    assert kinds == ({ExactKind.INDEPENDENT} if version < 3 else {ExactKind.LINEAR} if version == 3
                     else {ExactKind.LINEAR, ExactKind.COARSE})
    assert StreamProfile(version, 0).exact_kind(1) == (ExactKind.LEARNED if version >= 4 else p.exact_kind(1))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
@pytest.mark.parametrize("kind", [ExactKind.LINEAR, ExactKind.LEARNED, ExactKind.COARSE, ExactKind.INDEPENDENT])
def test_the_exact_stage_lists_its_stages_and_the_profile_counts_their_symbols(mode, kind):
    """One count of the exact stage's symbols: the stages' (what encoder and decoder run) and the profile's (from a
    header alone, for info and truncate)."""
    if mode == "L" and kind in (ExactKind.LEARNED, ExactKind.COARSE):
        return
    planes = exact.ExactLayout(TileLayout(5, 7, mode))
    stage_list = exact.stages(kind, planes, bin_width=16)
    names = [type(s).__name__ for s in stage_list]
    rest = ["LinearWeights", "LinearStage", "LinearStage"] if mode == "RGBA" else []
    assert names == {
        ExactKind.INDEPENDENT: ["IndependentStage"],
        ExactKind.LINEAR: ["LinearWeights"] + ["LinearStage"] * len(planes.stages),
        ExactKind.LEARNED: ["LearnedStage"] * 6 + rest,
        ExactKind.COARSE: ["CoarseStage"] * 12 + rest,
    }[kind]
    flags = FLAG_COARSE_TO_FINE if kind == ExactKind.COARSE else 0
    h = header(flags=flags, mode=mode)
    assert exact.num_symbols(stage_list) == h.profile.exact_symbols(h, kind) == h.profile.exact_symbols(h)
    assert h.profile.partial_share(h, exact.num_symbols(stage_list) // 2, kind) == pytest.approx(0.5, abs=0.02)


def test_the_stream_lists_the_chain_s_steps_then_the_exact_stage():
    stage_list = stream.stages(Timeline(1000, 5, "quad", exact_from=2))
    assert [s.step for s in stage_list[:-1]] == [0, 1, 2, 3] and isinstance(stage_list[-1], stream.ExactStep)
    assert stream.StreamMismatchError is coders.StreamMismatchError
