"""What every command shares: the help formatter, the help of -n, and checks of plain numeric flags."""

from __future__ import annotations

import argparse

from ..errors import InputError

# What -n means wherever a command evaluates data (``data.load_points``).
POINTS_HELP = ("points: N fresh ones of a built-in set drawn under --seed, or N rows of a file drawn without "
               "replacement under --seed (all its rows when N >= their number)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (None or a required option)."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be positive, got {value}")


def check_data_shape(x, model, run) -> None:
    """InputError unless the evaluated data x (N, *shape) have the model's sample shape."""
    if tuple(x.shape[1:]) != tuple(model.sample_shape):
        raise InputError(f"the data have samples of shape {list(x.shape[1:])}; the model at {run} expects "
                         f"{list(model.sample_shape)}")
