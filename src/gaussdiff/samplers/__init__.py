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


# The defaults of `generate` and `gaussdiff sample`: on the exact-oracle benchmark (benchmarks/RESULTS.md) DPM-Solver++(2M)
# on a grid uniform in log-SNR is within 3x the Monte Carlo floor of the within-mode std from 20 steps, on linear
# and cosine schedules alike, where ancestral DDPM needs about 1000.
DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_SPACING = "dpmpp_2m", 25, "log_snr"


def generate(denoiser: Denoiser, shape, schedule: NoiseSchedule, *, sampler: str = DEFAULT_SAMPLER,
             steps: int = DEFAULT_STEPS, spacing: str = DEFAULT_SPACING, grid_options: dict | None = None,
             generator=None, device=None, dtype=torch.float32, **options) -> torch.Tensor:
    """Draw x_T ~ N(0, I) of ``shape`` and run a named sampler on a grid of ``steps``;
    ``grid_options`` go to :func:`timestep_grid` (rho, sigma_min), ``options`` to the sampler."""
    fn = get_sampler(sampler)
    grid = timestep_grid(schedule, steps, spacing, **(grid_options or {}))
    x_T = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return fn(denoiser, x_T, schedule, grid, generator=generator, **options)


__all__ = ["DEFAULT_SAMPLER", "DEFAULT_SPACING", "DEFAULT_STEPS", "SAMPLERS", "SPACINGS", "ddim", "ddim_invert", "ddpm", "dpmpp_2m", "dpmpp_3m", "euler", "generate",
           "get_sampler", "check_grid", "heun", "pf_ode", "timestep_grid"]
