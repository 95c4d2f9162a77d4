"""The baselines of the digits benchmark (issue 9, "Numbers"): lucidrains' denoising-diffusion-pytorch, a minimal
diffusers loop and scikit-learn Gaussian mixtures, trained on gaussdiff's fixed 1,500-image digits split.

Run it in the separate benchmark venv, never in the project's own (lucidrains' package imports torchvision, which
does not import beside the project's CPU torch 2.13):

    python3 -m venv /work/bench-venv
    printf 'torch==2.14.1\\ntorchvision==0.29.1\\n' > /tmp/bench-constraints.txt
    /work/bench-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/bench-venv/bin/pip install -c /tmp/bench-constraints.txt denoising-diffusion-pytorch diffusers \\
        scikit-learn safetensors pillow numpy matplotlib tqdm pot ema-pytorch pyyaml torchdiffeq
    /work/bench-venv/bin/pip install --no-deps -e /work/main

Built and smoke-tested with: Python 3.11.7, torch 2.14.1+cu130 (a CUDA build, run on the CPU), torchvision
0.29.1+cu130, diffusers 0.42.1, denoising-diffusion-pytorch 2.3.4, ema-pytorch 0.8.3, scikit-learn 1.9.1,
numpy 2.4.6. Every result row records the versions it ran with.

Usage (one run per line; each appends one JSON line per trained model to OUT/results.jsonl and writes its samples
as uint8 .npy files (N, 1, 8, 8) with values 0..16 beside it):

    PY=/work/bench-venv/bin/python
    $PY benchmarks/digits_baselines.py lucidrains --variant defaults --budget 600 --out OUT
    $PY benchmarks/digits_baselines.py lucidrains --variant matched  --budget 600 --out OUT
    $PY benchmarks/digits_baselines.py diffusers  --variant defaults --budget 600 --out OUT
    $PY benchmarks/digits_baselines.py diffusers  --variant matched  --budget 600 --out OUT
    $PY benchmarks/digits_baselines.py mixture --components 10 50 --out OUT

Common options: --samples N (1000), --seed S (0), --threads T (2), --samplers NAME... (a subset of the baseline's
samplers); --batch-size, --lr and the network options override the variant's values.

Run them one at a time on a quiet machine. Two torch threads on cores that other processes also use wait on each
other: under load a forward pass took 6.5x longer at 2 threads than at 1 (smoke tests on a busy machine: pass
--threads 1). Sampling dominates the run time: one forward pass at batch 1,000 took (1 thread, a busy machine)
4.4 s (lucidrains defaults), 1.9 s (lucidrains matched), 7.4 s (diffusers defaults), 0.7 s (diffusers matched),
so diffusers' default 1,000-step sampler on its default UNet alone takes over an hour.

Protocol. Data: ``gaussdiff.data.digits.digits_split("train")`` (never the 297 held-out images, except for the
mixtures' bits/dim). Training runs for --budget seconds of wall time (model construction excluded; the clock is
read before every step, so the last step may end past the budget by one step's time); the row records steps,
steps/s, the cpu-time / wall-time ratio of training (about 2 on two free cores: a run below that did not have both
cores and is not comparable), and the run's provenance (provenance.py): the commit of this checkout and whether the
tree was dirty, the package versions, the machine and its load average at the start, the command and its settings.
Each model then draws --samples samples from its EMA weights with each sampler, timed.

lucidrains (variant "defaults" = its README's Trainer example where it sets a value, else its ``Trainer``
signature's defaults, read from the installed source):
  Unet(dim=64, dim_mults=(1, 2, 4, 8), flash_attn=True), 35.7 M parameters; 8x8 allows all four levels
  (8 -> 4 -> 2 -> 1), so only channels=1 changed; flash_attn runs torch's SDPA on the CPU.
  GaussianDiffusion(image_size=8, timesteps=1000, sampling_timesteps=250) with its defaults (objective pred_v,
  sigmoid schedule, auto_normalize: it is fed images in [0, 1] and maps them to [-1, 1] itself).
  Adam(lr 1e-4, betas (0.9, 0.99)), batch 16, grad-norm clip 1, ema_pytorch EMA(beta=0.995, update_every=10):
  the Trainer's defaults. Not taken from the README example: its batch 32 x gradient_accumulate_every 2 and
  lr 8e-5 (pass --batch-size 64 --lr 8e-5 for the same images per step), amp (CPU fp32 here), the horizontal flip
  (Trainer default on; a mirrored digit is not a digit), FID evaluation and checkpointing.
  Samplers: "ddim250" (GaussianDiffusion.sample() as configured: DDIM, 250 steps) and "ddim100".
lucidrains "matched": Unet(dim=32, dim_mults=(1, 2)) (0.83 M parameters; gaussdiff's "digits" UNet has 0.76 M),
  batch 64, lr 1e-3; everything else as above.

diffusers (variant "defaults" = examples/unconditional_image_generation/train_unconditional.py's defaults):
  UNet2DModel(layers_per_block=2, block_out_channels=(128, 128, 256), down (Down, AttnDown, Down), up (Up, AttnUp,
  Up)), 17.6 M parameters: the example's six 64x64 levels cut to the three that 8x8 allows (8 -> 4 -> 2), its
  first three widths, self-attention at 4x4 as in the example. DDPMScheduler(1000 steps, linear betas, epsilon).
  AdamW(lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8), batch 16, grad-norm clip 1, no flip,
  EMAModel(decay=0.9999, use_ema_warmup=True, inv_gamma=1, power=3/4) stepped after every optimiser step.
  Its learning rate: linear warmup over 500 steps, then cosine to 0 over the rest of the budget. The example's
  cosine spans a step count; a wall-clock budget has none, so the cosine's progress is measured in wall time.
  Samplers: "ddpm1000" (DDPMPipeline, its default 1000 steps) and "ddim100" (DDIMScheduler.from_config of the
  DDPM scheduler, DDIMPipeline with 100 steps, eta 0).
diffusers "matched": block_out_channels=(32, 64), layers_per_block=1, (Down, AttnDown) / (AttnUp, Up),
  norm_num_groups=8 (0.70 M parameters), batch 64, lr 1e-3; everything else as above.

mixture: GaussianMixture(n_components=K, covariance_type="full", random_state=0, reg_covar=1e-6, sklearn's
  default) on the flattened training images x / 16 in [0, 1]; samples round(clip(x, 0, 1) * 16), shuffled
  (sklearn returns them grouped by component). Its bits/dim: a K-component mixture fitted to the uniformly
  dequantized training images (x + u) / 17, u ~ U[0, 1) (a density on [0, 1)^64 needs dequantized data: a pixel
  that is always 0 has variance reg_covar in the x / 16 fit), scored exactly (closed-form log density) on the 297
  held-out images dequantized the same way (u seeded): bits/dim = -mean log p / (64 ln 2) with p the density in
  those [0, 1)^64 units. That fit's reg_covar (--density-reg-covar) is 1/(12 * 17^2) = 2.9e-4, the variance of
  the dequantization noise itself, chosen before looking at test numbers: with 1,500 images in 64 dimensions a
  50-component mixture has ~30 images per component and its covariances are singular but for reg_covar, so the
  held-out bits/dim hinges on it (50 components: 613 at 1e-6, 2.0 at 2.9e-4, -0.54 at 1e-3; 10 components:
  -1.15, -1.40, -1.41). "bits_per_dim_discrete" adds log2(17): the bound on -log2 P(x) / 64 of the 17-level
  images themselves (P = the density integrated over each pixel's bin of width 1/17, Jensen), the units of a
  discretized-decoder ELBO at 17 levels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # lucidrains' sampling loops print a bar per call

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from gaussdiff.atomic import write_atomically, write_text_atomically  # noqa: E402
from gaussdiff.data.digits import LEVELS, digits_split  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clock import Clock  # noqa: E402
from provenance import Provenance  # noqa: E402

MAX_LEVEL = LEVELS - 1  # 16: the digits' gray levels are 0..16
DEQUANT_VARIANCE = 1 / (12 * LEVELS**2)  # Var[u / 17], u ~ U[0, 1): the dequantization noise's, per pixel
PACKAGES = ["torch", "torchvision", "diffusers", "denoising-diffusion-pytorch", "ema-pytorch", "scikit-learn",
            "numpy"]

LUCIDRAINS = {
    "defaults": dict(dim=64, dim_mults=[1, 2, 4, 8], batch_size=16, lr=1e-4),
    "matched": dict(dim=32, dim_mults=[1, 2], batch_size=64, lr=1e-3),
}
DIFFUSERS = {
    "defaults": dict(block_out_channels=[128, 128, 256], layers_per_block=2, attention_level=1, norm_num_groups=32,
                     batch_size=16, lr=1e-4),
    "matched": dict(block_out_channels=[32, 64], layers_per_block=1, attention_level=1, norm_num_groups=8,
                    batch_size=64, lr=1e-3),
}
LUCIDRAINS_SAMPLERS = {"ddim250": 250, "ddim100": 100}  # GaussianDiffusion sampling_timesteps (< 1000: DDIM)
DIFFUSERS_SAMPLERS = {"ddpm1000": 1000, "ddim100": 100}


# ---------------------------------------------------------------------------------------------------- shared parts

def training_images() -> np.ndarray:
    """The 1,500 training digits, uint8 (1500, 1, 8, 8), values 0..16."""
    return digits_split("train")[0]


def to_levels(x01: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [0, 1] units -> uint8 gray levels round(clip(x, 0, 1) * 16)."""
    x = np.asarray(x01.cpu() if isinstance(x01, torch.Tensor) else x01, dtype=np.float64)
    return np.rint(np.clip(x, 0.0, 1.0) * MAX_LEVEL).astype(np.uint8)


def batch_indices(n: int, batch_size: int, seed: int):
    """Endless full batches of row indices: a seeded permutation per epoch, batches read across epoch ends."""
    rng = np.random.default_rng(seed)
    pending = np.empty(0, dtype=np.int64)
    while True:
        while len(pending) < batch_size:
            pending = np.concatenate([pending, rng.permutation(n)])
        yield torch.from_numpy(pending[:batch_size])
        pending = pending[batch_size:]


def train_for(budget: float, step) -> dict:
    """Call ``step(steps_done, elapsed_seconds) -> loss`` until ``budget`` wall seconds have passed (the clock is
    read before every step); the steps, seconds, steps/s, cpu/wall ratio and the mean of the last 100 losses."""
    clock, steps, losses = Clock(), 0, []
    while (elapsed := clock.seconds()) < budget:
        losses.append(step(steps, elapsed))
        steps += 1
    seconds, ratio = clock.seconds(), clock.ratio()
    return dict(steps=steps, train_seconds=round(seconds, 3), steps_per_s=round(steps / seconds, 4),
                cpu_wall_ratio=round(ratio, 3), final_loss=float(np.mean(losses[-100:])) if losses else None)


def timed_samples(out: Path, stem: str, draw) -> dict:
    """Call ``draw() -> uint8 levels (N, 1, 8, 8)``, time it, write OUT/STEM.npy; the row's entry for it."""
    clock = Clock()
    levels = draw()
    seconds = clock.seconds()
    path = out / f"{stem}.npy"
    write_atomically(path, lambda f: np.save(f, levels, allow_pickle=False))
    return dict(seconds=round(seconds, 3), file=path.name, n=int(len(levels)))


def append_row(args, row: dict) -> None:
    """Append one JSON line, stamped with the run's provenance, to OUT/results.jsonl (rewritten atomically) and echo
    it."""
    path = args.out / "results.jsonl"
    old = path.read_text() if path.exists() else ""
    line = json.dumps(args.provenance.stamp(row), sort_keys=True)
    write_text_atomically(path, old + line + "\n")
    print(line, flush=True)


def run_header(args, baseline: str) -> dict:
    """The fields every row starts with."""
    return dict(baseline=baseline, seed=args.seed, threads=args.threads, n_samples=args.samples)


def chosen(samplers: dict, wanted: list[str] | None) -> dict:
    """The samplers to run: all of the baseline's, or the subset named by --samplers."""
    return {k: v for k, v in samplers.items() if wanted is None or k in wanted}


def settings(table: dict, args, names: list[str]) -> dict:
    """The variant's values, each overridden by its command-line option where one was given."""
    values = dict(table[args.variant])
    for name in names:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return values


def n_params(module: torch.nn.Module) -> int:
    """The number of trainable numbers in ``module``."""
    return sum(p.numel() for p in module.parameters())


def training_fields(args, s: dict, net: torch.nn.Module) -> dict:
    """The row's fields on what was trained: variant, budget, parameters, batch size, lr and the network."""
    network = {k: v for k, v in s.items() if k not in ("batch_size", "lr")}
    return dict(variant=args.variant, budget_s=args.budget, params=n_params(net), batch_size=s["batch_size"],
                lr=s["lr"], network=network)


# ------------------------------------------------------------------------------------------------------ lucidrains

def lucidrains_trainer(diffusion, lr: float):
    """The optimiser step of lucidrains' Trainer with its defaults (Adam(lr, betas (0.9, 0.99)), grad-norm clip 1,
    ema_pytorch EMA(beta 0.995, update every 10)): (update(loss) -> its float, the EMA)."""
    from ema_pytorch import EMA

    opt = torch.optim.Adam(diffusion.parameters(), lr=lr, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10)

    def update(loss) -> float:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()
        return loss.item()

    return update, ema


def run_lucidrains(args) -> None:
    """Unet + GaussianDiffusion + ema_pytorch EMA in the loop of lucidrains' Trainer, then its samplers."""
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet

    s = settings(LUCIDRAINS, args, ["dim", "dim_mults", "batch_size", "lr"])
    samplers = chosen(LUCIDRAINS_SAMPLERS, args.samplers)
    torch.manual_seed(args.seed)
    unet = Unet(dim=s["dim"], dim_mults=tuple(s["dim_mults"]), channels=1, flash_attn=True)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=1000, sampling_timesteps=250)
    update, ema = lucidrains_trainer(diffusion, s["lr"])
    data01 = torch.from_numpy(training_images()).float() / MAX_LEVEL  # GaussianDiffusion maps [0, 1] to [-1, 1]
    batches = batch_indices(len(data01), s["batch_size"], args.seed)

    def step(steps, elapsed):
        return update(diffusion(data01[next(batches)]))

    row = run_header(args, "lucidrains") | training_fields(args, s, unet)
    row |= train_for(args.budget, step)
    ema_unet = ema.ema_model.model
    ema_unet.eval()

    def draw(k):
        def samples():
            sampler = GaussianDiffusion(ema_unet, image_size=8, timesteps=1000, sampling_timesteps=k)
            torch.manual_seed(args.seed)
            return to_levels(sampler.sample(batch_size=args.samples))  # sample() returns [0, 1]
        return samples

    row["sampling"] = {name: timed_samples(args.out, f"lucidrains-{args.variant}-{name}", draw(k))
                       for name, k in samplers.items()}
    append_row(args, row)


# ------------------------------------------------------------------------------------------------------- diffusers

def diffusers_unet(s: dict):
    """A UNet2DModel for 1x8x8 with the example's block layout: attention blocks at ``attention_level``."""
    from diffusers import UNet2DModel

    levels = len(s["block_out_channels"])
    down = ["AttnDownBlock2D" if i == s["attention_level"] else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if i == s["attention_level"] else "UpBlock2D" for i in reversed(range(levels))]
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=s["layers_per_block"],
                       block_out_channels=tuple(s["block_out_channels"]), down_block_types=tuple(down),
                       up_block_types=tuple(up), norm_num_groups=s["norm_num_groups"])


class WarmupCosine:
    """diffusers' get_cosine_schedule_with_warmup with the cosine's progress in wall time:
    lr = lr0 * step / warmup while step < warmup, then lr0 * (1 + cos(pi * p)) / 2 with
    p = (elapsed - t_warm) / (budget - t_warm), t_warm the wall time when the warmup ended."""

    def __init__(self, lr0: float, warmup: int, budget: float):
        self.lr0, self.warmup, self.budget, self.t_warm = lr0, warmup, budget, None

    def __call__(self, step: int, elapsed: float) -> float:
        if step < self.warmup:
            return self.lr0 * step / self.warmup
        if self.t_warm is None:
            self.t_warm = elapsed
        p = min(1.0, (elapsed - self.t_warm) / max(self.budget - self.t_warm, 1e-9))
        return self.lr0 * 0.5 * (1.0 + math.cos(math.pi * p))


def run_diffusers(args) -> None:
    """UNet2DModel + DDPMScheduler in the loop of diffusers' unconditional example, then DDPM and DDIM pipelines."""
    import torch.nn.functional as F
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler
    from diffusers.training_utils import EMAModel

    s = settings(DIFFUSERS, args, ["block_out_channels", "layers_per_block", "norm_num_groups", "batch_size", "lr"])
    samplers = chosen(DIFFUSERS_SAMPLERS, args.samplers)
    torch.manual_seed(args.seed)
    unet = diffusers_unet(s)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.AdamW(unet.parameters(), lr=s["lr"], betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_at = WarmupCosine(s["lr"], warmup=500, budget=args.budget)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    data = torch.from_numpy(training_images()).float() * (2 / MAX_LEVEL) - 1  # [-1, 1], the example's Normalize
    batches = batch_indices(len(data), s["batch_size"], args.seed)

    def step(steps, elapsed):
        for group in opt.param_groups:
            group["lr"] = lr_at(steps, elapsed)
        clean = data[next(batches)]
        noise = torch.randn_like(clean)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(clean),))
        loss = F.mse_loss(unet(scheduler.add_noise(clean, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.step(unet.parameters())
        return loss.item()

    row = run_header(args, "diffusers") | training_fields(args, s, unet)
    row |= train_for(args.budget, step)
    ema.copy_to(unet.parameters())
    unet.eval()

    def draw(name, k):
        def samples():
            pipe = (DDPMPipeline(unet=unet, scheduler=scheduler) if name == "ddpm1000" else
                    DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config)))
            pipe.set_progress_bar_config(disable=True)
            images = pipe(batch_size=args.samples, generator=torch.Generator().manual_seed(args.seed),
                          num_inference_steps=k, output_type="pt").images  # (N, 1, 8, 8) in [0, 1]
            return to_levels(images)
        return samples

    row["sampling"] = {name: timed_samples(args.out, f"diffusers-{args.variant}-{name}", draw(name, k))
                       for name, k in samplers.items()}
    append_row(args, row)


# --------------------------------------------------------------------------------------------------------- mixture

def dequantized(images: np.ndarray, seed: int) -> np.ndarray:
    """(x + u) / 17 with u ~ U[0, 1) per pixel: the 17-level images as points of [0, 1)^64, (N, 64) float64."""
    u = np.random.default_rng(seed).random(images.shape)
    return ((images.astype(np.float64) + u) / LEVELS).reshape(len(images), -1)


def fit_mixture(k: int, x: np.ndarray, reg_covar: float):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=k, covariance_type="full", random_state=0, reg_covar=reg_covar).fit(x)


def mixture_row(args, k: int, train: np.ndarray, test: np.ndarray) -> dict:
    """Fit, sample and score the K-component mixture; its result row."""
    clock = Clock()
    gm = fit_mixture(k, train.reshape(len(train), -1) / MAX_LEVEL, args.reg_covar)
    fit_seconds, ratio = clock.seconds(), clock.ratio()

    def draw():
        x, _ = gm.sample(args.samples)
        x = x[np.random.default_rng(args.seed).permutation(len(x))]  # sklearn groups samples by component
        return to_levels(x.reshape(-1, 1, 8, 8))

    sampling = {"sample": timed_samples(args.out, f"mixture-k{k}", draw)}
    dq = fit_mixture(k, dequantized(train, args.seed), args.density_reg_covar)
    bpd = -dq.score_samples(dequantized(test, args.seed + 1)).mean() / (test[0].size * math.log(2))
    return run_header(args, "mixture") | dict(
        variant=f"k{k}", components=k, reg_covar=args.reg_covar, density_reg_covar=args.density_reg_covar,
        steps=int(gm.n_iter_), converged=bool(gm.converged_),
        train_seconds=round(fit_seconds, 3), cpu_wall_ratio=round(ratio, 3), sampling=sampling,
        params=int(gm._n_parameters()), bits_per_dim=round(float(bpd), 4),
        bits_per_dim_discrete=round(float(bpd + math.log2(LEVELS)), 4), bits_per_dim_n_test=len(test),
        bits_per_dim_units="density on [0,1)^64 of (x + u) / 17, u ~ U[0,1) (seed+1), fitted on the dequantized "
                           "training images (seed); _discrete adds log2(17)")


def run_mixture(args) -> None:
    """The K-component full-covariance mixtures, one row each."""
    train, test = training_images(), digits_split("test")[0]
    with threadpool_limits(args.threads):
        for k in args.components:
            append_row(args, mixture_row(args, k, train, test))


# ------------------------------------------------------------------------------------------------------------- CLI

def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and the samples")
    common.add_argument("--samples", type=int, default=1000)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--threads", type=int, default=2)
    nets = argparse.ArgumentParser(add_help=False, parents=[common])
    nets.add_argument("--variant", choices=["defaults", "matched"], required=True)
    nets.add_argument("--budget", type=float, required=True, help="seconds of training wall time")
    nets.add_argument("--batch-size", type=int)
    nets.add_argument("--lr", type=float)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="baseline", required=True)
    lucid = sub.add_parser("lucidrains", parents=[nets], help=f"samplers {list(LUCIDRAINS_SAMPLERS)}")
    lucid.add_argument("--samplers", nargs="+", choices=list(LUCIDRAINS_SAMPLERS), help="default: all")
    lucid.add_argument("--dim", type=int)
    lucid.add_argument("--dim-mults", type=int, nargs="+")
    diff = sub.add_parser("diffusers", parents=[nets], help=f"samplers {list(DIFFUSERS_SAMPLERS)}")
    diff.add_argument("--samplers", nargs="+", choices=list(DIFFUSERS_SAMPLERS), help="default: all")
    diff.add_argument("--block-out-channels", type=int, nargs="+")
    diff.add_argument("--layers-per-block", type=int)
    diff.add_argument("--norm-num-groups", type=int)
    mix = sub.add_parser("mixture", parents=[common])
    mix.add_argument("--components", type=int, nargs="+", default=[10, 50])
    mix.add_argument("--reg-covar", type=float, default=1e-6, help="of the fit that draws the samples")
    mix.add_argument("--density-reg-covar", type=float, default=DEQUANT_VARIANCE,
                     help="of the fit to dequantized images that gives bits/dim (default 1/(12*17^2))")
    return p


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.provenance = Provenance(vars(args), PACKAGES)
    {"lucidrains": run_lucidrains, "diffusers": run_diffusers, "mixture": run_mixture}[args.baseline](args)


if __name__ == "__main__":
    main()
