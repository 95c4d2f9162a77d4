"""A diffusers ``UNet2DModel`` as a gaussdiff network (kind ``diffusers_unet2d``), and its export as a folder that
``diffusers.DDPMPipeline.from_pretrained`` loads.

diffusers is optional (``pip install gaussdiff[diffusers]``): it is imported only when such a network is built or
exported. The UNet2DModel is built from a config with random weights (never from a hub) and called through
:class:`ForeignModel`, so it receives diffusers' timestep i = t - 1 for our t (DESIGN.md's index map).

Config (JSON): ``kind``, ``sample_shape`` [C, H, W], ``num_train_timesteps``, ``learn_variance`` (the UNet then has
2 C output channels, diffusers' ``learned_range`` layout), ``num_classes`` K (K > 0: ``cond={"class": (B,) long in
0..K}``, K the null label, as gaussdiff's UNet; the UNet2DModel gets ``num_class_embeds`` = K + 1), ``cond_keys`` and
``unet``: the UNet2DModel arguments other than those derived from the fields above (``DERIVED``). A built network's
config holds every UNet2DModel argument, diffusers' defaults included, so it rebuilds the same net later.

Like gaussdiff's UNet (ADM's ``zero_module``), the output convolution starts at zero: a fresh network predicts
v = 0, and under v-prediction its denoiser x0_hat = sqrt(abar) x_t is exactly E[x_0 | x_t] for data ~ N(0, I).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..diffusers_config import write_scheduler_config
from ..errors import InputError, check_int
from .adapter import ForeignModel
from .embedding import class_labels
from .unet import _size_error, check_inputs

KIND = "diffusers_unet2d"
# UNet2DModel arguments; "digits" matches gaussdiff's UNet "digits" preset (687,937 parameters on 1x8x8 in both: two
# levels of 32 and 64 channels, no attention, scale-shift), "gpu32" its "gpu32" preset (39.6 M on 3x32x32: attention
# at 16x16 and 8x8).
DIFFUSERS_UNET_PRESETS = {
    "digits": dict(block_out_channels=[32, 64], down_block_types=["DownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "UpBlock2D"], layers_per_block=1, norm_num_groups=8,
                   attention_head_dim=16, resnet_time_scale_shift="scale_shift", dropout=0.0, add_attention=False),
    "gpu32": dict(block_out_channels=[128, 256, 256, 256],
                  down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                  up_block_types=["UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], layers_per_block=2,
                  norm_num_groups=32, attention_head_dim=64, resnet_time_scale_shift="scale_shift", dropout=0.1),
}
# Set from the gaussdiff fields (sample_shape, learn_variance, num_classes, num_train_timesteps), never in "unet".
DERIVED = ("sample_size", "in_channels", "out_channels", "num_class_embeds", "num_train_timesteps")
# What our contract needs: a sinusoid of the float timestep (fourier and learned embeddings take other inputs) and
# integer class labels.
FIXED = {"time_embedding_type": "positional", "class_embed_type": None}
PIPELINE_INDEX = {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"],
                  "unet": ["diffusers", "UNet2DModel"]}


def _diffusers():
    """The diffusers module, or one InputError line saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise InputError(f"network kind {KIND} needs diffusers: pip install 'gaussdiff[diffusers]'") from None
    return diffusers


def diffusers_unet2d_config(sample_shape, num_train_timesteps: int, preset: str = "digits",
                            learn_variance: bool = False, num_classes: int = 0, **unet) -> dict:
    """The full config of a ``diffusers_unet2d`` network for ``nets.build_network``: the preset's UNet2DModel
    arguments, then ``unet`` (any UNet2DModel argument but ``DERIVED``); validated by building it."""
    if preset not in DIFFUSERS_UNET_PRESETS:
        raise InputError(f"unknown {KIND} preset {preset!r}; known: {', '.join(DIFFUSERS_UNET_PRESETS)}")
    net = DiffusersUNet2D(sample_shape, num_train_timesteps, DIFFUSERS_UNET_PRESETS[preset] | unet,
                          learn_variance, num_classes)
    return net.config


def _check_unet_args(unet) -> dict:
    """The UNet2DModel arguments of a config, refusing those gaussdiff sets or needs at a fixed value."""
    if not isinstance(unet, dict):
        raise InputError(f"the {KIND} config's 'unet' must be an object of UNet2DModel arguments, got {unet!r}")
    derived = sorted(set(unet) & set(DERIVED))
    if derived:
        raise InputError(f"UNet2DModel argument(s) {', '.join(derived)} are set by gaussdiff from sample_shape, "
                         "learn_variance, num_classes and num_train_timesteps; leave them out")
    for name, value in FIXED.items():
        if unet.get(name, value) != value:
            raise InputError(f"UNet2DModel {name}={unet[name]!r} is not supported; a gaussdiff network needs "
                             f"{name}={value!r}")
    return dict(unet)


def _check_time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a float32/float64 tensor on x's device, a scalar or (B,); bf16 would round t = 999 to 1000."""
    t = torch.as_tensor(t, device=x.device)
    if t.dtype not in (torch.float32, torch.float64):
        raise InputError(f"a {KIND} network takes t as float32 or float64, got {t.dtype}")
    if t.ndim > 1 or t.numel() not in (1, x.shape[0]):
        raise InputError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


class DiffusersUNet2D(ForeignModel):
    """forward(x_t (B, C, H, W), t (B,) float in our index 0..T, cond=None) -> (B, C, H, W), or (B, 2 C, H, W) with
    ``learn_variance``: ``unet(x_t, t - 1, class_labels=...).sample`` of a diffusers UNet2DModel (module doc)."""

    def __init__(self, sample_shape, num_train_timesteps: int, unet: dict | None = None,
                 learn_variance: bool = False, num_classes: int = 0):
        shape = [check_int("sample_shape entry", s, 1) for s in sample_shape]
        if len(shape) != 3:
            raise InputError(f"a {KIND} network takes sample_shape [C, H, W]; got {list(sample_shape)}")
        C, H, W = shape
        T = check_int("num_train_timesteps", num_train_timesteps, 1)
        K = check_int("num_classes", num_classes, 0)
        args = _check_unet_args(DIFFUSERS_UNET_PRESETS["digits"] if unet is None else unet)
        diffusers = _diffusers()
        try:  # InputError is a ValueError: diffusers is imported outside
            module = diffusers.UNet2DModel(**args, sample_size=H if H == W else [H, W], in_channels=C,
                                           out_channels=2 * C if learn_variance else C,
                                           num_class_embeds=K + 1 if K else None, num_train_timesteps=T)
        except (TypeError, ValueError) as e:
            raise InputError(f"bad UNet2DModel config for {KIND}: {' '.join(str(e).split())}") from None
        super().__init__(module, cond_kwarg="class_labels" if K else None)
        levels = len(module.config.block_out_channels)
        if H % 2 ** (levels - 1) or W % 2 ** (levels - 1):
            raise _size_error(H, W, 2 ** (levels - 1), levels)
        torch.nn.init.zeros_(module.conv_out.weight)  # ADM's zero_module: a fresh network outputs exactly 0
        torch.nn.init.zeros_(module.conv_out.bias)
        resolved = {k: list(v) if isinstance(v, tuple) else v for k, v in module.config.items()
                    if not k.startswith("_") and k not in DERIVED}
        self.config = dict(kind=KIND, sample_shape=shape, num_train_timesteps=T, learn_variance=bool(learn_variance),
                           num_classes=K, unet=resolved, cond_keys=["class"] if K else [])

    @property
    def unet(self):
        """The wrapped diffusers UNet2DModel."""
        return self.module

    def forward(self, x: torch.Tensor, t, cond: dict | None = None) -> torch.Tensor:
        check_inputs(x, cond, self.config)
        t = _check_time(t, x)
        labels = class_labels(cond, x.shape[0], self.config["num_classes"], x.device) if self.config["num_classes"] else None
        return super().forward(x, t, labels)  # the UNet2DModel receives t - 1


def save_pipeline(net: DiffusersUNet2D, folder, schedule, prediction_type: str,
                  variance_type: str = "fixed_small") -> Path:
    """Write a ``DDPMPipeline`` folder into the existing empty ``folder``: ``unet/`` (UNet2DModel.save_pretrained:
    config.json and diffusion_pytorch_model.safetensors), ``scheduler/scheduler_config.json`` (our schedule as a
    DDPMScheduler, ``alphas_cumprod[i] = alpha_bar[i + 1]``) and ``model_index.json``."""
    folder = Path(folder)
    diffusers = _diffusers()
    net.unet.save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "scheduler").mkdir()
    write_scheduler_config(folder / "scheduler", schedule, prediction_type, variance_type=variance_type)
    index = PIPELINE_INDEX | {"_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder
