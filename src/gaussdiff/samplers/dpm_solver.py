"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): multistep, data-prediction form.

With alpha = sqrt(abar), sigma = sqrt(1 - abar) and lambda = log(alpha / sigma) (half the log-SNR),
the probability-flow ODE in x0-prediction form is solved exactly in its linear part:
    x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D,   h = lambda_s - lambda_t > 0,
with D = x0_hat(x_t, t) on the first step (first order: this is DDIM), and afterwards the
second-order multistep estimate
    D = (1 + 1 / (2r)) x0_t - 1 / (2r) x0_prev,   r = h_prev / h,
from the current and the previous denoiser outputs. The last step goes to t = 0, where sigma = 0,
lambda = +inf, h = +inf: the update's limit is x_0 = x0_hat of the last evaluation (first order
there, as diffusers' final_sigmas_type='zero' does), computed directly so no inf or NaN appears.
Coefficients are float64 scalars, cast to x's dtype when applied.
"""

from __future__ import annotations

import torch

from ..param import Denoiser
from ..schedule import NoiseSchedule
from .grids import check_grid


def _alpha_sigma_lambda(schedule: NoiseSchedule, t):
    """(alpha, sigma, lambda) at t > 0 in float64; 1 - abar via expm1 keeps precision near t = 0."""
    log_ab = schedule.log_alpha_bar_at(t)
    log_var = torch.log(-torch.expm1(log_ab))  # log(1 - abar)
    return torch.exp(0.5 * log_ab), torch.exp(0.5 * log_var), 0.5 * (log_ab - log_var)


def dpmpp_2m(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
             callback=None) -> torch.Tensor:
    """DPM-Solver++(2M) over ``grid`` (deterministic; ``generator`` is unused). One call per step."""
    grid = check_grid(grid, schedule.T)
    x = x_T
    x0_prev, h_prev = None, None
    for t, s in zip(grid[:-1], grid[1:]):
        x0_t = denoiser(x, t)
        if s > 0:
            _, sigma_t, lam_t = _alpha_sigma_lambda(schedule, t)
            alpha_s, sigma_s, lam_s = _alpha_sigma_lambda(schedule, s)
            h = lam_s - lam_t
            if x0_prev is None:
                D = x0_t  # first step: first order
            else:
                c = 1 / (2 * (h_prev / h))  # 1 / (2r)
                D = (1 + c).to(x.dtype) * x0_t - c.to(x.dtype) * x0_prev
            # x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - exp(-h)) D; -expm1(-h) = 1 - exp(-h)
            x = (sigma_s / sigma_t).to(x.dtype) * x + (alpha_s * -torch.expm1(-h)).to(x.dtype) * D
            x0_prev, h_prev = x0_t, h
        else:
            x = x0_t  # the limit h -> inf: sigma_s = 0, alpha_s = 1, exp(-h) = 0
        if callback is not None:
            callback(s, x)
    return x
