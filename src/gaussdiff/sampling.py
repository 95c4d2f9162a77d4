"""A saved model meets a registered sampler (layer 5+): the one place where a sampler's options are checked, its
model-dependent defaults filled in (ddpm's variance: the model's own) and the model handed to it as a denoiser or,
where the options need one, as a reverse model (x0_hat, log_var). ``gaussdiff sample`` and ``gaussdiff sweep``
both go through it."""

from __future__ import annotations

from collections.abc import Mapping

from .param import Denoiser, ReverseModel
from .samplers import get_sampler
from .saved import SavedModel


def sampler_inputs(model: SavedModel, sampler: str, options: Mapping | None = None) -> tuple[Denoiser | ReverseModel,
                                                                                              dict]:
    """(what sampler ``sampler`` calls, its options) for ``model``: the options given, each option the sampler
    declares with a model default filled from the model where not given (the others keep the function's own
    default), and the model's reverse model where those options need one, else its denoiser."""
    spec = get_sampler(sampler)
    options = dict(options or {})
    spec.check_options(options)
    for option in spec.options:
        if options.get(option.name) is None and option.model_default is not None:
            options[option.name] = getattr(model, option.model_default)
    return (model.reverse_model() if spec.needs_reverse_model(options) else model.denoiser()), options
