"""Euler and Heun on the probability-flow ODE in EDM form (Karras et al. 2022, Algorithm 1 with S_churn = 0).

In the variance-exploding variables y = x / sqrt(abar) and sigma = sqrt((1 - abar) / abar), the ODE is
    dy / dsigma = (y - D(y; sigma)) / sigma,   D(y; sigma) = denoiser(x_t = y sqrt(abar), t),
with t the grid time of sigma (any grid; a Karras grid is the natural one). A step from sigma_t to sigma_s:
    Euler: y_s = y_t + (sigma_s - sigma_t) d_t,   d_t = (y_t - D(y_t; sigma_t)) / sigma_t;
    Heun:  y' = the Euler step, d' = (y' - D(y'; sigma_s)) / sigma_s,  y_s = y_t + (sigma_s - sigma_t) (d_t + d') / 2.
The last step, to sigma = 0, is Euler: y_0 = D(y_t; sigma_t), so Heun makes 2K - 1 denoiser calls for K steps.
Euler with this update is DDIM (eta = 0) written in y: the same map, term by term.
Coefficients are float64 Python floats (``grid_levels``). ``project(s, x)`` and ``callback(i, s, x, x0_hat)`` see
x = y sqrt(abar_s) on the variance-preserving scale, like every other sampler (the projected x is taken back to y);
Heun's x0_hat is its step's last denoiser output, D(y'; sigma_s).
"""

from __future__ import annotations

import torch

from ..param import Denoiser
from ..schedule import NoiseSchedule
from .grids import check_grid, grid_levels
from .spec import SamplerSpec


def _edm_ode(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, method: str, project,
             callback) -> torch.Tensor:
    """The EDM-form ODE over ``grid`` by ``method``, 'euler' or 'heun' (module doc)."""
    grid = check_grid(grid, schedule.T)
    lv = grid_levels(schedule, grid)  # lv.edm: sigma = sqrt((1 - abar) / abar); lv.alpha: sqrt(abar)

    def D(y: torch.Tensor, i: int) -> torch.Tensor:  # the denoiser at grid time i, on x_t = y sqrt(abar)
        return denoiser(y * lv.alpha[i], grid[i])

    y = x_T / lv.alpha[0]
    for i, s in enumerate(grid[1:]):
        sigma_t, sigma_s = lv.edm[i], lv.edm[i + 1]
        if s > 0:
            D_t = x0_hat = D(y, i)
            y_euler = torch.lerp(D_t, y, sigma_s / sigma_t)  # y + (sigma_s - sigma_t) (y - D_t) / sigma_t
            if method == "heun":  # y + (sigma_s - sigma_t) (d_t + d_s) / 2, d = (y - D) / sigma, in fused steps
                x0_hat = D(y_euler, i + 1)
                d_sum = (y - D_t).div_(sigma_t).add_(y_euler - x0_hat, alpha=1 / sigma_s)
                y = y.add(d_sum, alpha=(sigma_s - sigma_t) / 2)
            else:
                y = y_euler
        else:
            y = x0_hat = D(y, i)  # y_t + (0 - sigma_t) (y_t - D) / sigma_t = D
        if project is not None:
            y = project(s, y * lv.alpha[i + 1]) / lv.alpha[i + 1]
        if callback is not None:
            callback(i, s, y * lv.alpha[i + 1], x0_hat)
    return y


def euler(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
          project=None, callback=None) -> torch.Tensor:
    """Euler over ``grid`` in EDM form (deterministic; ``generator`` is unused). One call per step."""
    return _edm_ode(denoiser, x_T, schedule, grid, method="euler", project=project, callback=callback)


def heun(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
         project=None, callback=None) -> torch.Tensor:
    """Heun's second-order method over ``grid`` in EDM form (deterministic); 2K - 1 calls for K steps."""
    return _edm_ode(denoiser, x_T, schedule, grid, method="heun", project=project, callback=callback)


def heun_nfe(steps: int) -> int:
    """Heun's denoiser calls for K steps: two per step, one on the last (Euler) step to t = 0."""
    return 2 * steps - 1


SPECS = (SamplerSpec("euler", euler), SamplerSpec("heun", heun, nfe=heun_nfe))
