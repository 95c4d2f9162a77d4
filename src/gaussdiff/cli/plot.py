"""``gaussdiff plot RUN``: the pictures of a run."""

from __future__ import annotations

from ..report import make_pictures
from .common import HelpFormatter, positive


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw the pictures of a run", formatter_class=HelpFormatter)
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("-n", "--num-samples", type=int, default=2000, help="points per picture")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--out", default=None, help="folder for the pictures (default RUN/pictures)")


def run(args) -> None:
    positive("-n/--num-samples", args.num_samples)
    for path in make_pictures(args.run, n=args.num_samples, seed=args.seed, out=args.out):
        print(f"picture: {path}")
