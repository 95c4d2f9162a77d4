"""Issue 13: give runs that tables.py trained under --work the imputation record of the current training code.

Training ends by ``train.impute_choice.choose_method`` on its held-out rows and saves the result in the model
(``SavedModel.imputation``). When that check changes (a new field, the conformity scores that calibrate ``impute``'s
intervals; RePaint's steps), the benchmark's trained runs can be brought up to date without training again, which on
a time budget would not give the same weights: this calls ``choose_method`` exactly as the trainer does (the run's
held-out rows, ``split_rows(N, holdout, seed)``, its seed, the default cap) on each run's saved model, checks that x_t
replacement's error (whose settings never changed) is the one the run recorded, and saves the model with the new
record (atomically, the weights as they are), appending a row per run to --out (the method before and now, both
errors, the number of scores, each method's q at 0.9). Then ``tables.py --work ...`` imputes as a freshly trained
run would.

    python benchmarks/tables_rerecord.py --work runs/tables-bench-choice \
        --out benchmarks/results/tables_choice_rerecord.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables as bench  # noqa: E402
from provenance import Provenance  # noqa: E402

from gaussdiff.imputation import conformal_quantile  # noqa: E402
from gaussdiff.saved import load_model  # noqa: E402
from gaussdiff.train.impute_choice import choose_method  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_probe_arguments(p, work="runs/tables-bench-choice")
    p.add_argument("--holdout", type=float, default=0.1, help="the runs' --holdout")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    for seed in args.seeds:
        for name in args.tables:
            folder, model, held = bench.held_out_of_run(args.work, name, seed, args.holdout)
            online = load_model(folder / "run", weights="online").network
            record = choose_method(model, held, seed=seed)
            old = model.imputation
            if record["rmse"]["replace_xt"] != old["rmse"]["replace_xt"]:  # a method whose settings stayed
                raise SystemExit(f"{folder}: the check finds replace_xt's error {record['rmse']['replace_xt']}, the "
                                 f"run recorded {old['rmse']['replace_xt']}: not the run's model or held-out rows")
            dataclasses.replace(model, imputation=record).save(folder / "run" / "model", online=online)
            row = dict(table=name, seed=seed, method=record["method"], was=old["method"], rmse=record["rmse"],
                       scores=len(record["scores"][record["method"]]),
                       q90={m: conformal_quantile(z, 0.9) for m, z in record["scores"].items()})
            bench.probe_row(args.out, prov, row)


if __name__ == "__main__":
    main()
