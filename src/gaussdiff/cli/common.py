"""What every command shares: the help formatter and checks of plain numeric flags."""

from __future__ import annotations

import argparse

from ..errors import InputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show (None or a required option)."""

    def _get_help_string(self, action):
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise InputError(f"{name} must be positive, got {value}")
