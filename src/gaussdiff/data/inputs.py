"""What a command reads beside a model: samples of the model's shape in the data's own units and levels (the image
to inpaint or to edit, rows to complete), and masks of known values.

Images: a PNG/JPEG file (8 bits, mapped onto the model's levels v -> round(v (L - 1) / 255), then converted,
centre-cropped and resized like training images), a folder of them, or a .npy of the model's own levels (what
``gaussdiff sample --out x.npy`` writes: (N, C, H, W), (C, H, W) or (H, W) integers in 0..L-1). Vectors: a .npy or
.csv of rows (N, D).

Masks: 1 = KNOWN, 0 = to be filled (diffusers' inpainting masks mean the opposite). A mask image is black (0) where
values are unknown and white (255) where they are known, at the model's image size, with no other value; a .npy or
.csv mask holds 0 and 1 (or booleans) in the sample's shape, optionally with a leading axis of one mask per sample,
and for images (H, W) or (1, H, W) masks apply to every channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .files import load_array, read_npy
from .images import IMAGE_FILE_SUFFIXES, read_image_file, read_images


def _to_levels(images: np.ndarray, levels: int) -> np.ndarray:
    """8-bit values v -> round(v (L - 1) / 255), halves up, in exact integers."""
    return (2 * images.astype(np.int64) * (levels - 1) + 255) // 510


def _as_batch(array: np.ndarray, shape: tuple[int, ...], channels_free: bool = False) -> np.ndarray | None:
    """``array`` as (N, C, H, W) for image samples of ``shape`` = (C, H, W): from (N, C, H, W), (C, H, W), or, for
    gray images, (N, H, W) and (H, W); with ``channels_free`` any C may also be 1 (a mask for every channel).
    None when it does not fit."""
    C, H, W = shape
    if array.ndim == 2:
        array = array[None, None]
    elif array.ndim == 3:
        array = array[None] if array.shape[0] in ({1, C} if channels_free else {C}) else array[:, None]
    fits = array.ndim == 4 and array.shape[2:] == (H, W) and array.shape[1] in ({1, C} if channels_free else {C})
    return array if fits else None


def _image_npy(path: Path, shape: tuple[int, ...], levels: int) -> np.ndarray:
    array = read_npy(path)
    if array.dtype.kind not in "biu":
        raise InputError(f"{path}: holds {array.dtype} values; images to complete are integer levels 0..{levels - 1}")
    images = _as_batch(array, shape)
    if images is None:
        raise InputError(f"{path}: an array of shape {list(array.shape)}; the model's images are {list(shape)} "
                         "((N, C, H, W), or (C, H, W) for one)")
    if images.size and (images.min() < 0 or images.max() >= levels):
        raise InputError(f"{path}: values {images.min()}..{images.max()}; the model's images have levels "
                         f"0..{levels - 1}")
    return images


def read_samples(path, sample_shape, levels: int | None) -> torch.Tensor:
    """Float64 (N, *sample_shape) in the data's own units (module doc); InputError in one line otherwise."""
    path, shape = Path(path), tuple(sample_shape)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if len(shape) != 3:
        rows = load_array(path)
        if rows.shape[1:] != shape:
            raise InputError(f"{path}: rows of {rows.shape[1]} values; the model takes {shape[0]}")
        return torch.from_numpy(rows)
    C, H, W = shape
    if H != W:
        raise InputError(f"{path}: the model's images are {H}x{W}; only square image files are read")
    if path.suffix.lower() == ".npy":
        return torch.from_numpy(_image_npy(path, shape, levels).astype(np.float64))
    if path.is_dir():
        images = read_images(path, image_size=H, channels=C).images
    elif path.suffix.lower() in IMAGE_FILE_SUFFIXES:
        images = read_image_file(path, H, C)
    else:
        raise InputError(f"{path}: images are read from a .png/.jpg file, a folder of them or a .npy of levels")
    return torch.from_numpy(_to_levels(images, levels).astype(np.float64))


def _mask_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image  # Pillow is the image reader everywhere; only here for the mask's exact pixels

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({' '.join(str(e).split())})") from None
    if pixels.shape != shape[1:]:
        raise InputError(f"{path}: a mask of {pixels.shape[1]}x{pixels.shape[0]} pixels; the model's images are "
                         f"{shape[2]}x{shape[1]}")
    if not np.isin(pixels, (0, 255)).all():
        raise InputError(f"{path}: a mask must be black (0, unknown) and white (255, known) only; it has "
                         f"{np.setdiff1d(np.unique(pixels), [0, 255]).size} other gray value(s)")
    return pixels[None, None] == 255


def read_mask(path, sample_shape) -> torch.Tensor:
    """A bool mask (1 or N, *sample_shape), True = known (module doc); InputError in one line otherwise."""
    path, shape = Path(path), tuple(sample_shape)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if len(shape) == 3 and path.suffix.lower() in IMAGE_FILE_SUFFIXES:
        mask = _mask_image(path, shape)
    else:
        mask = read_npy(path) if path.suffix.lower() == ".npy" else load_array(path)
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise InputError(f"{path}: a mask holds 0 (unknown) and 1 (known) only")
        mask = mask.astype(bool)
        fitted = _as_batch(mask, shape, channels_free=True) if len(shape) == 3 else \
            (mask.reshape(1, -1) if mask.ndim == 1 else mask) if mask.shape[-1:] == shape else None
        if fitted is None or fitted.ndim != len(shape) + 1:
            raise InputError(f"{path}: a mask of shape {list(mask.shape)} does not fit samples of shape {list(shape)}")
        mask = fitted
    return torch.from_numpy(np.ascontiguousarray(mask))
