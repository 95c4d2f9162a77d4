"""``gaussdiff plot RUN``: the pictures of a run."""

from __future__ import annotations

from ..errors import check_memory
from ..report import PICTURE_THREADS, make_pictures
from .common import HelpFormatter, positive


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="draw the pictures of a run", formatter_class=HelpFormatter,
                       description="Draw samples.png (a pair plot of the first columns beyond two; images: a grid of "
                                   "64, whatever -n), chain.png and loss.png. The samples are those `gaussdiff sample "
                                   "RUN -n N --seed SEED` writes, with its default sampler.")
    p.add_argument("run", help="run folder or model folder")
    p.add_argument("-n", "--num-samples", type=int, default=2000, help="points per picture")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--out", default=None, help="folder for the pictures (default RUN/pictures)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch CPU threads (default: {PICTURE_THREADS}; more can be slower on a busy machine)")


def run(args) -> None:
    positive("-n/--num-samples", args.num_samples)
    positive("--threads", args.threads)
    # n samples over n data points, of 2 or more float32 values each (images: a fixed grid, whatever -n)
    check_memory("-n/--num-samples", 2 * 8 * args.num_samples, f"-n {args.num_samples}: the points")
    for path in make_pictures(args.run, n=args.num_samples, seed=args.seed, out=args.out, threads=args.threads):
        print(f"picture: {path}")
