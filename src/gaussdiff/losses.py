"""Training losses.

Simplified loss (Ho et al. eq. 14, for any parameterization):
    L_simple = E_{t ~ U{1..T}, x_0, eps} || target(x_0, eps, t) - net(x_t, t) ||^2
"""

from __future__ import annotations

import torch

from .chain import q_sample
from .param import training_target
from .schedule import NoiseSchedule


def sample_t(batch: int, schedule: NoiseSchedule, generator=None, device=None) -> torch.Tensor:
    """t ~ U{1, ..., T} (at t = 0 there is no noise to predict); long tensor (B,)."""
    return torch.randint(1, schedule.T + 1, (batch,), generator=generator, device=device)


def simple_loss(net, x0: torch.Tensor, schedule: NoiseSchedule, prediction_type: str, t=None, eps=None,
                generator=None, **net_kwargs) -> torch.Tensor:
    """Per-sample L_simple (B,), averaged over data dimensions; t and eps are drawn when not given."""
    if t is None:
        t = sample_t(x0.shape[0], schedule, generator, x0.device)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    alpha_bar = schedule.alpha_bar.to(x0.device)[t]
    x_t = q_sample(x0, t, schedule, eps)
    target = training_target(prediction_type, x0, eps, alpha_bar)
    pred = net(x_t, t.to(x0.dtype), **net_kwargs)
    return (pred - target).pow(2).flatten(1).mean(1)
