"""Class-conditional digits and digits inpainting (issue 12, "Numbers"), gaussdiff's side; lucidrains' classifier-free
guidance model runs in its own venv (benchmarks/digits_cfg_baseline.py) and writes OUT/results.jsonl beside ours.

    .venv/bin/python benchmarks/digits_guidance.py train --budget 600 --out OUT   # class-conditional, dropout 0.1
    .venv/bin/python benchmarks/digits_guidance.py guidance --out OUT              # 100 per class at each scale s
    .venv/bin/python benchmarks/digits_guidance.py inpaint --model RUN --out OUT   # top halves of the 297 held-out
    .venv/bin/python benchmarks/digits_guidance.py report --out OUT                # tables and OUT/guidance.png

Protocol. The model: gaussdiff's defaults for digits (the UNet "digits" preset, batch 64, lr 2e-3, cosine, EMA), as
the unconditional model of the images benchmark (benchmarks/digits_quality.py), plus --class-conditional
--label-dropout 0.1, for the same wall-time budget on 2 threads. Guidance: for each s, 100 samples of each class
(1,000; sample i of every class shares its noise, seed 0) by the default sampler (ddpm, 100 trailing steps, x0
clipped), scored by the shipped digits classifier (accuracy against the class asked for) and FD-digits against the 1,500
training images at n = 1,000, as the unconditional model's 1.83. Inpainting: each of the 297 held-out images with
its top 4 rows known (the mask is 1 = known), completed once per method by the given (unconditional) model: accuracy
of the classifier on the completions against the true labels, FD of the completions against the held-out images
themselves (n = 297) and against the training images, and a check that every known pixel came back unchanged.
Every row records its settings, the cpu-time / wall-time ratio, the load average and the run's provenance (commit,
dirty tree, versions, threads, command: provenance.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from digits_quality import log, read_rows, timed
from gaussdiff.data.digits import digits_split
from gaussdiff.features import digits_net, digits_report
from gaussdiff.samplers import DEFAULT_SPACING, DEFAULT_STEPS, generate
from gaussdiff.samplers.guidance import clip_x0
from gaussdiff.samplers.known import known_nfe, sample_known
from gaussdiff.sampling import Guidance, sampler_inputs
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, train
from provenance import Provenance, commit_line, run_settings

SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0)
# (name, method, sampler, steps, jump length, jump count): replacement at RePaint's base grid and at the full chain
# (the most steps it can take, 1,000 of RePaint's 2,410 calls), and RePaint at the paper's defaults.
INPAINT = [("replace_xt-250", "replace_xt", "ddpm", 250, 10, 1), ("replace_xt-1000", "replace_xt", "ddpm", 1000, 10, 1),
           ("replace_x0-250", "replace_x0", "ddpm", 250, 10, 1),
           ("repaint-250-j10-r10", "repaint", "ddpm", 250, 10, 10)]
KNOWN_ROWS = 4


def cmd_train(args) -> None:
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data="digits", out=str(args.out / "cond_run"), time_budget=args.budget, threads=args.threads,
                      seed=args.seed, class_conditional=True, label_dropout=args.label_dropout)
    run, wall, ratio = timed(lambda: train(cfg, progress=False))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    log(args, {"what": "train_conditional", "budget_s": args.budget, "steps": rows[-1]["step"],
               "steps_per_s": rows[-1]["step"] / args.budget, "wall_s": wall, "cpu_per_wall": ratio,
               "label_dropout": args.label_dropout, "config": run_settings(run),
               "parameters": sum(p.numel() for p in load_model(run).network.parameters())})


def _scores(images: np.ndarray, labels: np.ndarray) -> dict:
    report = digits_report(images)
    accuracy = float((digits_net().predict(images) == labels).mean())
    return {"accuracy": accuracy, "fd_train": report["fd_train"], "fd_heldout": report["fd_heldout"],
            "exact_copies": report["exact_copies"]}


@torch.no_grad()
def cmd_guidance(args) -> None:
    torch.set_num_threads(args.threads)
    model = load_model(args.out / "cond_run")
    labels = torch.arange(10).repeat_interleave(args.per_class)
    for s in args.scales:
        def draw():
            chunks = []
            for k in range(10):  # each class draws rows 0..per_class-1 of the seeded set, as gaussdiff sample --class
                denoiser, options = sampler_inputs(model, "ddpm", labels=torch.full((args.per_class,), k),
                                                   guidance=Guidance(s))
                chunks.append(generate(clip_x0(denoiser, *model.transform.model_range),
                                       (args.per_class, *model.sample_shape), model.schedule, seed=args.seed,
                                       **options))
            return model.to_data_units(torch.cat(chunks)).numpy().astype(np.uint8)

        images, wall, ratio = timed(draw)
        np.save(args.out / f"gaussdiff-cfg-s{s:g}.npy", images)
        settings = {"sampler": "ddpm", "steps": min(DEFAULT_STEPS, model.schedule.T), "spacing": DEFAULT_SPACING,
                    "clip_x0": True, "seed": args.seed, "per_class": args.per_class, **sampler_inputs(model, "ddpm")[1]}
        log(args, {"what": "guidance", "scale": s, "samples": len(images), "sampler": "ddpm100", "settings": settings,
                   "seconds": wall, "cpu_per_wall": ratio, **_scores(images, labels.numpy())})


@torch.no_grad()
def cmd_inpaint(args) -> None:
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    images, labels = digits_split("test")
    x = torch.from_numpy(images).double()
    mask = torch.zeros(x.shape, dtype=torch.bool)
    mask[:, :, :KNOWN_ROWS] = True  # 1 = known: the top half
    x_known = model.transform.forward(x).float()
    for name, method, sampler, steps, j, r in INPAINT:
        if args.methods and name not in args.methods:
            continue
        denoiser, options = sampler_inputs(model, sampler)
        denoiser = clip_x0(denoiser, *model.transform.model_range)
        y, wall, ratio = timed(lambda: sample_known(denoiser, x_known, mask, model.schedule, method=method,
                                                    sampler=sampler, steps=steps, jump_length=j, jump_n_sample=r,
                                                    seed=args.seed, **options))
        filled = torch.where(mask, x, model.to_data_units(y)).numpy().astype(np.uint8)
        np.save(args.out / f"inpaint-{name}.npy", filled)
        known_exact = bool((model.to_data_units(y)[mask] == x[mask]).all())
        settings = {"method": method, "sampler": sampler, "steps": steps, "jump_length": j, "jump_n_sample": r,
                    "clip_x0": True, "seed": args.seed, **options}
        log(args, {"what": "inpaint", "method": name, "nfe": known_nfe(method, sampler, steps, j, r),
                   "settings": settings, "seconds": wall, "cpu_per_wall": ratio, "known_rows": KNOWN_ROWS,
                   "model": str(args.model), "known_exact_before_paste": known_exact, **_scores(filled, labels)})


def _lucidrains(out: Path) -> list[dict]:
    """lucidrains' rows (OUT/results.jsonl of digits_cfg_baseline.py), each scored from its samples and labels."""
    return [r | {"scale": r["cond_scale"], "name": f"lucidrains {r['variant']} {r['guidance']} {r['sampler']}",
                 **_scores(np.load(out / r["file"]), np.load(out / r["labels_file"]))}
            for r in read_rows(out / "results.jsonl") if r.get("baseline") == "lucidrains-cfg"]


def cmd_report(args) -> None:
    rows = read_rows(args.out / "gaussdiff.jsonl")
    theirs = _lucidrains(args.out)
    print(f"gaussdiff.jsonl: {commit_line(rows)}; results.jsonl: {commit_line(theirs)}\n")
    print("| model | s | accuracy | FD vs train (n=1000) | sampling seconds | training steps |\n"
          "|---|---|---|---|---|---|")
    steps = next((r["steps"] for r in rows if r["what"] == "train_conditional"), None)
    for r in rows:
        if r["what"] == "guidance":
            print(f"| gaussdiff (dropout 0.1) ddpm100 | {r['scale']:g} | {r['accuracy']:.3f} | {r['fd_train']:.2f} | "
                  f"{r['seconds']:.0f} | {steps} |")
    for r in theirs:
        print(f"| {r['name']} | {r['scale']:g} | {r['accuracy']:.3f} | {r['fd_train']:.2f} | "
              f"{r['sampling_seconds']:.0f} | {r['steps']} |")
    print("\n| inpainting method | NFE | accuracy | FD vs held-out (n=297) | FD vs train | known values exact | "
          "seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["what"] == "inpaint":
            print(f"| {r['method']} | {r['nfe']} | {r['accuracy']:.3f} | {r['fd_heldout']:.2f} | {r['fd_train']:.2f} | "
                  f"{r['known_exact_before_paste']} | {r['seconds']:.0f} |")
    _plot(rows, theirs, args.out / "guidance.png")


def _plot(rows, theirs, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, fd) = plt.subplots(1, 2, figsize=(9, 3.5))
    series = {"gaussdiff (label dropout 0.1)": [r for r in rows if r["what"] == "guidance"]}
    for r in theirs:
        series.setdefault(r["name"], []).append(r)
    for name, points in series.items():
        points = sorted(points, key=lambda r: r["scale"])
        acc.plot([r["scale"] for r in points], [r["accuracy"] for r in points], "o-", label=name)
        fd.plot([r["scale"] for r in points], [r["fd_train"] for r in points], "o-", label=name)
    acc.set(xlabel="guidance scale s (1 = conditional)", ylabel="classifier accuracy", title="class adherence")
    fd.set(xlabel="guidance scale s", ylabel="FD-digits vs train (n = 1,000)", title="sample quality")
    acc.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "guidance", "inpaint", "report"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--scales", type=float, nargs="+", default=SCALES)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--model", type=Path, default=None, help="inpaint: the unconditional digits run")
    p.add_argument("--methods", nargs="*", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.provenance = Provenance(vars(args))
    {"train": cmd_train, "guidance": cmd_guidance, "inpaint": cmd_inpaint, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
