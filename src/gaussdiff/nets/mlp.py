"""A residual MLP denoiser for vector data (2-D points, table rows)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .embedding import SinusoidalEmbedding


class ResidualBlock(nn.Module):
    """h + W_2 silu(W_1 silu(LN(h)) + W_e emb): the time enters every block."""

    def __init__(self, width: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(nn.functional.silu(z))


class MLP(nn.Module):
    """forward(x_t (B, D), t (B,), cond=None) -> (B, D): the eps, x_0 or v prediction; with
    ``learn_variance`` (B, 2 D): the prediction, then the values v of the learned-range variance.
    ``sample_shape`` is D or [D]. It consumes no condition: a ``cond`` with any key is refused."""

    def __init__(self, sample_shape, num_train_timesteps: int, width: int = 256, depth: int = 3, emb_dim: int = 128,
                 learn_variance: bool = False):
        super().__init__()
        shape = [sample_shape] if isinstance(sample_shape, int) else sample_shape
        if not (isinstance(shape, (list, tuple)) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 1):
            raise InputError(f"the MLP takes vectors: sample_shape must be D or [D], got {sample_shape!r}")
        dim = shape[0]
        self.config = dict(kind="mlp", sample_shape=[dim], num_train_timesteps=num_train_timesteps, width=width,
                           depth=depth, emb_dim=emb_dim, learn_variance=learn_variance, cond_keys=[])
        self.time = nn.Sequential(SinusoidalEmbedding(emb_dim, num_train_timesteps), nn.Linear(emb_dim, emb_dim),
                                  nn.SiLU())
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, 2 * dim if learn_variance else dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if cond:
            raise InputError(f"the mlp network takes no condition; got {', '.join(sorted(cond))}")
        emb = self.time(t)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
