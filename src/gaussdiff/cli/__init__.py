"""Command line: ``gaussdiff COMMAND``. Thin: each command is a module here with ``add_parser(sub)`` and
``run(args)``; it parses, calls the layers above, and every user error becomes one line on stderr with
exit code 2, an allocation failure included (naming the options that size the work)."""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings

import torch

from .. import __version__
from ..data import check_seed
from ..errors import GaussdiffError, Interrupted
from ..train.distributed import launched_rank
from . import elbo, export, impute, inpaint, nll, plot, sample, score, sweep, train

MODULES = {"train": train, "sample": sample, "inpaint": inpaint, "impute": impute, "plot": plot, "sweep": sweep,
           "nll": nll, "elbo": elbo, "score": score, "export": export}
COMMANDS = {name: module.run for name, module in MODULES.items()}
# What to do when a command runs out of memory: the options that size its work.
MEMORY_ADVICE = {
    "train": "choose a smaller --n-data, --batch-size, --width, --depth, --emb-dim, --num-train-timesteps or --network",
    "sample": "choose a smaller -n/--num-samples or --batch-size",
    "inpaint": "choose a smaller --batch-size or -n/--num-samples", "plot": "choose a smaller -n/--num-samples",
    "impute": "choose a smaller --batch-size or --draws",
    "sweep": "choose a smaller -n/--num-samples", "nll": "choose a smaller -n/--num-samples or --batch-size",
    "elbo": "choose a smaller -n/--num-points or --batch-size", "score": "score fewer samples at once",
    "export": "the model does not fit this machine's memory"}
# Under torchrun, how long a rank other than 0 waits, after a user error, for rank 0 to report it (see _report).
PEER_REPORT_WAIT_S = 60.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gaussdiff", description="Gaussian diffusion models: train, sample, plot.")
    p.add_argument("--version", action="version", version=f"gaussdiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in MODULES.values():
        module.add_parser(sub)
    return p


def _report(command: str, message: str, wait_for_rank_0: bool = False) -> None:
    """One line on stderr, from rank 0 alone under torchrun. With ``wait_for_rank_0`` (an error every rank meets alike:
    a bad value, file or size) another rank waits first: torchrun ends every process as soon as one fails, so a rank
    that exited first could stop rank 0 before it reported; rank 0's exit ends this one instead. A rank still alive
    after PEER_REPORT_WAIT_S met the error alone, and reports it itself."""
    rank, world = launched_rank()
    if rank == 0:
        print(f"gaussdiff {command}: {message}", file=sys.stderr)
    elif wait_for_rank_0:
        time.sleep(PEER_REPORT_WAIT_S)
        print(f"gaussdiff {command} (rank {rank} of {world}): {message}", file=sys.stderr)


def out_of_memory(error: BaseException) -> str | None:
    """The one-line description of an allocation failure: a MemoryError (numpy's), torch's OutOfMemoryError (CUDA)
    or its CPU allocator's RuntimeError; None for any other error."""
    text = str(error)
    if not (isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "DefaultCPUAllocator" in text
            or "not enough memory" in text):
        return None
    size = re.search(r"allocate ([\d.]+) ?(bytes|[KMGTP]i?B)", text)
    return "out of memory" + (f" (an allocation of {size[1]} {size[2]} failed)" if size else "")


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    formatwarning = warnings.formatwarning  # warnings become one line too
    warnings.formatwarning = lambda message, *rest: f"gaussdiff {args.command}: warning: {message}\n"
    try:
        if getattr(args, "seed", None) is not None:  # every command's --seed (train's only when given)
            check_seed(args.seed)
        COMMANDS[args.command](args)
    except GaussdiffError as e:
        _report(args.command, f"error: {e}", wait_for_rank_0=True)
        return 2
    except Interrupted as e:
        _report(args.command, str(e))
        return 128 + e.signum
    except KeyboardInterrupt:
        _report(args.command, "interrupted")
        return 130
    except (MemoryError, RuntimeError) as e:
        if (what := out_of_memory(e)) is None:
            raise
        _report(args.command, f"error: {what}; {MEMORY_ADVICE[args.command]}", wait_for_rank_0=True)
        return 2
    finally:
        warnings.formatwarning = formatwarning
    return 0


__all__ = ["COMMANDS", "main", "parser"]
