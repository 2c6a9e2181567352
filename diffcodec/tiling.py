"""The layout of an image as 32×32 RGB model tiles, shared by encoder and decoder.

An (H, W, C) image becomes planes of 3 channels (:func:`diffcodec.images.to_rgb_planes`),
each padded up to a multiple of the tile size and cut into tiles.  Padding is never
coded: its dimensions follow the model's prior from shared randomness, and only
``real`` dimensions enter the channel simulation and the lossless L_0 stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DiffcodecError
from .images import to_rgb_planes

MODE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4}


@dataclass(frozen=True)
class TileLayout:
    height: int
    width: int
    mode: str
    tile: int = 32

    def __post_init__(self):
        if self.mode not in MODE_CHANNELS:
            raise DiffcodecError(f"unsupported mode {self.mode!r}")
        if self.height < 1 or self.width < 1:
            raise DiffcodecError("image has no pixels")

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.tile)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.tile)

    @property
    def planes(self) -> int:
        return 2 if self.mode == "RGBA" else 1

    @property
    def num_tiles(self) -> int:
        return self.planes * self.rows * self.cols

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.num_tiles, 3, self.tile, self.tile)

    def _tiles_of_plane(self, plane: np.ndarray) -> np.ndarray:
        """(H', W', 3) padded plane -> (rows*cols, 3, tile, tile)."""
        t = self.tile
        x = plane.reshape(self.rows, t, self.cols, t, 3)
        return x.transpose(0, 2, 4, 1, 3).reshape(-1, 3, t, t)

    def _plane_of_tiles(self, tiles: np.ndarray) -> np.ndarray:
        t = self.tile
        x = tiles.reshape(self.rows, self.cols, 3, t, t)
        return x.transpose(0, 3, 1, 4, 2).reshape(self.rows * t, self.cols * t, 3)[: self.height, : self.width]

    def split(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (H, W, C) -> uint8 tiles (N, 3, tile, tile); padding repeats edge pixels (it is never coded)."""
        if pixels.shape[:2] != (self.height, self.width) or pixels.shape[2] != MODE_CHANNELS[self.mode]:
            raise DiffcodecError(f"image shape {pixels.shape} does not match {self.mode} {self.width}×{self.height}")
        pad = ((0, self.rows * self.tile - self.height), (0, self.cols * self.tile - self.width), (0, 0))
        return np.concatenate([self._tiles_of_plane(np.pad(p, pad, mode="edge")) for p in to_rgb_planes(pixels)])

    def merge(self, tiles: np.ndarray) -> np.ndarray:
        """Tiles (N, 3, tile, tile) of pixel values -> (H, W, C); replicated planes are averaged back."""
        per = self.rows * self.cols
        planes = [self._plane_of_tiles(tiles[k * per : (k + 1) * per]) for k in range(self.planes)]
        if self.mode == "RGB":
            return planes[0]
        if self.mode == "L":
            return _mean_channel(planes[0])
        return np.concatenate([planes[0], _mean_channel(planes[1])], axis=2)

    def real_mask(self) -> np.ndarray:
        """bool (N, 3, tile, tile): dimensions that are image pixels rather than padding."""
        inside = np.zeros((self.rows * self.tile, self.cols * self.tile, 3), dtype=bool)
        inside[: self.height, : self.width] = True
        return np.concatenate([self._tiles_of_plane(inside)] * self.planes)

    def lossless_mask(self) -> np.ndarray:
        """Dimensions the exact L_0 stage codes: real pixels, and only channel 0 of replicated planes."""
        mask = self.real_mask()
        per = self.rows * self.cols
        replicated = [k for k in range(self.planes) if self.mode == "L" or k == 1]
        for k in replicated:
            mask[k * per : (k + 1) * per, 1:] = False
        return mask

    def plane_index_maps(self) -> list[np.ndarray]:
        """Per plane, (H, W, c) indices into the flattened tiles of the subpixels the exact stage codes.

        c is 3 for a colour plane and 1 for a replicated one (grey, alpha): together the maps cover
        :meth:`lossless_mask` exactly.
        """
        flat = np.arange(math.prod(self.shape)).reshape(self.shape)
        per = self.rows * self.cols
        out = []
        for k in range(self.planes):
            image = self._plane_of_tiles(flat[k * per : (k + 1) * per])
            out.append(image[..., :1] if (self.mode == "L" or k == 1) else image)
        return out

    def fill_replicated(self, tiles: np.ndarray) -> np.ndarray:
        """Copy channel 0 into channels 1–2 of replicated planes (after the exact L_0 decode)."""
        out = tiles.copy()
        per = self.rows * self.cols
        for k in range(self.planes):
            if self.mode == "L" or k == 1:
                out[k * per : (k + 1) * per, 1:] = out[k * per : (k + 1) * per, :1]
        return out


def _mean_channel(plane: np.ndarray) -> np.ndarray:
    return np.round(plane.astype(np.float64).mean(axis=2, keepdims=True)).astype(plane.dtype)
