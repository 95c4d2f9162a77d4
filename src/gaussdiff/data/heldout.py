"""The points a run was not trained on, in the data's own units, found again from its config.json alone (for the
evaluation commands): a built-in set's held-out draw or split, or the held-out rows of a file (data/split.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from .dataset import IMAGE_BUILTIN, load_dataset, load_points
from .split import heldout_seed, split_rows
from .toys import BUILTIN


def heldout_points(config: dict, n: int | None, seed: int = 0, run: str = "the run") -> tuple[torch.Tensor, str]:
    """(float64 (N, *shape) in the data's own units, a description): the points the run whose RUN/config.json is
    ``config`` was not trained on; InputError in one line, saying to pass --data, where there are none.

    A built-in 2-D set: n fresh points under :func:`heldout_seed` of the run's seed. 'digits': n of its held-out
    split, drawn under ``seed``. A file: its held-out rows (config "holdout" > 0), once its content is checked
    against the run's "data_sha256", the label column removed; n of them drawn under ``seed`` where it has more
    (all of them when n is None).
    """
    data, train_seed = config.get("data"), config.get("seed")
    if not isinstance(data, str) or not isinstance(train_seed, int):
        raise InputError(f"{run}/config.json does not say which data and seed the run was trained on; pass --data")
    if data in BUILTIN:
        other = heldout_seed(train_seed)
        x = load_points(data, n, other)[0]
        return x, f"built-in {data!r}, {n:,} fresh points (seed {other}, not the training draw)"
    if data in IMAGE_BUILTIN:
        return load_points(data, n, seed)
    rows = _heldout_rows(config, data, train_seed, run)
    why = f"(holdout {config['holdout']:g} under the run's seed {train_seed}; never trained on)"
    if n is None or n >= len(rows):
        return rows, f"{data}: all {len(rows):,} held-out rows {why}"
    keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return rows[keep], f"{data}: {n:,} of its {len(rows):,} held-out rows, drawn under seed {seed} {why}"


def _heldout_rows(config: dict, data: str, train_seed: int, run: str) -> torch.Tensor:
    """All held-out rows of a file run: float64, in the data's own units."""
    holdout = config.get("holdout") or 0
    if not isinstance(holdout, (int, float)) or not holdout > 0:
        raise InputError(f"{run} was trained on {data} with no held-out split, so every row of it is training data; "
                         "pass --data with data the run was not trained on")
    if not Path(data).exists():
        raise InputError(f"{run} was trained on {data}, which does not exist (any more, or seen from this folder); "
                         "pass --data")
    # the data as training read them: rows without the label column, or images at the run's size
    read = load_dataset(data, seed=train_seed, image_size=config.get("image_size"),
                                channels=config.get("channels"), pixel_range=config.get("pixel_range"),
                                label_column=config.get("label_column"), schema=config.get("schema"))
    recorded, digest = config.get("data_sha256"), read.sha256()
    if recorded != digest:
        raise InputError(f"{data} is not the data {run} was trained on (" +
                         (f"its SHA-256 was {str(recorded)[:12]}... and is now {digest[:12]}..." if recorded else
                          "the run recorded no SHA-256 of it") + "), so its held-out rows are unknown; pass --data")
    held = split_rows(len(read), holdout, train_seed)[1]
    return read.data[torch.from_numpy(held)].double()
