"""Ancestral sampling: the seed's backward loop, with the learned reverse chain.

From x_T ~ N(0, I), for each pair t > s of the grid, draw x_s from
    p(x_s | x_t) = N(c_0 x0_hat(x_t, t) + c_t x_t, sigma^2 I)
with (c_0, c_t) the posterior coefficients of q(x_s | x_t, x_0) and the reverse variance either
    beta_tilde = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)   (posterior variance), or
    beta       = 1 - abar_t / abar_s                                (Ho et al.'s sigma^2 = beta_t).
On the full grid T, T-1, ..., 0 this is DDPM's Algorithm 2; on a sub-grid it is respaced DDPM.
The last step, to t = 0, returns the mean (no noise is added to the output).
"""

from __future__ import annotations

import torch

from ..chain import posterior_coefficients
from ..errors import InputError
from ..param import Denoiser
from ..schedule import NoiseSchedule
from .grids import check_grid

VARIANCES = ("beta_tilde", "beta")


def ddpm(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
         variance: str = "beta_tilde", callback=None) -> torch.Tensor:
    """Ancestral sampling over ``grid``; ``callback(t, x)`` sees every intermediate state."""
    if variance not in VARIANCES:
        raise InputError(f"unknown reverse variance {variance!r}; known: {', '.join(VARIANCES)}")
    grid = check_grid(grid, schedule.T)
    x = x_T
    for t, s in zip(grid[:-1], grid[1:]):
        ab_t, ab_s = schedule.alpha_bar_at(t), schedule.alpha_bar_at(s)
        c0, ct, var = posterior_coefficients(ab_t, ab_s)
        x0_hat = denoiser(x, t)
        x = c0.to(x.dtype) * x0_hat + ct.to(x.dtype) * x
        if s > 0:
            var = var if variance == "beta_tilde" else 1 - ab_t / ab_s
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + var.sqrt().to(x.dtype) * noise
        if callback is not None:
            callback(s, x)
    return x
