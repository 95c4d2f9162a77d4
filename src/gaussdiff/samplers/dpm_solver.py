"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++", Algorithm 2, and its third-order multistep analogue):
multistep, data-prediction (x0) form.

With alpha = sqrt(abar), sigma = sqrt(1 - abar) and lambda = log(alpha / sigma) (half the log-SNR),
the probability-flow ODE in x0-prediction form is solved exactly in its linear part; a step from t to
s < t, h = lambda_s - lambda_t > 0, integrates a polynomial through the last denoiser outputs m0 (at t),
m1, m2 (at the previous grid times; r_k = h_k / h with h_k the earlier steps in lambda):
    x_s = (sigma_s / sigma_t) x_t + alpha_s integral_0^h e^(u-h) x0(lambda_t + u) du,
    x0(lambda_t + u) ~ D0 + (u/h) D1 + (u/h)^2 D2,   phi_(k+1) = integral_0^h e^(u-h) (u/h)^k du:
    phi1 = 1 - e^-h,   phi2 = 1 - phi1 / h,   phi3 = 1 - 2 phi2 / h.
order 1 (DDIM):  alpha_s phi1 m0;
order 2 (2M):    alpha_s phi1 (m0 + (m0 - m1) / (2 r0))       (Algorithm 2, diffusers' 'midpoint');
order 3 (3M):    alpha_s (phi1 D0 + phi2 D1 + phi3 D2),  D0 = m0,  D1 = d0 + r0 / (r0 + r1) (d0 - d1),
                 D2 = (d0 - d1) / (r0 + r1),  d0 = (m0 - m1) / r0,  d1 = (m1 - m2) / r1
                 (D1 = h x0', D2 = h^2 x0'' / 2 up to O(h^3)). diffusers, k-diffusion and the reference
                 DPM-Solver code weight this D2 by 1/2 - phi2 / h, half of phi3, which makes their 3M second
                 order (docs/samplers.md); phi3 here is the exact integral, and the method third order.
A solver of order k starts at order 1 and rises by one per step as outputs accumulate. The last step
goes to t = 0, where sigma = 0, lambda = +inf, h = +inf: the update's limit is x_0 = m0 (first order
there, as diffusers' final_sigmas_type='zero' does), computed directly so no inf or NaN appears.
Coefficients are float64 Python floats (``grid_levels``), one lookup per grid.
"""

from __future__ import annotations

import math

import torch

from ..param import Denoiser
from ..schedule import NoiseSchedule
from .grids import check_grid, grid_levels


def _x0_integral(history, lam_s: float) -> torch.Tensor:
    """The integral term (module doc) over alpha_s, from ``history`` [(lambda, x0_hat), ...], newest last;
    its length is the order."""
    lam_t, m0 = history[-1]
    h = lam_s - lam_t
    phi1 = -math.expm1(-h)  # 1 - e^-h
    if len(history) == 1:
        return phi1 * m0
    lam_1, m1 = history[-2]
    r0 = (lam_t - lam_1) / h
    if len(history) == 2:
        return phi1 * (m0 + (1 / (2 * r0)) * (m0 - m1))
    lam_2, m2 = history[-3]
    r1 = (lam_1 - lam_2) / h
    phi2 = 1 - phi1 / h
    phi3 = 1 - 2 * phi2 / h
    d0, d1 = (1 / r0) * (m0 - m1), (1 / r1) * (m1 - m2)
    D1 = d0 + (r0 / (r0 + r1)) * (d0 - d1)
    D2 = (1 / (r0 + r1)) * (d0 - d1)
    return phi1 * m0 + phi2 * D1 + phi3 * D2


def _multistep(order: int, denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid,
               callback) -> torch.Tensor:
    """DPM-Solver++ of ``order`` over ``grid``: one denoiser call per step."""
    grid = check_grid(grid, schedule.T)
    lv = grid_levels(schedule, grid)
    x = x_T
    history = []  # (lambda, x0_hat) at the last `order` grid times
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        x0_t = denoiser(x, t)
        if s > 0:
            history = (history + [(lv.lam[i], x0_t)])[-order:]
            x = (lv.sigma[i + 1] / lv.sigma[i]) * x + lv.alpha[i + 1] * _x0_integral(history, lv.lam[i + 1])
        else:
            x = x0_t  # the limit h -> inf: sigma_s = 0, alpha_s = 1, exp(-h) = 0
        if callback is not None:
            callback(s, x)
    return x


def dpmpp_2m(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
             callback=None) -> torch.Tensor:
    """DPM-Solver++(2M) over ``grid`` (deterministic; ``generator`` is unused). One call per step."""
    return _multistep(2, denoiser, x_T, schedule, grid, callback)


def dpmpp_3m(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
             callback=None) -> torch.Tensor:
    """DPM-Solver++(3M) over ``grid`` (deterministic; ``generator`` is unused). One call per step."""
    return _multistep(3, denoiser, x_T, schedule, grid, callback)
