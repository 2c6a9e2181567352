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


def parse_holdout(spec: str | None) -> list[float] | None:
    """``--holdout``: a count (``500``), a fraction (``0.1``) or one of either per .npy file (``500,300``)."""
    if spec is None or str(spec).strip() == "":
        return None
    values = []
    for part in str(spec).split(","):
        v = float(part)
        if v < 0 or (v >= 1 and v != int(v)):
            raise ValueError(f"--holdout: {part!r} is neither a count nor a fraction in [0, 1)")
        values.append(v)
    return values


def holdout_count(value: float, n: int) -> int:
    """Images held out of an array of ``n``: ``value`` itself if ≥ 1, else round(value · n)."""
    k = int(value) if value >= 1 else int(round(value * n))
    if k >= n:
        raise ValueError(f"cannot hold out {k} of {n} images")
    return k


class TrainingSet:
    """Mixes fixed-size image arrays with photo crops; draws batches with random horizontal flips.

    ``holdout`` (see :func:`parse_holdout`) keeps the LAST images of every .npy source out of training:
    they are never drawn into a batch and make up ``validation`` (name → uint8 array, named by the
    file's stem).  With one value it applies to every .npy file, with several, one per .npy file in
    the order given.  E.g. ``500,300`` for cifar10-train-lossless-4000.npy and flowers32-lossless-3000.npy
    holds out indices 3500–3999 and 2700–2999.  Folders, tarballs and photos are never held out.

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
        holdout: list[float] | None = None,
    ):
        self.validation: dict[str, np.ndarray] = {}
        self.holdout: list[dict] = []  # per .npy source: its name, size and the held-out [start, stop)
        arrays, photos = self._read(sources, size, holdout, self.validation, self.holdout)
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
    def _read(sources: list[str | Path], size: int, holdout: list[float] | None = None,
              validation: dict | None = None, held: list | None = None) -> tuple[list[np.ndarray], list[Path]]:
        arrays, photos = [], []
        npy = [Path(s) for s in sources if Path(s).suffix == ".npy"]
        if holdout and len(holdout) not in (1, len(npy)):
            raise ValueError(f"--holdout has {len(holdout)} values for {len(npy)} .npy files")
        for src in map(Path, sources):
            if not src.exists():
                raise FileNotFoundError(f"training data not found: {src}")
            if src.suffix == ".npy":
                arr = load_array(src)
                if holdout:
                    k = holdout_count(holdout[0] if len(holdout) == 1 else holdout[npy.index(src)], len(arr))
                    if k:
                        name = src.stem
                        while name in validation:
                            name += "'"
                        validation[name] = arr[len(arr) - k :].copy()
                        held.append({"name": name, "file": src.name, "images": int(len(arr)),
                                     "held_out": [int(len(arr) - k), int(len(arr))]})
                        arr = arr[: len(arr) - k]
                arrays.append(arr)
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
            **({"holdout": self.holdout} if self.holdout else {}),
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
