"""Training losses and the loss-aware sampler of t.

Simplified loss (Ho et al. eq. 14, for any parameterization):
    L_simple = E_{t ~ U{1..T}, x_0, eps} || target(x_0, eps, t) - net(x_t, t) ||^2
The bound as a loss (Nichol & Dhariwal 2021, sec. 3.1), in bits/dim, with L_t the bound's term at t
(``bound.vlb_terms``: L_{t-1} for t >= 2, the decoder's L_0 for t = 1):
    L_vlb = sum_t L_t, estimated per sample by T L_t for t ~ U{1..T}
    L_hybrid = L_simple + lambda L_vlb,   lambda = 0.001,
where L_vlb sees the reverse mean under a stop-gradient, so that it trains only the learned variance
(the mean is left to L_simple), as in improved-diffusion.
Min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy") weights
L_simple per t so that, on the x_0 scale, it is min(SNR_t, gamma) || x0_hat - x_0 ||^2 (``loss_weight``).
Data with missing values (MissDiff, Ouyang et al. 2023, "MissDiff: Training Diffusion Models on Tabular Data with
Missing Values") train by L_simple on the observed entries alone: with the mask m (1 where observed) and x_0 set to 0
at its missing entries, L_simple = E || m * (target - net(x_t, t)) ||^2; no entry is imputed first (a data set may
fill them with the model's own imputations, which then only shape the network's input: ``Dataset.fill``).
Importance sampling of t (Nichol & Dhariwal sec. 3.3): p_t proportional to sqrt(E[L_t^2]) over the last
10 losses at t, uniform until every t has 10, mixed with 1e-3 of the uniform law; the weights
1 / (T p_t) keep the weighted loss an unbiased estimate of the uniform one.
"""

from __future__ import annotations

import math

import torch

from .bound import check_variance_type, model_mean, vlb_terms
from .chain import q_sample
from .errors import InputError, TrainingError
from .param import check_prediction_type, reverse_from_output, split_output, time_dtype, training_target
from .schedule import NoiseSchedule

LOSS_TYPES = ("simple", "hybrid", "vlb")
LOSS_WEIGHTINGS = ("none", "min_snr")
HYBRID_LAMBDA = 1e-3


def sample_t(batch: int, schedule: NoiseSchedule, generator=None, device=None) -> torch.Tensor:
    """t ~ U{1, ..., T} (at t = 0 there is no noise to predict); long tensor (B,)."""
    return torch.randint(1, schedule.T + 1, (batch,), generator=generator, device=device)


def _noised(x0: torch.Tensor, schedule: NoiseSchedule, t, eps, generator):
    """(t, eps, x_t), drawing t ~ U{1..T} and eps ~ N(0, I) where not given."""
    if t is None:
        t = sample_t(x0.shape[0], schedule, generator, x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return t, eps, q_sample(x0, t.cpu(), schedule, eps)  # float64 coefficients on the CPU (MPS has no float64)


def _mean_square(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample (B,): sum_i m_i (pred_i - target_i)^2 / D over the D entries of a sample (MissDiff's masked loss;
    m = 1 everywhere without ``mask``), so a missing entry adds nothing and passes no gradient to pred."""
    diff = pred - target
    if mask is not None:
        diff = torch.where(mask, diff, 0)
    return diff.pow(2).flatten(1).mean(1)


def check_missing_values(loss_type: str) -> None:
    """Only ``simple`` trains on data with missing values (masked): the bound's terms are densities of every entry."""
    if loss_type != "simple":
        raise InputError(f"loss_type {loss_type!r} cannot train on data with missing values; use --loss-type simple "
                         "(L_simple on the observed entries)")


def check_loss_weighting(weighting: str, gamma: float, loss_type: str = "simple") -> None:
    """``none`` or ``min_snr`` with a positive finite gamma; the weighting acts on L_simple, which ``vlb`` has not."""
    if weighting not in LOSS_WEIGHTINGS:
        raise InputError(f"unknown loss_weighting {weighting!r}; known: {', '.join(LOSS_WEIGHTINGS)}")
    if not (math.isfinite(gamma) and gamma > 0):
        raise InputError(f"min_snr_gamma must be a positive number, got {gamma}")
    if weighting != "none" and loss_type == "vlb":
        raise InputError(f"loss_weighting {weighting!r} weights L_simple; loss_type 'vlb' has none (use simple or "
                         "hybrid)")


def loss_weight(prediction_type: str, snr: torch.Tensor, weighting: str = "none", gamma: float = 5.0):
    """The factor (shaped as ``snr``) multiplying the per-sample L_simple of ``prediction_type`` at SNR_t.

    With x_t = a x_0 + s eps (a^2 = abar, s^2 = 1 - abar, SNR = a^2 / s^2), each target's error is a multiple of the
    error of the x_0 it implies: x0_hat - x_0 = -(s / a) (eps_hat - eps) = -s (v_hat - v), so
        ||eps_hat - eps||^2 = SNR ||x0_hat - x_0||^2,   ||v_hat - v||^2 = ||x0_hat - x_0||^2 / s^2 = (SNR + 1) ||.||^2.
    Min-SNR-gamma trains min(SNR, gamma) ||x0_hat - x_0||^2, i.e. multiplies the target's own loss by
        epsilon: min(SNR, gamma) / SNR,   v_prediction: min(SNR, gamma) / (SNR + 1),   sample: min(SNR, gamma).
    ``none`` is 1 (each target's plain mean square)."""
    if weighting == "none":
        return torch.ones_like(snr)
    check_loss_weighting(weighting, gamma)
    clipped = snr.clamp(max=gamma)
    return {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[
        check_prediction_type(prediction_type)]


def simple_loss(net, x0: torch.Tensor, schedule: NoiseSchedule, prediction_type: str, t=None, eps=None,
                generator=None, mask=None, **net_kwargs) -> torch.Tensor:
    """Per-sample L_simple (B,), averaged over data dimensions (on the observed entries of ``mask``, as in
    :func:`training_loss`); t and eps are drawn when not given."""
    return training_loss(net, x0, schedule, prediction_type, t=t, eps=eps, generator=generator, mask=mask,
                         **net_kwargs)[0]


def vlb_loss(out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
             prediction_type: str, variance_type: str, levels: int | None = None, lo=-1.0, hi=1.0) -> torch.Tensor:
    """T L_t in bits/dim per sample (B,) for the network output ``out`` at (x_t, t): with t ~ U{1..T} an
    unbiased estimate of L_vlb. ``levels`` (on [lo, hi]) picks the discretized decoder, None the continuous one."""
    x0_hat, log_var = reverse_from_output(out.to(x0.dtype), x_t, t, schedule, prediction_type, variance_type)
    nats = vlb_terms(x0, x_t, t, schedule, model_mean(x0_hat, x_t, t, schedule), log_var, levels, lo, hi)
    return schedule.T * nats / (x0[0].numel() * math.log(2))


def hybrid_loss(out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor,
                schedule: NoiseSchedule, prediction_type: str, levels: int | None = None, lo=-1.0, hi=1.0, weight=1.0):
    """(weight L_simple + lambda L_vlb, L_vlb) per sample (B,), from the output (prediction, variance values) of a
    network with a variance head; L_vlb sees the prediction detached, so it moves only the variance."""
    pred, var_out = split_output(out, x_t, learn_variance=True)
    frozen = torch.cat([pred.detach(), var_out], dim=1)
    vlb = vlb_loss(frozen, x0, x_t, t, schedule, prediction_type, "learned_range", levels, lo, hi)
    return weight * _mean_square(pred, target) + HYBRID_LAMBDA * vlb, vlb


def check_loss_type(loss_type: str, variance_type: str) -> None:
    """simple trains fixed variances, hybrid a learned_range one, vlb either."""
    if loss_type not in LOSS_TYPES:
        raise InputError(f"unknown loss_type {loss_type!r}; known: {', '.join(LOSS_TYPES)}")
    learned = check_variance_type(variance_type) == "learned_range"
    if (loss_type == "simple" and learned) or (loss_type == "hybrid" and not learned):
        raise InputError(f"loss_type {loss_type!r} does not go with variance_type {variance_type!r}: simple trains "
                         "fixed variances, hybrid a learned_range one, vlb either")


def training_loss(net, x0: torch.Tensor, schedule: NoiseSchedule, prediction_type: str, loss_type: str = "simple",
                  variance_type: str = "fixed_small", t=None, eps=None, *, levels: int | None = None, lo=-1.0,
                  hi=1.0, generator=None, loss_weighting: str = "none", min_snr_gamma: float = 5.0, mask=None,
                  **net_kwargs):
    """One step's per-sample loss to backpropagate (B,) and the per-sample L_vlb estimate T L_t in bits/dim
    (B,), detached (None for ``simple``), with one network call. ``simple`` trains the mean only (fixed
    variances), ``hybrid`` the mean by L_simple and a learned_range variance by L_vlb, ``vlb`` both by L_vlb.
    ``loss_weighting`` (none, min_snr) weights L_simple per t (:func:`loss_weight`).

    ``mask`` (bool, shaped as x0, True where observed; None: all are): MissDiff's masked L_simple,
        weight_t * sum_i m_i (target_i - pred_i)^2 / D,
    x0's missing entries as given (a data set's fill; NaN taken as 0: there x_t = sqrt(1 - abar_t) eps); only
    ``simple`` takes a mask."""
    check_loss_type(loss_type, variance_type)
    check_loss_weighting(loss_weighting, min_snr_gamma, loss_type)
    if mask is not None:
        check_missing_values(loss_type)
        if mask.shape != x0.shape:
            raise ValueError(f"the mask's shape {tuple(mask.shape)} is not the data's {tuple(x0.shape)}")
        x0 = torch.where(~mask & torch.isnan(x0), 0, x0)
    t, eps, x_t = _noised(x0, schedule, t, eps, generator)
    weight = loss_weight(prediction_type, schedule.snr[t.cpu()], loss_weighting, min_snr_gamma).to(x0)
    target = training_target(prediction_type, x0, eps, schedule.alpha_bar[t.cpu()])
    out = net(x_t, t.to(device=x0.device, dtype=time_dtype(x0)), **net_kwargs)
    if loss_type == "simple":
        return weight * _mean_square(split_output(out, x_t, learn_variance=False)[0], target, mask), None
    if loss_type == "vlb":
        vlb = vlb_loss(out, x0, x_t, t, schedule, prediction_type, variance_type, levels, lo, hi)
        return vlb, vlb.detach()
    loss, vlb = hybrid_loss(out, x0, x_t, t, target, schedule, prediction_type, levels, lo, hi, weight)
    return loss, vlb.detach()


class ImportanceSampler:
    """Draws t in 1..T with p_t proportional to sqrt(E[L_t^2]) over the last ``history`` losses seen at t
    (uniform until every t has them), mixed with ``uniform_share`` of the uniform law (Nichol & Dhariwal)."""

    def __init__(self, T: int, history: int = 10, uniform_share: float = 1e-3):
        self.T, self.uniform_share = T, uniform_share
        self.losses = torch.zeros(T, history, dtype=torch.float64)  # row t - 1: oldest first, newest last
        self.counts = torch.zeros(T, dtype=torch.long)

    def probabilities(self) -> torch.Tensor:
        """p_t for t = 1..T, float64 (T,)."""
        uniform = torch.full((self.T,), 1 / self.T, dtype=torch.float64)
        if (self.counts < self.losses.shape[1]).any():
            return uniform
        w = self.losses.pow(2).mean(1).sqrt()
        if not w.sum() > 0:  # every loss seen was 0
            return uniform
        return (1 - self.uniform_share) * w / w.sum() + self.uniform_share * uniform

    def sample(self, batch: int, generator: torch.Generator | None = None):
        """(t long (B,) in 1..T, importance weights 1 / (T p_t) float64 (B,))."""
        p = self.probabilities()
        i = torch.multinomial(p, batch, replacement=True, generator=generator)
        return i + 1, 1 / (self.T * p[i])

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-sample losses (B,) seen at t (B,), in order; each t keeps its last ``history``.

        Vectorized: each row holds its newest loss in the last column; a row that gets k new losses shifts
        left by k and takes the (at most H) newest of them, in batch order, at its right end."""
        losses, t = losses.detach().double().cpu(), t.cpu().long()
        if not torch.isfinite(losses).all():
            raise TrainingError("the loss became non-finite (seen by the importance sampler of t)")
        H = self.losses.shape[1]
        t_sorted, order = torch.sort(t, stable=True)  # grouped by t, batch order kept within a group
        new = torch.bincount(t - 1, minlength=self.T)
        last = torch.cumsum(new, 0)[t_sorted - 1] - 1  # position of each group's newest loss in the sorted batch
        from_end = last - torch.arange(len(t))  # 0 for the newest loss at its t
        k = new.clamp(max=H)
        src = torch.arange(H) + k[:, None]  # column H - 1 - j of the old row moves to H - 1 - j - k
        shifted = torch.where(src < H, self.losses.gather(1, src.clamp(max=H - 1)),
                              torch.zeros((), dtype=torch.float64))
        keep = from_end < H
        shifted[t_sorted[keep] - 1, H - 1 - from_end[keep]] = losses[order][keep]
        self.losses, self.counts = shifted, (self.counts + new).clamp(max=H)

    def state_dict(self) -> dict:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        losses, counts = state.get("losses"), state.get("counts")
        if not (torch.is_tensor(losses) and torch.is_tensor(counts) and losses.shape == self.losses.shape
                and counts.shape == self.counts.shape):
            raise InputError(f"the importance sampler's state does not fit T = {self.T}, "
                             f"history {self.losses.shape[1]}")
        self.losses, self.counts = losses.double().clone(), counts.long().clone()
