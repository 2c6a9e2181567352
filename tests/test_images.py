"""Tests of image loading helpers (diffcodec/images.py) that the CLI and benchmarks share."""

from __future__ import annotations

import numpy as np
from PIL import Image

from diffcodec.images import list_images, load_centre_crops, load_folder_tiles


def write(folder, name, pixels):
    Image.fromarray(pixels).save(folder / name)


def test_centre_crops_are_centred_and_small_images_stay_whole(tmp_path):
    big = np.arange(50 * 40 * 3, dtype=np.uint32).reshape(50, 40, 3).astype(np.uint8)
    small = np.full((10, 12, 3), 7, dtype=np.uint8)
    write(tmp_path, "a.png", big)
    write(tmp_path, "b.png", small)
    crops = load_centre_crops(tmp_path, 32)
    np.testing.assert_array_equal(crops[0], big[9:41, 4:36])
    np.testing.assert_array_equal(crops[1], small)
    assert len(load_centre_crops(tmp_path, 32, limit=1)) == 1


def test_folder_tiles_are_sorted_by_name_and_limited(tmp_path):
    for i in (2, 0, 1):
        write(tmp_path, f"{i}.png", np.full((32, 32, 3), i, dtype=np.uint8))
    assert [p.name for p in list_images(tmp_path)] == ["0.png", "1.png", "2.png"]
    tiles = load_folder_tiles(tmp_path, limit=2)
    assert [int(t[0, 0, 0]) for t in tiles] == [0, 1]
