"""A foreign network (a diffusers ``UNet2DModel``, or any module called as ``module(x, timestep)``) as a
gaussdiff network ``net(x_t, t, cond=None)``.

The only conversion is the time index: diffusers' timestep i (0..T-1) is our t = i + 1, so the module
receives ``t - 1``. Its output (eps, x_0 or v, as it was trained) is returned as a tensor, so
``param.as_denoiser(ForeignModel(unet), schedule, prediction_type)`` drives it with every sampler.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError


class ForeignModel(nn.Module):
    """``forward(x_t, t, cond=None)`` calls ``module(x_t, t - 1)``; ``cond``, when given, goes in as the
    keyword ``cond_kwarg`` (e.g. ``class_labels`` for a class-conditional UNet2DModel)."""

    def __init__(self, module: nn.Module, cond_kwarg: str | None = None):
        super().__init__()
        self.module = module
        self.cond_kwarg = cond_kwarg

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        kwargs = {}
        if cond is not None:
            if self.cond_kwarg is None:
                raise InputError("this foreign model takes no conditioning (ForeignModel was built without cond_kwarg)")
            kwargs[self.cond_kwarg] = cond
        out = self.module(x, t - 1, **kwargs)  # diffusers' timestep i is our t = i + 1
        return getattr(out, "sample", out)  # diffusers' models return an output object holding .sample
