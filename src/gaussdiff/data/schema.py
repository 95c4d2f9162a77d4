"""The kind of each column of a table: inferred from its cells (:func:`infer_schema`), or read from a columns.json
schema (:func:`read_schema`) that each run writes (:func:`write_schema`) and a user may edit and give back."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from ..atomic import write_atomically
from ..columns import CONTINUOUS_MAPS, KINDS, MAX_DECIMALS, OPTIONAL, OPTIONS, ColumnSpec, check_decimals
from ..errors import InputError, one_line
from .tables import RawTable, cell_key, is_missing, key_order, read_text, shown

SCHEMA_FORMAT, SCHEMA_VERSION = "gaussdiff-columns", 1
SKEWED = 1.0  # |sample skewness| above which a continuous column is mapped by quantiles (TabDDPM's choice)
TIED = 0.1  # the share of repeated cells from which a column without decimals is mapped by quantiles


# ---------------------------------------------------------------------------------------------
# The kind of each column.

def _observed(raw: RawTable, j: int) -> list[tuple[int, str]]:
    """(line, cell) of column j's non-missing cells; InputError if there is none."""
    cells = [(line, row[j]) for line, row in zip(raw.lines, raw.rows) if not is_missing(row[j])]
    if not cells:
        raise InputError(f"{raw.path}: column {raw.header[j]!r} has no values: every cell is missing")
    return cells


def categories_of(cells: list[str]) -> list[str]:
    """The distinct values of ``cells`` in a categorical column's order: the text each first appears as (1 and 1.0
    are one), numbers by value, then text."""
    return _distinct(cells, [cell_key(cell) for cell in cells])


def _distinct(cells: list[str], keys: list) -> list[str]:
    """The text each distinct key first appears as, in the keys' order (:func:`key_order`)."""
    first: dict = {}
    for key, cell in zip(keys, cells):
        first.setdefault(key, cell)
    return [first[k] for k in sorted(first, key=key_order)]


def skewness(values: np.ndarray) -> float:
    """The sample skewness g1 = m3 / m2^(3/2), m_k the k-th central moment (scipy.stats.skew's default, bias=True):
    the plain moment estimator; its small-sample bias (a factor sqrt(n(n-1))/(n-2), 1 % at n = 150) does not
    matter against the threshold of 1."""
    centred = values - values.mean()
    m2, m3 = np.mean(centred ** 2), np.mean(centred ** 3)
    return float(m3 / m2 ** 1.5)


def _infer_column(raw: RawTable, j: int) -> ColumnSpec:
    """The inferred kind of column j (the rules of :func:`infer_schema`)."""
    name, observed = raw.header[j], _observed(raw, j)
    cells = [cell for _, cell in observed]
    keys = [cell_key(cell) for cell in cells]
    texts = [(line, cell) for (line, cell), key in zip(observed, keys) if isinstance(key, str)]
    if len(set(keys)) == 1:
        return ColumnSpec(name, "constant", value=cells[0])
    if texts and 2 * (len(cells) - len(texts)) >= len(cells):
        line, cell = texts[0]
        raise InputError(f"{raw.path}: column {name!r}, line {line}: {cell[:40]!r} is not a number (the column's "
                         "other cells are numbers; give it kind categorical in a --schema file to keep it as "
                         "categories)")
    if texts or len(set(keys)) == 2:
        return ColumnSpec(name, "categorical", categories=_distinct(cells, keys))
    values = np.array(keys)
    if np.array_equal(values, np.round(values)):
        return ColumnSpec(name, "integer")
    places = decimals(cells)
    return ColumnSpec(name, "continuous", transform=continuous_map(values, places), decimals=places)


def continuous_map(values: np.ndarray, places: int | None) -> str:
    """quantile for a skewed column (|skewness| > SKEWED, TabDDPM's choice) or one whose repeated values no rounding
    restores (at least TIED of its cells repeat another's and it has no decimals: computed values on a grid, such as
    rescaled integers), whose point masses the quantile map keeps as steps; else standardize."""
    repeated = 1 - len(np.unique(values)) / len(values)
    return "quantile" if abs(skewness(values)) > SKEWED or (places is None and repeated >= TIED) else "standardize"


def decimals(cells: list[str]) -> int | None:
    """The most places after the decimal point (or comma) among the cells' text; None when a cell is written with an
    exponent, or the places exceed MAX_DECIMALS (measurements kept to a few places are rounded to them; a column of
    computed values is not)."""
    most = 0
    for cell in cells:
        text = cell.strip()
        if "e" in text.lower():
            return None
        most = max(most, len(text.replace(",", ".").partition(".")[2]))
    return most if most <= MAX_DECIMALS else None


def _complete(raw: RawTable, j: int, spec: ColumnSpec) -> ColumnSpec:
    """A schema's spec of column j with the options it left out inferred from the data: a categorical's categories,
    a constant's value (InputError if the column holds several), a continuous column's transform (standardize),
    a continuous, positive or bounded column's decimals (:func:`decimals` of its cells)."""
    cells = [cell for _, cell in _observed(raw, j)]
    distinct = _distinct(cells, [cell_key(cell) for cell in cells])
    if spec.kind == "categorical" and spec.categories is None:
        return dataclasses.replace(spec, categories=distinct)
    if spec.kind == "constant" and spec.value is None:
        if len(distinct) > 1:
            raise InputError(f"{raw.path}: column {spec.name!r} has kind constant in the schema but holds "
                             f"{len(distinct)} different values ({shown(distinct, 5)})")
        return dataclasses.replace(spec, value=distinct[0])
    if spec.kind == "continuous" and spec.transform is None:
        spec = dataclasses.replace(spec, transform="standardize")
    if "decimals" in OPTIONS[spec.kind] and spec.decimals is None:
        spec = dataclasses.replace(spec, decimals=decimals(cells))
    return spec


def infer_schema(raw: RawTable, overrides: dict[str, ColumnSpec] | None = None) -> list[ColumnSpec]:
    """The kind of each column, in the table's order: a column named in ``overrides`` (from :func:`read_schema`)
    takes that spec, its left-out options inferred from the data; every other column is inferred:
    every cell missing: InputError; one distinct value: constant; some text: InputError naming it when at least
    half of the cells are numbers, else categorical; exactly 2 distinct values: categorical; all numbers whole:
    integer; else continuous, by quantiles when |skewness| > 1 or a tenth of its cells repeat values and it has no
    decimals (:func:`continuous_map`), else standardized, with the decimals its cells show. positive and bounded only
    come from a schema. Categories are the distinct cells' text, numbers by value first, then text in Python's
    order."""
    overrides = overrides or {}
    return [_complete(raw, j, overrides[name]) if name in overrides else _infer_column(raw, j)
            for j, name in enumerate(raw.header)]


# ---------------------------------------------------------------------------------------------
# columns.json.

def column_json(spec: ColumnSpec) -> dict:
    """One column of columns.json: name, kind and the options of that kind (an optional one only where set)."""
    return {"name": spec.name, "kind": spec.kind, **{k: getattr(spec, k) for k in OPTIONS[spec.kind]
                                                     if k not in OPTIONAL or getattr(spec, k) is not None}}


def schema_json(specs: list[ColumnSpec]) -> dict:
    """The content of columns.json for these columns."""
    return {"format": SCHEMA_FORMAT, "version": SCHEMA_VERSION, "columns": [column_json(s) for s in specs]}


def write_schema(path: str | os.PathLike, specs: list[ColumnSpec]) -> None:
    """Write columns.json atomically, one column a line (easy to edit and give back with --schema)."""
    path = Path(path)
    body = ",\n".join(f"    {json.dumps(column_json(s))}" for s in specs)
    text = (f'{{\n  "format": "{SCHEMA_FORMAT}",\n  "version": {SCHEMA_VERSION},\n'
            f'  "columns": [\n{body}\n  ]\n}}\n')
    try:
        write_atomically(path, lambda f: f.write(text.encode()))
    except OSError as e:
        raise InputError(f"{path}: cannot write ({one_line(e)})") from None


def _text(value, where: str) -> str:
    """A category or constant value of a schema as text: a string as it is, a number as Python writes it."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(value)
    raise InputError(f"{where}: {value!r} must be text or a number")


def _bound(entry: dict, key: str, where: str) -> float:
    """A bounded column's ``low`` or ``high``: a finite number."""
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: kind bounded needs {key!r}, a finite number, got {value!r}")
    return float(value)


def _column_from_json(entry, path: Path, number: int) -> ColumnSpec:
    """The ColumnSpec of entry ``number`` (from 1) of a schema's "columns"; InputError naming the file and the column
    when it is not one (no name, an unknown kind or field, an option of another kind, a bad option value)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise InputError(f"{path}: entry {number} of \"columns\" must be an object with a \"name\" (text) and a "
                         f"\"kind\", got {json.dumps(entry)[:80]}")
    name, kind = entry["name"].strip(), entry.get("kind")
    where = f"{path}: column {name!r}"
    if kind not in KINDS:
        raise InputError(f"{where}: unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
    wrong = [k for k in entry if k not in ("name", "kind", *OPTIONS[kind])]
    if wrong:
        takes = f"takes only {', '.join(OPTIONS[kind])}" if OPTIONS[kind] else "takes no options"
        raise InputError(f"{where}: kind {kind} {takes}, not {', '.join(wrong)}")
    spec = ColumnSpec(name, kind)
    if kind == "continuous" and "transform" in entry:
        if entry["transform"] not in CONTINUOUS_MAPS:
            raise InputError(f"{where}: unknown transform {entry['transform']!r}; expected one of "
                             f"{', '.join(CONTINUOUS_MAPS)}")
        spec.transform = entry["transform"]
    elif kind == "bounded":
        spec.low, spec.high = _bound(entry, "low", where), _bound(entry, "high", where)
        if not spec.low < spec.high:
            raise InputError(f"{where}: low ({spec.low}) must be below high ({spec.high})")
    elif kind == "constant" and "value" in entry:
        spec.value = _text(entry["value"], where)
    elif kind == "categorical" and "categories" in entry:
        spec.categories = _categories(entry["categories"], where)
    check_decimals(entry.get("decimals"), where)
    spec.decimals = entry.get("decimals")
    return spec


def _categories(values, where: str) -> list[str]:
    """A schema's categories: a non-empty list of distinct texts or numbers, as text."""
    if not isinstance(values, list) or not values:
        raise InputError(f"{where}: categories must be a non-empty list, got {json.dumps(values)[:80]}")
    texts = [_text(v, where) for v in values]
    keys = [cell_key(t) for t in texts]
    repeated = [t for t, k in zip(texts, keys) if keys.count(k) > 1]
    if repeated:
        raise InputError(f"{where}: categories {', '.join(map(repr, dict.fromkeys(repeated)))} repeat")
    return texts


def _schema_columns(path: Path, document) -> list:
    """The "columns" list of a schema document: {"format", "version", "columns"} (format and version may be left
    out), or just the list."""
    if isinstance(document, list):
        return document
    if not isinstance(document, dict) or not isinstance(document.get("columns"), list):
        raise InputError(f"{path}: expected an object with a \"columns\" list (or just the list), as RUN/columns.json")
    unknown = [k for k in document if k not in ("format", "version", "columns")]
    if unknown:
        raise InputError(f"{path}: unknown field(s) {', '.join(map(repr, unknown))}; expected format, version, columns")
    if document.get("format", SCHEMA_FORMAT) != SCHEMA_FORMAT:
        raise InputError(f"{path}: format {document['format']!r} is not {SCHEMA_FORMAT!r}")
    if document.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise InputError(f"{path}: version {document['version']!r}; this gaussdiff reads version {SCHEMA_VERSION}")
    return document["columns"]


def read_schema(path: str | os.PathLike, header: list[str]) -> dict[str, ColumnSpec]:
    """The columns a --schema file sets, by name: the format of columns.json (module :func:`write_schema`), or just
    its list of columns; it may name a subset of the table's ``header``. InputError naming the file and what is
    wrong: not JSON, an unknown or repeated column name, an unknown kind, an option the kind does not take."""
    path = Path(path)
    try:
        document = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not a JSON file ({one_line(e)})") from None
    specs = [_column_from_json(entry, path, i + 1) for i, entry in enumerate(_schema_columns(path, document))]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: names column(s) {', '.join(map(repr, repeated))} more than once")
    unknown = [n for n in names if n not in header]
    if unknown:
        raise InputError(f"{path}: names column(s) the table does not have: {', '.join(map(repr, unknown))} "
                         f"(its columns are {shown(header, 20)})")
    return {s.name: s for s in specs}
