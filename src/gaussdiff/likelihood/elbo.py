"""The variational bound of a reverse model on a batch of data, term by term (Ho et al. eq. 5).

    -log p(x_0) <= L_T + sum_{t=2}^{T} L_{t-1} + L_0        (terms in ``gaussdiff.bound``)

Each L_{t-1} is the KL at one draw x_t ~ q(x_t | x_0), the usual unbiased estimate of
E_q[KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))]. Two estimates of the sum over t, per data point:
- ``elbo``: every t = 1..T, in batches that mix data points and t: T network evaluations per point;
- ``elbo_importance``: K draws t ~ p (an ``ImportanceSampler``, e.g. fitted on a pilot ``elbo``),
  sum_t L_t ~ (1/K) sum_k L_{t_k} / p_{t_k}: unbiased, K evaluations per point.
Units: nats per data point; bits/dim = nats / (D log 2). With the discretized decoder (``levels``) the
bound is on a probability (>= 0, the same in any units). With the continuous decoder it is on a density:
in model units y = f(x), log p(x) = log p(y) + log|det df/dx|, so L_0 in the data's own units is the
model-unit L_0 minus ``log_det_jacobian``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..bound import model_mean, prior_kl, vlb_terms
from ..chain import q_sample
from ..errors import InputError, check_int
from ..losses import ImportanceSampler
from ..param import ReverseModel
from ..schedule import NoiseSchedule
from .summary import mean_se


@dataclass
class Bound:
    """Per data point (N,) in nats: ``prior`` L_T, ``diffusion`` sum_{t>=2} L_{t-1}, ``decoder`` L_0 (data units);
    ``per_t`` (T,): the mean term at t over the evaluated pairs (t = 1: L_0 as ``decoder``; NaN where none)."""

    prior: torch.Tensor
    diffusion: torch.Tensor
    decoder: torch.Tensor
    per_t: torch.Tensor
    dim: int
    estimate: str
    evaluations: int  # network evaluations per data point

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.diffusion + self.decoder

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Mean over the data and its standard error (None for one point), in nats and bits/dim, per term."""
        to_bpd = 1 / (self.dim * math.log(2))
        out = {}
        for name, x in (("total", self.total), ("L_T", self.prior), ("sum L_{t-1}", self.diffusion),
                        ("L_0", self.decoder)):
            s = mean_se(x)
            out[name] = {"nats": s["mean"], "nats_se": s["se"], "bits_per_dim": s["mean"] * to_bpd,
                         "bits_per_dim_se": None if s["se"] is None else s["se"] * to_bpd}
        return out


def check_quantized(x: torch.Tensor, levels: int, lo, hi) -> None:
    """InputError unless ``levels`` >= 2 and every value of x is one of the levels lo, lo + w, ..., hi
    (lo, hi scalars or per-feature; w = (hi - lo) / (levels - 1)), to 1e-3 of a bin."""
    check_int("the number of levels", levels, 2)
    lo, hi = (torch.as_tensor(v, dtype=torch.float64).to(x.device) for v in (lo, hi))
    if not (lo < hi).all():
        raise InputError(f"the decoder's range needs lo < hi, got lo {lo.tolist()}, hi {hi.tolist()}")
    k = (x.double() - lo) / ((hi - lo) / (levels - 1))
    outside = (k < -1e-3) | (k > levels - 1 + 1e-3)
    if outside.any():
        raise InputError(f"{int(outside.sum())} data values lie outside the decoder's range "
                         f"[{_fmt(lo)}, {_fmt(hi)}] of {levels} levels (first: {x[outside][0].item():g})")
    off = (k - k.round()).abs() > 1e-3
    if off.any():
        raise InputError(f"{int(off.sum())} data values are not on the {levels} levels of "
                         f"[{_fmt(lo)}, {_fmt(hi)}] (first: {x[off][0].item():g}); quantize the data first")


def _fmt(v: torch.Tensor) -> str:
    return f"{v.item():g}" if v.numel() == 1 else "per feature"


def _check_data(x0: torch.Tensor, levels, lo, hi, log_det_jacobian) -> torch.Tensor:
    """The log-Jacobian as float64 (N,) (a number applies to every point), after checking the data and it."""
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise InputError(f"data must have shape (N, ...) with N >= 1, got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise InputError("data contain NaN or infinite values")
    ldj = torch.as_tensor(log_det_jacobian, dtype=torch.float64).cpu()
    if ldj.ndim > 1 or ldj.numel() not in (1, x0.shape[0]):
        raise InputError(f"log_det_jacobian must be a number or one per data point, got shape {tuple(ldj.shape)}")
    if levels is not None:
        check_quantized(x0, levels, lo, hi)
        if (ldj != 0).any():
            raise InputError("a discretized decoder gives probabilities: no log-Jacobian applies")
    elif not torch.isfinite(ldj).all():
        raise InputError(f"log_det_jacobian must be finite, got {ldj.tolist()}"[:200])
    return ldj.expand(x0.shape[0])


def term_at(reverse_model: ReverseModel, x0: torch.Tensor, schedule: NoiseSchedule, t: torch.Tensor,
            eps: torch.Tensor, levels: int | None = None, lo=-1.0, hi=1.0) -> torch.Tensor:
    """The bound's term at t (B,) (L_{t-1}, or L_0 where t = 1), nats, float64, at x_t = q_sample(x0, t, eps);
    the model sees x_t in x0's dtype."""
    x0_64 = x0.double()
    x_t = q_sample(x0_64, t, schedule, eps.double())
    x0_hat, log_var = (y.double() for y in reverse_model(x_t.to(x0.dtype), t))
    return vlb_terms(x0_64, x_t, t, schedule, model_mean(x0_hat, x_t, t, schedule), log_var, levels, lo, hi)


def _pairs(total: int, batch_size: int):
    check_int("batch_size", batch_size, 1)
    for start in range(0, total, batch_size):
        yield torch.arange(start, min(start + batch_size, total))


def _evaluate(reverse_model, x0, schedule, batches, levels, lo, hi, log_det_jacobian, generator, callback):
    """Sum scale * term over the batches of (point i, t, scale) into per-point L_0 and sum L_{t-1}; mean term per t."""
    N, T = x0.shape[0], schedule.T
    sums, counts = torch.zeros(T, dtype=torch.float64), torch.zeros(T, dtype=torch.float64)
    diffusion, decoder = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
    for i, t, scale in batches:
        eps = torch.randn((len(i),) + x0.shape[1:], generator=generator, dtype=torch.float64).to(x0.device)
        terms = term_at(reverse_model, x0[i.to(x0.device)], schedule, t.to(x0.device), eps, levels, lo, hi).cpu()
        diffusion.index_add_(0, i, torch.where(t > 1, scale * terms, 0.0))
        decoder.index_add_(0, i, torch.where(t == 1, scale * terms, 0.0))
        sums.index_add_(0, t - 1, terms)
        counts.index_add_(0, t - 1, torch.ones_like(terms))
        if callback is not None:
            callback(t, terms)
    per_t = torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)
    if levels is None:  # L_0 in the data's own units
        decoder -= log_det_jacobian
        per_t[0] -= log_det_jacobian.mean()
    return prior_kl(x0.double(), schedule).cpu(), diffusion, decoder, per_t


@torch.no_grad()
def elbo(reverse_model: ReverseModel, x0: torch.Tensor, schedule: NoiseSchedule, *, levels: int | None = None,
         lo=-1.0, hi=1.0, log_det_jacobian=0.0, batch_size: int = 4096, generator=None,
         callback=None) -> Bound:
    """The bound of every data point of x0 (N, ...) over all T terms, ``batch_size`` (point, t) pairs per
    network call; ``callback(t, terms)`` sees each batch's t (n,) and terms (n,) (nats). ``log_det_jacobian``: a
    number, or one per point (N,) (a transform's ``log_abs_det_jacobian(x)``)."""
    log_det_jacobian = _check_data(x0, levels, lo, hi, log_det_jacobian)
    T = schedule.T
    batches = ((pair // T, pair % T + 1, 1.0) for pair in _pairs(x0.shape[0] * T, batch_size))  # point-major
    terms = _evaluate(reverse_model, x0, schedule, batches, levels, lo, hi, log_det_jacobian, generator, callback)
    return Bound(*terms, x0[0].numel(), "exact", T)


@torch.no_grad()
def elbo_importance(reverse_model: ReverseModel, x0: torch.Tensor, schedule: NoiseSchedule,
                    sampler: ImportanceSampler, draws: int = 16, *, levels: int | None = None, lo=-1.0, hi=1.0,
                    log_det_jacobian=0.0, batch_size: int = 4096, generator=None, callback=None) -> Bound:
    """The bound of every data point of x0 from ``draws`` = K importance-sampled t each (see module doc):
    per point sum_t L_t ~ (1/K) sum_k T w_k L_{t_k}, with t_k and w = 1 / (T p_t) from ``sampler``."""
    log_det_jacobian = _check_data(x0, levels, lo, hi, log_det_jacobian)
    if sampler.T != schedule.T:
        raise InputError(f"the importance sampler is for T = {sampler.T}, the schedule has T = {schedule.T}")
    check_int("the number of t draws per point", draws, 1)

    def batches():
        for pair in _pairs(x0.shape[0] * draws, batch_size):
            t, w = sampler.sample(len(pair), generator)
            yield pair // draws, t, schedule.T * w / draws

    terms = _evaluate(reverse_model, x0, schedule, batches(), levels, lo, hi, log_det_jacobian, generator, callback)
    return Bound(*terms, x0[0].numel(), "importance", draws)
