"""``gaussdiff impute RUN --data gaps.csv --out filled.csv``: the missing cells of a table's rows (empty, or NA, NaN,
N/A, null, none) filled from K draws of the model's conditional given each row's observed cells
(:mod:`gaussdiff.imputation`); optionally the K draws (``--draws-out``) and per-cell intervals (``--intervals``).

Observed cells are written back as their text in the input (columns in the input's order, a label column included);
imputed ones as ``gaussdiff sample`` writes cells. A vector model (trained on a .npy or a .csv without a header)
reads a .npy (NaN = missing) or a .csv of numbers and missing tokens, and writes .npy or .csv. Every output is
checked before the work and written whole (temporary file, then rename); the input is never written."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.dataset import class_name
from ..data.files import check_output_path, csv_lines, fits_float32, read_npy, save_array
from ..data.tables import check_header, encode, is_missing, parse_number, pop_column, read_table, write_table
from ..errors import InputError
from ..imputation import (
    DEFAULT_DRAWS,
    DEFAULT_METHOD,
    NUMERIC,
    REPAINT_STEPS,
    column_layout,
    default_method,
    impute_steps,
    impute_with,
)
from ..samplers.known import known_nfe
from .common import HelpFormatter, conditioning_note, label_column, positive
from .inpaint import add_known_value_arguments
from .sampling_args import add_model_arguments, add_output_arguments, prepare


def add_parser(sub) -> None:
    p = sub.add_parser("impute", help="fill the missing cells of a table's rows from the model's conditional draws",
                       formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("--data", required=True,
                   help="the rows with gaps: a .csv with the model's columns (by name, in any order) whose empty "
                        "cells or NA, NaN, N/A, null, none are the missing values (a vector model: also a .npy, "
                        "NaN = missing); it is never modified")
    add_output_arguments(p, "the filled rows, .csv (a vector model: also .npy): observed cells as in --data, each "
                            "missing one the point estimate of its draws (numbers: their mean; integers: the rounded "
                            "mean; categories: the most frequent draw, ties to the largest average one-hot)")
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS,
                   help="K, the conditional draws per row (the point estimate's Monte Carlo error is 1/K of the "
                        "conditional variance; the tables benchmark's choice)")
    p.add_argument("--draws-out", default=None,
                   help="also write the K draws, a long .csv: row (0 = the first data row), draw (0..K-1), then the "
                        "columns; each draw is a complete table")
    p.add_argument("--intervals", type=float, default=None, metavar="LEVEL",
                   help="also write an interval at this level (e.g. 0.9) for each imputed numeric cell: the order "
                        "statistics of the draws where K allows (K >= 19 at 0.9), else Gaussian prediction bounds, "
                        "taken in model units (module doc of gaussdiff.imputation)")
    p.add_argument("--intervals-out", default=None,
                   help="where --intervals go, a .csv of row, column, value, lower, upper (default: beside --out, "
                        "STEM.intervals.csv)")
    add_known_value_arguments(p, None, f"the model's, chosen where training ended on held-out cells of a table with "
                                       f"gaps (gaussdiff train --impute-check-cells), else {DEFAULT_METHOD}",
                              f"min({REPAINT_STEPS}, T) for repaint, else min(100, T)")
    # no --class or guidance: a class-conditional model imputes each row given the class in its label column
    p.set_defaults(classes=None, guidance=None, guidance_interval=None, guidance_interval_unit="sigma",
                   guidance_rescale=0.0)


# ---------------------------------------------------------------------------------------------
# Reading the rows.

@dataclass
class Rows:
    """The rows to impute: ``x`` (N, C) in the data's units (a table's codes), NaN = missing; ``text`` the input's
    cells (None for a .npy), ``header`` its column names in its order (None: it has none), ``columns[j]`` the
    position there of the model's column j; ``places`` where each row is ("line 3" of a .csv, "row 2" of a .npy);
    ``labels`` the rows' classes (a class-conditional model's)."""

    x: torch.Tensor
    text: list[list[str]] | None
    header: list[str] | None
    columns: list[int]
    places: list[str]
    labels: torch.Tensor | None = None


def read_rows(path: str, model, run) -> Rows:
    """The rows of --data as the model reads them: a table model's columns by name (its label column, if the file
    has it, copied and, for a class-conditional model, read as the rows' classes); a vector model's numbers."""
    if model.table is None:
        return _vector_rows(Path(path), model)
    if Path(path).suffix.lower() != ".csv":
        raise InputError(f"{path}: a table model imputes the rows of a .csv file with the model's header line")
    raw = read_table(path)
    header, label = list(raw.header), label_column(run, model)
    names = [spec.name for spec in model.table.specs]
    labels = None
    if label is not None and label in raw.header:
        rest, values = pop_column(raw, label)
        labels = _classes(values, raw.lines, label, model, path)
    else:
        rest = raw
    checked = check_header(rest, names, "the model's")
    return Rows(torch.from_numpy(encode(checked, model.table.specs)), raw.rows, header,
                [header.index(n) for n in names], [f"line {line}" for line in raw.lines], labels)


def _classes(values: list[str], lines: list[int], column: str, model, path) -> torch.Tensor | None:
    """The rows' classes of a class-conditional model (each row's label cell, by name); None for another model."""
    if model.conditioning is None:
        return None
    gap = next((i for i, v in enumerate(values) if is_missing(v)), None)
    if gap is not None:
        raise InputError(f"{path}: line {lines[gap]}: the label column {column!r} is empty; a class-conditional "
                         "model imputes each row given its class")
    known = {name: i for i, name in enumerate(model.classes)}
    names = [class_name(v) for v in values]  # as training named them: "3.0" is class "3"
    unknown = next((i for i, v in enumerate(names) if v not in known), None)
    if unknown is not None:
        raise InputError(f"{path}: line {lines[unknown]}: class {values[unknown][:40]!r} of column {column!r} is not "
                         f"one the model was trained on ({', '.join(model.classes[:20])})")
    return torch.tensor([known[v] for v in names], dtype=torch.long)


def _vector_rows(path: Path, model) -> Rows:
    """A vector model's rows: a .npy (NaN = missing) or a .csv of numbers and missing tokens, with an optional header
    (which must be the model's columns where it records them)."""
    D = model.sample_shape[0]
    if path.suffix.lower() == ".npy":
        x = read_npy(path)
        if x.dtype.kind not in "biuf" or x.ndim != 2 or x.shape[1] != D:
            raise InputError(f"{path}: holds {x.dtype} values of shape {x.shape}; the model imputes rows (N, {D})")
        x = torch.from_numpy(x.astype(np.float64))
        return Rows(x, None, model.columns, list(range(D)), [f"row {i}" for i in range(len(x))])
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: a vector model imputes the rows of a .npy or .csv file")
    header, lines = csv_lines(path)
    if header is not None and model.columns is not None and header != model.columns:
        raise InputError(f"{path}: its columns ({', '.join(header)}) are not the model's ({', '.join(model.columns)})")
    return Rows(torch.tensor([_numbers(path, i, cells, D) for i, cells in lines], dtype=torch.float64),
                [cells for _, cells in lines], header or model.columns, list(range(D)),
                [f"line {i}" for i, _ in lines])


def _numbers(path: Path, line: int, cells: list[str], D: int) -> list[float]:
    """One .csv line of a vector model: D numbers or missing tokens (NaN)."""
    if len(cells) != D:
        raise InputError(f"{path}: line {line} has {len(cells)} values; the model's rows have {D}")
    bad = next((c for c in cells if not is_missing(c) and parse_number(c) is None), None)
    if bad is not None:
        raise InputError(f"{path}: line {line}: {bad[:40]!r} is neither a number nor a missing value")
    return [float("nan") if is_missing(c) else parse_number(c) for c in cells]


def check_gaps(rows: Rows, model, path: str) -> None:
    """InputError where there is nothing to impute, or a row has no observed value to impute from."""
    kinds, _ = column_layout(model.transform)
    modelled = torch.tensor([kind != "constant" for kind in kinds])
    missing = torch.isnan(rows.x)
    if len(rows.x) == 0 or not missing.any():
        raise InputError(f"{path}: no cell is missing: there is nothing to impute")
    empty = (missing | ~modelled).all(1).nonzero().flatten().tolist()
    if empty:
        more = f" (and {len(empty) - 1} more rows)" if len(empty) > 1 else ""
        raise InputError(f"{path}: {rows.places[empty[0]]}{more} has every cell missing: a row with nothing "
                         "observed has nothing to impute from (drop it; gaussdiff sample draws whole rows)")


# ---------------------------------------------------------------------------------------------
# Writing.

def check_outputs(args, table: bool) -> dict[str, Path]:
    """The outputs asked for (out, draws, intervals), checked before any work: a known extension (a table's: .csv),
    a folder that can be written, not --data, not each other, not existing unless --overwrite."""
    outputs = {"out": Path(args.out)}
    if args.draws_out:
        outputs["draws"] = Path(args.draws_out)
    if args.intervals is not None:
        outputs["intervals"] = Path(args.intervals_out or Path(args.out).with_suffix(".intervals.csv"))
    elif args.intervals_out:
        raise InputError("--intervals-out goes with --intervals LEVEL (e.g. --intervals 0.9)")
    data = Path(args.data).resolve()
    for key, path in outputs.items():
        check_output_path(path)
        if (table or key != "out") and path.suffix.lower() != ".csv":
            raise InputError(f"{path}: imputed table rows, draws and intervals are written as .csv")
        if path.resolve() == data:
            raise InputError(f"{path} is the input --data, which imputation never modifies: write elsewhere")
        if path.exists() and not args.overwrite:
            raise InputError(f"{path} exists; pass --overwrite to replace it")
    if len({p.resolve() for p in outputs.values()}) < len(outputs):
        raise InputError(f"the outputs {', '.join(map(str, outputs.values()))} must be different files")
    return outputs


def cell_text(model, codes: torch.Tensor, dtype) -> list[list[str]]:
    """Rows of text of (N, C) values in the data's units: a table's decoded cells (``data.tables.decode``), a vector
    model's numbers in the shortest text of ``dtype``; "" where a value is NaN."""
    if model.table is not None:
        return model.row_text(codes.numpy())
    text = codes.numpy().astype(dtype).astype(str)
    text[np.isnan(codes.numpy())] = ""
    return text.tolist()


def filled_text(text: list[list[str]], columns: list[int], values: list[list[str]],
                missing: torch.Tensor) -> list[list[str]]:
    """The input's rows of ``text`` with each missing cell (of model column j, at position ``columns[j]``) replaced
    by its text in ``values`` (model column order)."""
    out = [list(cells) for cells in text]
    for i, j in missing.nonzero().tolist():
        out[i][columns[j]] = values[i][j]
    return out


def _dtype(model, x: torch.Tensor):
    """The dtype a vector model's numbers are written in: float32 where the model's data were and the input fits it."""
    return np.float32 if model.data_dtype == "float32" and fits_float32(x[~torch.isnan(x)].numpy()) else np.float64


def write_outputs(args, outputs: dict[str, Path], model, rows: Rows, result) -> None:
    """Write --out, then the draws and the intervals if asked for, each atomically. A table keeps the input's text,
    columns and order; a vector model's rows are numbers in the data's dtype."""
    dtype = _dtype(model, rows.x) if model.table is None else None
    names = [spec.name for spec in model.table.specs] if model.table else \
        rows.header or [str(j) for j in range(rows.x.shape[1])]
    header = rows.header or names
    text = rows.text if model.table is not None else cell_text(model, rows.x, dtype)
    values = cell_text(model, result.filled, dtype)
    if model.table is None:
        save_array(outputs["out"], result.filled.numpy().astype(dtype), rows.header)
    else:
        write_table(outputs["out"], header, filled_text(text, rows.columns, values, result.missing))
    if "draws" in outputs:
        draws = [filled_text(text, rows.columns, cell_text(model, d, dtype), result.missing) for d in result.draws]
        write_table(outputs["draws"], ["row", "draw", *header],
                    [[str(i), str(k), *draws[k][i]] for i in range(len(rows.x)) for k in range(len(draws))])
    if "intervals" in outputs:
        kinds, _ = column_layout(model.transform)
        numeric = result.missing & torch.tensor([kind in NUMERIC for kind in kinds])
        lower, upper = (cell_text(model, bound, dtype) for bound in result.intervals(args.intervals))
        write_table(outputs["intervals"], ["row", "column", "value", "lower", "upper"],
                    [[str(i), names[j], values[i][j], lower[i][j], upper[i][j]]
                     for i, j in numeric.nonzero().tolist()])


# ---------------------------------------------------------------------------------------------

def method_source(asked: str | None, model, method: str) -> str:
    """Why ``method`` is the one used, where the user did not ask for one and the model's training chose."""
    record = model.imputation
    if asked is not None or record is None:
        return ""
    if method != record["method"]:
        return f" (the model's choice, {record['method']}, runs on ddpm only)"
    rmse = record.get("rmse") if isinstance(record.get("rmse"), dict) else {}
    others = [v for k, v in rmse.items() if k != method]
    if method not in rmse or not others or "cells" not in record:  # a record edited by hand
        return " (the model's choice)"
    return (f" (the model's choice: RMS error {rmse[method]:.3f} on {record['cells']} held-out cells "
            f"against {min(others):.3f})")


def interval_source(result, level: float) -> str:
    """What the intervals are: calibrated on the model's held-out cells, or the draws' own."""
    if result.calibrated(level):
        return f" (calibrated on {len(result.scores)} held-out cells, split-conformal)"
    return "" if result.scores is None else f" (the draws' own: {len(result.scores)} held-out cells are too few to " \
        f"calibrate a {level:g} interval)"


@torch.no_grad()
def run(args) -> None:
    positive("--draws", args.draws)
    positive("--jump-length", args.jump_length)
    positive("--jump-count", args.jump_count)
    if args.intervals is not None and not 0 < args.intervals < 1:
        raise InputError(f"--intervals must be a level between 0 and 1 (e.g. 0.9), got {args.intervals:g}")
    if args.intervals is not None and args.draws < 2:
        raise InputError("--intervals needs at least 2 draws (--draws)")
    sampling = prepare(args)
    model = sampling.model
    column_layout(model.transform)  # images: one line, before reading anything
    outputs = check_outputs(args, model.table is not None)
    rows = read_rows(args.data, model, args.run)
    check_gaps(rows, model, args.data)
    method = args.method or default_method(model, args.sampler)
    steps = args.steps or impute_steps(method, model.schedule.T)
    nfe = known_nfe(method, args.sampler, steps, args.jump_length, args.jump_count)
    gaps = int(torch.isnan(rows.x).any(1).sum())
    print(f"imputing {int(torch.isnan(rows.x).sum())} missing cells in {gaps} of {len(rows.x)} rows, {args.draws} "
          f"draws each: {method}{method_source(args.method, model, method)} on {args.sampler}, {steps} steps" +
          (f", jump length {args.jump_length}, jump count {args.jump_count}" if method == "repaint" else "") +
          (f", {nfe} network calls per draw" if nfe else ""), file=sys.stderr)
    if rows.labels is None and (note := conditioning_note(model)):
        print(note, file=sys.stderr)
    with tqdm(desc="impute", unit="move", disable=not sys.stderr.isatty()) as bar:
        result = impute_with(sampling, rows.x, args.draws, method=method, steps=steps, spacing=args.spacing,
                             seed=args.seed, batch_size=args.batch_size, jump_length=args.jump_length,
                             jump_n_sample=args.jump_count, labels=rows.labels, callback=lambda *_: bar.update())
    write_outputs(args, outputs, model, rows, result)
    print(f"wrote {len(rows.x)} rows to {outputs['out']}" +
          (f", {args.draws} draws of each to {outputs['draws']}" if "draws" in outputs else "") +
          (f", {args.intervals:g} intervals to {outputs['intervals']}" + interval_source(result, args.intervals)
           if "intervals" in outputs else ""))
