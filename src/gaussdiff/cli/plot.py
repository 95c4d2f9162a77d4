"""``gaussdiff plot RUN``: the pictures of a run."""

from __future__ import annotations

from ..errors import check_memory
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
    # n samples over n data points, of 2 or more float32 values each (images: a fixed grid, whatever -n)
    check_memory("-n/--num-samples", 2 * 8 * args.num_samples, f"-n {args.num_samples}: the points")
    for path in make_pictures(args.run, n=args.num_samples, seed=args.seed, out=args.out):
        print(f"picture: {path}")
