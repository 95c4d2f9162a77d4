"""Issue 4: every sampler on the exact oracle, gaussdiff's and diffusers' side by side in one run.

The model is the exact denoiser E[x_0 | x_t] of a known Gaussian mixture, so what is measured is each sampler's
discretisation error only. For each problem (``ring8``, ``mix16``: see oracle_problems.py), schedule (``linear``:
betas 1e-4..0.02, ``cosine``: squaredcos_cap_v2, T = 1000) and NFE budget, every method gets the same x_T (one
fixed seed) and runs with the most steps whose actual NFE fits the budget (Heun: 2K - 1 calls for K steps; PNDM:
K + 1). diffusers' schedulers run twice, at their own defaults and in the variant matching our settings
(sampler_methods.py), and the report compares ours with the better of the two. Rows (one per problem x schedule x
method x variant x NFE, with NaN / exception flags, the method's settings and the cpu/wall ratio, each stamped with
the run's provenance: commit, dirty tree, versions, threads, command; provenance.py) go to a JSON-lines file that the
run writes anew; ``--report`` prints the markdown tables and the issue's targets.
``--robustness`` checks every method's steps at every step count 1..1000 on both schedules (colliding or extra
steps) and samples 8 points at every count (or, with ``--run-stride``, at a subset and wherever there are extra
steps: NaN, exceptions), into its own file.

    python benchmarks/samplers_oracle.py --quick                   # smoke check, ~3.5 min on a quiet machine
    python benchmarks/samplers_oracle.py                           # the full run, ~22 min (1 thread)
    python benchmarks/samplers_oracle.py --robustness --run-stride 50
    python benchmarks/samplers_oracle.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402

from gaussdiff.metrics import sliced_w2  # noqa: E402
from gaussdiff.param import CountingDenoiser  # noqa: E402
from gaussdiff.schedule import make_schedule  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402
from oracle_problems import PROBLEMS, floors, sample_metrics, sw2_floor  # noqa: E402
from provenance import Provenance  # noqa: E402
from sampler_methods import DIFFUSERS, OURS, REFERENCES, steps_for_nfe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SCHEDULES = {"linear": lambda: make_schedule("linear", 1000, 1e-4, 0.02),
             "cosine": lambda: make_schedule("squaredcos_cap_v2", 1000)}


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]


def run_cell(method, problem, schedule, x_T, nfe: int | None, sw2_fresh, seed: int) -> dict:
    """One method at one NFE budget (``None``: the reference picks its own) on one problem and schedule."""
    row = {"side": method.side, "method": method.label, "variant": method.variant, "settings": method.settings,
           "nfe_target": nfe}
    try:
        steps = None if nfe is None else steps_for_nfe(method, schedule, nfe)
        den = CountingDenoiser(problem.denoiser(schedule))
        clock = Clock()
        x = method.run(den, x_T.clone(), schedule, steps, generator=torch.Generator().manual_seed(seed + 1))
        row.update(steps=steps, nfe=den.calls, seconds=clock.seconds(), cpu_wall=clock.ratio())
        bad = int((~torch.isfinite(x)).any(1).sum())
        row.update(nan=bad > 0, nonfinite_rows=bad)
        if not bad:
            row.update(sample_metrics(problem, x))
            if sw2_fresh is not None:
                row["sw2"] = sliced_w2(x[: len(sw2_fresh)], sw2_fresh)
    except Exception as e:  # noqa: BLE001 - an exception is a result here: recorded, not raised
        row["error"] = _error(e)
    return row


def sweep(args, write) -> None:
    methods = [m for m in OURS + DIFFUSERS + REFERENCES if args.only is None or args.only in m.label]
    size = lambda nfe: args.n_1000 if nfe is not None and nfe >= 1000 else args.n  # noqa: E731
    for pname in args.problems:
        problem = PROBLEMS[pname]()
        for n in sorted({size(nfe) for nfe in args.nfe} | {args.n}):
            write({"kind": "floor", "problem": pname, "n": n, "draws": args.floor_draws,
                   **floors(problem, n, draws=args.floor_draws)})
        write({"kind": "sw2_floor", "problem": pname, "n": args.sw2_n, "draws": args.floor_draws,
               "sw2": sw2_floor(problem, args.sw2_n, draws=args.floor_draws)})
        sw2_fresh = problem.mixture.sample(args.sw2_n, generator=torch.Generator().manual_seed(args.seed + 2))
        for sname in args.schedules:
            schedule = SCHEDULES[sname]()
            x_T = torch.randn(args.n, problem.dim, generator=torch.Generator().manual_seed(args.seed),
                              dtype=torch.float64)
            for method in methods:
                for nfe in (args.nfe if method.side != "reference" else [None]):
                    fresh = sw2_fresh if nfe is None or nfe in args.sw2_nfe else None
                    row = run_cell(method, problem, schedule, x_T[: size(nfe)], nfe, fresh, args.seed)
                    write({"kind": "cell", "problem": pname, "schedule": sname, "n": size(nfe), **row})


def run_steps(max_steps: int, stride: int) -> set[int]:
    """Step counts sampled in the robustness sweep: all of 1..20, every ``stride``-th and the last 5 (stride 1: all)."""
    return {k for k in range(1, max_steps + 1) if k <= 20 or k % stride == 0 or k > max_steps - 5}


def robustness(args, write) -> None:
    """Every method on 8 points of ring8. At every step count 1..max_steps: do its steps collide (fewer distinct
    times than steps) or come with extras (more)? A full run (NaN, exceptions) at ``run_steps`` and at every count
    with extra steps."""
    problem = PROBLEMS["ring8"]()
    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    methods = [m for m in OURS + DIFFUSERS if args.only is None or args.only in m.label]
    sampled = run_steps(args.max_steps, args.run_stride)
    for sname in args.schedules:
        schedule = SCHEDULES[sname]()
        for method in methods:
            clock = Clock()
            nan, errors, collide, extra, runs, max_nfe = [], {}, [], [], 0, 0
            for steps in range(1, args.max_steps + 1):
                try:
                    distinct = method.distinct_steps(schedule, steps)
                    (collide if distinct < steps else extra if distinct > steps else []).append(steps)
                    if steps in sampled or distinct > steps:
                        runs += 1
                        den = CountingDenoiser(problem.denoiser(schedule))
                        x = method.run(den, x_T.clone(), schedule, steps, generator=torch.Generator().manual_seed(0))
                        max_nfe = max(max_nfe, den.calls)
                        if not torch.isfinite(x).all():
                            nan.append(steps)
                except Exception as e:  # noqa: BLE001 - recorded per step count
                    errors.setdefault(re.sub(r"\d+", "N", _error(e)), []).append(steps)
            write({"kind": "robustness", "schedule": sname, "side": method.side, "method": method.label,
                   "variant": method.variant, "settings": method.settings,
                   "max_steps": args.max_steps, "run_stride": args.run_stride, "runs": runs, "max_nfe": max_nfe,
                   "nan_steps": nan, "error_steps": errors, "collision_steps": collide, "extra_steps": extra,
                   "seconds": clock.seconds(), "cpu_wall": clock.ratio()})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke check: 2,000 points, NFE 5, 10, 20")
    p.add_argument("--problems", type=lambda s: s.split(","), default=list(PROBLEMS), help="comma-separated")
    p.add_argument("--schedules", type=lambda s: s.split(","), default=list(SCHEDULES), help="comma-separated")
    p.add_argument("--nfe", type=lambda s: [int(v) for v in s.split(",")], default=[5, 10, 20, 50, 100, 1000],
                   help="NFE budgets, comma-separated")
    p.add_argument("--n", type=int, default=20_000, help="samples per run")
    p.add_argument("--n-1000", type=int, default=5_000,
                   help="samples for NFE >= 1000 (the first of the same x_T; 84%% of the calls at full size)")
    p.add_argument("--sw2-n", type=int, default=5_000, help="points in each SW2 comparison (POT: ~0.4 ms a point)")
    p.add_argument("--sw2-nfe", type=lambda s: [int(v) for v in s.split(",")], default=[10, 20],
                   help="NFE budgets at which SW2 is computed")
    p.add_argument("--floor-draws", type=int, default=10, help="fresh true sets per Monte Carlo floor")
    p.add_argument("--seed", type=int, default=0, help="seed of x_T (fresh SW2 data: seed + 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (on a shared 2-core machine a second thread makes small ops wait for a busy "
                        "core)")
    p.add_argument("--only", help="run only the methods whose label contains this text (needs --out: the report "
                                  "reads one full run)")
    p.add_argument("--robustness", action="store_true", help="the NaN / exception / collision sweep instead")
    p.add_argument("--max-steps", type=int, default=1000, help="robustness: step counts 1..max")
    p.add_argument("--run-stride", type=int, default=1,
                   help="robustness: sample at steps 1..20, every stride-th and the last 5 (1: every step count; "
                        "the steps themselves are checked at every count)")
    p.add_argument("--out", type=Path, help="JSON-lines output (default: results/samplers_oracle.jsonl; "
                                            "..._quick.jsonl with --quick, results/samplers_robustness.jsonl "
                                            "with --robustness)")
    p.add_argument("--report", action="store_true", help="print the markdown tables of the result files and exit")
    args = p.parse_args(argv)
    if args.report:
        from samplers_oracle_report import report

        print(report(RESULTS / "samplers_oracle.jsonl", RESULTS / "samplers_robustness.jsonl",
                     RESULTS / "sampler_overhead.jsonl"))
        return
    if args.quick:
        args.n, args.n_1000, args.sw2_n, args.nfe, args.sw2_nfe = 2000, 2000, 2000, [5, 10, 20], [10]
    if args.only and not args.out:
        p.error("--only writes a partial run: give --out (the default files hold one full run each)")
    for name in args.problems + args.schedules:
        if name not in PROBLEMS and name not in SCHEDULES:
            p.error(f"unknown problem or schedule {name!r}")
    torch.set_num_threads(args.threads)
    default = "samplers_robustness" if args.robustness else "samplers_oracle_quick" if args.quick else "samplers_oracle"
    out = args.out or RESULTS / f"{default}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    clock, prov = Clock(), Provenance(vars(args))
    with out.open("w") as f:
        def write(row: dict) -> None:
            f.write(json.dumps(prov.stamp(row)) + "\n")
            f.flush()
            brief = {k: row[k] for k in ("problem", "schedule", "method", "variant", "nfe_target", "nfe", "std_err",
                                         "error",
                                         "nan_steps", "collision_steps", "extra_steps", "seconds") if k in row}
            print(json.dumps(brief), file=sys.stderr)

        write({"kind": "meta", "command": " ".join(["python", *sys.argv]), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "diffusers": diffusers.__version__, "cpus": os.cpu_count(),
               "machine": platform.machine(), "n": args.n, "n_1000": args.n_1000, "sw2_n": args.sw2_n})
        (robustness if args.robustness else sweep)(args, write)
        write({"kind": "end", "seconds": clock.seconds(), "cpu_wall": clock.ratio(),
               "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
