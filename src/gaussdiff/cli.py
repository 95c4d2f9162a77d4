"""Command line: ``gaussdiff train | sample | plot``. Thin: it parses, calls the layers above, and turns
every user error into one line on stderr with exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch
from tqdm import tqdm

from .data import BUILTIN, check_output_path, save_array
from .errors import GaussdiffError, InputError
from .report import make_pictures
from .samplers import generate, get_sampler
from .saved import load_model
from .train import TrainConfig, train

TRAIN_HELP = {
    "data": f"built-in data set ({', '.join(BUILTIN)}) or a .npy / .csv file of shape (N, D)",
    "out": "run folder to create",
    "n_data": "points drawn from a built-in data set",
    "seed": "seed of data, initialisation, t and noise",
    "steps": "training step budget (5000 when no budget is given)",
    "time_budget": "training wall-time budget in seconds (with --steps, whichever ends first)",
    "batch_size": "minibatch size",
    "lr": "peak learning rate of AdamW",
    "lr_schedule": "cosine (decay to 0 over the budget) or constant",
    "warmup_steps": "linear learning-rate warm-up steps",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "clip the gradient norm to this value",
    "ema_decay": "maximum EMA decay (warmed up by ema-pytorch)",
    "num_train_timesteps": "T, the length of the forward chain",
    "beta_schedule": "linear, scaled_linear, squaredcos_cap_v2, sigmoid or sigmoid_alpha_bar",
    "beta_start": "first beta of linear-type schedules",
    "beta_end": "last beta of linear-type schedules",
    "prediction_type": "what the network predicts: epsilon, sample or v_prediction",
    "width": "MLP width",
    "depth": "number of residual MLP blocks",
    "emb_dim": "size of the time embedding",
    "threads": "torch CPU threads (default: all cores)",
    "log_every": "steps between lines of metrics.jsonl",
    "checkpoint_every": "steps between checkpoints",
    "keep_checkpoints": "checkpoints kept",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (None or a required option)."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


SAMPLER_OPTIONS = {"ddpm": ("variance",), "ddim": ("eta",), "dpmpp_2m": ()}  # which flags each sampler takes

FIELD_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model and write a run folder",
                       formatter_class=HelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        kind = FIELD_TYPES[str(f.type)]
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=TRAIN_HELP[f.name])
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-pictures", action="store_true", help="skip the pictures at the end")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model",
                       formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("-n", "--num-samples", type=int, default=1000, help="number of samples")
    p.add_argument("--out", required=True, help="output file, .npy or .csv, in the data's own units")
    p.add_argument("--sampler", default="ddpm", help=f"sampler: {', '.join(SAMPLER_OPTIONS)}")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: T)")
    p.add_argument("--spacing", default="trailing", help="timestep spacing: linspace, leading or trailing")
    p.add_argument("--variance", default="beta_tilde", help="ddpm's reverse variance: beta_tilde or beta")
    p.add_argument("--eta", type=float, default=0.0, help="ddim's noise scale (0: deterministic, 1: ddpm)")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=10_000, help="samples drawn at once")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw the pictures of a run", formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("-n", "--num-samples", type=int, default=2000, help="points per picture")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--out", default=None, help="folder for the pictures (default RUN/pictures)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gaussdiff", description="Gaussian diffusion models: train, sample, plot.")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_sample(sub)
    _add_plot(sub)
    return p


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be positive, got {value}")


def cmd_train(args) -> None:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    run = train(cfg, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(f"trained: {run}/model")
    if not args.no_pictures and load_model(run).transform.dim >= 2:
        for path in make_pictures(run):
            print(f"picture: {path}")


@torch.no_grad()
def cmd_sample(args) -> None:
    _positive("-n/--num-samples", args.num_samples)
    _positive("--steps", args.steps)
    _positive("--batch-size", args.batch_size)
    _positive("--threads", args.threads)
    out = check_output_path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.run, weights=args.weights)
    get_sampler(args.sampler)  # an unknown name: one line listing the known ones
    options = {name: getattr(args, name) for name in SAMPLER_OPTIONS[args.sampler]}
    generator = torch.Generator().manual_seed(args.seed)
    starts = range(0, args.num_samples, args.batch_size)
    bar = tqdm(total=len(starts) * (args.steps or model.schedule.T), desc="sample", unit="step",
               disable=not sys.stderr.isatty())
    chunks = []
    for start in starts:
        size = min(args.batch_size, args.num_samples - start)
        chunks.append(generate(model.denoiser(), (size, model.transform.dim), model.schedule, sampler=args.sampler,
                               steps=args.steps, spacing=args.spacing, generator=generator,
                               callback=lambda t, x: bar.update(), **options))
    bar.close()
    save_array(out, model.transform.inverse(torch.cat(chunks).double()))  # float64: large offsets keep their digits
    print(f"wrote {args.num_samples} samples to {out}")


def cmd_plot(args) -> None:
    _positive("-n/--num-samples", args.num_samples)
    for path in make_pictures(args.run, n=args.num_samples, seed=args.seed, out=args.out):
        print(f"picture: {path}")


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "plot": cmd_plot}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except GaussdiffError as e:
        print(f"gaussdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gaussdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
