"""Draw one file decoded at several prefixes: the picture at the top of the README.

    python bench/truncation_series.py --image examples/images/cifar10-test-00000.png \
        --out docs/truncation-series.png

Encodes the image once, then decodes the same stream at each t (mean reconstruction x̂_0,
and the exact image at t = 0) and at the partial points inside the exact stage after the
stages given by --stages (x_0 exact on those stages, predicted on the rest), labelling each
panel with the size of the file cut after that point (header and table included) and its RMSE.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from diffcodec.codec import EXACT_METHODS, CodecConfig, decode, encode
from diffcodec.container import keep_points
from diffcodec.images import load_image
from diffcodec.models.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="examples/images/cifar10-test-00000.png")
    ap.add_argument("--model", default=None)
    ap.add_argument("--ts", default="700,500,350,220,130,70,30")
    ap.add_argument("--stages", default="2,3,4", help="partial points to show: exact-stage stages decoded")
    ap.add_argument("--exact-method", default=CodecConfig.exact_method, choices=list(EXACT_METHODS),
                    help="coarse: the coarse-to-fine exact stage (its stages 1–6 code bins, 7–12 values)")
    ap.add_argument("--out", default="docs/truncation-series.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(args.model)
    img = load_image(args.image)
    config = CodecConfig(exact_method=args.exact_method)
    result = encode(img.pixels, img.mode, model, config)
    bits_at = {s.t: s.bits for s in result.lossy_steps}  # the size of the file cut right after each step
    # The same stream with every candidate a point, to decode at partial points the default table does not
    # hold; the sizes shown are the default file's (result.steps), as in the RD tables.
    every = encode(img.pixels, img.mode, model, replace(config, points=1000)).file
    ts = [int(t) for t in args.ts.split(",")]
    stages = [int(k) for k in args.stages.split(",") if k]
    panels = [("t", t) for t in ts] + [("stages", k) for k in stages] + [("exact", 0)]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(1.6 * (len(panels) + 1), 2.1))
    for ax, (kind, value) in zip(axes, panels):
        if kind == "t":
            dec = decode(result.data, model, stop_at_t=value)
            title = f"t={dec.t}\n{bits_at[dec.t] // 8} B"
        elif kind == "stages":
            at = [k for k, p in enumerate(every.points, start=1) if p.partial][value - 1]
            dec = decode(keep_points(every, at), model)
            what = (f"bins {value}/6" if value <= 6 else f"bins, {value - 6}/6 values") if result.exact_method == "coarse" \
                else f"x_0 {100 * dec.partial:.0f}% exact"
            title = f"{what}\n{result.partial_steps[value - 1].bits // 8} B"
        else:
            dec = decode(result.data, model)
            title = f"exact\n{len(result.data)} B"
        rmse = float(np.sqrt(np.mean((dec.pixels.astype(float) - img.pixels) ** 2)))
        ax.imshow(dec.pixels.squeeze())
        ax.set_title(title + (f", RMSE {rmse:.1f}" if kind != "exact" else ""), fontsize=7)
    axes[-1].imshow(img.pixels.squeeze())
    axes[-1].set_title("original", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
