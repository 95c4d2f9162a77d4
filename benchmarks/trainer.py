"""The trainer's costs, each side by side in one run (issue 3):

  overhead  steps/s of gaussdiff's ``train`` against a bare PyTorch loop doing the same math (same MLP,
            global batch, fused AdamW, clipping, ema-pytorch EMA; no logging, checkpoints, locks or
            signal checks), interleaved run by run. A step's cost is (time of N2 steps - time of N1
            steps) / (N2 - N1), so start-up (imports, data, the model export) cancels out.
  ddp       ``torchrun --nproc_per_node=2`` (1 thread each) against one process with 1 and with 2
            threads, same global batch, same difference-of-two-budgets timing; and the largest weight
            difference between the 2-process and the 1-process model.
  resume    wall time of ``gaussdiff train --resume RUN`` for one more step against a fresh
            ``gaussdiff train`` of one step (both new processes): what resuming adds before training.

Every row records the thread count and the cpu-time / wall-time ratio, and the run's provenance (commit, dirty tree,
versions, command, settings: provenance.py); ``--report`` prints markdown.

    python benchmarks/trainer.py overhead --repeats 5
    python benchmarks/trainer.py ddp
    python benchmarks/trainer.py resume --repeats 5
    python benchmarks/trainer.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from ema_pytorch import EMA
from safetensors.torch import load_file

from gaussdiff.data import load_dataset
from gaussdiff.losses import simple_loss
from gaussdiff.nets import MLP
from gaussdiff.schedule import make_schedule
from gaussdiff.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import Provenance, commit_line  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "trainer.jsonl"


def timed(fn) -> tuple[float, float]:
    """(wall seconds, cpu/wall ratio) of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - wall
    return wall, (time.process_time() - cpu) / wall


def bare_loop(cfg: TrainConfig, steps: int) -> None:
    """What a user would write by hand: the trainer's math and nothing else."""
    data = load_dataset(cfg.data, cfg.n_data, cfg.seed)
    x = data.get(torch.arange(len(data))).x
    schedule = make_schedule(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    torch.manual_seed(cfg.seed)
    net = MLP(x.shape[1], schedule.T, cfg.width, cfg.depth, cfg.emb_dim)
    ema = EMA(net, beta=cfg.ema_decay, update_after_step=0, update_every=1, include_online_model=False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, fused=True)
    g = torch.Generator().manual_seed(cfg.seed)
    per_epoch, perm = len(x) // cfg.batch_size, None
    for step in range(steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x), generator=g)
        k = step % per_epoch
        x0 = x[perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]]
        t = torch.randint(1, schedule.T + 1, (len(x0),), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = simple_loss(net, x0, schedule, cfg.prediction_type, t=t, eps=eps)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        ema.update()


def overhead(args) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def ours(steps):
            cfg = TrainConfig(out=f"{tmp}/run", steps=steps, threads=args.threads)
            return lambda: train(cfg, overwrite=True, progress=False)

        def bare(steps):
            return lambda: bare_loop(TrainConfig(steps=steps).validate(), steps)  # the data defaults resolved

        ours(args.n1)(), bare(args.n1)()  # warm-up: first-call costs (lazy imports, allocator) out of the timing
        for r in range(args.repeats):
            order = [("gaussdiff", ours), ("bare", bare)]
            for name, make in order if r % 2 == 0 else order[::-1]:  # interleaved, alternating who goes first
                (t1, c1), (t2, c2) = timed(make(args.n1)), timed(make(args.n2))
                rows.append(dict(bench="overhead", kind=name, repeat=r, threads=args.threads,
                                 steps_per_s=(args.n2 - args.n1) / (t2 - t1), cpu_wall=(c1 * t1 + c2 * t2) / (t1 + t2)))
                print(rows[-1], flush=True)
    return rows


def cli(*args, nproc: int | None = None, threads: int) -> tuple[float, float]:
    """(wall seconds, cpu/wall ratio of the children) of one gaussdiff command in new processes."""
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc else [sys.executable]
    cmd = launcher + ["-m", "gaussdiff", "train", "--no-pictures", "--threads", str(threads), *map(str, args)]
    before, wall = os.times(), time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall, after = time.perf_counter() - wall, os.times()
    return wall, (after.children_user + after.children_system - before.children_user - before.children_system) / wall


def ddp(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        setups = [("2 processes x 1 thread", dict(nproc=2, threads=1)), ("1 process x 1 thread", dict(threads=1)),
                  ("1 process x 2 threads", dict(threads=2))]
        for r in range(args.repeats):
            for i, (name, how) in enumerate(setups):
                (t1, c1), (t2, c2) = (cli("--out", f"{tmp}/{i}_{n}", "--steps", n, "--overwrite", **how)
                                      for n in (args.n1, args.n2))
                rows.append(dict(bench="ddp", kind=name, repeat=r, threads=how["threads"] * how.get("nproc", 1),
                                 steps_per_s=(args.n2 - args.n1) / (t2 - t1), cpu_wall=(c1 * t1 + c2 * t2) / (t1 + t2)))
                print(rows[-1], flush=True)
        a = load_file(f"{tmp}/0_{args.n2}/model/online.safetensors")  # 2 processes
        b = load_file(f"{tmp}/1_{args.n2}/model/online.safetensors")  # 1 process, same global batch
        rows.append(dict(bench="ddp", kind="max |w_2proc - w_1proc|", steps=args.n2,
                         value=max((a[k] - b[k]).abs().max().item() for k in a)))
        print(rows[-1], flush=True)
    return rows


def resume(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cli("--out", f"{tmp}/run", "--steps", args.n1, "--checkpoint-every", args.n1, threads=args.threads)
        for r in range(args.repeats):
            for name, cmd in [("fresh run, 1 step", ["--out", f"{tmp}/fresh", "--steps", 1, "--overwrite"]),
                              ("resume, 1 more step", ["--resume", f"{tmp}/run", "--steps", args.n1 + 1 + r])]:
                wall, ratio = cli(*cmd, threads=args.threads)
                rows.append(dict(bench="resume", kind=name, repeat=r, threads=args.threads, seconds=wall,
                                 cpu_wall=ratio))
                print(rows[-1], flush=True)
    return rows


def report(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    print(commit_line(rows))
    for bench, unit in [("overhead", "steps_per_s"), ("ddp", "steps_per_s"), ("resume", "seconds")]:
        sel = [r for r in rows if r["bench"] == bench and unit in r]
        if not sel:
            continue
        print(f"\n### {bench}\n\n| | {unit} (median) | min | max | threads | cpu/wall | runs |\n"
              "|---|---|---|---|---|---|---|")
        kinds = dict.fromkeys(r["kind"] for r in sel)
        med = {}
        for kind in kinds:
            v = [r[unit] for r in sel if r["kind"] == kind]
            med[kind] = statistics.median(v)
            cw = statistics.median(r["cpu_wall"] for r in sel if r["kind"] == kind)
            th = sel[[r["kind"] for r in sel].index(kind)]["threads"]
            print(f"| {kind} | {med[kind]:.3f} | {min(v):.3f} | {max(v):.3f} | {th} | {cw:.2f} | {len(v)} |")
        if bench == "overhead":
            print(f"\ngaussdiff / bare = {med['gaussdiff'] / med['bare']:.3f} "
                  f"(overhead {100 * (1 - med['gaussdiff'] / med['bare']):.1f} %)")
        if bench == "resume":
            print(f"\nresume - fresh = {med['resume, 1 more step'] - med['fresh run, 1 step']:.2f} s")
    for r in rows:
        if "value" in r:
            print(f"\n{r['kind']} after {r['steps']} steps: {r['value']:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", nargs="?", choices=["overhead", "ddp", "resume"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n1", type=int, default=200, help="the shorter step budget")
    p.add_argument("--n2", type=int, default=1200, help="the longer step budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        return report(args.out)
    prov = Provenance(vars(args))
    rows = {"overhead": overhead, "ddp": ddp, "resume": resume}[args.bench](args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.writelines(json.dumps(prov.stamp(r)) + "\n" for r in rows)


if __name__ == "__main__":
    main()
