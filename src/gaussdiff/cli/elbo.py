"""``gaussdiff elbo RUN --data DATA``: the variational bound of a trained model on data, term by term
(a table in nats and bits/dim, ``elbo.json`` and ``elbo.png``, the terms against t)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .. import plots
from ..atomic import write_text_atomically
from ..bound import VARIANCE_TYPES
from ..data import output_folder
from ..errors import InputError
from ..likelihood import Bound, check_levels, elbo, elbo_importance
from ..losses import ImportanceSampler
from ..saved import SavedModel, load_model
from .common import (DATA_HELP, POINTS_HELP, SEED_HELP, HelpFormatter, evaluation_points, positive,
                     say_what_is_evaluated)

ESTIMATES = ("exact", "importance")
PILOT = 10  # points whose exact terms fit the importance sampler: its history of 10 losses per t


def add_parser(sub) -> None:
    p = sub.add_parser("elbo", help="the variational bound in nats and bits/dim, term by term",
                       formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("-n", "--num-points", type=int, default=1000, help=POINTS_HELP)
    p.add_argument("--levels", type=int, default=None,
                   help="discrete data, integers 0..levels-1 in the data's units (256: 8-bit, 17: scikit-learn's "
                        "digits): discretized decoder; default: the data's own levels for images, else continuous "
                        "data with the Gaussian density decoder")
    p.add_argument("--estimate", default="exact",
                   help="exact (all T terms: T network evaluations per point) or importance (--draws per point)")
    p.add_argument("--draws", type=int, default=16,
                   help=f"importance: t draws per point, from p_t fitted on the exact terms of {PILOT} points")
    p.add_argument("--variance-type", default=None,
                   help=f"reverse variance: {', '.join(VARIANCE_TYPES)} (default: the model's own)")
    p.add_argument("--weights", default="ema", help="ema or online")
    p.add_argument("--seed", type=int, default=0, help=f"seed of t and the noise, and {SEED_HELP}")
    p.add_argument("--batch-size", type=int, default=8192, help="(point, t) pairs per network call")
    p.add_argument("--out", default=None, help="folder for elbo.json and elbo.png (default RUN/elbo)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")


def decoder_range(model: SavedModel, x: torch.Tensor, levels: int | None):
    """(lo, hi) of the discretized decoder in model units, per feature: the levels 0 and levels - 1 of discrete
    data (checked to be integers 0..levels-1, as ``gaussdiff nll`` takes them); (-1, 1) (unused) for continuous data."""
    if levels is None:
        return -1.0, 1.0
    check_levels(x, levels)
    lo, hi = (model.transform.forward(torch.full((1, *x.shape[1:]), v, dtype=torch.float64))[0]
              for v in (0.0, levels - 1.0))
    return lo, hi


def format_table(bound: Bound) -> str:
    rows = [("total (bound on -log p)", "total"), ("L_T (prior)", "L_T"), ("sum L_{t-1}, t = 2..T", "sum L_{t-1}"),
            ("L_0 (decoder)", "L_0")]
    summary = bound.summary()
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"{'term':<26}{'nats':>12}{'± SE':>10}{'bits/dim':>12}{'± SE':>10}"]
    for label, key in rows:
        s = summary[key]
        lines.append(f"{label:<26}{fmt(s['nats']):>12}{fmt(s['nats_se']):>10}{fmt(s['bits_per_dim']):>12}"
                     f"{fmt(s['bits_per_dim_se']):>10}")
    return "\n".join(lines)


def _finite_or_none(values) -> list:
    return [v if math.isfinite(v) else None for v in values]


def checked_inputs(args):
    """The model, the data in their own units, their description and the decoder's range, every option checked
    before any work."""
    for flag, value in (("-n/--num-points", args.num_points), ("--draws", args.draws),
                        ("--batch-size", args.batch_size), ("--threads", args.threads)):
        positive(flag, value)
    if args.estimate not in ESTIMATES:
        raise InputError(f"unknown estimate {args.estimate!r}; known: {', '.join(ESTIMATES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.run, weights=args.weights)
    if model.schedule.T < 2:
        raise InputError(f"{args.run} has a chain of T = 1 step: its bound has no L_(t-1) terms and the reverse "
                         "variance at t = 1 has no t = 2 to take its value from; elbo needs T >= 2")
    if args.variance_type is not None:
        model = dataclasses.replace(model, variance_type=args.variance_type)
    x, description = evaluation_points(args.data, args.run, args.num_points, args.seed, model, "-n/--num-points")
    if args.levels is None:
        args.levels = model.transform.levels  # images: the discretized decoder at the data's own levels
    return model, x, description, decoder_range(model, x, args.levels)


def compute(model: SavedModel, y: torch.Tensor, x: torch.Tensor, lo, hi, args) -> tuple[Bound, Bound, int]:
    """(the bound of the points y in model units (x in the data's), the Bound whose per-t terms are drawn, the pilot's
    points), with a
    progress bar: the exact estimate is its own curve; the importance one fits its proposal on PILOT points' terms."""
    network_model, dtype = model.reverse_model(), next(model.network.parameters()).dtype
    reverse = lambda x_t, t: network_model(x_t.to(dtype), t)  # noqa: E731 (the bound in float64, the net in its dtype)
    options = dict(levels=args.levels, lo=lo, hi=hi, batch_size=args.batch_size,
                   generator=torch.Generator().manual_seed(args.seed))
    ldj = log_det_jacobian(model, args.levels, x)  # a number, or one per point
    T = model.schedule.T
    pilot_n = min(PILOT, len(y)) if args.estimate == "importance" else 0
    evaluations = pilot_n * T + len(y) * args.draws if pilot_n else len(y) * T
    bar = tqdm(total=evaluations, desc="elbo", unit="eval", disable=not sys.stderr.isatty())
    if args.estimate == "exact":
        bound = curve = elbo(reverse, y, model.schedule, callback=lambda t, terms: bar.update(len(t)),
                             log_det_jacobian=ldj, **options)
    else:
        sampler = ImportanceSampler(T)
        curve = elbo(reverse, y[:pilot_n], model.schedule,
                     callback=lambda t, terms: (sampler.update(t, terms), bar.update(len(t))),
                     log_det_jacobian=ldj if isinstance(ldj, float) else ldj[:pilot_n], **options)
        bound = elbo_importance(reverse, y, model.schedule, sampler, args.draws,
                                callback=lambda t, terms: bar.update(len(t)), log_det_jacobian=ldj, **options)
    bar.close()
    return bound, curve, pilot_n


def log_det_jacobian(model: SavedModel, levels: int | None, x: torch.Tensor):
    """What L_0 takes off for the data's own units: the transform's log-Jacobian at each point x (data units) for a
    density, 0 for a probability."""
    return 0.0 if levels else model.transform.log_abs_det_jacobian(x)


def report(args, model: SavedModel, x: torch.Tensor, description: str, bound: Bound, curve: Bound, pilot_n: int,
           out: Path) -> None:
    """Print the table and write elbo.json and elbo.png into ``out``."""
    T = model.schedule.T
    kind = (f"discrete data on {args.levels} levels: a bound on a probability" if args.levels else
            "continuous data: a bound on a density in the data's own units (log-Jacobian of the transform in L_0)")
    print(f"variational bound of {args.run} on {description}; {kind}")
    print(f"{args.estimate}: {bound.evaluations} network evaluations per point"
          + (f" (+ {pilot_n} x {T} for the proposal)" if pilot_n else "")
          + f"; variance_type {model.variance_type}; T = {T}")
    print(format_table(bound))
    result = {"run": str(args.run), "data": description, "points": bound.prior.numel(), "dim": bound.dim,
              "estimate": args.estimate, "evaluations_per_point": bound.evaluations, "T": T,
              "variance_type": model.variance_type, "levels": args.levels,
              "log_det_jacobian": float(torch.as_tensor(log_det_jacobian(model, args.levels, x)).mean()),
              "terms": bound.summary(),
              "per_t_nats": _finite_or_none(curve.per_t.tolist()), "per_t_points": curve.prior.numel()}
    write_text_atomically(out / "elbo.json", json.dumps(result, indent=2))
    picture = plots.elbo_terms(curve.per_t, out / "elbo.png",
                               title=f"bound terms vs t ({curve.prior.numel()} points, {model.variance_type})")
    print(f"wrote {out / 'elbo.json'}\nwrote {picture}")


@torch.no_grad()
def run(args) -> None:
    model, x, description, (lo, hi) = checked_inputs(args)
    out = output_folder(args.out or Path(args.run) / "elbo")  # before the work: one line, nothing lost
    say_what_is_evaluated(description, model)
    bound, curve, pilot_n = compute(model, model.transform.forward(x), x, lo, hi, args)
    report(args, model, x, description, bound, curve, pilot_n, out)
