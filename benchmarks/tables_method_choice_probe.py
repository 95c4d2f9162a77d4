"""Issue 13 probe: can the held-out rows choose the known-value method that imputes a table's gaps best?

For each trained run that tables.py left under --work (``TABLE-seedS-gaps``, the gapped table and its model), the
rows the run held out (``split_rows(N, 0.1, seed)``: never training targets, unlike the observed cells of the rows it
trained on, which favour RePaint's resampling) lose each of their observed cells in turn (rows with two or more); each
method imputes them from --draws draws (its default steps); the RMS error (model units) of the draws' mean on those
cells, by method: ``train.impute_choice.choose_method`` on all the cells (training itself, since, takes at most 500).
Compare the winner with the methods' z-RMSE on the real gaps (tables.py with --impute method=...).

    python benchmarks/tables_method_choice_probe.py --work runs/tables-bench-em \
        --out benchmarks/results/tables_method_choice_heldout.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables as bench  # noqa: E402
from provenance import Provenance  # noqa: E402

from gaussdiff.train.impute_choice import choose_method  # noqa: E402


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
            _, model, held = bench.held_out_of_run(args.work, name, seed, args.holdout)
            record = choose_method(model, held, cells=None, draws=args.draws, seed=seed)
            bench.probe_row(args.out, prov, dict(table=name, seed=seed, heldout_rows=len(held), cells=record["cells"],
                                                 draws=args.draws, **record["rmse"], coverage=record["coverage"]))


if __name__ == "__main__":
    main()
