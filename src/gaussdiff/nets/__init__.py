"""Networks: any nn.Module with ``forward(x_t, t, cond=None)`` plugs in; ``build_network`` makes
one from the JSON config a saved model stores."""

from __future__ import annotations

from torch import nn

from ..errors import InputError
from .mlp import MLP

NETWORKS = {"mlp": MLP}


def build_network(config: dict) -> nn.Module:
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in NETWORKS:
        raise InputError(f"unknown network kind {kind!r}; known: {', '.join(NETWORKS)}")
    try:
        return NETWORKS[kind](**config)
    except TypeError as e:
        raise InputError(f"bad network config for {kind!r}: {e}") from None


__all__ = ["MLP", "NETWORKS", "build_network"]
