"""Command line: ``gaussdiff COMMAND``. Thin: each command is a module here with ``add_parser(sub)`` and
``run(args)``; it parses, calls the layers above, and every user error becomes one line on stderr with
exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .. import __version__
from ..errors import GaussdiffError, Interrupted
from . import elbo, export, inpaint, nll, plot, sample, score, sweep, train

MODULES = {"train": train, "sample": sample, "inpaint": inpaint, "plot": plot, "sweep": sweep, "nll": nll,
           "elbo": elbo, "score": score, "export": export}
COMMANDS = {name: module.run for name, module in MODULES.items()}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gaussdiff", description="Gaussian diffusion models: train, sample, plot.")
    p.add_argument("--version", action="version", version=f"gaussdiff {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for module in MODULES.values():
        module.add_parser(sub)
    return p


def _report(command: str, message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one report for all processes
        print(f"gaussdiff {command}: {message}", file=sys.stderr)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    formatwarning = warnings.formatwarning  # warnings become one line too
    warnings.formatwarning = lambda message, *rest: f"gaussdiff {args.command}: warning: {message}\n"
    try:
        COMMANDS[args.command](args)
    except GaussdiffError as e:
        _report(args.command, f"error: {e}")
        return 2
    except Interrupted as e:
        _report(args.command, str(e))
        return 128 + e.signum
    except KeyboardInterrupt:
        _report(args.command, "interrupted")
        return 130
    finally:
        warnings.formatwarning = formatwarning
    return 0


__all__ = ["COMMANDS", "main", "parser"]
