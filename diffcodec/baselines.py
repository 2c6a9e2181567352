"""Classical codecs to compare diffcodec against: JPEG, WebP, AVIF, JPEG XL, PNG, JPEG-LS.

Every baseline is a :class:`Codec`: ``encode`` takes uint8 pixels, (H, W), (H, W, 1),
(H, W, 3) or (H, W, 4), and returns the bytes of a complete file of that format;
``decode`` reads them back. Rates are measured from those real bytes, headers
included, which matters on small images: a 32x32 JPEG or AVIF file spends about
0.75 bits/dim on its headers alone.

Each baseline is optional at run time. Pillow (a dependency of diffcodec) provides
JPEG, PNG and WebP, and AVIF when it was built with libavif (Pillow >= 11) or when
pillow-avif-plugin is installed; ``pip install 'diffcodec[baselines]'`` adds
imagecodecs, which provides JPEG XL, JPEG-LS and a true lossless AVIF mode.
``Codec.available()`` says whether a baseline can run here, and
:func:`available_codecs` lists the ones that can.

Example, a lossless round trip with measured rate:

>>> import numpy as np
>>> from diffcodec.baselines import PNG, measure
>>> y, x = np.mgrid[0:32, 0:32]
>>> image = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)
>>> codec = PNG()
>>> data = codec.encode(image)
>>> bool(np.array_equal(codec.decode(data), image))
True
>>> result = measure(codec, [image])
>>> result["lossless_ok"], result["total_bytes"] == len(data)
(True, True)
>>> result["rate_bpd"] == 8 * len(data) / image.size
True
"""

from __future__ import annotations

import abc
import io
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from .errors import DiffcodecError

__all__ = [
    "Codec",
    "JPEG",
    "WebP",
    "AVIF",
    "AVIFLossless",
    "JPEGXL",
    "PNG",
    "JPEGLS",
    "available_codecs",
    "default_codecs",
    "lossy_sweep",
    "measure",
    "library_versions",
]

_INSTALL_HINT = "pip install 'diffcodec[baselines]'"


# ---------------------------------------------------------------------------
# Pixel checks and channel bookkeeping


def _check_pixels(pixels: Any) -> np.ndarray:
    """Return ``pixels`` as a C-contiguous uint8 (H, W), (H, W, 3) or (H, W, 4) array.

    (H, W, 1) is accepted and flattened to (H, W); anything else raises DiffcodecError.
    """
    if not isinstance(pixels, np.ndarray):
        raise DiffcodecError(f"expected a numpy array of pixels, got {type(pixels).__name__}")
    if pixels.dtype != np.uint8:
        raise DiffcodecError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise DiffcodecError(f"expected pixels of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise DiffcodecError(f"cannot code an empty image of shape {pixels.shape}")
    return np.ascontiguousarray(pixels)


def _channels(shape: Sequence[int]) -> int:
    return 1 if len(shape) == 2 else int(shape[2])


def _fit_shape(decoded: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Give decoded pixels the shape of the image that was encoded.

    Some formats cannot store what they were given: WebP stores grayscale as RGB,
    and WebP and AVIF drop an alpha channel that is 255 everywhere. The decoder
    only sees what the file holds; the caller who knows the original shape gets
    it back through this: gray from RGB is the rounded mean of the three channels
    (exact when they are equal), a missing alpha is 255 everywhere.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or decoded.shape[:2] != shape[:2]:
        raise DiffcodecError(f"decoded image is {decoded.shape}, expected {shape}")
    source, target = _channels(decoded.shape), _channels(shape)
    if source == target:
        return decoded.reshape(shape)
    color = decoded if decoded.ndim == 2 else decoded[..., : min(source, 3)]
    alpha = decoded[..., 3] if source == 4 else None
    if target in (1, 3) and alpha is not None and not np.all(alpha == 255):
        raise DiffcodecError(f"decoded image has a non-opaque alpha channel, expected {shape}")
    if target == 1:
        if color.ndim == 3:  # stored as RGB
            color = ((color.astype(np.uint16).sum(axis=-1) + 1) // 3).astype(np.uint8)
        return color.reshape(shape)
    if color.ndim == 2:
        color = np.repeat(color[..., None], 3, axis=-1)
    if target == 3:
        return np.ascontiguousarray(color)
    if target == 4:
        if alpha is None:
            alpha = np.full(shape[:2], 255, np.uint8)
        return np.concatenate([color, alpha[..., None]], axis=-1)
    raise DiffcodecError(f"cannot give decoded image {decoded.shape} the shape {shape}")


# ---------------------------------------------------------------------------
# The interface

_AVAILABLE: dict[type, bool] = {}


def _probe_image() -> np.ndarray:
    """A small RGB image with both smooth regions and noise, for availability checks."""
    y, x = np.mgrid[0:16, 0:16]
    smooth = np.stack([x * 16, y * 16, (x + y) * 8], axis=-1)
    noise = np.random.default_rng(0).integers(0, 32, size=(16, 16, 3))
    return (smooth + noise).clip(0, 255).astype(np.uint8)


class Codec(abc.ABC):
    """One setting of one classical codec: pixels in, the bytes of a real file out.

    Attributes:
        family: the codec's short name (``"jpeg"``, ``"webp"``, ...), as :func:`lossy_sweep` takes it.
        name: this setting, e.g. ``"jpeg-q75-420"`` or ``"jxl-lossless-e9"``.
        lossless: whether this setting promises an exact round trip (:func:`measure` checks it).
    """

    family: ClassVar[str]
    name: str
    lossless: bool

    @abc.abstractmethod
    def encode(self, pixels: np.ndarray) -> bytes:
        """Code uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) pixels as one file."""

    @abc.abstractmethod
    def _decode(self, data: bytes) -> np.ndarray:
        """Decode to whatever the file holds: (H, W), (H, W, 3) or (H, W, 4) uint8."""

    def decode(self, data: bytes, shape: Sequence[int] | None = None) -> np.ndarray:
        """Decode bytes from :meth:`encode` to uint8 pixels.

        Without ``shape`` the result is what the file stores: (H, W) for grayscale,
        (H, W, 3) or (H, W, 4). Formats that cannot store grayscale or an opaque
        alpha channel (WebP, AVIF) then give RGB; pass the original ``shape`` to
        get that shape back (see :func:`_fit_shape`).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DiffcodecError(f"expected bytes to decode, got {type(data).__name__}")
        decoded = self._decode(bytes(data))
        return decoded if shape is None else _fit_shape(decoded, shape)

    @property
    def params(self) -> dict[str, Any]:
        """This setting's parameters, for reports."""
        return {}

    @classmethod
    def available(cls) -> bool:
        """Whether this codec's library is installed here and can code a small probe image.

        Lossless codecs must also reproduce the probe exactly. The answer is cached.
        """
        if cls not in _AVAILABLE:
            _AVAILABLE[cls] = cls._probe()
        return _AVAILABLE[cls]

    @classmethod
    def _probe(cls) -> bool:
        probe = _probe_image()
        try:
            codec = cls()
            decoded = codec.decode(codec.encode(probe), shape=probe.shape)
        except Exception:  # any failure (missing library, missing encoder, broken build) means "not here"
            return False
        return decoded.shape == probe.shape and (not codec.lossless or bool(np.array_equal(decoded, probe)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------
# Pillow-based codecs


def _pil_encode(pixels: np.ndarray, fmt: str, **options: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels).save(buffer, format=fmt, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise DiffcodecError(f"Pillow cannot write this image as {fmt}: {exc}") from None
    return buffer.getvalue()


def _pil_decode(data: bytes, fmt: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            im.load()
            if im.mode not in ("L", "RGB", "RGBA"):
                has_alpha = im.mode in ("LA", "PA", "La", "RGBa") or "transparency" in im.info
                im = im.convert("RGBA" if has_alpha else "RGB")
            return np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DiffcodecError(f"cannot decode these bytes as {fmt} ({exc.__class__.__name__}: {exc})") from None


def _pillow_can_write(fmt: str, plugin: str | None = None) -> bool:
    """Whether Pillow has a writer for ``fmt``, importing ``plugin`` (which registers one) if not."""
    from PIL import Image

    Image.init()
    if fmt not in Image.SAVE and plugin is not None:
        try:
            __import__(plugin)
        except ImportError:
            return False
    return fmt in Image.SAVE


_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


class JPEG(Codec):
    """Baseline JPEG through Pillow (libjpeg-turbo), with optimized Huffman tables.

    Args:
        quality: 1-100, libjpeg's scale.
        subsampling: chroma subsampling, "4:2:0" (the common default), "4:2:2" or "4:4:4".

    JPEG has no alpha channel: RGBA input raises DiffcodecError.
    """

    family = "jpeg"

    def __init__(self, quality: int = 75, subsampling: str = "4:2:0"):
        if not 1 <= int(quality) <= 100:
            raise DiffcodecError(f"JPEG quality must be in 1..100, got {quality}")
        if subsampling not in _SUBSAMPLING:
            raise DiffcodecError(f"JPEG subsampling must be one of {', '.join(_SUBSAMPLING)}, got {subsampling!r}")
        self.quality = int(quality)
        self.subsampling = subsampling
        self.lossless = False
        self.name = f"jpeg-q{self.quality}-{subsampling.replace(':', '')}"

    @property
    def params(self) -> dict[str, Any]:
        return {"quality": self.quality, "subsampling": self.subsampling}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            raise DiffcodecError("JPEG has no alpha channel; cannot code an RGBA image")
        return _pil_encode(pixels, "JPEG", quality=self.quality, subsampling=_SUBSAMPLING[self.subsampling], optimize=True)

    def _decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "JPEG")


class PNG(Codec):
    """PNG through Pillow (zlib level 9 with ``optimize``): lossless."""

    family = "png"

    def __init__(self):
        self.lossless = True
        self.name = "png"

    @property
    def params(self) -> dict[str, Any]:
        return {"optimize": True}

    def encode(self, pixels: np.ndarray) -> bytes:
        return _pil_encode(_check_pixels(pixels), "PNG", optimize=True)

    def _decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "PNG")


class WebP(Codec):
    """WebP through Pillow (libwebp): lossy VP8 (4:2:0) at ``quality``, or lossless VP8L.

    Args:
        quality: lossy: 0-100 quality, default 75. Lossless: 0-100 effort, default
            100 (with method 6 that is ``cwebp -z 9``).
        lossless: use the lossless mode. It keeps the RGB of fully transparent pixels
            (libwebp's ``exact``), so RGBA round-trips exactly.
        method: 0-6 encoder effort; 6 is the slowest and usually the smallest.

    WebP stores grayscale as RGB and drops an alpha channel that is 255 everywhere;
    ``decode(data, shape=original.shape)`` gives the original shape back.
    """

    family = "webp"

    def __init__(self, quality: float | None = None, lossless: bool = False, method: int = 6):
        if quality is None:
            quality = 100 if lossless else 75
        if not 0 <= quality <= 100:
            raise DiffcodecError(f"WebP quality must be in 0..100, got {quality}")
        if not 0 <= int(method) <= 6:
            raise DiffcodecError(f"WebP method must be in 0..6, got {method}")
        self.quality = quality
        self.lossless = bool(lossless)
        self.method = int(method)
        if self.lossless:
            default = quality == 100 and self.method == 6
            self.name = "webp-lossless" if default else f"webp-lossless-q{quality:g}-m{self.method}"
        else:
            self.name = f"webp-q{quality:g}" + ("" if self.method == 6 else f"-m{self.method}")

    @property
    def params(self) -> dict[str, Any]:
        return {"quality": self.quality, "lossless": self.lossless, "method": self.method}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        if not _pillow_can_write("WEBP"):
            raise DiffcodecError("this Pillow was built without WebP support")
        options: dict[str, Any] = {"quality": self.quality, "method": self.method, "lossless": self.lossless}
        if self.lossless:
            options["exact"] = True
        return _pil_encode(pixels, "WEBP", **options)

    def _decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "WEBP")


class AVIF(Codec):
    """Lossy AVIF through Pillow (>= 11 built with libavif, or pillow-avif-plugin).

    Args:
        quality: 0-100, Pillow's scale (100 is *not* lossless: the RGB to YCbCr
            conversion rounds; :class:`AVIFLossless` is the true lossless mode).
        subsampling: "4:2:0" (the default), "4:2:2" or "4:4:4".
        speed: 0 (slowest, smallest) to 10. 4 is about 0.2 dB better than Pillow's
            default 6 on CIFAR-10 at three times the encoding time.

    AVIF drops an alpha channel that is 255 everywhere; pass ``shape`` to ``decode``
    to get it back.
    """

    family = "avif"

    def __init__(self, quality: int = 50, subsampling: str = "4:2:0", speed: int = 4):
        if not 0 <= int(quality) <= 100:
            raise DiffcodecError(f"AVIF quality must be in 0..100, got {quality}")
        if subsampling not in _SUBSAMPLING:
            raise DiffcodecError(f"AVIF subsampling must be one of {', '.join(_SUBSAMPLING)}, got {subsampling!r}")
        if not 0 <= int(speed) <= 10:
            raise DiffcodecError(f"AVIF speed must be in 0..10, got {speed}")
        self.quality = int(quality)
        self.subsampling = subsampling
        self.speed = int(speed)
        self.lossless = False
        self.name = f"avif-q{self.quality}-{subsampling.replace(':', '')}" + ("" if self.speed == 4 else f"-s{self.speed}")

    @property
    def params(self) -> dict[str, Any]:
        return {"quality": self.quality, "subsampling": self.subsampling, "speed": self.speed}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        if not _pillow_can_write("AVIF", plugin="pillow_avif"):
            raise DiffcodecError("this Pillow cannot write AVIF: use Pillow >= 11 built with libavif, or pip install pillow-avif-plugin")
        return _pil_encode(pixels, "AVIF", quality=self.quality, subsampling=self.subsampling, speed=self.speed)

    def _decode(self, data: bytes) -> np.ndarray:
        if not _pillow_can_write("AVIF", plugin="pillow_avif"):
            raise DiffcodecError("this Pillow cannot read AVIF: use Pillow >= 11 built with libavif, or pip install pillow-avif-plugin")
        return _pil_decode(data, "AVIF")


# ---------------------------------------------------------------------------
# imagecodecs-based codecs


def _imagecodecs(what: str):
    try:
        import imagecodecs
    except ImportError:
        raise DiffcodecError(f"the {what} baseline needs imagecodecs: {_INSTALL_HINT}") from None
    return imagecodecs


def _run_imagecodecs(what: str, function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:  # imagecodecs' codec errors are RuntimeErrors
        raise DiffcodecError(f"{what} failed ({exc.__class__.__name__}: {exc})") from None


class JPEGXL(Codec):
    """JPEG XL through imagecodecs (libjxl), as a bare codestream (no ISO BMFF container).

    Args:
        distance: lossy: Butteraugli distance, 0.1 (near-transparent) to 25; 1.0 is
            libjxl's "visually lossless" default. Ignored when lossless.
        effort: 1-10 encoder effort; libjxl's default is 7. Lossless defaults to 9.
        lossless: use the modular lossless mode.
    """

    family = "jxl"

    def __init__(self, distance: float = 1.0, effort: int | None = None, lossless: bool = False):
        if effort is None:
            effort = 9 if lossless else 7
        if not 1 <= int(effort) <= 10:
            raise DiffcodecError(f"JPEG XL effort must be in 1..10, got {effort}")
        if not lossless and not 0.01 <= distance <= 25:
            raise DiffcodecError(f"JPEG XL distance must be in 0.01..25, got {distance}")
        self.distance = 0.0 if lossless else float(distance)
        self.effort = int(effort)
        self.lossless = bool(lossless)
        self.name = f"jxl-lossless-e{self.effort}" if self.lossless else f"jxl-d{self.distance:g}-e{self.effort}"

    @property
    def params(self) -> dict[str, Any]:
        return {"distance": self.distance, "effort": self.effort, "lossless": self.lossless}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        ic = _imagecodecs("JPEG XL")
        if self.lossless:
            options: dict[str, Any] = {"lossless": True, "effort": self.effort}
        else:
            options = {"distance": self.distance, "effort": self.effort}
        return bytes(_run_imagecodecs("JPEG XL encoding", ic.jpegxl_encode, pixels, usecontainer=False, **options))

    def _decode(self, data: bytes) -> np.ndarray:
        ic = _imagecodecs("JPEG XL")
        return _run_imagecodecs("JPEG XL decoding", ic.jpegxl_decode, data)


class JPEGLS(Codec):
    """Lossless JPEG-LS (LOCO-I) through imagecodecs (CharLS)."""

    family = "jpegls"

    def __init__(self):
        self.lossless = True
        self.name = "jpegls"

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        ic = _imagecodecs("JPEG-LS")
        return bytes(_run_imagecodecs("JPEG-LS encoding", ic.jpegls_encode, pixels))

    def _decode(self, data: bytes) -> np.ndarray:
        ic = _imagecodecs("JPEG-LS")
        return _run_imagecodecs("JPEG-LS decoding", ic.jpegls_decode, data)


class AVIFLossless(Codec):
    """True lossless AVIF through imagecodecs (libavif quality 100: identity matrix, 4:4:4).

    Pillow's AVIF at quality 100 is not lossless (it converts to YCbCr); this mode
    codes RGB directly. ``available()`` checks an exact round trip, since it needs
    an AV1 encoder with a lossless mode. Drops an alpha channel that is 255
    everywhere; pass ``shape`` to ``decode`` to get it back.
    """

    family = "avif"

    def __init__(self, speed: int | None = None):
        if speed is not None and not 0 <= int(speed) <= 10:
            raise DiffcodecError(f"AVIF speed must be in 0..10, got {speed}")
        self.speed = None if speed is None else int(speed)
        self.lossless = True
        self.name = "avif-lossless"

    @property
    def params(self) -> dict[str, Any]:
        return {"quality": 100, "speed": self.speed}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        ic = _imagecodecs("lossless AVIF")
        return bytes(_run_imagecodecs("AVIF encoding", ic.avif_encode, pixels, level=100, speed=self.speed))

    def _decode(self, data: bytes) -> np.ndarray:
        ic = _imagecodecs("lossless AVIF")
        return _run_imagecodecs("AVIF decoding", ic.avif_decode, data)


# ---------------------------------------------------------------------------
# Registry, sweeps and measurement


def default_codecs(lossless: bool | None = None) -> list[Codec]:
    """The default setting of each baseline, whether or not it can run here.

    ``lossless=True``: PNG, WebP lossless, JPEG XL lossless (effort 9), JPEG-LS,
    lossless AVIF. ``lossless=False``: one mid-quality setting each of JPEG, WebP,
    AVIF and JPEG XL (their ``family`` names :func:`lossy_sweep`'s curves).
    ``None``: both.
    """
    lossless_codecs: list[Codec] = [PNG(), WebP(lossless=True), JPEGXL(lossless=True), JPEGLS(), AVIFLossless()]
    lossy_codecs: list[Codec] = [JPEG(), WebP(), AVIF(), JPEGXL()]
    if lossless is None:
        return lossless_codecs + lossy_codecs
    return lossless_codecs if lossless else lossy_codecs


def available_codecs(lossless: bool | None = None) -> list[Codec]:
    """Those of :func:`default_codecs` whose library is installed and works here."""
    return [codec for codec in default_codecs(lossless) if type(codec).available()]


# Settings chosen so that each curve runs from the codec's lowest useful rate to
# past 2 bits/dim on 32x32 CIFAR-10 images; the ranges are those measured on the
# 500 test images of shared/data/cifar10-test-png. No classical file reaches
# 0.05 bits/dim at 32x32: even a flat gray 32x32 image at the lowest setting
# costs JPEG 287 bytes (0.75 bits/dim), AVIF 305 (0.79), WebP and JPEG XL 56 (0.15).
_LOSSY_SWEEPS = {
    # 0.86 .. 2.48 bits/dim
    "jpeg": lambda: [JPEG(quality=q) for q in (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)],
    # 0.24 .. 2.42 bits/dim
    "webp": lambda: [WebP(quality=q) for q in (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)],
    # 0.86 .. 2.51 bits/dim
    "avif": lambda: [AVIF(quality=q) for q in (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)],
    # 0.30 .. 2.87 bits/dim
    "jxl": lambda: [JPEGXL(distance=d) for d in (25, 15, 10, 6, 4, 3, 2, 1.5, 1, 0.7, 0.5, 0.3, 0.2)],
}
_LOSSLESS_ONLY = {"png", "jpegls"}


def lossy_sweep(name: str) -> list[Codec]:
    """Settings of one lossy codec family, lowest rate first, for a rate-distortion curve.

    ``name`` is a family: "jpeg", "webp", "avif" or "jxl". On 32x32 CIFAR-10 images the
    curves span each codec's lowest rate (0.24 bits/dim for WebP, 0.30 for JPEG XL,
    0.86 for JPEG and AVIF, whose headers alone cost about 0.75) to above 2.4 bits/dim.
    """
    key = name.lower()
    if key in _LOSSLESS_ONLY:
        raise DiffcodecError(f"{name} is lossless only; lossy codecs: {', '.join(_LOSSY_SWEEPS)}")
    if key not in _LOSSY_SWEEPS:
        raise DiffcodecError(f"unknown lossy codec {name!r}; known: {', '.join(_LOSSY_SWEEPS)}")
    return _LOSSY_SWEEPS[key]()


def measure(codec: Codec, images: Iterable[np.ndarray]) -> dict[str, Any]:
    """Code every image with ``codec`` and report rate and distortion over the whole set.

    Returns a JSON-ready dict:
        codec, family, params, lossless: the setting.
        n_images, n_subpixels: the set (a subpixel is one channel of one pixel).
        total_bytes: sum of the real file sizes.
        rate_bpd: 8 * total_bytes / n_subpixels (bits per dimension).
        mse, rmse: over all subpixels of the set, on the 0-255 scale (pooled, not a
            mean of per-image values).
        psnr: 10 log10(255^2 / mse) in dB, from that pooled MSE; None when mse == 0.
        lossless_ok: every image came back exactly.
        encode_seconds, decode_seconds: wall time spent in the codec.

    A codec whose ``lossless`` is true must reproduce every image exactly, or this
    raises DiffcodecError.
    """
    total_bytes = 0
    squared_error = 0
    subpixels = 0
    count = 0
    exact = True
    encode_seconds = decode_seconds = 0.0
    for index, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise DiffcodecError(f"image {index}: expected a uint8 numpy array")
        t0 = time.perf_counter()
        data = codec.encode(image)
        t1 = time.perf_counter()
        decoded = codec.decode(data, shape=image.shape)
        t2 = time.perf_counter()
        encode_seconds += t1 - t0
        decode_seconds += t2 - t1
        difference = decoded.astype(np.int64) - image.astype(np.int64)
        squared_error += int(np.square(difference).sum())
        total_bytes += len(data)
        subpixels += image.size
        count += 1
        exact = exact and bool(np.array_equal(decoded, image))
    if count == 0:
        raise DiffcodecError("no images to measure")
    if codec.lossless and not exact:
        raise DiffcodecError(f"{codec.name} is a lossless setting but did not reproduce every image exactly")
    mse = squared_error / subpixels
    return {
        "codec": codec.name,
        "family": codec.family,
        "params": codec.params,
        "lossless": codec.lossless,
        "n_images": count,
        "n_subpixels": subpixels,
        "total_bytes": total_bytes,
        "rate_bpd": 8 * total_bytes / subpixels,
        "mse": mse,
        "rmse": math.sqrt(mse),
        "psnr": 10 * math.log10(255**2 / mse) if mse > 0 else None,
        "lossless_ok": exact,
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
    }


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries behind the baselines (None where absent), for reports."""
    from PIL import __version__ as pillow_version
    from PIL import features

    versions: dict[str, str | None] = {"pillow": pillow_version}
    for feature in ("jpg", "libjpeg_turbo", "zlib", "webp", "avif"):
        try:
            versions[f"pillow:{feature}"] = features.version(feature)
        except ValueError:  # a feature this Pillow does not know
            versions[f"pillow:{feature}"] = None
    try:
        import imagecodecs
    except ImportError:
        versions["imagecodecs"] = None
    else:
        versions["imagecodecs"] = imagecodecs.__version__
        for name in ("jpegxl", "jpegls", "avif"):
            try:
                versions[f"imagecodecs:{name}"] = getattr(imagecodecs, f"{name}_version")()
            except Exception:  # a codec this build lacks
                versions[f"imagecodecs:{name}"] = None
    return versions
