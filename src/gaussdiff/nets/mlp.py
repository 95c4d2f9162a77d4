"""A residual MLP denoiser for vector data (2-D points, table rows)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError, check_int
from .embedding import SinusoidalEmbedding, check_cond_keys, class_labels


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
    ``sample_shape`` is D or [D]. With ``num_classes`` = K > 0 a class embedding is added to the time embedding
    (``cond={"class": (B,) long in 0..K}``, K the null label, used when cond has no "class"); any other condition
    key is refused."""

    def __init__(self, sample_shape, num_train_timesteps: int, width: int = 256, depth: int = 3, emb_dim: int = 128,
                 learn_variance: bool = False, num_classes: int = 0):
        super().__init__()
        shape = [sample_shape] if isinstance(sample_shape, int) else sample_shape
        if not (isinstance(shape, (list, tuple)) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 1):
            raise InputError(f"the MLP takes vectors: sample_shape must be D or [D], got {sample_shape!r}")
        dim, K = shape[0], check_int("num_classes", num_classes, 0)
        self.config = dict(kind="mlp", sample_shape=[dim], num_train_timesteps=num_train_timesteps, width=width,
                           depth=depth, emb_dim=emb_dim, learn_variance=learn_variance, num_classes=K,
                           cond_keys=["class"] if K else [])
        self.time = nn.Sequential(SinusoidalEmbedding(emb_dim, num_train_timesteps), nn.Linear(emb_dim, emb_dim),
                                  nn.SiLU())
        self.class_emb = nn.Embedding(K + 1, emb_dim) if K else None
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, 2 * dim if learn_variance else dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        check_cond_keys(cond, self.config["cond_keys"], "mlp")
        emb = self.time(t)
        if self.class_emb is not None:
            emb = emb + self.class_emb(class_labels(cond, x.shape[0], self.config["num_classes"], emb.device))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
