"""The training loop, readable top to bottom: data -> L_simple -> AdamW -> EMA -> logs and checkpoints.

A run folder holds the resolved ``config.json``, ``metrics.jsonl``, ``checkpoints/`` and the exported
``model/`` (EMA weights in ``model.safetensors``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from ema_pytorch import EMA
from tqdm import tqdm

from .atomic import write_atomically, write_text_atomically
from .data import BUILTIN, load_dataset
from .errors import InputError, TrainingError
from .losses import simple_loss
from .nets import MLP
from .param import check_prediction_type
from .saved import SavedModel
from .schedule import make_schedule


@dataclass
class TrainConfig:
    """Every option of ``gaussdiff train``; the resolved values are saved as RUN/config.json."""

    data: str = "moons"
    out: str = "runs/moons"
    n_data: int = 100_000  # points drawn from a built-in data set (files are used whole)
    seed: int = 0
    steps: int | None = None  # step budget; with time_budget, whichever ends first
    time_budget: float | None = None  # seconds of training wall time
    batch_size: int = 1024
    lr: float = 3e-3
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
    width: int = 64  # on a CPU time budget, more steps of a small MLP beat fewer of a wide one
    depth: int = 3
    emb_dim: int = 128
    threads: int | None = None
    log_every: int = 50
    checkpoint_every: int = 2000
    keep_checkpoints: int = 2

    def validate(self) -> "TrainConfig":
        if self.steps is None and self.time_budget is None:
            self.steps = 5000
        positive = ["n_data", "batch_size", "num_train_timesteps", "width", "depth", "emb_dim", "log_every",
                     "checkpoint_every", "keep_checkpoints"] + [k for k in ("steps", "threads") if getattr(self, k)
                                                                is not None]
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ["lr", "time_budget"]:
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"{name.replace('_', '-')} must be a positive number, got {value}")
        if not self.grad_clip > 0:  # a negative one flips the gradient (clip_grad_norm_ scales by it); inf is off
            raise InputError(f"grad-clip must be positive, got {self.grad_clip}")
        if self.warmup_steps < 0 or not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"warmup-steps and weight-decay must be >= 0, got {self.warmup_steps} and "
                             f"{self.weight_decay}")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema-decay must lie in [0, 1), got {self.ema_decay}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise InputError(f"unknown lr-schedule {self.lr_schedule!r}; known: cosine, constant")
        check_prediction_type(self.prediction_type)
        return self


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay 0.5 (1 + cos(pi p)) with p the budget used."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    return warm * (0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) if cfg.lr_schedule == "cosine" else 1.0)


def budget_used(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """The fraction of the step or wall-time budget spent (the larger one, with both)."""
    return max(step / cfg.steps if cfg.steps else 0.0, elapsed / cfg.time_budget if cfg.time_budget else 0.0)


def diverged_message(run: Path, step: int) -> str:
    kept = sorted((run / "checkpoints").glob("step_*.pt"))
    kept = f"the last checkpoint, {kept[-1]}, is intact" if kept else \
        f"no checkpoint was written yet to {run / 'checkpoints'}"
    return f"the loss or its gradient became non-finite at step {step}; {kept}; try a smaller --lr"


def epoch_batches(x: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless minibatches, reshuffled every epoch by ``generator`` (a short final batch is dropped)."""
    batch_size = min(batch_size, len(x))
    while True:
        perm = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield x[perm[i:i + batch_size]]


def prepare_run(out: str, overwrite: bool) -> Path:
    """A fresh run folder; an existing non-empty one is refused unless ``overwrite``."""
    run = Path(out)
    if not run.parent.is_dir():
        raise InputError(f"cannot create run folder {run}: {run.parent} does not exist")
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        if not overwrite:
            raise InputError(f"{run} already exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(run) if run.is_dir() else run.unlink()
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run


def save_checkpoint(run: Path, step: int, state: dict, keep: int) -> Path:
    """checkpoints/step_XXXXXXXX.pt with plain state dicts (loadable with weights_only=True), atomically."""
    folder = run / "checkpoints"
    path = folder / f"step_{step:08d}.pt"
    write_atomically(path, lambda f: torch.save(state, f))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


class MetricsLog:
    """Appends one JSON object a line to RUN/metrics.jsonl: interval means of loss and grad norm,
    learning rate, speed, and the loss in each quartile of t (as improved-diffusion logs it)."""

    def __init__(self, path: Path, T: int):
        self.path, self.T = path, T
        self._reset()

    def _reset(self):
        self.n, self.loss, self.grad, self.q_sum, self.q_n = 0, 0.0, 0.0, [0.0] * 4, [0] * 4

    def add(self, per_sample_loss: torch.Tensor, t: torch.Tensor, grad_norm: float) -> None:
        self.n += 1
        self.loss += per_sample_loss.mean().item()
        self.grad += grad_norm
        q = ((t - 1) * 4 // self.T).clamp(0, 3)
        for i in range(4):
            sel = q == i
            self.q_sum[i] += per_sample_loss[sel].sum().item()
            self.q_n[i] += int(sel.sum())

    def write(self, step: int, lr: float, steps_per_s: float, elapsed: float) -> dict:
        row = dict(step=step, loss=self.loss / self.n, lr=lr, grad_norm=self.grad / self.n,
                   steps_per_s=steps_per_s, elapsed_s=elapsed)
        row.update({f"loss_q{i}": s / max(n, 1) for i, (s, n) in enumerate(zip(self.q_sum, self.q_n))})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        self._reset()
        return row


def train(cfg: TrainConfig, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Train a diffusion model as ``cfg`` says; returns the run folder."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    x, transform, description = load_dataset(cfg.data, cfg.n_data, cfg.seed)
    schedule = make_schedule(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    run = prepare_run(cfg.out, overwrite)
    resolved = dataclasses.asdict(cfg) | {"data_description": description}
    write_text_atomically(run / "config.json", json.dumps(resolved, indent=2))

    torch.manual_seed(cfg.seed)
    net = MLP(x.shape[1], cfg.num_train_timesteps, cfg.width, cfg.depth, cfg.emb_dim)
    ema = EMA(net, beta=cfg.ema_decay, update_after_step=0, update_every=1, include_online_model=False)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    batches = epoch_batches(x, cfg.batch_size, generator)
    log = MetricsLog(run / "metrics.jsonl", cfg.num_train_timesteps)

    bar = tqdm(total=cfg.steps or int(cfg.time_budget), disable=not progress, unit="step" if cfg.steps else "s",
               desc="train", dynamic_ncols=True)
    start, step, last_log = time.perf_counter(), 0, (time.perf_counter(), 0)
    while (used := budget_used(cfg, step, time.perf_counter() - start)) < 1:
        lr = cfg.lr * lr_factor(cfg, step, used)
        for group in opt.param_groups:
            group["lr"] = lr

        x0 = next(batches)
        t = torch.randint(1, schedule.T + 1, (len(x0),), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        loss = simple_loss(net, x0, schedule, cfg.prediction_type, t=t, eps=eps)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip).item()
        if not math.isfinite(grad_norm):
            raise TrainingError(diverged_message(run, step))
        opt.step()
        ema.update()
        step += 1
        log.add(loss.detach(), t, grad_norm)

        now = time.perf_counter()
        if step % cfg.log_every == 0:
            row = log.write(step, lr, (step - last_log[1]) / (now - last_log[0]), now - start)
            last_log = (now, step)
            bar.set_postfix(loss=f"{row['loss']:.4f}", it_s=f"{row['steps_per_s']:.0f}")
        if step % cfg.checkpoint_every == 0:
            save_checkpoint(run, step, dict(step=step, model=net.state_dict(), ema=ema.state_dict(),
                                            optimizer=opt.state_dict()), cfg.keep_checkpoints)
        bar.update((step if cfg.steps else min(int(now - start), bar.total)) - bar.n)
    bar.close()
    if log.n:  # the last, partial interval
        log.write(step, lr, (step - last_log[1]) / (time.perf_counter() - last_log[0]), time.perf_counter() - start)

    data_name = cfg.data if cfg.data in BUILTIN else str(Path(cfg.data).resolve())
    SavedModel(ema.ema_model, schedule, cfg.prediction_type, transform, data_name).save(run / "model", online=net)
    return run
