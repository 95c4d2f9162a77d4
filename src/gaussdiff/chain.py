"""The forward Markov chain of the seed, its closed-form marginals and the posterior.

Seed, eq. (1):   X_{t+1} = sqrt(1 - beta_t) X_t + sqrt(beta_t) eps_t,   eps_t ~ N(0, I)
Seed, recurrences for X_t | x_0 ~ N(mu_t, v_t I):
                 mu_{t+1} = sqrt(1 - beta_t) mu_t,   v_{t+1} = beta_t + (1 - beta_t) v_t,   mu_0 = x_0, v_0 = 0
Closed form:     mu_t = sqrt(abar_t) x_0,   v_t = 1 - abar_t
Posterior (Ho et al. eq. 6-7, written for any s < t so respaced samplers reuse it):
                 q(x_s | x_t, x_0) = N(c_0 x_0 + c_t x_t, var),   with a = abar_t / abar_s,
                 c_0 = sqrt(abar_s) (1 - a) / (1 - abar_t),   c_t = sqrt(a) (1 - abar_s) / (1 - abar_t),
                 var = (1 - abar_s) (1 - a) / (1 - abar_t)
"""

from __future__ import annotations

import torch

from .schedule import NoiseSchedule


def _bcast(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample coefficient (B,) or scalar, shaped to broadcast over x (B, ...), in x's dtype."""
    coef = coef.to(device=x.device, dtype=x.dtype)
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim)) if coef.ndim else coef


def forward_step(x_t: torch.Tensor, t: int, schedule: NoiseSchedule, eps: torch.Tensor) -> torch.Tensor:
    """One step of the chain: X_{t+1} = sqrt(1 - beta_t) x_t + sqrt(beta_t) eps."""
    beta = schedule.betas[t]
    return torch.sqrt(1 - beta).to(x_t.dtype) * x_t + torch.sqrt(beta).to(x_t.dtype) * eps


def simulate_chain(x0: torch.Tensor, schedule: NoiseSchedule, generator=None) -> torch.Tensor:
    """Run the chain step by step from x_0; returns the trajectory (T + 1, *x0.shape)."""
    xs = [x0]
    for t in range(schedule.T):
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        xs.append(forward_step(xs[-1], t, schedule, eps))
    return torch.stack(xs)


def marginal_by_recurrence(schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean coefficient m_t with mu_t = m_t x_0, variance v_t), t = 0..T, by the seed's recurrences."""
    m, v = [torch.ones((), dtype=torch.float64)], [torch.zeros((), dtype=torch.float64)]
    for beta in schedule.betas:
        m.append(torch.sqrt(1 - beta) * m[-1])  # mu_{t+1} = sqrt(1 - beta_t) mu_t
        v.append(beta + (1 - beta) * v[-1])  # v_{t+1} = beta_t + (1 - beta_t) v_t
    return torch.stack(m), torch.stack(v)


def marginal(schedule: NoiseSchedule, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed form of q(x_t | x_0): (sqrt(abar_t), 1 - abar_t), at integer or fractional t."""
    log_ab = schedule.log_alpha_bar_at(t)
    return torch.exp(0.5 * log_ab), -torch.expm1(log_ab)


def q_sample(x0: torch.Tensor, t, schedule: NoiseSchedule, eps: torch.Tensor) -> torch.Tensor:
    """A draw of x_t | x_0: sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    mean_coef, var = marginal(schedule, t)
    return _bcast(mean_coef, x0) * x0 + _bcast(torch.sqrt(var), x0) * eps


def posterior_coefficients(alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor):
    """(c_0, c_t, var) of q(x_s | x_t, x_0) for s < t, from abar_t and abar_s (see module doc)."""
    a = alpha_bar_t / alpha_bar_s
    c0 = torch.sqrt(alpha_bar_s) * (1 - a) / (1 - alpha_bar_t)
    ct = torch.sqrt(a) * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    var = (1 - alpha_bar_s) * (1 - a) / (1 - alpha_bar_t)
    return c0, ct, var


def posterior(schedule: NoiseSchedule, t):
    """q(x_{t-1} | x_t, x_0) for integer t in 1..T: (c_0, c_t, beta_tilde_t, clipped log beta_tilde_t).

    beta_tilde_1 = 0; its logarithm is clipped to log beta_tilde_2, as improved-diffusion does.
    """
    t = torch.as_tensor(t, dtype=torch.long)
    c0, ct, var = posterior_coefficients(schedule.alpha_bar[t], schedule.alpha_bar[t - 1])
    all_var = posterior_coefficients(schedule.alpha_bar[1:], schedule.alpha_bar[:-1])[2]
    clipped = torch.cat([all_var[1:2], all_var[1:]]) if schedule.T > 1 else schedule.betas
    return c0, ct, var, torch.log(clipped)[t - 1]


def posterior_mean(x0: torch.Tensor, x_t: torch.Tensor, c0: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """mu_tilde = c_0 x_0 + c_t x_t."""
    return _bcast(c0, x_t) * x0 + _bcast(ct, x_t) * x_t
