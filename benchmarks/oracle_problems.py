"""The issue-4 oracle problems, a fast exact denoiser for them, and the metrics with their Monte Carlo floors.

Problems (both mixtures of Gaussians with diagonal covariances, data in their own units):
  - ``ring8``: 8 equal-weight components on a circle of radius 2, isotropic std 0.1 (2-D);
  - ``mix16``: 5 components in 16-D, from ``torch.Generator().manual_seed(0)``: means N(0, I), per-axis stds
    log-uniform in [0.05, 0.5] (each component and axis drawn apart), weights 0.10, 0.15, 0.20, 0.25, 0.30.

The exact denoiser E[x_0 | x_t] is :meth:`gaussdiff.mixture.GaussianMixture.posterior_x0_mean`; it factors
full covariances per sample and takes 0.7 s per call on 20,000 points in 16-D. For diagonal covariances
C_k = diag(c_k) the same formula is elementwise (s_k = abar c_k + 1 - abar):
    log r_k = log w_k - 1/2 sum_d [(x_d - a m_kd)^2 / s_kd + log s_kd],   a = sqrt(abar)
    E[x_0 | x_t] = sum_k r_k (m_k + a c_k / s_k (x_t - a m_k)),
written with matrix products (5 ms per call); tests/test_benchmark_metrics.py checks it against the package's.

Metrics of a sample set x (N, D), each sample assigned to its most likely component (argmax of p(k | x)):
  - within-mode std error: mean over components k and axes d of |std(x_d | k) / sqrt(C_k[d, d]) - 1|
    (and its signed mean, the bias: negative when modes are too narrow);
  - mode-weight total variation: 1/2 sum_k |N_k / N - w_k|;
  - SW2 against a fresh true set (``gaussdiff.metrics.sliced_w2``).
Floor = the same metric on fresh true sets of the same size (for SW2: against a second fresh set), mean and sd
over ``draws`` draws.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import cached_property

import torch

from gaussdiff.errors import InputError
from gaussdiff.metrics import sliced_w2
from gaussdiff.mixture import GaussianMixture
from gaussdiff.schedule import NoiseSchedule


@dataclass(frozen=True)
class DiagonalMixture:
    """sum_k w_k N(m_k, diag(stds_k^2)): weights (K,), means (K, D), stds (K, D), float64."""

    name: str
    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor

    @cached_property
    def mixture(self) -> GaussianMixture:
        return GaussianMixture(self.weights, self.means, torch.diag_embed(self.stds**2))

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def log_joint(self, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """log w_k + log N(x; sqrt(abar) m_k, diag(abar c_k + 1 - abar)), shape (N, K)."""
        a = math.sqrt(alpha_bar)
        s = alpha_bar * self.stds**2 + (1 - alpha_bar)  # (K, D)
        inv = 1 / s
        # sum_d (x_d - a m_kd)^2 / s_kd, expanded into products of (N, D) and (D, K)
        quad = (x * x) @ inv.T - (2 * a) * (x @ (self.means * inv).T) + (a * a) * (self.means**2 * inv).sum(1)
        return torch.log(self.weights) - 0.5 * (quad + torch.log(s).sum(1) + self.dim * math.log(2 * math.pi))

    def posterior_x0_mean(self, x_t: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """E[x_0 | x_t] at one noise level, float64 (module doc)."""
        a = math.sqrt(alpha_bar)
        c = self.stds**2
        r = torch.softmax(self.log_joint(x_t, alpha_bar), dim=1)  # (N, K)
        gain = a * c / (alpha_bar * c + (1 - alpha_bar))  # a c_k / s_k, (K, D)
        # sum_k r_k (m_k - a gain_k m_k) + x_t * sum_k r_k gain_k
        return r @ (self.means - a * gain * self.means) + x_t * (r @ gain)

    def denoiser(self, schedule: NoiseSchedule):
        """``denoiser(x_t, t) -> E[x_0 | x_t]`` with one t per call (a scalar, or (B,) all equal)."""

        def denoise(x_t: torch.Tensor, t) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
            if not (t == t[0]).all():
                raise InputError("the diagonal oracle takes one t per call")
            ab = schedule.alpha_bar_at(t[0]).item()
            return self.posterior_x0_mean(x_t.to(torch.float64), ab).to(x_t.dtype)

        return denoise

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The most likely component of each sample (argmax of p(k | x)), (N,)."""
        return self.log_joint(torch.as_tensor(x, dtype=torch.float64), 1.0).argmax(1)


def ring8() -> DiagonalMixture:
    angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return DiagonalMixture("ring8", torch.full((8,), 1 / 8, dtype=torch.float64), means,
                           torch.full((8, 2), 0.1, dtype=torch.float64))


def mix16() -> DiagonalMixture:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(5, 16, generator=g, dtype=torch.float64)
    u = torch.rand(5, 16, generator=g, dtype=torch.float64)
    stds = 0.05 * 10**u  # log-uniform in [0.05, 0.5]
    weights = torch.tensor([0.10, 0.15, 0.20, 0.25, 0.30], dtype=torch.float64)
    return DiagonalMixture("mix16", weights, means, stds)


PROBLEMS = {"ring8": ring8, "mix16": mix16}


# --- metrics --------------------------------------------------------------------------------------
def within_mode_std_error(problem: DiagonalMixture, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(mean |rel. error|, mean signed rel. error) of the per-axis std of each mode; a mode with
    fewer than 2 samples counts as std 0 (relative error -1)."""
    rel = torch.full_like(problem.stds, -1.0)
    for k in range(len(problem.weights)):
        xk = x[labels == k]
        if len(xk) >= 2:
            rel[k] = xk.std(0) / problem.stds[k] - 1
    return rel.abs().mean().item(), rel.mean().item()


def mode_weight_tv(problem: DiagonalMixture, labels: torch.Tensor) -> float:
    """1/2 sum_k |N_k / N - w_k|."""
    freq = torch.bincount(labels, minlength=len(problem.weights)).to(torch.float64) / len(labels)
    return 0.5 * (freq - problem.weights).abs().sum().item()


def sample_metrics(problem: DiagonalMixture, x: torch.Tensor) -> dict:
    """Within-mode std error and bias, and mode-weight TV of a finite sample set (N, D)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    labels = problem.assign(x)
    err, bias = within_mode_std_error(problem, x, labels)
    return {"std_err": err, "std_bias": bias, "tv": mode_weight_tv(problem, labels)}


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values)}


def floors(problem: DiagonalMixture, n: int, draws: int = 10, seed: int = 1000) -> dict:
    """Within-mode std error and bias, mode-weight TV of ``draws`` fresh true sets of n points: mean and sd."""
    per_draw = [sample_metrics(problem, problem.mixture.sample(n, generator=torch.Generator().manual_seed(seed + i)))
                for i in range(draws)]
    return {k: _mean_sd([r[k] for r in per_draw]) for k in per_draw[0]}


def sw2_floor(problem: DiagonalMixture, n: int, draws: int = 10, seed: int = 2000) -> dict:
    """SW2 between two fresh true sets of n points, ``draws`` times: mean and sd."""
    gens = [torch.Generator().manual_seed(seed + i) for i in range(draws)]
    return _mean_sd([sliced_w2(problem.mixture.sample(n, generator=g), problem.mixture.sample(n, generator=g))
                     for g in gens])
