"""The demo beside a busy process (issue 11): does `make demo` still draw moons when another job holds a core?

Each arm runs what `make demo` runs, with the defaults (--threads auto), through the command line:

    gaussdiff train --data moons --out RUN --time-budget B --no-pictures
    gaussdiff sample RUN -n 5000 --out RUN/samples.npy

(the pictures are skipped: they cost time, not quality), then SW2 (gaussdiff.metrics.sliced_w2, 500 directions) of
the samples against as many fresh moons, over the floor as time_to_quality.py computes it (the mean and sd of SW2
between 10 pairs of fresh sets of that size). Arm ``quiet`` runs alone; arm ``busy`` beside a CPU-bound process this
script starts before training and kills after sampling. Each arm appends a row to benchmarks/results/demo_busy.jsonl:
the threads auto chose, steps, steps/s, the cpu/wall ratio of the train command, the lines it printed, SW2 and the
floor, with the provenance of the run (commit, dirty tree, versions, machine, load). At the end it prints busy SW2 /
quiet SW2; the target is at most 1.25.

    python benchmarks/demo_busy.py                          # 2 x (120 s of training + sampling), a quiet machine
    python benchmarks/demo_busy.py --time-budget 5          # a smoke test
    python benchmarks/demo_busy.py --threads 2              # the demo as it was (--threads 2), for comparison
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from gaussdiff.data import BUILTIN
from gaussdiff.metrics import sliced_w2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance  # noqa: E402
from time_to_quality import floor  # noqa: E402

DATA = "moons"
TARGET = 1.25  # busy SW2 / quiet SW2


def children_cpu() -> float:
    """CPU seconds of the finished child processes (a running one counts once it is reaped)."""
    t = os.times()
    return t.children_user + t.children_system


def gaussdiff(*args: str) -> subprocess.CompletedProcess:
    """Run the command line as `make demo` does (a fresh process, so gaussdiff is imported before torch)."""
    done = subprocess.run([sys.executable, "-m", "gaussdiff", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"gaussdiff {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


@contextmanager
def cpu_hog(on: bool):
    """A CPU-bound process beside the arm (``on``), killed and reaped at the end, whatever happens."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if on else None
    try:
        yield
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()


def run_arm(arm: str, args, folder: Path, fresh: torch.Tensor) -> dict:
    run = folder / arm
    flags = ["--threads", str(args.threads)] if args.threads else []
    load = os.getloadavg()[0]
    with cpu_hog(arm == "busy"):
        cpu, wall = children_cpu(), time.perf_counter()
        trained = gaussdiff("train", "--data", DATA, "--out", str(run), "--time-budget", str(args.time_budget),
                            "--seed", str(args.seed), "--no-pictures", *flags)
        cpu, wall = children_cpu() - cpu, time.perf_counter() - wall  # the hog is not reaped yet: not counted
        sampled = gaussdiff("sample", str(run), "-n", str(args.n), "--out", str(run / "samples.npy"))
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    samples = torch.from_numpy(np.load(run / "samples.npy"))
    printed = (trained.stdout + trained.stderr + sampled.stdout).splitlines()
    return {"arm": arm, "time_budget": args.time_budget, "n": args.n, "seed": args.seed,
            "threads_asked": args.threads or "auto",
            "threads_chosen": json.loads((run / "config.json").read_text())["threads"],
            "steps": last["step"], "train_seconds": round(last["elapsed_s"], 3),
            "steps_per_s": round(last["step"] / last["elapsed_s"], 2),
            "train_cpu_wall": round(cpu / wall, 3), "load_average_before": round(load, 2),
            "printed": [line for line in printed if line.startswith(("threads:", "trained ", "gaussdiff train"))],
            "sw2": sliced_w2(samples, fresh)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--time-budget", type=float, default=120.0, help="training seconds of each arm (the demo's: 120)")
    p.add_argument("-n", type=int, default=5000, help="samples, compared with as many fresh moons")
    p.add_argument("--seed", type=int, default=0, help="training seed; fresh points and floor sets as time_to_quality")
    p.add_argument("--threads", type=int, default=None, help="pass --threads N to train (default: none, i.e. auto)")
    p.add_argument("--arms", nargs="+", choices=["quiet", "busy"], default=["quiet", "busy"])
    p.add_argument("--out", default="benchmarks/results/demo_busy.jsonl")
    args = p.parse_args()
    prov = Provenance(vars(args))
    fresh = BUILTIN[DATA](args.n, 5_000 + args.seed)
    fl, fl_sd = floor(DATA, args.n, args.seed)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm in args.arms:
            rows[arm] = prov.stamp(run_arm(arm, args, Path(tmp), fresh) | {"floor": fl, "floor_sd": fl_sd})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(rows[arm]) + "\n")
            r = rows[arm]
            print(f"{arm:5s}  threads {r['threads_chosen']}  steps {r['steps']:,}  {r['steps_per_s']:.1f} steps/s  "
                  f"cpu/wall {r['train_cpu_wall']:.2f}  SW2 {r['sw2']:.4f} = {r['sw2'] / fl:.2f}x floor "
                  f"({fl:.4f} +- {fl_sd:.4f})", flush=True)
            for line in r["printed"]:
                print(f"       {line}")
    if {"quiet", "busy"} <= rows.keys():
        ratio = rows["busy"]["sw2"] / rows["quiet"]["sw2"]
        print(f"busy SW2 / quiet SW2 = {ratio:.2f} (target <= {TARGET}: {'met' if ratio <= TARGET else 'missed'})")


if __name__ == "__main__":
    main()
