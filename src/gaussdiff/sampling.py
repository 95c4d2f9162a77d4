"""A saved model meets a registered sampler (layer 5+): the one place where a sampler's options are checked, its
model-dependent defaults filled in (ddpm's variance: the model's own), the classes and the guidance checked against
the model, and the model handed to the sampler as a denoiser or, where the options need one, as a reverse model
(x0_hat, log_var). ``gaussdiff sample``, ``gaussdiff inpaint`` and ``gaussdiff sweep`` go through it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .errors import InputError
from .param import Denoiser, ReverseModel
from .samplers import get_sampler
from .samplers.guidance import check_guidance, classifier_free
from .saved import SavedModel

# The digits benchmark's choice (benchmarks/RESULTS.md, "Class-conditional digits"): the scale with the lowest FD at
# >= 95 % classifier accuracy. There the conditional model alone (s = 1) already reached 99.5 % and every s > 1 raised
# FD-digits (2.49 at s = 1, 3.47 at 1.5, 5.38 at 2, 9.85 at 3), so guidance is opt-in: --guidance s.
DEFAULT_GUIDANCE = 1.0


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance settings (samplers.guidance): scale s (1: none), interval (lo, hi] in ``unit``
    (sigma or t; None: everywhere), rescale phi."""

    scale: float = 1.0
    interval: tuple[float, float] | None = None
    unit: str = "sigma"
    rescale: float = 0.0

    def __post_init__(self):
        check_guidance(self.scale, self.interval, self.unit, self.rescale)


def check_classes(model: SavedModel, classes: list[str] | None, guidance: Guidance | None) -> list[int] | None:
    """The labels of the classes asked for (names or indices), checked against the model with the guidance: classes
    need a class-conditional model, guidance needs classes and a model trained with label dropout."""
    if guidance is not None and classes is None:
        raise InputError("guidance steers towards a class: give --class too" if model.classes else
                         "this model is not class-conditional (trained without --class-conditional): it takes no "
                         "--guidance")
    if classes is None:
        return None
    labels = [model.class_index(c) for c in classes]
    if guidance is not None and guidance.scale != 1 and not model.conditioning["label_dropout"]:
        raise InputError("guidance needs the unconditional model, and this one was trained without label dropout "
                         "(--label-dropout 0): use --guidance 1")
    return labels


def default_guidance(model: SavedModel, classes: list[str] | None) -> Guidance | None:
    """The guidance ``gaussdiff sample --class`` uses when none is given: DEFAULT_GUIDANCE where the model has an
    unconditional branch, none otherwise."""
    if classes is None or model.conditioning is None:
        return None
    return Guidance(DEFAULT_GUIDANCE if model.conditioning["label_dropout"] else 1.0)


def sampler_inputs(model: SavedModel, sampler: str, options: Mapping | None = None, labels: torch.Tensor | None = None,
                   guidance: Guidance | None = None) -> tuple[Denoiser | ReverseModel, dict]:
    """(what sampler ``sampler`` calls, its options) for ``model``: the options given, each option the sampler
    declares with a model default filled from the model where not given (the others keep the function's own
    default), and the model's reverse model where those options need one, else its denoiser; conditioned on the
    classes ``labels`` (B,) and guided as ``guidance`` says (both None: unconditional)."""
    spec = get_sampler(sampler)
    options = dict(options or {})
    spec.check_options(options)
    for option in spec.options:
        if options.get(option.name) is None and option.model_default is not None:
            options[option.name] = getattr(model, option.model_default)
    make = model.reverse_model if spec.needs_reverse_model(options) else model.denoiser
    if labels is None:
        return make(), options
    if guidance is None or guidance.scale == 1:  # rescaling the conditional estimate to its own std is no change
        return make({"class": labels}), options
    return classifier_free(make, labels, model.conditioning["null_index"], guidance.scale, model.schedule,
                           interval=guidance.interval, unit=guidance.unit, rescale=guidance.rescale), options
