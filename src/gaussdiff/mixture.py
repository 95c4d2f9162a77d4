"""A Gaussian mixture with full covariances, and its exact diffusion quantities.

If x_0 ~ sum_k w_k N(m_k, C_k), then x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps is again a mixture:
    x_t ~ sum_k w_k N(sqrt(abar) m_k, abar C_k + (1 - abar) I)
and, with r_k(x_t) the responsibilities under that marginal,
    E[x_0 | x_t] = sum_k r_k(x_t) (m_k + sqrt(abar) C_k S_k^{-1} (x_t - sqrt(abar) m_k)),  S_k = abar C_k + (1-abar) I
This exact denoiser is the yardstick for every sampler and likelihood test. All in float64.

The oracles of conditioning: ``component(k)`` is the exact class-conditional model when the classes are the
components, and ``condition(mask, x_known)`` the exact p(x_u | x_o), again a mixture (o: known, u: unknown).
"""

from __future__ import annotations

import math

import torch

from .errors import InputError, check_int
from .param import Denoiser, eps_from_x0, score_from_x0
from .schedule import NoiseSchedule


class GaussianMixture:
    """sum_k w_k N(m_k, C_k): weights (K,), means (K, D), covs (K, D, D)."""

    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        K, D = self.means.shape
        if self.weights.shape != (K,) or self.covs.shape != (K, D, D):
            raise InputError("mixture needs weights (K,), means (K, D), covs (K, D, D)")
        if (self.weights < 0).any() or abs(self.weights.sum().item() - 1) > 1e-9:
            raise InputError("mixture weights must be non-negative and sum to 1")
        self._chol = torch.linalg.cholesky(self.covs)  # raises if a covariance is not positive definite

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator=None, return_labels: bool = False):
        """n draws (n, D) in float64 (and their component labels)."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[labels] + torch.einsum("nij,nj->ni", self._chol[labels], z)
        return (x, labels) if return_labels else x

    def component(self, k: int) -> "GaussianMixture":
        """The k-th component alone, N(m_k, C_k) (weight 1)."""
        k = check_int("component index", k, 0, len(self.weights) - 1)
        return GaussianMixture(torch.ones(1, dtype=torch.float64), self.means[k:k + 1], self.covs[k:k + 1])

    def _known_unknown(self, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices of the known coordinates, of the unknown ones) of a (D,) mask, True / 1 = known."""
        mask = torch.as_tensor(mask)
        if mask.shape != (self.dim,):
            raise InputError(f"mask must have shape ({self.dim},) (True = known), got {tuple(mask.shape)}")
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise InputError("mask must be boolean or 0/1 (1 = known)")
        mask = mask.to(torch.bool)
        return mask.nonzero().flatten(), (~mask).nonzero().flatten()

    def marginal_over(self, mask) -> "GaussianMixture":
        """The law of the known coordinates (mask True): sum_k w_k N(m_k,o, C_k,oo)."""
        o, _ = self._known_unknown(mask)
        if len(o) == 0:
            raise InputError("mask has no known coordinate: there is no marginal to take")
        return GaussianMixture(self.weights, self.means[:, o], self.covs[:, o][:, :, o])

    def condition(self, mask, x_known) -> "GaussianMixture":
        """The exact p(x_u | x_o = x_known[o]) over the unknown coordinates u (mask False), a mixture:
            w_k' propto w_k N(x_o; m_k,o, C_k,oo)
            m_k'  = m_k,u + C_k,uo C_k,oo^{-1} (x_o - m_k,o)
            C_k'  = C_k,uu - C_k,uo C_k,oo^{-1} C_k,ou
        computed with L_k L_k^T = C_k,oo, A_k = L_k^{-1} C_k,ou, z_k = L_k^{-1} (x_o - m_k,o):
        m_k' = m_k,u + A_k^T z_k, C_k' = C_k,uu - A_k^T A_k, log w_k' = log w_k + log N(...) normalized in log space.
        ``x_known`` (D,): its unknown entries are ignored. All unknown: the mixture itself; all known: InputError."""
        o, u = self._known_unknown(mask)
        if len(u) == 0:
            raise InputError("mask marks every coordinate known: nothing is left to condition")
        if len(o) == 0:
            return GaussianMixture(self.weights, self.means, self.covs)
        x_known = torch.as_tensor(x_known, dtype=torch.float64)
        if x_known.shape != (self.dim,):
            raise InputError(f"x_known must have shape ({self.dim},), got {tuple(x_known.shape)}")
        if not torch.isfinite(x_known[o]).all():
            raise InputError("x_known has a NaN or infinite value at a known coordinate")
        L = torch.linalg.cholesky(self.covs[:, o][:, :, o])  # (K, O, O)
        A = torch.linalg.solve_triangular(L, self.covs[:, o][:, :, u], upper=False)  # (K, O, U)
        z = torch.linalg.solve_triangular(L, (x_known[o] - self.means[:, o]).unsqueeze(-1), upper=False)  # (K, O, 1)
        means = self.means[:, u] + (A.transpose(1, 2) @ z).squeeze(-1)
        covs = self.covs[:, u][:, :, u] - A.transpose(1, 2) @ A
        log_det = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_w = torch.log(self.weights) - 0.5 * (z.pow(2).sum((1, 2)) + log_det)  # the shared (2 pi)^O cancels
        return GaussianMixture(torch.softmax(log_w, 0), means, 0.5 * (covs + covs.transpose(1, 2)))

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; m_k, C_k), shape (N, K)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        diff = (x[:, None, :] - self.means[None]).unsqueeze(-1)  # (N, K, D, 1)
        sol = torch.linalg.solve_triangular(self._chol[None], diff, upper=False).squeeze(-1)
        log_det = 2 * torch.log(torch.diagonal(self._chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights) - 0.5 * (sol.pow(2).sum(-1) + log_det + self.dim * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """p(k | x), shape (N, K)."""
        return torch.softmax(self.component_log_prob(x), dim=1)

    def marginal(self, alpha_bar: float) -> "GaussianMixture":
        """The law of x_t when abar_t = alpha_bar: means sqrt(abar) m_k, covs abar C_k + (1 - abar) I."""
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, ab.sqrt() * self.means, ab * self.covs + (1 - ab) * eye)

    def posterior_x0_mean(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] at per-sample abar (N,), float64 (see module doc)."""
        x_t = torch.as_tensor(x_t, dtype=torch.float64)
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).expand(x_t.shape[0])[:, None, None, None]
        eye = torch.eye(self.dim, dtype=torch.float64)
        S = ab * self.covs[None] + (1 - ab) * eye  # (N, K, D, D)
        L = torch.linalg.cholesky(S)
        diff = (x_t[:, None, :] - ab[..., 0].sqrt() * self.means[None]).unsqueeze(-1)  # (N, K, D, 1)
        S_inv_diff = torch.cholesky_solve(diff, L)
        # log r_k up to a constant: log w_k + log N(x_t; sqrt(abar) m_k, S_k)
        log_det = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        log_r = torch.log(self.weights) - 0.5 * ((diff * S_inv_diff).sum((-2, -1)) + log_det)
        r = torch.softmax(log_r, dim=1)  # (N, K)
        comp_mean = self.means[None] + ab[..., 0].sqrt() * (self.covs[None] @ S_inv_diff).squeeze(-1)
        return (r[..., None] * comp_mean).sum(1)

    def denoiser(self, schedule: NoiseSchedule) -> Denoiser:
        """The exact ``denoiser(x_t, t) -> E[x_0 | x_t]`` under ``schedule``, in x_t's dtype."""

        def denoise(x_t: torch.Tensor, t) -> torch.Tensor:
            ab = schedule.alpha_bar_at(torch.as_tensor(t, dtype=torch.float64)).expand(x_t.shape[0])
            return self.posterior_x0_mean(x_t.cpu(), ab).to(x_t)

        return denoise

    def eps(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """E[eps | x_t]."""
        x_t = torch.as_tensor(x_t, dtype=torch.float64)
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).expand(x_t.shape[0])
        return eps_from_x0(self.posterior_x0_mean(x_t, ab), x_t, ab)

    def score(self, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        """grad log q_t(x_t), exact."""
        x_t = torch.as_tensor(x_t, dtype=torch.float64)
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64).expand(x_t.shape[0])
        return score_from_x0(self.posterior_x0_mean(x_t, ab), x_t, ab)
