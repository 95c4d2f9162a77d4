"""Sampling with known values (inpainting, imputation): some entries of x_0 are given, the others are drawn.

Mask convention, everywhere in gaussdiff: True (1) = KNOWN, False (0) = to be drawn. (diffusers' inpainting
pipelines use the opposite, 1 = the region to fill.) ``mask`` is a bool tensor broadcastable to the samples' shape,
e.g. (B, 1, H, W) for images or (B, D) for rows; ``x_known`` has the samples' shape, in model units, and its unknown
entries are ignored (NaN is fine there).

The three methods (METHODS):
- ``replace_x0``: a denoiser wrapper, x0_hat <- where(mask, x_known, x0_hat), so any sampler (pf_ode too) steers the
  known entries toward x_known; a reverse model's log-variance passes through.
- ``replace_xt``: a ``project`` hook: after each step, to time t,
      x_t <- where(mask, sqrt(abar_t) x_known + sqrt(1 - abar_t) eps, x_t),   eps ~ N(0, I),
  the known part a fresh draw of q(x_t | x_0 = x_known) (exactly x_known at t = 0): the "replacement" of Song et al.
  2021 (score SDE, imputation) that RePaint starts from. Needs a sampler that ``projects`` (all but pf_ode).
- ``repaint``: replace_xt on the ancestral sampler along RePaint's resampling walk (:mod:`.repaint`).
:func:`sample_known` runs one of them as ``generate`` runs a sampler (same seeds, same noise rows) and returns
samples whose known entries are x_known bit for bit; :func:`known_nfe` tells its denoiser calls beforehand.
"""

from __future__ import annotations

import torch

from ..chain import q_sample
from ..errors import InputError, check_int
from ..param import Denoiser, ReverseModel
from ..schedule import NoiseSchedule
from . import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, SamplerSpec, get_sampler, timestep_grid
from .noise import noise_source, normal_noise
from .repaint import JUMP_LENGTH, JUMP_N_SAMPLE, STEPS as REPAINT_STEPS, repaint, repaint_nfe

METHODS = ("replace_x0", "replace_xt", "repaint")
DEFAULT_METHOD = "repaint"


def check_known(mask: torch.Tensor, x_known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask on x_known's device, x_known with its unknown entries set to 0); InputError if the mask is not bool or
    does not broadcast to x_known's shape, or a known entry is not finite."""
    if not isinstance(x_known, torch.Tensor) or not x_known.is_floating_point():
        raise InputError("the known values must be a floating-point tensor of the samples' shape")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise InputError("the known-value mask must be a bool tensor (True = known)")
    try:
        fits = torch.broadcast_shapes(mask.shape, x_known.shape) == x_known.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise InputError(f"the known-value mask of shape {tuple(mask.shape)} does not broadcast to the samples' "
                         f"shape {tuple(x_known.shape)}")
    mask = mask.to(x_known.device)
    if not (torch.isfinite(x_known) | ~mask).all():
        raise InputError("the known values have a NaN or infinite entry where the mask says known")
    return mask, torch.where(mask, x_known, x_known.new_zeros(()))


def replace_x0(denoiser: Denoiser | ReverseModel, mask: torch.Tensor, x_known: torch.Tensor) -> Denoiser | ReverseModel:
    """The denoiser with x0_hat <- where(mask, x_known, x0_hat) (module doc)."""
    mask, x_known = check_known(mask, x_known)

    def replaced(x_t, t):
        out = denoiser(x_t, t)
        if isinstance(out, tuple):
            return (torch.where(mask, x_known.to(out[0]), out[0]), *out[1:])
        return torch.where(mask, x_known.to(out), out)

    return replaced


def replace_xt(schedule: NoiseSchedule, mask: torch.Tensor, x_known: torch.Tensor, generator):
    """A sampler's ``project(t, x)``: the known entries of x replaced by a draw of q(x_t | x_known) (module doc),
    its noise from ``generator`` (a torch.Generator or a RowNoise, through ``normal_noise``); at t = 0 x_known
    itself, with no draw."""
    mask, x_known = check_known(mask, x_known)

    def project(t, x):
        if t == 0:
            return torch.where(mask, x_known.to(x), x)
        eps = normal_noise(x.shape, generator, x.dtype, x.device)
        return torch.where(mask, q_sample(x_known.to(x), t, schedule, eps), x)  # sqrt(abar) x_known + sqrt(1-abar) eps

    return project


def _check_method(method: str, sampler: str) -> SamplerSpec:
    """The spec of ``sampler`` if ``method`` can run on it; one-line InputError otherwise."""
    if method not in METHODS:
        raise InputError(f"unknown known-value method {method!r}; known: {', '.join(METHODS)}")
    spec = get_sampler(sampler)
    if method == "repaint" and sampler != "ddpm":
        raise InputError(f"repaint runs on the ancestral sampler: sampler must be 'ddpm', got {sampler!r}")
    if method == "replace_xt" and not spec.projects:
        raise InputError(f"sampler {sampler!r} cannot replace x_t between its steps; "
                         "use method 'replace_x0' with it, or another sampler")
    return spec


def default_steps(method: str, T: int) -> int:
    """The steps ``sample_known`` takes when none are given: the paper's 250 for repaint, generate's otherwise (at
    most T)."""
    return min(REPAINT_STEPS if method == "repaint" else DEFAULT_STEPS, T)


def known_nfe(method: str, sampler: str, steps: int, jump_length: int = JUMP_LENGTH,
              jump_n_sample: int = JUMP_N_SAMPLE) -> int | None:
    """The denoiser calls ``sample_known`` makes with these settings and a mask with both known and unknown entries
    (all known: none; all unknown: plain sampling's); None where an adaptive sampler's tolerance sets them."""
    spec = _check_method(method, sampler)
    check_int("steps", steps, 1)
    if method == "repaint":
        return repaint_nfe(steps, jump_length, jump_n_sample)
    return None if spec.nfe is None else spec.nfe(steps)


def sample_known(denoiser: Denoiser | ReverseModel, x_known: torch.Tensor, mask: torch.Tensor,
                 schedule: NoiseSchedule, *, method: str = DEFAULT_METHOD, sampler: str = DEFAULT_SAMPLER,
                 steps: int | None = None, spacing: str = DEFAULT_SPACING, grid_options: dict | None = None,
                 seed: int | None = None, start: int = 0, generator: torch.Generator | None = None,
                 jump_length: int = JUMP_LENGTH, jump_n_sample: int = JUMP_N_SAMPLE, callback=None,
                 **sampler_options) -> torch.Tensor:
    """Samples of x_known's shape, dtype and device whose unknown entries (mask False) are drawn by ``method`` on
    ``sampler`` and whose known entries are x_known bit for bit.

    As ``samplers.generate``: x_T ~ N(0, I), a grid of ``steps`` (default :func:`default_steps`) by ``spacing`` and
    ``grid_options``, ``sampler_options`` to the sampler (repaint: ddpm's variance), ``callback(i, t, x, x0_hat)``
    after each step (repaint: each move); with ``seed`` the B samples are rows start..start+B-1 of the seeded
    sample set (x_T and every draw, the replacements' too), else the noise comes from ``generator``.
    ``jump_length`` and ``jump_n_sample``: RePaint's. A mask with no known entry is plain sampling (``generate``'s
    samples); one with no unknown entry returns x_known without calling the denoiser."""
    spec = _check_method(method, sampler)
    spec.check_options(sampler_options)
    mask, x_known = check_known(mask, x_known)
    if x_known.ndim < 2:
        raise InputError(f"the known values must be a batch (B, *sample_shape), got shape {tuple(x_known.shape)}")
    steps = default_steps(method, schedule.T) if steps is None else steps
    grid = timestep_grid(schedule, steps, spacing, **(grid_options or {}))
    shape, dtype, device = x_known.shape, x_known.dtype, x_known.device
    generator = noise_source(shape, seed, start, generator, dtype, device, "sample_known")
    if mask.all():
        return x_known
    x_T = normal_noise(shape, generator, dtype, device)
    if not mask.any():
        return spec.fn(denoiser, x_T, schedule, grid, generator=generator, callback=callback, **sampler_options)
    if method == "replace_x0":
        x = spec.fn(replace_x0(denoiser, mask, x_known), x_T, schedule, grid, generator=generator, callback=callback,
                    **sampler_options)
    elif method == "replace_xt":
        x = spec.fn(denoiser, x_T, schedule, grid, generator=generator,
                    project=replace_xt(schedule, mask, x_known, generator), callback=callback, **sampler_options)
    else:
        x = repaint(denoiser, x_T, schedule, grid, generator=generator, jump_length=jump_length,
                    jump_n_sample=jump_n_sample, project=replace_xt(schedule, mask, x_known, generator),
                    callback=callback, **sampler_options)
    return torch.where(mask, x_known, x)
