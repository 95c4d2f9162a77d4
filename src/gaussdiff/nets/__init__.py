"""Networks: any nn.Module with ``forward(x_t, t, cond=None)`` plugs in; ``build_network`` makes
one from the JSON config a saved model stores. ``diffusers_unet2d`` (a diffusers UNet2DModel) imports diffusers only
when one is built, so gaussdiff works without it."""

from __future__ import annotations

from torch import nn

from ..errors import InputError
from .diffusers_unet import DIFFUSERS_UNET_PRESETS, DiffusersUNet2D, diffusers_unet2d_config
from .mlp import MLP
from .unet import UNET_PRESETS, UNet, unet_config

NETWORKS = {"mlp": MLP, "unet": UNet, "diffusers_unet2d": DiffusersUNet2D}


def build_network(config: dict) -> nn.Module:
    """The network a config describes: ``kind`` picks the class, the other fields are its constructor's arguments;
    ``cond_keys``, when given, must be the condition keys the built network consumes."""
    config = dict(config)
    kind = config.pop("kind", None)
    cond_keys = config.pop("cond_keys", None)
    if kind not in NETWORKS:
        raise InputError(f"unknown network kind {kind!r}; known: {', '.join(NETWORKS)}")
    try:
        net = NETWORKS[kind](**config)
    except TypeError as e:
        raise InputError(f"bad network config for {kind!r}: {e}") from None
    if cond_keys is not None and net.config.get("cond_keys") != list(cond_keys):
        raise InputError(f"the {kind!r} network config declares cond_keys {list(cond_keys)}, but the network built "
                         f"from it consumes {net.config.get('cond_keys')}")
    return net


__all__ = ["DIFFUSERS_UNET_PRESETS", "DiffusersUNet2D", "MLP", "NETWORKS", "UNET_PRESETS", "UNet", "build_network",
           "diffusers_unet2d_config", "unet_config"]
