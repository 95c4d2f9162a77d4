"""Errors the command line reports as one line on stderr with exit code 2 (never a traceback), and the checks of
plain numeric arguments that raise them."""

import math
import numbers
import os


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


def one_line(error: Exception) -> str:
    """The text of an exception (or its type's name) with whitespace runs collapsed, for a one-line message."""
    return " ".join(str(error).split()) or type(error).__name__


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


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the system does not say, e.g. Windows)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(option: str, nbytes: float, what: str) -> None:
    """InputError naming ``option`` when ``what`` takes more than this machine's physical memory: ``nbytes`` is a
    lower bound of what it holds at once, so the check refuses only work that cannot fit, before any of it is done
    (instead of an allocation failure, or the kernel's out-of-memory killer, halfway through)."""
    total = machine_memory()
    if total is not None and nbytes > total:
        raise InputError(f"{what} would take at least {_gigabytes(nbytes)} of memory, more than this machine's "
                         f"{_gigabytes(total)}: choose a smaller {option}")


def _gigabytes(nbytes: float) -> str:
    return f"{nbytes / 1e9:,.3g} GB" if nbytes < 1e12 else f"{nbytes / 1e9:,.0f} GB"
