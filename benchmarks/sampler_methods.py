"""The methods the issue-4 benchmarks compare: gaussdiff's samplers and diffusers' schedulers, one interface.

Both sides drive the same ``denoiser(x_t, t) -> x0_hat`` and both count its calls (NFE = calls made).

diffusers side (the loop its docs give: ``scale_model_input``, model, ``step``):
  - built from our schedule's config (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``;
    ``trained_betas`` for a custom schedule), so both sides see the same alpha_bar (diffusers keeps it in float32);
  - the model is the denoiser at our t = timestep + 1 (diffusers' timestep i is our t = i + 1; Euler/Heun with
    Karras sigmas give fractional timesteps, which the schedule's fractional t handles), fed the scaled input
    (on the variance-preserving scale) and answering ``prediction_type="sample"`` with x0_hat; PNDM accepts only
    eps or v, so it gets eps = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar) (``param.eps_from_x0``);
  - every scheduler in two variants, so each baseline is run at its best:
      "defaults": the scheduler's own defaults (its timestep_spacing, set_alpha_to_one, final steps, ...), with only
                  the schedule, the prediction type and the data range matched (``clip_sample=False``: clipping
                  x0 to [-1, 1] assumes images, and the oracle's data are not in [-1, 1]);
      "matched":  the settings that match ours: ``timestep_spacing="trailing"``, ``set_alpha_to_one=True``,
                  ``thresholding=False`` where the scheduler has them (DPMSolverSinglestep has no spacing option:
                  its own linspace ending at timestep 999; there the two variants coincide, variant "both");
    the final step goes to alpha_bar = 1 (``final_sigmas_type="zero"`` is the default where it exists). The Karras
    variants differ most: diffusers ends the Karras ramp at the sigma of the last spaced timestep, so under
    "trailing" at 10 steps on the linear schedule it stops at sigma 0.339 (timestep 99) instead of 0.010
    (timestep 0, its default "linspace");
  - x_T is ours times ``init_noise_sigma``, as a diffusers user starts.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import diffusers
import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging

from gaussdiff.param import CountingDenoiser, eps_from_x0
from gaussdiff.samplers import SAMPLERS, timestep_grid
from gaussdiff.schedule import NoiseSchedule

diffusers_logging.set_verbosity_error()  # DPMSolverSinglestep warns at every set_timesteps that it fixes its config


@dataclass(frozen=True)
class Ours:
    """A gaussdiff sampler on a named step grid."""

    sampler: str
    spacing: str
    side = "gaussdiff"
    variant = None

    @property
    def label(self) -> str:
        return f"{self.sampler} ({self.spacing})"

    @property
    def settings(self) -> dict:
        return {"sampler": self.sampler, "spacing": self.spacing}

    def grid(self, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
        return timestep_grid(schedule, steps, self.spacing)

    def run(self, denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, generator=None):
        return SAMPLERS[self.sampler].fn(denoiser, x_T, schedule, self.grid(schedule, steps), generator=generator)

    def distinct_steps(self, schedule: NoiseSchedule, steps: int) -> int:
        """How many distinct noise levels the sampler evaluates (steps, unless they collide)."""
        return len(torch.unique(self.grid(schedule, steps)[:-1]))


@dataclass(frozen=True)
class Diffusers:
    """A diffusers scheduler class with its options, run by the standard loop; ``variant`` says which settings the
    options hold (module doc: defaults, matched, or both where they coincide)."""

    label: str
    cls: str
    options: dict = field(default_factory=dict)
    variant: str = "matched"
    side = "diffusers"

    @property
    def settings(self) -> dict:
        """What a result row records of the method: the class, the variant and the options given."""
        return {"class": self.cls, "variant": self.variant, "options": self.options}

    def scheduler(self, schedule: NoiseSchedule):
        cfg = dict(schedule.config)
        if cfg["beta_schedule"] == "custom":
            cfg = {"num_train_timesteps": schedule.T, "trained_betas": np.asarray(cfg["trained_betas"])}
        return getattr(diffusers, self.cls)(**cfg, **self.options)

    def run(self, denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, generator=None):
        sch = self.scheduler(schedule)
        return self.loop(sch, oracle_model(denoiser, schedule, sch.config.prediction_type), x_T, steps, generator)

    def loop(self, sch, model, x_T: torch.Tensor, steps: int, generator=None) -> torch.Tensor:
        """diffusers' sampling loop for ``model(x_in, timestep)`` from our x_T (scaled by init_noise_sigma)."""
        sch.set_timesteps(steps)
        step_kw = {"generator": generator} if self.cls == "DDPMScheduler" else {}  # the one stochastic method here
        x = x_T * sch.init_noise_sigma
        for ts in sch.timesteps:
            out = model(sch.scale_model_input(x, ts), ts)
            x = sch.step(out, ts, x, **step_kw).prev_sample
        return x

    def distinct_steps(self, schedule: NoiseSchedule, steps: int) -> int:
        """How many distinct timesteps the scheduler evaluates (steps, unless they collide or are dropped)."""
        sch = self.scheduler(schedule)
        sch.set_timesteps(steps)
        return len(torch.unique(sch.timesteps))


def oracle_model(denoiser, schedule: NoiseSchedule, prediction_type: str):
    """A diffusers-style ``model(x_in, timestep)`` answering with x0_hat ("sample") or eps ("epsilon")."""

    def model(x_in: torch.Tensor, timestep) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float64) + 1  # diffusers' timestep i is our t = i + 1
        x0 = denoiser(x_in, t)
        return x0 if prediction_type == "sample" else eps_from_x0(x0, x_in, schedule.alpha_bar_at(t))

    return model


def nfe_of(method, schedule: NoiseSchedule, steps: int) -> int:
    """Denoiser calls of ``steps`` steps, counted on a one-point dry run with a zero denoiser."""
    counter = CountingDenoiser(lambda x, t: torch.zeros_like(x))
    method.run(counter, torch.zeros(1, 1, dtype=torch.float64), schedule, steps, torch.Generator().manual_seed(0))
    return counter.calls


def steps_for_nfe(method, schedule: NoiseSchedule, nfe: int) -> int:
    """The most steps whose NFE is at most ``nfe`` (NFE grows with steps: bisection)."""
    lo, hi = 1, nfe
    if nfe_of(method, schedule, hi) <= nfe:
        return hi
    while hi - lo > 1:  # invariant: nfe_of(lo) <= nfe < nfe_of(hi), or lo = 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if nfe_of(method, schedule, mid) <= nfe else (lo, mid)
    return lo


# The settings that match ours (the "matched" variant), where the scheduler has them; and what both variants match:
# the data range (x0 clipping to [-1, 1] assumes images).
MATCHED = {"timestep_spacing": "trailing", "set_alpha_to_one": True, "thresholding": False}
DATA_RANGE = {"clip_sample": False}


def class_defaults(cls: str) -> dict:
    """The keyword defaults of a diffusers scheduler class's constructor."""
    params = inspect.signature(getattr(diffusers, cls).__init__).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def variants(label: str, cls: str, method: dict) -> list[Diffusers]:
    """The "defaults" and "matched" variants of one method (its own ``method`` options: prediction type, order,
    Karras sigmas, PLMS), or one variant "both" where matching changes nothing."""
    own = class_defaults(cls)
    accepted = lambda extra: {k: v for k, v in extra.items() if k in own}  # noqa: E731
    defaults = {**method, **accepted(DATA_RANGE)}
    matched = {**defaults, **accepted(MATCHED)}
    if all(own[k] == v for k, v in matched.items() if k not in defaults):
        return [Diffusers(label, cls, defaults, "both")]
    return [Diffusers(label, cls, defaults, "defaults"), Diffusers(label, cls, matched, "matched")]


def _with_karras(label: str, cls: str, method: dict) -> list[Diffusers]:
    return variants(label, cls, method) + variants(label + " karras", cls, {**method, "use_karras_sigmas": True})


_SAMPLE = {"prediction_type": "sample"}

DIFFUSERS = [
    *variants("DDPM", "DDPMScheduler", _SAMPLE),
    *variants("DDIM", "DDIMScheduler", _SAMPLE),
    *variants("PNDM (PLMS)", "PNDMScheduler", {"prediction_type": "epsilon", "skip_prk_steps": True}),
    *_with_karras("DPMSolverMultistep 2M", "DPMSolverMultistepScheduler", {**_SAMPLE, "solver_order": 2}),
    *_with_karras("DPMSolverMultistep 3M", "DPMSolverMultistepScheduler", {**_SAMPLE, "solver_order": 3}),
    *_with_karras("DPMSolverSinglestep 2S", "DPMSolverSinglestepScheduler", {**_SAMPLE, "solver_order": 2}),
    *_with_karras("DPMSolverSinglestep 3S", "DPMSolverSinglestepScheduler", {**_SAMPLE, "solver_order": 3}),
    *_with_karras("Euler", "EulerDiscreteScheduler", _SAMPLE),
    *_with_karras("Heun", "HeunDiscreteScheduler", _SAMPLE),
    *_with_karras("UniPC 2", "UniPCMultistepScheduler", {**_SAMPLE, "solver_order": 2}),
    *_with_karras("UniPC 3", "UniPCMultistepScheduler", {**_SAMPLE, "solver_order": 3}),
]


def diffusers_method(label: str, variant: str = "matched") -> Diffusers:
    """The diffusers method ``label`` in ``variant`` (a method whose variants coincide has only "both")."""
    return next(m for m in DIFFUSERS if m.label == label and m.variant in (variant, "both"))


OURS = [Ours("ddpm", "trailing")] + [Ours(name, spacing) for name in ("ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m")
                                     for spacing in ("trailing", "log_snr", "karras")]


@dataclass(frozen=True)
class Reference:
    """The adaptive probability-flow ODE (``pf_ode``, dopri5) from t = T to t = 1, then x0_hat: it picks its own NFE."""

    tol: float
    side = "reference"
    variant = None

    @property
    def label(self) -> str:
        return f"pf_ode (dopri5, tol {self.tol:g})"

    @property
    def settings(self) -> dict:
        return {"sampler": "pf_ode", "rtol": self.tol, "atol": self.tol, "grid": "T, 1, 0"}

    def run(self, denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, steps=None, generator=None):
        grid = torch.tensor([schedule.T, 1.0, 0.0], dtype=torch.float64)
        return SAMPLERS["pf_ode"].fn(denoiser, x_T, schedule, grid, rtol=self.tol, atol=self.tol)


REFERENCES = [Reference(1e-3), Reference(1e-5)]
