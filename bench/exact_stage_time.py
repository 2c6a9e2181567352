"""Encode and decode time of one image with "auto"'s learned stage and with the coarse-to-fine stage.

    python bench/exact_stage_time.py            # CIFAR-10 training image 3505 (validation) and a 64x64 photo crop

One torch thread, one search thread; each file is decoded and checked exact.  A single timing per case: read
the ratios, not the digits.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.models.checkpoint import load_model

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(None)
    cifar = np.load(DATA / "cifar10-train-lossless-4000.npy", mmap_mode="r")
    photo = np.asarray(Image.open(sorted(glob.glob(str(DATA / "photos-train" / "*")))[0]).convert("RGB"))[:64, :64]
    for name, pixels in (("cifar 3505 (32x32)", np.ascontiguousarray(cifar[3505])), ("photo crop 64x64", np.ascontiguousarray(photo))):
        for method in ("learned", "coarse"):
            t0 = time.perf_counter()
            result = encode(pixels, "RGB", model, CodecConfig(search_threads=1, exact_method=method))
            t1 = time.perf_counter()
            assert np.array_equal(decode(result.data, model).pixels, pixels)
            t2 = time.perf_counter()
            print(f"{name}: {method:7s} {len(result.data)} bytes, encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s", flush=True)


if __name__ == "__main__":
    main()
