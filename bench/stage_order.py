"""Which order of the exact stage's stages gives better previews, and at what lossless cost (a design study).

    python bench/stage_order.py --data ../shared/data/cifar10-test-png --limit 16 --t 31

The exact stage codes x_0 in six stages.  Format version 4 orders them *pass first* (checkerboard
pass 1 channel R, G, B, then pass 2 R, G, B); the alternative is *channel first* (R pass 1, R pass 2,
then G, then B).  A partial truncation point after a stage shows the decoded subpixels exact and the
rest predicted, so the order decides what a prefix looks like.  This script compares the two under
the same *linear* model (not the shipped learned stage): each subpixel's residual x_0 − x̂_0 is
predicted by least squares, pooled over the images, from the residuals already known in every
channel (the same pixel, the mean of its 4-neighbours, of its 4 diagonal neighbours and of the ring
of 8 at distance √5, wherever those are known); each stage is coded with the discretized Gaussian of
that mean and the best of the codec's 16 scales.  For each order it prints, after each stage, the
cumulative bits/dim of the exact stage and the RMSE of the image shown there (the undecoded
subpixels predicted stage by stage from what is known and predicted before them).

x_t ~ q(x_t | x_0) is drawn once per image at paper timestep --t (the codec's exact stage starts at
t = 11–95 on CIFAR-10, median 35).  The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from diffcodec.exact import EXACT_SCALES, stage_bits
from diffcodec.images import load_folder_tiles
from diffcodec.likelihood import images_to_model_space
from diffcodec.models.checkpoint import load_model

ORDERS = {
    "pass_first": [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)],  # (channel, pass): format version 4
    "channel_first": [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)],
}
NEAR = ((-1, 0), (1, 0), (0, -1), (0, 1))  # the other pass
DIAG = ((-1, -1), (-1, 1), (1, -1), (1, 1))  # the same pass
RING = ((-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (1, -2), (-1, 2), (1, 2))  # the other pass


def window_mean(a: np.ndarray, offsets) -> np.ndarray:
    """Mean over ``offsets`` of a[..., y + dy, x + dx] (images (n, H, W)), outside the image not counted."""
    n, h, w = a.shape
    pa, pm = np.pad(a, ((0, 0), (2, 2), (2, 2))), np.pad(np.ones((h, w)), 2)
    total, count = np.zeros_like(a), np.zeros((h, w))
    for dy, dx in offsets:
        total += pa[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
        count += pm[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    return total / np.maximum(count, 1)


def features(r: np.ndarray, known: np.ndarray, first: np.ndarray, channel: int, second: bool) -> np.ndarray:
    """(n, pixels of the stage, k) features of one stage from residuals r (n, 3, H, W) where ``known`` (3, 2)."""
    sel = ~first if second else first
    p, q = int(second), 1 - int(second)  # this pass, the other one
    cols = []
    for j in range(3):
        if known[j, p]:
            cols.append(r[:, j][:, sel])  # the same pixel
            cols.append(window_mean(np.where(sel, r[:, j], 0.0), DIAG)[:, sel] * 2)  # about half the diagonals are in
        if known[j, q]:
            other = np.where(~sel, r[:, j], 0.0)
            cols.append(window_mean(other, NEAR)[:, sel])
            cols.append(window_mean(other, RING)[:, sel])
    return np.stack(cols, axis=2) if cols else np.zeros((r.shape[0], int(sel.sum()), 0))


def run_order(order, pixels, mu, sd, first):
    """Bits per stage and the RMSE shown after each stage, for one order (pooled least squares per stage)."""
    n = len(pixels)
    r_true = pixels - mu  # (n, 3, H, W) pixel units
    known = np.zeros((3, 2), dtype=bool)
    weights, bits = [], []
    for channel, second in order:
        sel = ~first if second else first
        f = features(r_true, known, first, channel, second)
        y = r_true[:, channel][:, sel]
        w = np.linalg.lstsq(f.reshape(-1, f.shape[2]), y.reshape(-1), rcond=None)[0] if f.shape[2] else np.zeros(0)
        weights.append(w)
        mean = (mu[:, channel][:, sel] + f @ w).reshape(-1)
        per_scale = stage_bits(pixels[:, channel][:, sel].reshape(-1), mean, sd[:, channel][:, sel].reshape(-1), EXACT_SCALES)
        bits.append(float(per_scale.min()) + 4 * n)
        known[channel, int(second)] = True
    rmse = []
    for k in range(len(order) + 1):  # after k stages decoded, the rest predicted stage by stage
        r = np.zeros_like(r_true)
        known = np.zeros((3, 2), dtype=bool)
        for s, ((channel, second), w) in enumerate(zip(order, weights)):
            sel = ~first if second else first
            if s < k:
                r[:, channel][:, sel] = r_true[:, channel][:, sel]
            else:
                pred = np.clip(np.rint(mu[:, channel][:, sel] + features(r, known, first, channel, second) @ w), 0, 255)
                r[:, channel][:, sel] = pred - mu[:, channel][:, sel]
            known[channel, int(second)] = True
        rmse.append(float(np.sqrt(np.mean((r - r_true) ** 2))))
    return bits, rmse


def noised_states(model, data: str, limit: int, paper_t: int):
    """x_0, x_t ~ q(x_t | x_0) drawn once (seed 0) at paper timestep ``paper_t``, the model's x̂_0, and ᾱ_t.

    Tensors (n, 3, H, W) in model space; shared by the exact-stage design studies.
    """
    x0 = images_to_model_space(load_folder_tiles(data, limit=limit))
    d = model.diffusion
    i = paper_t - 1
    gen = torch.Generator().manual_seed(0)
    t = torch.full((len(x0),), i)
    with torch.no_grad():
        x_t = d.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        eps, var_out = model(x_t.float(), t)
        xhat = d.p_mean_variance(x_t, t, eps, var_out, model.variance)["pred_xstart"]
    return x0, x_t, xhat, float(d.alphas_cumprod[i])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--t", type=int, default=31, help="paper timestep of the state the exact stage starts from")
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    x0, x_t, xhat, abar = noised_states(model, args.data, args.limit, args.t)
    pixels = torch.round((x0 + 1) * 127.5).double().numpy()
    mu = ((xhat.double() + 1) * 127.5).numpy()
    sd = np.full_like(mu, 127.5 * math.sqrt((1 - abar) / abar))
    h, w = pixels.shape[2:]
    yy, xx = np.mgrid[:h, :w]
    first = (yy + xx) % 2 == 0
    dims = pixels.size
    out = {"t": args.t, "images": len(pixels), "orders": {}}
    for name, order in ORDERS.items():
        bits, rmse = run_order(order, pixels, mu, sd, first)
        cum = np.cumsum(bits) / dims
        out["orders"][name] = {"stages": ["RGB"[c] + f" pass {p + 1}" for c, p in order], "bpd": float(cum[-1]),
                               "cumulative_bpd": [0.0] + [float(v) for v in cum], "rmse": rmse}
        print(f"{name}: exact stage {cum[-1]:.3f} bits/dim; after each stage (bits/dim of the exact stage, RMSE):")
        for label, b, e in zip(["x̂_0"] + out["orders"][name]["stages"], [0.0] + list(cum), rmse):
            print(f"  {label:<10} {b:6.3f}  {e:6.2f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
