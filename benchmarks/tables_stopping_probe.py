"""Issue 13 probe: does the held-out loss pick the training length that imputes best on a small table?

One gapped table (tables.py's protocol: round(20 %) of cells removed, seed), gaussdiff trained on it for --steps at a
constant learning rate with --holdout of its rows kept out, the held-out loss every --eval-every steps and no early
stopping (unless --train sets it), a checkpoint at each of --at; each checkpoint's EMA weights impute the whole
gapped table (K = --draws, the tool's default method unless --method): z-RMSE of the point estimate of the first
1, 5, 10, 20, 40 draws (up to K), coverage of the 90 % intervals of all K. One JSON line per checkpoint to --out,
with the held-out loss at that step and the step of the lowest.

    python benchmarks/tables_stopping_probe.py --table wine --seed 0 \
        --out benchmarks/results/tables_stopping_probe.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import table_metrics as tm  # noqa: E402
import tables as bench  # noqa: E402
from provenance import Provenance  # noqa: E402

from gaussdiff.data.tables import encode, read_table  # noqa: E402
from gaussdiff.imputation import impute  # noqa: E402
from gaussdiff.saved import load_model  # noqa: E402
from gaussdiff.train import TrainConfig, train  # noqa: E402
from gaussdiff.train.folder import ema_network_state, read_checkpoint  # noqa: E402


def held_out_losses(run: Path) -> dict[int, float]:
    rows = (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line)
    return {r["step"]: r["eval_heldout_loss"] for r in rows if "eval_heldout_loss" in r}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=[t for t in bench.TABLES if t != "mixed"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--at", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000, 8000])
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--method", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--work", default="runs/tables-stopping")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    table, truth, gapped, removed, scale = bench.gapped_table(args.table, args.seed, 0.2)
    numeric = np.array([k != "categorical" for k in table.kinds])
    folder = Path(args.work) / f"{args.table}-seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "data.csv"
    table.write_csv(csv, gapped)
    extra = {"early_stopping": 0} | bench.key_values(args.train)
    cfg = TrainConfig(data=str(csv), out=str(folder / "run"), steps=args.steps, seed=args.seed, holdout=args.holdout,
                      eval_every=args.eval_every, lr_schedule="constant", threads=args.threads,
                      checkpoint_every=min(args.at), keep_checkpoints=10_000, **extra)
    run = train(cfg, overwrite=True, progress=False)
    losses = held_out_losses(run)
    model = load_model(run)
    codes = encode(read_table(csv), model.transform.specs)
    options = {"method": args.method} if args.method else {}
    for step in args.at:
        model.network.load_state_dict(ema_network_state(read_checkpoint(run / "checkpoints" / f"step_{step:08d}.pt")))
        start = time.perf_counter()
        result = impute(model, codes, draws=args.draws, seed=args.seed, **options)
        by_k = {k: tm.z_rmse(bench.point_values(result, k, table, model.transform.specs), truth, removed, scale)
                for k in (1, 5, 10, 20, 40) if k <= args.draws}
        lower, upper = (b.numpy() for b in result.intervals(0.9))
        row = dict(table=args.table, seed=args.seed, step=step, heldout_loss=losses.get(step),
                   best_heldout_step=min(losses, key=losses.get), z_rmse=by_k[max(by_k)], z_rmse_by_draws=by_k,
                   coverage=tm.coverage(lower, upper, truth, removed & numeric), draws=args.draws,
                   impute_s=time.perf_counter() - start, train=dict(holdout=args.holdout, **extra), **options)
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(prov.stamp(row)) + "\n")


if __name__ == "__main__":
    main()
