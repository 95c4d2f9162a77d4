"""A saved model meets a registered sampler (layer 5+): the one place where a sampler's options are checked, its
model-dependent defaults filled in (ddpm's variance: the model's own), the classes and the guidance checked against
the model, and the model handed to the sampler as a denoiser or, where the options need one, as a reverse model
(x0_hat, log_var). ``gaussdiff sample``, ``gaussdiff inpaint`` and ``gaussdiff sweep`` go through it, and so does
:func:`sample` (``SavedModel.sample``), the one call that draws samples in the data's units from Python."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .data.toys import check_seed
from .errors import InputError, check_int
from .param import Denoiser, ReverseModel
from .samplers import DEFAULT_SAMPLER, DEFAULT_SPACING, DEFAULT_STEPS, generate, get_sampler
from .samplers.guidance import check_guidance, classifier_free, clip_x0
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


def guidance_for(model: SavedModel, classes: list[str] | None, scale: float | None = None,
                 interval: tuple[float, float] | None = None, unit: str = "sigma", rescale: float = 0.0
                 ) -> Guidance | None:
    """The guidance asked for (``gaussdiff sample --guidance``, ``--guidance-interval`` and its unit,
    ``--guidance-rescale``); where none is asked for, the model's default (:func:`default_guidance`)."""
    default = default_guidance(model, classes)
    if scale is None and interval is None and not rescale:
        return default
    scale = scale if scale is not None else default.scale if default else 1.0
    return Guidance(scale, None if interval is None else tuple(interval), unit, rescale)


def clip_range(model: SavedModel, clip: bool | None) -> tuple[float, float] | None:
    """The box x0 estimates are clamped to in model units (``--clip-x0``; None: on where the data's range is known,
    i.e. for images), or None for no clamp."""
    box = model.transform.model_range
    if clip and box is None:
        raise InputError("--clip-x0 needs data with a known range (images); this model's data have none")
    return box if clip is not False else None


def finite(x: torch.Tensor) -> torch.Tensor:
    """``x``, a batch the sampler returned; InputError where it holds NaN or Inf (then nothing is written)."""
    bad = ~torch.isfinite(x).flatten(1).all(1)
    if bad.any():
        raise InputError(f"the sampler returned NaN or Inf in {int(bad.sum())} of {len(x)} samples of a batch; "
                         "nothing was written (the model or the sampling settings are unstable: try other --steps, "
                         "--sampler or --guidance)")
    return x


@dataclass
class Plan:
    """A model with a sampler, its options, the classes (labels; None: unconditional), the guidance, the x0 clamp and
    the grid's options, all checked: what draws a set of samples."""

    model: SavedModel
    sampler: str
    options: dict
    labels: list[int] | None
    guidance: Guidance | None
    clip: tuple[float, float] | None
    grid_options: dict

    def denoiser(self, label: int | None, rows: int, device=None):
        """(what the sampler calls for ``rows`` samples of class ``label`` (None: unconditional), its options)."""
        labels = None if label is None else torch.full((rows,), label, dtype=torch.long, device=device)
        denoiser, options = sampler_inputs(self.model, self.sampler, self.options, labels, self.guidance)
        return (denoiser if self.clip is None else clip_x0(denoiser, *self.clip)), options

    def batches(self, n: int, *, steps: int | None, spacing: str, seed: int, batch_size: int, device=None,
                callback=None) -> Iterator[torch.Tensor]:
        """The samples in the data's units, batch by batch: ``n`` per class, class after class, each class drawing rows
        0..n-1 of the set seeded by ``seed`` (the same noise, so the classes compare sample by sample; the samples do
        not depend on ``batch_size``). ``callback`` goes to the sampler."""
        shape = self.model.sample_shape
        for label in self.labels or [None]:
            for start in range(0, n, batch_size):
                size = min(batch_size, n - start)
                denoiser, options = self.denoiser(label, size, device)
                x = generate(denoiser, (size, *shape), self.model.schedule, sampler=self.sampler, steps=steps,
                             spacing=spacing, seed=seed, start=start, grid_options=self.grid_options, device=device,
                             callback=callback, **options)
                yield self.model.to_data_units(finite(x).cpu())


def plan(model: SavedModel, sampler: str = DEFAULT_SAMPLER, options: Mapping | None = None,
         classes: list[str] | None = None, guidance: float | None = None,
         guidance_interval: tuple[float, float] | None = None, guidance_interval_unit: str = "sigma",
         guidance_rescale: float = 0.0, clip: bool | None = None, grid_options: Mapping | None = None) -> Plan:
    """The sampling ``gaussdiff sample``'s flags ask for, checked against ``model`` in the command's order (sampler
    and options, guidance, classes, clamp), each failure the command's one-line InputError."""
    options = dict(options or {})
    sampler_inputs(model, sampler, options)  # an unknown sampler or option: one line, before any work
    chosen = guidance_for(model, classes, guidance, guidance_interval, guidance_interval_unit, guidance_rescale)
    labels = check_classes(model, classes, chosen)
    return Plan(model, sampler, options, labels, chosen, clip_range(model, clip), dict(grid_options or {}))


@torch.no_grad()
def sample(model: SavedModel, n: int, *, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
           spacing: str = DEFAULT_SPACING, seed: int = 0, classes: str | int | Sequence[str | int] | None = None,
           guidance: float | None = None, guidance_interval: tuple[float, float] | None = None,
           guidance_interval_unit: str = "sigma", guidance_rescale: float = 0.0, clip_x0: bool | None = None,
           rho: float | None = None, sigma_min: float | None = None, sigma_max: float | None = None,
           batch_size: int = 10_000, device=None, progress: bool = False, **options) -> torch.Tensor:
    """``n`` samples of ``model`` in the data's own units, on the CPU: exactly the numbers ``gaussdiff sample`` writes
    with the same settings (whose defaults these are: ddpm on min(100, T) trailing steps, seed 0; see
    ``gaussdiff sample --help``).

    Vectors come as (N, D) of the data's dtype (the model's ``data_dtype``: float32 or float64), images as their
    integer levels (N, C, H, W). ``classes`` (a class-conditional model): a class or a list of classes, by name or
    index as ``--class`` takes them; then N = n per class, class after class. ``guidance`` (scale s, 1: the
    conditional model alone, default as the command's), ``guidance_interval`` (lo, hi] in ``guidance_interval_unit``
    and ``guidance_rescale``: classifier-free guidance. ``rho``, ``sigma_min``, ``sigma_max``: the karras and log_snr
    grids' options; ``options``: the sampler's own (``eta``, ``variance``, ...). Sample i's noise depends on
    (seed, i) alone, so ``batch_size`` changes memory, not the samples. ``device``: where the network runs (it is
    moved there; noise drawn on a GPU differs from the CPU's); ``progress``: a progress bar on stderr. A bad argument
    raises InputError with the command's message (numbers: naming this function's keyword).

    Example::

        from gaussdiff.saved import load_model
        model = load_model("runs/moons")
        x = model.sample(2000, sampler="dpmpp_2m", steps=20, spacing="log_snr", seed=1)   # (2000, 2) float32
        print(x.mean(0), x.std(0))
    """
    check_int("n", n, 1)
    if steps is not None:
        check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1)
    check_seed(seed)
    if classes is not None:
        classes = [str(c) for c in ([classes] if isinstance(classes, (str, numbers.Integral)) else classes)]
    chosen = plan(model, sampler, options, classes, guidance, guidance_interval, guidance_interval_unit,
                  guidance_rescale, clip_x0, {"rho": rho, "sigma_min": sigma_min, "sigma_max": sigma_max})
    device = torch.device(device) if device is not None else next(model.network.parameters()).device
    model.network.to(device)
    calls = len(chosen.labels or [None]) * math.ceil(n / batch_size)
    with tqdm(total=calls * (steps or min(DEFAULT_STEPS, model.schedule.T)), desc="sample", unit="step",
              disable=not progress) as bar:
        return torch.cat(list(chosen.batches(n, steps=steps, spacing=spacing, seed=seed, batch_size=batch_size,
                                             device=device, callback=lambda *_: bar.update())))
