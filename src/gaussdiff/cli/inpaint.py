"""``gaussdiff inpaint RUN --image x.png --mask m.png --out filled.png``: complete samples whose known values a mask
marks (1 / white = KNOWN; diffusers' masks mean the opposite) by replacement of x0 or x_t, or by RePaint."""

from __future__ import annotations

import sys
import warnings

import torch
from tqdm import tqdm

from ..data.inputs import read_mask, read_samples
from ..errors import InputError
from ..outputs import check_target, write_samples
from ..samplers.known import DEFAULT_METHOD, METHODS, default_steps, known_nfe, sample_known
from ..samplers.repaint import JUMP_LENGTH, JUMP_N_SAMPLE
from ..sampling import finite
from .common import HelpFormatter, positive
from .sampling_args import (
    add_class_arguments,
    add_model_arguments,
    add_output_arguments,
    add_sampler_arguments,
    prepare,
)

METHOD_HELP = ("replace_x0: every x0 estimate takes the known values (any sampler); replace_xt: after each step "
               "the known values, noised to the step's level, replace x_t's (any sampler but pf_ode); repaint: "
               "replace_xt on ddpm, walking back up the chain every --jump-length steps (Lugmayr et al. 2022)")


def add_parser(sub) -> None:
    p = sub.add_parser("inpaint", help="complete samples of which a mask marks the known values",
                       formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("--image", required=True,
                   help="what to complete, in the data's units: an image file, a folder or .npy of images (the "
                        "model's levels), or a .npy/.csv of rows; its unknown values are ignored")
    p.add_argument("--mask", required=True,
                   help="1 = KNOWN, 0 = to fill: a black (fill) and white (known) image at the model's size, or a "
                        ".npy/.csv of 0 and 1 in the sample's shape, one for all or one per sample")
    add_output_arguments(p, "as for gaussdiff sample: .png grid, .npy, folder DIR/, .csv")
    p.add_argument("-n", "--num-samples", type=int, default=1, help="completions per input (one row each in a grid)")
    add_known_value_arguments(p)
    add_class_arguments(p)


def add_known_value_arguments(p, method: str | None = DEFAULT_METHOD, default_text: str | None = None,
                              steps_text: str = "250 for repaint (the paper's), else min(100, T)") -> None:
    """--method (default ``method``, shown as ``default_text`` if given), the sampler's options (--steps' default
    shown as ``steps_text``) and RePaint's jumps: how a command with known values draws the rest."""
    p.add_argument("--method", choices=METHODS, default=method,
                   help=METHOD_HELP if default_text is None else f"{METHOD_HELP} (default: {default_text})")
    add_sampler_arguments(p, steps_text)
    p.add_argument("--jump-length", type=int, default=JUMP_LENGTH, help="repaint: steps walked back up per jump (j)")
    p.add_argument("--jump-count", type=int, default=JUMP_N_SAMPLE,
                   help="repaint: passes over each jump's stretch of the chain (r; 1: no resampling)")


def _inputs(args, model) -> tuple[torch.Tensor, torch.Tensor]:
    """(the inputs in data units (N, *shape), the mask broadcast to them), checked."""
    if model.table is not None:
        raise InputError(f"{args.run} was trained on a table: fill its rows' empty cells with gaussdiff impute RUN "
                         "--data rows.csv --out filled.csv")
    x = read_samples(args.image, model.sample_shape, model.transform.levels)
    mask = read_mask(args.mask, model.sample_shape)
    if len(mask) not in (1, len(x)):
        raise InputError(f"{args.mask} holds {len(mask)} masks for {len(x)} inputs: give one, or one per input")
    mask = mask.expand(len(x), *mask.shape[1:]).expand_as(x)
    if mask.all():
        raise InputError(f"{args.mask} marks every value as known: there is nothing to fill")
    if not mask.any():
        warnings.warn(f"{args.mask} marks no value as known: this is plain sampling", stacklevel=2)
    return x, mask


@torch.no_grad()
def run(args) -> None:
    positive("-n/--num-samples", args.num_samples)
    positive("--jump-length", args.jump_length)
    positive("--jump-count", args.jump_count)
    sampling = prepare(args)
    model = sampling.model
    x, mask = _inputs(args, model)
    rows = len(x) * args.num_samples  # each input's completions together
    classes = sampling.labels or [None]
    # a grid row per class (several --class), else per input (several completions each)
    groups = [model.classes[c] for c in classes] if len(classes) > 1 else \
        [f"input{i}" for i in range(len(x))] if args.num_samples > 1 else None
    target = check_target(args.out, model.sample_shape, model.transform.levels, rows * len(classes), args.seed,
                          groups, args.overwrite, model.header, model.row_text)
    steps = args.steps or default_steps(args.method, model.schedule.T)
    nfe = known_nfe(args.method, args.sampler, steps, args.jump_length, args.jump_count)
    print(f"{args.method} on {args.sampler}, {steps} steps" +
          (f", jump length {args.jump_length}, jump count {args.jump_count}" if args.method == "repaint" else "") +
          (f": {nfe} network calls per sample" if nfe else "") +
          (" (x2 where guidance runs)" if sampling.guidance and sampling.guidance.scale != 1 else ""), file=sys.stderr)
    x_known = model.transform.forward(x).float()
    bar = tqdm(desc="inpaint", unit="move", disable=not sys.stderr.isatty())

    def batches():
        for label in classes:
            for start in range(0, rows, args.batch_size):
                part = torch.arange(start, min(start + args.batch_size, rows)) // args.num_samples  # their inputs
                denoiser, options = sampling.denoiser(label, len(part))
                y = sample_known(denoiser, x_known[part], mask[part], model.schedule, method=args.method,
                                 sampler=args.sampler, steps=steps, spacing=args.spacing,
                                 grid_options=sampling.grid_options, seed=args.seed, start=start,
                                 jump_length=args.jump_length, jump_n_sample=args.jump_count,
                                 callback=lambda *_: bar.update(), **options)
                y = model.to_data_units(finite(y))
                yield torch.where(mask[part], x[part].to(y.dtype), y)  # the known values, bit-exact

    with bar:
        write_samples(target, batches())
    print(f"wrote {target.total} completion(s) of {len(x)} input(s) to {target.path}")
