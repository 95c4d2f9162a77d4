"""What a sampler declares beside its function: its name, its options and its traits (adaptive, needs a reverse
model, applies ``project``, its NFE for K steps).

Each sampler module ends with ``SPECS``, a tuple of :class:`SamplerSpec`; ``samplers/__init__`` collects them into
``SAMPLERS``, the one registry that ``generate``, ``gaussdiff sample`` (its flags and help) and ``gaussdiff sweep``
read. An option's default is the function's own keyword default (read from its signature, so it is written once);
``model_default`` names the property of a saved model that replaces it when sampling that model (ddpm's variance:
the model's own), which ``gaussdiff.sampling`` resolves for every command.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import InputError


@dataclass(frozen=True)
class Option:
    """A keyword option of a sampler, its default the function's own; the command line offers it as ``--name``
    (underscores as dashes)."""

    name: str
    type: type  # what the command line parses the flag's text into
    help: str
    model_default: str | None = None  # a saved model's property giving the default when sampling that model
    model_default_help: str | None = None  # how --help names that default


def one_call_per_step(steps: int) -> int:
    """The NFE of a sampler that calls the denoiser once per step."""
    return steps


CONTRACT = ("generator", "project", "callback")  # the keyword-only parameters every sampler takes, each default None


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: ``fn(denoiser, x_T, schedule, grid, *, generator=None, project=None, callback=None,
    **options) -> x_0`` (the contract of ``gaussdiff.samplers``).

    ``adaptive``: an error tolerance, not the steps, sets its number of denoiser calls (the grid only places
    output times); it also couples the rows of a batch, whose common step sizes follow the whole batch's error.
    ``reverse_model_when``: option values for which the sampler needs a reverse model (x_t, t) -> (x0_hat, log_var)
    instead of a denoiser. ``projects``: whether it applies ``project`` after each step (an adaptive solver cannot
    between its output times, and refuses one). ``nfe``: the denoiser calls it makes for K steps (None: set by a
    tolerance instead)."""

    name: str
    fn: Callable
    options: tuple[Option, ...] = ()
    adaptive: bool = False
    reverse_model_when: Mapping[str, object] = field(default_factory=dict)
    projects: bool = True
    nfe: Callable[[int], int] | None = one_call_per_step

    def __post_init__(self):
        params = inspect.signature(self.fn).parameters
        for name in CONTRACT:
            if name not in params or params[name].kind is not inspect.Parameter.KEYWORD_ONLY \
                    or params[name].default is not None:
                raise TypeError(f"sampler {self.name}: {self.fn.__name__} lacks the keyword-only {name}=None "
                                "of the sampler contract")
        for name in [o.name for o in self.options] + list(self.reverse_model_when):
            if name not in params or params[name].kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"sampler {self.name}: {name!r} is not a keyword-only parameter of {self.fn.__name__}")

    def default(self, name: str):
        """The function's own default of option ``name``."""
        return inspect.signature(self.fn).parameters[name].default

    def check_options(self, options: Mapping) -> None:
        """InputError naming the first option the sampler does not take."""
        known = [o.name for o in self.options]
        for name in options:
            if name not in known:
                raise InputError(f"sampler {self.name!r} has no option {name!r} "
                                 f"({'its options: ' + ', '.join(known) if known else 'it takes none'})")

    def needs_reverse_model(self, options: Mapping) -> bool:
        """Whether, with ``options`` (an option not given: the function's default), the sampler must be given a
        reverse model."""
        return any(options.get(name, self.default(name)) == value for name, value in self.reverse_model_when.items())


def options_by_name(specs) -> dict[str, tuple[Option, list[str]]]:
    """Each option name with its declaration and the samplers that take it (the command line's flags); one name
    declared twice must mean the same: same type and same default."""
    found: dict[str, tuple[Option, list[str], object]] = {}
    for spec in specs:
        for option in spec.options:
            key = (option.type, spec.default(option.name), option.model_default)
            first = found.setdefault(option.name, (option, [], key))
            if first[2] != key:
                raise TypeError(f"option {option.name!r} of {spec.name} differs from that of {first[1][0]}")
            first[1].append(spec.name)
    return {name: (option, names) for name, (option, names, _) in found.items()}
