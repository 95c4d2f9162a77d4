"""Errors the command line reports as one line on stderr with exit code 2 (never a traceback), and the checks of
plain numeric arguments that raise them."""

import math
import numbers


class GaussdiffError(Exception):
    """Base of the errors a user can act on."""


class InputError(GaussdiffError, ValueError):
    """A user-caused problem (bad value, file, shape), with a message that names it and what is accepted."""


class TrainingError(GaussdiffError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""


class Interrupted(Exception):
    """A signal stopped the work after it saved its state; the command line exits with 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int; InputError unless it is an integer (not a bool) in [low, high] (no upper end: None)."""
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if is_int and low <= value and (high is None or value <= high):
        return int(value)
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    raise InputError(f"{name} must be {allowed}, got {value!r}")


def check_positive(name: str, value) -> float:
    """``value`` as a float; InputError unless it is a finite real number > 0 (not a bool)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    raise InputError(f"{name} must be a finite number > 0, got {value!r}")
