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
from .spec import SamplerSpec


def _x0_weights(lams: list[float], lam_s: float) -> list[float]:
    """The integral term (module doc) as weights of the x0_hat history, newest first, from their lambdas
    (newest last); the order is len(lams). Expanded from phi1 m0 + phi2 D1 + phi3 D2 so that a step costs
    one fused multiply-add per history entry."""
    lam_t = lams[-1]
    h = lam_s - lam_t
    phi1 = -math.expm1(-h)  # 1 - e^-h
    if len(lams) == 1:
        return [phi1]
    r0 = (lam_t - lams[-2]) / h
    if len(lams) == 2:  # phi1 (m0 + (m0 - m1) / (2 r0))
        return [phi1 * (1 + 1 / (2 * r0)), -phi1 / (2 * r0)]
    r1 = (lams[-2] - lams[-3]) / h
    phi2 = 1 - phi1 / h
    phi3 = 1 - 2 * phi2 / h
    # d0 = (m0 - m1) / r0, d1 = (m1 - m2) / r1, D1 = d0 + q (d0 - d1), D2 = (d0 - d1) / (r0 + r1), q = r0 / (r0 + r1)
    q, e = r0 / (r0 + r1), phi3 / (r0 + r1)
    a, b = phi2 * (1 + q) + e, -(phi2 * q + e)  # phi2 D1 + phi3 D2 = a d0 + b d1
    return [phi1 + a / r0, -a / r0 + b / r1, -b / r1]


def _multistep(order: int, denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, project,
               callback) -> torch.Tensor:
    """DPM-Solver++ of ``order`` over ``grid``: one denoiser call per step. ``project`` moves the state after each
    step; the x0_hat history stays the denoiser's own outputs."""
    grid = check_grid(grid, schedule.T)
    lv = grid_levels(schedule, grid)
    x = x_T
    lams, x0s = [], []  # lambda and x0_hat at the last `order` grid times, newest last
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        x0_t = denoiser(x, t)
        if s > 0:
            lams, x0s = (lams + [lv.lam[i]])[-order:], (x0s + [x0_t])[-order:]
            x = x * (lv.sigma[i + 1] / lv.sigma[i])  # x_s = (sigma_s / sigma_t) x_t + alpha_s sum_j w_j x0_j
            for w, x0 in zip(_x0_weights(lams, lv.lam[i + 1]), reversed(x0s)):
                x = x.add_(x0, alpha=lv.alpha[i + 1] * w)
        else:
            x = x0_t  # the limit h -> inf: sigma_s = 0, alpha_s = 1, exp(-h) = 0
        if project is not None:
            x = project(s, x)
        if callback is not None:
            callback(i, s, x, x0_t)
    return x


def dpmpp_2m(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
             project=None, callback=None) -> torch.Tensor:
    """DPM-Solver++(2M) over ``grid`` (deterministic; ``generator`` is unused). One call per step."""
    return _multistep(2, denoiser, x_T, schedule, grid, project, callback)


def dpmpp_3m(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
             project=None, callback=None) -> torch.Tensor:
    """DPM-Solver++(3M) over ``grid`` (deterministic; ``generator`` is unused). One call per step."""
    return _multistep(3, denoiser, x_T, schedule, grid, project, callback)


SPECS = (SamplerSpec("dpmpp_2m", dpmpp_2m), SamplerSpec("dpmpp_3m", dpmpp_3m))
