"""Step grids: strictly decreasing sequences of t (our index) that end at t = 0.

``linspace``, ``leading`` and ``trailing`` reproduce diffusers' ``timestep_spacing`` for K steps
(diffusers' timestep i is our t = i + 1), followed by a final step to t = 0.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

SPACINGS = ("linspace", "leading", "trailing")


def timestep_grid(T: int, steps: int, spacing: str = "trailing") -> torch.Tensor:
    """K = ``steps`` network evaluations from t <= T down to 0; float64 (K + 1,)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= T:
        raise InputError(f"steps must be an integer in [1, {T}], got {steps!r}")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, steps).round()[::-1]
    elif spacing == "leading":
        ts = (np.arange(steps) * (T // steps)).round()[::-1]
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / steps)) - 1
    else:
        raise InputError(f"unknown timestep spacing {spacing!r}; known: {', '.join(SPACINGS)}")
    grid = torch.cat([torch.as_tensor(ts.copy(), dtype=torch.float64) + 1, torch.zeros(1, dtype=torch.float64)])
    return check_grid(grid, T)


def check_grid(grid, T: int) -> torch.Tensor:
    """A user-given grid must be finite, strictly decreasing, inside [0, T] and end at 0."""
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() < 2:
        raise InputError("a step grid needs at least two times (a start and the final 0)")
    if not torch.isfinite(grid).all() or grid[0] > T or grid[-1] != 0:
        raise InputError(f"a step grid must start at most at T = {T} and end at 0")
    if not (grid[1:] < grid[:-1]).all():
        raise InputError("a step grid must be strictly decreasing (two steps collide)")
    return grid
