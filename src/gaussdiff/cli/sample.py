"""``gaussdiff sample RUN``: draw samples with any registered sampler and write them in the data's units."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from ..data import check_output_path, save_array
from ..samplers import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, SPACINGS, generate, get_sampler
from ..saved import load_model
from .common import HelpFormatter, positive

SAMPLER_OPTIONS = {"ddpm": ("variance",), "ddim": ("eta",), "dpmpp_2m": (), "dpmpp_3m": (), "euler": (),
                   "heun": (), "pf_ode": ("rtol", "atol")}  # which flags each sampler takes


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained model", formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("-n", "--num-samples", type=int, default=1000, help="number of samples")
    p.add_argument("--out", required=True, help="output file, .npy or .csv, in the data's own units")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"sampler: {', '.join(SAMPLER_OPTIONS)}")
    p.add_argument("--steps", type=int, default=None, help=f"sampling steps (default: min({DEFAULT_STEPS}, T))")
    p.add_argument("--spacing", default=DEFAULT_SPACING, help=f"timestep spacing: {', '.join(SPACINGS)}")
    p.add_argument("--rho", type=float, default=None, help="karras spacing: rho of the noise-level ramp (default 7)")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="karras and log_snr spacings: the first noise level (default: min(sigma at T, 80))")
    p.add_argument("--sigma-min", type=float, default=None,
                   help="karras and log_snr spacings: the last noise level before 0 (default: sigma at t = 1)")
    p.add_argument("--variance", default=None,
                   help="ddpm's reverse variance: beta_tilde, beta or learned (default: the model's variance_type)")
    p.add_argument("--eta", type=float, default=0.0, help="ddim's noise scale (0: deterministic, 1: ddpm)")
    p.add_argument("--rtol", type=float, default=1e-5, help="pf_ode's relative tolerance (adaptive dopri5)")
    p.add_argument("--atol", type=float, default=1e-5, help="pf_ode's absolute tolerance (adaptive dopri5)")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--batch-size", type=int, default=10_000, help="samples drawn at once")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


@torch.no_grad()
def run(args) -> None:
    positive("-n/--num-samples", args.num_samples)
    positive("--steps", args.steps)
    positive("--batch-size", args.batch_size)
    positive("--threads", args.threads)
    out = check_output_path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.run, weights=args.weights)
    get_sampler(args.sampler)  # an unknown name: one line listing the known ones
    options = {name: getattr(args, name) for name in SAMPLER_OPTIONS[args.sampler]}
    if "variance" in options and options["variance"] is None:
        options["variance"] = model.ddpm_variance
    denoiser = model.sampling_denoiser(options.get("variance"))
    generator = torch.Generator().manual_seed(args.seed)
    starts = range(0, args.num_samples, args.batch_size)
    bar = tqdm(total=len(starts) * (args.steps or min(DEFAULT_STEPS, model.schedule.T)), desc="sample", unit="step",
               disable=not sys.stderr.isatty())
    chunks = []
    for start in starts:
        size = min(args.batch_size, args.num_samples - start)
        chunks.append(generate(denoiser, (size, model.transform.dim), model.schedule, sampler=args.sampler,
                               steps=args.steps, spacing=args.spacing, generator=generator,
                               grid_options={"rho": args.rho, "sigma_min": args.sigma_min,
                                             "sigma_max": args.sigma_max},
                               callback=lambda t, x: bar.update(), **options))
    bar.close()
    save_array(out, model.transform.inverse(torch.cat(chunks).double()))  # float64: large offsets keep their digits
    print(f"wrote {args.num_samples} samples to {out}")
