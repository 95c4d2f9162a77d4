"""The known-value method ``gaussdiff impute`` defaults to for a model of a table with gaps, chosen where the
training ends (issue 13).

Which method imputes a table's gaps best depends on the table: on the tables benchmark (benchmarks/RESULTS.md, "Tables
with gaps: EM rounds") RePaint's resampling lowered the point error by 4-8 % on iris and diabetes, x_t replacement by
2 % on wine. The rows a run holds out were never training targets, so they can tell: each of their observed cells (of
rows with two or more) is hidden in turn, at most ``cells`` of them (a seeded draw), and imputed by each method from
``draws`` draws; the method whose draws' mean has the lower RMS error on the hidden cells (model units: z-units of a
standardized column, one-hot entries of a categorical one) is the model's default. The observed cells of the training
rows would not do: they were training targets, and RePaint's resampling recalls the training row (it won there on all
12 benchmark runs, and lost on the real gaps of wine).

The result, with both errors, the 90 % coverage of each method's intervals on the hidden numeric cells and their
conformity scores |y - mean| / s (which calibrate ``impute``'s intervals: ``imputation.calibrated_intervals``), is
saved in the model (``SavedModel.imputation``) and shown at the end of training.
"""

from __future__ import annotations

import math

import torch

from ..imputation import NUMERIC, column_layout, impute_with, intervals, on_cpu
from ..samplers import DEFAULT_SAMPLER
from ..saved import SavedModel
from ..sampling import plan

METHODS = ("replace_xt", "repaint")  # the candidates; the first wins a tie (100 network calls a draw, not 910)
CELLS = 500  # hidden cells at most: the check of breast cancer's 500 took 37 s on 2 cores (wine's 186: 10 s)
MAX_CELLS = 100_000  # each costs DRAWS x (100 + 910) network calls (x_t replacement, RePaint)
DRAWS = 10
LEVEL = 0.9
MAX_SCORE = 1e6  # a score standing for infinity (JSON has none): a cell the draws never vary in


def hidden_cells(x: torch.Tensor, cells: int | None, seed: int,
                 modelled: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) pairs (each (M,) long) of observed cells of ``x`` (N, C), NaN = missing, in rows with two or
    more observed cells; at most ``cells`` of them (None: all), a seeded draw kept in row-major order. Only the
    columns where ``modelled`` (C,) bool is True count (default: all; a constant column has no model entry)."""
    observed = ~torch.isnan(x) & (True if modelled is None else modelled)
    eligible = observed & (observed.sum(1, keepdim=True) >= 2)
    row, column = eligible.nonzero(as_tuple=True)
    if cells is not None and len(row) > cells:
        keep = torch.randperm(len(row), generator=torch.Generator().manual_seed(seed))[:cells].sort().values
        row, column = row[keep], column[keep]
    return row, column


def leave_one_cell_out(x: torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """(M, C): row ``row[m]`` of ``x`` with its cell ``column[m]`` set to NaN, one check row per hidden cell."""
    checks = x[row].clone()
    checks[torch.arange(len(row)), column] = math.nan
    return checks


@torch.no_grad()
def choose_method(model: SavedModel, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                  cells: int | None = CELLS, draws: int = DRAWS, seed: int = 0) -> dict | None:
    """The ``imputation`` record of ``model`` from held-out rows ``x`` (N, C) in the data's units, NaN = missing, of
    classes ``labels`` (N,) for a class-conditional model (the module doc): {"method", "by", "cells", "draws",
    "level", "rmse": {method: ...}, "coverage": {method: ... or None}, "scores": {method: [...]}}; None where no row
    has two observed cells. On the CPU, where imputation runs (a copy of a network trained elsewhere)."""
    model = on_cpu(model)
    x = torch.as_tensor(x, dtype=torch.float64)
    kinds, slices = column_layout(model.transform)
    row, column = hidden_cells(x, cells, seed, torch.tensor([s.stop > s.start for s in slices]))
    if not len(row):
        return None
    checks = leave_one_cell_out(x, row, column)
    labels = None if labels is None else labels[row]
    truth = model.transform.forward(x[row]).float()  # model units
    hidden = torch.zeros_like(truth, dtype=torch.bool)
    for m, j in enumerate(column.tolist()):
        hidden[m, slices[j]] = True
    numeric = torch.tensor([kind in NUMERIC for kind in kinds])[column]
    sampling = plan(model, DEFAULT_SAMPLER)
    entry = torch.tensor([slices[j].start for j in column.tolist()])[numeric]  # a numeric column's one entry
    rmse, coverage, scores = {}, {}, {}
    for method in METHODS:
        result = impute_with(sampling, checks, draws, method=method, seed=seed, labels=labels)
        rmse[method] = float((result.draws_model.mean(0) - truth)[hidden].double().pow(2).mean().sqrt())
        scores[method] = conformity_scores(result.draws_model[:, numeric, entry], truth[numeric, entry])
        lower, upper = (bound[torch.arange(len(row)), column] for bound in intervals(result.draws_model, LEVEL,
                                                                                      model.transform))
        value = x[row, column]
        covered = (lower <= value) & (value <= upper)
        coverage[method] = float(covered[numeric].double().mean()) if numeric.any() else None
    best = min(METHODS, key=lambda m: (rmse[m], METHODS.index(m)))
    return {"method": best, "by": "held-out cells", "cells": len(row), "draws": draws, "rmse": rmse,
            "coverage": coverage, "level": LEVEL, "scores": scores}


def conformity_scores(draws: torch.Tensor, truth: torch.Tensor) -> list[float]:
    """|y - mean| / s of each hidden numeric cell, from its K draws ``draws`` (K, M) and true value ``truth`` (M,) in
    model units (s the draws' sample sd; a score past MAX_SCORE, as where s = 0, is MAX_SCORE), sorted, for
    ``imputation.calibrated_intervals``."""
    draws, truth = draws.double(), truth.double()
    z = (truth - draws.mean(0)).abs() / draws.std(0)
    return sorted(round(v, 6) for v in z.nan_to_num(0.0, MAX_SCORE, MAX_SCORE).clamp(max=MAX_SCORE).tolist())


def choice_line(record: dict) -> str:
    """The line training ends with: the chosen method and what chose it."""
    chosen, other = record["method"], next(m for m in METHODS if m != record["method"])
    covered = record["coverage"]
    coverage = "" if covered[chosen] is None else \
        f", their {record['level']:g} intervals covering {covered[chosen]:.2f} and {covered[other]:.2f}"
    return (f"impute will default to {chosen}: on {record['cells']} held-out cells hidden one at a time "
            f"({record['draws']} draws), RMS error {record['rmse'][chosen]:.3f} against {other}'s "
            f"{record['rmse'][other]:.3f} (model units){coverage}; gaussdiff impute --method overrides it")
