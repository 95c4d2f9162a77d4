"""What training and evaluation read: a :class:`Dataset` of N samples of any shape, handing out
:class:`Batch` es in model units for a set of rows, and :func:`load_points` for the commands that evaluate
a model on data in the data's own units."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..atomic import content_sha256
from ..columns import Table
from ..errors import InputError
from ..transforms import Pixels, Standardize
from . import digits
from .files import csv_header, load_array, split_label_column
from .images import is_image_source, read_images
from .schema import categories_of, infer_schema, read_schema
from .split import heldout_seed, split_rows
from .tables import check_header, encode, is_missing, parse_number, pop_column, read_table
from .toys import BUILTIN, CLASSES, check_count_and_seed, labeled

IMAGE_BUILTIN = ("digits",)  # built-in image sets (native size; the training split)


@dataclass
class Batch:
    """Rows of a data set in model units: x (B, *sample_shape) float32; ``cond`` the named conditions the network
    receives (empty without conditioning); ``mask`` 1 where a value is observed (None: all are)."""

    x: torch.Tensor
    cond: dict[str, torch.Tensor] = field(default_factory=dict)
    mask: torch.Tensor | None = None

    def to(self, device) -> Batch:
        return Batch(self.x.to(device), {k: v.to(device) for k, v in self.cond.items()},
                     None if self.mask is None else self.mask.to(device))


class Dataset:
    """N samples kept in the data's own units; quantized data (images, uint8) are mapped to model units batch by
    batch, continuous rows once (float32 rows cost no more memory than the originals, and a tiny network's step
    should not pay for the map every time)."""

    def __init__(self, data: torch.Tensor, transform, name: str, description: str,
                 labels: torch.Tensor | None = None, classes: list[str] | None = None, conditional: bool = False):
        """``data`` in the data's own units: (N, *shape) samples, or a table's codes (N, C) with NaN = missing
        (``columns.Table``)."""
        self.data, self.transform, self.name, self.description = data, transform, name, description
        self.labels, self.classes, self.conditional = labels, classes, conditional
        if conditional and labels is None:
            raise InputError(f"class-conditional training needs class labels, and {name} has none: use digits, an "
                             f"image folder with one sub-folder per class, a built-in 2-D set with classes "
                             f"({', '.join(CLASSES)}), or a table with --label-column")
        self._model_units = None  # rows in model units, mapped at the first get() (_units)
        self.fill: torch.Tensor | None = None  # (N, *shape) model units the network receives at missing entries
        self.has_missing = bool(data.is_floating_point() and torch.isnan(data).any())  # tables only

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.transform.sample_shape)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def dequant_width(self) -> int:
        """The columns of the uniform draws ``get`` takes to dequantize a table's integer columns (0: none needed)."""
        integer = getattr(self.transform, "integer_columns", None)
        return len(integer) if integer is not None and integer.any() else 0

    def get(self, rows, dequant: torch.Tensor | None = None) -> Batch:
        """The rows (a long tensor of indices) in model units, float32, with their classes as cond["class"] when the
        data set is conditional. A table's integer columns enter as k + u - 1/2 with u the ``dequant`` draws
        (B, dequant_width) of U[0, 1) (none: as k); its missing entries come as 0, or as ``fill`` where the trainer
        filled them (``train.gaps``), and ``mask`` False there."""
        if self.transform.levels:
            x = self.transform.forward(self.data[rows]).float()
        elif dequant is not None and self.dequant_width:  # the integer entries shifted by their dequantization
            x = (self._units()[rows] + self.transform.dequantization_shift(dequant)).float()
        else:
            x = self._units()[rows].float()
        mask = None
        if self.has_missing:
            mask = ~torch.isnan(x)
            x = x.masked_fill(~mask, 0.0) if self.fill is None else torch.where(mask, x, self.fill[rows])
        return Batch(x, {"class": self.labels[rows]} if self.conditional else {}, mask)

    def _units(self) -> torch.Tensor:
        """The whole data set in model units, mapped once: float64 for a table with integer columns (``get`` adds
        their dequantization), float32 otherwise."""
        if self._model_units is None:
            units = self.transform.forward(self.data)
            self._model_units = units.double() if self.dequant_width else units.float()
        return self._model_units

    def sha256(self) -> str:
        """The content hash of the samples and their labels: RUN/config.json's data_sha256, which a resume and the
        evaluation commands check the data against."""
        return content_sha256({"data": self.data, "labels": self.labels})

    def subset(self, rows: torch.Tensor, transform=None, description: str | None = None) -> Dataset:
        """The samples at ``rows`` (their labels follow), mapped by ``transform`` (default: this set's)."""
        return Dataset(self.data[rows], transform or self.transform, self.name, description or self.description,
                       None if self.labels is None else self.labels[rows], self.classes, self.conditional)

    def split(self, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
        """(training set, held-out set or None) of a file's samples: :func:`split.split_rows` keeps ``fraction`` of
        them out of training under ``seed``. Rows are re-standardized by the training rows' own mean and std (the
        held-out rows, unseen, must not shape the map); images keep their pixel map."""
        train, held = (torch.from_numpy(rows) for rows in split_rows(len(self), fraction, seed))
        if not len(held):
            return self, None
        transform = self.transform
        if isinstance(transform, (Standardize, Table)):  # fitted to the training rows alone
            transform = Standardize.fit(self.data[train]) if isinstance(transform, Standardize) else \
                Table.fit(self.data[train], transform.specs)
        what = f"{self.description}; {len(held)} held out (--holdout {fraction:g}), {len(train)} trained on"
        return self.subset(train, transform, what), self.subset(held, transform, what)


def is_builtin(name_or_path) -> bool:
    """Whether the argument names a built-in data set; InputError if it is neither one nor an existing path."""
    if isinstance(name_or_path, str) and (name_or_path in BUILTIN or name_or_path in IMAGE_BUILTIN):
        return True
    if not Path(name_or_path).exists():
        raise InputError(f"unknown dataset {str(name_or_path)!r}: neither a built-in name "
                         f"({', '.join([*BUILTIN, *IMAGE_BUILTIN])}) nor an existing file or folder")
    return False


def _digits(split: str, conditional: bool) -> Dataset:
    images, labels = digits.digits_split(split)
    return Dataset(torch.from_numpy(images), Pixels(images.shape[1:], digits.LEVELS), "digits",
                   f"built-in 'digits' ({split} split): {len(images)} images 1x8x8, {digits.LEVELS} levels",
                   torch.from_numpy(labels), digits.CLASSES, conditional)


def _toy(name: str, n: int, seed: int, conditional: bool) -> Dataset:
    x, labels = labeled(name, n, seed)
    return Dataset(x, Standardize.identity(x.shape[1]), name, f"built-in {name!r}: {n} points, seed {seed}, "
                   "standardized units", labels, CLASSES.get(name), conditional)


def _image_files(path: Path, image_size: int | None, channels: int | None, pixel_range, conditional: bool) -> Dataset:
    found = read_images(path, image_size=image_size, channels=channels, pixel_range=pixel_range)
    if found.skipped:
        warnings.warn(f"{path}: skipped {len(found.skipped)} unreadable file(s), e.g. {found.skipped[0]}", stacklevel=3)
    labels = None if found.labels is None else torch.from_numpy(found.labels)
    classes = found.classes and _named_classes(path, found.classes)
    return Dataset(torch.from_numpy(found.images), Pixels(found.images.shape[1:], found.levels), str(path.resolve()),
                   found.source, labels, classes, conditional)


def _named_classes(folder: Path, classes: list[str]) -> list[str]:
    """The class names of an image folder: its sub-folders' names, or the names ``classes.json`` in the folder gives
    them ({"sub-folder": "name", ...}; sub-folders it leaves out keep their own)."""
    path = folder / "classes.json"
    if not path.is_file():
        return classes
    try:
        names = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not readable JSON: {' '.join(str(e).split())}") from None
    if not isinstance(names, dict) or not all(isinstance(v, str) and v for v in names.values()):
        raise InputError(f"{path} must map sub-folder names to class names, e.g. {{\"{classes[0]}\": \"a name\"}}")
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise InputError(f"{path} names {', '.join(unknown)}, which are not class sub-folders of {folder} "
                         f"({', '.join(classes)})")
    named = [names.get(c, c) for c in classes]
    if len(set(named)) < len(named):
        raise InputError(f"{path} gives two classes the same name")
    return named


def is_table_file(path) -> bool:
    """A .csv whose first line is a header (no cell a number): a table, read by ``data.tables``."""
    return Path(path).suffix.lower() == ".csv" and Path(path).is_file() and csv_header(path) is not None


def _classes(values: list[str], column: str, path: Path) -> tuple[torch.Tensor, list[str]]:
    """(labels (N,) long, class names): a label column's cells as indices into its distinct classes, numbers by value
    (3 and 3.0 are class "3") then text, as a categorical column's categories are ordered."""
    gap = next((i for i, v in enumerate(values) if is_missing(v)), None)
    if gap is not None:
        raise InputError(f"{path}: the label column {column!r} has a missing cell (data row {gap + 1}); every row "
                         "needs its class")
    numbers = [parse_number(v) for v in values]
    fractional = next((v for v, x in zip(values, numbers) if x is not None and x != round(x)), None)
    if fractional is not None and all(x is not None for x in numbers):
        raise InputError(f"{path}: label column {column!r} holds non-integer values (e.g. {fractional!r}); class "
                         "labels must be integers or text")
    names = [class_name(v) for v in values]
    classes = categories_of(names)
    index = {name: i for i, name in enumerate(classes)}
    return torch.tensor([index[v] for v in names], dtype=torch.long), classes


def class_name(cell: str) -> str:
    """A label cell as the name of its class: a whole number as its integer ("3.0" and "3" are class "3"), text
    stripped."""
    x = parse_number(cell)
    return str(int(x)) if x is not None and x == round(x) else cell.strip()


def _table(path: Path, schema: str | None, label_column: str | None, conditional: bool) -> Dataset:
    """A table read with per-column kinds (inferred, overridden by the ``schema`` file), fitted on all its rows."""
    raw = read_table(path)
    labels = classes = None
    if label_column is not None:
        raw, values = pop_column(raw, label_column)
        labels, classes = _classes(values, label_column, path)
    specs = infer_schema(raw, read_schema(schema, raw.header) if schema else None)
    codes = torch.from_numpy(encode(raw, specs))
    missing = int(torch.isnan(codes).sum())
    kinds = ", ".join(f"{sum(s.kind == k for s in specs)} {k}" for k in dict.fromkeys(s.kind for s in specs))
    what = (f"{path}: a table of {len(codes)} rows x {len(specs)} columns ({kinds}), {missing} missing cells" +
            (f", classes from column {label_column!r} ({len(classes)})" if classes else ""))
    return Dataset(codes, Table.fit(codes, specs), str(path.resolve()), what, labels, classes, conditional)


def _rows(path: Path, label_column: str | None, conditional: bool) -> Dataset:
    array, labels, classes, what = load_array(path), None, None, ""
    if label_column is not None:
        array, labels, classes = split_label_column(array, label_column, path)
        labels, what = torch.from_numpy(labels), f", classes from column {label_column!r} ({len(classes)})"
    array = torch.from_numpy(array)
    return Dataset(array, Standardize.fit(array), str(path.resolve()),
                   f"{path}: {array.shape[0]} rows x {array.shape[1]} features, standardized{what}", labels, classes,
                   conditional)


def load_dataset(name_or_path: str | os.PathLike, n: int = 100_000, seed: int = 0, *, image_size: int | None = None,
                 channels: int | None = None, pixel_range=None, class_conditional: bool = False,
                 label_column: str | None = None, schema: str | None = None) -> Dataset:
    """The data set a model trains on.

    A built-in 2-D name gives n fresh points under seed, already in their own units (identity map); 'digits' its
    1,500 training images; a folder of images or a .npy of images (N, H, W[, C]) or (N, C, H, W) is read by
    :func:`images.read_images` (``image_size``, ``channels``, ``pixel_range``); any other argument is a .npy or
    .csv file of rows, standardized per feature (n and seed unused), without its ``label_column`` when one is named;
    a .csv with a header line is a table (``data.tables``: per-column kinds, inferred or from the ``schema`` file).
    ``class_conditional``: batches carry the classes (digits', an image folder's sub-folders, a built-in's, the label
    column's) as cond["class"].
    """
    if schema is not None and (is_builtin(name_or_path) or not is_table_file(name_or_path)):
        raise InputError(f"--schema applies to .csv tables with a header line, not to {name_or_path}")
    if label_column is not None and (is_builtin(name_or_path) or is_image_source(name_or_path)):
        raise InputError(f"--label-column applies to .csv and .npy files of rows, not to {name_or_path}")
    if (image_size or channels or pixel_range) and (is_builtin(name_or_path) or not is_image_source(name_or_path)):
        raise InputError(f"--image-size, --channels and --pixel-range apply to image folders and image .npy files, "
                         f"not to {name_or_path}" + (" (1x8x8, 17 levels)" if name_or_path in IMAGE_BUILTIN else ""))
    if is_builtin(name_or_path):
        if name_or_path in IMAGE_BUILTIN:
            return _digits("train", class_conditional)
        return _toy(name_or_path, n, seed, class_conditional)
    path = Path(name_or_path)
    if is_image_source(path):
        return _image_files(path, image_size, channels, pixel_range, class_conditional)
    if is_table_file(path):
        return _table(path, schema, label_column, class_conditional)
    return _rows(path, label_column, class_conditional)


def load_heldout(name: str, n: int, seed: int, class_conditional: bool = False) -> Dataset:
    """The held-out data of a built-in set for a run trained under ``seed``: a 2-D set's ``n`` points drawn afresh
    under :func:`split.heldout_seed` (never the training draw), digits' fixed 297-image test split (n unused)."""
    if name in IMAGE_BUILTIN:
        return _digits("test", class_conditional)
    return _toy(name, n, heldout_seed(seed), class_conditional)


def table_rows(path, table: Table, label_column: str | None = None) -> torch.Tensor:
    """The codes (N, C) float64 of a table file read as ``table`` reads its columns (by name, in any order; its
    ``label_column``, if it has it, left out); InputError naming the columns that differ from the model's."""
    raw = read_table(path)
    if label_column is not None and label_column in raw.header:
        raw = pop_column(raw, label_column)[0]
    raw = check_header(raw, [s.name for s in table.specs], str(path))
    return torch.from_numpy(encode(raw, table.specs))


def load_points(name_or_path: str | os.PathLike, n: int | None, seed: int,
                sample_shape: tuple[int, ...] | None = None, table: Table | None = None,
                label_column: str | None = None) -> tuple[torch.Tensor, str]:
    """(float64 (N, *shape) in the data's own units, a description): the points a command evaluates.

    A built-in 2-D name gives n fresh points under seed; 'digits' n of its 297 held-out images. A .npy or .csv file
    of rows, or images (a folder, or a .npy of images, read at the (C, H, W) of ``sample_shape`` when given), gives n
    of its samples drawn without replacement under seed (kept in file order), or all of them when n is None or >= their
    number. A table model (``table``) reads a file as :func:`table_rows` does (without ``label_column``): its codes, NaN
    where a cell is missing.
    """
    if n is not None:
        check_count_and_seed(n, seed)
    if is_builtin(name_or_path) and name_or_path in BUILTIN:
        return BUILTIN[name_or_path](n, seed).double(), f"built-in {name_or_path!r}: {n} points, seed {seed}"
    if name_or_path in IMAGE_BUILTIN:
        rows, what = torch.from_numpy(digits.digits_split("test")[0]).double(), "digits (held-out split)"
    elif table is not None:
        rows, what = table_rows(name_or_path, table, label_column), str(name_or_path)
    elif is_image_source(name_or_path):
        images = sample_shape is not None and len(sample_shape) == 3
        size, channels = (sample_shape[-1], sample_shape[0]) if images else (None, None)
        images = read_images(name_or_path, size, channels).images
        rows, what = torch.from_numpy(images).double(), str(name_or_path)
    else:
        rows, what = torch.from_numpy(load_array(name_or_path)), str(name_or_path)
    total = len(rows)
    if n is None or n >= total:
        return rows, f"{what}: all {total} rows"
    keep = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return rows[keep], f"{what}: {n} of {total} rows, drawn under seed {seed}"
