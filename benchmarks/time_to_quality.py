"""Time-to-quality on 2-D data: what the tool adds and what its recipe adds, in one run (issues 2 and 11).

For each data set and seed, three arms train the same MLP (gaussdiff's default network, batch and data draw) on the
same cores for the same wall-time budgets B:
  - gaussdiff:  ``train`` with --time-budget B and its defaults (v-prediction, AdamW with warm-up and a cosine decay
                over the budget, gradient clipping, EMA), then n samples drawn exactly as ``gaussdiff sample RUN``
                draws them by default: the command itself, run in this process;
  - recipe:     diffusers with gaussdiff's recipe: DDPMScheduler's ``add_noise`` and gaussdiff's target (v-prediction:
                ``get_velocity``), the same initial weights, AdamW at gaussdiff's learning rate with its warm-up and
                cosine over the budget (``train.loop.lr_factor``), its loss weighting (``losses.loss_weight``), its
                gradient clipping, ema-pytorch's EMA with gaussdiff's decay and warm-up; one run per budget; sampled
                by DDPMScheduler's ``step`` loop set up as gaussdiff's default sampler (ancestral, min(100, T)
                trailing steps, the model's variance);
  - reference:  what a diffusers user writes: ``add_noise``, MSE on eps, AdamW at a constant 1e-3, no clipping, no
                EMA, for max(B) seconds, snapshotted at every B, each sampled by DDPMScheduler's 1,000-step loop.
gaussdiff / recipe is what the tool adds (its loop, data stream and sampler code), recipe / reference what the
recipe adds. SW2 of the n samples against n fresh points is divided by the floor: SW2 between two fresh sets of n
points, mean and sd over 10 draws. One sampling draw of a 2-D model varies a lot (moons, ddpm-100: 2.6-5.3x the
floor over 6 draws of one model, moons_recipe.py), so ``--sample-seeds K`` samples each model K times and scores
the mean. Every row (one per arm and budget) records the arm, its training and sampling
settings, the steps, the thread count and cpu-time / wall-time ratio, and the run's provenance (commit, dirty tree,
versions, command; provenance.py). ``--report`` prints the markdown tables for RESULTS.md.

    python benchmarks/time_to_quality.py --datasets moons --seeds 0 --out benchmarks/results/ttq.jsonl
    python benchmarks/time_to_quality.py --datasets moons --seeds 0 --budgets 2 --n 500 --out /tmp/ttq.jsonl
    python benchmarks/time_to_quality.py --report benchmarks/results/ttq.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402
from ema_pytorch import EMA  # noqa: E402

from gaussdiff.cli import main as gaussdiff_cli  # noqa: E402
from gaussdiff.data import BUILTIN  # noqa: E402
from gaussdiff.losses import loss_weight  # noqa: E402
from gaussdiff.metrics import sliced_w2  # noqa: E402
from gaussdiff.nets import build_network  # noqa: E402
from gaussdiff.samplers import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS  # noqa: E402
from gaussdiff.saved import load_model  # noqa: E402
from gaussdiff.schedule import make_schedule  # noqa: E402
from gaussdiff.train import TrainConfig, train  # noqa: E402
from gaussdiff.train.loop import budget_used, lr_factor, network_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402
from provenance import Provenance, commit_line, run_settings  # noqa: E402

REF_LR = 1e-3  # constant: the usual choice for a small MLP, and the loop a diffusers user writes
REF_STEPS = 1000  # DDPMScheduler's sampling loop at its default: every step of the chain
ARMS = {"gaussdiff": "gaussdiff", "recipe": "diffusers + gaussdiff's recipe", "reference": "diffusers, usual recipe"}


def floor(name: str, n: int, seed: int, draws: int = 10) -> tuple[float, float]:
    d = [sliced_w2(BUILTIN[name](n, 10_000 + 100 * seed + 2 * i), BUILTIN[name](n, 10_001 + 100 * seed + 2 * i))
         for i in range(draws)]
    return statistics.mean(d), statistics.stdev(d)


def resolved(name: str, seed: int, threads: int, budget: float | None = None) -> TrainConfig:
    """gaussdiff's training config for data set ``name`` with every default resolved (batch size, learning rate)."""
    return TrainConfig(data=name, out="unused", seed=seed, threads=threads, time_budget=budget).validate()


def recipe_settings(cfg: TrainConfig) -> dict:
    """The training recipe of ``cfg`` that the recipe arm copies (the fields the arm reads)."""
    keys = ("n_data", "batch_size", "lr", "lr_schedule", "warmup_steps", "weight_decay", "grad_clip", "ema_decay",
            "prediction_type", "loss_weighting", "min_snr_gamma", "num_train_timesteps", "beta_schedule", "beta_start",
            "beta_end", "variance_type", "width", "depth", "emb_dim")
    return {k: getattr(cfg, k) for k in keys}


def same_network(cfg: TrainConfig, seed: int) -> torch.nn.Module:
    """gaussdiff's network for 2-D data under ``cfg``, with the initial weights its trainer draws for ``seed``."""
    torch.manual_seed(seed)
    return build_network(network_config(cfg, (2,), cfg.num_train_timesteps))


def trained_steps(run: Path) -> int:
    """The optimiser steps a gaussdiff run made (the largest step logged in RUN/metrics.jsonl)."""
    return max(json.loads(line).get("step", 0) for line in (run / "metrics.jsonl").read_text().splitlines() if line)


def gaussdiff_sample(run: Path, n: int, seed: int, threads: int, out: Path) -> np.ndarray:
    """``gaussdiff sample RUN -n N --seed S --threads T --out OUT.npy`` with every other option at its default."""
    argv = ["sample", str(run), "-n", str(n), "--seed", str(seed), "--threads", str(threads), "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        code = gaussdiff_cli(argv)
    if code:
        raise SystemExit(f"gaussdiff {' '.join(argv)} failed with exit code {code}")
    return np.load(out)


def sampling_seeds(seed: int, draws: int) -> list[int]:
    """The sampling seeds of a model trained under ``seed``: ``seed`` itself (what one draw always used), then
    seed + 1000 j."""
    return [seed + 1000 * j for j in range(draws)]


def scored(draw, seeds: list[int], fresh: torch.Tensor) -> dict:
    """sw2 (the mean over the draws ``draw(sampling_seed)`` makes, one per seed), each draw's SW2, and sample_s (the
    seconds of the first draw)."""
    t0 = time.perf_counter()
    values = [sliced_w2(draw(seeds[0]), fresh)]
    sample_s = time.perf_counter() - t0
    values += [sliced_w2(draw(s), fresh) for s in seeds[1:]]
    return dict(sw2=statistics.mean(values), sw2_draws=values, sample_seeds=seeds, sample_s=sample_s)


def gaussdiff_row(name: str, seed: int, budget: float, n: int, threads: int, fresh: torch.Tensor, tmp: str,
                  draws: int = 1) -> dict:
    clock = Clock()
    run = train(TrainConfig(data=name, out=f"{tmp}/run-{budget:g}", seed=seed, time_budget=budget, threads=threads),
                progress=False)
    ratio = clock.ratio()
    model = load_model(run)
    score = scored(lambda s: torch.from_numpy(gaussdiff_sample(run, n, s, threads, Path(tmp) / f"samples-{s}.npy")),
                   sampling_seeds(seed, draws), fresh)
    sampling = dict(command=f"gaussdiff sample RUN -n {n} --seed {seed} --threads {threads}",
                    sampler=DEFAULT_SAMPLER, steps=min(DEFAULT_STEPS, model.schedule.T), spacing=DEFAULT_SPACING,
                    variance=model.ddpm_variance)
    return dict(arm="gaussdiff", steps=trained_steps(run), cpu_wall=ratio, **score,
                settings=dict(train=run_settings(run), sample=sampling))


def recipe_scheduler(cfg: TrainConfig) -> DDPMScheduler:
    """DDPMScheduler set up as gaussdiff's default sampler on a model trained under ``cfg``: ancestral sampling on
    DEFAULT_SPACING steps with the model's own variance (diffusers' variance_type names are gaussdiff's)."""
    if DEFAULT_SAMPLER != "ddpm":
        raise SystemExit(f"gaussdiff's default sampler is now {DEFAULT_SAMPLER!r}: give the recipe arm the "
                         "diffusers scheduler that matches it")
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
                         variance_type=cfg.variance_type, timestep_spacing=DEFAULT_SPACING, clip_sample=False)


def recipe_row(name: str, seed: int, budget: float, n: int, threads: int, fresh: torch.Tensor,
               draws: int = 1) -> dict:
    """diffusers' training and sampling code with gaussdiff's recipe (module doc), for one budget."""
    cfg = resolved(name, seed, threads, budget)
    sched, T = recipe_scheduler(cfg), cfg.num_train_timesteps
    schedule = make_schedule(cfg.beta_schedule, T, cfg.beta_start, cfg.beta_end)
    weight = loss_weight(cfg.prediction_type, schedule.snr, cfg.loss_weighting, cfg.min_snr_gamma).float()  # by t
    data = BUILTIN[name](cfg.n_data, seed)
    net = same_network(cfg, seed)
    ema = EMA(net, beta=cfg.ema_decay, update_after_step=0, update_every=1, include_online_model=False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, clock = 0, Clock()
    while (used := budget_used(cfg, step, clock.seconds())) < 1:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(cfg, step, used)
        x0 = data[torch.randint(0, len(data), (cfg.batch_size,))]
        noise = torch.randn_like(x0)
        i = torch.randint(0, T, (cfg.batch_size,))
        v = sched.get_velocity(x0, noise, i)  # sqrt(abar) eps - sqrt(1 - abar) x0
        target = {"epsilon": noise, "sample": x0, "v_prediction": v}[cfg.prediction_type]
        error = (net(sched.add_noise(x0, noise, i), i.float() + 1) - target).pow(2).mean(1)
        loss = (weight[i + 1] * error).mean()  # diffusers' timestep i is our t = i + 1
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update()
        step += 1
    ratio, steps = clock.ratio(), min(DEFAULT_STEPS, T)
    score = scored(lambda s: diffusers_sample(ema.ema_model, sched, steps, n, s), sampling_seeds(seed, draws), fresh)
    sampling = dict(scheduler="DDPMScheduler", steps=steps, timestep_spacing=DEFAULT_SPACING,
                    variance_type=cfg.variance_type, prediction_type=cfg.prediction_type, weights="ema")
    return dict(arm="recipe", steps=step, cpu_wall=ratio, **score,
                settings=dict(train=recipe_settings(cfg), sample=sampling))


def reference_rows(name: str, seed: int, budgets: list[float], n: int, threads: int, fresh: torch.Tensor,
                   draws: int = 1) -> list[dict]:
    """The loop a diffusers user writes: add_noise, MSE on eps, AdamW; then scheduler.step 1000 times."""
    cfg = resolved(name, seed, threads)
    data = BUILTIN[name](cfg.n_data, seed)
    sched = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                          beta_start=cfg.beta_start, beta_end=cfg.beta_end, clip_sample=False)
    net = same_network(cfg, seed)
    opt = torch.optim.AdamW(net.parameters(), lr=REF_LR)
    snapshots, step, clock = [], 0, Clock()
    for budget in sorted(budgets):
        while clock.seconds() < budget:
            x0 = data[torch.randint(0, len(data), (cfg.batch_size,))]
            noise = torch.randn_like(x0)
            i = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,))
            loss = torch.nn.functional.mse_loss(net(sched.add_noise(x0, noise, i), i.float() + 1), noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        snapshots.append((budget, step, clock.ratio(), {k: v.clone() for k, v in net.state_dict().items()}))
    settings = dict(train=dict(n_data=cfg.n_data, batch_size=cfg.batch_size, lr=REF_LR, lr_schedule="constant",
                               prediction_type="epsilon", ema=None, grad_clip=None, weight_decay=0.01,
                               network=network_config(cfg, (2,), cfg.num_train_timesteps)),
                    sample=dict(scheduler="DDPMScheduler", steps=REF_STEPS, variance_type=sched.config.variance_type,
                                prediction_type="epsilon", weights="online"))
    rows = []
    for budget, steps, ratio, state in snapshots:
        net.load_state_dict(state)
        score = scored(lambda s: diffusers_sample(net, sched, REF_STEPS, n, s), sampling_seeds(seed, draws), fresh)
        rows.append(dict(arm="reference", budget=budget, steps=steps, cpu_wall=ratio, **score, settings=settings))
    return rows


@torch.no_grad()
def diffusers_sample(net, sched: DDPMScheduler, steps: int, n: int, seed: int) -> torch.Tensor:
    """diffusers' sampling loop: ``set_timesteps(steps)``, then the model's output at each timestep into ``step``."""
    generator = torch.Generator().manual_seed(seed)
    sched.set_timesteps(steps)
    x = torch.randn(n, 2, generator=generator)
    for i in sched.timesteps:
        out = net(x, torch.full((n,), float(i) + 1))  # our MLP takes our t = diffusers' i + 1
        x = sched.step(out, i, x, generator=generator).prev_sample
    return x


def run(args) -> None:
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        for seed in args.seeds:
            fresh = BUILTIN[name](args.n, 5_000 + seed)
            fl, fl_sd = floor(name, args.n, seed)
            common = dict(dataset=name, seed=seed, n=args.n, threads=torch.get_num_threads(), floor=fl,
                          floor_sd=fl_sd)
            rows = []
            with tempfile.TemporaryDirectory() as tmp:
                for b in args.budgets:
                    if "gaussdiff" in args.arms:
                        rows.append(dict(gaussdiff_row(name, seed, b, args.n, args.threads, fresh, tmp,
                                                       args.sample_seeds), budget=b))
                    if "recipe" in args.arms:
                        rows.append(dict(recipe_row(name, seed, b, args.n, args.threads, fresh, args.sample_seeds),
                                         budget=b))
            if "reference" in args.arms:
                rows += reference_rows(name, seed, args.budgets, args.n, args.threads, fresh, args.sample_seeds)
            with open(out, "a") as f:
                for row in rows:
                    line = json.dumps(prov.stamp(common | row))
                    f.write(line + "\n")
                    print(line, flush=True)


def _arm(row: dict) -> str:
    return row.get("arm") or row["tool"]  # rows written before the recipe arm name it "tool"


def _mean(rows: list[dict], key: str, fmt: str) -> str:
    return format(statistics.mean(r[key] for r in rows), fmt) if rows else "–"


def _summary_row(name: str, budget: float, sel: dict[str, list[dict]]) -> str:
    """The table row of one data set and budget from each arm's rows (one per seed)."""
    present = [r for rows in sel.values() for r in rows]
    fl, fl_sd = (statistics.mean(r[key] for r in present) for key in ("floor", "floor_sd"))
    sw2 = {arm: statistics.mean(r["sw2"] for r in rows) if rows else None for arm, rows in sel.items()}

    def ratio(a: str, b: str) -> str:
        return f"{sw2[a] / sw2[b]:.3g}" if sw2[a] is not None and sw2[b] is not None else "–"

    cells = [f"{sw2[arm] / fl:.2f}" if sw2[arm] is not None else "–" for arm in ARMS]
    joined = {key: "/".join(_mean(sel[arm], key, fmt) for arm in ARMS)
              for key, fmt in (("steps", ".0f"), ("sample_s", ".1f"), ("cpu_wall", ".2f"))}
    return (f"| {name} | {budget:g} | {fl:.4f} ± {fl_sd:.4f} | {' | '.join(cells)} | {ratio('gaussdiff', 'recipe')} | "
            f"{ratio('recipe', 'reference')} | {joined['steps']} | {joined['sample_s']} | {joined['cpu_wall']} | "
            f"{max(len(rows) for rows in sel.values())} |")


def report(path: str) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    print(commit_line(rows) + "\n")
    print("SW2 / floor (mean over seeds); tool = gaussdiff / recipe (what the tool adds), recipe = recipe / reference "
          "(what the recipe adds); steps, sampling seconds and cpu/wall as gaussdiff / recipe / reference.\n")
    print("| data set | budget (s) | floor (mean ± sd) | " + " | ".join(ARMS.values()) +
          " | tool | recipe | steps | sampling (s) | cpu/wall | seeds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    per_seed = []
    for name in sorted({r["dataset"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows}):
            sel = {arm: sorted((r for r in rows if r["dataset"] == name and r["budget"] == budget and _arm(r) == arm),
                               key=lambda r: r["seed"]) for arm in ARMS}
            if not any(sel.values()):
                continue
            print(_summary_row(name, budget, sel))
            per_seed.append(f"| {name} | {budget:g} | " + " | ".join(
                " / ".join(f"{r['sw2'] / r['floor']:.2f}" for r in sel[arm]) or "–" for arm in ARMS) + " |")
    print("\nPer seed (SW2 / floor, seeds in increasing order):\n")
    print("| data set | budget (s) | " + " | ".join(ARMS.values()) + " |\n|---|---|---|---|---|")
    print("\n".join(per_seed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["moons", "swiss_roll", "8gaussians"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", type=float, default=[15, 30, 60])
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="the arms to run")
    p.add_argument("--n", type=int, default=10_000, help="samples compared with fresh data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sample-seeds", type=int, default=1,
                   help="sampling draws per trained model (seed, seed + 1000, ...); sw2 is their mean")
    p.add_argument("--out", default="benchmarks/results/time_to_quality.jsonl")
    p.add_argument("--report", metavar="JSONL", help="print the table of a results file and exit")
    args = p.parse_args()
    report(args.report) if args.report else run(args)


if __name__ == "__main__":
    main()
