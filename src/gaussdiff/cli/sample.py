"""``gaussdiff sample RUN``: draw samples with any registered sampler and write them in the data's units."""

from __future__ import annotations

import argparse
import sys

import torch
from tqdm import tqdm

from ..errors import InputError
from ..outputs import check_target, write_samples
from ..samplers import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, SAMPLERS, SPACINGS, generate, options_by_name
from ..samplers.guidance import clip_x0
from ..sampling import sampler_inputs
from ..saved import load_model
from .common import HelpFormatter, positive


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model", formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("-n", "--num-samples", type=int, default=1000, help="number of samples")
    p.add_argument("--out", required=True,
                   help="where the samples go, in the data's own units: .npy or .csv for vectors; for images a .png "
                        "grid, a .npy of the data's levels (N, C, H, W), or a folder DIR/ of one PNG per sample")
    p.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                   help="clamp each x0 estimate to the data's range in model units (default: on for images, whose "
                        "range is known; vectors have none)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"sampler: {', '.join(SAMPLERS)}")
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps (default: min({DEFAULT_STEPS}, T))")
    p.add_argument("--spacing", default=DEFAULT_SPACING, help=f"timestep spacing: {', '.join(SPACINGS)}")
    p.add_argument("--rho", type=float, default=None, help="karras spacing: rho of the noise-level ramp (default 7)")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="karras and log_snr spacings: the first noise level (default: min(sigma at T, 80))")
    p.add_argument("--sigma-min", type=float, default=None,
                   help="karras and log_snr spacings: the last noise level before 0 (default: sigma at t = 1)")
    _add_sampler_options(p)
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: sample i's noise depends on (seed, i) alone")
    p.add_argument("--batch-size", type=int, default=10_000,
                   help="samples drawn at once; the samples do not depend on it, except an adaptive sampler's ("
                        f"{', '.join(name for name, spec in SAMPLERS.items() if spec.adaptive)}): its step sizes "
                        "follow the whole batch, so they agree to its tolerance")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


def _add_sampler_options(p) -> None:
    """One flag per option of the registered samplers; a flag not given is absent from args (the sampler's default,
    or the model's own where the option declares one)."""
    for name, (option, samplers) in options_by_name(SAMPLERS.values()).items():
        spec = SAMPLERS[samplers[0]]
        default = option.model_default_help if option.model_default else spec.default(name)
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=option.type, default=argparse.SUPPRESS,
                       help=f"{', '.join(samplers)}: {option.help} (default: {default})")


@torch.no_grad()
def run(args) -> None:
    positive("-n/--num-samples", args.num_samples)
    positive("--steps", args.steps)
    positive("--batch-size", args.batch_size)
    positive("--threads", args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.run, weights=args.weights)
    out, kind = check_target(args.out, model.sample_shape)
    given = {name: getattr(args, name) for name in options_by_name(SAMPLERS.values()) if hasattr(args, name)}
    denoiser, options = sampler_inputs(model, args.sampler, given)  # an unknown sampler or option: one line
    box = model.transform.model_range
    if args.clip_x0 and box is None:
        raise InputError("--clip-x0 needs data with a known range (images); this model's data have none")
    if args.clip_x0 is not False and box is not None:
        denoiser = clip_x0(denoiser, *box)
    starts = range(0, args.num_samples, args.batch_size)
    bar = tqdm(total=len(starts) * (args.steps or min(DEFAULT_STEPS, model.schedule.T)), desc="sample", unit="step",
               disable=not sys.stderr.isatty())
    chunks = []
    for start in starts:  # rows start.. of the set seeded by --seed: the same samples whatever the batch size
        size = min(args.batch_size, args.num_samples - start)
        chunks.append(generate(denoiser, (size, *model.transform.sample_shape), model.schedule, sampler=args.sampler,
                               steps=args.steps, spacing=args.spacing, seed=args.seed, start=start,
                               grid_options={"rho": args.rho, "sigma_min": args.sigma_min,
                                             "sigma_max": args.sigma_max},
                               callback=lambda t, x: bar.update(), **options))
    bar.close()
    write_samples(out, kind, model.to_data_units(torch.cat(chunks)), model.transform.levels, args.seed)
    print(f"wrote {args.num_samples} samples to {out}")
