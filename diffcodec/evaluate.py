"""Likelihood over a dataset: the figure ``diffcodec nll`` reports."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .likelihood import images_to_model_space, negative_elbo
from .tiling import TileLayout


def dataset_bpd(
    model,
    images: np.ndarray,
    steps: int = 100,
    batch_size: int = 64,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    spacing: str = "uniform",
    masks: np.ndarray | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Mean negative ELBO (bits/dim) of uint8 (N, H, W, 3) images with ``steps`` respaced steps.

    Returns ``bpd`` and its breakdown ``prior`` (L_T), ``steps`` (Σ L_{t−1}) and ``decoder`` (L_0), and
    ``per_image``, each image's bound in bits/dim.  With ``masks`` (bool (N, 3, H, W), the model's layout)
    only those dimensions count, each image weighted by how many it has: the real pixels of padded tiles.
    ``on_batch`` is told the images of each batch done, ``on_step`` those of each step of each batch.
    """
    diffusion = model.diffusion.spaced(steps, spacing)
    gen = torch.Generator().manual_seed(seed)
    totals = {"prior": 0.0, "steps": 0.0, "decoder": 0.0}
    per_step = np.zeros(max(diffusion.num_steps - 1, 0))
    per_image = []
    weights_all = (np.full(len(images), float(np.prod(images.shape[1:]))) if masks is None
                   else masks.reshape(len(masks), -1).sum(axis=1).astype(np.float64))
    for start in range(0, len(images), batch_size):
        x = images_to_model_space(images[start : start + batch_size])
        mask = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks[start : start + batch_size]))
        progress = _calls(on_step, len(x), diffusion.num_steps) if on_step is not None else None
        terms = negative_elbo(model, diffusion, model.variance, x, generator=gen, progress=progress, mask=mask)
        w = torch.from_numpy(weights_all[start : start + len(x)])
        totals["prior"] += float((terms.prior * w).sum())
        totals["steps"] += float((terms.steps.sum(dim=1) * w).sum())
        totals["decoder"] += float((terms.decoder * w).sum())
        per_step += (terms.steps * w[:, None]).sum(dim=0).numpy()
        per_image += terms.total.tolist()
        if on_batch is not None:
            on_batch(len(x))
    n = float(weights_all.sum())
    out = {k: v / n for k, v in totals.items()}
    out["bpd"] = out["prior"] + out["steps"] + out["decoder"]
    out["per_step"] = (per_step / n).tolist()
    out["per_image"] = per_image
    out["timesteps"] = [int(t) for t in diffusion.timesteps]
    out["images"] = len(images)
    out["num_steps"] = diffusion.num_steps
    return out


def _calls(callback: Callable[[int], None], size: int, count: int):
    """An iterator that tells ``callback`` ``size`` on each of its ``count`` steps (negative_elbo's progress)."""
    for _ in range(count):
        callback(size)
        yield None


def tiled_bpd(model, images: Sequence[tuple[np.ndarray, str]], steps: int = 100, batch_size: int = 64, seed: int = 0,
              spacing: str = "uniform", on_step: Callable[[int], None] | None = None) -> dict:
    """The negative ELBO of images of any size, cut into 32×32 model tiles as the codec cuts them.

    ``images`` are (uint8 (H, W, C) pixels, mode) pairs.  Each image is split by
    :class:`~diffcodec.tiling.TileLayout` (grey and alpha planes as replicated tiles, padding repeating the
    edge); the bound counts only the tiles' real dimensions (the codec never codes padding), so
    ``bpd`` is bits per coded dimension, which for RGB images is per subpixel, like a file's bits/dim.
    Returns :func:`dataset_bpd`'s dict, with ``tiles`` and, per image, ``image_bits`` (its bound in bits)
    and ``image_bpd`` (per coded dimension), in the order given.
    """
    tiles, masks, owner = [], [], []
    for k, (pixels, mode) in enumerate(images):
        layout = TileLayout(pixels.shape[0], pixels.shape[1], mode)
        tiles.append(layout.split(pixels))
        masks.append(layout.real_mask())
        owner += [k] * layout.num_tiles
    all_tiles = np.concatenate(tiles).transpose(0, 2, 3, 1)  # (N, 32, 32, 3) as dataset_bpd takes them
    all_masks = np.concatenate(masks)
    out = dataset_bpd(model, all_tiles, steps=steps, batch_size=batch_size, seed=seed, spacing=spacing,
                      masks=all_masks, on_step=on_step)
    dims = all_masks.reshape(len(all_masks), -1).sum(axis=1)
    bits = np.zeros(len(images))
    real = np.zeros(len(images))
    np.add.at(bits, owner, np.asarray(out.pop("per_image")) * dims)
    np.add.at(real, owner, dims)
    out["tiles"] = len(all_tiles)
    out["images"] = len(images)
    out["image_bits"] = bits.tolist()
    out["image_bpd"] = (bits / real).tolist()
    return out
