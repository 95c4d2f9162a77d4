"""The training configuration: its fields, their checks, and where values come from.

Values are resolved in this order, later ones winning: the defaults below, the saved config of the run
being resumed, a diffusers scheduler_config.json, a config file (TOML or YAML), the command-line flags.
What a run used is saved as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from ..data import BUILTIN, IMAGE_BUILTIN, check_seed
from ..data.dataset import is_table_file
from ..data.images import is_image_source
from ..diffusers_config import read_scheduler_config
from ..errors import InputError, check_memory
from ..losses import check_loss_type, check_loss_weighting
from ..nets import MLP
from ..param import check_prediction_type
from .folder import check_run_folder
from .impute_choice import CELLS as CHECK_CELLS, MAX_CELLS as MAX_CHECK_CELLS
from .threads import check_threads


@dataclass
class TrainConfig:
    """Every option of ``gaussdiff train``; the resolved values are saved as RUN/config.json."""

    data: str = "moons"
    out: str | None = None  # None: runs/<the data's name>
    n_data: int = 100_000  # points drawn from a built-in data set (files are used whole)
    seed: int = 0
    steps: int | None = None  # step budget; with time_budget, whichever ends first
    time_budget: float | None = None  # seconds of training wall time, summed over resumes
    batch_size: int | None = None  # the global batch, split over processes and micro-batches (None: by data)
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float | None = None  # the peak learning rate (None: by data)
    lr_schedule: str = "cosine"  # "cosine" decays to 0 over the budget, "constant" does not
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999  # the maximum; ema-pytorch warms it up as 1 - (1 + step)^(-2/3)
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "v_prediction"  # stable at every schedule (eps breaks where abar_T ~ 0)
    loss_type: str = "simple"  # simple, hybrid (simple + 0.001 L_vlb) or vlb
    variance_type: str = "fixed_small"  # of the reverse step: fixed_small, fixed_large or learned_range
    t_sampling: str = "uniform"  # uniform, or importance (by the loss's second moment, Improved DDPM)
    loss_weighting: str = "none"  # none, or min_snr: L_simple as min(SNR_t, gamma) x the x0 error (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # gamma of min_snr (the paper's choice)
    network: dict = field(default_factory=dict)  # {"kind": auto|mlp|unet, ...the kind's fields}; auto: by data shape
    width: int = 64  # the MLP's; on a CPU time budget, more steps of a small MLP beat fewer of a wide one
    depth: int = 3
    emb_dim: int = 128
    image_size: int | None = None  # image folders: centre-crop and resize to this size (None: the images' own)
    channels: int | None = None  # image folders: 1 (gray) or 3 (RGB); None: 3 if any image has colour
    pixel_range: list | None = None  # an image .npy of floats: [lo, hi], mapped onto the levels 0..255
    class_conditional: bool = False  # the network sees each sample's class (cond["class"])
    label_dropout: float = 0.1  # class-conditional: the share of labels replaced by the null one (0: no guidance)
    label_column: str | None = None  # tables: the column (header name or 0-based number) holding the classes
    schema: str | None = None  # tables: a columns.json file of column kinds overriding the inferred ones
    holdout: float | None = None  # files: the share of rows kept out of training (None: 0.1); built-ins: None
    eval_every: int | None = None  # steps between held-out losses in metrics.jsonl (None: by data; 0: none)
    eval_size: int | None = None  # samples each held-out loss is estimated on (None: by data)
    early_stopping: int | None = None  # held-out losses without a new low before training stops, the model keeping
    # the weights of the lowest (None: by data, PATIENCE for a table with held-out rows, else 0: off)
    em_rounds: int | None = None  # a table with gaps: E steps (gaps := the model's imputations), training on after each
    # early stop (None: EM_ROUNDS for a table with early stopping, else 0: off)
    impute_check_cells: int = CHECK_CELLS  # a table with gaps: held-out cells that choose impute's default method
    device: str = "auto"  # auto: cuda, then mps, then cpu
    precision: str = "fp32"  # fp32, bf16 (autocast, CPU or GPU) or fp16 (autocast + grad scaler, CUDA)
    compile: bool = False  # torch.compile the network
    threads: int | str | None = "auto"  # auto: 1 or all cores, the faster in a probe; None: torch's (old runs)
    preview_every: int | None = None  # steps between sample grids in RUN/pictures (None: by data; 0: none)
    log_every: int = 50
    checkpoint_every: int = 2000
    keep_checkpoints: int = 2
    tensorboard: bool = False  # also log to RUN/tensorboard (needs the tensorboard package)

    def validate(self) -> "TrainConfig":
        if self.steps is None and self.time_budget is None:
            self.steps = 5000
        if self.out is None:
            self.out = str(Path("runs") / (Path(self.data).stem or "data"))
        images, table = is_image_data(self.data), is_table_file(self.data)
        for name, by_kind in DATA_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, TABLE_DEFAULTS.get(name, by_kind[images]) if table else by_kind[images])
        positive = ["n_data", "batch_size", "grad_accum", "num_train_timesteps", "width", "depth", "emb_dim",
                    "log_every", "checkpoint_every", "keep_checkpoints"] + [
                        k for k in ("steps", "image_size") if getattr(self, k) is not None]
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{flag(name)} must be positive, got {getattr(self, name)}")
        check_threads(self.threads)
        if self.num_train_timesteps < 2:
            raise InputError(f"num-train-timesteps must be at least 2, got {self.num_train_timesteps}: the reverse "
                             "step at t = 1 takes its variance from t = 2 (beta-tilde is 0 at t = 1), and a one-step "
                             "chain's bound has no L_{t-1} terms")
        check_seed(self.seed)
        for name in ["lr", "time_budget"]:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"{flag(name)} must be a positive number, got {value}")
        if not self.grad_clip > 0:  # a negative one flips the gradient (clip_grad_norm_ scales by it); inf is off
            raise InputError(f"grad-clip must be positive, got {self.grad_clip}")
        if self.warmup_steps < 0 or not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"warmup-steps and weight-decay must be >= 0, got {self.warmup_steps} and "
                             f"{self.weight_decay}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema-decay must lie in [0, 1), got {self.ema_decay}")
        for name, known in CHOICES.items():
            if getattr(self, name) not in known:
                raise InputError(f"unknown {flag(name)} {getattr(self, name)!r}; known: {', '.join(known)}")
        self.holdout = check_holdout(self.data, self.holdout)
        if self.eval_every < 0 or self.eval_size < 1:
            raise InputError(f"eval-every must be >= 0 (0: no held-out loss) and eval-size positive, got "
                             f"{self.eval_every} and {self.eval_size}")
        self.early_stopping = check_early_stopping(self.early_stopping, table, self.holdout, self.eval_every)
        self.em_rounds = check_em_rounds(self.em_rounds, table, self.early_stopping)
        if not 0 <= self.impute_check_cells <= MAX_CHECK_CELLS:
            raise InputError(f"impute-check-cells must lie in [0, {MAX_CHECK_CELLS:,}] (0: no choice, impute "
                             f"defaults to replace_xt), got {self.impute_check_cells}")
        if self.preview_every < 0:
            raise InputError(f"preview-every must be >= 0 (0: no previews), got {self.preview_every}")
        if self.preview_every and not images:
            raise InputError("preview-every draws grids of images; for vector data use gaussdiff plot RUN")
        if not 0 <= self.label_dropout < 1:
            raise InputError(f"label-dropout must lie in [0, 1), got {self.label_dropout}")
        if self.label_column is not None and not self.class_conditional:
            raise InputError("--label-column names the classes of class-conditional training; add --class-conditional")
        if self.channels not in (None, 1, 3):
            raise InputError(f"channels must be 1 (gray) or 3 (RGB), got {self.channels}")
        check_prediction_type(self.prediction_type)
        check_loss_type(self.loss_type, self.variance_type)
        check_loss_weighting(self.loss_weighting, self.min_snr_gamma, self.loss_type)
        check_network_section(self.network)
        check_training_memory(self, images)
        return self


# Defaults that depend on the data, (vectors, images): a 30k-parameter MLP learns fastest from big batches at a high
# rate; a UNet on images from small batches at a lower one. Images also get a grid of samples every 1,000 steps.
# The held-out loss every 500 steps on 1,000 samples costs a vector model under 1 % of its steps; an image step is
# ~10x slower, so 256 images every 250 steps cost about as much.
DATA_DEFAULTS = {"batch_size": (1024, 64), "lr": (3e-3, 2e-3), "preview_every": (0, 1000), "eval_every": (500, 250),
                 "eval_size": (1000, 256)}
HOLDOUT = 0.1  # the default share of a file's rows kept out of training
# A table (a few hundred rows, full batches) over-fits within a few hundred steps (issue 13's stopping probe): its
# held-out loss is watched every 100 steps and training stops PATIENCE evaluations after its lowest.
TABLE_DEFAULTS = {"eval_every": 100}
PATIENCE = 10
# EM rounds (train/gaps.py) on a table with gaps, from issue 13's probe (iris, wine, breast cancer, diabetes, 20 % of
# cells missing, seed 0): the point error fell by 2-9 % over the first round and by 0.4-1 % more over the second.
EM_ROUNDS = 2
MAX_EM_ROUNDS = 20  # each round costs a training run's tail and an imputation of every row


def check_holdout(data: str, holdout: float | None) -> float | None:
    """The resolved holdout: a file's share of held-out rows in [0, 1) (default HOLDOUT); None for a built-in set,
    whose held-out data are its own (a fresh draw, digits' test split)."""
    if data in BUILTIN or data in IMAGE_BUILTIN:
        if holdout is not None:
            raise InputError(f"--holdout splits the rows of a data file; the built-in {data!r} is held out by "
                             f"{'its test split' if data in IMAGE_BUILTIN else 'a fresh draw under another seed'}")
        return None
    holdout = HOLDOUT if holdout is None else holdout
    if not 0 <= holdout < 1:
        raise InputError(f"holdout must lie in [0, 1) (0: train on every row), got {holdout}")
    return holdout


def check_early_stopping(patience: int | None, table: bool, holdout: float | None, eval_every: int) -> int:
    """The resolved patience (0: off); stopping early needs held-out data and their loss."""
    if patience is None:
        return PATIENCE if table and holdout and eval_every else 0
    if patience < 0:
        raise InputError(f"early-stopping must be >= 0 (0: off), got {patience}")
    if patience and (holdout == 0 or not eval_every):
        raise InputError("early-stopping watches the held-out loss: it needs held-out rows (--holdout > 0) and "
                         "--eval-every > 0")
    return patience


def check_em_rounds(rounds: int | None, table: bool, patience: int) -> int:
    """The resolved EM rounds (0: off): a round ends where early stopping would end training."""
    if rounds is None:
        return EM_ROUNDS if table and patience else 0
    if not 0 <= rounds <= MAX_EM_ROUNDS:
        raise InputError(f"em-rounds must lie in [0, {MAX_EM_ROUNDS}] (0: off), got {rounds}")
    if rounds and not patience:
        raise InputError("em-rounds fills the gaps each time early stopping ends a round: it needs early stopping "
                         "(--early-stopping N, with held-out rows)")
    return rounds


def is_image_data(data: str) -> bool:
    """Whether ``data`` names images (the built-in digits, a folder, an image .npy); no pixel is read."""
    return data in IMAGE_BUILTIN or (data not in BUILTIN and is_image_source(data))


CHOICES = {"lr_schedule": ("cosine", "constant"), "device": ("auto", "cpu", "cuda", "mps"),
           "precision": ("fp32", "bf16", "fp16"), "t_sampling": ("uniform", "importance")}

# Changing one of these changes the model or its data: a resume that does so is refused.
MODEL_FIELDS = ("data", "n_data", "seed", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
                "prediction_type", "variance_type", "network", "width", "depth", "emb_dim", "image_size", "channels",
                "pixel_range", "class_conditional", "label_dropout", "label_column", "schema", "holdout")
NETWORK_KINDS = ("auto", "mlp", "unet", "diffusers_unet2d")  # auto: the MLP for vectors, the UNet for images

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TYPES = {"dict": (dict,), "list | None": (list,), "str": (str,), "str | None": (str,), "int": (int,),
         "int | None": (int,), "int | str | None": (int, str), "float": (float, int), "float | None": (float, int),
         "bool": (bool,)}


def check_network_section(network: dict) -> None:
    """The ``network`` section names a known kind (or none: auto); the MLP's fields are the top-level width, depth and
    emb_dim, so its section holds nothing else."""
    kind = network.get("kind", "auto")
    if kind not in NETWORK_KINDS:
        raise InputError(f"unknown network kind {kind!r}; known: {', '.join(NETWORK_KINDS)}")
    if "num_classes" in network:
        raise InputError("the network section cannot set num_classes: --class-conditional sizes the class embedding "
                         "from the data's classes")
    if kind == "mlp" and set(network) - {"kind"}:
        raise InputError(f"the mlp network is sized by --width, --depth and --emb-dim; the network section holds "
                         f"{', '.join(sorted(set(network) - {'kind'}))}")


def check_training_memory(cfg: TrainConfig, images: bool) -> None:
    """Refuse, before any work, what cannot fit in this machine's memory: the points of a built-in 2-D set, and the
    MLP's training state (vector data; an image network's size is known only once its data are read)."""
    if cfg.data in BUILTIN:  # drawn afresh: 2 float64 values per point
        check_memory("--n-data", 16 * cfg.n_data, f"--n-data {cfg.n_data}: the data set")
    if images or cfg.network.get("kind", "auto") not in ("auto", "mlp"):
        return
    micro = max(1, min(cfg.batch_size, cfg.n_data if cfg.data in BUILTIN else cfg.batch_size) // cfg.grad_accum)
    params, kept = (a + (cfg.depth - 1) * (b - a) for a, b in zip(*(mlp_bytes(cfg, depth, micro) for depth in (1, 2))))
    if cfg.precision != "fp32":  # autocast keeps some activations in 16 bits
        kept //= 2
    # weights, EMA and Adam's two moments, with the activations of one micro-batch at the end of the forward pass;
    # the gradients replace those activations during the backward pass
    check_memory("--width, --depth or --batch-size", max(4 * params + kept, 5 * params),
                 f"training an MLP of width {cfg.width} and depth {cfg.depth} ({params // 4:,} parameters) on "
                 f"micro-batches of {micro}")


def mlp_bytes(cfg: TrainConfig, depth: int, batch: int) -> tuple[int, int]:
    """(bytes of the parameters, bytes of the tensors autograd keeps for the backward pass of a ``batch``) of
    the MLP ``cfg`` asks for, at ``depth`` and for 1-D data (a lower bound for any data), measured on the meta device
    (shapes only, nothing allocated). Both grow linearly with the depth: the caller extrapolates from depths 1 and 2."""
    with torch.device("meta"):
        net = MLP(1, cfg.num_train_timesteps, cfg.width, depth, cfg.emb_dim, cfg.variance_type == "learned_range")
        params = {id(p) for p in net.parameters()}
        kept = {}

        def keep(x):  # each tensor once, a view as its base, the parameters (and views of them) not at all
            base = x if x._base is None else x._base
            if id(base) not in params:
                kept[id(base)] = base
            return x

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
            net(torch.zeros(batch, 1), torch.zeros(batch))
    return (sum(p.numel() * p.element_size() for p in net.parameters()),
            sum(x.numel() * x.element_size() for x in kept.values()))


def flag(name: str) -> str:
    return name.replace("_", "-")


def check_values(values: dict, source: str) -> dict:
    """Every key must be a field and every value of the field's type (ints pass as floats, bools never as ints)."""
    for key, value in values.items():
        if key not in FIELDS:
            raise InputError(f"{source}: unknown key {key!r}; known: {', '.join(FIELDS)}")
        kind = str(FIELDS[key].type)
        ok = value is None and "None" in kind or (isinstance(value, TYPES[kind]) and
                                                  not (isinstance(value, bool) and kind != "bool"))
        if not ok:
            raise InputError(f"{source}: {key} must be of type {kind}, got {value!r}")
    return {k: float(v) if "float" in str(FIELDS[k].type) and v is not None else v for k, v in values.items()}


def read_config_file(path) -> dict:
    """A TOML (.toml) or YAML (.yaml, .yml) mapping of TrainConfig fields."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise InputError(f"config file {path} must end in .toml, .yaml or .yml")
    try:
        text = path.read_text()
        values = tomllib.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise InputError(f"config file {path} is not valid {suffix[1:].upper()}: {' '.join(str(e).split())}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise InputError(f"config file {path} must hold a mapping of options, not {type(values).__name__}")
    return check_values(values, str(path))


def read_run_config(run: Path) -> dict:
    """The resolved config saved in a run folder (keys that are not fields, like data_description, dropped)."""
    path = run / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(saved, dict):
        raise InputError(f"{path} is not a training config")
    values = check_values({k: v for k, v in saved.items() if k in FIELDS}, str(path))
    if "holdout" not in values and "data" in values and values["data"] not in (*BUILTIN, *IMAGE_BUILTIN):
        values["holdout"] = 0.0  # a run from before held-out rows trained on every row of its file
    return values


def scheduler_config_values(path) -> dict:
    """The fields a diffusers scheduler_config.json sets: schedule, prediction and variance type."""
    settings = read_scheduler_config(path, sampling_switches="ignore")
    if settings.ignored:  # e.g. DDPMScheduler's default clip_sample = true: a sampling choice, not the model's
        warnings.warn(f"{path}: ignoring the sampling-only setting(s) {', '.join(settings.ignored)}", stacklevel=2)
    schedule = settings.schedule.config
    if schedule["beta_schedule"] == "custom":
        raise InputError(f"{path}: trained_betas (or a schedule diffusers names differently) cannot be trained yet; "
                         "use a named beta_schedule")
    return schedule | {"prediction_type": settings.prediction_type, "variance_type": settings.variance_type}


def resolve(flags: dict, config_file=None, resume=None, scheduler_config=None) -> TrainConfig:
    """defaults < the resumed run's saved config < a diffusers scheduler config < the config file < the flags."""
    values = {}
    if resume is not None:
        values |= read_run_config(check_run_folder(Path(resume))) | {"out": str(resume)}
    if scheduler_config is not None:
        values |= scheduler_config_values(scheduler_config)
    if config_file is not None:
        values |= read_config_file(config_file)
    values |= check_values(flags, "command line")
    if resume is not None and Path(values["out"]) != Path(resume):
        raise InputError(f"--resume continues {resume} in place; do not give another --out ({values['out']})")
    cfg = TrainConfig(**values).validate()
    if resume is not None:
        check_resumable(read_run_config(Path(resume)), cfg)
    return cfg


def check_resumable(saved: dict, cfg: TrainConfig) -> None:
    """Refuse a resume whose config changes the model or its data; budgets, logging etc. may change."""
    for name in MODEL_FIELDS:
        if name in saved and saved[name] != getattr(cfg, name):
            raise InputError(f"cannot resume {cfg.out}: {name} was {saved[name]!r} and is now "
                             f"{getattr(cfg, name)!r}, which changes the model; start a new run instead")
