"""Issue 13 probe: what an EM round's E step should put in the gaps, the mean of the model's draws (the tool's
``train/gaps.py``) or one draw (a proper multiple imputation).

On tables.py's gapped tables (round(20 %) of cells removed, by seed), gaussdiff trained as tables.py trains it (the
tool's defaults: early stopping, --em-rounds 2), with ``GapFiller.value`` replaced so that a gap's fill is the first of
its 50 draws; scored as tables.py scores it: the z-RMSE of the mean of K = 50 draws (x_t replacement) and the 0.9
interval coverage of K = 10 draws. Compare with tables.py's own rows (the mean fill) for the same tables and seeds.

    python benchmarks/tables_em_probe.py --seeds 0 1 2 --out benchmarks/results/tables_em_fill_draw_probe.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import table_metrics as tm  # noqa: E402
import tables as bench  # noqa: E402
from provenance import Provenance  # noqa: E402

import gaussdiff.train.gaps as gaps  # noqa: E402


def first_draw(draws: torch.Tensor) -> torch.Tensor:
    """GapFiller.value with each gap's first draw in place of the draws' mean."""
    return draws[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_probe_arguments(p, work="runs/tables-bench-emdraw")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    gaps.GapFiller.value = staticmethod(first_draw)
    settings = argparse.Namespace(work=args.work, budget=180, threads=args.threads, train={})
    for seed in args.seeds:
        for name in args.tables:
            table, truth, gapped, removed, scale = bench.gapped_table(name, seed, 0.2)
            numeric = np.array([k != "categorical" for k in table.kinds])
            run, csv, trained = bench.trained_run(table, gapped, "gaps", seed, settings)
            result, specs = bench.gaussdiff_imputation(run, csv, 50, seed, {"method": "replace_xt"})
            point = tm.z_rmse(bench.point_values(result, 50, table, specs), truth, removed, scale)
            ten, _ = bench.gaussdiff_imputation(run, csv, 10, seed, {"method": "replace_xt"})
            lower, upper = (b.numpy() for b in ten.intervals(0.9))
            row = dict(table=name, seed=seed, variant="em-draw", z_rmse=point,
                       coverage10=tm.coverage(lower, upper, truth, removed & numeric), steps=trained["steps"])
            bench.probe_row(args.out, prov, row)


if __name__ == "__main__":
    main()
