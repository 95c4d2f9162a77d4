"""Tables as text: reading a .csv with a header, and the codes of :mod:`gaussdiff.columns` to and from the cells'
text (the kind of each column, inferred or from a columns.json schema, is :mod:`.schema`'s).

Reading (:func:`read_table`): UTF-8 text, with or without a byte-order mark; the first non-blank line is the header.
The separator is ``;`` when the header line has a ``;`` and no ``,``, else ``,``; cells follow the csv module's
quoting (``"a, b"`` is one cell). In a ``;`` file a number may have a decimal comma (``3,14`` reads as ``3.14``).
Spaces around a cell are not part of it, and blank lines are skipped (so in a one-column table a missing cell must
be written as one of the tokens below). A cell is missing when it is empty or, in any case, ``na``, ``nan``, ``n/a``,
``null`` or ``none``. Numbers are what Python's float() reads, finite, without ``_``; any other cell is text.

Codes (the data's units of a table): a float64 array (N, C) in the file's column order: numbers as they are, a
categorical cell the index of its category, a constant cell its value (0 if it is text); NaN where a cell is missing.
Written tables (:func:`write_table`) are UTF-8, comma-separated, quoted by the csv module where needed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_atomically
from ..columns import ColumnSpec
from ..errors import InputError, one_line
from .files import check_writable_parent, label_column_index

MISSING = ("", "na", "nan", "n/a", "null", "none")  # a cell's text, stripped and lower-cased


@dataclass
class RawTable:
    """A table as read: the file's ``path``, its ``header`` (column names), ``rows`` of cell text (stripped), and
    ``lines``, the file line number (from 1, the header's line counted) where each row starts."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column(self, j: int) -> list[str]:
        """The cells of column j, top to bottom."""
        return [row[j] for row in self.rows]


# ---------------------------------------------------------------------------------------------
# Cells.

def is_missing(cell: str) -> bool:
    """Whether a cell's text marks a missing value (module doc)."""
    return cell.strip().lower() in MISSING


def parse_number(cell: str) -> float | None:
    """The cell's number, or None when it is text (module doc: float()'s syntax, finite, no ``_``)."""
    if "_" in cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def cell_key(cell: str) -> float | str:
    """What tells two cells of a category or a constant apart: the value of a number (so 1 and 1.0 are one), the
    text of anything else."""
    value = parse_number(cell)
    return cell if value is None else value


def key_order(key: float | str) -> tuple:
    """Sorts keys: numbers by value, then text as text."""
    return isinstance(key, str), key


def _decimal_comma(cell: str) -> str:
    """A ``;`` file's cell with a decimal comma (``-3,14``) as the number's usual text (``-3.14``); others as is."""
    if cell.count(",") == 1 and "." not in cell and parse_number(cell.replace(",", ".")) is not None:
        return cell.replace(",", ".")
    return cell


def shown(values: list[str], at_most: int = 10) -> str:
    """Values listed for a message, the first ``at_most`` of them."""
    more = f", ... ({len(values)} in all)" if len(values) > at_most else ""
    return ", ".join(values[:at_most]) + more


# ---------------------------------------------------------------------------------------------
# Reading and writing tables.

def read_text(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark dropped); InputError naming the file if it is none."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a .csv file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: is not UTF-8 text ({one_line(e)})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({one_line(e)})") from None


def _records(path: Path, text: str, separator: str):
    """(line number where it starts, cells) of each non-blank record of the text."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator, strict=True)
    start = 1
    try:
        for cells in reader:
            if len(cells) > 1 or cells and cells[0].strip():  # a line of separators is a row of missing cells
                yield start, [c.strip() for c in cells]
            start = reader.line_num + 1
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: {one_line(e)}") from None


def _check_header(path: Path, header: list[str]) -> None:
    """InputError for a header with an empty or repeated name, or one that holds only numbers (no header line)."""
    if all(parse_number(name) is not None for name in header):
        raise InputError(f"{path}: no header line: the first line holds numbers; a table needs a first line of "
                         "column names")
    empty = [str(j + 1) for j, name in enumerate(header) if not name]
    if empty:
        raise InputError(f"{path}: column(s) {', '.join(empty)} of the header have no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{path}: the header names column(s) {', '.join(map(repr, repeated))} more than once")


def read_table(path: str | os.PathLike) -> RawTable:
    """The table in a text file (module doc): a header line of distinct names, then at least 2 rows with as many
    cells; InputError in one line naming the file (and the line) otherwise."""
    path = Path(path)
    text = read_text(path)
    first = next((line for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise InputError(f"{path}: is empty; expected a header line and rows")
    separator = ";" if ";" in first and "," not in first else ","
    records = list(_records(path, text, separator))
    header = records[0][1]
    _check_header(path, header)
    lines, rows = [line for line, _ in records[1:]], [cells for _, cells in records[1:]]
    for line, cells in zip(lines, rows):
        if len(cells) != len(header):
            raise InputError(f"{path}: line {line} has {len(cells)} cells, the header has {len(header)}")
    if separator == ";":
        rows = [[_decimal_comma(c) for c in cells] for cells in rows]
    if len(rows) < 2:
        raise InputError(f"{path}: has a header line but no data rows" if not rows else
                         f"{path}: has 1 data row (line {lines[0]}); a table needs at least 2")
    return RawTable(path, header, rows, lines)


def write_table(path: str | os.PathLike, header: list[str], text_rows: list[list[str]]) -> None:
    """Write a header and rows of text as a UTF-8, comma-separated file (the csv module quotes where needed),
    atomically: path ends up old or new, never half."""
    path = check_writable_parent(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(text_rows)
    try:
        write_atomically(path, lambda f: f.write(text.getvalue().encode()))
    except OSError as e:
        raise InputError(f"{path}: cannot write ({one_line(e)})") from None


def check_header(raw: RawTable, names: list[str], what: str) -> RawTable:
    """``raw`` with its columns in the order of ``names`` (the same names in another order are reordered: columns go
    by name); InputError naming the missing and the unexpected columns when the sets differ (``what`` says whose
    columns ``names`` are, e.g. "the model's")."""
    if raw.header == names:
        return raw
    missing = [n for n in names if n not in raw.header]
    unexpected = [n for n in raw.header if n not in names]
    if missing or unexpected:
        parts = ([f"missing {shown(missing)}"] if missing else []) + (
            [f"unexpected {shown(unexpected)}"] if unexpected else [])
        raise InputError(f"{raw.path}: its columns are not {what} ({'; '.join(parts)})")
    order = [raw.header.index(n) for n in names]
    return dataclasses.replace(raw, header=list(names), rows=[[row[j] for j in order] for row in raw.rows])


def pop_column(raw: RawTable, column: str | int) -> tuple[RawTable, list[str]]:
    """(the table without ``column``, that column's cells): ``column`` is a header name or a 0-based number."""
    j = label_column_index(str(column), raw.header, len(raw.header), raw.path)
    if len(raw.header) < 2:
        raise InputError(f"{raw.path}: the label column {column!r} is its only column; nothing is left to model")
    rest = dataclasses.replace(raw, header=raw.header[:j] + raw.header[j + 1:],
                               rows=[row[:j] + row[j + 1:] for row in raw.rows])
    return rest, raw.column(j)


# ---------------------------------------------------------------------------------------------
# Codes.

def _codebook(spec: ColumnSpec) -> dict:
    """The code of each key (:func:`cell_key`) a categorical or constant column allows (its category's index, the
    constant's value or 0 for text); empty for other kinds."""
    if spec.kind == "categorical":
        return {cell_key(c): float(i) for i, c in enumerate(spec.categories)}
    if spec.kind == "constant":
        key = cell_key(spec.value)
        return {key: 0.0 if isinstance(key, str) else key}
    return {}


def _code(cell: str, spec: ColumnSpec, codebook: dict) -> float:
    """The code of a non-missing cell; ValueError saying why, when the column's kind does not allow it."""
    key = cell_key(cell)
    if spec.kind == "categorical" and key not in codebook:
        raise ValueError(f"category {cell[:40]!r} is not among the column's categories ({shown(spec.categories)})")
    if spec.kind == "constant" and key not in codebook:
        raise ValueError(f"{cell[:40]!r} differs from the value {spec.value!r} of this constant column")
    if codebook:
        return codebook[key]
    if isinstance(key, str):
        raise ValueError(f"{cell[:40]!r} is not a number (the column is {spec.kind})")
    if spec.kind == "integer" and key != round(key):
        raise ValueError(f"{cell} is not a whole number (the column is integer)")
    if spec.kind == "positive" and key <= 0:
        raise ValueError(f"{cell} is not > 0 (the column is positive)")
    if spec.kind == "bounded" and not spec.low <= key <= spec.high:
        raise ValueError(f"{cell} is outside the column's bounds [{spec.low:g}, {spec.high:g}]")
    return key


def _encode_column(raw: RawTable, j: int, spec: ColumnSpec) -> np.ndarray:
    """Column j's codes (module doc); InputError naming the column and line of a cell its kind does not allow."""
    codes, codebook = np.full(len(raw.rows), np.nan), _codebook(spec)
    for i, row in enumerate(raw.rows):
        if not is_missing(row[j]):
            try:
                codes[i] = _code(row[j], spec, codebook)
            except ValueError as e:
                raise InputError(f"{raw.path}: column {spec.name!r}, line {raw.lines[i]}: {e}") from None
    return codes


def encode(raw: RawTable, specs: list[ColumnSpec]) -> np.ndarray:
    """The table's codes (N, C) float64 (module doc), NaN where a cell is missing; ``specs`` are the table's
    columns in order (see :func:`check_header`)."""
    if [s.name for s in specs] != raw.header:
        raise ValueError("encode: the specs name other columns than the table's header; call check_header first")
    return np.stack([_encode_column(raw, j, s) for j, s in enumerate(specs)], axis=1)


def _decode_column(values: np.ndarray, spec: ColumnSpec) -> list[str]:
    """One column's codes as text (see :func:`decode`)."""
    missing = np.isnan(values)
    values = np.where(missing, 0.0, values)
    if spec.kind == "integer":
        texts = np.array([str(int(v)) for v in np.round(values).tolist()], dtype=object)
    elif spec.kind == "categorical":
        texts = np.array(spec.categories, dtype=object)[values.astype(np.int64)]
    elif spec.kind == "constant":
        texts = np.full(len(values), spec.value, dtype=object)
    else:
        texts = values.astype(np.float32).astype(str).astype(object)  # numpy's shortest float32 text
    texts[missing] = ""
    return texts.tolist()


def decode(codes, specs: list[ColumnSpec]) -> list[list[str]]:
    """Rows of text of the codes (N, C): integers as whole numbers, a category's text, a constant's value, other
    numbers as the shortest text that reads back as their float32 value (str(np.float32(v))), "" where a code is NaN
    (missing)."""
    codes = np.asarray(codes, dtype=np.float64)
    columns = [_decode_column(codes[:, j], spec) for j, spec in enumerate(specs)]
    return [list(row) for row in zip(*columns)]
