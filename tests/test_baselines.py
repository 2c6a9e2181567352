"""Tests for diffcodec.baselines: the classical codecs diffcodec is compared against."""

from __future__ import annotations

import doctest
import math
import sys

import numpy as np
import pytest

from diffcodec import baselines
from diffcodec.baselines import (
    AVIF,
    HEVC,
    JPEG,
    JPEGLS,
    JPEGXL,
    PNG,
    AVIFLossless,
    Codec,
    JPEG2000Layers,
    ProgressiveJPEG,
    WebP,
    available_codecs,
    hevc_nal_units,
    hevc_slice_bytes,
    jpeg_scan_ends,
    lossy_sweep,
    measure,
)
from diffcodec.errors import DiffcodecError

LOSSLESS = [PNG(), WebP(lossless=True), JPEGXL(lossless=True), JPEGLS(), AVIFLossless()]
LOSSY = [JPEG(), WebP(), AVIF(), JPEGXL(), HEVC(chroma="4:4:4"), HEVC(chroma="4:2:0"), JPEG2000Layers(keep=8),
         ProgressiveJPEG(75, scans=5)]
LOSSY_FAMILIES = ["jpeg", "webp", "avif", "jxl", "hevc444", "hevc420", "j2k-layers", "jpeg-prog-q75"]


def _ids(codecs):
    return [codec.name for codec in codecs]


def _require(codec: Codec) -> None:
    if not type(codec).available():
        pytest.skip(f"{codec.name} is not available here")


def _natural(seed: int, height: int = 32, width: int = 32) -> np.ndarray:
    """A 32x32-crop-like RGB image: smooth shading, an edge, a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-3, 3, size=(2, 3))
    image = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    image += np.where((x + 0.5 * y)[..., None] > width * 0.6, rng.uniform(-60, 60, size=3), 0)
    image += rng.normal(0, 6, size=image.shape)
    return image.clip(0, 255).round().astype(np.uint8)


def _images() -> dict[str, np.ndarray]:
    rgb = _natural(0)
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    alpha[:8] = 0  # fully transparent rows with arbitrary RGB underneath: a lossless codec keeps them
    return {
        "rgb": rgb,
        "rgb-24x40": _natural(1, 24, 40),
        "gray": _natural(2)[..., 1].copy(),
        "gray-hw1": _natural(3)[..., :1].copy(),
        "rgba": np.concatenate([_natural(4), alpha[..., None]], axis=-1),
        "rgba-opaque": np.concatenate([_natural(5), np.full((32, 32, 1), 255, np.uint8)], axis=-1),
    }


IMAGES = _images()


def _codes(codec: Codec, kind: str) -> bool:
    if isinstance(codec, HEVC):
        return kind != "rgba"  # an opaque alpha channel is dropped, a real one refused
    return not (isinstance(codec, (JPEG, ProgressiveJPEG)) and kind.startswith("rgba"))


# --- every available codec round-trips ----------------------------------------------


@pytest.mark.parametrize("kind", list(IMAGES))
@pytest.mark.parametrize("codec", LOSSLESS + LOSSY, ids=_ids(LOSSLESS + LOSSY))
def test_round_trip_gives_the_original_shape(codec, kind):
    _require(codec)
    image = IMAGES[kind]
    if not _codes(codec, kind):
        pytest.skip("JPEG has no alpha channel")
    data = codec.encode(image)
    assert isinstance(data, bytes) and len(data) > 0
    decoded = codec.decode(data, shape=image.shape)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    plain = codec.decode(data)  # without the shape hint: what the file holds
    assert plain.shape[:2] == image.shape[:2] and plain.ndim in (2, 3)


@pytest.mark.parametrize("codec", LOSSLESS, ids=_ids(LOSSLESS))
def test_lossless_codecs_are_exact(codec):
    _require(codec)
    for kind, image in IMAGES.items():
        decoded = codec.decode(codec.encode(image), shape=image.shape)
        assert np.array_equal(decoded, image), kind
    result = measure(codec, list(IMAGES.values()))
    assert result["lossless_ok"] and result["mse"] == 0 and result["psnr"] is None


@pytest.mark.parametrize("codec", LOSSY, ids=_ids(LOSSY))
def test_lossy_codecs_are_close_but_not_claimed_lossless(codec):
    _require(codec)
    result = measure(codec, [IMAGES["rgb"], IMAGES["gray"]])
    assert not result["lossless"]
    assert 0 < result["rmse"] < 20


def test_pillow_codecs_are_available():
    # Pillow is a dependency of diffcodec and its wheels include libjpeg, zlib and libwebp.
    for codec_type in (JPEG, PNG, WebP):
        assert codec_type.available(), codec_type.__name__


def test_imagecodecs_codecs_are_available_when_it_is_installed():
    pytest.importorskip("imagecodecs")
    assert JPEGXL.available() and JPEGLS.available()


def test_lossy_decode_of_opaque_alpha_and_gray_is_fitted_to_the_original():
    codec = WebP(lossless=True)
    gray, opaque = IMAGES["gray"], IMAGES["rgba-opaque"]
    assert codec.decode(codec.encode(gray)).shape == (32, 32, 3)  # WebP stores gray as RGB
    assert codec.decode(codec.encode(opaque)).shape == (32, 32, 3)  # and drops an opaque alpha
    assert np.array_equal(codec.decode(codec.encode(gray), shape=gray.shape), gray)
    assert np.array_equal(codec.decode(codec.encode(opaque), shape=opaque.shape), opaque)


# --- lossy rate-distortion ------------------------------------------------------------


@pytest.mark.parametrize("family", LOSSY_FAMILIES)
def test_lossy_sweep_rate_rises_and_rmse_falls_with_quality(family):
    sweep = lossy_sweep(family)
    assert len(sweep) >= 5 and all(codec.family == family and not codec.lossless for codec in sweep)
    _require(sweep[0])
    images = [_natural(seed) for seed in range(10, 14)]
    points = [measure(sweep[i], images) for i in (0, len(sweep) // 2, -1)]
    rates = [p["rate_bpd"] for p in points]
    rmses = [p["rmse"] for p in points]
    assert rates == sorted(rates) and rates[0] < rates[-1], rates
    assert rmses == sorted(rmses, reverse=True) and rmses[0] > rmses[-1], rmses


def test_lossy_sweep_rejects_lossless_only_and_unknown_names():
    with pytest.raises(DiffcodecError, match="lossless only"):
        lossy_sweep("png")
    with pytest.raises(DiffcodecError, match="unknown"):
        lossy_sweep("bpg")


def test_available_codecs_splits_lossless_and_lossy():
    lossless, lossy = available_codecs(lossless=True), available_codecs(lossless=False)
    assert lossless and all(codec.lossless for codec in lossless)
    assert lossy and not any(codec.lossless for codec in lossy)
    assert {c.name for c in available_codecs()} == {c.name for c in lossless + lossy}
    assert {"png", "webp-lossless"} <= {c.name for c in lossless}
    assert {"jpeg", "webp"} <= {c.family for c in lossy}
    for codec in lossy:
        lossy_sweep(codec.family)  # every lossy default names a sweep


# --- measure's arithmetic, on a codec whose output is known ------------------------------


class _OffByOne(Codec):
    """Stores raw pixels plus one (saturating) in 10 bytes per image, whatever its size."""

    family = "test"

    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self.name = "off-by-one"
        self._last: np.ndarray | None = None

    def encode(self, pixels):
        self._last = np.minimum(pixels.astype(np.int64) + 1, 255).astype(np.uint8)
        return b"0123456789"

    def _decode(self, data):
        return self._last


def test_measure_pools_squared_error_over_all_subpixels():
    small = np.full((2, 2, 3), 10, np.uint8)  # every subpixel off by 1
    large = np.full((4, 4, 3), 255, np.uint8)  # saturates: no error
    result = measure(_OffByOne(), [small, large])
    n = small.size + large.size
    assert result["n_images"] == 2 and result["n_subpixels"] == n == 60
    assert result["total_bytes"] == 20
    assert result["rate_bpd"] == pytest.approx(8 * 20 / 60)
    assert result["mse"] == pytest.approx(12 / 60)
    assert result["rmse"] == pytest.approx(math.sqrt(12 / 60))
    assert result["psnr"] == pytest.approx(10 * math.log10(255**2 / (12 / 60)))
    assert result["lossless_ok"] is False


def test_measure_refuses_a_lossless_setting_that_is_not_exact():
    with pytest.raises(DiffcodecError, match="did not reproduce"):
        measure(_OffByOne(lossless=True), [np.zeros((2, 2, 3), np.uint8)])


def test_measure_needs_images():
    with pytest.raises(DiffcodecError, match="no images"):
        measure(PNG(), [])


# --- bad input and missing libraries ------------------------------------------------------


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 2), np.uint8), np.zeros((8,), np.uint8), np.zeros((0, 8, 3), np.uint8), [[0]]],
    ids=["float", "two-channels", "1d", "empty", "list"],
)
def test_encode_rejects_bad_pixels(pixels):
    with pytest.raises(DiffcodecError):
        PNG().encode(pixels)


def test_jpeg_rejects_alpha_and_bad_settings():
    with pytest.raises(DiffcodecError, match="alpha"):
        JPEG().encode(IMAGES["rgba"])
    with pytest.raises(DiffcodecError):
        JPEG(quality=0)
    with pytest.raises(DiffcodecError):
        JPEG(subsampling="4:1:1")


@pytest.mark.parametrize("codec", LOSSLESS + LOSSY, ids=_ids(LOSSLESS + LOSSY))
def test_decode_of_garbage_is_one_clear_error(codec):
    _require(codec)
    with pytest.raises(DiffcodecError):
        codec.decode(b"not an image file at all")


def test_missing_imagecodecs_makes_its_codecs_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import imagecodecs now raises ImportError
    monkeypatch.setattr(baselines, "_AVAILABLE", {})
    assert not JPEGXL.available() and not JPEGLS.available() and not AVIFLossless.available()
    names = {codec.name for codec in available_codecs()}
    assert "png" in names and not any(name.startswith(("jxl", "jpegls", "avif-lossless")) for name in names)
    with pytest.raises(DiffcodecError, match=r"pip install 'diffcodec\[baselines\]'"):
        JPEGXL().encode(IMAGES["rgb"])


def test_missing_pillow_avif_makes_avif_unavailable(monkeypatch):
    monkeypatch.setattr(baselines, "_pillow_can_write", lambda fmt, plugin=None: fmt != "AVIF")
    monkeypatch.setattr(baselines, "_AVAILABLE", {})
    assert not AVIF.available()
    assert "avif" not in {codec.family for codec in available_codecs(lossless=False)}
    with pytest.raises(DiffcodecError, match="AVIF"):
        AVIF().encode(IMAGES["rgb"])


# --- HEVC intra (x265 + libde265) ---------------------------------------------------------


def test_nal_units_of_a_hand_made_annex_b_stream():
    vps = b"\x00\x00\x00\x01" + bytes([32 << 1, 1]) + b"\x0c\x01"  # 4-byte start code
    sps = b"\x00\x00\x01" + bytes([33 << 1, 1]) + b"\x01\x60\x80"  # a NAL unit ends in its stop bit
    pps = b"\x00\x00\x01" + bytes([34 << 1, 1]) + b"\xc1"
    sei = b"\x00\x00\x01" + bytes([39 << 1, 1]) + b"\x05\x80"
    idr = b"\x00\x00\x00\x01" + bytes([19 << 1, 1]) + b"\xaf\x00\x00\x03\x01\x80"  # emulation prevention inside
    trail = b"\x00\x00\x01" + bytes([1 << 1, 1]) + b"\x9a"
    stream = vps + sps + pps + sei + idr + trail
    assert hevc_nal_units(stream) == [(32, len(vps)), (33, len(sps)), (34, len(pps)), (39, len(sei)), (19, len(idr)),
                                      (1, len(trail))]
    assert hevc_slice_bytes(stream) == len(idr) + len(trail)
    with pytest.raises(DiffcodecError, match="no start code"):
        hevc_nal_units(b"\x12\x34\x56\x78")
    with pytest.raises(DiffcodecError, match="truncated"):
        hevc_nal_units(vps + b"\x00\x00\x01\x40")


def test_hevc_round_trip_and_both_size_conventions():
    _require(HEVC())
    for chroma, limit in (("4:4:4", 2.0), ("4:2:0", 8.0)):
        for kind in ("rgb", "rgb-24x40", "gray"):
            image = IMAGES[kind]
            bpg, raw = HEVC(qp=10, chroma=chroma), HEVC(qp=10, chroma=chroma, size="raw")
            data = bpg.encode(image)
            decoded = bpg.decode(data, shape=image.shape)
            assert decoded.shape == image.shape and decoded.dtype == np.uint8
            assert math.sqrt(np.mean((decoded.astype(float) - image) ** 2)) < limit, (chroma, kind)
            assert bpg.size(data) - raw.size(data) == 8
            assert 0 < raw.size(data) < len(data) - 9 - 40  # neither the wrapper nor VPS, SPS and PPS count
    coarse, fine = (measure(HEVC(qp=qp), [IMAGES["rgb"]]) for qp in (40, 20))
    assert coarse["total_bytes"] < fine["total_bytes"] and coarse["rmse"] > fine["rmse"]


def test_hevc_is_unavailable_without_its_tools(monkeypatch):
    monkeypatch.setattr(baselines, "_find_tool", lambda names: None)
    monkeypatch.setattr(baselines, "_AVAILABLE", {})
    assert not HEVC.available()
    assert not any(isinstance(codec, HEVC) for codec in available_codecs())
    with pytest.raises(DiffcodecError, match="apt-get install x265 libde265-examples"):
        HEVC().encode(IMAGES["rgb"])


def test_a_failing_tool_is_one_clear_error(tmp_path):
    script = "import sys; sys.stderr.write('progress\\nx265 [error]: picture too small\\n'); sys.exit(3)"
    with pytest.raises(DiffcodecError, match=r"x265 failed \(exit status 3\): x265 \[error\]: picture too small"):
        baselines._run_tool("x265", [sys.executable, "-c", script], cwd=str(tmp_path))


def test_hevc_refuses_transparency_and_bad_settings():
    with pytest.raises(DiffcodecError, match="alpha"):
        HEVC().encode(IMAGES["rgba"])
    for bad in (dict(qp=52), dict(chroma="4:2:2"), dict(size="bytes")):
        with pytest.raises(DiffcodecError):
            HEVC(**bad)


# --- progressive files, cut: JPEG 2000 layers and progressive JPEG scans ---------------------------


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_jpeg2000_cut_after_more_layers_is_larger_and_closer_and_whole_is_exact():
    _require(JPEG2000Layers())
    image = IMAGES["rgb"]
    layers = JPEG2000Layers().layers
    cuts = [JPEG2000Layers(keep=k).encode(image) for k in range(1, layers + 1)]
    errors = [_rmse(JPEG2000Layers().decode(c, shape=image.shape), image) for c in cuts]
    assert [len(c) for c in cuts] == sorted(len(c) for c in cuts) and len(cuts[0]) < len(cuts[-1])
    assert errors[0] > errors[layers // 2] > errors[-1] == 0
    # one file: each cut's packets are a prefix of the whole file's (the headers differ only in the counts)
    body = [c[c.index(b"\xff\x93") + 2 : -2] for c in cuts]
    assert all(body[-1].startswith(b) for b in body)
    assert b"\xff\x64" not in cuts[0][: cuts[0].index(b"\xff\x90")]  # the encoder's comment is not kept
    gray = IMAGES["gray"]
    assert np.array_equal(JPEG2000Layers().decode(JPEG2000Layers().encode(gray), shape=gray.shape), gray)


def test_progressive_jpeg_more_scans_give_lower_error():
    image = IMAGES["rgb"]
    full = ProgressiveJPEG(95).encode(image)
    ends = jpeg_scan_ends(full)
    assert len(ends) == 10  # libjpeg-turbo's progressive script for YCbCr
    cuts = [ProgressiveJPEG(95, scans=k).encode(image) for k in range(1, len(ends) + 1)]
    assert cuts[-1] == full and all(c == full[:e] + b"\xff\xd9" for c, e in zip(cuts[:-1], ends))
    errors = [_rmse(ProgressiveJPEG(95).decode(c, shape=image.shape), image) for c in cuts]
    # a refinement scan can cost a little (15.9 -> 16.1 after the second scan here), but overall the error falls
    assert errors[0] > errors[4] > errors[-1] and errors[-1] < 0.6 * errors[0], errors
    assert len(jpeg_scan_ends(JPEG(quality=75).encode(image))) == 1  # a baseline JPEG is one scan
    with pytest.raises(DiffcodecError):
        jpeg_scan_ends(b"not a jpeg")


def test_module_docstring_example_runs():
    assert doctest.testmod(baselines).failed == 0
