"""Likelihood on 2-D data (issue 5): bits/dim of models trained with L_simple, the hybrid loss and L_vlb, by the full
T-term bound and by the probability-flow ODE, side by side, with what each costs.

For each data set, in one run, three models trained with the same wall-time budget, threads and seed:
  simple  L_simple, fixed_small variances (Ho et al.);
  hybrid  L_simple + 0.001 L_vlb, learned_range variances (Nichol & Dhariwal);
  vlb     L_vlb alone, learned_range, t drawn by importance on the loss's second moment (Nichol & Dhariwal).
Each is measured on the same N held-out points (a seed disjoint from training):
  bound   the exact ELBO over all T terms (``likelihood.elbo``, continuous decoder): nats and bits/dim of the total,
          L_T, sum L_{t-1} and L_0; the simple model also with fixed_large variances (improved-diffusion reports both);
  ode     -log p by the probability-flow ODE with the exact trace (``likelihood.ode_nll``, batches of 500);
  true    (8gaussians) -log p under the data's exact mixture density: the floor of that row.
Network evaluations are counted by a wrapper around the network (calls and rows); the bound's target is
rows / N <= T. The digits row waits for the image models. Every row records the run's provenance (commit, dirty
tree, versions, threads, command, settings: provenance.py).

    python benchmarks/likelihood.py                     # 2 data sets x 3 models x 60 s, N = 1000 (7 min)
    python benchmarks/likelihood.py --quick --out /tmp/likelihood.jsonl    # smoke run: 4 s budgets, N = 100
    python benchmarks/likelihood.py --report benchmarks/results/likelihood.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from gaussdiff.data import BUILTIN, eight_gaussians_params
from gaussdiff.likelihood import elbo, mean_se, ode_nll
from gaussdiff.mixture import GaussianMixture
from gaussdiff.param import as_denoiser, as_reverse_model
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402
from provenance import Provenance, commit_line  # noqa: E402

MODELS = {
    "simple": dict(loss_type="simple", variance_type="fixed_small", t_sampling="uniform"),
    "hybrid": dict(loss_type="hybrid", variance_type="learned_range", t_sampling="uniform"),
    "vlb": dict(loss_type="vlb", variance_type="learned_range", t_sampling="importance"),
}
DATASETS = ("moons", "8gaussians")
HELD_OUT_SEED = 1_000_000  # + seed: never a training seed (TrainConfig draws its data with the seed itself)
ODE_BATCH = 500  # gaussdiff nll's default


class CountingNetwork:
    """A network that counts its forward calls and the rows (samples) they evaluate."""

    def __init__(self, network):
        self.network, self.calls, self.rows = network, 0, 0
        self.config = network.config  # the variance head, as the network declares it

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        self.calls += 1
        self.rows += x_t.shape[0]
        return self.network(x_t, t, **kwargs)


def in_bits(nats: torch.Tensor, dim: int) -> dict:
    """Mean and standard error over the points, in nats and bits/dim (the keys of ``Bound.summary``)."""
    s, to_bpd = mean_se(nats), 1 / (dim * math.log(2))
    return {"nats": s["mean"], "nats_se": s["se"], "bits_per_dim": s["mean"] * to_bpd,
            "bits_per_dim_se": s["se"] * to_bpd}


def cost(counter: CountingNetwork, clock: Clock, n: int) -> dict:
    seconds = clock.seconds()
    return {"seconds": seconds, "cpu_wall": clock.ratio(), "network_calls": counter.calls,
            "network_rows": counter.rows, "evaluations_per_sample": counter.rows / n, "seconds_per_sample": seconds / n}


def bound_row(model, x: torch.Tensor, variance_type: str, args) -> tuple[dict, torch.Tensor]:
    """The exact T-term bound of x (user units) with the given reverse variance: (row, per-point total in nats)."""
    counter = CountingNetwork(model.network)
    reverse = as_reverse_model(counter, model.schedule, model.prediction_type, variance_type)
    clock = Clock()  # the same seed for every model: the same noise draws (paired comparisons)
    bound = elbo(lambda x_t, t: reverse(x_t.float(), t), model.transform.forward(x), model.schedule,
                 log_det_jacobian=model.transform.log_abs_det_jacobian(x), batch_size=args.batch_size,
                 generator=torch.Generator().manual_seed(args.seed))
    row = {"estimate": "bound", "bound_variance": variance_type, "terms": bound.summary(),
           "target_evaluations": model.schedule.T} | cost(counter, clock, len(x))
    return row, bound.total


def ode_row(model, x: torch.Tensor, args) -> tuple[dict, torch.Tensor]:
    """-log p(x) by the probability-flow ODE, exact trace, in batches: (row, per-point NLL in nats)."""
    counter = CountingNetwork(model.network)
    denoiser = as_denoiser(counter, model.schedule, model.prediction_type)
    clock = Clock()
    results = [ode_nll(lambda x_t, t: denoiser(x_t.float(), t).to(x_t.dtype), x[i:i + ODE_BATCH], model.schedule,
                       transform=model.transform) for i in range(0, len(x), ODE_BATCH)]
    nll = torch.cat([r.nll for r in results])
    row = {"estimate": "ode", "nll": in_bits(nll, x.shape[1]), "nfe_per_batch": [r.nfe for r in results],
           "batch_size": ODE_BATCH} | cost(counter, clock, len(x))
    return row, nll


def trained(name: str, kind: str, args, tmp: str):
    """Train one model of MODELS on data set ``name``: (saved model, training facts)."""
    clock = Clock()
    run = train(TrainConfig(data=name, out=f"{tmp}/{name}-{kind}", seed=args.seed, time_budget=args.budget,
                            threads=args.threads, **MODELS[kind]), progress=False)
    facts = {"train_seconds": clock.seconds(), "train_cpu_wall": clock.ratio(),
             "train_steps": json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]}
    return load_model(run), facts


def dataset_rows(name: str, args, tmp: str) -> list[dict]:
    """Every row of one data set: the floor (8gaussians), then bound(s) and ODE of each model."""
    x = BUILTIN[name](args.n, HELD_OUT_SEED + args.seed).double()
    dim, rows, true_nll = x.shape[1], [], None
    if name == "8gaussians":
        true_nll = -GaussianMixture(*eight_gaussians_params()).log_prob(x)
        rows.append({"estimate": "true", "nll": in_bits(true_nll, dim)})
    for kind in MODELS:
        model, facts = trained(name, kind, args, tmp)
        common = {"model": kind, **MODELS[kind]} | facts
        variances = [model.variance_type] + (["fixed_large"] if kind == "simple" else [])
        bounds = [bound_row(model, x, v, args) for v in variances]
        ode, nll = ode_row(model, x, args)
        ode["bound_minus_ode"] = in_bits(bounds[0][1] - nll, dim)  # paired: the same points
        if true_nll is not None:
            ode["ode_minus_true"] = in_bits(nll - true_nll, dim)
            for row, total in bounds:
                row["bound_minus_true"] = in_bits(total - true_nll, dim)
        rows += [common | row for row, _ in bounds] + [common | ode]
    return rows


def run(args) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    prov = Provenance(vars(args) | {"ode_batch": ODE_BATCH, "held_out_seed": HELD_OUT_SEED + args.seed,
                                    "models": MODELS})
    common = {"run_id": run_id, "command": " ".join([Path(sys.executable).name] + sys.argv), "quick": args.quick,
              "budget": args.budget, "n": args.n, "seed": args.seed, "threads": torch.get_num_threads(),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})", "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            for row in dataset_rows(name, args, tmp):
                line = json.dumps(prov.stamp(common | {"dataset": name} | row))
                with open(out, "a") as f:
                    f.write(line + "\n")
                print(line, flush=True)


def pm(stats: dict, key: str = "bits_per_dim") -> str:
    return f"{stats[key]:.3f} ± {stats[key + '_se']:.3f}"


def report(path: str, run_id: str | None) -> None:
    """Markdown tables of one run of the file (the last one unless ``run_id``)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    run_id = run_id or rows[-1]["run_id"]
    rows = [r for r in rows if r["run_id"] == run_id]
    if not rows:
        raise SystemExit(f"no rows of run {run_id} in {path}")
    r0 = rows[0]
    print(commit_line(rows) + "\n")
    print(f"Run {run_id}: `{r0['command']}`; {r0['machine']}, torch {r0['torch']}, {r0['threads']} threads; "
          f"training budget {r0['budget']:g} s per model, seed {r0['seed']}; N = {r0['n']} held-out points.\n")
    print_values(rows)
    print()
    print_terms(rows)
    print()
    print_cost(rows)


def pick(rows, **where) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def print_values(rows) -> None:
    print("Bits/dim (mean ± SE over the held-out points; continuous data: a density in the data's standardized "
          "units, so values can be negative). Bound: exact ELBO over all T terms with the model's own variances; "
          "ODE: exact-trace NLL; the gaps are paired per point.\n")
    print("| data set | model (loss, variance, t) | steps | bound | bound, fixed_large | ODE NLL | bound − ODE | "
          "ODE − true | true NLL (floor) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        true = pick(rows, dataset=name, estimate="true")
        for kind in MODELS:
            bounds = pick(rows, dataset=name, model=kind, estimate="bound")
            odes = pick(rows, dataset=name, model=kind, estimate="ode")
            if not bounds or not odes:
                continue
            own, ode = bounds[0], odes[0]
            large = [pm(b["terms"]["total"]) for b in bounds if b["bound_variance"] == "fixed_large"]
            print(f"| {name} | {kind} ({own['loss_type']}, {own['variance_type']}, {own['t_sampling']}) | "
                  f"{own['train_steps']} | {pm(own['terms']['total'])} | {large[0] if large else '–'} | "
                  f"{pm(ode['nll'])} | {pm(ode['bound_minus_ode'])} | "
                  f"{pm(ode['ode_minus_true']) if 'ode_minus_true' in ode else '–'} | "
                  f"{pm(true[0]['nll']) if true else 'n/a'} |")
    print("| digits | (waits for the image models) | | | | | | | |")


def print_terms(rows) -> None:
    print("The bound's terms in bits/dim (L_0 with the continuous Gaussian decoder).\n")
    print("| data set | model | variance | total | L_T | sum L_{t-1} | L_0 | bound − true |")
    print("|---|---|---|---|---|---|---|---|")
    for r in pick(rows, estimate="bound"):
        terms = r["terms"]
        print(f"| {r['dataset']} | {r['model']} | {r['bound_variance']} | {pm(terms['total'])} | "
              f"{terms['L_T']['bits_per_dim']:.2e} | {pm(terms['sum L_{t-1}'])} | {pm(terms['L_0'])} | "
              f"{pm(r['bound_minus_true']) if 'bound_minus_true' in r else '–'} |")


def print_cost(rows) -> None:
    r0 = rows[0]
    print(f"Cost, {r0['threads']} threads, over N = {r0['n']} points. Network evaluations = rows evaluated by the "
          "network / N (a counting wrapper around it); the ODE's exact trace adds D = 2 backward passes per call. "
          "Bound target: <= T per sample.\n")
    print("| data set | model | what | seconds | ms per sample | network calls | evaluations per sample | "
          "target | cpu/wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in pick(rows, estimate="bound") + pick(rows, estimate="ode"):
        if r["estimate"] == "bound":
            what = f"bound ({r['bound_variance']}), all T terms"
            target = "met" if r["evaluations_per_sample"] <= r["target_evaluations"] else "MISSED"
            target += f" (T = {r['target_evaluations']})"
        else:
            what = f"ODE NLL, exact trace, NFE per batch of {r['batch_size']}: {'/'.join(map(str, r['nfe_per_batch']))}"
            target = "–"
        print(f"| {r['dataset']} | {r['model']} | {what} | {r['seconds']:.1f} | {1e3 * r['seconds_per_sample']:.2f} | "
              f"{r['network_calls']} | {r['evaluations_per_sample']:.0f} | {target} | {r['cpu_wall']:.2f} |")
    print("\nTraining: " + "; ".join(f"{r['dataset']} {r['model']} {r['train_steps']} steps in "
                                     f"{r['train_seconds']:.0f} s (cpu/wall {r['train_cpu_wall']:.2f})"
                                     for r in pick(rows, estimate="ode")) + ".")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--budget", type=float, default=60.0, help="training wall-time seconds per model")
    p.add_argument("-n", "--n", type=int, default=1000, help="held-out points")
    p.add_argument("--seed", type=int, default=0, help="training seed; the held-out points use 1,000,000 + seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8192, help="(point, t) pairs per network call of the bound")
    p.add_argument("--quick", action="store_true", help="smoke run: --budget 4, -n 100")
    p.add_argument("--out", default="benchmarks/results/likelihood.jsonl")
    p.add_argument("--report", metavar="JSONL", help="print the tables of a results file and exit")
    p.add_argument("--run-id", default=None, help="with --report: which run of the file (default: the last)")
    args = p.parse_args()
    if args.quick:
        args.budget, args.n = 4.0, 100
    report(args.report, args.run_id) if args.report else run(args)


if __name__ == "__main__":
    main()
