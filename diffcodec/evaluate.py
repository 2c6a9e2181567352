"""Likelihood over a dataset: the figure ``diffcodec nll`` reports."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .likelihood import images_to_model_space, negative_elbo


def dataset_bpd(
    model,
    images: np.ndarray,
    steps: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    spacing: str = "uniform",
) -> dict:
    """Mean negative ELBO (bits/dim) of uint8 (N, H, W, 3) images with ``steps`` respaced steps.

    Returns ``bpd`` and its breakdown ``prior`` (L_T), ``steps`` (Σ L_{t−1}) and ``decoder`` (L_0).
    """
    diffusion = model.diffusion.spaced(steps, spacing)
    gen = torch.Generator().manual_seed(seed)
    totals = {"prior": 0.0, "steps": 0.0, "decoder": 0.0}
    per_step = np.zeros(max(diffusion.num_steps - 1, 0))
    for start in range(0, len(images), batch_size):
        x = images_to_model_space(images[start : start + batch_size])
        terms = negative_elbo(model, diffusion, model.variance, x, generator=gen)
        totals["prior"] += float(terms.prior.sum())
        totals["steps"] += float(terms.steps.sum())
        totals["decoder"] += float(terms.decoder.sum())
        per_step += terms.steps.sum(dim=0).numpy()
        if on_batch is not None:
            on_batch(len(x))
    n = len(images)
    out = {k: v / n for k, v in totals.items()}
    out["bpd"] = out["prior"] + out["steps"] + out["decoder"]
    out["per_step"] = (per_step / n).tolist()
    out["timesteps"] = [int(t) for t in diffusion.timesteps]
    out["images"] = n
    out["num_steps"] = diffusion.num_steps
    return out
