"""User arrays: reading .npy and .csv files of (N, D) rows, and writing arrays atomically.

Written rows keep their dtype (float32 or float64; other floats become float64, integers stay) and a .csv holds each
value in the shortest text that reads back as the same number of that dtype (numpy's repr: 0.1 for float32's 0.1,
not 0.10000000149011612), under an optional header line of column names. :func:`row_format` tells which names and
dtype the samples of a model trained on a file should have."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_atomically
from ..errors import InputError, one_line
from .toys import BUILTIN

# ---------------------------------------------------------------------------------------------
# User arrays.

_EXTENSIONS = (".npy", ".csv")


def read_npy(path: Path) -> np.ndarray:
    """The array stored in a .npy file, never unpickled; InputError in one line if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable .npy file ({one_line(e)})") from None


def _read_npy(path: Path) -> np.ndarray:
    """The rows of a .npy file as float64."""
    array = read_npy(path)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: holds {array.dtype} values; expected real numbers")
    return array.astype(np.float64)


def _parse_csv_line(path: Path, number: int, cells: list[str]) -> list[float]:
    """The numbers of one comma-separated line's cells; InputError naming the line and cell otherwise."""
    try:
        return [float(c) for c in cells]
    except ValueError:
        j = next(j for j, c in enumerate(cells) if not _is_number(c))
        raise InputError(f"{path}: line {number}, column {j + 1}: {cells[j].strip()[:40]!r} "
                         "is not a number") from None


def _is_number(cell: str) -> bool:
    """Whether float() accepts the cell."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def csv_lines(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(the header or None, [(line number, cells)] of the other lines) of a file of comma-separated cells, each
    stripped; empty lines skipped; a first line without any number is a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read as text ({one_line(e)})") from None
    lines = [(i, [c.strip() for c in line.split(",")]) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if lines and not any(_is_number(c) for c in lines[0][1]):
        return lines[0][1], lines[1:]
    return None, lines


def _read_csv(path: Path) -> np.ndarray:
    """Numbers separated by commas, one row a line; a first line without any number is a header."""
    _, lines = csv_lines(path)
    rows = [_parse_csv_line(path, i, cells) for i, cells in lines]
    for (i, _), row in zip(lines, rows):
        if len(row) != len(rows[0]):
            raise InputError(f"{path}: line {i} has {len(row)} values, but line {lines[0][0]} "
                             f"has {len(rows[0])}")
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(rows[0]) if rows else 0)


def _check_path(path: Path) -> None:
    """Raise InputError unless path has a known extension."""
    if path.suffix.lower() not in _EXTENSIONS:
        raise InputError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
                         f"expected one of {', '.join(_EXTENSIONS)}")


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Read a .npy or .csv file of N >= 2 finite rows of D >= 1 numbers into float64 (N, D)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a .npy or .csv file")
    _check_path(path)
    array = _read_npy(path) if path.suffix.lower() == ".npy" else _read_csv(path)
    if array.ndim != 2:
        raise InputError(f"{path}: array of shape {array.shape}; expected shape (N, D), one row "
                         "per data point")
    if array.shape[0] < 2:
        raise InputError(f"{path}: {array.shape[0]} data row(s); need at least 2")
    if array.shape[1] < 1:
        raise InputError(f"{path}: rows have no values; expected shape (N, D) with D >= 1")
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad.size:
        raise InputError(f"{path}: {bad.size} of {array.shape[0]} rows contain NaN or Inf "
                         f"(first: row {bad[0]}, counting from 0)")
    return array


def csv_header(path: str | os.PathLike) -> list[str] | None:
    """The column names of a .csv file whose first non-empty line holds no number (None without one, and for .npy)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read as text ({one_line(e)})") from None
    cells = [c.strip() for c in first.split(",")]
    return None if any(_is_number(c) for c in cells) else cells


def label_column_index(column: str, header: list[str] | None, width: int, path) -> int:
    """The 0-based index of the label ``column`` (a header name, or a column number) among ``width`` columns."""
    if header is not None and column in header:
        return header.index(column)
    if column.isdigit() and int(column) < width:
        return int(column)
    names = f"its columns are {', '.join(header)}" if header else f"it has {width} columns, 0-based"
    raise InputError(f"{path}: no label column {column!r} ({names})")


def split_label_column(array: np.ndarray, column: str, path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(the features without ``column``, labels (N,) int64 indexing classes, classes: the column's distinct integer
    values in increasing order, as text). ``column`` is a header name, or a 0-based column number."""
    j = label_column_index(column, csv_header(path), array.shape[1], path)
    values = array[:, j]
    if not np.array_equal(values, np.round(values)):
        example = values[values != np.round(values)][0]
        raise InputError(f"{path}: label column {column!r} holds non-integer values (e.g. {example!r}); "
                         "class labels must be integers")
    if array.shape[1] < 2:
        raise InputError(f"{path}: the label column {column!r} is its only column; nothing is left to model")
    distinct, labels = np.unique(values.astype(np.int64), return_inverse=True)
    return np.delete(array, j, axis=1), labels.astype(np.int64), [str(v) for v in distinct]


def fits_float32(values, chunk: int = 1 << 16) -> bool:
    """Whether every value is a float32 as written: a float32 exactly (a float32 array read as float64), or the number
    that float32's shortest text reads as (a .csv of 5.1, which float32 prints as 5.1). Checked ``chunk`` values at a
    time, stopping at the first chunk that does not fit."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    with np.errstate(over="ignore"):  # values beyond float32's range become inf, and fail
        for lo in range(0, flat.size, chunk):
            v = flat[lo:lo + chunk]
            f32 = v.astype(np.float32)
            v, f32 = v[f32 != v], f32[f32 != v]  # those that are no float32 exactly must be float32's text
            if not (f32.astype(str).astype(np.float64) == v).all():
                return False
    return True


def codes_dtype(codes) -> str:
    """The dtype a table's codes (NaN = missing) are written in: float32 where :func:`fits_float32` holds for every
    observed value, else float64."""
    codes = np.asarray(codes, dtype=np.float64)
    return "float32" if fits_float32(codes[~np.isnan(codes)]) else "float64"


def row_format(source, label_column: str | None, rows) -> tuple[list[str] | None, str | None]:
    """(column names, dtype) of the samples of a model trained on the (N, D) ``rows`` read from ``source`` (a .npy or
    .csv path, or a built-in 2-D name) without ``label_column``: the names are the .csv header's without the label
    column (a built-in set's: x, y; None for a .npy, a headerless .csv or a header of another width), the dtype
    "float32" where :func:`fits_float32` holds for every row value, else "float64". (None, None) for images, whose
    levels decide how they are written."""
    rows = np.asarray(rows)
    if rows.ndim != 2:
        return None, None
    dtype = "float32" if fits_float32(rows) else "float64"
    if str(source) in BUILTIN:
        return ["x", "y"], dtype
    header = csv_header(source)
    if header is not None and label_column is not None:
        del header[label_column_index(label_column, header, len(header), source)]
    return (header if header is not None and len(header) == rows.shape[1] else None), dtype


def _csv_header(columns: list[str] | None) -> bytes:
    """The header line of a .csv with these column names (none: no line)."""
    return (",".join(columns) + "\n").encode() if columns else b""


def _write_csv(f, array: np.ndarray) -> None:
    """Write rows, each value in the shortest text that reads back as the same value of the array's dtype (numpy's
    str of a float32 or float64, which for float64 is Python's repr)."""
    f.write("".join(",".join(row) + "\n" for row in array.astype(str).tolist()).encode())


def _csv_text(rows: list[list[str]]) -> bytes:
    """Rows of cells as .csv lines, quoted where a cell needs it (a comma, a quote, a line break)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def check_writable_parent(path: str | os.PathLike) -> Path:
    """``path`` as a Path; InputError unless its folder exists, is a folder, and this process may create files there
    (root may anywhere)."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{path}: {parent} is a file, not a directory" if parent.exists() else
                         f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot create files in {parent} (permission denied)")
    return path


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise InputError unless an array can be written at path (known extension, a folder that can be written)."""
    path = Path(path)
    _check_path(path)
    check_writable_parent(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path


def output_folder(path: str | os.PathLike, what: str = "the output folder") -> Path:
    """Create the folder ``path`` (and its parents) for a command's results before any work is done;
    InputError naming it as ``what`` where it cannot be (a file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot use {path} as {what}: {e.strerror or e}") from None
    return path


def save_array(path: str | os.PathLike, array, columns: list[str] | None = None) -> None:
    """Write an array to .npy or .csv atomically: path ends up old or new, never half. Rows (N, D) go to either as
    float32 or float64 (module doc), a .csv under a header of ``columns`` if given; integer arrays (image levels) of
    any shape (N, ...) keep their dtype and go to .npy only."""
    path = check_output_path(path)
    array = _writable_array(path, array)

    def write(f):
        if path.suffix.lower() == ".npy":
            np.save(f, array)
        else:
            f.write(_csv_header(columns))
            _write_csv(f, array)

    try:
        write_atomically(path, write)
    except OSError as e:
        raise InputError(f"{path}: cannot write ({one_line(e)})") from None


def stream_array(path: str | os.PathLike, total: int, batches, columns: list[str] | None = None,
                 text=None) -> None:
    """Write ``total`` rows that come as consecutive arrays (B, ...) from the iterable ``batches`` to a .npy or .csv
    atomically, holding one batch at a time; the file is what :func:`save_array` writes for all the rows at once
    (``columns`` the .csv header). ``text``: a table's rows -> their cells' text, which a .csv holds instead of
    numbers (quoted as the csv module does). Whatever ``batches`` raises leaves path as it was."""
    path = check_output_path(path)

    def write(f):
        written, dtype, csv = 0, None, path.suffix.lower() == ".csv"
        if csv:
            f.write(_csv_header(columns) if text is None else _csv_text([columns]))
        for batch in batches:
            batch = _writable_array(path, batch)
            if csv and text is not None:
                f.write(_csv_text(text(batch)))
            elif csv:
                _write_csv(f, batch)
            else:
                if dtype is None:  # the header, as np.save writes it, once the first batch tells the dtype
                    dtype = batch.dtype
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": (total, *batch.shape[1:])}
                    np.lib.format.write_array_header_1_0(f, header)
                f.write(np.ascontiguousarray(batch, dtype=dtype).tobytes())
            written += len(batch)
        if written != total:
            raise ValueError(f"{path}: {written} rows came for {total}")

    try:
        write_atomically(path, write)
    except OSError as e:
        raise InputError(f"{path}: cannot write ({one_line(e)})") from None


def _writable_array(path: Path, array) -> np.ndarray:
    """``array`` as numpy: integers and float32 as they are, anything else float64; InputError unless path's format
    holds it (see save_array)."""
    array = np.asarray(array.detach().cpu() if torch.is_tensor(array) else array)
    if array.dtype.kind not in "iu" and array.dtype != np.float32:
        array = array.astype(np.float64)
    is_npy = path.suffix.lower() == ".npy"
    if array.ndim < 2 or (array.ndim > 2 and not (is_npy and array.dtype.kind in "iu")):
        raise InputError(f"{path}: cannot save an array of shape {array.shape} as {path.suffix}; expected rows (N, D)"
                         + (" (images go to .npy or .png)" if array.ndim > 2 else ""))
    return array
