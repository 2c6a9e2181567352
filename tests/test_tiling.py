"""Tests of the 32×32 RGB tile layout (diffcodec/tiling.py) that encoder and decoder share."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffcodec.errors import DiffcodecError
from diffcodec.tiling import MODE_CHANNELS, TileLayout

SIZES = [(1, 1), (5, 70), (33, 31), (64, 64)]
MODES = ["L", "RGB", "RGBA"]


def image(h: int, w: int, mode: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, MODE_CHANNELS[mode]), dtype=np.uint8)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("h, w", SIZES)
def test_split_merge_round_trip(h, w, mode):
    layout = TileLayout(h, w, mode)
    pixels = image(h, w, mode)
    tiles = layout.split(pixels)
    planes = 2 if mode == "RGBA" else 1
    assert tiles.dtype == np.uint8
    assert tiles.shape == layout.shape == (planes * math.ceil(h / 32) * math.ceil(w / 32), 3, 32, 32)
    np.testing.assert_array_equal(layout.merge(tiles), pixels)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("h, w", SIZES)
def test_tiles_hold_the_pixels_where_the_layout_says(h, w, mode):
    """Tile r·cols + c of plane k, channel ch, position (y, x) is pixel (32r + y, 32c + x) of that plane."""
    layout = TileLayout(h, w, mode)
    pixels = image(h, w, mode, seed=1)
    tiles = layout.split(pixels)
    planes = [pixels[..., :3]] if mode == "RGB" else [np.repeat(pixels[..., :1], 3, 2)] if mode == "L" else [
        pixels[..., :3], np.repeat(pixels[..., 3:], 3, 2)]
    per = layout.rows * layout.cols
    real = layout.real_mask()
    for k, plane in enumerate(planes):
        for r in range(layout.rows):
            for c in range(layout.cols):
                tile = tiles[k * per + r * layout.cols + c]
                block = plane[32 * r : 32 * r + 32, 32 * c : 32 * c + 32]
                bh, bw = block.shape[:2]
                np.testing.assert_array_equal(tile[:, :bh, :bw], block.transpose(2, 0, 1))
                expect = np.zeros((3, 32, 32), dtype=bool)
                expect[:, :bh, :bw] = True
                np.testing.assert_array_equal(real[k * per + r * layout.cols + c], expect)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("h, w", SIZES)
def test_mask_counts(h, w, mode):
    layout = TileLayout(h, w, mode)
    planes = 2 if mode == "RGBA" else 1
    real, lossless = layout.real_mask(), layout.lossless_mask()
    assert real.shape == lossless.shape == layout.shape and real.dtype == bool
    assert real.sum() == planes * h * w * 3
    assert lossless.sum() == h * w * MODE_CHANNELS[mode]  # exactly one coded value per image sample
    assert not (lossless & ~real).any()


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_lossless_mask_keeps_only_channel_0_of_replicated_planes(mode):
    layout = TileLayout(33, 40, mode)
    per = layout.rows * layout.cols
    lossless, real = layout.lossless_mask(), layout.real_mask()
    replicated = slice(0, per) if mode == "L" else slice(per, 2 * per)
    assert not lossless[replicated, 1:].any()
    np.testing.assert_array_equal(lossless[replicated, 0], real[replicated, 0])
    if mode == "RGBA":  # the colour plane keeps all three channels
        np.testing.assert_array_equal(lossless[:per], real[:per])


@pytest.mark.parametrize("mode", MODES)
def test_fill_replicated_restores_the_image_from_the_lossless_values(mode):
    """What the exact L_0 decode does: only masked values are known, the rest is filled, then merged."""
    layout = TileLayout(33, 31, mode)
    pixels = image(33, 31, mode, seed=2)
    tiles = layout.split(pixels)
    known = np.where(layout.lossless_mask(), tiles, 0).astype(np.uint8)
    np.testing.assert_array_equal(layout.merge(layout.fill_replicated(known)), pixels)


def test_merge_averages_replicated_channels_of_lossy_tiles():
    layout = TileLayout(2, 2, "L")
    tiles = np.zeros(layout.shape, dtype=np.uint8)
    tiles[0, :, 0, 0] = (10, 20, 31)  # mean 20.33 → 20
    tiles[0, :, 0, 1] = (10, 11, 12)
    out = layout.merge(tiles)
    assert out.shape == (2, 2, 1)
    assert out[0, 0, 0] == 20 and out[0, 1, 0] == 11


def test_padding_repeats_edge_pixels():
    layout = TileLayout(1, 1, "RGB")
    tiles = layout.split(np.array([[[7, 8, 9]]], dtype=np.uint8))
    np.testing.assert_array_equal(tiles[0, :, 31, 31], [7, 8, 9])
    assert (tiles[0, 0] == 7).all()


@pytest.mark.parametrize("args", [(0, 5, "RGB"), (5, 0, "RGB"), (5, 5, "CMYK"), (5, 5, "LA")])
def test_bad_layouts_are_refused(args):
    with pytest.raises(DiffcodecError):
        TileLayout(*args)


@pytest.mark.parametrize("shape", [(5, 6, 3), (6, 5, 3), (5, 5, 1), (5, 5, 4)])
def test_split_refuses_mismatched_images(shape):
    with pytest.raises(DiffcodecError):
        TileLayout(5, 5, "RGB").split(np.zeros(shape, dtype=np.uint8))
