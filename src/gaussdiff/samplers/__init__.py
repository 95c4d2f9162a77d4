"""Samplers: plain functions ``sample(denoiser, x_T, schedule, grid, *, generator=None, ...) -> x_0``.

A sampler never knows which network, data or device it serves. Each module declares its samplers' names,
options and traits beside their functions (``SPECS``, see :mod:`.spec`); ``SAMPLERS`` collects them into the one
registry, name -> :class:`SamplerSpec`, that ``generate``, ``gaussdiff sample`` and ``gaussdiff sweep`` read.
Adding a sampler is one function and one spec entry.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..param import Denoiser
from ..schedule import NoiseSchedule
from . import ancestral, ddim as _ddim, dpm_solver, edm, ode
from .ancestral import ddpm
from .ddim import ddim, ddim_invert
from .dpm_solver import dpmpp_2m, dpmpp_3m
from .edm import euler, heun
from .grids import SPACINGS, check_grid, timestep_grid
from .noise import RowNoise, normal_noise
from .ode import pf_ode
from .spec import Option, SamplerSpec, options_by_name

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for module in (ancestral, _ddim, dpm_solver, edm, ode)
                                    for spec in module.SPECS}


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler ``name``; InputError listing the known names otherwise."""
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
             seed: int | None = None, start: int = 0, generator: torch.Generator | None = None, device=None,
             dtype=torch.float32, **options) -> torch.Tensor:
    """Draw x_T ~ N(0, I) of ``shape`` = (B, *sample_shape) and run a named sampler on a grid of ``steps``
    (default min(100, T)); ``grid_options`` go to :func:`timestep_grid` (rho, sigma_min), ``options`` to the sampler.

    With ``seed``, the B samples are rows start..start+B-1 of the seeded sample set: x_T and every noise draw come
    from a :class:`RowNoise`, so each sample depends on (seed, its row) alone, not on how the set is cut into calls
    (with a row-wise denoiser and a sampler that is not adaptive, the samples themselves do not either). Without
    it, x_T and then the noise come from ``generator`` (torch's global one if None)."""
    fn = get_sampler(sampler).fn
    steps = min(DEFAULT_STEPS, schedule.T) if steps is None else steps
    grid = timestep_grid(schedule, steps, spacing, **(grid_options or {}))
    if seed is not None:
        if generator is not None:
            raise InputError("generate takes a seed or a generator, not both")
        generator = RowNoise(seed, start, start + shape[0], shape[1:], dtype=dtype, device=device)
    elif start:
        raise InputError("generate's start row needs a seed (rows of a seeded sample set)")
    x_T = normal_noise(shape, generator, dtype, device)
    return fn(denoiser, x_T, schedule, grid, generator=generator, **options)


__all__ = ["DEFAULT_SAMPLER", "DEFAULT_SPACING", "DEFAULT_STEPS", "SAMPLERS", "SPACINGS", "Option",
           "RowNoise", "SamplerSpec", "check_grid", "ddim", "ddim_invert", "ddpm", "dpmpp_2m", "dpmpp_3m", "euler",
           "generate", "get_sampler", "heun", "normal_noise", "options_by_name", "pf_ode", "timestep_grid"]
