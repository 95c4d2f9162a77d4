"""The probability-flow ODE of the variance-preserving chain, solved by an adaptive Runge-Kutta method.

Variable: s = log sigma with EDM's noise level sigma = sqrt((1 - abar) / abar) (s = -log-SNR / 2); the state is x
on the chain's scale. With y = x / a, a = sqrt(abar) = (1 + sigma^2)^(-1/2), EDM's ODE dy/dsigma = (y - D) / sigma
(Karras et al. 2022, with D the denoiser) and da/ds = -sigma^2 a^3 give
    dx/ds = a (a x - D(x, t(s))),        t(s) = schedule.t_of_sigma(exp(s)).
Both ends are tame: for large sigma a -> 0 and the flow stops (x is noise); for small sigma a x - D = O(sigma^2),
so the drift vanishes there instead of growing. abar(sigma) is smooth, so the oracle's drift is smooth in s; a network
sees t, which is piecewise linear in s between integer t.

The sampler integrates from s(grid[0]) to s at the smallest positive t of the grid with torchdiffeq (the other grid
points are output times, handed to ``callback``), then returns x0_hat there, as the other samplers' last step to t = 0.
It takes no ``project``: the solver's own steps fall between the output times, and moving the state at an output
time would restart its step-size control there (``SamplerSpec.projects`` is False; known values go through a
denoiser wrapper instead, ``known.replace_x0``).
The likelihood (``gaussdiff.likelihood.ode_nll``) integrates the same drift the other way.
"""

from __future__ import annotations

import torch
from torchdiffeq import odeint

from ..errors import InputError, check_positive
from ..param import CountingDenoiser, Denoiser
from ..schedule import NoiseSchedule
from .grids import check_grid
from .spec import Option, SamplerSpec

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")  # torchdiffeq's step-size-controlled


def check_solver(rtol, atol, method: str) -> None:
    """Tolerances must be finite and positive, the method one of torchdiffeq's adaptive ones."""
    check_positive("rtol", rtol)
    check_positive("atol", atol)
    if method not in ADAPTIVE_METHODS:
        raise InputError(f"unknown ODE method {method!r}; known: {', '.join(ADAPTIVE_METHODS)}")


def log_sigma(schedule: NoiseSchedule, t) -> torch.Tensor:
    """s = log sigma(t) = log(1 / abar - 1) / 2, float64; -inf at t = 0."""
    return 0.5 * torch.log(torch.expm1(-schedule.log_alpha_bar_at(t)))


def noise_level(schedule: NoiseSchedule, s) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, a = sqrt(abar)) at s = log sigma, float64; a goes through t so it is the abar the denoiser sees."""
    t = schedule.t_of_sigma(torch.exp(torch.as_tensor(s, dtype=torch.float64)))
    return t, torch.exp(0.5 * schedule.log_alpha_bar_at(t))


def pf_ode_drift(denoiser: Denoiser, schedule: NoiseSchedule, s, x: torch.Tensor) -> torch.Tensor:
    """dx/ds = a (a x - D(x, t(s))) at s = log sigma; one denoiser call."""
    t, a = noise_level(schedule, s)
    a = a.to(x.dtype)
    return a * (a * x - denoiser(x, t))


def pf_ode(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, grid, *, generator=None,
           rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", project=None, callback=None,
           stats: dict | None = None) -> torch.Tensor:
    """Solve the probability-flow ODE from grid[0] to the smallest positive t of ``grid``, then return x0_hat there.

    Deterministic (``generator`` is unused); ``project`` must be None (module doc). ``callback(i, t, x, x0_hat)``
    sees x at every later grid time t = grid[i + 1], after the solve: the solver picks its own steps, the grid times
    are only where its dense output is read, so x0_hat is None there; at t = 0 x = x0_hat, the last call's output.
    ``stats``, a dict, receives ``nfe``, the denoiser calls made (the solver's own choice of steps, plus one)."""
    if project is not None:
        raise InputError("pf_ode cannot apply project between its adaptive steps; "
                         "give known values through a denoiser wrapper (known.replace_x0) instead")
    check_solver(rtol, atol, method)
    grid = check_grid(grid, schedule.T)
    counted = CountingDenoiser(denoiser)
    times = grid[:-1]
    if callback is None and len(times) > 2:
        times = times[[0, -1]]  # keep only the ends: no (len(grid), *x.shape) stack of states
    states = [x_T]
    if len(times) > 1:
        states = odeint(lambda s, x: pf_ode_drift(counted, schedule, s, x), x_T,
                        log_sigma(schedule, times).to(x_T.device), rtol=rtol, atol=atol, method=method)
        if callback is not None:
            for i, (t, x) in enumerate(zip(times[1:], states[1:])):
                callback(i, t, x, None)
    x_0 = counted(states[-1], times[-1])
    if callback is not None:
        callback(len(grid) - 2, grid[-1], x_0, x_0)
    if stats is not None:
        stats["nfe"] = counted.calls
    return x_0


SPECS = (SamplerSpec("pf_ode", pf_ode, (Option("rtol", float, "relative tolerance of the adaptive solver (dopri5)"),
                                        Option("atol", float, "absolute tolerance of the adaptive solver (dopri5)")),
                     adaptive=True, projects=False, nfe=None),)
