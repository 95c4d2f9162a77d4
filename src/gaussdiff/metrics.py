"""Distances between sample sets, one definition for tests and benchmarks alike."""

from __future__ import annotations

import numpy as np
import ot
import torch

from .errors import InputError


def sliced_w2(x, y, n_projections: int = 500, seed: int = 0) -> float:
    """SW2 = sqrt(mean over random unit directions theta of W2^2(<x, theta>, <y, theta>)), in the data's units.

    Computed by POT's ``sliced_wasserstein_distance`` (p = 2) between equal-size sets (N, D). In one dimension every
    direction is +-1, so SW2 is W2 itself, sqrt(mean((sort x - sort y)^2)) for equal sizes, computed so (exactly, and
    without POT's 500 projections).
    """
    x, y = (np.asarray(torch.as_tensor(a).detach().cpu().double()) for a in (x, y))
    if x.ndim != 2 or x.shape != y.shape:
        raise InputError(f"sliced W2 needs two sets of equal shape (N, D), got {x.shape} and {y.shape}")
    if n_projections < 500:
        raise InputError("sliced W2 uses at least 500 directions")
    if x.shape[1] == 1:
        return float(np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2)))
    return float(ot.sliced_wasserstein_distance(x, y, n_projections=n_projections, p=2, seed=seed))
