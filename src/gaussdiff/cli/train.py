"""``gaussdiff train``: one flag per field of TrainConfig, then the pictures of the run."""

from __future__ import annotations

import dataclasses
import sys

from ..data import BUILTIN
from ..report import make_pictures
from ..saved import load_model
from ..train import TrainConfig, train
from .common import HelpFormatter

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

FIELD_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model and write a run folder", formatter_class=HelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        kind = FIELD_TYPES[str(f.type)]
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=TRAIN_HELP[f.name])
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-pictures", action="store_true", help="skip the pictures at the end")


def run(args) -> None:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    folder = train(cfg, overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(f"trained: {folder}/model")
    if not args.no_pictures and load_model(folder).transform.dim >= 2:
        for path in make_pictures(folder):
            print(f"picture: {path}")
