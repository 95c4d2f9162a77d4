"""The terms of the variational bound (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, eqs. 4-7).

    -log p(x_0) <= L = L_T + sum_{t=2}^{T} L_{t-1} + L_0,
    L_T     = KL(q(x_T | x_0) || N(0, I)),
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)),   x_t ~ q(x_t | x_0),
    L_0     = -log p(x_0 | x_1)                                 (the decoder),
with the reverse kernel p(x_{t-1} | x_t) = N(mu(x_t, t), exp(log_var(x_t, t))). Nats throughout;
bits/dim divides by D log 2. The reverse variance, by diffusers' ``variance_type`` names:
    fixed_small    beta_tilde_t (log clipped at t = 1 to log beta_tilde_2, as improved-diffusion)
    fixed_large    beta_t (Ho's beta_t = our betas[t-1]), with beta_tilde_2 at t = 1 (improved-diffusion)
    learned_range  log var = v log beta_t + (1 - v) log beta_tilde_t,  v = (out + 1) / 2   (Nichol eq. 15)
Shapes: x, mean, log_var (B, ...); t a long tensor (B,) or an int in 1..T; terms are (B,) per sample.
"""

from __future__ import annotations

import math

import torch

from .chain import _bcast, posterior, posterior_mean
from .errors import InputError
from .schedule import NoiseSchedule

VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")


def check_variance_type(variance_type: str) -> str:
    if variance_type not in VARIANCE_TYPES:
        raise InputError(f"unknown variance_type {variance_type!r}; known: {', '.join(VARIANCE_TYPES)}")
    return variance_type


def _sum_per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).sum(1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise (arguments broadcast):
    1/2 (logvar2 - logvar1 + e^(logvar1 - logvar2) + (mean1 - mean2)^2 e^(-logvar2) - 1)."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1)


def prior_kl(x0: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """L_T = KL(N(sqrt(abar_T) x_0, (1 - abar_T) I) || N(0, I)) per sample (B,), nats."""
    log_ab = schedule.log_alpha_bar[-1]
    mean = torch.exp(0.5 * log_ab).to(x0.dtype) * x0
    log_var = torch.log(-torch.expm1(log_ab)).to(x0.dtype)  # log(1 - abar_T)
    return _sum_per_sample(normal_kl(mean, log_var, torch.zeros_like(x0), torch.zeros_like(x0)))


def continuous_gaussian_log_likelihood(x, mean, log_scale) -> torch.Tensor:
    """log N(x; mean, e^(2 log_scale)) elementwise: -log(2 pi)/2 - log_scale - ((x - mean) e^-log_scale)^2 / 2."""
    z = (x - mean) * torch.exp(-log_scale)
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * z**2


def _log_normal_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for finite a < b, without cancellation: a bin right of 0 is mirrored to the
    left (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)), then log Phi(b) + log(1 - Phi(a) / Phi(b))."""
    right = a + b > 0
    a, b = torch.where(right, -b, a), torch.where(right, -a, b)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return log_b + torch.log(-torch.expm1(log_a - log_b))


def discretized_gaussian_log_likelihood(x, mean, log_scale, levels: int, lo=-1.0, hi=1.0) -> torch.Tensor:
    """log P(bin of x) under N(mean, e^(2 log_scale)), elementwise (Ho et al. eq. 13).

    The ``levels`` values lo, lo + w, ..., hi (w = (hi - lo) / (levels - 1); lo and hi may be per-feature
    tensors) own the bins [c - w/2, c + w/2]; the first bin is open to -inf and the last to +inf, so the
    probabilities of all bins sum to 1. x is taken to its nearest level.
    """
    lo, hi = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (lo, hi))
    width = (hi - lo) / (levels - 1)
    k = torch.round((x - lo) / width).clamp(0, levels - 1)
    inv_scale = torch.exp(-log_scale)
    # Edges lo + (k +- 1/2) w: neighbouring bins share bit-identical edges, so no mass is lost or counted twice.
    lower, upper = ((lo + (k + h) * width - mean) * inv_scale for h in (-0.5, 0.5))
    inner = _log_normal_mass(lower, upper)
    first, last = torch.special.log_ndtr(upper), torch.special.log_ndtr(-lower)  # P(z < upper), P(z > lower)
    return torch.where(k == 0, first, torch.where(k == levels - 1, last, inner))


def reverse_log_variance(schedule: NoiseSchedule, t, variance_type: str, out=None) -> torch.Tensor:
    """log sigma_t^2 of p(x_{t-1} | x_t) for integer t in 1..T (see module doc): (B,) for the fixed types;
    for ``learned_range`` the shape of ``out``, the network's variance channels (v = (out + 1) / 2)."""
    check_variance_type(variance_type)
    t = torch.as_tensor(t, dtype=torch.long)
    log_small = posterior(schedule, t)[3]  # clipped log beta_tilde_t
    log_beta = torch.log(schedule.betas)[t - 1]  # Ho's beta_t
    if variance_type == "fixed_small":
        return log_small
    if variance_type == "fixed_large":
        return torch.where(t == 1, log_small, log_beta)
    if out is None:
        raise InputError("learned_range needs the network's variance channels (a model with a variance head)")
    frac = (out + 1) / 2
    return frac * _bcast(log_beta, out) + (1 - frac) * _bcast(log_small, out)


def vlb_terms(x0, x_t, t, schedule: NoiseSchedule, mean, log_var, levels: int | None = None, lo=-1.0,
              hi=1.0) -> torch.Tensor:
    """The bound's term at t per sample (B,), nats: L_{t-1} (a KL) where t >= 2, L_0 (the decoder's NLL of x_0)
    where t = 1; ``mean`` and ``log_var`` (the shape of x_0, or broadcastable to it, e.g. (B, 1)) are
    those of p(x_{t-1} | x_t).

    The decoder is discretized with ``levels`` bins on [lo, hi] (a probability, so L_0 >= 0), or a
    continuous Gaussian density when ``levels`` is None (model units; add the transform's log-Jacobian
    for the user's units).
    """
    t = torch.as_tensor(t, dtype=torch.long, device=x0.device).expand(x0.shape[0])
    c0, ct, _, true_log_var = posterior(schedule, t.cpu())
    true_mean = posterior_mean(x0, x_t, c0, ct)
    kl = _sum_per_sample(normal_kl(true_mean, _bcast(true_log_var, x0), mean, log_var))
    log_scale = 0.5 * log_var
    if levels is None:
        log_lik = continuous_gaussian_log_likelihood(x0, mean, log_scale)
    else:
        log_lik = discretized_gaussian_log_likelihood(x0, mean, log_scale, levels, lo, hi)
    return torch.where(t == 1, -_sum_per_sample(log_lik.expand_as(x0)), kl)


def model_mean(x0_hat, x_t, t, schedule: NoiseSchedule) -> torch.Tensor:
    """mu(x_t, t) = mu_tilde(x0_hat, x_t) = c_0 x0_hat + c_t x_t: the reverse mean of Ho et al. eq. 11."""
    c0, ct, _, _ = posterior(schedule, torch.as_tensor(t, dtype=torch.long).cpu())
    return posterior_mean(x0_hat, x_t, c0, ct)
