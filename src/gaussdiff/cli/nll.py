"""``gaussdiff nll RUN --data DATA``: the exact negative log-likelihood of data by the probability-flow ODE."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .. import plots
from ..atomic import write_text_atomically
from ..data import output_folder
from ..likelihood import check_levels, check_options, mean_se, ode_nll
from ..samplers.ode import ADAPTIVE_METHODS, check_solver
from ..saved import load_model
from .common import DATA_HELP, POINTS_HELP, SEED_HELP, HelpFormatter, evaluation_points, positive, say_what_is_evaluated


EXACT_TRACE_MAX_DIM = 64  # above it the exact divergence's D backward passes per call cost more than they tell
HUTCHINSON_PROBES = 2  # the fewest that give a standard error


def add_parser(sub) -> None:
    p = sub.add_parser("nll", help="exact negative log-likelihood of data by the probability-flow ODE",
                       formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("-n", "--num-samples", type=int, default=1000, help=POINTS_HELP)
    p.add_argument("--levels", type=int, default=None,
                   help="discrete data: integers 0..L-1, dequantized by U(-1/2, 1/2) (8-bit images: 256; default: "
                        "the data's own levels for images, else continuous data)")
    p.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance of the ODE solver")
    p.add_argument("--atol", type=float, default=1e-5, help="absolute tolerance of the ODE solver")
    p.add_argument("--method", default="dopri5", help=f"adaptive ODE solver: {', '.join(ADAPTIVE_METHODS)}")
    p.add_argument("--sigma-min", type=float, default=1e-3, help="noise level where the ODE starts (t near 0)")
    p.add_argument("--hutchinson", type=int, default=None,
                   help="0: exact divergence (D backward passes per call); K >= 2: Hutchinson with K probes "
                        f"(default: exact up to D = {EXACT_TRACE_MAX_DIM}, else {HUTCHINSON_PROBES} probes)")
    p.add_argument("--batch-size", type=int, default=500, help="samples per ODE solve")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--seed", type=int, default=0, help=f"seed of dequantization and probes, and {SEED_HELP}")
    p.add_argument("--out", default=None, help="folder for nll.json and nll.png (default RUN/nll)")


def checked_inputs(args):
    """The model, the data in its own units and their description, every option checked before any work."""
    positive("-n/--num-samples", args.num_samples)
    positive("--batch-size", args.batch_size)
    check_solver(args.rtol, args.atol, args.method)
    model = load_model(args.run, weights=args.weights)
    check_options(args.hutchinson or 0, "rademacher", args.sigma_min, model.schedule)
    x, description = evaluation_points(args.data, args.run, args.num_samples, args.seed, model, "-n/--num-samples")
    if args.levels is None:
        args.levels = model.transform.levels  # images: dequantize the data's own levels
    if args.hutchinson is None:
        args.hutchinson = 0 if x[0].numel() <= EXACT_TRACE_MAX_DIM else HUTCHINSON_PROBES
    if args.levels is not None:
        check_levels(x, args.levels)
    return model, x, description


def solve(model, x: torch.Tensor, args) -> tuple[list, float, float]:
    """ode_nll batch by batch with a progress bar: (results, wall seconds, cpu seconds)."""
    net_denoiser, dtype = model.denoiser(), next(model.network.parameters()).dtype

    def denoiser(x_t, t):  # the ODE runs in float64, the network in its own dtype
        return net_denoiser(x_t.to(dtype), t).to(x_t.dtype)

    options = dict(levels=args.levels, rtol=args.rtol, atol=args.atol, method=args.method, sigma_min=args.sigma_min,
                   probes=args.hutchinson)
    generator = torch.Generator().manual_seed(args.seed)
    bar = tqdm(total=len(x), desc="nll", unit="sample", disable=not sys.stderr.isatty())
    results, wall, cpu = [], time.perf_counter(), time.process_time()
    for start in range(0, len(x), args.batch_size):
        results.append(ode_nll(denoiser, x[start:start + args.batch_size], model.schedule, transform=model.transform,
                               generator=generator, **options))
        bar.update(len(results[-1].nll))
        bar.set_postfix(nfe=results[-1].nfe)
    bar.close()
    return results, time.perf_counter() - wall, time.process_time() - cpu


def make_report(args, description: str, results: list, wall: float, cpu: float) -> dict:
    """What nll.json holds: the settings, mean ± SE in nats and bits/dim, the cost, the per-sample values."""
    nll, probe_se = torch.cat([r.nll for r in results]), torch.cat([r.probe_se for r in results])
    dim, n = results[0].dim, len(nll)
    return {
        "run": str(args.run), "data": description, "n": n, "dim": dim,
        "divergence": "exact trace" if args.hutchinson == 0 else f"Hutchinson, {args.hutchinson} Rademacher probes",
        "dequantization": (f"uniform: integers 0..{args.levels - 1} + U(-1/2, 1/2); the NLL bounds -log P(bin) "
                           "from above in expectation" if args.levels else None),
        "solver": {"method": args.method, "rtol": args.rtol, "atol": args.atol, "sigma_min": args.sigma_min},
        "nll_nats": mean_se(nll), "bits_per_dim": mean_se(nll / (dim * math.log(2))),
        "nfe_per_batch": [r.nfe for r in results], "nfe_total": sum(r.nfe for r in results),
        "seconds": wall, "seconds_per_sample": wall / n, "threads": torch.get_num_threads(),
        "cpu_wall_ratio": cpu / wall,
        "per_sample": {"nll_nats": nll.tolist(), "probe_se_nats": probe_se.tolist()},
    }


def run(args) -> None:
    model, x, description = checked_inputs(args)
    out = output_folder(args.out or Path(args.run) / "nll")  # before the solve: one line, no work lost
    say_what_is_evaluated(description, model)
    report = make_report(args, description, *solve(model, x, args))
    write_text_atomically(out / "nll.json", json.dumps(report, indent=2))
    picture = plots.nll_histogram(report["per_sample"]["nll_nats"], report["dim"], out / "nll.png",
                                  title=f"{model.data_name}: ODE NLL of {description}")
    print(table(report))
    print(f"wrote {out / 'nll.json'} and {picture}")


def table(report: dict) -> str:
    """Mean ± SE in nats and bits/dim, then the cost."""
    def row(name, stat):
        se = "n/a" if stat["se"] is None else f"{stat['se']:.4f}"
        return f"{name:12}{stat['mean']:12.4f}{se:>10}"

    lines = [f"ODE negative log-likelihood of {report['data']} ({report['n']} x {report['dim']} values), "
             f"{report['divergence']}",
             f"{'':12}{'mean':>12}{'± SE':>10}",
             row("nats", report["nll_nats"]),
             row("bits/dim", report["bits_per_dim"]),
             f"NFE {report['nfe_total']} ({len(report['nfe_per_batch'])} batches); {report['seconds']:.2f} s, "
             f"{1e3 * report['seconds_per_sample']:.3g} ms per sample, {report['threads']} threads"]
    if report["dequantization"]:
        lines.append(f"dequantization: {report['dequantization']}")
    return "\n".join(lines)
