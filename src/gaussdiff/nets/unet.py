"""A UNet for images in the DDPM / ADM family (Ho et al. 2020; Dhariwal & Nichol 2021, "Diffusion Models
Beat GANs", the ``UNetModel`` of improved-diffusion / guided-diffusion).

    x (B, C, H, W) -> conv_in -> [level 0: blocks (+ attention)] -> down -> ... -> [level L-1]
                   -> middle: res, (attention), res
                   -> [level L-1: blocks over concat(h, skip)] -> up -> ... -> [level 0] -> GN, SiLU, conv_out

Each residual block takes the embedding e = MLP(sinusoid(t / T)) (+ a class embedding) as a scale-shift
(ADM's ``use_scale_shift_norm``):  h <- GN(h) (1 + scale(e)) + shift(e).  The output convolution is zero at
initialisation (ADM's ``zero_module``), so a fresh network predicts v = 0, and under v-prediction its denoiser
x0_hat = sqrt(abar) x_t is exactly E[x_0 | x_t] for data ~ N(0, I) — an oracle with closed-form bounds.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError, check_int
from .embedding import SinusoidalEmbedding, check_cond_keys, class_labels

# Architectures without the data's shape; ``unet_config`` adds sample_shape and T. "digits" is chosen for a 2-core CPU
# by benchmarks/unet_shapes.py and a pilot (benchmarks/RESULTS.md, "Images: the digits"): at batch 64 on 8x8, two
# levels of 32 and 64 channels with one block each and no attention train 19 steps/s (0.69 M parameters), attention
# at 4x4 and in the middle 14.7, the reference libraries' 1.7 M-parameter shapes 5.7-8.0; after 150 s the
# attention-free net had the lower FD-digits. Many small ops, not FLOPs, bound a CPU step at this size.
UNET_PRESETS = {
    "digits": dict(base_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[],
                   num_heads=4, dropout=0.0, norm_groups=8, mid_attention=False),
    "gpu32": dict(base_channels=128, channel_mult=[1, 2, 2, 2], num_res_blocks=2, attention_resolutions=[16, 8],
                  num_heads=4, dropout=0.1, norm_groups=32, mid_attention=True),
}


def _size_error(H: int, W: int, factor: int, levels: int) -> InputError:
    """The one line for an image size the downsampling cannot halve level after level."""
    bad = H if H % factor else W
    lo, hi = bad // factor * factor, (bad // factor + 1) * factor
    sizes = f"{lo} or {hi}" if lo else f"{hi}"
    return InputError(f"image size {H}x{W} is not divisible by {factor}, the UNet's downsampling ({levels} levels, "
                      f"{levels - 1} halvings); use --image-size {sizes}")


def _check_channels(name: str, channels: list[int], divisor: int, what: str) -> None:
    for ch in channels:
        if ch % divisor:
            raise InputError(f"{name}={divisor} must divide every level's channel count "
                             f"{sorted(set(channels))} ({what}); {ch} is not divisible by it")


def _make_config(sample_shape, num_train_timesteps, base_channels, channel_mult, num_res_blocks,
                 attention_resolutions, num_heads, dropout, learn_variance, num_classes, norm_groups,
                 mid_attention) -> dict:
    """The validated, JSON-serializable config of a UNet (lists, not tuples); InputError names a bad value."""
    shape = [check_int("sample_shape entry", s, 1) for s in sample_shape]
    if len(shape) != 3:
        raise InputError(f"a UNet takes sample_shape [C, H, W]; got {list(sample_shape)}")
    _, H, W = shape
    mult = [check_int("channel_mult entry", m, 1) for m in channel_mult]
    if not mult:
        raise InputError("channel_mult needs at least one level")
    factor = 2 ** (len(mult) - 1)
    if H % factor or W % factor:
        raise _size_error(H, W, factor, len(mult))
    base = check_int("base_channels", base_channels, 1)
    channels = [base * m for m in mult]
    groups, heads = check_int("norm_groups", norm_groups, 1), check_int("num_heads", num_heads, 1)
    _check_channels("norm_groups", channels, groups, "GroupNorm")
    _check_channels("num_heads", channels, heads, "attention heads")
    heights = [H >> level for level in range(len(mult))]
    attention = [check_int("attention_resolutions entry", r, 1) for r in attention_resolutions]
    for r in attention:
        if r not in heights:
            raise InputError(f"attention at {r}x{r}: the UNet's feature maps are {', '.join(map(str, heights))} "
                             "high; attention_resolutions takes some of these")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"dropout must be a number in [0, 1), got {dropout!r}")
    K = check_int("num_classes", num_classes, 0)
    T = check_int("num_train_timesteps", num_train_timesteps, 1)
    blocks = check_int("num_res_blocks", num_res_blocks, 1)
    return dict(kind="unet", sample_shape=shape, num_train_timesteps=T, base_channels=base, channel_mult=mult,
                num_res_blocks=blocks, attention_resolutions=attention, num_heads=heads, dropout=float(dropout),
                learn_variance=bool(learn_variance), num_classes=K, norm_groups=groups,
                mid_attention=bool(mid_attention), cond_keys=["class"] if K > 0 else [])


def unet_config(sample_shape, num_train_timesteps: int, preset: str = "digits", **overrides) -> dict:
    """A full UNet config for ``nets.build_network``: the preset's architecture, then ``overrides`` (any
    constructor argument, e.g. ``learn_variance=True`` or ``num_classes=10``); validated without building."""
    if preset not in UNET_PRESETS:
        raise InputError(f"unknown UNet preset {preset!r}; known: {', '.join(UNET_PRESETS)}")
    args = dict(UNET_PRESETS[preset], learn_variance=False, num_classes=0)
    unknown = sorted(set(overrides) - set(args))
    if unknown:
        raise InputError(f"unknown UNet option(s) {', '.join(unknown)}; known: {', '.join(sorted(args))}")
    return _make_config(sample_shape, num_train_timesteps, **(args | overrides))


def check_inputs(x: torch.Tensor, cond: dict | None, config: dict) -> None:
    """InputError for an image batch of another shape than the network's ``config`` names, or a condition key it does
    not consume."""
    shape = config["sample_shape"]
    if x.ndim != 4 or list(x.shape[1:]) != shape:
        raise InputError(f"this {config['kind']} network takes x of shape (B, {', '.join(map(str, shape))}), "
                         f"got {tuple(x.shape)}")
    check_cond_keys(cond, config["cond_keys"], config["kind"])


class ResBlock(nn.Module):
    """out = skip(x) + conv2(dropout(SiLU(GN(h) (1 + scale) + shift))),  h = conv1(SiLU(GN(x))),
    (scale, shift) = Linear(SiLU(e)): the embedding e enters as a scale-shift of the normalised features."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    """x + proj(softmax(q k^T / sqrt(d)) v) over the H W positions, heads of d = channels / num_heads."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    """A 3x3 convolution of stride 2 (ADM's ``conv_resample``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """Layers applied in order, each as layer(h, emb)."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            h = layer(h, emb)
        return h


class UNet(nn.Module):
    """forward(x_t (B, C, H, W), t (B,) float in our index 0..T, cond=None) -> (B, C, H, W): the eps, x_0 or v
    prediction; with ``learn_variance`` (B, 2 C, H, W): the prediction, then the values v of the learned-range
    variance. With ``num_classes`` = K > 0, ``cond={"class": (B,) long in 0..K}``; K is the null label, used
    when cond has no "class" (unconditional, and classifier-free guidance).

    ``attention_resolutions`` lists feature-map heights (e.g. [4] = attention at 4x4 on 8x8 images);
    ``mid_attention`` adds attention between the two middle residual blocks (as ADM always does)."""

    def __init__(self, sample_shape, num_train_timesteps: int, base_channels: int = 32, channel_mult=(1, 2),
                 num_res_blocks: int = 1, attention_resolutions=(), num_heads: int = 4, dropout: float = 0.0,
                 learn_variance: bool = False, num_classes: int = 0, norm_groups: int = 8,
                 mid_attention: bool = False):
        super().__init__()
        self.config = _make_config(sample_shape, num_train_timesteps, base_channels, channel_mult, num_res_blocks,
                                   attention_resolutions, num_heads, dropout, learn_variance, num_classes,
                                   norm_groups, mid_attention)
        C = self.config["sample_shape"][0]
        emb_dim = 4 * base_channels
        self.sinusoid = SinusoidalEmbedding(base_channels, num_train_timesteps)
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(C, base_channels, 3, padding=1)
        self.down, skips = self._down_path()
        ch = skips[-1]
        self.middle = Stage([self._block(ch, ch), *([self._attention(ch)] if mid_attention else []),
                             self._block(ch, ch)])
        self.up = self._up_path(skips)
        self.norm_out = nn.GroupNorm(norm_groups, base_channels)
        self.conv_out = nn.Conv2d(base_channels, 2 * C if learn_variance else C, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # ADM's zero_module: a fresh network outputs exactly 0
        nn.init.zeros_(self.conv_out.bias)

    def _block(self, cin: int, cout: int) -> ResBlock:
        c = self.config
        return ResBlock(cin, cout, 4 * c["base_channels"], c["dropout"], c["norm_groups"])

    def _attention(self, channels: int) -> Attention:
        return Attention(channels, self.config["num_heads"], self.config["norm_groups"])

    def _level_stage(self, level: int, cin: int, cout: int, upsample: bool = False) -> Stage:
        """A residual block of the level, with attention where the feature map's height is listed, then the
        upsampling that ends an up level."""
        c = self.config
        layers = [self._block(cin, cout)]
        if c["sample_shape"][1] >> level in c["attention_resolutions"]:
            layers.append(self._attention(cout))
        return Stage(layers + [Upsample(cout)] if upsample else layers)

    def _down_path(self) -> tuple[nn.ModuleList, list[int]]:
        """The down stages and the channels of every feature map they leave for a skip connection
        (conv_in's first), num_res_blocks stages per level and a Downsample between levels."""
        c = self.config
        stages, skips = nn.ModuleList(), [c["base_channels"]]
        for level, m in enumerate(c["channel_mult"]):
            for _ in range(c["num_res_blocks"]):
                stages.append(self._level_stage(level, skips[-1], c["base_channels"] * m))
                skips.append(c["base_channels"] * m)
            if level < len(c["channel_mult"]) - 1:
                stages.append(Stage([Downsample(skips[-1])]))
                skips.append(skips[-1])
        return stages, skips

    def _up_path(self, skips: list[int]) -> nn.ModuleList:
        """num_res_blocks + 1 stages per level, from the lowest resolution up, each taking concat(h, skip)."""
        c = self.config
        stages, ch, skips = nn.ModuleList(), skips[-1], list(skips)
        for level, m in reversed(list(enumerate(c["channel_mult"]))):
            for i in range(c["num_res_blocks"] + 1):
                cout = c["base_channels"] * m
                stages.append(self._level_stage(level, ch + skips.pop(), cout,
                                                upsample=level > 0 and i == c["num_res_blocks"]))
                ch = cout
        return stages

    def embedding(self, t: torch.Tensor, cond: dict | None, batch: int) -> torch.Tensor:
        """e = MLP(sinusoid(t / T)) (+ class embedding), (B, 4 base_channels). The sinusoid is computed in float32
        outside autocast, so t = 999 stays 999 under bf16 (where it would round to 1000)."""
        t = torch.as_tensor(t, device=self.conv_in.weight.device)
        if t.dtype not in (torch.float32, torch.float64):
            raise InputError(f"a UNet takes t as float32 or float64, got {t.dtype} (bf16 rounds t = 999 to 1000)")
        if t.ndim > 1 or t.numel() not in (1, batch):
            raise InputError(f"t must be a scalar or of shape ({batch},), got {tuple(t.shape)}")
        with torch.autocast(t.device.type, enabled=False):
            features = self.sinusoid(t.expand(batch))
        emb = self.time_mlp(features)
        if self.class_emb is not None:
            emb = emb + self.class_emb(class_labels(cond, batch, self.config["num_classes"], emb.device))
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        check_inputs(x, cond, self.config)
        emb = self.embedding(t, cond, x.shape[0])
        h = self.conv_in(x)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))
