"""Issue 4: per-step overhead of gaussdiff's samplers against diffusers' schedulers for the same method.

The model costs nothing (it returns zeros: an x0 prediction of 0), so the time is the sampler's own arithmetic and
bookkeeping. For each method (DDPM, DDIM, DPM++ 2M, Euler, Heun; trailing grids: diffusers' variant matching ours,
so both sides take the same steps, see sampler_methods.py), each
batch shape (64 x 2 and 16 x 3 x 32 x 32, float32) and each repeat, ours and diffusers' run one after the other
(the order alternating between repeats), ``--steps`` steps each, timed from grid / ``set_timesteps`` to the last
step (diffusers' scheduler object is built once, outside the timing). The per-step time is the median over
repeats divided by the steps; the ratio is ours / diffusers'. Every row is stamped with the run's provenance
(commit, dirty tree, versions, threads, command: provenance.py); a run writes its file anew.

    python benchmarks/sampler_overhead.py
    python benchmarks/sampler_overhead.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, commit_line  # noqa: E402
from sampler_methods import Ours, diffusers_method  # noqa: E402

from gaussdiff.schedule import make_schedule  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "sampler_overhead.jsonl"
PAIRS = {"DDPM": ("ddpm", "DDPM"), "DDIM": ("ddim", "DDIM"), "DPM++ 2M": ("dpmpp_2m", "DPMSolverMultistep 2M"),
         "Euler": ("euler", "Euler"), "Heun": ("heun", "Heun")}
SHAPES = ((64, 2), (16, 3, 32, 32))


def zeros(x, t):
    return torch.zeros_like(x)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, cpu seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, shape, schedule, steps: int, repeats: int) -> dict:
    ours = Ours(PAIRS[name][0], "trailing")
    theirs = diffusers_method(PAIRS[name][1], "matched")
    sch = theirs.scheduler(schedule)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    runs = {
        "ours": lambda: ours.run(zeros, x_T, schedule, steps, torch.Generator().manual_seed(1)),
        "diffusers": lambda: theirs.loop(sch, zeros, x_T, steps, torch.Generator().manual_seed(1)),
    }
    for fn in runs.values():  # warm-up
        fn()
    wall = {k: [] for k in runs}
    cpu = 0.0
    total = 0.0
    for r in range(repeats):
        for side in (("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours")):
            w, c = timed(runs[side])
            wall[side].append(w)
            total, cpu = total + w, cpu + c
    us = {k: 1e6 * statistics.median(v) / steps for k, v in wall.items()}
    return {"kind": "summary", "method": name, "shape": "x".join(map(str, shape)), "steps": steps, "repeats": repeats,
            "ours_us": us["ours"], "diffusers_us": us["diffusers"], "ratio": us["ours"] / us["diffusers"],
            "threads": torch.get_num_threads(), "cpu_wall": cpu / total}


def report(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    meta = next(r for r in rows if r["kind"] == "meta")
    lines = [commit_line(rows), "",
             f"Command: `{meta['command']}` — {meta['threads']} threads, {meta['steps']} steps, median of "
             f"{meta['repeats']} interleaved repeats.", "",
             "| method | batch | ours (us / step) | diffusers (us / step) | ours / diffusers | cpu/wall |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "summary":
            lines.append(f"| {r['method']} | {r['shape']} | {r['ours_us']:.0f} | {r['diffusers_us']:.0f} | "
                         f"{r['ratio']:.2f} | {r['cpu_wall']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (with 2 on a shared 2-core machine, runs swung 10-50x: ops wait for a busy "
                        "core)")
    p.add_argument("--methods", type=lambda s: s.split(","), default=list(PAIRS))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--report", action="store_true", help="print the markdown table of --out and exit")
    args = p.parse_args(argv)
    if args.report:
        print(report(args.out))
        return
    torch.set_num_threads(args.threads)
    schedule = make_schedule("linear", 1000)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prov = Provenance(vars(args))
    with args.out.open("w") as f:
        f.write(json.dumps(prov.stamp({"kind": "meta", "command": " ".join(["python", *sys.argv]),
                                       "threads": args.threads, "steps": args.steps, "repeats": args.repeats,
                                       "torch": torch.__version__})) + "\n")
        for name in args.methods:
            for shape in SHAPES:
                row = prov.stamp(measure(name, shape, schedule, args.steps, args.repeats))
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(json.dumps(row), file=sys.stderr)


if __name__ == "__main__":
    main()
