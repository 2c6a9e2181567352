"""Rate-distortion curves (rate_bpd, rmse, psnr) of the lossy classical baselines, as JSON.

For each available lossy codec (JPEG 4:2:0, WebP, AVIF, JPEG XL) codes every image at
each setting of ``diffcodec.baselines.lossy_sweep`` and reports, per setting, the rate
from the real file sizes and the RMSE and PSNR pooled over all subpixels of the set.

Example:
    python bench/baselines_lossy.py --data ../shared/data/cifar10-test-png \\
        --out bench/results/baselines_lossy.json --codecs jpeg,jxl --limit 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from diffcodec import baselines
from diffcodec.errors import DiffcodecError
from diffcodec.images import IMAGE_SUFFIXES, load_image

# The families baselines_lossy.json has always held (bench/report.py tabulates each of them).
CLASSIC = ("jpeg", "webp", "avif", "jxl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of images (sorted by name)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--codecs", default=None,
                        help="comma-separated families (default: jpeg, webp, avif and jxl, those available; "
                             "bench/baselines_progressive.py measures HEVC and the progressive files)")
    args = parser.parse_args(argv)

    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not paths:
        parser.error(f"no images in {args.data}")
    images = [load_image(p).pixels for p in paths]

    available = [c.family for c in baselines.available_codecs(lossless=False)]
    classic = [f for f in CLASSIC if f in available]
    families = classic if args.codecs is None else [f.strip() for f in args.codecs.split(",") if f.strip()]
    unavailable = [f for f in families if f not in available]
    for family in unavailable:
        try:
            baselines.lossy_sweep(family)  # an unknown name is an error, a missing library is reported
        except DiffcodecError as exc:
            parser.error(str(exc))
        print(f"{family}: not available here, skipped", file=sys.stderr)

    curves = {}
    start = time.perf_counter()
    for family in families:
        if family in unavailable:
            continue
        curve = []
        for codec in baselines.lossy_sweep(family):
            result = baselines.measure(codec, images)
            curve.append(result)
            psnr = "inf" if result["psnr"] is None else f"{result['psnr']:.2f}"
            print(f"{codec.name:24s} {result['rate_bpd']:.3f} bits/dim  rmse {result['rmse']:6.2f}  psnr {psnr} dB",
                  file=sys.stderr, flush=True)
        curves[family] = curve

    report = {
        "script": "bench/baselines_lossy.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "data": str(args.data),
        "n_images": len(images),
        "first_image": paths[0].name,
        "last_image": paths[-1].name,
        "unavailable": unavailable,
        "versions": baselines.library_versions(),
        "seconds": time.perf_counter() - start,
        "curves": curves,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
