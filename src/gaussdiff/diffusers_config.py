"""diffusers interop: our schedule as a diffusers ``scheduler_config.json``, and back.

Writing gives a DDPMScheduler config in diffusers' field names and values; it loads with
``DDPMScheduler.from_pretrained`` (or DDIM, DPM-Solver, Euler, ...) and gives ``alphas_cumprod[i] == alpha_bar[i + 1]``.

Reading takes a config of diffusers' DDPM, DDIM, PNDM, DPM-Solver, Euler, Heun, KDPM2, LMS, UniPC, DEIS or SA-Solver
scheduler and reads exactly these fields (an absent one takes diffusers' default, that of the config's class where
it departs from the common one, ``CLASS_DEFAULTS``):
- the schedule: ``num_train_timesteps``, ``beta_schedule`` (those of ``DIFFUSERS_BETA_SCHEDULES``), ``beta_start``,
  ``beta_end``, ``trained_betas``;
- ``prediction_type``, ``variance_type`` (with diffusers' other spellings) and ``timestep_spacing`` (the default grid).
Every other field is checked, not read:
- ``MODEL_SWITCHES`` change the betas or what the network is (``rescale_betas_zero_snr``, ``timestep_type``,
  flow matching): refused unless they hold their neutral value;
- ``SAMPLING_SWITCHES`` (``clip_sample``, ``thresholding``, ``set_alpha_to_one``) and ``steps_offset`` (on the
  leading grid, the only one it shifts) act only inside diffusers' own sampling loop. With
  ``sampling_switches="refuse"`` one that is on is refused; with ``"ignore"`` it is left out and its name returned in
  ``SchedulerSettings.ignored``, so a caller can warn. diffusers' default DDPM and DDIM configs (``clip_sample``
  true) and PNDM config (``set_alpha_to_one`` false) have one on;
- ``IGNORED``: diffusers' solver and its step grid (gaussdiff's ``--sampler``, ``--steps`` and ``--spacing`` replace
  them), and the settings of the switches above;
- anything else is refused, since gaussdiff cannot tell whether it changes the model.
Fields whose names start with ``_`` (``_class_name``, ``_diffusers_version``) are diffusers' bookkeeping and ignored,
as diffusers does.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import NamedTuple

from .atomic import write_text_atomically
from .bound import VARIANCE_TYPES
from .errors import InputError, check_int
from .param import check_prediction_type
from .schedule import NoiseSchedule, make_schedule

CONFIG_NAME = "scheduler_config.json"
DIFFUSERS_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")  # diffusers' and ours alike
USES_BETA_RANGE = ("linear", "scaled_linear", "sigmoid")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")  # diffusers' values; samplers.timestep_grid reproduces them
# diffusers' other spellings of the same reverse variance (None: DPM-Solver's "no variance head").
VARIANCE_ALIASES = {"fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large", None: "fixed_small"}

# Switches that change the model unless they hold this value (diffusers' default where absent): always refused.
MODEL_SWITCHES = {
    "rescale_betas_zero_snr": False,  # rescale betas to zero terminal SNR (Lin et al. 2023)
    "timestep_type": "discrete",  # Euler's "continuous" feeds the net 0.25 log(sigma) instead of the timestep
    "use_flow_sigmas": False,  # flow matching, not a variance-preserving chain
    "use_dynamic_shifting": False,  # flow matching's resolution-dependent shift
}
# Switches of diffusers' sampling loop, neutral at this value: refused or ignored (``sampling_switches``).
SAMPLING_SWITCHES = {
    "clip_sample": False,  # clip x0_hat to [-clip_sample_range, clip_sample_range]
    "thresholding": False,  # dynamic thresholding of x0_hat (Imagen)
    "set_alpha_to_one": True,  # DDIM's and PNDM's last step lands on alpha_bar = 1 (our t = 0)
}
NEUTRAL = MODEL_SWITCHES | SAMPLING_SWITCHES
SAMPLING_SWITCH_MODES = ("refuse", "ignore")
DDPM_SWITCHES = ("clip_sample", "thresholding", "rescale_betas_zero_snr")  # those DDPMScheduler has
# diffusers' defaults where a scheduler class departs from the common ones (NEUTRAL, timestep_spacing
# 'linspace', beta_start 1e-4, beta_end 0.02), for a config that lacks the field.
CLASS_DEFAULTS = {
    "DDPMScheduler": {"clip_sample": True, "timestep_spacing": "leading"},
    "DDIMScheduler": {"clip_sample": True, "timestep_spacing": "leading"},
    "PNDMScheduler": {"set_alpha_to_one": False, "timestep_spacing": "leading"},
    **{name: {"beta_start": 0.00085, "beta_end": 0.012}
       for name in ("HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler")},
}
IGNORED = (
    # only read when a switch of NEUTRAL is on
    "clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value", "flow_shift", "time_shift_type",
    "shift_terminal",
    # diffusers' solver and its step grid, replaced by gaussdiff's --sampler, --steps and --spacing
    "solver_order", "algorithm_type", "solver_type", "lower_order_final", "euler_at_final", "final_sigmas_type",
    "lambda_min_clipped", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
    "sigma_min", "sigma_max", "interpolation_type", "skip_prk_steps", "predict_x0", "disable_corrector", "solver_p",
    "predictor_order", "corrector_order", "tau_func",
)
SCHEDULE_FIELDS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "trained_betas")
OTHER_FIELDS = ("prediction_type", "timestep_spacing", "variance_type", "steps_offset")


class SchedulerSettings(NamedTuple):
    """What a diffusers scheduler config says about the model and its default step grid."""

    schedule: NoiseSchedule
    prediction_type: str
    timestep_spacing: str
    variance_type: str  # fixed_small (the ddpm sampler's beta_tilde), fixed_large (beta) or learned_range
    ignored: tuple[str, ...] = ()  # sampling-time switches that were on and left out (sampling_switches="ignore")


# --- export --------------------------------------------------------------------------------------

def to_scheduler_config(schedule: NoiseSchedule, prediction_type: str, timestep_spacing: str = "trailing",
                        variance_type: str = "fixed_small") -> dict:
    """A DDPMScheduler ``scheduler_config.json`` dict for ``schedule``; a schedule diffusers does not
    name (``sigmoid_alpha_bar``, custom betas) is written as its ``trained_betas``."""
    check_prediction_type(prediction_type)
    _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
    _check_choice("variance_type", variance_type, VARIANCE_TYPES)
    name = schedule.config.get("beta_schedule")
    config = {"_class_name": "DDPMScheduler", "num_train_timesteps": schedule.T}
    if name in DIFFUSERS_BETA_SCHEDULES:
        config.update(beta_schedule=name, trained_betas=None)
        if name in USES_BETA_RANGE:
            config.update(beta_start=schedule.config["beta_start"], beta_end=schedule.config["beta_end"])
    else:
        config.update(beta_schedule="linear", trained_betas=schedule.betas.tolist())  # diffusers reads trained_betas
    return config | {"prediction_type": prediction_type, "timestep_spacing": timestep_spacing,
                     "variance_type": variance_type, "steps_offset": 0} | {k: NEUTRAL[k] for k in DDPM_SWITCHES}


def write_scheduler_config(path, schedule: NoiseSchedule, prediction_type: str, **options) -> Path:
    """Write :func:`to_scheduler_config` as JSON at ``path`` (a file, or a folder to hold scheduler_config.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_NAME
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: {path.parent} is not a directory")
    text = json.dumps(to_scheduler_config(schedule, prediction_type, **options), indent=2) + "\n"
    write_text_atomically(path, text)
    return path


# --- import --------------------------------------------------------------------------------------

def read_scheduler_config(path, sampling_switches: str = "refuse") -> SchedulerSettings:
    """Read a diffusers scheduler config (a file, or a folder holding scheduler_config.json); ``sampling_switches``
    as in :func:`from_scheduler_config`."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path} holds a JSON {type(config).__name__}, not a scheduler config object")
    return from_scheduler_config(config, sampling_switches)


def from_scheduler_config(config: dict, sampling_switches: str = "refuse") -> SchedulerSettings:
    """The schedule, prediction type, spacing and variance of a diffusers scheduler config dict (module doc).

    ``sampling_switches``: 'refuse' (InputError) or 'ignore' (listed in ``ignored``) the sampling-time switches
    that are on; the model's switches are refused either way."""
    if sampling_switches not in SAMPLING_SWITCH_MODES:
        raise InputError(f"unknown sampling_switches {sampling_switches!r}; known: {', '.join(SAMPLING_SWITCH_MODES)}")
    cls = config.get("_class_name")
    defaulted = _class_defaults(cls, config)
    config = {k: v for k, v in config.items() if not k.startswith("_")} | defaulted
    unknown = sorted(set(config) - set(SCHEDULE_FIELDS) - set(OTHER_FIELDS) - set(NEUTRAL) - set(IGNORED))
    if unknown:
        raise InputError(f"unsupported scheduler config field(s) {', '.join(map(repr, unknown))}: gaussdiff reads "
                         "DDPM, DDIM, PNDM, DPM-Solver, Euler, Heun, KDPM2, LMS, UniPC, DEIS and SA-Solver configs")
    spacing = _check_choice("timestep_spacing", config.get("timestep_spacing", "linspace"), TIMESTEP_SPACINGS)
    on = _switches_on(config, spacing)
    refused = [field for field in on if field in MODEL_SWITCHES or sampling_switches == "refuse"]
    if refused:
        raise _unsupported(refused[0], config, cls, defaulted)
    variance = config.get("variance_type")
    if variance is None or isinstance(variance, str):
        variance = VARIANCE_ALIASES.get(variance, variance)
    variance = _check_choice("variance_type", variance, VARIANCE_TYPES)
    prediction_type = check_prediction_type(config.get("prediction_type", "epsilon"))
    return SchedulerSettings(_schedule(config), prediction_type, spacing, variance, tuple(on))


def _switches_on(config: dict, spacing: str) -> list[str]:
    """The switches not at their neutral value, and steps_offset where it shifts the grid (only leading adds it)."""
    on = [field for field, neutral in NEUTRAL.items() if config.get(field, neutral) != neutral]
    return on + ["steps_offset"] if config.get("steps_offset", 0) != 0 and spacing == "leading" else on


def _unsupported(field: str, config: dict, cls, defaulted: dict) -> InputError:
    """The one-line refusal of a switch that is on."""
    where = " with timestep_spacing 'leading'" if field == "steps_offset" else ""
    absent = f" ({cls}'s default when absent)" if field in defaulted else ""
    return InputError(f"scheduler config {field} = {_show(config[field])}{where}{absent} is not supported; "
                      f"supported: {_show(NEUTRAL.get(field, 0))}")  # steps_offset: 0


def _class_defaults(cls, config: dict) -> dict:
    """diffusers' defaults of scheduler class ``cls`` (CLASS_DEFAULTS) for the fields the config lacks."""
    defaults = CLASS_DEFAULTS.get(cls, {}) if isinstance(cls, str) else {}
    return {k: v for k, v in defaults.items() if k not in config}


def _schedule(config: dict) -> NoiseSchedule:
    T = check_int("scheduler config num_train_timesteps", config.get("num_train_timesteps", 1000), 1)
    betas = config.get("trained_betas")
    if betas is not None:  # diffusers then ignores beta_schedule
        if not isinstance(betas, list) or not all(_is_number(b) for b in betas):
            raise InputError("scheduler config trained_betas must be a list of numbers or null")
        schedule = make_schedule(trained_betas=betas)
        if schedule.T != T:
            raise InputError(f"scheduler config has {schedule.T} trained_betas but num_train_timesteps = {T}")
        return schedule
    name = _check_choice("beta_schedule", config.get("beta_schedule", "linear"), DIFFUSERS_BETA_SCHEDULES)
    if name not in USES_BETA_RANGE:
        return make_schedule(name, T)
    start, end = (_number(config, field, default) for field, default in (("beta_start", 1e-4), ("beta_end", 0.02)))
    return make_schedule(name, T, beta_start=start, beta_end=end)


def _number(config: dict, field: str, default: float) -> float:
    value = config.get(field, default)
    if not _is_number(value):
        raise InputError(f"scheduler config {field} must be a number, got {_show(value)}")
    return float(value)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(field: str, value, supported) -> str:
    if value not in supported:
        raise InputError(f"scheduler config {field} = {_show(value)} is not supported; "
                         f"supported: {', '.join(supported)}")
    return value


def _show(value) -> str:
    """A config value as JSON spells it (true, null, "leading")."""
    return json.dumps(value, default=str)
