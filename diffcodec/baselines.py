"""Classical codecs to compare diffcodec against: JPEG, WebP, AVIF, JPEG XL, HEVC intra (what
BPG is), PNG, JPEG-LS, and two progressive files cut at their truncation points: JPEG 2000
quality layers and progressive JPEG scans.

Every baseline is a :class:`Codec`: ``encode`` takes uint8 pixels, (H, W), (H, W, 1),
(H, W, 3) or (H, W, 4), and returns the bytes of a complete file of that format;
``decode`` reads them back. Rates are measured from those real bytes, headers
included, which matters on small images: a 32x32 JPEG or AVIF file spends about
0.75 bits/dim on its headers alone. HEVC is the exception: x265's stream carries parameter
sets a BPG file does not, so its size is its slice NAL units plus 8 bytes (or the slices
alone; :class:`HEVC`, :meth:`Codec.size`).

Each baseline is optional at run time. Pillow (a dependency of diffcodec) provides
JPEG, PNG and WebP, and AVIF when it was built with libavif (Pillow >= 11) or when
pillow-avif-plugin is installed; ``pip install 'diffcodec[baselines]'`` adds
imagecodecs, which provides JPEG XL, JPEG-LS and a true lossless AVIF mode. HEVC runs
the x265 and dec265 programs (``apt-get install x265 libde265-examples``); JPEG 2000
uses Pillow's OpenJPEG.
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
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
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
    "HEVC",
    "JPEG2000Layers",
    "ProgressiveJPEG",
    "hevc_nal_units",
    "hevc_slice_bytes",
    "j2k_cut_layers",
    "jpeg_scan_ends",
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

    def size(self, data: bytes) -> int:
        """The bytes of ``data`` this setting counts as its file: its length, for every codec but
        :class:`HEVC`, whose raw stream carries parameter sets a BPG file would not (see there)."""
        return len(data)

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
# HEVC intra (what BPG is) through the x265 and libde265 command-line tools

# Upstream libde265 installs its decoder as dec265, Debian's libde265-examples as libde265-dec265.
_X265_NAMES = ("x265",)
_DEC265_NAMES = ("dec265", "libde265-dec265")
_HEVC_INSTALL_HINT = "apt-get install x265 libde265-examples"


def _find_tool(names: Sequence[str]) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def _run_tool(what: str, argv: Sequence[str], cwd: str) -> None:
    """Run a command-line codec; DiffcodecError with its first error line if it fails."""
    try:
        done = subprocess.run(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
    except OSError as exc:
        raise DiffcodecError(f"{what} could not run ({exc})") from None
    except subprocess.TimeoutExpired:
        raise DiffcodecError(f"{what} did not finish within 10 minutes") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        message = (errors or lines or ["no message"])[0]
        raise DiffcodecError(f"{what} failed (exit status {done.returncode}): {message}")


def hevc_nal_units(stream: bytes) -> list[tuple[int, int]]:
    """The NAL units of an HEVC Annex-B byte stream, in order, as (nal_unit_type, bytes).

    Each unit's bytes run from its start code (00 00 01, or 00 00 00 01: a zero byte right
    before 00 00 01 counts as the 4-byte form) to the next start code, so the bytes of all
    units add up to the stream's (bar zero bytes before the first start code). The type is
    bits 1-6 of the first header byte, ``(byte >> 1) & 0x3f`` (ITU-T H.265 §7.3.1.2): 0-31
    are slices (VCL units), 32-34 the VPS, SPS and PPS, 39 and 40 SEI.

    >>> stream = b"\\x00\\x00\\x00\\x01\\x40\\x01\\x0c" + b"\\x00\\x00\\x01\\x26\\x01\\xaf\\x80"
    >>> hevc_nal_units(stream)
    [(32, 7), (19, 7)]
    """
    starts = []
    i = stream.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i)
        i = stream.find(b"\x00\x00\x01", i + 3)
    if not starts:
        raise DiffcodecError("not an HEVC Annex-B stream: no start code")
    begins = [s - 1 if s > 0 and stream[s - 1] == 0 else s for s in starts]
    units = []
    for k, start in enumerate(starts):
        if start + 5 > len(stream):
            raise DiffcodecError("truncated HEVC stream: a NAL unit header is cut off")
        end = begins[k + 1] if k + 1 < len(starts) else len(stream)
        units.append(((stream[start + 3] >> 1) & 0x3F, end - begins[k]))
    return units


def hevc_slice_bytes(stream: bytes) -> int:
    """Bytes of the slice NAL units (types 0-31) of an Annex-B stream, start codes included:
    the stream without its parameter sets (VPS, SPS, PPS) and SEI."""
    return sum(size for nal_type, size in hevc_nal_units(stream) if nal_type < 32)


# BT.601 full range (JFIF; BPG's default): Y, Cb, Cr on 0..255, Cb and Cr centred on 128.
_RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


def _to_planes(rgb: np.ndarray, subsample: bool) -> list[np.ndarray]:
    """uint8 (H, W, 3) RGB to uint8 Y, Cb, Cr planes; with ``subsample`` Cb and Cr are the means
    of 2x2 blocks (H and W even)."""
    ycc = rgb.astype(np.float64) @ _RGB_TO_YCBCR.T
    ycc[..., 1:] += 128
    planes = [ycc[..., c] for c in range(3)]
    if subsample:
        h, w = rgb.shape[:2]
        planes[1:] = [p.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for p in planes[1:]]
    return [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in planes]


def _upsample2(plane: np.ndarray) -> np.ndarray:
    """Double a chroma plane each way, centred siting: every output sample is 3/4 of its nearest
    input and 1/4 of the next one (libjpeg's "fancy" upsampling), edges replicated."""
    p = np.pad(plane.astype(np.float64), 1, mode="edge")
    rows = np.empty((2 * plane.shape[0], p.shape[1]))
    rows[0::2] = 0.75 * p[1:-1] + 0.25 * p[:-2]
    rows[1::2] = 0.75 * p[1:-1] + 0.25 * p[2:]
    out = np.empty((rows.shape[0], 2 * plane.shape[1]))
    out[:, 0::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
    out[:, 1::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
    return out


def _from_planes(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Y, Cb, Cr planes (chroma full size or half each way) back to uint8 (H, W, 3) RGB."""
    if cb.shape != y.shape:
        cb, cr = _upsample2(cb), _upsample2(cr)
    ycc = np.stack([y.astype(np.float64), cb - 128.0, cr - 128.0], axis=-1)
    return np.clip(np.rint(ycc @ _YCBCR_TO_RGB.T), 0, 255).astype(np.uint8)


def _opaque_rgb(pixels: np.ndarray, what: str) -> np.ndarray:
    """RGB for a codec without alpha or grey: grey is replicated, an opaque alpha dropped."""
    if pixels.ndim == 2:
        return np.repeat(pixels[..., None], 3, axis=-1)
    if pixels.shape[2] == 4:
        if not np.all(pixels[..., 3] == 255):
            raise DiffcodecError(f"{what} has no alpha channel; cannot code an image with transparency")
        return np.ascontiguousarray(pixels[..., :3])
    return pixels


# The stream this module keeps for an HEVC image: a wrapper of 9 bytes (magic, chroma, the
# image's width and height, which the padded stream does not hold) then the Annex-B stream.
# :meth:`HEVC.size` counts neither the wrapper nor the parameter sets; BPG's own header,
# which holds the size, is what the 8 bytes of the BPG-style convention stand for.
_HEVC_MAGIC = b"dHVC"
_HEVC_CHROMA = {"4:2:0": 0, "4:4:4": 1}


class HEVC(Codec):
    """HEVC intra, what BPG is: one intra frame from x265, decoded by libde265's dec265.

    x265 runs ``--preset veryslow --ctu 32`` (16 on images under 32 pixels, as BPG does)
    ``--tune ssim`` (BPG's tuning: no psycho-visual RDO) at a constant ``qp`` for the slice
    (``--ipratio 1``), ``--keyint 1 --frames 1``, full-range BT.601 YCbCr (``--range full
    --colormatrix bt470bg``). This class converts RGB to YCbCr itself (BT.601 full range, as
    BPG does; 4:2:0 chroma is the mean of 2x2 blocks and is upsampled back with a 3/4-1/4
    filter) and pads the image by edge replication to a multiple of 8 (at least 16) each way,
    cropping after decoding.

    Args:
        qp: 0-51, the slice's quantization parameter.
        chroma: "4:4:4" or "4:2:0".
        size: which bytes count as the file (:meth:`size`): "bpg", the slice NAL units plus
            8 bytes for a BPG-style header (BPG stores the parameter sets in a few bytes of
            its own header, about 8 on a small image), or "raw", the slice NAL units alone.
            Start codes are counted; the parameter sets (VPS, SPS, PPS) and SEI are not.

    Needs the ``x265`` and ``dec265`` (or Debian's ``libde265-dec265``) programs:
    ``apt-get install x265 libde265-examples``. Grey images are coded as RGB; an alpha
    channel must be opaque (it is dropped).
    """

    BPG_HEADER_BYTES = 8

    def __init__(self, qp: int = 30, chroma: str = "4:4:4", size: str = "bpg"):
        if not 0 <= int(qp) <= 51:
            raise DiffcodecError(f"HEVC qp must be in 0..51, got {qp}")
        if chroma not in _HEVC_CHROMA:
            raise DiffcodecError(f"HEVC chroma must be one of {', '.join(_HEVC_CHROMA)}, got {chroma!r}")
        if size not in ("bpg", "raw"):
            raise DiffcodecError(f"HEVC size must be 'bpg' (slices + 8 bytes) or 'raw' (slices), got {size!r}")
        self.qp = int(qp)
        self.chroma = chroma
        self.size_convention = size
        self.lossless = False
        self.family = "hevc" + chroma.replace(":", "") + ("-raw" if size == "raw" else "")
        self.name = f"{self.family}-qp{self.qp}"

    @property
    def params(self) -> dict[str, Any]:
        counted = "slice NAL units + 8 bytes (BPG-style)" if self.size_convention == "bpg" else "slice NAL units"
        return {"qp": self.qp, "chroma": self.chroma, "size": counted, "preset": "veryslow", "ctu": 32, "tune": "ssim"}

    def size(self, data: bytes) -> int:
        stream = self._unwrap(data)[3]
        return hevc_slice_bytes(stream) + (self.BPG_HEADER_BYTES if self.size_convention == "bpg" else 0)

    @classmethod
    def _tools(cls) -> tuple[str, str]:
        x265, dec265 = _find_tool(_X265_NAMES), _find_tool(_DEC265_NAMES)
        if x265 is None or dec265 is None:
            missing = " and ".join(n for n, p in (("x265", x265), ("dec265", dec265)) if p is None)
            raise DiffcodecError(f"the HEVC baseline needs {missing}: {_HEVC_INSTALL_HINT}")
        return x265, dec265

    @classmethod
    def _probe(cls) -> bool:
        if _find_tool(_X265_NAMES) is None or _find_tool(_DEC265_NAMES) is None:
            return False
        return super()._probe()

    def encode(self, pixels: np.ndarray) -> bytes:
        rgb = _opaque_rgb(_check_pixels(pixels), "HEVC")
        x265, _ = self._tools()
        height, width = rgb.shape[:2]
        if max(height, width) > 0xFFFF:
            raise DiffcodecError(f"the HEVC baseline codes images up to 65535 pixels a side, got {width}x{height}")
        padded_h, padded_w = (max(16, -(-n // 8) * 8) for n in (height, width))
        padded = np.pad(rgb, ((0, padded_h - height), (0, padded_w - width), (0, 0)), mode="edge")
        planes = _to_planes(padded, subsample=self.chroma == "4:2:0")
        ctu = 32 if min(padded_h, padded_w) >= 32 else 16
        with tempfile.TemporaryDirectory(prefix="diffcodec-hevc-") as tmp:
            Path(tmp, "in.yuv").write_bytes(b"".join(p.tobytes() for p in planes))
            _run_tool("x265", [
                x265, "--input", "in.yuv", "--input-res", f"{padded_w}x{padded_h}",
                "--input-csp", "i444" if self.chroma == "4:4:4" else "i420", "--input-depth", "8", "--output-depth", "8",
                "--fps", "1", "--frames", "1", "--keyint", "1", "--preset", "veryslow", "--tune", "ssim", "--ctu", str(ctu),
                "--qp", str(self.qp), "--ipratio", "1", "--range", "full", "--colormatrix", "bt470bg",
                "--no-info", "--pools", "1", "--frame-threads", "1", "--no-progress", "--log-level", "error",
                "--output", "out.hevc"], cwd=tmp)
            stream = Path(tmp, "out.hevc").read_bytes()
        header = _HEVC_MAGIC + bytes([_HEVC_CHROMA[self.chroma]]) + width.to_bytes(2, "big") + height.to_bytes(2, "big")
        return header + stream

    @staticmethod
    def _unwrap(data: bytes) -> tuple[str, int, int, bytes]:
        if len(data) < 9 or data[:4] != _HEVC_MAGIC or data[4] not in _HEVC_CHROMA.values():
            raise DiffcodecError("not an HEVC stream written by diffcodec.baselines.HEVC")
        chroma = next(k for k, v in _HEVC_CHROMA.items() if v == data[4])
        width, height = int.from_bytes(data[5:7], "big"), int.from_bytes(data[7:9], "big")
        if width == 0 or height == 0:
            raise DiffcodecError("not an HEVC stream written by diffcodec.baselines.HEVC (empty image)")
        return chroma, width, height, data[9:]

    def _decode(self, data: bytes) -> np.ndarray:
        chroma, width, height, stream = self._unwrap(data)
        _, dec265 = self._tools()
        padded_h, padded_w = (max(16, -(-n // 8) * 8) for n in (height, width))
        chroma_h, chroma_w = (padded_h, padded_w) if chroma == "4:4:4" else (padded_h // 2, padded_w // 2)
        luma_size, chroma_size = padded_h * padded_w, chroma_h * chroma_w
        with tempfile.TemporaryDirectory(prefix="diffcodec-hevc-") as tmp:
            Path(tmp, "in.hevc").write_bytes(stream)
            _run_tool("dec265", [dec265, "-q", "-t", "0", "-o", "out.yuv", "in.hevc"], cwd=tmp)
            out = Path(tmp, "out.yuv")
            yuv = out.read_bytes() if out.exists() else b""
        if len(yuv) != luma_size + 2 * chroma_size:
            raise DiffcodecError(f"dec265 decoded {len(yuv)} bytes of YUV, expected one {padded_w}x{padded_h} {chroma} picture")
        buffer = np.frombuffer(yuv, np.uint8)
        y = buffer[:luma_size].reshape(padded_h, padded_w)
        cb = buffer[luma_size : luma_size + chroma_size].reshape(chroma_h, chroma_w)
        cr = buffer[luma_size + chroma_size :].reshape(chroma_h, chroma_w)
        return np.ascontiguousarray(_from_planes(y, cb, cr)[:height, :width])


# ---------------------------------------------------------------------------
# Progressive files, cut: JPEG 2000 quality layers and progressive JPEG scans
#
# A setting of these families is one prefix of one file: every setting of a sweep encodes
# the same file (the encoders are deterministic) and keeps its first k layers or scans, made
# a complete file again (a JPEG 2000 codestream that says k layers; a JPEG with EOI). So a
# sweep's curve is the single-file progressive curve, measured on real bytes.


def _j2k_markers(data: bytes, start: int, stop_at: int) -> list[tuple[int, int, int]]:
    """(marker, offset, segment end) of the marker segments from ``start`` up to marker ``stop_at``."""
    out = []
    pos = start
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise DiffcodecError("not a JPEG 2000 codestream this module can cut (bad marker)")
        marker = data[pos + 1]
        if marker == stop_at:
            out.append((marker, pos, pos + 2))
            return out
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((marker, pos, end))
        pos = end


def _plt_lengths(segment: bytes) -> list[int]:
    """Packet lengths of one PLT marker segment (ISO/IEC 15444-1 A.7.3: 7 bits a byte, high bit = more)."""
    lengths, value = [], 0
    for byte in segment[5:]:  # FF58, Lplt (2), Zplt (1)
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            lengths.append(value)
            value = 0
    return lengths


def j2k_cut_layers(codestream: bytes, keep: int, resolutions: int) -> bytes:
    """The first ``keep`` quality layers of a single-tile LRCP JPEG 2000 codestream with PLT markers,
    as a complete codestream (its COD says ``keep`` layers) without PLT or comment markers.

    In LRCP order (ISO/IEC 15444-1 B.12.1.1) every packet of layer l precedes those of layer
    l + 1, so the first ``keep`` layers are a prefix of the tile's data; the PLT markers give
    each packet's length, hence where that prefix ends. With one precinct per resolution
    (OpenJPEG's default precincts), a layer has ``resolutions`` x components packets.
    """
    if codestream[:2] != b"\xff\x4f":
        raise DiffcodecError("not a JPEG 2000 codestream (no SOC marker)")
    main = _j2k_markers(codestream, 2, 0x90)  # up to the first SOT
    sot = main[-1][1]
    if int.from_bytes(codestream[sot + 2 : sot + 4], "big") != 10:
        raise DiffcodecError("bad SOT marker in JPEG 2000 codestream")
    psot = int.from_bytes(codestream[sot + 6 : sot + 10], "big")
    tile = _j2k_markers(codestream, sot + 12, 0x93)  # tile-part header up to SOD
    data_start = tile[-1][2]
    data_end = sot + psot if psot else len(codestream) - 2
    if codestream[data_end : data_end + 2] != b"\xff\xd9":
        raise DiffcodecError("cannot cut this JPEG 2000 codestream: it has more than one tile-part")
    header = bytearray(b"\xff\x4f")  # SOC
    layers = components = None
    for marker, begin, end in main[:-1]:
        segment = bytearray(codestream[begin:end])
        if marker == 0x64:  # COM: a comment, not needed to decode
            continue
        if marker == 0x51:  # SIZ: Csiz at offset 38
            components = int.from_bytes(segment[38:40], "big")
        if marker == 0x52:  # COD: Scod, progression order, number of layers (2 bytes), ...
            if segment[5] != 0:
                raise DiffcodecError("cannot cut this JPEG 2000 codestream by layers: its progression is not LRCP")
            layers = int.from_bytes(segment[6:8], "big")
            segment[6:8] = min(keep, layers).to_bytes(2, "big")
        header += segment
    lengths = [n for marker, begin, end in tile[:-1] if marker == 0x58 for n in _plt_lengths(codestream[begin:end])]
    per_layer = resolutions * (components or 0)
    if layers is None or not lengths or len(lengths) != layers * per_layer or sum(lengths) != data_end - data_start:
        raise DiffcodecError("cannot find the layer boundaries of this JPEG 2000 codestream (PLT markers missing or unexpected)")
    if not 1 <= keep:
        raise DiffcodecError(f"keep at least one layer, got {keep}")
    body = codestream[data_start : data_start + sum(lengths[: min(keep, layers) * per_layer])]
    sot_segment = bytearray(codestream[sot : sot + 12])
    sot_segment[6:10] = (12 + 2 + len(body)).to_bytes(4, "big")  # Psot: SOT, SOD and the data
    return bytes(header) + bytes(sot_segment) + b"\xff\x93" + body + b"\xff\xd9"


# Target rates of the layers in bits/dim, headers included (OpenJPEG's "rates" are compression
# ratios, 8 / bits per dim); one more, lossless, layer ends the file: 16 layers. On 32x32 images
# the main and tile headers alone are about 0.25 bits/dim and every packet costs at least a
# byte (components x resolutions packets a layer), so lower targets give empty layers.
_J2K_LAYER_BPD = (0.3, 0.35, 0.4, 0.5, 0.6, 0.75, 0.9, 1.1, 1.3, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5)


class JPEG2000Layers(Codec):
    """JPEG 2000 as one progressive file cut after ``keep`` of its quality layers.

    OpenJPEG through Pillow (imagecodecs' ``jpeg2k_encode`` writes a single quality layer
    only) codes the image once as a bare codestream (no JP2 boxes): the reversible 5/3
    wavelet with the RCT on colour images, ``resolutions`` resolution levels, LRCP order, one
    layer per rate in ``layer_bpd`` (OpenJPEG's rate allocation, headers included) and a last,
    lossless layer, so the whole file is exact. :func:`j2k_cut_layers` keeps the first
    ``keep`` layers as a complete codestream; ``keep=None`` keeps them all.
    ``reversible=False`` uses the 9/7 wavelet instead, without the lossless layer.

    The encoder's comment marker is dropped; the PLT markers used to find the layer
    boundaries are not kept either, so neither is counted.

    ``resolutions=2`` (one wavelet level) is the default because on 32x32 images it gave the
    lowest RMSE from 0.45 bits/dim up and the smallest whole file among 1-4 levels, on 40
    CIFAR-10 training images (every level adds packets to every layer; 3 levels were better
    only below 0.4 bits/dim). On larger images more levels are better: pass ``resolutions``.
    """

    family = "j2k-layers"

    def __init__(self, keep: int | None = None, layer_bpd: Sequence[float] = _J2K_LAYER_BPD, resolutions: int = 2,
                 reversible: bool = True):
        rates = [float(r) for r in layer_bpd]
        if not rates or any(not 0 < r < 8 for r in rates) or rates != sorted(set(rates)):
            raise DiffcodecError(f"JPEG 2000 layer rates must rise, each in (0, 8) bits/dim, got {list(layer_bpd)}")
        if not 1 <= int(resolutions) <= 8:
            raise DiffcodecError(f"JPEG 2000 resolutions must be in 1..8, got {resolutions}")
        self.layer_bpd = tuple(rates)
        self.reversible = bool(reversible)
        self.layers = len(rates) + self.reversible
        if keep is not None and not 1 <= int(keep) <= self.layers:
            raise DiffcodecError(f"JPEG 2000 keep must be in 1..{self.layers} layers, got {keep}")
        self.keep = self.layers if keep is None else int(keep)
        self.resolutions = int(resolutions)
        # The whole file is exact, but as a point of a lossy sweep it is not a "lossless setting":
        # measure() then reports its RMSE (0) like any other cut's.
        self.lossless = False
        self.family = "j2k-layers" if self.reversible else "j2k-layers-97"
        self.name = f"{self.family}-{self.keep}of{self.layers}"

    @property
    def params(self) -> dict[str, Any]:
        return {"keep": self.keep, "layers": self.layers, "layer_bpd": list(self.layer_bpd) + ["lossless"] * self.reversible,
                "resolutions": self.resolutions, "wavelet": "5/3 reversible" if self.reversible else "9/7 irreversible",
                "progression": "LRCP"}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        if not _pillow_can_write("JPEG2000"):
            raise DiffcodecError("this Pillow was built without OpenJPEG (JPEG 2000)")
        if min(pixels.shape[:2]) < 2 ** (self.resolutions - 1):
            raise DiffcodecError(f"JPEG 2000 with {self.resolutions} resolutions needs images of at least "
                                 f"{2 ** (self.resolutions - 1)} pixels a side, got {pixels.shape[1]}x{pixels.shape[0]}")
        ratios = [8 / r for r in self.layer_bpd] + [1] * self.reversible  # ratio 1: lossless
        full = _pil_encode(pixels, "JPEG2000", no_jp2=True, irreversible=not self.reversible, progression="LRCP",
                           quality_mode="rates", quality_layers=ratios, num_resolutions=self.resolutions,
                           mct=1 if pixels.ndim == 3 else 0, plt=True)
        return j2k_cut_layers(full, self.keep, self.resolutions)

    def _decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "JPEG2000")


def jpeg_scan_ends(data: bytes) -> list[int]:
    """Where each scan of a JPEG file ends: the offset of the first marker after its entropy-coded data.

    ``data[:end] + b"\\xff\\xd9"`` is then the file cut after that scan (SOS is 0xFFDA; inside
    a scan 0xFF is followed by 0x00, a stuffed byte, or by a restart marker 0xD0-0xD7).
    """
    if data[:2] != b"\xff\xd8":
        raise DiffcodecError("not a JPEG file (no SOI marker)")
    ends, pos = [], 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            raise DiffcodecError("not a JPEG file this module can cut (bad marker)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return ends
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            i = end
            while True:
                i = data.find(b"\xff", i)
                if i < 0 or i + 1 >= len(data):
                    raise DiffcodecError("truncated JPEG file: a scan has no end")
                following = data[i + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    i += 2
                elif following == 0xFF:
                    i += 1
                else:
                    break
            ends.append(i)
            end = i
        pos = end
    raise DiffcodecError("truncated JPEG file: no EOI marker")


class ProgressiveJPEG(Codec):
    """Progressive JPEG through Pillow (libjpeg-turbo's default scan script, optimized Huffman
    tables, 4:2:0), cut after its first ``scans`` scans; ``None`` keeps them all.

    libjpeg-turbo writes 10 scans for a colour image (DC first, then spectral selection and
    successive approximation) and 6 for a grey one; a cut is the file up to the end of that
    scan plus EOI (2 bytes), a complete JPEG file whose missing coefficients decode as zero.
    JPEG has no alpha channel: RGBA input raises DiffcodecError.
    """

    def __init__(self, quality: int = 75, scans: int | None = None):
        if not 1 <= int(quality) <= 100:
            raise DiffcodecError(f"JPEG quality must be in 1..100, got {quality}")
        if scans is not None and int(scans) < 1:
            raise DiffcodecError(f"keep at least one scan, got {scans}")
        self.quality = int(quality)
        self.scans = None if scans is None else int(scans)
        self.lossless = False
        self.family = f"jpeg-prog-q{self.quality}"
        self.name = self.family + ("" if self.scans is None else f"-s{self.scans}")

    @property
    def params(self) -> dict[str, Any]:
        return {"quality": self.quality, "subsampling": "4:2:0", "scans": self.scans}

    def encode(self, pixels: np.ndarray) -> bytes:
        pixels = _check_pixels(pixels)
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            raise DiffcodecError("JPEG has no alpha channel; cannot code an RGBA image")
        full = _pil_encode(pixels, "JPEG", quality=self.quality, subsampling=2, optimize=True, progressive=True)
        ends = jpeg_scan_ends(full)
        if self.scans is None or self.scans >= len(ends):
            return full
        return full[: ends[self.scans - 1]] + b"\xff\xd9"

    def _decode(self, data: bytes) -> np.ndarray:
        return _pil_decode(data, "JPEG")


# ---------------------------------------------------------------------------
# Registry, sweeps and measurement


def default_codecs(lossless: bool | None = None) -> list[Codec]:
    """The default setting of each baseline, whether or not it can run here.

    ``lossless=True``: PNG, WebP lossless, JPEG XL lossless (effort 9), JPEG-LS,
    lossless AVIF. ``lossless=False``: one mid-quality setting each of JPEG, WebP,
    AVIF, JPEG XL, HEVC intra 4:4:4 and 4:2:0 (BPG-style sizes), and one cut each of the
    progressive files, JPEG 2000 layers and progressive JPEG at quality 75 (their
    ``family`` names :func:`lossy_sweep`'s curves). ``None``: both.
    """
    lossless_codecs: list[Codec] = [PNG(), WebP(lossless=True), JPEGXL(lossless=True), JPEGLS(), AVIFLossless()]
    lossy_codecs: list[Codec] = [JPEG(), WebP(), AVIF(), JPEGXL(), HEVC(chroma="4:4:4"), HEVC(chroma="4:2:0"),
                                 JPEG2000Layers(keep=8), ProgressiveJPEG(75, scans=5)]
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
    # HEVC intra, 15 QPs: 0.08 .. 2.77 bits/dim in 4:4:4, 0.08 .. 2.04 in 4:2:0 (BPG-style sizes).
    **{
        f"hevc{chroma.replace(':', '')}{suffix}": (lambda chroma=chroma, size=size: [
            HEVC(qp, chroma, size) for qp in (51, 48, 45, 42, 39, 36, 33, 30, 27, 24, 21, 18, 15, 12, 9)])
        for chroma in ("4:4:4", "4:2:0") for size, suffix in (("bpg", ""), ("raw", "-raw"))
    },
    # One file per image, cut after each of its 16 layers: 0.29 .. 3.38 bits/dim, then lossless (5.02).
    "j2k-layers": lambda: [JPEG2000Layers(keep=k) for k in range(1, JPEG2000Layers().layers + 1)],
    # One file per image, cut after each of its 10 scans: 0.68 .. 2.18 (quality 75), 0.70 .. 3.05 (95).
    "jpeg-prog-q75": lambda: [ProgressiveJPEG(75, scans=k) for k in range(1, 11)],
    "jpeg-prog-q95": lambda: [ProgressiveJPEG(95, scans=k) for k in range(1, 11)],
}
_LOSSLESS_ONLY = {"png", "jpegls"}


def lossy_sweep(name: str) -> list[Codec]:
    """Settings of one lossy codec family, lowest rate first, for a rate-distortion curve.

    ``name`` is a family: "jpeg", "webp", "avif" or "jxl". On 32x32 CIFAR-10 images the
    curves span each codec's lowest rate (0.24 bits/dim for WebP, 0.30 for JPEG XL,
    0.86 for JPEG and AVIF, whose headers alone cost about 0.75) to above 2.4 bits/dim.

    Also "hevc444" and "hevc420" (HEVC intra at 15 QPs, BPG-style sizes; "hevc444-raw" and
    "hevc420-raw" count the slice NAL units alone), and the progressive files, whose
    settings are the cuts of one file per image: "j2k-layers" (after each of 16 quality
    layers, the last lossless), "jpeg-prog-q75" and "jpeg-prog-q95" (after each scan).
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
        total_bytes: sum of the real file sizes (:meth:`Codec.size`; the file's length
            except for :class:`HEVC`'s stated conventions).
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
        total_bytes += codec.size(data)
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
    for feature in ("jpg", "libjpeg_turbo", "zlib", "webp", "avif", "jpg_2000"):
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
    versions["x265"] = _tool_version(_X265_NAMES, ["--version"], "version ")
    versions["libde265"] = _tool_version(_DEC265_NAMES, ["--help"], "dec265 ")
    return versions


def _tool_version(names: Sequence[str], argv: list[str], after: str) -> str | None:
    """The word after ``after`` in what a command-line tool prints about itself (None if absent)."""
    tool = _find_tool(names)
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, *argv], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout + done.stderr).decode(errors="replace")
    at = text.find(after)
    return text[at + len(after) :].split()[0] if at >= 0 and text[at + len(after) :].split() else None
