"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models") and its deterministic inversion.

From x_t, with x0_hat = denoiser(x_t, t) and the implied noise
    eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t),
a step to s < t of the grid is (Song et al. eq. 12)
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,   z ~ N(0, I),
    sigma^2 = eta^2 beta_tilde(t, s),   beta_tilde(t, s) = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).
eta = 0 is the deterministic DDIM (an exponential-integrator Euler step of the probability-flow ODE),
eta = 1 has the posterior variance of respaced DDPM. The last step, to t = 0 (abar_0 = 1), returns
x0_hat with no noise. Coefficients are float64 Python floats (``grid_levels``), one lookup per grid.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError, check_int
from ..param import Denoiser, eps_from_x0
from ..schedule import NoiseSchedule
from .grids import check_grid, grid_levels
from .noise import normal_noise
from .spec import Option, SamplerSpec


def _ddim_coefficients(ab_from: torch.Tensor, ab_to: torch.Tensor):
    """The eta = 0 move from time 'from' to time 'to' in eps form (either direction):
    x_to = sqrt(abar_to / abar_from) x_from + (sqrt(1 - abar_to) - sqrt(abar_to / abar_from) sqrt(1 - abar_from)) eps.
    Equal to sqrt(abar_to) x0 + sqrt(1 - abar_to) eps with x0 = (x_from - sqrt(1 - abar_from) eps) / sqrt(abar_from)."""
    ratio = torch.sqrt(ab_to / ab_from)
    return ratio, torch.sqrt(1 - ab_to) - ratio * torch.sqrt(1 - ab_from)


def ddim(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
         eta: float = 0.0, project=None, callback=None) -> torch.Tensor:
    """DDIM sampling over ``grid`` (eta = 0: deterministic); after step i (to s = grid[i + 1]) x <- ``project(s, x)``,
    then ``callback(i, s, x, x0_hat)``. ``generator`` (eta > 0): a torch.Generator or a ``noise.RowNoise`` (one draw
    per step but the last)."""
    if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not math.isfinite(eta) or eta < 0:
        raise InputError(f"eta must be a finite number >= 0, got {eta!r}")
    grid = check_grid(grid, schedule.T)
    lv = grid_levels(schedule, grid)
    x = x_T
    for i, (t, s) in enumerate(zip(grid[:-1], grid[1:])):
        x0_hat = denoiser(x, t)
        if s > 0:
            var_t, var_s = lv.sigma[i] ** 2, lv.sigma[i + 1] ** 2  # 1 - abar, exact near t = 0
            var = eta**2 * var_s / var_t * (1 - lv.alpha_bar[i] / lv.alpha_bar[i + 1])  # eta^2 beta_tilde(t, s)
            dir_coef = math.sqrt(max(var_s - var, 0.0))  # eta > 1 would make it negative: clamp
            # sqrt(abar_s) x0_hat + dir_coef eps_hat with eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t):
            k = dir_coef / lv.sigma[i]
            x = torch.add(x * k, x0_hat, alpha=lv.alpha[i + 1] - k * lv.alpha[i])
            if eta > 0:
                x = x + math.sqrt(var) * normal_noise(x.shape, generator, x.dtype, x.device)
        else:
            x = x0_hat  # abar_0 = 1: x_0 = x0_hat, no noise
        if project is not None:
            x = project(s, x)
        if callback is not None:
            callback(i, s, x, x0_hat)
    return x


def ddim_invert(denoiser: Denoiser, x_0: torch.Tensor, schedule: NoiseSchedule, grid, *, fixed_point_iters: int = 0,
                callback=None) -> torch.Tensor:
    """Map x_0 to x at grid[0] by the eta = 0 update run along the reversed grid 0 < ... < grid[0]; step i, up to
    time t, ends with ``callback(i, t, x, x0_hat)``, x0_hat the step's last denoiser output.

    The exact inverse of a sampling step t -> s needs eps_hat at the unknown x_t; as usual (Song et al.
    sec. 4.3, diffusers' DDIMInverseScheduler) it is evaluated at the known x_s with the target time t:
        eps' = eps_hat(x_s, t),   x_t = sqrt(abar_t / abar_s) x_s + (sqrt(1 - abar_t) - sqrt(abar_t / abar_s) sqrt(1 - abar_s)) eps'.
    That leaves a round-trip error O(h^2) per step. ``fixed_point_iters`` > 0 refines each step by
    re-evaluating eps' at the current x_t estimate (x_t <- update with eps_hat(x_t, t)), which makes
    sampling undo the inversion up to the contraction of that iteration (one extra call per iteration).
    """
    check_int("fixed_point_iters", fixed_point_iters, 0)
    grid = check_grid(grid, schedule.T).flip(0)  # increasing: 0, ..., grid[0]
    x = x_0
    for i, (s, t) in enumerate(zip(grid[:-1], grid[1:])):
        ab_s, ab_t = schedule.alpha_bar_at(s), schedule.alpha_bar_at(t)
        ratio, eps_coef = (c.to(x.dtype) for c in _ddim_coefficients(ab_s, ab_t))
        x_t = x
        for _ in range(fixed_point_iters + 1):
            x0_hat = denoiser(x_t, t)
            eps = eps_from_x0(x0_hat, x_t, ab_t)  # eps_hat(., t): the network's noise at time t
            x_t = ratio * x + eps_coef * eps
        x = x_t
        if callback is not None:
            callback(i, t, x, x0_hat)
    return x


SPECS = (SamplerSpec("ddim", ddim, (Option("eta", float, "noise scale (0: deterministic, 1: ddpm's posterior "
                                                         "variance)"),)),)
