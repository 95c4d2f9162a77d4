"""Time-to-quality on 2-D data: gaussdiff's trainer against a minimal diffusers DDPMScheduler loop.

For each data set and seed, in one run:
  - floor:      SW2 between two independent fresh sets of n points (mean and sd over 10 draws);
  - gaussdiff:  ``train`` with --time-budget B for each budget B (its LR schedule spans the budget),
                then n samples with gaussdiff's default sampler;
  - reference:  the same MLP trained by a bare loop on diffusers' DDPMScheduler (AdamW at a
                constant learning rate, no EMA) for max(B) seconds, snapshotted at every B, and
                sampled with diffusers' 1000-step ancestral loop.
SW2 of the n samples against fresh data, the thread count and the cpu-time / wall-time ratio of each
training run go to a JSON-lines file; ``--report`` prints the markdown table for RESULTS.md.

    python benchmarks/time_to_quality.py --datasets moons --seeds 0 --out benchmarks/results/ttq.jsonl
    python benchmarks/time_to_quality.py --report benchmarks/results/ttq.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402

from gaussdiff.data import BUILTIN  # noqa: E402
from gaussdiff.metrics import sliced_w2  # noqa: E402
from gaussdiff.nets import MLP  # noqa: E402
from gaussdiff.samplers import generate  # noqa: E402
from gaussdiff.saved import load_model  # noqa: E402
from gaussdiff.train import TrainConfig, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402

DEFAULTS = TrainConfig()
REF_LR = 1e-3  # constant: the usual choice for a small MLP, and the loop a diffusers user writes


def floor(name: str, n: int, seed: int, draws: int = 10) -> tuple[float, float]:
    d = [sliced_w2(BUILTIN[name](n, 10_000 + 100 * seed + 2 * i), BUILTIN[name](n, 10_001 + 100 * seed + 2 * i))
         for i in range(draws)]
    return statistics.mean(d), statistics.stdev(d)


def gaussdiff_row(name: str, seed: int, budget: float, n: int, threads: int, fresh: torch.Tensor) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        run = train(TrainConfig(data=name, out=f"{tmp}/run", seed=seed, time_budget=budget, threads=threads),
                    progress=False)
        ratio = clock.ratio()
        steps = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
        model = load_model(run)
        t0 = time.perf_counter()
        with torch.no_grad():
            x = generate(model.denoiser(), (n, 2), model.schedule, generator=torch.Generator().manual_seed(seed))
        sample_s = time.perf_counter() - t0
    return dict(tool="gaussdiff", steps=steps, cpu_wall=ratio, sw2=sliced_w2(x, fresh), sample_s=sample_s)


def reference_rows(name: str, seed: int, budgets: list[float], n: int, fresh: torch.Tensor) -> list[dict]:
    """The loop a diffusers user writes: add_noise, MSE on eps, AdamW; then scheduler.step 1000 times."""
    torch.manual_seed(seed)
    data = BUILTIN[name](100_000, seed)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    net = MLP(2, 1000, DEFAULTS.width, DEFAULTS.depth, DEFAULTS.emb_dim)  # the same network as gaussdiff's
    opt = torch.optim.AdamW(net.parameters(), lr=REF_LR)
    snapshots, step, clock = [], 0, Clock()
    for budget in sorted(budgets):
        while clock.seconds() < budget:
            x0 = data[torch.randint(0, len(data), (DEFAULTS.batch_size,))]
            noise = torch.randn_like(x0)
            i = torch.randint(0, 1000, (DEFAULTS.batch_size,))
            loss = torch.nn.functional.mse_loss(net(sched.add_noise(x0, noise, i), i.float() + 1), noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        snapshots.append((budget, step, clock.ratio(), copy.deepcopy(net.state_dict())))
    rows = []
    for budget, steps, ratio, state in snapshots:
        net.load_state_dict(state)
        t0 = time.perf_counter()
        x = diffusers_sample(net, sched, n, seed)
        rows.append(dict(tool="reference", budget=budget, steps=steps, cpu_wall=ratio, sw2=sliced_w2(x, fresh),
                         sample_s=time.perf_counter() - t0))
    return rows


@torch.no_grad()
def diffusers_sample(net, sched: DDPMScheduler, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    sched.set_timesteps(1000)
    x = torch.randn(n, 2, generator=generator)
    for i in sched.timesteps:
        eps = net(x, torch.full((n,), float(i) + 1))  # our MLP takes our t = diffusers' i + 1
        x = sched.step(eps, i, x, generator=generator).prev_sample
    return x


def run(args) -> None:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        for seed in args.seeds:
            fresh = BUILTIN[name](args.n, 5_000 + seed)
            fl, fl_sd = floor(name, args.n, seed)
            common = dict(dataset=name, seed=seed, n=args.n, threads=torch.get_num_threads(), floor=fl,
                          floor_sd=fl_sd)
            rows = [dict(gaussdiff_row(name, seed, b, args.n, args.threads, fresh), budget=b) for b in args.budgets]
            rows += reference_rows(name, seed, args.budgets, args.n, fresh)
            with open(out, "a") as f:
                for row in rows:
                    f.write(json.dumps(common | row) + "\n")
                    print(json.dumps(common | row), flush=True)


def report(path: str) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    print("| data set | budget (s) | floor (mean ± sd) | gaussdiff SW2 / floor | reference SW2 / floor | "
          "gaussdiff / reference | steps (g / ref) | cpu/wall (g / ref) | seeds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in sorted({r["dataset"] for r in rows}):
        for budget in sorted({r["budget"] for r in rows}):
            sel = {tool: [r for r in rows if r["dataset"] == name and r["budget"] == budget and r["tool"] == tool]
                   for tool in ("gaussdiff", "reference")}
            if not all(sel.values()):
                continue
            fl = statistics.mean(r["floor"] for r in sel["gaussdiff"])
            fl_sd = statistics.mean(r["floor_sd"] for r in sel["gaussdiff"])
            g, r = (statistics.mean(x["sw2"] for x in sel[t]) for t in ("gaussdiff", "reference"))
            steps = "/".join(f"{statistics.mean(x['steps'] for x in sel[t]):.0f}" for t in sel)
            ratio = "/".join(f"{statistics.mean(x['cpu_wall'] for x in sel[t]):.2f}" for t in sel)
            print(f"| {name} | {budget:g} | {fl:.4f} ± {fl_sd:.4f} | {g / fl:.2f} | {r / fl:.2f} | {g / r:.2f} | "
                  f"{steps} | {ratio} | {len(sel['gaussdiff'])} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["moons", "swiss_roll", "8gaussians"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budgets", nargs="+", type=float, default=[15, 30, 60])
    p.add_argument("--n", type=int, default=10_000, help="samples compared with fresh data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="benchmarks/results/time_to_quality.jsonl")
    p.add_argument("--report", metavar="JSONL", help="print the table of a results file and exit")
    args = p.parse_args()
    report(args.report) if args.report else run(args)


if __name__ == "__main__":
    main()
