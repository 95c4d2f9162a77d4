"""Ancestral sampling: the seed's backward loop, with the learned reverse chain.

From x_T ~ N(0, I), for each pair t > s of the grid, draw x_s from
    p(x_s | x_t) = N(c_0 x0_hat(x_t, t) + c_t x_t, sigma^2 I)
with (c_0, c_t) the posterior coefficients of q(x_s | x_t, x_0) and the reverse variance either
    beta_tilde = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)   (posterior variance), or
    beta       = 1 - abar_t / abar_s                                (Ho et al.'s sigma^2 = beta_t), or
    learned    the model's own: ``denoiser`` is then a reverse model (x_t, t) -> (x0_hat, log_var) on an
               integer grid, and a step t -> s takes the fraction v of its log variance between the
               full chain's log beta_tilde_t and log beta_t to the step's own pair (Nichol & Dhariwal's
               learned range, respaced as improved-diffusion and diffusers do):
               sigma^2 = exp(v log beta + (1 - v) log beta_tilde),
               v = (log_var - log beta_tilde_t) / (log beta_t - log beta_tilde_t);
               on the full grid sigma^2 = exp(log_var).
On the full grid T, T-1, ..., 0 this is DDPM's Algorithm 2; on a sub-grid it is respaced DDPM.
The last step, to t = 0, returns the mean (no noise is added to the output). ``AncestralSteps`` holds one grid's
steps; ``ddpm`` runs them in order, RePaint (``repaint.py``) down and up its resampling schedule.
"""

from __future__ import annotations

import math

import torch

from ..bound import reverse_log_variance
from ..chain import posterior_coefficients
from ..errors import InputError
from ..param import Denoiser, ReverseModel
from ..schedule import NoiseSchedule
from .grids import INTEGER_SPACINGS, check_grid
from .noise import normal_noise
from .spec import Option, SamplerSpec

VARIANCES = ("beta_tilde", "beta", "learned")


def _learned_variance(log_var: torch.Tensor, schedule: NoiseSchedule, t, beta: torch.Tensor,
                      beta_tilde: torch.Tensor) -> torch.Tensor:
    """sigma^2 of a step t -> s from the model's log_var at t (see module doc); beta, beta_tilde of the step."""
    log_small, log_large = (reverse_log_variance(schedule, round(float(t)), kind).to(log_var)
                            for kind in ("fixed_small", "fixed_large"))
    v = (log_var - log_small) / (log_large - log_small)
    return torch.exp(v * torch.log(beta).to(log_var) + (1 - v) * torch.log(beta_tilde).to(log_var))


def _reverse_output(out, variance: str):
    """(x0_hat, log_var or None) from what ``denoiser`` returned."""
    if variance != "learned":
        return out, None
    if not (isinstance(out, tuple) and len(out) == 2):
        raise InputError("variance='learned' needs a reverse model (x_t, t) -> (x0_hat, log_var), "
                         "e.g. SavedModel.reverse_model() of a model with a variance head")
    return out


class AncestralSteps:
    """The steps of ancestral sampling over one grid (module doc): :meth:`step` ``i`` goes from grid[i] to
    grid[i + 1]. Coefficients are float64 Python floats, one lookup for the whole grid; ``beta[i]`` =
    1 - abar(grid[i]) / abar(grid[i + 1]) is also the variance of the forward move back up (RePaint's)."""

    def __init__(self, schedule: NoiseSchedule, grid, variance: str):
        if variance not in VARIANCES:
            raise InputError(f"unknown reverse variance {variance!r}; known: {', '.join(VARIANCES)}")
        self.grid = check_grid(grid, schedule.T)
        if variance == "learned" and (self.grid != self.grid.round()).any():
            raise InputError(f"variance 'learned' needs an integer grid, as the spacings {', '.join(INTEGER_SPACINGS)} "
                             f"give (a reverse model is trained at integer t in 1..{schedule.T})")
        ab = schedule.alpha_bar_at(self.grid)
        self.c0, self.ct, self.tilde = (c.tolist() for c in posterior_coefficients(ab[:-1], ab[1:]))
        self.beta = (1 - ab[:-1] / ab[1:]).tolist()
        self.schedule, self.variance, self.n = schedule, variance, len(self.grid) - 1
        self.last = self.n - 1  # the step to t = 0

    def step(self, denoiser: Denoiser | ReverseModel, x: torch.Tensor, i: int, generator):
        """(a draw of x at grid[i + 1] given x at grid[i], the step's x0_hat); no noise on the step to t = 0."""
        t = self.grid[i]
        x0_hat, log_var = _reverse_output(denoiser(x, t), self.variance)
        x = torch.add(x0_hat * self.c0[i], x, alpha=self.ct[i])  # the posterior mean c_0 x0_hat + c_t x_t
        if i < self.last:
            noise = normal_noise(x.shape, generator, x.dtype, x.device)
            if self.variance == "learned":
                step = (torch.tensor(v, dtype=torch.float64) for v in (self.beta[i], self.tilde[i]))
                x = x + _learned_variance(log_var, self.schedule, t, *step).sqrt() * noise
            else:
                x = x.add_(noise, alpha=math.sqrt(self.beta[i] if self.variance == "beta" else self.tilde[i]))
        return x, x0_hat


def ddpm(denoiser: Denoiser | ReverseModel, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
         variance: str = "beta_tilde", project=None, callback=None) -> torch.Tensor:
    """Ancestral sampling over ``grid``; after step i (to t = grid[i + 1]) x <- ``project(t, x)``, then
    ``callback(i, t, x, x0_hat)``. ``generator``: a torch.Generator or a ``noise.RowNoise`` (one draw per step but
    the last)."""
    steps = AncestralSteps(schedule, grid, variance)
    x = x_T
    for i in range(steps.n):
        x, x0_hat = steps.step(denoiser, x, i, generator)
        if project is not None:
            x = project(steps.grid[i + 1], x)
        if callback is not None:
            callback(i, steps.grid[i + 1], x, x0_hat)
    return x


SPECS = (SamplerSpec("ddpm", ddpm, (Option("variance", str, f"reverse variance, one of {', '.join(VARIANCES)}",
                                           model_default="ddpm_variance",
                                           model_default_help="the model's variance_type"),),
                     reverse_model_when={"variance": "learned"}),)
