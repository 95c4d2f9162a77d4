"""``gaussdiff sweep RUN [--data DATA]``: SW2 to held-out data versus NFE for every sampler (table, csv, json, plot)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ..data import BUILTIN, output_folder
from ..errors import InputError, check_memory, check_positive
from ..samplers import SAMPLERS
from ..saved import load_model
from ..sweep import (DEFAULT_NFE, FLOOR_DRAWS, check_request, format_table, held_out, run_held_out, sweep,
                     write_results)
from .common import HelpFormatter, positive, run_config, say_what_is_evaluated, training_rows_note


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="distance to held-out data vs NFE for each sampler", formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("--data", default=None,
                   help=f"held-out data: a built-in name ({', '.join(BUILTIN)}; drawn afresh) or a .npy / .csv file "
                        "in the data's own units; default: the run's held-out data (a built-in set: fresh draws under "
                        "other seeds than training's; a file: the rows the run held out, if it did)")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated sampler names")
    p.add_argument("--nfe", default=",".join(map(str, DEFAULT_NFE)),
                   help="comma-separated target NFEs (denoiser calls), each in [1, T]")
    p.add_argument("-n", "--num-samples", type=int, default=2000,
                   help="samples per run and points per true set: a built-in set draws each set afresh; a file gives "
                        "a reference of N rows drawn under --seed and floor sets of N of its other rows, and N is "
                        "lowered to a third of its rows where it has fewer than 3N (said in the output)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of x_T and of the true sets (a built-in set's held-out draws follow the run's own seed)")
    p.add_argument("--spacing", default="trailing", help="timestep spacing of every sampler's grid")
    p.add_argument("--within", type=float, default=2.0, help="'good enough': SW2 within this factor of the floor")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--out", default=None, help="folder for sweep.csv, sweep.json, sweep.png (default RUN/sweep)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


def _ints(flag: str, text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} must be comma-separated integers, got {text!r}") from None


def run(args) -> None:
    positive("-n/--num-samples", args.num_samples)
    positive("--threads", args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    check_positive("--within", args.within)
    model = load_model(args.run, weights=args.weights)
    if len(model.sample_shape) != 1:
        raise InputError(f"sweep measures the sliced W2 distance of vectors; {args.run} makes images "
                         f"{list(model.sample_shape)}: compare samplers with gaussdiff sample --sampler ... and "
                         "gaussdiff score")
    samplers, nfes = check_request(model.schedule, [s.strip() for s in args.samplers.split(",")],
                                   _ints("--nfe", args.nfe), args.spacing)
    # the reference and FLOOR_DRAWS fresh sets of n points each, in float64
    check_memory("-n/--num-samples", 8 * (FLOOR_DRAWS + 1) * args.num_samples * math.prod(model.sample_shape),
                 f"-n {args.num_samples}: the held-out sets")
    if args.data is not None:
        held = held_out(args.data, args.num_samples, args.seed, model.sample_shape)
        held = replace(held, description=held.description + training_rows_note(args.data, args.run))
    else:
        held = run_held_out(run_config(args.run), args.num_samples, args.seed, model.sample_shape, str(args.run))
    out = output_folder(args.out or Path(args.run) / "sweep", "the sweep folder")
    say_what_is_evaluated(held.description, model)
    if held.note:
        print(f"note: {held.note}")
    result = sweep(model, held.reference, held.fresh, samplers, nfes, seed=args.seed, spacing=args.spacing,
                   progress=sys.stderr.isatty())
    result = replace(result, data=held.description + (f"; {held.note}" if held.note else ""))
    print(format_table(result, args.within))
    for path in write_results(result, out):
        print(f"wrote {path}")
