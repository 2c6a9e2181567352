"""Lossless bits/dim of the classical baselines on a folder of images, as JSON.

Codes every image with each available lossless baseline (PNG, WebP lossless,
JPEG XL lossless effort 9, JPEG-LS, lossless AVIF) and two lower-effort settings
that do better on tiny images (JPEG XL effort 7, WebP lossless method 4), checks
every round trip is exact, and reports rates from the real file sizes.

Example:
    python bench/baselines_lossless.py --data ../shared/data/cifar10-test-png \\
        --out bench/results/baselines_lossless.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from diffcodec import baselines
from diffcodec.images import IMAGE_SUFFIXES, load_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of images (sorted by name)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    args = parser.parse_args(argv)

    paths = sorted(p for p in args.data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.limit]
    if not paths:
        parser.error(f"no images in {args.data}")
    images = [load_image(p).pixels for p in paths]

    codecs = baselines.available_codecs(lossless=True)
    extras = [baselines.JPEGXL(lossless=True, effort=7), baselines.WebP(lossless=True, method=4)]
    codecs += [c for c in extras if type(c).available()]
    missing = [c.name for c in baselines.default_codecs(lossless=True) if not type(c).available()]

    results = []
    start = time.perf_counter()
    for codec in codecs:
        result = baselines.measure(codec, images)  # raises if a lossless setting is not exact
        results.append(result)
        print(f"{codec.name:24s} {result['rate_bpd']:.3f} bits/dim  exact={result['lossless_ok']}  "
              f"enc {result['encode_seconds']:.1f}s dec {result['decode_seconds']:.1f}s", file=sys.stderr, flush=True)

    report = {
        "script": "bench/baselines_lossless.py",
        "argv": sys.argv[1:] if argv is None else argv,
        "data": str(args.data),
        "n_images": len(images),
        "first_image": paths[0].name,
        "last_image": paths[-1].name,
        "unavailable": missing,
        "versions": baselines.library_versions(),
        "seconds": time.perf_counter() - start,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
