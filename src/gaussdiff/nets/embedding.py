"""Embeddings of the (float) time index t."""

from __future__ import annotations

import math

import torch
from torch import nn


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
