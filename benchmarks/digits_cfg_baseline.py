"""The class-conditional baseline of the digits benchmark (issue 12, "Numbers"): lucidrains' classifier-free guidance
model (``denoising_diffusion_pytorch.classifier_free_guidance``) trained on gaussdiff's fixed 1,500-image digits
split, then sampled at several guidance scales, 100 samples of each class.

Run it in the benchmark venv of benchmarks/digits_baselines.py (its docstring installs it), one run per line, each
alone on a quiet machine:

    PY=/work/bench-venv/bin/python
    $PY benchmarks/digits_cfg_baseline.py --label-dropout 0.5 --budget 600 --out OUT   # its default cond_drop_prob
    $PY benchmarks/digits_cfg_baseline.py --label-dropout 0.1 --budget 600 --out OUT   # gaussdiff's

Options: --scales S... (0 1 1.5 2 3 5), --samplers NAME... (ancestral1000 ddim100), --guidance MODE... (shipped
plain), --samples-per-class N (100), --seed S (0), --threads T (2); --dim, --dim-mults, --batch-size, --lr override
the values below. Smoke test: --budget 20 --scales 1 3 --samples-per-class 5 --threads 1.

Each run appends one JSON line per (guidance, scale, sampler) to OUT/results.jsonl, with the training's fields of
digits_baselines.py (steps, steps/s, cpu/wall ratio, threads; the provenance: commit, dirty tree, versions, load
average, command, settings), the sampling seconds and the NFE (network forward passes per sample), and writes the
samples as uint8 .npy (N, 1, 8, 8), values 0..16, beside their labels (int64 (N,), STEM.labels.npy; a glob for *.npy
finds these too). The labels cycle 0, 1, ..., 9, so every prefix of a set is balanced (FD against the 297 held-out
images reads the first 297 samples).

Cost (1 thread, a lightly loaded machine): one forward pass at batch 1,000 took 1.3 s. Each guided step runs two
(conditional and null, not batched), s = 1 one: a scale on "ancestral1000" takes 2,000 passes (~40 min), on
"ddim100" 200 (~4 min). All defaults: 11 sample sets per sampler (s = 1 once, shared by both modes), ~7.5 h per
label dropout; --samplers ddim100 --guidance plain: 6 sets, ~20 min.

Protocol, read from the installed source (denoising-diffusion-pytorch 2.3.4):
  Unet(dim=26, num_classes=10, cond_drop_prob=--label-dropout, dim_mults=(1, 2), channels=1), its other defaults
  (two ResNet blocks and linear attention per level, full attention in the middle; the class embedding goes through
  an MLP and joins the time embedding's scale-shift). Size matched to gaussdiff's digits UNet (two levels, widths
  32 and 64: 687,937 parameters unconditional, 689,345 with 10 classes): 663,495 parameters; dim=32, dim_mults=(1, 2)
  has 977,121, dim=28 761,349 (the class MLP and the wider scale-shift inputs add ~150 k to the unconditional
  Unet's 0.83 M). The run prints both counts.
  GaussianDiffusion(image_size=8) with its defaults: timesteps 1000, objective pred_noise, cosine schedule, x0
  clipped to [-1, 1] when sampling; it is fed images in [0, 1] (x / 16) and maps them to [-1, 1] itself.
  Training: the loop of digits_baselines.py's lucidrains baseline (its Trainer's defaults): Adam(lr, betas (0.9,
  0.99)), grad-norm clip 1, ema_pytorch EMA(beta=0.995, update_every=10), batch 64, lr 1e-3 (its "matched"
  variant), --budget seconds of wall time; label dropout is the Unet's own (a null class embedding with probability
  cond_drop_prob, drawn from torch's seeded stream).
  Samplers, on the EMA weights: "ancestral1000" = GaussianDiffusion.sample() as configured by default
  (sampling_timesteps = timesteps = 1000: p_sample_loop, DDPM ancestral with the posterior variance);
  "ddim100" = sampling_timesteps=100, which runs its ddim_sample with its default ddim_sampling_eta = 1
  (stochastic DDIM, not the deterministic eta = 0). Every set starts from torch.manual_seed(--seed): the same
  initial noise at every scale and in both modes.

Guidance scale. ``sample(classes, cond_scale=s)`` computes cond + (cond - null) (s - 1) = null + s (cond - null):
diffusers' s (s = 1 the conditional model, s = 0 the unconditional; Ho & Salimans' w = s - 1), so --scales are
passed unchanged. But as shipped it is not plain guidance: forward_with_cond_scale keeps only the part of
(cond - null) orthogonal to cond (remove_parallel_component=True, keep_parallel_frac=0, per sample over all pixels),
and sample() rescales the result (rescaled_phi=0.7, Lin et al. 2024: out = 0.7 g std(cond) / std(g) + 0.3 g), so
s = 0 is not the unconditional model. Two modes, one row each:
  "shipped": sample(classes, cond_scale=s) exactly as installed;
  "plain":   the same call with rescaled_phi=0 and remove_parallel_component=False: null + s (cond - null), the
             formula of gaussdiff's --guidance.
At s = 1 both modes run the conditional model alone (one forward per step; the row's guidance is "conditional").
The installed forward_with_cond_scale returns a bare tensor at cond_scale == 1 where model_predictions unpacks a
pair: sample(..., cond_scale=1) raises "too many values to unpack" for any batch but 2 (at batch 2 it silently
splits the batch). ``set_guidance`` returns (cond, None) there instead; the null output is read only with CFG++,
which is off.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

# First: digits_baselines sets TQDM_DISABLE (lucidrains' sampling loops print a bar per step) before torch imports tqdm.
from digits_baselines import (MAX_LEVEL, PACKAGES, append_row, batch_indices, lucidrains_trainer, n_params,
                              run_header, timed_samples, to_levels, train_for, training_fields)
from provenance import Provenance

import numpy as np
import torch

from gaussdiff.atomic import write_atomically
from gaussdiff.data.digits import digits_split
from gaussdiff.nets import build_network
from gaussdiff.nets.unet import unet_config

SAMPLERS = {"ancestral1000": None, "ddim100": 100}  # GaussianDiffusion sampling_timesteps (None: all 1000)
GUIDANCE = {"shipped": {}, "plain": dict(remove_parallel_component=False, rescaled_phi=0.0)}
NUM_CLASSES = 10


def build(args):
    """The Unet (the class-conditional one, label dropout = --label-dropout) and its GaussianDiffusion."""
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion, Unet

    unet = Unet(dim=args.dim, num_classes=NUM_CLASSES, cond_drop_prob=args.label_dropout,
                dim_mults=tuple(args.dim_mults), channels=1)
    return unet, GaussianDiffusion(unet, image_size=8)


def print_sizes(unet: torch.nn.Module, args) -> None:
    """This Unet's parameter count beside gaussdiff's digits UNet, unconditional and with 10 classes."""
    ours = {k: n_params(build_network(unet_config((1, 8, 8), 1000, **kw)))
            for k, kw in [("unconditional", {}), ("10 classes", dict(num_classes=NUM_CLASSES))]}
    print(f"lucidrains cfg Unet(dim={args.dim}, dim_mults={tuple(args.dim_mults)}): {n_params(unet):,} parameters; "
          f"gaussdiff digits UNet: " + ", ".join(f"{n:,} {k}" for k, n in ours.items()), flush=True)


def train(args, unet, diffusion) -> tuple[dict, torch.nn.Module]:
    """digits_baselines' lucidrains loop (its Trainer's defaults) with the labels: the row's training fields and the
    EMA Unet."""
    update, ema = lucidrains_trainer(diffusion, args.lr)
    images, labels = digits_split("train")
    data01 = torch.from_numpy(images).float() / MAX_LEVEL  # GaussianDiffusion maps [0, 1] to [-1, 1]
    classes = torch.from_numpy(labels).long()
    batches = batch_indices(len(data01), args.batch_size, args.seed)

    def step(steps, elapsed):
        rows = next(batches)
        return update(diffusion(data01[rows], classes=classes[rows]))

    s = dict(dim=args.dim, dim_mults=args.dim_mults, label_dropout=args.label_dropout, batch_size=args.batch_size,
             lr=args.lr)
    fields = training_fields(args, s, unet) | train_for(args.budget, step)
    ema_unet = ema.ema_model.model
    ema_unet.eval()
    return fields, ema_unet


def set_guidance(unet: torch.nn.Module, mode: str) -> None:
    """Make ``unet.forward_with_cond_scale`` the ``mode`` of GUIDANCE, returning (guided, null) at every scale:
    the installed one returns a bare tensor at cond_scale == 1, which GaussianDiffusion.model_predictions cannot
    unpack."""
    stock = partial(type(unet).forward_with_cond_scale, unet)

    def forward_with_cond_scale(*args, **kwargs):
        out = stock(*args, **(kwargs | GUIDANCE[mode]))
        return out if isinstance(out, tuple) else (out, None)

    unet.forward_with_cond_scale = forward_with_cond_scale


def sample_set(args, sampler, name: str, s: float, mode: str) -> dict:
    """One set: samples (class i % 10 for sample i) at scale ``s`` in guidance ``mode`` ("conditional": s = 1),
    timed and saved beside its labels; the row's sampling fields."""
    set_guidance(sampler.model, "plain" if mode == "conditional" else mode)
    labels = torch.arange(NUM_CLASSES * args.samples_per_class) % NUM_CLASSES
    stem = f"lucidrains-cfg-{args.variant}-{mode}-s{s:g}-{name}"

    def draw():
        torch.manual_seed(args.seed)
        return to_levels(sampler.sample(labels, cond_scale=s))  # sample() returns [0, 1]

    timed = timed_samples(args.out, stem, draw)
    write_atomically(args.out / f"{stem}.labels.npy", lambda f: np.save(f, labels.numpy(), allow_pickle=False))
    steps = sampler.sampling_timesteps
    return dict(guidance=mode, cond_scale=s, sampler=name, sampling_timesteps=steps,
                ddim_eta=sampler.ddim_sampling_eta if sampler.is_ddim_sampling else None,
                nfe=steps * (1 if s == 1 else 2), sampling_seconds=timed["seconds"], file=timed["file"],
                labels_file=f"{stem}.labels.npy", n=timed["n"])


def run(args) -> None:
    """Train for --budget seconds, then one row per (sampler, scale, guidance mode; s = 1 once)."""
    from denoising_diffusion_pytorch.classifier_free_guidance import GaussianDiffusion

    torch.manual_seed(args.seed)
    unet, diffusion = build(args)
    print_sizes(unet, args)
    header = run_header(args, "lucidrains-cfg")
    fields, ema_unet = train(args, unet, diffusion)
    for name in args.samplers:
        sampler = GaussianDiffusion(ema_unet, image_size=8, sampling_timesteps=SAMPLERS[name])
        for s in args.scales:
            for mode in ["conditional"] if s == 1 else args.guidance:
                append_row(args, header | fields | sample_set(args, sampler, name, s, mode))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and the samples")
    p.add_argument("--label-dropout", type=float, required=True,
                   help="the Unet's cond_drop_prob: 0.5 its default, 0.1 gaussdiff's")
    p.add_argument("--budget", type=float, required=True, help="seconds of training wall time")
    p.add_argument("--scales", type=float, nargs="+", default=[0, 1, 1.5, 2, 3, 5],
                   help="cond_scale values (diffusers' s: 1 the conditional model, 0 the unconditional)")
    p.add_argument("--samplers", nargs="+", choices=list(SAMPLERS), default=list(SAMPLERS))
    p.add_argument("--guidance", nargs="+", choices=list(GUIDANCE), default=list(GUIDANCE),
                   help="shipped: sample() as installed; plain: null + s (cond - null)")
    p.add_argument("--samples-per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dim", type=int, default=26)
    p.add_argument("--dim-mults", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    args.samples = NUM_CLASSES * args.samples_per_class  # the n_samples of digits_baselines' row header
    args.variant = f"drop{args.label_dropout:g}"
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.provenance = Provenance(vars(args), PACKAGES)
    run(args)


if __name__ == "__main__":
    main()
