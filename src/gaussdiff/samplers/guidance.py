"""Wrappers that turn a denoiser into another denoiser, so that no sampler needs to know about them (DESIGN.md,
"Growing past vectors"): x0-clipping and classifier-free guidance (known values: :mod:`.known`).

Classifier-free guidance (Ho & Salimans 2022) in diffusers' convention, on the x0 estimates:
    x0_guided = x0_uncond + s (x0_cond - x0_uncond)
s = 1 is the conditional model, s = 0 the unconditional one (Ho & Salimans write w = s - 1). Because eps and v are
affine in x0 at a given x_t with the same coefficients for both branches, this is the same as guiding the eps or v
prediction. Both branches come from one batched call on [x_t; x_t] with the labels [c; null].
Guidance interval (Kynkäänniemi et al. 2024): guide only where lo < level <= hi, the level being
sigma = sqrt((1 - abar_t) / abar_t) (EDM's noise level) or t itself; elsewhere the conditional model alone
(one call of B rows instead of 2B).
Guidance rescale (Lin et al. 2024, eq. 15-16), phi in [0, 1]:
    x_rescaled = x_guided std(x0_cond) / std(x_guided)   (std over each sample's values)
    x_final = phi x_rescaled + (1 - phi) x_guided
applied here to the x0 estimate (diffusers applies the same formula to the eps prediction).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import InputError
from ..param import Denoiser, ReverseModel
from ..schedule import NoiseSchedule

INTERVAL_UNITS = ("sigma", "t")


def clip_x0(denoiser: Denoiser | ReverseModel, lo: float, hi: float) -> Denoiser | ReverseModel:
    """x0_hat clamped to [lo, hi], the box the data fill in model units (DDPM's ``clip_denoised``: an estimate outside
    the data's range is moved to its nearest point inside); a reverse model's log-variance passes unchanged."""

    def clipped(x_t, t):
        out = denoiser(x_t, t)
        if isinstance(out, tuple):
            return (out[0].clamp(lo, hi), *out[1:])
        return out.clamp(lo, hi)

    return clipped


def _rescaled(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """phi x_guided std(x_cond) / std(x_guided) + (1 - phi) x_guided, stds per sample (module doc)."""
    dims = tuple(range(1, guided.ndim))
    factor = cond.std(dims, keepdim=True) / guided.std(dims, keepdim=True)
    return guided * (phi * factor + (1 - phi))


def check_guidance(scale: float, interval=None, unit: str = "sigma", rescale: float = 0.0) -> None:
    """InputError for a guidance setting that is not finite or not meaningful."""
    if not math.isfinite(scale):
        raise InputError(f"the guidance scale must be a finite number, got {scale}")
    if interval is not None:
        lo, hi = interval
        if not (math.isfinite(lo) and 0 <= lo < hi):
            raise InputError(f"the guidance interval must satisfy 0 <= lo < hi, got {lo} {hi}")
    if unit not in INTERVAL_UNITS:
        raise InputError(f"unknown guidance interval unit {unit!r}; known: {', '.join(INTERVAL_UNITS)}")
    if not 0 <= rescale <= 1:
        raise InputError(f"the guidance rescale must lie in [0, 1], got {rescale}")


def classifier_free(conditional: Callable[[dict], Denoiser | ReverseModel], labels: torch.Tensor, null: int,
                    scale: float, schedule: NoiseSchedule, *, interval=None, unit: str = "sigma",
                    rescale: float = 0.0) -> Denoiser | ReverseModel:
    """The guided denoiser of the classes ``labels`` (B,) at scale ``scale`` (module doc): ``conditional(cond)`` gives
    the model's denoiser (or reverse model) given a cond dict, ``null`` is the null label. A reverse model keeps the
    conditional branch's log-variance."""
    check_guidance(scale, interval, unit, rescale)
    one = conditional({"class": labels})
    both = conditional({"class": torch.cat([labels, torch.full_like(labels, null)])})

    def guided_here(t) -> bool:
        if scale == 1:
            return False
        if interval is None:
            return True
        t = float(torch.as_tensor(t).flatten()[0])
        level = t if unit == "t" else math.sqrt(1 / float(schedule.alpha_bar_at(torch.tensor(t))) - 1)
        return interval[0] < level <= interval[1]

    def denoise(x_t: torch.Tensor, t):
        if not guided_here(t):
            return one(x_t, t)
        out = both(torch.cat([x_t, x_t]), t)
        x0, extra = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        x0_cond, x0_uncond = x0.chunk(2)
        x0 = torch.lerp(x0_uncond, x0_cond, scale)  # x0_u + s (x0_c - x0_u)
        if rescale:
            x0 = _rescaled(x0, x0_cond, rescale)
        return (x0, *(e.chunk(2)[0] for e in extra)) if extra else x0

    return denoise
