"""Where samples go (layer 7): the writer follows the sample shape and always writes the data's own units and levels.

Vectors and table rows: ``.npy`` or ``.csv``, of the model's data dtype (float32 or float64; a .csv holds the shortest
text that reads back as each value, under the data's column names where the model records them). Images: ``.png``
(one grid), ``.npy`` (the levels as integers, (N, C, H, W)) or a folder (``DIR/``, or an existing folder: one PNG per
sample, named by its index and the seed).
Every target is checked before any work (its kind, that its folder can be written, that it does not exist unless
overwrite is given, that the samples fit on its disk). Samples are written batch by batch as they come, so memory
holds one batch (a grid: at most MAX_GRID images), to a temporary name renamed onto the target once all are written.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.files import check_output_path, check_writable_parent, stream_array
from .data.images import _move_in, save_image_folder, save_image_grid
from .errors import InputError

IMAGE_SUFFIXES = (".png", ".npy")
MAX_GRID = 10_000  # images in one .png grid, which is built whole in memory; more go to a folder DIR/ or a .npy
CSV_BYTES = 20  # about what one value takes in a .csv (a float64's shortest repr and a comma), for the disk check


@dataclass(frozen=True)
class Target:
    """A checked output: its path and kind ('folder', 'grid' or 'array'), and the samples it receives: ``total`` in
    the data's ``levels`` (None: real values), drawn under ``seed``, in len(groups) equal blocks named by ``groups``
    (one per class or input, in order; None: one block); a .csv's header names ``columns`` (None: no header), and
    holds a table's rows as ``text`` makes them (SavedModel.row_text)."""

    path: Path
    kind: str
    total: int
    levels: int | None
    seed: int
    groups: list[str] | None = None
    columns: list[str] | None = None
    text: Callable | None = None  # a table's rows (codes) -> their cells' text, for a .csv

    @property
    def per_group(self) -> int:
        return self.total // len(self.groups) if self.groups else self.total

    def name(self, i: int) -> str:
        """The file stem of sample i in a folder: its group's name, its index within the group, the seed."""
        prefix = f"{self.groups[i // self.per_group]}_" if self.groups else ""
        return f"{prefix}{i % self.per_group:06d}_seed{self.seed}"

    def writes(self, stem: str) -> bool:
        """Whether ``stem``.png is a file this target's folder receives (the inverse of :meth:`name`)."""
        match = re.fullmatch(rf"(?:(.+)_)?(\d+)_seed{self.seed}", stem)
        if match is None or (match[1] is None) != (self.groups is None) or int(match[2]) >= self.per_group:
            return False
        group = self.groups.index(match[1]) if self.groups and match[1] in self.groups else 0
        return self.name(group * self.per_group + int(match[2])) == stem


def is_folder_target(path: str | os.PathLike) -> bool:
    """A path written as a folder (ending in a separator) or naming an existing one."""
    return str(path).endswith(("/", os.sep)) or Path(path).is_dir()


def check_target(target: str | os.PathLike, sample_shape: tuple[int, ...], levels: int | None, total: int,
                 seed: int, groups: list[str] | None = None, overwrite: bool = False,
                 columns: list[str] | None = None, text: Callable | None = None) -> Target:
    """The output for ``total`` samples of the model's shape (vectors: with the model's ``columns``, which head a
    .csv), checked before any work: InputError names what fits instead, an existing target (without ``overwrite``),
    a folder that cannot be written, a disk too small."""
    path, images, folder = Path(target), len(sample_shape) == 3, is_folder_target(target)
    if not images and (path.suffix.lower() == ".png" or folder):
        raise InputError(f"{path}: pictures are written for image models; this model's samples are vectors of "
                         f"{sample_shape[0]} values: write .npy or .csv")
    if images and not folder and path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: images are written as a .png grid, a .npy of levels or a folder (DIR/), not "
                         f"{path.suffix or 'a file without extension'}")
    kind = "folder" if images and folder else "grid" if path.suffix.lower() == ".png" else "array"
    out = Target(path, kind, total, levels, seed, groups, columns, text)
    if kind == "array":
        check_output_path(path)
    else:
        check_writable_parent(path)  # where the temporary file or folder goes
    if kind == "folder" and path.exists():
        check_writable_parent(path / f"{out.name(0)}.png")  # a folder (not a file) that can be written
    if kind == "grid" and total > MAX_GRID:
        raise InputError(f"{path}: a .png grid holds at most {MAX_GRID} images (it is built whole in memory), not "
                         f"{total}: write a folder DIR/ or a .npy")
    if not overwrite:
        _check_new(out)
    _check_space(out, math.prod(sample_shape))
    return out


def _check_new(target: Target) -> None:
    """InputError where the target exists (a folder: holds a file it would write)."""
    path = target.path
    if target.kind != "folder" and path.exists():
        raise InputError(f"{path} exists; pass --overwrite to replace it")
    if target.kind == "folder" and path.is_dir():
        clash = sorted(p.name for p in path.iterdir() if p.suffix == ".png" and target.writes(p.stem))
        if clash:
            raise InputError(f"{path} already holds {clash[0]}" + (f" and {len(clash) - 1} more of the files this "
                             "run writes" if len(clash) > 1 else "") + "; pass --overwrite to replace them")


def _check_space(target: Target, values: int) -> None:
    """InputError unless the samples (``values`` numbers each) fit in the free space of the target's disk: a .npy
    takes 8 bytes a value (image levels: 1, or 4 above 256 levels, transforms.quantize's dtypes), a .csv about
    CSV_BYTES, a PNG about 1 (before compression)."""
    if target.kind != "array":
        per_value = 1
    elif target.path.suffix.lower() == ".csv":
        per_value = CSV_BYTES
    else:
        per_value = 8 if target.levels is None else 1 if target.levels <= 256 else 4
    need, free = target.total * values * per_value, shutil.disk_usage(target.path.parent).free
    if need > free:
        raise InputError(f"{target.path}: {target.total} samples take about {need / 1e9:.3g} GB, more than the "
                         f"{free / 1e9:.3g} GB free on its disk; draw fewer or write elsewhere")


def write_samples(target: Target, batches: Iterable[torch.Tensor]) -> None:
    """Write the samples that ``batches`` yields in order (the data's units; images: integer levels 0..levels-1) to
    ``target``, holding one batch at a time (a grid: all its images); the target changes only once all are written,
    so whatever ``batches`` raises leaves it as it was. A grid gets one row per group (with several groups), a
    folder's file names start with their group's name."""
    if target.kind == "array":
        stream_array(target.path, target.total, batches, target.columns, target.text)
    elif target.kind == "grid":
        several = target.groups and len(target.groups) > 1
        save_image_grid(target.path, np.concatenate([b.numpy() for b in batches]), target.levels,
                        nrow=target.per_group if several else None)
    else:
        _write_folder(target, batches)


def _write_folder(target: Target, batches: Iterable[torch.Tensor]) -> None:
    """One PNG per sample, written batch by batch into a hidden sibling folder, then moved into the target."""
    path = target.path
    try:
        stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        try:
            start = 0
            for batch in batches:
                names = [target.name(i) for i in range(start, start + len(batch))]
                save_image_folder(stage, batch.numpy(), target.levels, names)
                start += len(batch)
            _move_in(stage, path, (target.name(i) for i in range(target.total)))
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    except OSError as e:
        raise InputError(f"{path}: cannot write ({' '.join(str(e).split())})") from None
