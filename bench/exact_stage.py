"""Cost of coding x_0 directly from x_t, against the ELBO's remaining terms (docs/codec.md).

    python bench/exact_stage.py --data ../shared/data/cifar10-test-png --limit 16 --steps 100

For each start state x_t of the respaced chain, x_t ~ q(x_t | x_0) is drawn once per image and
x_0 is scored under the discretized Gaussian N(x̂_0(x_t), (c·σ_t)²), σ_t = √((1−ᾱ_t)/ᾱ_t)
(at x_1 the model's own mean and variance, Eq. 13), with the best c of the codec's 16 scales.
That is compared with L_0 + Σ_{s ≤ t} L_{s−1} from one ELBO estimate on the same images, and with
the exact stage of format version 3 (``predicted_bpd``: checkerboard and channel residual prediction,
diffcodec/exact.py, side information included), the learned exact stage of version 4 (``learned_bpd``:
the model's context network, side information included; when the model has one), the coarse-to-fine stage
(``coarse_bpd``, and ``coarse_bins_bpd`` for its six bin stages alone: what a prefix that shows every subpixel
to within its bin costs; when the model has a coarse-to-fine network), and the correlations of the residuals x_0 − x̂_0
between horizontal neighbours and between channels (R–G, R–B, G–B) that the prediction exploits.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from diffcodec import exact
from diffcodec.entropy import pixel_gaussian_params
from diffcodec.exact import EXACT_SCALES
from diffcodec.images import load_folder_tiles
from diffcodec.likelihood import images_to_model_space, negative_elbo
from diffcodec.losses import discretized_gaussian_log_likelihood
from diffcodec.models.checkpoint import load_model
from diffcodec.tiling import TileLayout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--spacing", default="uniform", choices=["uniform", "quad"])
    ap.add_argument("--indices", default="0,1,2,3,5", help="chain indices of the start states")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    x0 = images_to_model_space(load_folder_tiles(args.data, limit=args.limit))
    n, dims = len(x0), x0[0].numel()
    d = model.diffusion.spaced(args.steps, args.spacing)
    gen = torch.Generator().manual_seed(0)
    elbo = negative_elbo(model, d, model.variance, x0, generator=gen)
    steps = elbo.steps.mean(0).numpy()
    decoder = float(elbo.decoder.mean())
    rows = []
    for i in (int(v) for v in args.indices.split(",")):
        t = torch.full((n,), i)
        x_t = d.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        eps, var_out = model(x_t, d.model_timesteps(t))
        p = d.p_mean_variance(x_t, t, eps, var_out, model.variance)
        if i == 0:
            mean, log_var = p["mean"], p["log_variance"]
        else:
            mean = p["pred_xstart"]
            log_var = torch.full_like(x0, math.log((1 - d.alphas_cumprod[i]) / d.alphas_cumprod[i]))
        bits = [float(-discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var + math.log(c)).sum()) / (n * dims * math.log(2))
                for c in EXACT_SCALES]
        best = int(np.argmin(bits))
        planes = exact.ExactLayout(TileLayout(x0.shape[2], x0.shape[3], "RGB"))
        pixels = torch.round((x0 + 1) * 127.5).numpy()
        predicted, learned, coarse, coarse_bins = 0.0, 0.0, 0.0, 0.0
        abar = float(d.alphas_cumprod[i])
        for j in range(n):
            mu, sd = pixel_gaussian_params(mean[j].double().numpy().reshape(-1), log_var[j].double().numpy().reshape(-1))
            predicted += exact.plan(planes, planes.planes(pixels[j].reshape(-1)), planes.planes(mu), planes.planes(sd)).bits
            if model.context is not None:
                hwc = lambda a: a.double().numpy().transpose(1, 2, 0)  # noqa: E731
                inputs = exact.ContextInputs(xhat=hwc(p["pred_xstart"][j]), y=hwc(x_t[j]) / math.sqrt(abar),
                                             sigma=math.sqrt((1 - abar) / abar))
                learned += exact.plan_learned(planes, model.context, [pixels[j].transpose(1, 2, 0)], inputs).bits
            if model.coarse is not None:
                plan = exact.plan_coarse(planes, model.coarse, [pixels[j].transpose(1, 2, 0)], inputs)
                coarse += plan.bits
                coarse_bins += sum(plan.stage_bits[:6])
        r = ((x0 - mean) * 127.5).double().numpy()  # residuals x_0 − x̂_0, pixel units, (n, 3, 32, 32)
        horizontal = float(np.corrcoef(r[..., :-1].ravel(), r[..., 1:].ravel())[0, 1])
        channels = np.corrcoef(r.transpose(1, 0, 2, 3).reshape(3, -1))
        rows.append({"t": int(d.timesteps[i]) + 1, "direct_bpd": bits[best], "scale": float(EXACT_SCALES[best]),
                     "residual_corr_horizontal": horizontal,
                     "residual_corr_channels": [float(channels[0, 1]), float(channels[0, 2]), float(channels[1, 2])],
                     "predicted_bpd": predicted / (n * dims),
                     "learned_bpd": learned / (n * dims) if model.context is not None else None,
                     "coarse_bpd": coarse / (n * dims) if model.coarse is not None else None,
                     "coarse_bins_bpd": coarse_bins / (n * dims) if model.coarse is not None else None,
                     "elbo_tail_bpd": decoder + float(steps[:i].sum())})
        print(f"x_{rows[-1]['t']}: direct {bits[best]:.3f} bits/dim (c={EXACT_SCALES[best]:.2f}), "
              f"with residual prediction {rows[-1]['predicted_bpd']:.3f}, learned {rows[-1]['learned_bpd'] or float('nan'):.3f}, "
              f"coarse-to-fine {rows[-1]['coarse_bpd'] or float('nan'):.3f} (bins {rows[-1]['coarse_bins_bpd'] or float('nan'):.3f}), "
              f"ELBO's remaining terms {rows[-1]['elbo_tail_bpd']:.3f}")
    print(json.dumps({"negative_elbo_bpd": float(elbo.total.mean()), "rows": rows}))


if __name__ == "__main__":
    main()
