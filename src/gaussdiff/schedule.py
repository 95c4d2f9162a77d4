"""Noise schedules: the betas of the forward chain and everything derived from them.

Indexing follows the seed: ``betas[t]`` is the variance of the step t -> t+1, for t = 0..T-1, and
``alpha_bar[t] = prod_{s<t} (1 - betas[s])`` has T + 1 entries with ``alpha_bar[0] = 1`` (data).
Ho et al.'s beta_t is our ``betas[t-1]``; diffusers' ``alphas_cumprod[i]`` is our
``alpha_bar[i+1]``. Everything is computed in float64.

Fractional t (continuous-time samplers, ODEs) goes through :meth:`NoiseSchedule.alpha_bar_at` and
:meth:`NoiseSchedule.t_of_log_alpha_bar`: log(alpha_bar) is piecewise linear between integer t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import InputError, check_int, check_memory

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "sigmoid_alpha_bar")


def _as_betas(betas) -> torch.Tensor:
    betas = torch.as_tensor(betas, dtype=torch.float64).detach().clone()
    if betas.ndim != 1 or betas.numel() == 0:
        raise InputError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
    if not torch.isfinite(betas).all():
        raise InputError("betas contain NaN or infinite values")
    if not ((betas > 0) & (betas < 1)).all():
        lo, hi = betas.min().item(), betas.max().item()
        raise InputError(f"every beta must lie in the open interval (0, 1); got min {lo:g}, max {hi:g}")
    return betas


@dataclass(frozen=True)
class NoiseSchedule:
    """The variances ``betas`` (T,) of the forward chain and the quantities derived from them."""

    betas: torch.Tensor
    config: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        betas = _as_betas(self.betas)
        object.__setattr__(self, "betas", betas)
        # log abar_t = sum_{s<t} log(1 - beta_s); log1p keeps precision for tiny betas.
        log_ab = torch.cat([betas.new_zeros(1), torch.cumsum(torch.log1p(-betas), 0)])
        object.__setattr__(self, "log_alpha_bar", log_ab)
        object.__setattr__(self, "alpha_bar", torch.exp(log_ab))
        if not self.config:
            object.__setattr__(self, "config", {"beta_schedule": "custom", "trained_betas": betas.tolist()})

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def log_snr(self) -> torch.Tensor:
        """log SNR_t = log(abar_t / (1 - abar_t)); +inf at t = 0."""
        return self.log_alpha_bar - torch.log(-torch.expm1(self.log_alpha_bar))

    @property
    def snr(self) -> torch.Tensor:
        return torch.exp(self.log_snr)

    # --- fractional t -------------------------------------------------------------------------
    def log_alpha_bar_at(self, t) -> torch.Tensor:
        """log abar at any t in [0, T], linear in t between integers; exact at integers (float64)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if ((t < 0) | (t > self.T)).any() or not torch.isfinite(t).all():
            raise InputError(f"t must lie in [0, {self.T}]")
        lo = t.floor().clamp(max=self.T - 1).long()
        frac = t - lo
        table = self.log_alpha_bar.to(t.device)
        return torch.lerp(table[lo], table[lo + 1], frac)

    def alpha_bar_at(self, t) -> torch.Tensor:
        return torch.exp(self.log_alpha_bar_at(t))

    def t_of_log_alpha_bar(self, log_ab) -> torch.Tensor:
        """Inverse of :meth:`log_alpha_bar_at` (log abar is strictly decreasing in t)."""
        log_ab = torch.as_tensor(log_ab, dtype=torch.float64)
        table = -self.log_alpha_bar.to(log_ab.device)  # increasing
        x = (-log_ab).clamp(table[0], table[-1])
        hi = torch.searchsorted(table, x.contiguous()).clamp(1, self.T)
        lo = hi - 1
        frac = (x - table[lo]) / (table[hi] - table[lo])
        return lo.to(torch.float64) + frac

    def sigma_at(self, t) -> torch.Tensor:
        """The variance-exploding noise level sigma = sqrt((1 - abar) / abar) of EDM / k-diffusion."""
        log_ab = self.log_alpha_bar_at(t)
        return torch.sqrt(torch.expm1(-log_ab))

    def t_of_sigma(self, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return self.t_of_log_alpha_bar(-torch.log1p(sigma**2))


# --- constructors --------------------------------------------------------------------------------
def _cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021): abar(u) = f(u) / f(0), f(u) = cos(((u + s) / (1 + s)) pi/2)^2."""
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return f(u) / f(torch.zeros(()))


def _sigmoid_alpha_bar(u: torch.Tensor, start=-3.0, end=3.0, tau=1.0) -> torch.Tensor:
    """Jabri et al. (2022) / Chen (2023): abar(u) = (sigmoid(end/tau) - sigmoid((u (end-start) + start)/tau))
    / (sigmoid(end/tau) - sigmoid(start/tau))."""
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    return (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)


def _betas_from_alpha_bar(fn, T: int, max_beta: float = 0.999) -> torch.Tensor:
    """betas[t] = min(1 - abar((t+1)/T) / abar(t/T), max_beta), as in improved-diffusion."""
    u = torch.arange(T + 1, dtype=torch.float64) / T
    ab = fn(u)
    return (1 - ab[1:] / ab[:-1]).clamp(min=1e-12, max=max_beta)


def make_schedule(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    trained_betas=None,
) -> NoiseSchedule:
    """Build a schedule by diffusers' field names; ``trained_betas`` gives the betas directly.

    - ``linear``: linspace(beta_start, beta_end, T) for every T (Ho et al., diffusers' meaning).
    - ``scaled_linear``: linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (latent diffusion).
    - ``squaredcos_cap_v2``: the cosine schedule, betas clipped at 0.999 (Nichol & Dhariwal).
    - ``sigmoid``: diffusers' sigmoid over betas, sigmoid(linspace(-6, 6, T)) (end - start) + start.
    - ``sigmoid_alpha_bar``: the literature's sigmoid schedule on abar (Jabri et al., Chen 2023).
    """
    if trained_betas is not None:
        betas = _as_betas(trained_betas)
        return NoiseSchedule(betas, {"beta_schedule": "custom", "trained_betas": betas.tolist()})
    T = check_int("num_train_timesteps", num_train_timesteps, 1)
    # building it holds at least 5 float64 arrays of T values (the betas twice, log(1 - beta), its cumulative sum and
    # log alpha_bar), before alpha_bar itself
    check_memory("num_train_timesteps", 40 * T, f"num_train_timesteps {T}: the noise schedule")
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float64) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        betas = _betas_from_alpha_bar(_cosine_alpha_bar, T)
    elif beta_schedule == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64)) * (beta_end - beta_start) + beta_start
    elif beta_schedule == "sigmoid_alpha_bar":
        betas = _betas_from_alpha_bar(_sigmoid_alpha_bar, T)
    else:
        raise InputError(f"unknown beta_schedule {beta_schedule!r}; known: {', '.join(BETA_SCHEDULES)}")
    config = {"beta_schedule": beta_schedule, "num_train_timesteps": T}
    if beta_schedule in ("linear", "scaled_linear", "sigmoid"):
        config.update(beta_start=beta_start, beta_end=beta_end)
    return NoiseSchedule(betas, config)


def schedule_from_config(config: dict) -> NoiseSchedule:
    """Inverse of ``schedule.config`` (what a saved model stores)."""
    known = {"beta_schedule", "num_train_timesteps", "beta_start", "beta_end", "trained_betas"}
    unknown = set(config) - known
    if unknown:
        raise InputError(f"unknown schedule field(s): {', '.join(sorted(unknown))}")
    if config.get("beta_schedule") == "custom":
        return make_schedule(trained_betas=config.get("trained_betas"))
    return make_schedule(**{k: v for k, v in config.items() if k != "trained_betas"})
