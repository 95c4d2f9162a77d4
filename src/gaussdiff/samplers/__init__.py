"""Samplers: plain functions ``sample(denoiser, x_T, schedule, grid, *, generator=None, ...) -> x_0``.

A sampler never knows which network, data or device it serves. ``SAMPLERS`` maps the names used
on the command line to the functions.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..param import Denoiser
from ..schedule import NoiseSchedule
from .ancestral import ddpm
from .ddim import ddim, ddim_invert
from .dpm_solver import dpmpp_2m, dpmpp_3m
from .grids import SPACINGS, check_grid, timestep_grid
from .edm import euler, heun
from .ode import pf_ode

SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "dpmpp_3m": dpmpp_3m, "euler": euler, "heun": heun,
            "pf_ode": pf_ode}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


# The defaults of `generate` and `gaussdiff sample`: ancestral sampling on 100 trailing steps. On trained 2-D models
# (benchmarks/RESULTS.md, "Sampling defaults") its SW2 is 1.2-1.8x that of all 1000 steps at a tenth of the cost,
# while the deterministic solvers converge to the probability-flow ODE's answer, about twice as far from the data
# whatever their NFE: the model's error, which ancestral noise partly corrects. With the exact oracle the order is
# reversed (dpmpp_2m on log_snr is best there): pick by `gaussdiff sweep` on your own model.
DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_SPACING = "ddpm", 100, "trailing"


def generate(denoiser: Denoiser, shape, schedule: NoiseSchedule, *, sampler: str = DEFAULT_SAMPLER,
             steps: int | None = None, spacing: str = DEFAULT_SPACING, grid_options: dict | None = None,
             generator=None, device=None, dtype=torch.float32, **options) -> torch.Tensor:
    """Draw x_T ~ N(0, I) of ``shape`` and run a named sampler on a grid of ``steps`` (default min(100, T));
    ``grid_options`` go to :func:`timestep_grid` (rho, sigma_min), ``options`` to the sampler."""
    fn = get_sampler(sampler)
    steps = min(DEFAULT_STEPS, schedule.T) if steps is None else steps
    grid = timestep_grid(schedule, steps, spacing, **(grid_options or {}))
    x_T = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return fn(denoiser, x_T, schedule, grid, generator=generator, **options)


__all__ = ["DEFAULT_SAMPLER", "DEFAULT_SPACING", "DEFAULT_STEPS", "SAMPLERS", "SPACINGS", "ddim", "ddim_invert", "ddpm", "dpmpp_2m", "dpmpp_3m", "euler", "generate",
           "get_sampler", "check_grid", "heun", "pf_ode", "timestep_grid"]
