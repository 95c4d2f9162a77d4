"""Euler and Heun on the probability-flow ODE in EDM form (Karras et al. 2022, Algorithm 1 with S_churn = 0).

In the variance-exploding variables y = x / sqrt(abar) and sigma = sqrt((1 - abar) / abar), the ODE is
    dy / dsigma = (y - D(y; sigma)) / sigma,   D(y; sigma) = denoiser(x_t = y sqrt(abar), t),
with t the grid time of sigma (any grid; a Karras grid is the natural one). A step from sigma_t to sigma_s:
    Euler: y_s = y_t + (sigma_s - sigma_t) d_t,   d_t = (y_t - D(y_t; sigma_t)) / sigma_t;
    Heun:  y' = the Euler step, d' = (y' - D(y'; sigma_s)) / sigma_s,  y_s = y_t + (sigma_s - sigma_t) (d_t + d') / 2.
The last step, to sigma = 0, is Euler: y_0 = D(y_t; sigma_t), so Heun makes 2K - 1 denoiser calls for K steps.
Euler with this update is DDIM (eta = 0) written in y: the same map, term by term.
Coefficients are float64 scalars, cast to x's dtype when applied; ``callback(s, x)`` sees x on the
variance-preserving scale, like every other sampler.
"""

from __future__ import annotations

import torch

from ..param import Denoiser
from ..schedule import NoiseSchedule
from .grids import check_grid


def _edm_denoiser(denoiser: Denoiser, schedule: NoiseSchedule):
    """D(y; t): the denoiser called on the variance-preserving x_t = y sqrt(abar_t) = y / sqrt(1 + sigma^2)."""

    def D(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return denoiser(y * schedule.alpha_bar_at(t).sqrt().to(y.dtype), t)

    return D


def _edm_ode(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, method: str,
             callback) -> torch.Tensor:
    """The EDM-form ODE over ``grid`` by ``method``, 'euler' or 'heun' (module doc)."""
    grid = check_grid(grid, schedule.T)
    D = _edm_denoiser(denoiser, schedule)
    sigmas = schedule.sigma_at(grid)
    y = x_T / schedule.alpha_bar_at(grid[0]).sqrt().to(x_T.dtype)
    for t, s, sigma_t, sigma_s in zip(grid[:-1], grid[1:], sigmas[:-1], sigmas[1:]):
        if s > 0:
            d = (y - D(y, t)) / sigma_t.to(y.dtype)
            dsigma = (sigma_s - sigma_t).to(y.dtype)
            y_euler = y + dsigma * d
            if method == "heun":
                d_s = (y_euler - D(y_euler, s)) / sigma_s.to(y.dtype)
                y = y + dsigma * (d + d_s) / 2
            else:
                y = y_euler
        else:
            y = D(y, t)  # y_t + (0 - sigma_t) (y_t - D) / sigma_t = D
        if callback is not None:
            callback(s, y * schedule.alpha_bar_at(s).sqrt().to(y.dtype))
    return y


def euler(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
          callback=None) -> torch.Tensor:
    """Euler over ``grid`` in EDM form (deterministic; ``generator`` is unused). One call per step."""
    return _edm_ode(denoiser, x_T, schedule, grid, method="euler", callback=callback)


def heun(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
         callback=None) -> torch.Tensor:
    """Heun's second-order method over ``grid`` in EDM form (deterministic); 2K - 1 calls for K steps."""
    return _edm_ode(denoiser, x_T, schedule, grid, method="heun", callback=callback)
