"""Draw one file cut at several points with `truncate`: the picture at the top of the README.

    python bench/truncation_series.py --image examples/images/cifar10-test-00000.png \
        --out docs/truncation-series.png

Encodes the image once with the default settings (as `diffcodec encode` does), then for each T
of --ts runs what `diffcodec truncate --stop-at-t T` runs (container.truncate, no model) and
decodes the cut file as `diffcodec decode` does (mean reconstruction; the exact image at the
end), and for each size of --max-bytes what `truncate --max-bytes N` keeps. Each panel is
labelled with the t the cut file reaches, its real size in bytes and its RMSE (0–255).

--stages K,… shows partial points inside the exact stage (x_0 exact on its first K stages,
predicted on the rest): a default 32×32 file's table has no room for them, so those panels are
cut (truncate --max-bytes at the point's size) from the same image encoded with every candidate
a point (`encode --points 1000`), and their sizes include that larger table.
"""

from __future__ import annotations

import argparse

import numpy as np

from diffcodec.codec import EXACT_METHODS, CodecConfig, decode, encode
from diffcodec.container import (FLAG_COARSE_TO_FINE, chain_position, decode_file, describe, encode_file, fit_bytes,
                                 paper_timestep, truncate)
from diffcodec.images import load_image
from diffcodec.models.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="examples/images/cifar10-test-00000.png")
    ap.add_argument("--model", default=None)
    ap.add_argument("--ts", default="1000,650,450,300,150,80,50", help="--stop-at-t of each cut file")
    ap.add_argument("--max-bytes", default="", help="sizes of further cut files (truncate --max-bytes)")
    ap.add_argument("--stages", default="", help="partial points to show: exact-stage stages decoded (see above)")
    ap.add_argument("--exact-method", default=CodecConfig.exact_method, choices=list(EXACT_METHODS),
                    help="coarse: the coarse-to-fine exact stage (its partial points show bins first)")
    ap.add_argument("--out", default="docs/truncation-series.png")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_model(args.model)
    img = load_image(args.image)
    whole = encode(img.pixels, img.mode, model, CodecConfig(exact_method=args.exact_method)).data
    dfc = decode_file(whole)
    h = dfc.header
    cuts = [(f"--stop-at-t {t}", truncate(dfc, chain_position(h, int(t))), None) for t in args.ts.split(",") if t]
    cuts += [(f"--max-bytes {n}", fit_bytes(dfc, int(n)), None) for n in args.max_bytes.split(",") if n]
    if args.stages:
        config = CodecConfig(exact_method=args.exact_method, points=1000)
        every = decode_file(encode(img.pixels, img.mode, model, config).data)
        sizes = [p["bytes"] for p in describe(every)["points"] if "subpixels" in p]
        coarse = args.exact_method == "coarse"
        label = lambda k: (f"bins {k}/6" if k <= 6 else f"bins, {k - 6}/6 values") if coarse else None  # noqa: E731
        cuts += [(f"--points 1000, then --max-bytes {sizes[k - 1]}", fit_bytes(every, sizes[k - 1]), label(k))
                 for k in (int(v) for v in args.stages.split(","))]
    cuts.append(("whole file", dfc, None))
    fig, axes = plt.subplots(1, len(cuts) + 1, figsize=(1.6 * (len(cuts) + 1), 2.1))
    for ax, (how, cut, label) in zip(axes, cuts):
        data = encode_file(cut)
        dec = decode(data, model)
        rmse = float(np.sqrt(np.mean((dec.pixels.astype(float) - img.pixels) ** 2)))
        if label is not None:
            what = label
        elif dec.complete:
            what = "exact"
        elif dec.partial is not None:
            what = f"x_0 {100 * dec.partial:.0f}% " + ("decoded" if cut.header.flags & FLAG_COARSE_TO_FINE else "exact")
        else:
            what = f"t={paper_timestep(h, cut.points[-1].t)}"
        ax.imshow(dec.pixels.squeeze())
        ax.set_title(f"{what}\n{len(data)} B" + ("" if dec.complete else f", RMSE {rmse:.1f}"), fontsize=7)
        print(f"{how}: {len(data)} bytes, {what}, RMSE {rmse:.2f}")
    axes[-1].imshow(img.pixels.squeeze())
    axes[-1].set_title("original", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=150)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
