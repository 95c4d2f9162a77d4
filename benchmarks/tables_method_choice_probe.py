"""Issue 13 probe: can the held-out rows choose the known-value method that imputes a table's gaps best?

For each trained run that tables.py left under --work (``TABLE-seedS-gaps``, the gapped table and its model), the
rows the run held out (``split_rows(N, 0.1, seed)``: never training targets, unlike the observed cells of the rows it
trained on, which favour RePaint's resampling) lose each of their observed cells in turn (rows with two or more); each
method imputes them from --draws draws (its default steps); the RMS error (model units) of the draws' mean on those
cells, by method. Compare the winner with the methods' z-RMSE on the real gaps (tables.py with --impute method=...).

    python benchmarks/tables_method_choice_probe.py --work runs/tables-bench-em \
        --out benchmarks/results/tables_method_choice_heldout.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables as bench  # noqa: E402
from provenance import Provenance  # noqa: E402

from gaussdiff.data.split import split_rows  # noqa: E402
from gaussdiff.data.tables import encode, read_table  # noqa: E402
from gaussdiff.imputation import column_layout, impute_draws  # noqa: E402
from gaussdiff.samplers.known import default_steps  # noqa: E402
from gaussdiff.sampling import plan  # noqa: E402
from gaussdiff.saved import load_model  # noqa: E402

METHODS = ("replace_xt", "repaint")


def leave_one_cell_out(y: torch.Tensor, slices: list[slice]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(check rows, their hidden entries, their source rows): each row of ``y`` (model units, NaN = missing) with two
    or more observed cells, once per observed cell, that cell's entries set to NaN."""
    checks, hidden, source = [], [], []
    for i, row in enumerate(y):
        observed = [s for s in slices if s.stop > s.start and not torch.isnan(row[s]).any()]
        if len(observed) < 2:
            continue
        for s in observed:
            mask = torch.zeros(len(row), dtype=torch.bool)
            mask[s] = True
            checks.append(row.masked_fill(mask, math.nan))
            hidden.append(mask)
            source.append(i)
    return torch.stack(checks), torch.stack(hidden), torch.tensor(source)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_probe_arguments(p, work="runs/tables-bench-em")
    p.add_argument("--holdout", type=float, default=0.1, help="the runs' --holdout")
    p.add_argument("--draws", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    for seed in args.seeds:
        for name in args.tables:
            folder = Path(args.work) / f"{name}-seed{seed}-gaps"
            model = load_model(folder / "run")
            codes = torch.from_numpy(encode(read_table(folder / "data.csv"), model.transform.specs))
            held = torch.from_numpy(split_rows(len(codes), args.holdout, seed)[1])
            y = model.transform.forward(codes[held]).float()
            check, hidden, source = leave_one_cell_out(y, column_layout(model.transform)[1])
            denoiser, options = plan(model).denoiser(None, len(check))
            row = dict(table=name, seed=seed, heldout_rows=len(held), cells=len(check), draws=args.draws)
            for method in METHODS:
                draws = impute_draws(denoiser, model.schedule, check, args.draws, method=method, seed=seed,
                                     steps=default_steps(method, model.schedule.T), **options)
                row[method] = float((draws.mean(0) - y[source])[hidden].double().pow(2).mean().sqrt())
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(prov.stamp(row)) + "\n")


if __name__ == "__main__":
    main()
