"""Wrappers that turn a denoiser into another denoiser, so that no sampler needs to know about them (DESIGN.md,
"Growing past vectors"): here x0-clipping; conditioning and guidance join them."""

from __future__ import annotations

from ..param import Denoiser, ReverseModel


def clip_x0(denoiser: Denoiser | ReverseModel, lo: float, hi: float) -> Denoiser | ReverseModel:
    """x0_hat clamped to [lo, hi], the box the data fill in model units (DDPM's ``clip_denoised``: an estimate outside
    the data's range is moved to its nearest point inside); a reverse model's log-variance passes unchanged."""

    def clipped(x_t, t):
        out = denoiser(x_t, t)
        if isinstance(out, tuple):
            return (out[0].clamp(lo, hi), *out[1:])
        return out.clamp(lo, hi)

    return clipped
