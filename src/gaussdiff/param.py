"""Parameterizations of the network output and the conversions between them.

With x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps (write a = sqrt(abar), s = sqrt(1 - abar)):
    x_0 = (x_t - s eps) / a          eps = (x_t - a x_0) / s
    v   = a eps - s x_0              (Salimans & Ho 2022)
    x_0 = a x_t - s v                eps = s x_t + a v
    score = grad log q(x_t) = -E[eps | x_t] / s
Names follow diffusers' ``prediction_type``: ``epsilon``, ``sample`` (x_0) and ``v_prediction``.
A network with a variance head outputs twice the channels of x_t on dim 1, (prediction, variance
values), as diffusers' learned-variance models do; a reverse model adds the log-variance of
p(x_{t-1} | x_t) to the denoiser: ``reverse_model(x_t, t) -> (x0_hat, log_var)``, integer t in 1..T.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .bound import check_variance_type, reverse_log_variance
from .chain import _bcast
from .errors import InputError
from .schedule import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> x0_hat
ReverseModel = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # -> (x0_hat, log_var)


class CountingDenoiser:
    """A denoiser (or reverse model) that counts its calls, the NFE."""

    def __init__(self, denoiser: Denoiser | ReverseModel):
        self.denoiser = denoiser
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t):
        self.calls += 1
        return self.denoiser(x_t, t)


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise InputError(f"unknown prediction_type {prediction_type!r}; known: {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def _a_s(alpha_bar, x: torch.Tensor):
    """(sqrt(abar), sqrt(1 - abar)) shaped for x: from a tensor, or a Python float (a sampler's per-step level)."""
    if isinstance(alpha_bar, float):
        return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    return _bcast(torch.sqrt(alpha_bar), x), _bcast(torch.sqrt(1 - alpha_bar), x)


def training_target(prediction_type: str, x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor):
    """What the network is asked to output for (x_0, eps) at noise level abar."""
    check_prediction_type(prediction_type)  # an unknown name must not fall through to v
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    a, s = _a_s(alpha_bar, x0)
    return a * eps - s * x0  # v


def to_x0(prediction_type: str, pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor):
    """The x_0 estimate implied by a network output."""
    check_prediction_type(prediction_type)  # an unknown name must not fall through to v
    a, s = _a_s(alpha_bar, x_t)
    if prediction_type == "epsilon":
        return (x_t - s * pred) / a
    if prediction_type == "sample":
        return pred
    return a * x_t - s * pred  # from v


def eps_from_x0(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    a, s = _a_s(alpha_bar, x_t)
    return (x_t - a * x0) / s


def score_from_x0(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Tweedie: grad log q_t(x_t) = (sqrt(abar) E[x_0 | x_t] - x_t) / (1 - abar)."""
    a, _ = _a_s(alpha_bar, x_t)
    return (a * x0 - x_t) / _bcast(1 - alpha_bar, x_t)


def time_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype t reaches a network in: float64 with float64 data, else float32 (never bf16 or fp16, where
    t = 999 rounds to 1000)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def learns_variance(net) -> bool:
    """Whether ``net`` has a variance head, as its config declares (``learn_variance``); plain callables have none."""
    return bool((getattr(net, "config", None) or {}).get("learn_variance", False))


def as_denoiser(net: Callable, schedule: NoiseSchedule, prediction_type: str, **net_kwargs) -> Denoiser:
    """Wrap ``net(x_t, t, **net_kwargs)`` predicting eps, x_0 or v into ``denoiser(x_t, t) -> x0_hat``."""
    check_prediction_type(prediction_type)
    head = learns_variance(net)

    def denoiser(x_t: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(x_t.shape[0])
        pred = split_output(net(x_t, t.to(time_dtype(x_t)), **net_kwargs), x_t, head)[0]
        return to_x0(prediction_type, pred, x_t, schedule.alpha_bar_at(t))

    return denoiser


def split_output(out: torch.Tensor, x_t: torch.Tensor, learn_variance: bool):
    """(prediction, variance values) of a network with a variance head, whose output has twice x_t's channels on dim 1
    (diffusers' layout), or (out, None) of one without; InputError when the output's shape does not say the same."""
    C = x_t.shape[1]
    expected = (x_t.shape[0], 2 * C, *x_t.shape[2:]) if learn_variance else tuple(x_t.shape)
    if tuple(out.shape) != tuple(expected):
        raise InputError(f"the network returned shape {tuple(out.shape)}; expected {tuple(expected)} "
                         f"({'with' if learn_variance else 'without'} a variance head)")
    return (out[:, :C], out[:, C:]) if learn_variance else (out, None)


def _integer_t(t, x_t: torch.Tensor, T: int) -> torch.Tensor:
    """t (scalar or (B,)) as a long tensor (B,) on the CPU; InputError unless every t is an integer in 1..T."""
    t = torch.as_tensor(t).detach().cpu()
    if (t != t.round()).any() or (t < 1).any() or (t > T).any():
        raise InputError(f"a reverse model takes integer t in 1..{T}")
    return t.long().expand(x_t.shape[0])


def _log_var_like(schedule: NoiseSchedule, t: torch.Tensor, variance_type: str, out, x_t: torch.Tensor):
    return _bcast(reverse_log_variance(schedule, t, variance_type, out), x_t).expand_as(x_t)


def reverse_from_output(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule,
                        prediction_type: str, variance_type: str, var_head: bool = False):
    """(x0_hat, log_var), both x_t's shape, from a network's output at (x_t, t), t a long tensor (B,) in 1..T;
    ``learned_range`` reads the variance channels, which a net without a variance head lacks (InputError);
    ``var_head``: the output has them even where the variance type does not read them."""
    pred, var_out = split_output(out, x_t, variance_type == "learned_range" or var_head)
    t = t.cpu()
    x0_hat = to_x0(prediction_type, pred, x_t, schedule.alpha_bar[t])
    return x0_hat, _log_var_like(schedule, t, variance_type, var_out, x_t)


def as_reverse_model(net: Callable, schedule: NoiseSchedule, prediction_type: str,
                     variance_type: str = "fixed_small", **net_kwargs) -> ReverseModel:
    """Wrap ``net(x_t, t, **net_kwargs)`` into ``reverse_model(x_t, t) -> (x0_hat, log_var)``."""
    check_prediction_type(prediction_type)
    check_variance_type(variance_type)

    head = learns_variance(net)

    def reverse_model(x_t: torch.Tensor, t):
        t = _integer_t(t, x_t, schedule.T)
        out = net(x_t, t.to(device=x_t.device, dtype=time_dtype(x_t)), **net_kwargs)
        return reverse_from_output(out, x_t, t, schedule, prediction_type, variance_type, head)

    return reverse_model


def with_fixed_variance(denoiser: Denoiser, schedule: NoiseSchedule,
                        variance_type: str = "fixed_small") -> ReverseModel:
    """A reverse model from a plain denoiser (e.g. the mixture oracle) and a fixed variance type."""
    if check_variance_type(variance_type) == "learned_range":
        raise InputError("a plain denoiser has no variance head; learned_range needs a network with one")

    def reverse_model(x_t: torch.Tensor, t):
        t = _integer_t(t, x_t, schedule.T)
        x0_hat = denoiser(x_t, t.to(device=x_t.device, dtype=torch.float64))
        return x0_hat, _log_var_like(schedule, t, variance_type, None, x_t)

    return reverse_model
