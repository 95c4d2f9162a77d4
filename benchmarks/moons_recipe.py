"""What moves moons' SW2 toward its floor: training recipes at a fixed step count, and samplers on the trained model.

Load-independent: every arm trains for a fixed number of steps (4,000 = what 30 s of default training did at 2
threads on a quiet machine; 8,000 = 60 s), then draws 10,000 samples in one or more ways from the same saved model.
The metric is time_to_quality.py's: SW2 (500 directions) of the samples against 10,000 fresh moons, over the floor
(the mean SW2 of 10 pairs of fresh 10,000-point sets), with its functions and seeds.

Arms (TrainConfig overrides of the defaults):
    exact      no model: independent draws of the moons law itself (``exact_moons``), the best any sampler can do
    baseline   the defaults
    min_snr5   --loss-weighting min_snr --min-snr-gamma 5 (Hang et al. 2023); min_snr1, min_snr2, min_snr20 likewise
    fresh      --n-data steps x batch size: no point is seen twice
Samplers are NAME:STEPS[:SPACING][:VARIANCE], e.g. ddpm:100 (the default), ddpm:1000:trailing:beta (fixed_large),
ddim:50, dpmpp_2m:50:log_snr. One draw of 10,000 samples is noisy (its SW2 / floor has an sd of 0.4-1 even for the
exact law): --sample-seeds K draws K sets per model and sampler. Each row records its provenance (provenance.py:
commit, dirty tree, versions, command, threads, cpu/wall), the run's resolved training config, the steps done, the
cpu/wall ratio of training, the load average and the samples' shape (``moon_shape``: balance, width, stray points).

    nice -n 19 python benchmarks/moons_recipe.py --arms exact baseline min_snr5 --steps 4000 --sample-seeds 10
    python benchmarks/moons_recipe.py --report benchmarks/results/moons_recipe.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gaussdiff.data import BUILTIN
from gaussdiff.data.toys import standardization  # to measure samples against the moons' arcs
from gaussdiff.metrics import sliced_w2
from gaussdiff.samplers import generate
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402
from provenance import Provenance, commit_line, run_settings  # noqa: E402
from time_to_quality import floor, sampling_seeds  # noqa: E402

DATA = "moons"
ARMS = {"baseline": {}, "fresh": {"n_data": None},  # None: steps x batch size
        **{f"min_snr{g}": {"loss_weighting": "min_snr", "min_snr_gamma": float(g)} for g in (1, 2, 5, 20)}}


def parse_sampler(spec: str) -> dict:
    """NAME:STEPS[:SPACING][:VARIANCE] -> generate's keywords."""
    name, steps, *rest = spec.split(":")
    kw = dict(sampler=name, steps=int(steps), spacing=rest[0] if rest else "trailing")
    if len(rest) > 1:
        kw["variance"] = rest[1]
    return kw


def moon_shape(x: torch.Tensor, far: float = 0.25) -> dict:
    """Where the error lies, in raw moons units (noise sd 0.05): the share of points nearer the upper arc (0.5 in the
    data), the rms distance to the nearest arc of the points within ``far`` of it (the moons' width, about 0.05),
    the share farther than ``far`` (5 noise sd: points between or beyond the moons), and how the points of the core
    spread along the arcs: the W1 distance of their arc position (angle / pi in [0, 1]) from the uniform law."""
    mean, std = standardization(DATA)
    p = x.double().numpy() * std + mean
    dist, position = [], []
    for center, lo in (((0.0, 0.0), 0.0), ((1.0, 0.5), np.pi)):  # upper arc: angles [0, pi]; lower: [pi, 2 pi]
        d = p - np.array(center)
        angle = np.mod(np.arctan2(d[:, 1], d[:, 0]) - lo, 2 * np.pi)
        on_arc = angle <= np.pi
        position.append(np.where(on_arc, angle / np.pi, np.where(angle < 1.5 * np.pi, 1.0, 0.0)))
        ends = np.array(center) + np.array([[np.cos(lo), np.sin(lo)], [-np.cos(lo), -np.sin(lo)]])
        to_end = np.linalg.norm(p[:, None] - ends[None], axis=2).min(1)
        dist.append(np.where(on_arc, np.abs(np.linalg.norm(d, axis=1) - 1), to_end))
    dist = np.stack(dist)
    near = dist.min(0)
    core = near <= far
    u = np.sort(np.where(dist[0] < dist[1], position[0], position[1])[core])
    return dict(upper_share=float((dist[0] < dist[1]).mean()), width=float(np.sqrt(np.mean(near[core] ** 2))),
                far_share=float((~core).mean()),
                along_w1=float(np.mean(np.abs(u - (np.arange(len(u)) + 0.5) / len(u)))))


def trained(arm: str, seed: int, steps: int, threads: int, runs: Path) -> tuple[Path, dict]:
    """The run folder of (arm, seed, steps), trained unless ``runs`` already holds its model; its config overrides
    and training facts (steps done, seconds, cpu/wall; None when reused)."""
    overrides = dict(ARMS[arm])
    if "n_data" in overrides:
        overrides["n_data"] = steps * TrainConfig(data=DATA).validate().batch_size
    run = runs / f"{arm}-{steps}-s{seed}"
    facts = dict(train_s=None, cpu_wall=None)
    if not (run / "model").is_dir():
        clock = Clock()
        train(TrainConfig(data=DATA, out=str(run), seed=seed, steps=steps, threads=threads, **overrides),
              overwrite=True, progress=False)
        facts = dict(train_s=clock.seconds(), cpu_wall=clock.ratio())
    facts["steps_done"] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    return run, dict(overrides=overrides, **facts)


def exact_moons(n: int, seed: int) -> torch.Tensor:
    """n independent draws of the moons law itself, standardized: the moon ~ Bernoulli(1/2), s ~ U[0, pi], its arc's
    point (cos s, sin s) or (1 - cos s, 1/2 - sin s) plus N(0, 0.05^2 I). make_moons, which draws the data and the
    floor's sets, spaces s evenly and splits n exactly in half, so two of its sets differ by the noise alone."""
    rng = np.random.default_rng(seed)
    upper, s = rng.random(n) < 0.5, rng.uniform(0, np.pi, n)
    arc = np.where(upper[:, None], np.c_[np.cos(s), np.sin(s)], np.c_[1 - np.cos(s), 0.5 - np.sin(s)])
    mean, std = standardization(DATA)
    return torch.from_numpy((arc + 0.05 * rng.standard_normal((n, 2)) - mean) / std).float()


def rows_for(arm: str, seed: int, steps: int, samplers: list[str], args, runs: Path, fresh, fl):
    """One row per (sampler, sample seed), as each is done; the exact arm draws from the moons law, untrained."""
    if arm == "exact":
        model, samplers, facts = None, ["exact"], dict(overrides={}, train_s=None, cpu_wall=None, steps_done=0)
    else:
        run, facts = trained(arm, seed, steps, args.threads, runs)
        model, facts["settings"] = load_model(run), run_settings(run)
    common = dict(dataset=DATA, arm=arm, seed=seed, steps=steps, n=args.n,
                  threads=torch.get_num_threads(), floor=fl[0], floor_sd=fl[1], load=os.getloadavg()[0],
                  data_shape=moon_shape(fresh), **facts)
    for spec in samplers:
        kw = None if model is None else parse_sampler(spec)
        for sample_seed in sampling_seeds(seed, args.sample_seeds):  # the first is time_to_quality's
            t0 = time.perf_counter()
            with torch.no_grad():
                x = exact_moons(args.n, sample_seed) if model is None else generate(
                    model.denoiser(), (args.n, 2), model.schedule,
                    generator=torch.Generator().manual_seed(sample_seed), **kw)
            sw2 = sliced_w2(x, fresh)
            yield common | dict(sampler=spec, sampler_kw=kw, sample_seed=sample_seed,
                                sample_s=time.perf_counter() - t0, sw2=sw2, ratio=sw2 / fl[0], shape=moon_shape(x))


def run(args) -> None:
    torch.set_num_threads(args.threads)
    prov = Provenance(vars(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs or tmp)
        runs.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            fresh, fl = BUILTIN[DATA](args.n, 5_000 + seed), floor(DATA, args.n, seed)  # time_to_quality's seeds
            for arm in args.arms:
                for steps in [0] if arm == "exact" else args.steps:
                    for row in rows_for(arm, seed, steps, args.samplers, args, runs, fresh, fl):
                        with open(out, "a") as f:
                            f.write(json.dumps(prov.stamp(row)) + "\n")
                        print(f"{arm} {steps} s{seed} {row['sampler']} draw {row['sample_seed']}: SW2/floor "
                              f"{row['ratio']:.2f} (train {row['train_s'] or 0:.0f} s, load {row['load']:.1f})",
                              flush=True)


def report(path: str) -> None:
    """SW2 / floor of each (arm, steps, sampler): per seed the mean over its sample draws (the latest row of each),
    then the mean over seeds; with the moons' shape (moon_shape) averaged over every draw."""
    latest = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            latest[(r["arm"], r["steps"], r["sampler"], r["seed"], r.get("sample_seed", r["seed"]))] = r
    print("| arm | steps | sampler | SW2 / floor, mean | per seed (mean over draws) | draws per seed | "
          "sd of one draw | width (data 0.050) | upper share sd | far share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    order = lambda k: (k[1], k[0] != "exact", k[0] != "baseline", k[0], k[2])  # noqa: E731
    for key in sorted({k[:3] for k in latest}, key=order):
        rows = [latest[k] for k in sorted(latest) if k[:3] == key]
        seeds = sorted({r["seed"] for r in rows})
        per_seed = [statistics.mean(r["ratio"] for r in rows if r["seed"] == s) for s in seeds]
        draws = sorted({sum(r["seed"] == s for r in rows) for s in seeds})
        spread = statistics.mean(statistics.stdev(r["ratio"] for r in rows if r["seed"] == s) for s in seeds) \
            if min(draws) > 1 else float("nan")
        shape = {name: [r["shape"][name] for r in rows if "shape" in r] for name in ("width", "upper_share",
                                                                                       "far_share")}
        width, share_sd, far = (statistics.mean(shape["width"]) if shape["width"] else float("nan"),
                                statistics.pstdev(shape["upper_share"]) if shape["upper_share"] else float("nan"),
                                statistics.mean(shape["far_share"]) if shape["far_share"] else float("nan"))
        print(f"| {key[0]} | {key[1]} | {key[2]} | {statistics.mean(per_seed):.2f} | "
              f"{' / '.join(f'{v:.2f}' for v in per_seed)} (seeds {', '.join(map(str, seeds))}) | "
              f"{'-'.join(map(str, draws))} | {spread:.2f} | {width:.3f} | {share_sd:.4f} | {far:.4f} |")
    print(f"\n{commit_line(list(latest.values()))}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="+", default=["exact", "baseline", "min_snr5", "fresh"],
                   choices=["exact", *ARMS])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", nargs="+", type=int, default=[4000])
    p.add_argument("--samplers", nargs="+", default=["ddpm:100"],
                   help="NAME:STEPS[:SPACING][:VARIANCE], each on every trained model")
    p.add_argument("--n", type=int, default=10_000, help="samples compared with fresh data")
    p.add_argument("--sample-seeds", type=int, default=1,
                   help="draws of n samples per sampler (sample seeds seed, seed + 1000, ...; the first is "
                        "time_to_quality's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", help="keep the run folders here; a model already there is re-sampled, not retrained")
    p.add_argument("--out", default="benchmarks/results/moons_recipe.jsonl")
    p.add_argument("--report", metavar="JSONL", help="print the table of a results file and exit")
    args = p.parse_args()
    report(args.report) if args.report else run(args)


if __name__ == "__main__":
    main()
