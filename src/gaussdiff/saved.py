"""A saved model: network + schedule + parameterization + data transform, as a folder of
``config.json`` and ``model.safetensors`` (the EMA weights; ``online.safetensors`` holds the raw ones).

Nothing is ever unpickled: weights are safetensors, the config is JSON and carries a version and the sha256 of each
weight file; a file that does not match it, or that holds NaN or Inf, is refused at load.
A run folder holds its exported model in ``RUN/model``; :func:`find_model_dir` accepts either.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import nn

from . import __version__
from .atomic import replace_folder, temporary_folder
from .bound import check_variance_type
from .columns import Table
from .data.tables import decode
from .diffusers_config import write_scheduler_config
from .errors import InputError
from .nets import build_network
from .param import (
    Denoiser,
    ReverseModel,
    as_denoiser,
    as_reverse_model,
    check_prediction_type,
)
from .samplers.known import METHODS
from .schedule import NoiseSchedule, schedule_from_config
from .transforms import transform_from_dict

FORMAT = "gaussdiff-model"
# 2: sample shape, network and transform kinds, and (optional, absent = unconditional) the conditioning;
# version 1 (vectors, an MLP) still loads. Optional in version 2 (absent in older folders, which still load):
# "checksums", the sha256 of each weight file, checked when the file is read; data "columns" and "dtype", the column
# names and dtype (float32 or float64) samples of vectors are written with (absent: no header, float64).
FORMAT_VERSION = 2
WEIGHT_FILES = {"ema": "model.safetensors", "online": "online.safetensors"}
DDPM_VARIANCE = {"fixed_small": "beta_tilde", "fixed_large": "beta", "learned_range": "learned"}  # by variance_type
DATA_DTYPES = ("float32", "float64")


@dataclass
class SavedModel:
    network: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    transform: object  # a transforms.TRANSFORMS kind: data units <-> model units
    data_name: str
    variance_type: str = "fixed_small"  # of p(x_{t-1} | x_t): fixed_small, fixed_large or learned_range
    conditioning: dict | None = None  # class_conditioning(...) of a class-conditional network; None: unconditional
    columns: list[str] | None = None  # vectors: the data's column names (a .csv header), for written samples
    data_dtype: str | None = None  # vectors: DATA_DTYPES, the dtype of samples in the data's units (None: float64)
    imputation: dict | None = None  # a table with gaps: impute's default method, chosen in training (impute_choice)

    def __post_init__(self):
        check_variance_type(self.variance_type)
        config = getattr(self.network, "config", {})
        if self.variance_type == "learned_range" and not config.get("learn_variance"):
            raise InputError("variance_type learned_range needs a network with a variance head (learn_variance)")
        if self.conditioning is not None:
            check_conditioning(self.conditioning, config.get("num_classes", 0))
        check_row_format(self.columns, self.data_dtype, self.sample_shape)
        if self.imputation is not None:
            check_imputation(self.imputation)

    @property
    def classes(self) -> list[str] | None:
        """The class names of a class-conditional model (index = label), else None."""
        return self.conditioning["classes"] if self.conditioning else None

    def class_index(self, name: str) -> int:
        """The label of a class given by its name or its index (as text); InputError naming the known ones."""
        classes = self.classes
        if classes is None:
            raise InputError("this model is not class-conditional (trained without --class-conditional): "
                             "it takes no --class")
        if name in classes:
            return classes.index(name)
        if name.lstrip("-").isdigit() and 0 <= int(name) < len(classes):
            return int(name)
        raise InputError(f"no class {name!r}: this model knows {len(classes)} classes, 0..{len(classes) - 1} = "
                         f"{', '.join(classes[:20])}{', ...' if len(classes) > 20 else ''}")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.transform.sample_shape)

    @property
    def table(self) -> Table | None:
        """The table transform of a model trained on a table (its column kinds and maps), else None."""
        return self.transform if isinstance(self.transform, Table) else None

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of a sample in the data's own units: a table's (C,) columns, else ``sample_shape``."""
        return (len(self.table.specs),) if self.table else self.sample_shape

    @property
    def header(self) -> list[str] | None:
        """The column names written samples go under: a table's columns, a vector model's recorded ``columns``."""
        return [s.name for s in self.table.specs] if self.table else self.columns

    @property
    def row_text(self):
        """A table model's writer of rows (codes (N, C) -> their cells' text, ``data.tables.decode``), else None."""
        return partial(decode, specs=self.table.specs) if self.table else None

    def to_data_units(self, x):
        """Model samples in the data's own units: the transform's inverse, rounded to the data's levels if it has
        them (a table's: its codes, integers rounded, categories decoded)."""
        x = self.transform.inverse(x.double())
        if self.transform.levels:
            return self.transform.quantize(x)
        return x.float() if self.data_dtype == "float32" else x

    def sample(self, n: int, **options) -> torch.Tensor:
        """``n`` samples (per class) in the data's own units, as ``gaussdiff sample`` draws them with the same
        settings; ``options`` as :func:`gaussdiff.sampling.sample` takes them (sampler, steps, spacing, seed, classes,
        guidance, batch_size, device, progress, the sampler's own options). Example::

            model = load_model("runs/moons")
            x = model.sample(1000, sampler="dpmpp_2m", steps=20, spacing="log_snr", seed=0)  # (1000, 2) float32
        """
        from .sampling import sample  # sampling builds on this module
        return sample(self, n, **options)

    def denoiser(self, cond: dict | None = None) -> Denoiser:
        """x0_hat(x_t, t) of the network given ``cond`` (e.g. {"class": (B,) long}; None: unconditional)."""
        return as_denoiser(self.network, self.schedule, self.prediction_type, **_cond_kwargs(cond))

    def reverse_model(self, cond: dict | None = None) -> ReverseModel:
        """(x_t, t) -> (x0_hat, log_var) with the model's own reverse variance (integer t in 1..T), given ``cond``."""
        return as_reverse_model(self.network, self.schedule, self.prediction_type, self.variance_type,
                                **_cond_kwargs(cond))

    @property
    def ddpm_variance(self) -> str:
        """The ddpm sampler's reverse variance that is the model's own: beta_tilde, beta or learned."""
        return DDPM_VARIANCE[self.variance_type]

    def config(self) -> dict:
        data = {"name": self.data_name, "transform": self.transform.to_dict()}
        for key, value in (("columns", self.columns), ("dtype", self.data_dtype)):  # optional fields of format 2
            if value is not None:
                data[key] = value
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gaussdiff_version": __version__,
            "network": self.network.config,
            "scheduler": self.schedule.config,
            "prediction_type": self.prediction_type,
            "variance_type": self.variance_type,
            "sample_shape": list(self.sample_shape),
            "data": data,
        } | ({"conditioning": self.conditioning} if self.conditioning else {}) \
            | ({"imputation": self.imputation} if self.imputation else {})

    def save(self, folder, online: nn.Module | None = None) -> Path:
        """Write the folder whole into a temporary sibling, then swap it in (never half-written)."""
        folder = Path(folder)
        if not folder.parent.is_dir():
            raise InputError(f"cannot save a model into {folder}: {folder.parent} is not a directory")
        tmp = temporary_folder(folder, "new")
        try:
            checksums = {}
            for key, module in (("ema", self.network), ("online", online)):
                if module is not None:
                    save_file(_state(module), tmp / WEIGHT_FILES[key])
                    checksums[WEIGHT_FILES[key]] = hashlib.sha256((tmp / WEIGHT_FILES[key]).read_bytes()).hexdigest()
            (tmp / "config.json").write_text(json_text(self.config() | {"checksums": checksums}))
            # The schedule as diffusers reads it: DDPMScheduler.from_pretrained(folder) works.
            write_scheduler_config(tmp, self.schedule, self.prediction_type, variance_type=self.variance_type)
            for file in tmp.iterdir():  # safetensors makes files private (0600); use the usual mode
                file.chmod(0o644)
            replace_folder(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder


NUMBER_LIST = re.compile(r"\[\n\s*(-?[\d.eE+-]+(?:,\n\s*-?[\d.eE+-]+)*)\n\s*\]")


def json_text(config: dict) -> str:
    """``config`` as JSON indented by 2, each list of numbers on one line (json.dumps gives each number a line; a
    string holds no raw line break, so only lists are matched)."""
    return NUMBER_LIST.sub(lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", json.dumps(config, indent=2))


def _cond_kwargs(cond: dict | None) -> dict:
    return {"cond": cond} if cond else {}


def class_conditioning(classes: list[str], label_dropout: float) -> dict:
    """The ``conditioning`` field of a class-conditional model: its K classes' names, the null label K (the
    unconditional model, trained on the ``label_dropout`` share of labels; 0: there is none)."""
    return {"type": "class", "num_classes": len(classes), "classes": list(classes), "null_index": len(classes),
            "label_dropout": label_dropout}


def check_conditioning(conditioning: dict, num_classes: int) -> None:
    """InputError unless ``conditioning`` is a class conditioning that agrees with the network's class embedding."""
    try:
        kind, K, classes = conditioning["type"], conditioning["num_classes"], conditioning["classes"]
        null, dropout = conditioning["null_index"], float(conditioning["label_dropout"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"the model's conditioning lacks or mistypes field {e}") from None
    if kind != "class":
        raise InputError(f"unknown conditioning type {kind!r}; this gaussdiff knows: class")
    if not (K == num_classes == len(classes) == null) or not 0 <= dropout < 1:
        raise InputError(f"the model's conditioning ({K} classes named {len(classes)}, null label {null}, label "
                         f"dropout {dropout}) does not match its network ({num_classes} classes)")


def check_imputation(imputation: dict) -> None:
    """InputError unless ``imputation`` names a known-value method and its ``scores``, if any, are lists of numbers
    >= 0 by method (the rest of the record is information)."""
    method = imputation.get("method") if isinstance(imputation, dict) else None
    if method not in METHODS:
        raise InputError(f"the model's imputation record names method {method!r}; known: {', '.join(METHODS)}")
    scores = imputation.get("scores", {})
    if not isinstance(scores, dict) or not all(
            key in METHODS and isinstance(v, list) and all(isinstance(z, (int, float)) and 0 <= z < math.inf
                                                           for z in v) for key, v in scores.items()):
        raise InputError("the model's imputation record mistypes its scores (expected {method: [numbers >= 0]})")


def check_row_format(columns, dtype, sample_shape: tuple[int, ...]) -> None:
    """InputError unless ``columns`` (None, or one name per value of a vector sample, without commas or line breaks)
    and ``dtype`` (None or one of DATA_DTYPES) describe samples of ``sample_shape``."""
    if dtype is not None and dtype not in DATA_DTYPES:
        raise InputError(f"unknown data dtype {dtype!r}; known: {', '.join(DATA_DTYPES)}")
    if columns is None:
        return
    if len(sample_shape) != 1:
        raise InputError(f"data columns name the values of vectors, not of samples of shape {list(sample_shape)}")
    names = isinstance(columns, list) and all(isinstance(c, str) and not set(c) & set(",\r\n") for c in columns)
    if not names or len(columns) != sample_shape[0]:
        raise InputError(f"the data columns {columns!r} must be {sample_shape[0]} names, one per value of a sample, "
                         "without commas or line breaks")


def _state(module: nn.Module) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def find_model_dir(path) -> Path:
    """A model folder, or a run folder holding one in ``model/``; a run stopped before it wrote one is named so."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if (path / "checkpoints").is_dir() and (path / "config.json").is_file() and not (path / "model").exists():
        raise InputError(f"{path} is a training run that has no model yet (it stopped before writing model/); "
                         f"continue it with `gaussdiff train --resume {path}`")
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise InputError(f"{path} is neither a gaussdiff run folder nor a model folder (no config.json or "
                     "model/config.json)")


def read_config(folder: Path) -> dict:
    """The model config of ``folder`` in the current format (a version-1 config is upgraded in memory)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{folder / 'config.json'} is not readable JSON: {e}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise InputError(f"{folder / 'config.json'} is not a gaussdiff model config")
    version = config.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise InputError(f"{folder} has model format version {version!r}; this gaussdiff reads versions 1 to "
                         f"{FORMAT_VERSION}" + (" (a newer gaussdiff wrote it)" if isinstance(version, int)
                                               and version > FORMAT_VERSION else ""))
    return upgrade_v1(config) if version == 1 else config


def upgrade_v1(config: dict) -> dict:
    """A version-1 config (vectors of D features, an MLP with ``dim``, a standardization without ``kind``) in
    version 2's terms."""
    try:
        network = dict(config["network"])
        dim = network.pop("dim")
        transform = {"kind": "standardize", **config["data"]["transform"]}
    except (KeyError, TypeError) as e:
        raise InputError(f"version-1 model config lacks or mistypes field {e}") from None
    network |= {"sample_shape": [dim], "cond_keys": []}
    return config | {"format_version": FORMAT_VERSION, "network": network, "sample_shape": [dim],
                     "data": config["data"] | {"transform": transform}}


def load_model(path, weights: str = "ema") -> SavedModel:
    """Load a run or model folder; every mismatch between config and weights is an InputError."""
    if weights not in WEIGHT_FILES:
        raise InputError(f"unknown weights {weights!r}; known: {', '.join(WEIGHT_FILES)}")
    folder = find_model_dir(path)
    config = read_config(folder)
    try:
        network = build_network(config["network"])
        schedule = schedule_from_config(config["scheduler"])
        prediction_type = check_prediction_type(config["prediction_type"])
        transform = transform_from_dict(config["data"]["transform"])
        data_name = str(config["data"]["name"])
        variance_type = config.get("variance_type", "fixed_small")  # absent: older files
        sample_shape = tuple(config["sample_shape"])
        conditioning, imputation = config.get("conditioning"), config.get("imputation")  # absent: older files
        columns, data_dtype = config["data"].get("columns"), config["data"].get("dtype")  # absent: older files
        checksums = config.get("checksums", {})  # absent: written before checksums existed
    except (KeyError, TypeError) as e:
        raise InputError(f"{folder / 'config.json'} lacks or mistypes field {e}") from None
    if not isinstance(checksums, dict):
        raise InputError(f"{folder / 'config.json'} mistypes field 'checksums' (expected {{file name: sha256}})")
    _check_agreement(folder, network.config, schedule, transform, sample_shape)
    _load_weights(network, folder / WEIGHT_FILES[weights], checksums.get(WEIGHT_FILES[weights]))
    network.eval().requires_grad_(False)
    try:
        return SavedModel(network, schedule, prediction_type, transform, data_name, variance_type, conditioning,
                          columns, data_dtype, imputation)
    except InputError as e:
        raise InputError(f"{folder / 'config.json'}: {e}") from None


def _check_agreement(folder: Path, network: dict, schedule: NoiseSchedule, transform, sample_shape: tuple) -> None:
    """InputError unless the network, the transform and the config agree on the sample shape and T."""
    shapes = {"the config": sample_shape, "the network": tuple(network["sample_shape"]),
              "the data transform": tuple(transform.sample_shape)}
    if len(set(shapes.values())) > 1:
        raise InputError(f"{folder / 'config.json'}: the sample shapes disagree: " +
                         ", ".join(f"{k} {list(v)}" for k, v in shapes.items()))
    if network.get("num_train_timesteps", schedule.T) != schedule.T:
        raise InputError(f"{folder / 'config.json'}: the network was built for {network['num_train_timesteps']} "
                         f"timesteps, the schedule has T = {schedule.T}")


def _load_weights(network: nn.Module, file: Path, checksum: str | None) -> None:
    """Load ``file`` into ``network``: its sha256 must be ``checksum`` (None: not recorded), its tensors those of the
    network, every value finite."""
    if not file.is_file():
        raise InputError(f"{file} is missing")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise InputError(f"{file} cannot be read: {e.strerror or e}") from None
    if checksum is not None and hashlib.sha256(data).hexdigest() != checksum:
        raise InputError(f"{file} does not match the checksum in config.json: the file is damaged")
    try:
        state = load(data)
    except (SafetensorError, ValueError) as e:
        raise InputError(f"{file} is not a readable safetensors file: {e}") from None
    expected = network.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        detail = "; ".join(f"{name}: {', '.join(keys[:3])}" for name, keys in
                           (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)) if keys)
        raise InputError(f"{file} does not match the network in config.json ({detail})")
    check_finite_weights(state, file)
    network.load_state_dict(state)


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """name -> number of NaN or Inf values, for each floating tensor of ``state`` that holds any, in order."""
    return {name: int((~torch.isfinite(v)).sum()) for name, v in state.items()
            if v.is_floating_point() and not torch.isfinite(v).all()}


def check_finite_weights(state: dict[str, torch.Tensor], where) -> None:
    """InputError naming the first tensor of ``state`` that holds NaN or Inf, and how many."""
    bad = nonfinite_tensors(state)
    if bad:
        name, count = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise InputError(f"{where}: tensor {name!r} holds {count} non-finite value(s) (NaN or Inf) of "
                         f"{state[name].numel()}{more}: the model cannot be used")
