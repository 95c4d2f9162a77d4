"""Exact log-likelihood by the probability-flow ODE (instantaneous change of variables).

Along the ODE dx/ds = f(x, s) of ``samplers.ode`` (s = log sigma, f = a (a x - D)), the log-density of the marginal
changes by the divergence of the drift (Chen et al. 2018, thm. 1; Song et al. 2021, eq. 39):
    log p_{s0}(x(s0)) = log p_{s1}(x(s1)) + int_{s0}^{s1} div_x f(x(s), s) ds,     div_x f = a^2 d - a tr(dD/dx).
- Ends: s1 = log sigma(T) with the sampler's prior N(0, I) for x_T, the model's own (it differs from q(x_T) by
  O(sqrt(abar_T) |E x_0| |x_T|), O(abar_T) for centred data);
  s0 = log sigma_min, sigma_min = 1e-3 by default: score_sde's eps = 1e-5 on its VP SDE (beta_min = 0.1) has
  1 - abar = 1e-6, the same sigma; t(sigma_min) is 0.01 on the linear schedule with T = 1000. The drift vanishes
  as sigma^2 there, so going below t = 1 costs few calls (1.3x) and shrinks the O(sigma^2 / data variance) bias of
  stopping early (max 0.013 nats on the 8 Gaussians at t = 1, 4e-4 at t = 0.01).
- Start: x(s0) = a0 y, the chain's x_{t0} without its O(sigma_min) noise, so log p_0(y) ~ log p_{t0}(a0 y) + d log a0.
- Divergence: the exact trace, one vector-Jacobian product per dimension (sum of e_i^T J e_i), or Hutchinson's
  estimate v^T J v with K fixed probes (Rademacher or Gaussian, E[v v^T] = I). The probes are drawn once, so the
  K log-densities are K independent unbiased estimates along one trajectory; their spread gives the standard error.
- Units: the ODE runs in model units y = transform.forward(x); log p(x) = log p(y) + log|det dy/dx|. Discrete data
  (``levels`` L: integers 0..L-1 in the user's units) are dequantized, x + u with u ~ U(-1/2, 1/2)^d (the bin of width
  1 around each level, as the discretized decoder of the bound), so -log p(x + u) bounds -log P(bin)
  = -log int_bin p from above in expectation (Jensen); the bin volume is 1, its log 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from ..errors import InputError, check_int
from ..param import CountingDenoiser, Denoiser
from ..samplers.ode import check_solver, log_sigma, noise_level, pf_ode_drift
from ..schedule import NoiseSchedule

PROBES = ("rademacher", "gaussian")


@dataclass(frozen=True)
class ODELikelihood:
    """Per-sample results of :func:`ode_nll`, in the user's units."""

    nll: torch.Tensor  # (B,) -log p(x) in nats (discrete data: of the dequantized point, a bound on -log P(bin))
    probe_se: torch.Tensor  # (B,) standard error of the Hutchinson estimate in nats; 0 with the exact trace
    nfe: int  # denoiser calls, each on the whole batch
    dim: int  # d, the number of values per sample

    @property
    def bits_per_dim(self) -> torch.Tensor:
        return self.nll / (self.dim * math.log(2))


def probe_vectors(probes: int, probe: str, x: torch.Tensor, generator=None) -> torch.Tensor:
    """(P, *x.shape): the unit vectors e_1..e_d for the exact trace (probes = 0), else P random probes."""
    d = x[0].numel()
    if probes == 0:
        return torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, 1, *x.shape[1:]).expand(d, *x.shape)
    if probe == "rademacher":  # drawn where the (CPU) generator lives, then moved
        return (2 * torch.randint(0, 2, (probes, *x.shape), generator=generator) - 1).to(x)
    return torch.randn((probes, *x.shape), generator=generator, dtype=x.dtype).to(x.device)


def quadratic_forms(f: torch.Tensor, x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """v^T (df/dx) v per sample for each v of ``vectors`` (P, B, ...) -> (P, B); one backward pass per v."""
    last = len(vectors) - 1
    return torch.stack([(torch.autograd.grad(f, x, v, retain_graph=i < last)[0] * v).flatten(1).sum(1)
                        for i, v in enumerate(vectors)])


def check_options(probes, probe, sigma_min, schedule: NoiseSchedule) -> None:
    """probes is 0 or >= 2, probe a known kind, sigma_min inside (0, sigma(T))."""
    if not isinstance(probes, int) or isinstance(probes, bool) or probes < 0 or probes == 1:
        raise InputError(f"probes must be 0 (exact trace) or an integer >= 2 (Hutchinson; its standard error "
                         f"needs two), got {probes!r}")
    if probe not in PROBES:
        raise InputError(f"unknown probe {probe!r}; known: {', '.join(PROBES)}")
    sigma_T = schedule.sigma_at(schedule.T).item()
    if not isinstance(sigma_min, (int, float)) or isinstance(sigma_min, bool) or not 0 < sigma_min < sigma_T:
        raise InputError(f"sigma_min must lie in (0, sigma(T) = {sigma_T:.4g}), got {sigma_min!r}")


def ode_log_prob(denoiser: Denoiser, y: torch.Tensor, schedule: NoiseSchedule, *, sigma_min: float = 1e-3,
                 rtol: float = 1e-5, atol: float = 1e-5, method: str = "dopri5", probes: int = 0,
                 probe: str = "rademacher", generator=None) -> tuple[torch.Tensor, int]:
    """log p_0(y) of data y (B, ...) in model units: (P, B) estimates (P = 1 for the exact trace), and the NFE."""
    check_solver(rtol, atol, method)
    check_options(probes, probe, sigma_min, schedule)
    if y.ndim < 2 or y.shape[0] == 0 or not torch.isfinite(y).all():
        raise InputError(f"data must be a non-empty batch (B, ...) of finite values, got shape {tuple(y.shape)}"
                         + ("" if torch.isfinite(y).all() else " with NaN or Inf"))
    counted = CountingDenoiser(denoiser)
    vectors = probe_vectors(probes, probe, y, generator)

    def flow(s, state):  # d/ds (x, log-density increments) = (f, div f)
        with torch.enable_grad():
            x = state[0].detach().requires_grad_(True)
            f = pf_ode_drift(counted, schedule, s, x)
            forms = quadratic_forms(f, x, vectors)
        return f.detach(), (forms.sum(0, keepdim=True) if probes == 0 else forms).detach()

    s0 = torch.log(torch.as_tensor(sigma_min, dtype=torch.float64))
    a0 = noise_level(schedule, s0)[1]
    span = torch.stack([s0, log_sigma(schedule, schedule.T)]).to(y.device)
    delta0 = y.new_zeros(max(probes, 1), y.shape[0])
    x_T, delta = (z[-1] for z in odeint(flow, (a0.to(y.dtype) * y, delta0), span, rtol=rtol, atol=atol,
                                         method=method))
    d = y[0].numel()
    log_prior = -0.5 * x_T.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi)  # log N(x_T; 0, I)
    return log_prior + delta + d * torch.log(a0).item(), counted.calls


def check_levels(x: torch.Tensor, levels) -> None:
    """Discrete data with ``levels`` levels are integers 0..levels-1, levels >= 2."""
    check_int("the number of levels", levels, 2)
    integral = bool((x == x.round()).all())
    if not integral or x.min() < 0 or x.max() > levels - 1:
        raise InputError(f"discrete data with {levels} levels must be integers 0..{levels - 1}; got values in "
                         f"[{x.min().item():g}, {x.max().item():g}]" + ("" if integral else ", not all integers"))


def dequantize(x: torch.Tensor, levels: int, generator=None) -> torch.Tensor:
    """x + U(-1/2, 1/2) for data x of integers 0..levels-1, float64."""
    x = torch.as_tensor(x, dtype=torch.float64)
    check_levels(x, levels)
    return x + torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device) - 0.5


def ode_nll(denoiser: Denoiser, x: torch.Tensor, schedule: NoiseSchedule, *, transform=None, levels: int | None = None,
            generator=None, **options) -> ODELikelihood:
    """-log p(x) per sample for data x (B, ...) in the user's units, by the probability-flow ODE (module doc).

    ``transform`` maps user to model units (``forward`` and ``log_abs_det_jacobian``, e.g. ``data.Standardize``);
    None is the identity. ``levels``: discrete data, dequantized first. The ODE state and the log-density are float64
    (a float32 network needs a denoiser that casts). ``options`` go to :func:`ode_log_prob` (sigma_min, rtol, atol,
    method, probes, probe); ``generator`` draws the dequantization noise, then the probes."""
    x = dequantize(x, levels, generator) if levels is not None else torch.as_tensor(x, dtype=torch.float64)
    y = transform.forward(x) if transform is not None else x
    log_p, nfe = ode_log_prob(denoiser, y, schedule, generator=generator, **options)
    if transform is not None:
        log_p = log_p + transform.log_abs_det_jacobian(x).to(log_p)
    se = log_p.std(0) / math.sqrt(len(log_p)) if len(log_p) > 1 else torch.zeros_like(log_p[0])
    return ODELikelihood(nll=-log_p.mean(0), probe_se=se, nfe=nfe, dim=y[0].numel())
