"""What every command shares: the help formatter, the help of -n, checks of plain numeric flags, and the data a
command evaluates a run on (--data, or the run's own held-out points)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ..data import BUILTIN, load_points
from ..data.heldout import heldout_points
from ..errors import InputError, check_memory
from ..saved import find_model_dir

# What --data means wherever a command evaluates a run on data, and its default.
DATA_HELP = (f"a built-in data set ({', '.join(BUILTIN)}; drawn afresh) or a .npy / .csv file of shape (N, D) in the "
             "data's own units; default: the run's held-out data (a built-in set: a fresh draw under another seed than "
             "training's; digits: its held-out split; a file: the rows the run held out, if it did)")
SEED_HELP = ("of the points drawn from --data or from the run's held-out rows (a built-in set's held-out draw follows "
             "the run's own seed)")
# What -n means wherever a command evaluates data (``data.load_points``).
POINTS_HELP = ("points: N fresh ones of a built-in set, or N rows of a file or of the run's held-out rows, drawn "
               "without replacement under --seed (all of them when N >= their number)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (None or a required option)."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be positive, got {value}")


def check_data_shape(x, model, run) -> None:
    """InputError unless the evaluated data x (N, *shape) have the model's sample shape (a table's: its columns)."""
    if tuple(x.shape[1:]) != tuple(model.data_shape):
        raise InputError(f"the data have samples of shape {list(x.shape[1:])}; the model at {run} expects "
                         f"{list(model.data_shape)}")


def complete_rows(x: torch.Tensor, description: str) -> tuple[torch.Tensor, str]:
    """(the rows of a table without a missing cell, the description saying how many were left out): a density is
    of complete rows. InputError where none is complete."""
    complete = ~torch.isnan(x).any(dim=1)
    if complete.all():
        return x, description
    if not complete.any():
        raise InputError(f"every one of the {len(x)} rows has a missing cell, and a density is of complete rows: "
                         "fill them with gaussdiff impute first")
    left = int((~complete).sum())
    return x[complete], f"{description}; {left} row(s) with missing cells left out (a density is of complete rows)"


def run_config(run) -> dict:
    """The training config a run records in RUN/config.json (RUN a run folder or its model/ folder), which names the
    data a command evaluates when --data is not given; InputError saying to pass --data where there is none."""
    folder = find_model_dir(run)
    path = folder.parent / "config.json"
    if folder.name != "model" or not path.is_file():
        raise InputError(f"{run} is a model folder without the config.json of the run that trained it, so the data "
                         "are unknown; pass --data")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path} is not readable JSON ({' '.join(str(e).split())}); pass --data") from None
    if not isinstance(config, dict) or not isinstance(config.get("data"), str):
        raise InputError(f"{path} is not a training config naming the run's data; pass --data")
    return config


def training_rows_note(data: str, run) -> str:
    """What to add to the description of --data when it is the very file the run trained on (its rows then include
    the training rows); "" otherwise, and where the run's config cannot tell."""
    try:
        trained_on = run_config(run)["data"]
    except InputError:
        return ""
    same = trained_on not in BUILTIN and Path(data).exists() and Path(data).resolve() == Path(trained_on).resolve()
    return f" (the file {run} was trained on: its training rows are among these)" if same else ""


def label_column(run, model) -> str | None:
    """The label column a table model's run was trained with (None: none, not a table, or no run config)."""
    if model.table is None:
        return None
    try:
        return run_config(run).get("label_column")
    except InputError:
        return None


def evaluation_points(data: str | None, run, n: int, seed: int, model, flag: str):
    """(float64 (N, *shape) in the data's own units, their description): the points elbo and nll evaluate. Those of
    --data (``data.load_points``: n fresh points of a built-in set under ``seed``, n rows of a file) or, without it,
    n of the run's held-out points (``data.heldout.heldout_points``); InputError unless they fit the model. ``flag``
    names the option of n, which a built-in draw too large for the memory names. A table's rows with missing cells
    are left out, and its integer columns dequantized (:func:`dequantized`)."""
    config = run_config(run) if data is None else None
    if (data or config["data"]) in BUILTIN:  # drawn afresh, float64
        check_memory(flag, 8 * n * math.prod(model.sample_shape), f"-n {n}: the points")
    if data is None:
        x, description = heldout_points(config, n, seed, run=str(run))
    else:
        x, description = load_points(data, n, seed, model.sample_shape, model.table, label_column(run, model))
        description += training_rows_note(data, run)
    check_data_shape(x, model, run)
    if model.table is None:
        return x, description
    x, description = complete_rows(x, description)
    return dequantized(model.table, x, seed), description


def dequantized(table, x: torch.Tensor, seed: int) -> torch.Tensor:
    """A table's rows with each integer cell k replaced by k + u - 1/2, u ~ U[0, 1) under ``seed``: the data whose
    density the model learnt, so E_u[log p(k + u - 1/2)] <= log P(k) (uniform dequantization; Theis et al. 2016)."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return table.dequantize(x, u)


def table_note(table) -> str | None:
    """What the density of a table model covers (None for other models)."""
    if table is None:
        return None
    kinds = {kind: [s.name for s in table.specs if s.kind == kind] for kind in ("integer", "categorical", "constant")}
    lines = ["table: the density is in the data's units for the numeric columns"]
    if kinds["integer"]:
        lines.append(f"integer columns {', '.join(kinds['integer'])} enter dequantized (k + u - 1/2, u ~ U[0, 1)): a "
                     "lower bound on their probability")
    masses = [c.spec.name for c in table.columns if c.spec.kind == "continuous" and not c.density]
    if masses:
        lines.append(f"columns {', '.join(masses)} repeat values (point masses, steps of their quantile map): they are "
                     "excluded from the data-unit density and count in model units")
    if kinds["categorical"]:
        lines.append(f"categorical columns {', '.join(kinds['categorical'])} are excluded from the data-unit density: "
                     "their one-hot entries (+-1) count in model units")
    if kinds["constant"]:
        lines.append(f"constant columns {', '.join(kinds['constant'])} are not modelled")
    return "\n".join(lines)


def conditioning_note(model) -> str | None:
    """The line a command that evaluates a class-conditional model unconditionally prints (None for other models):
    it evaluates the null label, which label dropout trained."""
    if model.conditioning is None:
        return None
    dropout = model.conditioning["label_dropout"]
    return ("class-conditional model: evaluated unconditionally (its null label, trained on "
            + (f"{dropout:.0%} of the labels)" if dropout else "no label: trained with --label-dropout 0, so this is "
               "an untrained model)"))


def say_what_is_evaluated(description: str, model) -> None:
    """Print, before the work, which data a command evaluates and, for a class-conditional model, how."""
    print(f"data: {description}")
    if note := table_note(model.table):
        print(note)
    if note := conditioning_note(model):
        print(note)
