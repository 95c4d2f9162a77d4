"""Where samples go (layer 7): the writer follows the sample shape and always writes the data's own units and levels.

Vectors and table rows: ``.npy`` or ``.csv``. Images: ``.png`` (one grid), ``.npy`` (the levels as integers,
(N, C, H, W)) or a folder (``DIR/``, or an existing folder: one PNG per sample, named by its index and the seed).
Every target is checked before any work, and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .data import check_output_path, save_array
from .data.images import save_image_folder, save_image_grid
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".npy")


def is_folder_target(path: str | os.PathLike) -> bool:
    """A path written as a folder (ending in a separator) or naming an existing one."""
    return str(path).endswith(("/", os.sep)) or Path(path).is_dir()


def check_target(target: str | os.PathLike, sample_shape: tuple[int, ...]) -> tuple[Path, str]:
    """(the output path, its kind: 'folder', 'grid' or 'array'), checked for the model's samples before any work:
    InputError names what fits instead."""
    path, images, folder = Path(target), len(sample_shape) == 3, is_folder_target(target)
    if images and folder:
        if not path.parent.is_dir():
            raise InputError(f"{path}: directory {path.parent} does not exist")
        return path, "folder"
    if not images and (path.suffix.lower() == ".png" or folder):
        raise InputError(f"{path}: pictures are written for image models; this model's samples are vectors of "
                         f"{sample_shape[0]} values: write .npy or .csv")
    if images and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: images are written as a .png grid, a .npy of levels or a folder (DIR/), not "
                         f"{path.suffix or 'a file without extension'}")
    if path.suffix.lower() == ".png":
        if not path.parent.is_dir():
            raise InputError(f"{path}: directory {path.parent} does not exist")
        return path, "grid"
    return check_output_path(path), "array"


def write_samples(path: Path, kind: str, samples: torch.Tensor, levels: int | None, seed: int,
                  groups: list[str] | None = None) -> None:
    """Write samples in the data's units (images: integer levels 0..levels-1) to a target of ``check_target``.
    ``groups``: the samples are len(groups) equal blocks (one per class, in order): a grid gets one row per block,
    a folder's file names start with the block's name."""
    per_group = len(samples) // len(groups) if groups else len(samples)
    if kind == "folder":
        prefix = [f"{groups[i // per_group]}_" if groups else "" for i in range(len(samples))]
        names = [f"{prefix[i]}{i % per_group:06d}_seed{seed}" for i in range(len(samples))]
        save_image_folder(path, samples.numpy(), levels, names)
    elif kind == "grid":
        save_image_grid(path, samples.numpy(), levels, nrow=per_group if groups and len(groups) > 1 else None)
    else:
        save_array(path, samples)
