"""Samplers: plain functions ``sample(denoiser, x_T, schedule, grid, *, generator=None, project=None, callback=None,
**options) -> x_0``.

A sampler never knows which network, data or device it serves. After step i, which reaches the grid time
t = grid[i + 1] (a 0-d float64 tensor), it sets x <- ``project(t, x)`` (x on the variance-preserving scale; known
values, :mod:`.known`) and then calls ``callback(i, t, x, x0_hat)``, x0_hat the last denoiser estimate of that step
(a reverse model's x0_hat). Neither costs anything when None. Conditioning, guidance, clipping and x0-replacement
are denoiser wrappers instead (:mod:`.guidance`, :mod:`.known`); RePaint's resampling is :mod:`.repaint`.

Each module declares its samplers' names, options and traits beside their functions (``SPECS``, see :mod:`.spec`);
``SAMPLERS`` collects them into the one registry, name -> :class:`SamplerSpec`, that ``generate``,
``gaussdiff sample`` and ``gaussdiff sweep`` read. Adding a sampler is one function and one spec entry.
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
from .noise import RowNoise, noise_source, normal_noise
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
             dtype=torch.float32, init: torch.Tensor | None = None, strength: float = 1.0, **options) -> torch.Tensor:
    """Draw x_T ~ N(0, I) of ``shape`` = (B, *sample_shape) and run a named sampler on a grid of ``steps``
    (default min(100, T)); ``grid_options`` go to :func:`timestep_grid` (rho, sigma_min), ``options`` to the sampler.

    With ``seed``, the B samples are rows start..start+B-1 of the seeded sample set: x_T and every noise draw come
    from a :class:`RowNoise`, so each sample depends on (seed, its row) alone, not on how the set is cut into calls
    (with a row-wise denoiser and a sampler that is not adaptive, the samples themselves do not either). Without
    it, x_T and then the noise come from ``generator`` (torch's global one if None).

    SDEdit (Meng et al. 2022): with ``init`` (B, *sample_shape) in model units, the sampler runs only the last
    K = max(1, round(strength steps)) steps of the grid, from t_0 = the first of them, starting at
        x_{t_0} = sqrt(abar_{t_0}) init + sqrt(1 - abar_{t_0}) z,   z the draw that would have been x_T
    (diffusers' img2img ``strength``: 1 starts from the top of the grid, small values keep more of init)."""
    fn = get_sampler(sampler).fn
    steps = min(DEFAULT_STEPS, schedule.T) if steps is None else steps
    grid = timestep_grid(schedule, steps, spacing, **(grid_options or {}))
    generator = noise_source(shape, seed, start, generator, dtype, device, "generate")
    x_T = normal_noise(shape, generator, dtype, device)
    if init is not None:
        grid, x_T = _noised_init(schedule, grid, init.to(x_T), strength, x_T)
    return fn(denoiser, x_T, schedule, grid, generator=generator, **options)


def _noised_init(schedule: NoiseSchedule, grid: torch.Tensor, init: torch.Tensor, strength: float, z: torch.Tensor):
    """(the last max(1, round(strength K)) steps of the K-step grid, init noised to its first time) (generate)."""
    if not 0 < strength <= 1:
        raise InputError(f"the SDEdit strength must lie in (0, 1], got {strength}")
    if init.shape != z.shape:
        raise InputError(f"init has shape {tuple(init.shape)}; the samples are {tuple(z.shape)}")
    keep = max(1, round(strength * (len(grid) - 1)))
    grid = grid[-(keep + 1):]
    abar = schedule.alpha_bar_at(grid[0]).item()
    return grid, init * abar**0.5 + z * (1 - abar)**0.5


__all__ = ["DEFAULT_SAMPLER", "DEFAULT_SPACING", "DEFAULT_STEPS", "SAMPLERS", "SPACINGS", "Option",
           "RowNoise", "SamplerSpec", "check_grid", "ddim", "ddim_invert", "ddpm", "dpmpp_2m", "dpmpp_3m", "euler",
           "generate", "get_sampler", "heun", "noise_source", "normal_noise", "options_by_name", "pf_ode",
           "timestep_grid"]
