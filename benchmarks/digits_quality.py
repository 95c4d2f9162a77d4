"""gaussdiff on the digits (issue 9, "Numbers"): train with the defaults for a wall-time budget, draw 1,000 samples with
several samplers (timed), score every sample set with FD-digits (``gaussdiff.features.digits_report``) beside the
baselines' sets (benchmarks/digits_baselines.py, run in its own venv), and the test bits/dim (bound and ODE).

    .venv/bin/python benchmarks/digits_quality.py train --budget 600 --out OUT     # gaussdiff with its defaults
    .venv/bin/python benchmarks/digits_quality.py sample --out OUT                  # OUT/gaussdiff_*.npy, timed
    .venv/bin/python benchmarks/digits_quality.py likelihood --out OUT              # test bits/dim, bound and ODE
    .venv/bin/python benchmarks/digits_quality.py report --out OUT                  # every .npy in OUT scored

Every step appends JSON lines to OUT/gaussdiff.jsonl (the settings, cpu-time / wall-time, load average, and the run's
provenance: commit, dirty tree, versions, threads, command; provenance.py);
``report`` reads them and OUT/results.jsonl (the baselines) and prints one table. Run each step alone on a quiet
machine: two torch threads on busy cores collapse (a run whose cpu/wall ratio is far below 2 did not have both cores).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gaussdiff.data.digits import digits_split
from gaussdiff.features import digits_report
from gaussdiff.likelihood import elbo, ode_nll
from gaussdiff.samplers import generate
from gaussdiff.samplers.guidance import clip_x0
from gaussdiff.sampling import sampler_inputs
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, commit_line, run_settings  # noqa: E402

# (name, sampler, steps, spacing): the default (ancestral ddpm on 100 trailing steps) and cheaper ones.
SAMPLERS = [("ddpm100", "ddpm", 100, "trailing"), ("ddim50", "ddim", 50, "trailing"),
            ("dpmpp_2m20", "dpmpp_2m", 20, "log_snr"), ("dpmpp_2m10", "dpmpp_2m", 10, "log_snr"),
            ("ddpm50", "ddpm", 50, "trailing"), ("ddpm25", "ddpm", 25, "trailing")]


def log(args, row: dict) -> None:
    """Append ``row`` to OUT/gaussdiff.jsonl, stamped with the load average now and the run's provenance."""
    line = json.dumps(args.provenance.stamp(row | {"load_average_1min": os.getloadavg()[0]}))
    with open(args.out / "gaussdiff.jsonl", "a") as f:
        f.write(line + "\n")
    print(line)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    wall = time.perf_counter() - wall
    return value, wall, (time.process_time() - cpu) / wall


def cmd_train(args) -> None:
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data="digits", out=str(args.out / "run"), time_budget=args.budget, threads=args.threads,
                      seed=args.seed)
    run, wall, ratio = timed(lambda: train(cfg, progress=False))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = rows[-1]["step"]
    log(args, {"what": "train", "budget_s": args.budget, "steps": steps, "steps_per_s": steps / args.budget,
               "wall_s": wall, "cpu_per_wall": ratio, "batch_size": cfg.batch_size, "lr": cfg.lr,
               "parameters": sum(p.numel() for p in load_model(run).network.parameters()), "config": run_settings(run)})


@torch.no_grad()
def cmd_sample(args) -> None:
    torch.set_num_threads(args.threads)
    model = load_model(args.out / "run")
    for name, sampler, steps, spacing in SAMPLERS:
        if args.samplers and name not in args.samplers:
            continue
        denoiser, options = sampler_inputs(model, sampler)
        denoiser = clip_x0(denoiser, *model.transform.model_range)  # gaussdiff sample's default for images
        x, wall, ratio = timed(lambda: generate(denoiser, (args.samples, *model.sample_shape), model.schedule,
                                                sampler=sampler, steps=steps, spacing=spacing, seed=args.seed,
                                                **options))
        np.save(args.out / f"gaussdiff_{name}.npy", model.to_data_units(x).numpy())
        log(args, {"what": "sample", "sampler": name, "samples": args.samples, "seconds": wall,
                   "cpu_per_wall": ratio, "settings": {"sampler": sampler, "steps": steps, "spacing": spacing,
                                                       "clip_x0": True, "seed": args.seed, **options}})


@torch.no_grad()
def cmd_likelihood(args) -> None:
    """Bits/dim of the 297 held-out digits in their own units (17 levels, bins of width 1): the bound with the
    discretized decoder (-log2 P(bin) per dim), and the ODE NLL of the uniformly dequantized images (Hutchinson)."""
    torch.set_num_threads(args.threads)
    model = load_model(args.out / "run")
    x = torch.from_numpy(digits_split("test")[0]).double()
    y = model.transform.forward(x)
    reverse = model.reverse_model()
    lo, hi = -1.0, 1.0
    bound, wall, ratio = timed(lambda: elbo(lambda x_t, t: reverse(x_t.float(), t), y, model.schedule, levels=17,
                                            lo=lo, hi=hi, batch_size=8192,
                                            generator=torch.Generator().manual_seed(args.seed)))
    total = bound.summary()["total"]
    log(args, {"what": "bound", "bits_per_dim": total["bits_per_dim"], "se": total["bits_per_dim_se"],
               "seconds": wall, "cpu_per_wall": ratio,
               "settings": {"levels": 17, "batch_size": 8192, "seed": args.seed}})
    net = model.denoiser()
    result, wall, ratio = timed(lambda: ode_nll(lambda x_t, t: net(x_t.float(), t).double(), x, model.schedule,
                                                transform=model.transform, levels=17, probes=args.probes,
                                                generator=torch.Generator().manual_seed(args.seed)))
    bpd = result.nll / (64 * math.log(2))
    log(args, {"what": "ode_nll", "bits_per_dim": bpd.mean().item(),
               "se": (bpd.std() / math.sqrt(len(bpd))).item(), "probes": args.probes, "nfe": result.nfe,
               "seconds": wall, "cpu_per_wall": ratio})


def cmd_report(args) -> None:
    ours, theirs = read_rows(args.out / "gaussdiff.jsonl"), read_rows(args.out / "results.jsonl")
    print(f"gaussdiff.jsonl: {commit_line(ours)}; results.jsonl: {commit_line(theirs)}\n")
    print("| samples | FD vs train | FD vs held-out (n=297) | exact copies | median NN dist | classes (min..max) |")
    print("|---|---|---|---|---|---|")
    first = None
    for path in sorted(args.out.glob("*.npy")):
        r = digits_report(np.load(path))
        first = first or r
        hist = r["class_histogram"]
        print(f"| {path.stem} | {r['fd_train']:.2f} | {r['fd_heldout']:.2f} | {r['exact_copies']:.3f} | "
              f"{r['nearest_train_median']:.3f} ({r['nearest_ratio']:.2f}x) | {min(hist)}..{max(hist)} |")
    if first:
        print(f"\nheld-out vs train: FD {first['fd_heldout_vs_train']:.2f} (all 1,500), floor at n = 297 "
              f"{first['floor_mean']:.2f} +- {first['floor_sd']:.2f}; held-out median NN distance "
              f"{first['heldout_nearest_train_median']:.3f}")
    for row in ours + theirs:
        print(json.dumps(row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "sample", "likelihood", "report"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=600.0, help="training wall-time budget in seconds")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--samplers", nargs="*", default=None, help=f"subset of {[s[0] for s in SAMPLERS]}")
    p.add_argument("--probes", type=int, default=2, help="Hutchinson probes of the ODE NLL")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.provenance = Provenance(vars(args))
    {"train": cmd_train, "sample": cmd_sample, "likelihood": cmd_likelihood, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
