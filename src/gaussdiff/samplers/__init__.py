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
from .dpm_solver import dpmpp_2m
from .grids import SPACINGS, check_grid, timestep_grid

SAMPLERS = {"ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m}


def get_sampler(name: str):
    if name not in SAMPLERS:
        raise InputError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def generate(denoiser: Denoiser, shape, schedule: NoiseSchedule, *, sampler: str = "ddpm", steps: int | None = None,
             spacing: str = "trailing", generator=None, device=None, dtype=torch.float32, **options) -> torch.Tensor:
    """Draw x_T ~ N(0, I) of ``shape`` and run a named sampler on a grid of ``steps`` (default T)."""
    fn = get_sampler(sampler)
    grid = timestep_grid(schedule.T, schedule.T if steps is None else steps, spacing)
    x_T = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return fn(denoiser, x_T, schedule, grid, generator=generator, **options)


__all__ = ["SAMPLERS", "SPACINGS", "ddim", "ddim_invert", "ddpm", "dpmpp_2m", "generate", "get_sampler", "check_grid", "timestep_grid"]
