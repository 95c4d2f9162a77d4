"""The flags of the commands that run a sampler on a saved model (``sample``, ``inpaint``): the sampler and its grid,
its options from the registry, x0 clipping, classes and guidance; :func:`prepare` checks them into a
:class:`gaussdiff.sampling.Plan`, as ``SavedModel.sample`` does its arguments."""

from __future__ import annotations

import argparse

import torch

from ..samplers import DEFAULT_SAMPLER, DEFAULT_SPACING, SAMPLERS, SPACINGS, options_by_name
from ..samplers.guidance import INTERVAL_UNITS
from ..sampling import DEFAULT_GUIDANCE, Plan, plan
from ..saved import load_model
from .common import positive


def add_model_arguments(p) -> None:
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--seed", type=int, default=0, help="sampling seed: sample i's noise depends on (seed, i) alone")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


def add_output_arguments(p, help: str) -> None:
    """--out and --overwrite."""
    p.add_argument("--out", required=True, help=help)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (a folder: the files of this run's names in it; its other files "
                        "stay); without it an existing one is refused")


def add_sampler_arguments(p, steps_default: str) -> None:
    """The sampler, its grid and its options, x0 clipping, the batch size."""
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"sampler: {', '.join(SAMPLERS)}")
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps (default: {steps_default})")
    p.add_argument("--spacing", default=DEFAULT_SPACING, help=f"timestep spacing: {', '.join(SPACINGS)}")
    p.add_argument("--rho", type=float, default=None, help="karras spacing: rho of the noise-level ramp (default 7)")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="karras and log_snr spacings: the first noise level (default: min(sigma at T, 80))")
    p.add_argument("--sigma-min", type=float, default=None,
                   help="karras and log_snr spacings: the last noise level before 0 (default: sigma at t = 1)")
    for name, (option, samplers) in options_by_name(SAMPLERS.values()).items():
        spec = SAMPLERS[samplers[0]]  # a flag not given is absent from args: the sampler's or the model's default
        default = option.model_default_help if option.model_default else spec.default(name)
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=option.type, default=argparse.SUPPRESS,
                       help=f"{', '.join(samplers)}: {option.help} (default: {default})")
    p.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                   help="clamp each x0 estimate to the data's range in model units (default: on for images, whose "
                        "range is known; vectors have none)")
    p.add_argument("--batch-size", type=int, default=10_000,
                   help="samples drawn at once; the samples do not depend on it, except an adaptive sampler's ("
                        f"{', '.join(name for name, spec in SAMPLERS.items() if spec.adaptive)}): its step sizes "
                        "follow the whole batch, so they agree to its tolerance")


def add_class_arguments(p) -> None:
    """--class and classifier-free guidance."""
    p.add_argument("--class", dest="classes", nargs="+", metavar="CLASS", default=None,
                   help="class-conditional models: the class(es) to draw, by name or index; several give one row of "
                        "-n samples per class")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale s in diffusers' convention: 1 = the conditional model, 0 = "
                        "the unconditional one, s > 1 pushes towards the class (Ho & Salimans' w = s - 1) at one extra "
                        f"batched network call per step (default: {DEFAULT_GUIDANCE:g}, the digits benchmark's choice: "
                        "there every s > 1 raised FD while s = 1 was already 99.5 %% accurate)")
    p.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="guide only where LO < noise level <= HI (Kynkaanniemi et al. 2024), elsewhere the "
                        "conditional model alone (default: everywhere)")
    p.add_argument("--guidance-interval-unit", choices=INTERVAL_UNITS, default="sigma",
                   help="the noise level of --guidance-interval: sigma = sqrt((1 - abar_t) / abar_t), or t")
    p.add_argument("--guidance-rescale", type=float, default=0.0,
                   help="phi in [0, 1]: rescale the guided x0 estimate towards the conditional one's std "
                        "(Lin et al. 2024)")


def prepare(args) -> Plan:
    """Check the numeric flags, set the threads, load the model and check the rest against it."""
    for name in ("steps", "batch_size", "threads"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.run, weights=args.weights)
    given = {name: getattr(args, name) for name in options_by_name(SAMPLERS.values()) if hasattr(args, name)}
    return plan(model, args.sampler, given, getattr(args, "classes", None), args.guidance, args.guidance_interval,
                args.guidance_interval_unit, args.guidance_rescale, args.clip_x0,
                {"rho": args.rho, "sigma_min": args.sigma_min, "sigma_max": args.sigma_max})
