"""The mean of per-point values and its standard error, as every likelihood report gives it."""

from __future__ import annotations

import math

import torch


def mean_se(values: torch.Tensor) -> dict[str, float | None]:
    """{'mean': mean over the points, 'se': its standard error s / sqrt(N), s the sample std (None for N = 1)}."""
    se = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else None
    return {"mean": values.mean().item(), "se": se}
