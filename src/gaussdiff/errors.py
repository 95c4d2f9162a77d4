"""Errors the command line reports as one line on stderr with exit code 2 (never a traceback)."""


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
