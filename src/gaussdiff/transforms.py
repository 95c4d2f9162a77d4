"""The invertible maps between the data's own units and the model's, tagged by ``kind``.

Every transform has ``forward`` (data -> model units), ``inverse``, the per-sample
``log_abs_det_jacobian(x)`` of ``forward`` (what a density in model units needs to become one in the
data's units: log p_data(x) = log p_model(forward(x)) + log |det J(x)|), ``sample_shape``, the data's
quantization ``levels`` (None for continuous data; then also ``quantize``), ``model_range`` (the (lo, hi) box
the data fill in model units, or None) and ``to_dict()``, whose ``kind`` names its class in ``TRANSFORMS``;
:func:`transform_from_dict` reads one back.
"""

from __future__ import annotations

import math
import numbers

import torch

from .columns import Table
from .errors import InputError, check_int


def _as_float(x) -> torch.Tensor:
    """x as a floating tensor (float64 unless it already is floating)."""
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.double()


def _check_shape(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Raise InputError unless x is a batch (N, *shape)."""
    if tuple(x.shape[1:]) != shape:
        raise InputError(f"expected samples of shape {shape}, got a batch of shape {tuple(x.shape)}")


def _numbers(key: str, value) -> list:
    """value as a list of real numbers; InputError naming ``key`` otherwise."""
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(a, numbers.Real) and not isinstance(a, bool) for a in value):
        raise InputError(f"transform field {key!r} must be a list of numbers, got {value!r}"[:200])
    return list(value)


class Standardize:
    """The per-feature affine map y = (x - mean) / std of vectors (N, D), from data units x to model units y."""

    kind = "standardize"
    levels = None
    model_range = None  # unbounded

    def __init__(self, mean, std):
        """Keep mean and std as float64 (D,); std must be finite and positive."""
        self.mean = torch.as_tensor(mean, dtype=torch.float64).clone()
        self.std = torch.as_tensor(std, dtype=torch.float64).clone()
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape or self.mean.numel() == 0:
            raise InputError(f"mean and std must be non-empty lists of equal length, got shapes "
                             f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}")
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()):
            raise InputError("mean and std must be finite")
        if not (self.std > 0).all():
            raise InputError(f"every std must be positive, got {self.std.tolist()}")

    @property
    def dim(self) -> int:
        """The number of features D."""
        return self.mean.numel()

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    @classmethod
    def identity(cls, dim: int) -> Standardize:
        """The identity map on dim features (mean 0, std 1)."""
        check_int("dim", dim, 1)
        return cls(torch.zeros(dim), torch.ones(dim))

    @classmethod
    def fit(cls, x) -> Standardize:
        """Per-feature mean and population std of x (N >= 2, D); a constant feature gets std 1."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise InputError(f"cannot fit a standardization to shape {tuple(x.shape)}; expected "
                             "(N, D) with N >= 2 and D >= 1")
        if not torch.isfinite(x).all():
            raise InputError("cannot fit a standardization to data containing NaN or Inf")
        constant = (x == x[0]).all(dim=0)
        std = torch.where(constant, 1.0, x.std(dim=0, correction=0))
        return cls(x.mean(dim=0), std)

    def _check_features(self, x: torch.Tensor) -> None:
        """Raise InputError unless the last axis of x has D entries."""
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise InputError(f"expected {self.dim} features on the last axis, "
                             f"got shape {tuple(x.shape)}")

    def forward(self, x) -> torch.Tensor:
        """y = (x - mean) / std, in x's floating dtype and device."""
        x = _as_float(x)
        self._check_features(x)
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, y) -> torch.Tensor:
        """x = y * std + mean, in y's floating dtype and device."""
        y = _as_float(y)
        self._check_features(y)
        return y * self.std.to(y) + self.mean.to(y)

    def log_abs_det_jacobian(self, x) -> torch.Tensor:
        """log |det d forward / dx| = -sum_i log std_i, the same for every sample: float64 (N,)."""
        return torch.full((len(x),), -torch.log(self.std).sum().item(), dtype=torch.float64)

    def to_dict(self) -> dict:
        """{'kind': 'standardize', 'mean': [...], 'std': [...]} as plain floats, for JSON."""
        return {"kind": self.kind, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Standardize:
        """The inverse of to_dict (``kind`` optional: format-1 models stored mean and std alone)."""
        fields = set(d) - {"kind"}
        if fields != {"mean", "std"}:
            raise InputError(f"a standardization must have the fields 'mean' and 'std', got {sorted(fields)}")
        return cls(_numbers("mean", d["mean"]), _numbers("std", d["std"]))

    def __repr__(self) -> str:
        return f"Standardize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class Pixels:
    """Images (N, C, H, W) with integer values 0..levels-1 <-> model units in [-1, 1]:
    y = 2 x / (levels - 1) - 1 (DDPM's scaling), so level 0 is -1 and the top level is +1."""

    kind = "pixels"
    model_range = (-1.0, 1.0)  # where every image lies in model units (x0-clipping clamps to it)

    def __init__(self, sample_shape, levels: int = 256):
        shape = tuple(sample_shape) if isinstance(sample_shape, (list, tuple)) else ()
        if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
            raise InputError(f"an image shape must be (channels, height, width) of positive integers, got "
                             f"{sample_shape!r}")
        self.sample_shape = shape
        self.levels = check_int("the number of pixel levels", levels, 2, 65536)

    @property
    def scale(self) -> float:
        """dy / dx = 2 / (levels - 1)."""
        return 2.0 / (self.levels - 1)

    def forward(self, x) -> torch.Tensor:
        """y = x * 2 / (levels - 1) - 1; integer x (uint8, ...) comes out float32, floating x keeps its dtype."""
        x = torch.as_tensor(x)
        _check_shape(x, self.sample_shape)
        x = x if x.is_floating_point() else x.float()
        return x * self.scale - 1

    def inverse(self, y) -> torch.Tensor:
        """x = (y + 1) (levels - 1) / 2, continuous (``quantize`` rounds it to the levels)."""
        y = _as_float(y)
        _check_shape(y, self.sample_shape)
        return (y + 1) / self.scale

    def quantize(self, x) -> torch.Tensor:
        """x rounded to the nearest level and clipped to 0..levels-1: uint8 up to 256 levels, else int32."""
        dtype = torch.uint8 if self.levels <= 256 else torch.int32
        return torch.as_tensor(x).round().clamp(0, self.levels - 1).to(dtype)

    def log_abs_det_jacobian(self, x) -> torch.Tensor:
        """D log(2 / (levels - 1)) for every sample, D = C H W: float64 (N,)."""
        return torch.full((len(x),), math.prod(self.sample_shape) * math.log(self.scale), dtype=torch.float64)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "sample_shape": list(self.sample_shape), "levels": self.levels}

    @classmethod
    def from_dict(cls, d: dict) -> Pixels:
        if set(d) != {"kind", "sample_shape", "levels"}:
            raise InputError(f"a pixel transform must have the fields kind, sample_shape and levels, got {sorted(d)}")
        return cls(d["sample_shape"], d["levels"])

    def __repr__(self) -> str:
        return f"Pixels(sample_shape={self.sample_shape}, levels={self.levels})"


TRANSFORMS = {cls.kind: cls for cls in (Standardize, Pixels, Table)}


def transform_from_dict(d) -> Standardize | Pixels | Table:
    """The transform a ``to_dict()`` describes; a dict without ``kind`` is a standardization (model format 1)."""
    if not isinstance(d, dict):
        raise InputError(f"a transform must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind", Standardize.kind)
    if kind not in TRANSFORMS:
        raise InputError(f"unknown transform kind {kind!r}; known: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[kind].from_dict(d)
