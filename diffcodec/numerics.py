"""How a format version computes the numbers its stream depends on (``StreamProfile.numerics`` picks one).

Versions 1–4 run the float networks and the math library's exp/log/sin/cos: a file decodes only where
the encoder's CPU, kernels and thread count are matched (the checks catch any difference).  Version 5
computes every such number exactly (:mod:`diffcodec.exactmath`, the integer networks of
models/intnet.py, normals from exact Box–Muller), so its files decode bit for bit on any machine, with
any thread count and batch size.  The codec asks the numerics, never the version, at each place where
the two differ; the header's :class:`~diffcodec.profile.StreamProfile` says which one a file uses.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from . import exactmath, rng


class FloatNumerics:
    """Format versions 1–4: exactly what those versions computed (their files must keep decoding)."""

    exact = False
    normals: Callable[[np.ndarray, int, int], np.ndarray] = staticmethod(rng.normals)

    @staticmethod
    def exp(a: np.ndarray) -> np.ndarray:
        return np.exp(a)

    @staticmethod
    def log(x: float) -> float:
        return math.log(x)

    @staticmethod
    def model(model):
        return model


class ExactNumerics:
    """Format version 5: the same bits on every machine."""

    exact = True
    normals: Callable[[np.ndarray, int, int], np.ndarray] = staticmethod(rng.normals_exact)

    @staticmethod
    def exp(a: np.ndarray) -> np.ndarray:
        return exactmath.numpy_float64(exactmath.exp, a)

    @staticmethod
    def log(x: float) -> float:
        return float(exactmath.log(torch.tensor([float(x)], dtype=torch.float64))[0])

    @staticmethod
    def model(model):
        """The model's integer form (``DiffusionModel.integer()``), built once per model."""
        return model.integer()


Numerics = FloatNumerics | ExactNumerics
FLOAT, EXACT = FloatNumerics(), ExactNumerics()
