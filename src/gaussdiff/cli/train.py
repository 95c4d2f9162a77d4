"""``gaussdiff train``: one flag per field of TrainConfig, then the pictures of the run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..data import BUILTIN, IMAGE_BUILTIN
from ..report import make_pictures, pictures_apply
from ..saved import load_model
from ..errors import InputError
from ..train import TrainConfig, resolve, train
from ..train.config import DATA_DEFAULTS, TABLE_DEFAULTS, TYPES
from ..train.distributed import launched_rank
from .common import HelpFormatter

TRAIN_HELP = {
    "data": f"built-in data set ({', '.join([*BUILTIN, *IMAGE_BUILTIN])}), a .npy / .csv file of rows (N, D), or "
            "images: a folder of PNG/JPEG files (a sub-folder per class) or a .npy (N, H, W[, C]) / (N, C, H, W)",
    "out": "run folder to create (default: runs/ and the data's name, e.g. runs/moons, runs/iris for iris.csv)",
    "n_data": "points drawn from a built-in data set",
    "seed": "seed of data, initialisation, t and noise",
    "steps": "training step budget (5000 when no budget is given)",
    "time_budget": "training wall-time budget in seconds, summed over resumes (with --steps, whichever ends first)",
    "batch_size": "global minibatch size, split over processes and accumulation steps",
    "grad_accum": "micro-batches per optimiser step (gradient accumulation)",
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
    "loss_type": "simple (L_simple), hybrid (L_simple + 0.001 L_vlb; needs learned_range) or vlb (the bound)",
    "variance_type": "reverse-step variance: fixed_small (beta-tilde), fixed_large (beta) or learned_range",
    "t_sampling": "uniform, or importance (t drawn by the loss's second moment, Improved DDPM)",
    "loss_weighting": "none, or min_snr: weight L_simple by min(SNR_t, gamma) on the x0 scale (Hang et al. 2023)",
    "min_snr_gamma": "gamma of --loss-weighting min_snr",
    "network": "network kind (auto, mlp, unet, diffusers_unet2d) or a JSON object of its config, e.g. "
               "'{\"kind\": \"unet\", \"preset\": \"digits\", \"base_channels\": 64}' (auto: the MLP for vectors, "
               "the UNet for images)",
    "width": "MLP width",
    "depth": "number of residual MLP blocks",
    "emb_dim": "size of the MLP's time embedding",
    "image_size": "image folders: centre-crop and resize to this size (default: the images' own, if they share one)",
    "channels": "image folders: 1 (gray) or 3 (RGB) (default: 3 if any image has colour)",
    "pixel_range": "an image .npy of floats: the values that map to the darkest and brightest of 256 levels",
    "class_conditional": "train on each sample's class (digits, an image folder's sub-folders, a built-in 2-D set's "
                         "components, a table's --label-column), so that sample --class can ask for one",
    "label_dropout": "class-conditional: the share of training labels replaced by the null label, which trains the "
                     "unconditional model too (needed by --guidance; 0: none)",
    "label_column": "class-conditional tables: the column of classes (a header name or a 0-based number); it is "
                    "not modelled",
    "schema": "tables (a .csv with a header line): a JSON file of column kinds (continuous, integer, positive, "
              "bounded, constant, categorical) overriding those inferred; each run writes its own as RUN/columns.json",
    "holdout": "data files: the share of rows (or images) kept out of training for the held-out loss, chosen by "
               "--seed (None: 0.1; 0: train on every row); built-in sets are held out by a fresh draw, digits by "
               "its test split",
    "eval_every": "steps between held-out losses (the EMA model's training loss on held-out data and on training "
                  "rows, at the same fixed t and noise) in metrics.jsonl and on the progress bar; also at the end "
                  "(0: none)",
    "eval_size": "draws each held-out loss averages (a set of fewer samples is cycled through at other t and noise)",
    "early_stopping": "stop once this many held-out losses in a row are above the lowest so far, and keep the "
                      "weights of the lowest as the model (None: 10 for tables with held-out rows, else 0; 0: off)",
    "em_rounds": "a table with missing cells: each time early stopping would end training, fill the gaps with the "
                 "model's own imputations (the mean of 50 draws), the network's input there, and train on from the "
                 "best weights, this many times (None: 2 for tables with early stopping, else 0; 0: off)",
    "impute_check_cells": "a table with missing cells and held-out rows: at the end, hide this many of the held-out "
                          "rows' observed cells one at a time and impute them by x_t replacement and by RePaint; the "
                          "lower error becomes gaussdiff impute's default --method (0: no check, replace_xt)",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda or mps",
    "precision": "fp32, bf16 (autocast) or fp16 (autocast + gradient scaler, CUDA only)",
    "compile": "torch.compile the network",
    "threads": "torch CPU threads: a number, or auto (time a few steps at 1 thread and at all the cores this process "
               "may use, keep the faster; a resumed run keeps the count it recorded)",
    "preview_every": "steps between grids of samples in RUN/pictures (0: none)",
    "log_every": "steps between lines of metrics.jsonl",
    "checkpoint_every": "steps between checkpoints",
    "keep_checkpoints": "checkpoints kept",
    "tensorboard": "also log to RUN/tensorboard (pip install 'gaussdiff[tensorboard]')",
}

def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model and write a run folder (or continue one with --resume)",
                       formatter_class=HelpFormatter,
                       description="Options come from, later ones winning: the defaults, the run being resumed, "
                                   "--scheduler-config FILE, --config FILE, the flags.")
    p.add_argument("--config", default=None, help="TOML or YAML file of options (keys as below, with underscores)")
    p.add_argument("--scheduler-config", metavar="FILE", default=None,
                   help="a diffusers scheduler_config.json: takes its schedule, prediction_type and variance_type")
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run folder RUN exactly from its last readable checkpoint")
    # Defaults are SUPPRESSed so that only the flags a user gives override the config file or the resumed run.
    for f in dataclasses.fields(TrainConfig):
        default = data_default(f.name) if f.name in DATA_DEFAULTS else f.default
        name, text = f"--{f.name.replace('_', '-')}", f"{TRAIN_HELP[f.name]} (default: {default})"
        if str(f.type) == "bool":
            p.add_argument(name, action="store_true", default=argparse.SUPPRESS, help=TRAIN_HELP[f.name])
        elif str(f.type) == "list | None":
            p.add_argument(name, type=float, nargs=2, metavar=("LO", "HI"), default=argparse.SUPPRESS,
                           help=f"{TRAIN_HELP[f.name]} (default: {f.default})")
        elif str(f.type) == "dict":
            p.add_argument(name, type=network_section, default=argparse.SUPPRESS,
                           help=f"{TRAIN_HELP[f.name]} (default: auto)")
        elif f.name == "threads":
            p.add_argument(name, type=thread_count, metavar="auto|N", default=argparse.SUPPRESS, help=text)
        else:
            p.add_argument(name, type=TYPES[str(f.type)][0], default=argparse.SUPPRESS, help=text)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-pictures", action="store_true", help="skip the pictures at the end")


def data_default(name: str) -> str:
    vectors, images = DATA_DEFAULTS[name]
    table = f"{TABLE_DEFAULTS[name]} for tables, " if name in TABLE_DEFAULTS else ""
    return f"{table}{vectors} for {'other ' if table else ''}vectors, {images} for images"


def thread_count(text: str) -> int | str:
    """--threads auto or --threads N (its range is checked with the other options)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be auto or a whole number") from None


def network_section(text: str) -> dict:
    """--network KIND or --network '{"kind": ..., ...}' as the network section of the config."""
    if not text.lstrip().startswith("{"):
        return {"kind": text}
    try:
        section = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object: {e}") from None
    if not isinstance(section, dict):
        raise argparse.ArgumentTypeError("must be a network kind or a JSON object")
    return section


def run(args) -> None:
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    cfg = resolve(flags, args.config, args.resume, args.scheduler_config)
    if args.resume and args.overwrite:
        raise InputError("--resume continues a run and --overwrite replaces it: give one of them")
    folder = train(cfg, overwrite=args.overwrite, resume=args.resume is not None, progress=sys.stderr.isatty())
    if launched_rank()[0] != 0:
        return
    print(f"trained: {folder}/model")
    if not args.no_pictures and pictures_apply(load_model(folder)):
        for path in make_pictures(folder):
            print(f"picture: {path}")
