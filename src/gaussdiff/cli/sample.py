"""``gaussdiff sample RUN``: draw samples with any registered sampler and write them in the data's units; of chosen
classes, with classifier-free guidance; or, with --init, edit given samples (SDEdit)."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..data.inputs import read_samples
from ..errors import InputError
from ..outputs import MAX_GRID, check_target, write_samples
from ..samplers import DEFAULT_STEPS, generate
from ..sampling import finite
from .common import HelpFormatter, positive
from .sampling_args import (
    add_class_arguments,
    add_model_arguments,
    add_output_arguments,
    add_sampler_arguments,
    prepare,
)

STRENGTH = 0.6  # SDEdit's default: enough noise to change details, too little to lose the input's layout


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model", formatter_class=HelpFormatter)
    add_model_arguments(p)
    p.add_argument("-n", "--num-samples", type=int, default=None,
                   help="number of samples (per class with several --class; per input with --init) (default: 1000, "
                        "with --init 1)")
    add_output_arguments(p, "where the samples go, in the data's own units: .npy or .csv for vectors; for images a "
                            f".png grid of at most {MAX_GRID} (one row per class with several --class), a .npy of the "
                            "data's levels (N, C, H, W), or a folder DIR/ of one PNG per sample; written as they are "
                            "drawn, batch by batch")
    add_sampler_arguments(p, f"min({DEFAULT_STEPS}, T)")
    add_class_arguments(p)
    p.add_argument("--init", default=None,
                   help="SDEdit: start from these samples (an image file, a folder or .npy of images, or a .npy/.csv "
                        "of rows) noised to the level --strength names, and denoise them")
    p.add_argument("--strength", type=float, default=None,
                   help="with --init: how far into the noise to go, in (0, 1]: the sampler runs the last "
                        f"round(strength x steps) steps of its grid (1: from pure noise) (default: {STRENGTH})")


def _plan(args, sampling) -> tuple[list, torch.Tensor | None, int, float]:
    """(the classes to draw, [None] for unconditional; the --init samples in model units or None; samples per class
    and input; the SDEdit strength)."""
    if args.strength is not None and args.init is None:
        raise InputError("--strength goes with --init (the samples to start from)")
    model = sampling.model
    init = None
    if args.init is not None and model.table is not None:
        raise InputError("--init starts from samples of a vector or image model; for a table, gaussdiff impute "
                         "completes rows with empty cells")
    if args.init is not None:
        init = model.transform.forward(read_samples(args.init, model.sample_shape, model.transform.levels)).float()
    n = args.num_samples if args.num_samples is not None else (1000 if init is None else 1)
    positive("-n/--num-samples", n)
    return sampling.labels or [None], init, n, STRENGTH if args.strength is None else args.strength


@torch.no_grad()
def run(args) -> None:
    sampling = prepare(args)
    model = sampling.model
    classes, init, n, strength = _plan(args, sampling)
    per_class = n if init is None else n * len(init)
    names = None if classes == [None] else [model.classes[c] for c in classes]
    target = check_target(args.out, model.sample_shape, model.transform.levels, per_class * len(classes), args.seed,
                          names, args.overwrite, model.header, model.row_text)
    starts = range(0, per_class, args.batch_size)
    steps = args.steps or min(DEFAULT_STEPS, model.schedule.T)
    if init is not None:
        steps = max(1, round(strength * steps))
    bar = tqdm(total=len(classes) * len(starts) * steps, desc="sample", unit="step", disable=not sys.stderr.isatty())

    def batches():
        for label in classes:  # each class draws rows 0..: the same noise, so a grid column compares the classes
            for start in starts:  # rows start.. of the set seeded by --seed: the same samples whatever the batch size
                size = min(args.batch_size, per_class - start)
                denoiser, options = sampling.denoiser(label, size)
                edit = {} if init is None else {"init": init[torch.arange(start, start + size) // n],
                                                "strength": strength}
                x = generate(denoiser, (size, *model.sample_shape), model.schedule, sampler=args.sampler,
                             steps=args.steps, spacing=args.spacing, seed=args.seed, start=start,
                             grid_options=sampling.grid_options, callback=lambda *_: bar.update(), **edit, **options)
                yield model.to_data_units(finite(x))

    with bar:
        write_samples(target, batches())
    what = "" if classes == [None] else f" of class {', '.join(names)}"
    print(f"wrote {target.total} samples{what} to {target.path}")
