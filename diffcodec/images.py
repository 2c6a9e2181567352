"""Reading images into uint8 arrays the model can code, and back.

Modes: L (grayscale), RGB and RGBA are coded channel by channel; 16-bit images
are reduced to 8 bits (the model is an 8-bit model) and say so; EXIF orientation
is applied before coding, since that is the image a viewer shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DiffcodecError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"}


@dataclass
class LoadedImage:
    pixels: np.ndarray  # uint8 (H, W, C), C in {1, 3, 4}
    mode: str  # "L", "RGB" or "RGBA"
    warnings: list[str] = field(default_factory=list)


def load_image(path: str | Path) -> LoadedImage:
    """Read an image file as 8-bit L, RGB or RGBA pixels (EXIF orientation applied)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise DiffcodecError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise DiffcodecError(f"{path} is a directory, expected an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DiffcodecError(f"cannot read {path} as an image ({exc.__class__.__name__})") from None
    return from_pil(im)


def from_pil(im: Image.Image) -> LoadedImage:
    warnings = []
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im).astype(np.int64)
        # 16-bit grayscale: keep the top 8 bits (rounded); the model codes 8-bit samples.
        arr8 = np.clip((arr + 128) // 257, 0, 255).astype(np.uint8)
        warnings.append("16-bit image reduced to 8 bits per sample; the decoded image is 8-bit")
        return LoadedImage(arr8[..., None], "L", warnings)
    if im.mode in ("RGB", "RGBA", "L"):
        mode = im.mode
    elif im.mode in ("LA",):
        mode = "RGBA"
        warnings.append("grayscale+alpha stored as RGBA")
    elif im.mode in ("P", "PA"):
        mode = "RGBA" if ("transparency" in im.info or im.mode == "PA") else "RGB"
    elif im.mode == "1":
        mode = "L"
    else:
        mode = "RGB"
        if im.mode not in ("YCbCr", "CMYK", "RGBX"):
            warnings.append(f"{im.mode} image converted to RGB")
    if getattr(im, "bits", 8) > 8 or im.info.get("bitdepth", 8) > 8:
        warnings.append("16-bit image reduced to 8 bits per sample; the decoded image is 8-bit")
    arr = np.asarray(im.convert(mode))
    if arr.ndim == 2:
        arr = arr[..., None]
    return LoadedImage(np.ascontiguousarray(arr), mode, warnings)


def save_image(pixels: np.ndarray, path: str | Path, mode: str) -> None:
    """Write uint8 (H, W, C) pixels; the format follows the file suffix (PNG recommended)."""
    arr = pixels[..., 0] if mode == "L" else pixels
    try:
        Image.fromarray(np.ascontiguousarray(arr), mode=None).save(path)
    except (OSError, ValueError, KeyError) as exc:
        raise DiffcodecError(f"cannot write {path}: {exc}") from None


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DiffcodecError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DiffcodecError(f"no images in {folder}")
    return files


def load_folder_tiles(folder: str | Path, limit: int | None = None, size: int = 32) -> np.ndarray:
    """All size×size RGB images of a folder as uint8 (N, size, size, 3) (e.g. the CIFAR-10 test PNGs)."""
    out = []
    for p in list_images(folder)[:limit]:
        img = load_image(p)
        if img.pixels.shape != (size, size, 3):
            raise DiffcodecError(f"{p}: expected a {size}×{size} RGB image, got {img.pixels.shape}")
        out.append(img.pixels)
    return np.stack(out)


def load_centre_crops(folder: str | Path, size: int, limit: int | None = None) -> list[np.ndarray]:
    """The centre ``size`` × ``size`` crop of each image in ``folder`` (sorted by name), for benchmarks on photos."""
    out = []
    for path in list_images(folder)[:limit]:
        px = load_image(path).pixels
        y, x = max(0, (px.shape[0] - size) // 2), max(0, (px.shape[1] - size) // 2)
        out.append(np.ascontiguousarray(px[y : y + size, x : x + size]))
    return out


def to_rgb_planes(pixels: np.ndarray) -> list[np.ndarray]:
    """Split an (H, W, C) image into the 3-channel planes the RGB model codes.

    RGB is one plane; L is replicated to 3 channels (the decoder keeps one); RGBA is coded as
    RGB plus the alpha channel replicated to 3 channels, so alpha is kept exactly in a lossless
    decode and approximately in lossy ones.
    """
    c = pixels.shape[2]
    if c == 3:
        return [pixels]
    if c == 1:
        return [np.repeat(pixels, 3, axis=2)]
    if c == 4:
        return [pixels[..., :3], np.repeat(pixels[..., 3:], 3, axis=2)]
    raise DiffcodecError(f"unsupported channel count {c}")
