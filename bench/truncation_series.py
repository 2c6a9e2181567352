"""Draw one file decoded at several prefixes: the picture at the top of the README.

    python bench/truncation_series.py --image examples/images/cifar10-test-00000.png \
        --out docs/truncation-series.png

Encodes the image once, then decodes the same stream at each t (mean reconstruction x̂_0,
and the exact image at t = 0), labelling each panel with the size of the file cut after that
step (header and table included) and its RMSE.
"""

from __future__ import annotations

import argparse

import numpy as np

from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.images import load_image
from diffcodec.models.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="examples/images/cifar10-test-00000.png")
    ap.add_argument("--model", default=None)
    ap.add_argument("--ts", default="700,500,350,220,130,70,30,0")
    ap.add_argument("--out", default="docs/truncation-series.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(args.model)
    img = load_image(args.image)
    result = encode(img.pixels, img.mode, model, CodecConfig())
    bits_at = {s.t: s.bits for s in result.steps}  # the size of the file cut right after each step
    ts = [int(t) for t in args.ts.split(",")]
    fig, axes = plt.subplots(1, len(ts) + 1, figsize=(1.6 * (len(ts) + 1), 2.1))
    for ax, t in zip(axes, ts):
        dec = decode(result.data, model, stop_at_t=t)
        size = bits_at[dec.t] // 8
        rmse = float(np.sqrt(np.mean((dec.pixels.astype(float) - img.pixels) ** 2)))
        ax.imshow(dec.pixels.squeeze())
        ax.set_title(f"t={dec.t}\n{size} B, RMSE {rmse:.1f}" if t else f"exact\n{size} B", fontsize=7)
    axes[-1].imshow(img.pixels.squeeze())
    axes[-1].set_title("original", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
