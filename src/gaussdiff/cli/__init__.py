"""Command line: ``gaussdiff COMMAND``. Thin: each command is a module here with ``add_parser(sub)`` and
``run(args)``; it parses, calls the layers above, and every user error becomes one line on stderr with
exit code 2."""

from __future__ import annotations

import argparse
import sys

from ..errors import GaussdiffError
from . import plot, sample, train
from .sample import SAMPLER_OPTIONS

MODULES = {"train": train, "sample": sample, "plot": plot}
COMMANDS = {name: module.run for name, module in MODULES.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gaussdiff", description="Gaussian diffusion models: train, sample, plot.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in MODULES.values():
        module.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except GaussdiffError as e:
        print(f"gaussdiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gaussdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


__all__ = ["COMMANDS", "SAMPLER_OPTIONS", "main", "parser"]
