"""Embeddings of the (float) time index t, and the checks of a condition every network shares."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import InputError


class SinusoidalEmbedding(nn.Module):
    """Transformer-style features of u = t / T (so the embedding does not depend on T):
    emb(u) = [sin(1000 u w_j), cos(1000 u w_j)], w_j = max_period^(-j / (dim/2)), j < dim / 2."""

    def __init__(self, dim: int, num_train_timesteps: int, max_period: float = 10_000.0):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs * 1000.0 / num_train_timesteps, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.float()[:, None] * self.freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def check_cond_keys(cond: dict | None, consumed: list[str], network: str) -> None:
    """InputError for a condition key the network does not consume (never silently dropped)."""
    unknown = sorted(set(cond or {}) - set(consumed))
    if unknown:
        raise InputError(f"the {network} network does not consume condition key(s) {', '.join(unknown)}; it uses: "
                         f"{', '.join(consumed) or 'none'}")


def class_labels(cond: dict | None, batch: int, num_classes: int, device) -> torch.Tensor:
    """cond["class"] checked to be long (B,) in 0..K (K = ``num_classes``, the null label), or K for every sample when
    cond has no "class" (the unconditional model, as classifier-free guidance trains it)."""
    K = num_classes
    labels = (cond or {}).get("class")
    if labels is None:
        return torch.full((batch,), K, dtype=torch.long, device=device)
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.long or tuple(labels.shape) != (batch,):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise InputError(f"cond['class'] must be a long tensor of shape ({batch},), got {got}")
    if ((labels < 0) | (labels > K)).any():
        raise InputError(f"cond['class'] values must lie in 0..{K} ({K} = no class), got "
                         f"{labels.min().item()}..{labels.max().item()}")
    return labels.to(device)
