"""Parameterizations of the network output and the conversions between them.

With x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps (write a = sqrt(abar), s = sqrt(1 - abar)):
    x_0 = (x_t - s eps) / a          eps = (x_t - a x_0) / s
    v   = a eps - s x_0              (Salimans & Ho 2022)
    x_0 = a x_t - s v                eps = s x_t + a v
    score = grad log q(x_t) = -E[eps | x_t] / s
Names follow diffusers' ``prediction_type``: ``epsilon``, ``sample`` (x_0) and ``v_prediction``.
"""

from __future__ import annotations

from typing import Callable

import torch

from .chain import _bcast
from .errors import InputError
from .schedule import NoiseSchedule

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> x0_hat


def check_prediction_type(prediction_type: str) -> str:
    if prediction_type not in PREDICTION_TYPES:
        raise InputError(f"unknown prediction_type {prediction_type!r}; known: {', '.join(PREDICTION_TYPES)}")
    return prediction_type


def _a_s(alpha_bar: torch.Tensor, x: torch.Tensor):
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


def as_denoiser(net: Callable, schedule: NoiseSchedule, prediction_type: str, **net_kwargs) -> Denoiser:
    """Wrap ``net(x_t, t, **net_kwargs)`` predicting eps, x_0 or v into ``denoiser(x_t, t) -> x0_hat``."""
    check_prediction_type(prediction_type)

    def denoiser(x_t: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=x_t.device).expand(x_t.shape[0])
        pred = net(x_t, t.to(x_t.dtype), **net_kwargs)
        return to_x0(prediction_type, pred, x_t, schedule.alpha_bar_at(t))

    return denoiser
