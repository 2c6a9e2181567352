"""Training images: lossless CIFAR-style arrays, folders of photos cropped at several scales, JPEG tarballs.

Everything becomes a source of uint8 (N, 32, 32, 3) batches.  Learn the
fine-detail end from lossless data: JPEG's smoothed detail teaches the wrong
statistics at low noise (see models/README.md).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def load_array(path: Path) -> np.ndarray:
    arr = np.load(path)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def load_tarball(path: Path, member_prefix: str = "train/") -> np.ndarray:
    """All images under ``member_prefix`` of a tarball of 32×32 images (the CIFAR-10 JPEG tarball)."""
    out = []
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isfile() and member_prefix in m.name and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                out.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")))
    return np.stack(out)


class PhotoCrops:
    """Random size×size crops of photos downscaled by several factors (antialiased).

    A 32×32 crop of a photo shrunk 8× looks like a CIFAR image's scale of detail; a crop at 1× teaches
    full-resolution camera noise.  Both are lossless.
    """

    def __init__(self, paths: list[Path], scales: tuple[float, ...] = (1.0, 0.5, 0.25, 0.125), size: int = 32):
        self.size = size
        self.images: list[np.ndarray] = []
        for p in paths:
            im = Image.open(p).convert("RGB")
            for s in scales:
                w, h = max(size, round(im.width * s)), max(size, round(im.height * s))
                self.images.append(np.asarray(im.resize((w, h), Image.Resampling.LANCZOS) if s != 1.0 else im))
        if not self.images:
            raise ValueError("no photos")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        for i, k in enumerate(rng.integers(len(self.images), size=n)):
            im = self.images[k]
            y = rng.integers(im.shape[0] - self.size + 1)
            x = rng.integers(im.shape[1] - self.size + 1)
            out[i] = im[y : y + self.size, x : x + self.size]
        return out


class TrainingSet:
    """Mixes fixed-size image arrays with photo crops; draws batches with random horizontal flips.

    ``coarse_sources`` are lossy images (the CIFAR-10 JPEG tarball) used only where the noise hides
    their artefacts: an image whose timestep is at least ``coarse_min_t`` comes from them with
    probability ``coarse_fraction``.  Low-noise steps always see lossless images, so the fine-detail
    statistics the lossless likelihood depends on are never learnt from JPEG.
    """

    def __init__(
        self,
        sources: list[str | Path],
        photo_fraction: float = 0.25,
        size: int = 32,
        coarse_sources: list[str | Path] = (),
        coarse_min_t: int = 100,
        coarse_fraction: float = 0.5,
    ):
        arrays, photos = self._read(sources, size)
        coarse, coarse_photos = self._read(coarse_sources, size) if coarse_sources else ([], [])
        if coarse_photos:
            raise ValueError("coarse sources must be 32×32 image sets (arrays, tarballs or folders), not photos")
        self.coarse = np.concatenate(coarse) if coarse else None
        self.coarse_min_t, self.coarse_fraction = coarse_min_t, coarse_fraction
        self.array = np.concatenate(arrays) if arrays else np.empty((0, size, size, 3), np.uint8)
        self.photos = PhotoCrops(photos, size=size) if photos else None
        self.photo_fraction = photo_fraction if (self.photos and len(self.array)) else (1.0 if self.photos else 0.0)
        if not len(self.array) and not self.photos:
            raise ValueError("no training images found")

    @staticmethod
    def _read(sources: list[str | Path], size: int) -> tuple[list[np.ndarray], list[Path]]:
        arrays, photos = [], []
        for src in map(Path, sources):
            if not src.exists():
                raise FileNotFoundError(f"training data not found: {src}")
            if src.suffix == ".npy":
                arrays.append(load_array(src))
            elif src.name.endswith((".tar.gz", ".tgz", ".tar")):
                arrays.append(load_tarball(src))
            elif src.is_dir():
                files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                sizes = {Image.open(p).size for p in files[:50]}
                if sizes == {(size, size)}:
                    arrays.append(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]))
                else:
                    photos.extend(files)
            else:
                raise ValueError(f"unsupported training source: {src}")
        return arrays, photos

    def describe(self) -> dict:
        return {
            "array_images": int(len(self.array)),
            "photos": 0 if self.photos is None else len(self.photos.images),
            "photo_fraction": self.photo_fraction,
            **({} if self.coarse is None else {"coarse_images": int(len(self.coarse)), "coarse_min_t": self.coarse_min_t,
                                               "coarse_fraction": self.coarse_fraction}),
        }

    def batch(self, n: int, rng: np.random.Generator, t: np.ndarray | None = None) -> np.ndarray:
        """``n`` images; ``t`` (the batch's timesteps) lets high-noise entries come from the coarse set."""
        n_photo = int(rng.binomial(n, self.photo_fraction)) if self.photos else 0
        parts = []
        if n - n_photo:
            parts.append(self.array[rng.integers(len(self.array), size=n - n_photo)])
        if n_photo:
            parts.append(self.photos.sample(n_photo, rng))
        out = np.concatenate(parts)
        if self.coarse is not None and t is not None:
            rng.shuffle(out)  # photos sit at the end; any position may be replaced
            swap = (np.asarray(t) >= self.coarse_min_t) & (rng.random(n) < self.coarse_fraction)
            out[swap] = self.coarse[rng.integers(len(self.coarse), size=int(swap.sum()))]
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        return out
