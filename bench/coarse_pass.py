"""A coarse pass before the exact stage: previews at 1–2 bits/dim, at what lossless cost (a design study).

    python bench/coarse_pass.py --data ../shared/data/cifar10-test-png --limit 16 --t 31

Today a prefix cut inside the exact stage shows some subpixels exact and predicts the rest, so its
RMSE falls roughly linearly with rate and classical codecs beat it at 1.5–2 bits/dim (BENCHMARKS.md).
The alternative studied here codes every subpixel in two parts: first its *bin* (x // w, bins of w
levels) over the whole image, stage by stage, then its value inside the bin.  After the coarse pass
every subpixel is known to within w levels, so the preview's error is about w/√12 everywhere.

Nothing is retrained: both passes use the shipped context network and the exact stage's six
stages.  The coarse pass codes bin b of each subpixel with P_C(b), the network's discretized
Gaussian given the *bin reconstructions* of the subpixels coded before it (their conditional means);
the fine pass codes x with P_E(x) / P_E(b), the network's distribution given the *exact* earlier
subpixels (today's learned stage), restricted to the known bin.  So the lossless stage costs
today's Σ −log₂ P_E(x) plus the overhead Σ log₂ P_E(b) − log₂ P_C(b), which a network trained with
the bins as an input could shrink.  Each stage takes the best of the learned stage's 16 scale
corrections, 4 bits each, as the format would.

x_t ~ q(x_t | x_0) is drawn once per image at paper timestep --t (the codec's exact stage starts at
t = 11–95 on CIFAR-10, median 35).  Per bin width it prints the coarse pass's bits/dim and the RMSE
after it, the lossless stage with and without the coarse pass, and the RMSE after each coarse
stage (the first figure: x̂_0 alone).  The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from diffcodec.exact import CONTEXT_SCALES, ContextInputs, ExactLayout, _context_outputs, _learned_params, stage_bits
from diffcodec.models.checkpoint import load_model
from diffcodec.tiling import TileLayout
from stage_order import noised_states  # bench/ is on sys.path when run as python bench/coarse_pass.py


def integer_probs(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """(n, 256) probabilities of 0..255 under the discretized Gaussian (edge bins take the tails)."""
    edges = torch.arange(-0.5, 256.0, 1.0, dtype=torch.float64)
    edges[0], edges[-1] = -math.inf, math.inf
    z = (edges[None, :] - torch.from_numpy(mean)[:, None]) / torch.from_numpy(sd)[:, None]
    cdf = torch.special.ndtr(z)
    return (cdf[:, 1:] - cdf[:, :-1]).clamp_min(1e-15).numpy()


def bin_stats(x: np.ndarray, p: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Bits of each subpixel's bin under p, and the conditional mean of its bin (the preview value)."""
    n = len(x)
    pb = p.reshape(n, -1, w)  # w divides 256
    b = x // w
    mass = pb.sum(axis=2)[np.arange(n), b]
    levels = np.arange(256, dtype=np.float64).reshape(-1, w)
    cond = (pb * levels[None]).sum(axis=2)[np.arange(n), b] / mass
    return -np.log2(np.maximum(mass, 1e-15)), cond


def best_scale_bits(per_scale_bits) -> tuple[int, float]:
    k = int(np.argmin(per_scale_bits))
    return k, float(per_scale_bits[k]) + 4


def study(net, layout: ExactLayout, pixels: np.ndarray, inputs: ContextInputs, w: int) -> dict:
    """One image (H, W, 3) uint8: bits of today's stage, of the coarse and fine passes, and coarse previews."""
    stages = [s for s in layout.stages if s.plane == 0]
    r_exact = (pixels.astype(np.float64) - inputs.mu) / inputs.sigma_pixels
    recon = np.clip(np.rint(inputs.mu), 0, 255)  # what a decoder shows: predictions until coded
    r_coarse = np.zeros_like(r_exact)
    today = coarse = overhead = 0.0
    rmse_after = [float(np.sqrt(np.mean((recon - pixels) ** 2)))]  # x̂_0 alone, then after each coarse stage
    for stage in stages:
        sel, c = layout.selection(stage), stage.channel
        x = pixels[..., c][sel].astype(np.int64)
        known = np.zeros(r_exact.shape, dtype=bool)
        for s in stages[: stages.index(stage)]:
            known[..., s.channel] |= layout.selection(s)
        (de, le), = _context_outputs(net, layout, inputs, [np.where(known, r_exact, 0.0)], [stage])
        (dc, lc), = _context_outputs(net, layout, inputs, [np.where(known, r_coarse, 0.0)], [stage])
        mean_e, sd_e = _learned_params(layout, stage, inputs, de, le, 1.0)
        mean_c, sd_c = _learned_params(layout, stage, inputs, dc, lc, 1.0)
        ke, bits_e = best_scale_bits(stage_bits(x, mean_e, sd_e, CONTEXT_SCALES))
        today += bits_e
        # Coarse pass: the best scale for the bins under the coarse-context distribution.
        per = [bin_stats(x, integer_probs(mean_c, sd_c * s), w)[0].sum() for s in CONTEXT_SCALES]
        kc, bits_c = best_scale_bits(per)
        _, cond = bin_stats(x, integer_probs(mean_c, sd_c * CONTEXT_SCALES[kc]), w)
        coarse += bits_c
        # Fine pass: today's distribution restricted to the bin costs −log₂ P_E(x) + log₂ P_E(b).
        pe_bin, _ = bin_stats(x, integer_probs(mean_e, sd_e * CONTEXT_SCALES[ke]), w)
        overhead += float(pe_bin.sum())  # bits the fine pass saves; the coarse pass paid bits_c for them
        r_coarse[..., c][sel] = (cond - inputs.mu[..., c][sel]) / inputs.sigma_pixels
        recon[..., c][sel] = cond
        rmse_after.append(float(np.sqrt(np.mean((recon - pixels) ** 2))))
    fine = today - overhead
    return {"today": today, "coarse": coarse, "fine": fine, "rmse_after": rmse_after,
            "se": float(np.sum((recon - pixels) ** 2.0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--t", type=int, default=31, help="paper timestep of the state the exact stage starts from")
    ap.add_argument("--widths", default="4,8,16,32")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if model.context is None:
        raise SystemExit("the model has no context network")
    x0, x_t, xhat, abar = noised_states(model, args.data, args.limit, args.t)
    pixels = torch.round((x0 + 1) * 127.5).to(torch.uint8).numpy().transpose(0, 2, 3, 1)
    hwc = lambda a: a.double().numpy().transpose(0, 2, 3, 1)  # noqa: E731
    xhat_np, y_np = hwc(xhat), hwc(x_t) / math.sqrt(abar)
    h, w = pixels.shape[1:3]
    layout = ExactLayout(TileLayout(h, w, "RGB"))
    dims = pixels.size
    out = {"t": args.t, "images": len(pixels), "widths": {}}
    for width in (int(v) for v in args.widths.split(",")):
        rows = [study(model.context, layout, px, ContextInputs(xhat=xh, y=yy, sigma=math.sqrt((1 - abar) / abar)), width)
                for px, xh, yy in zip(pixels, xhat_np, y_np)]
        today = sum(r["today"] for r in rows) / dims
        coarse = sum(r["coarse"] for r in rows) / dims
        fine = sum(r["fine"] for r in rows) / dims
        rmse = math.sqrt(sum(r["se"] for r in rows) / dims)
        per_stage = [float(np.sqrt(np.mean([r["rmse_after"][k] ** 2 for r in rows]))) for k in range(len(rows[0]["rmse_after"]))]
        out["widths"][width] = {"today_bpd": today, "coarse_bpd": coarse, "fine_bpd": fine,
                                "lossless_bpd": coarse + fine, "overhead": (coarse + fine) / today - 1,
                                "rmse_after_coarse": rmse, "rmse_after_each_coarse_stage": per_stage}
        print(f"w = {width:2d}: coarse pass {coarse:.3f} bits/dim → RMSE {rmse:.2f}; lossless stage {coarse + fine:.3f} "
              f"against {today:.3f} today ({100 * ((coarse + fine) / today - 1):+.1f}%); RMSE after each coarse stage "
              + " ".join(f"{v:.2f}" for v in per_stage))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
