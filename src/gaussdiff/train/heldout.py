"""The held-out loss, watched during training (nanoGPT's ``estimate_loss``): the training objective of the EMA
model (what is exported and sampled), in eval mode, on held-out data and on training rows, so that the gap between
the two shows over-fitting and their level under-fitting.

Both are means over ``size`` draws of one FIXED (t, eps), made once from its own generator and shared by the two
sets (common random numbers), so each curve moves only with the model and the gap is not drawn twice. The draw, from
``torch.Generator().manual_seed(heldout_seed(seed))``, in this order:
    training rows  randperm(n_train)[:min(size, n_train)], sorted;  held-out rows  the same with n_heldout;
    t ~ U{1..T} (size,) by randint;  eps ~ N(0, I) (size, *sample_shape) by randn;
    then, only for a table with integer columns, u ~ U[0, 1) (size, dequant_width) float64 by rand (draw i's
    dequantization, the same for both sets);
draw i of a set takes its row i mod (its number of rows): a set smaller than ``size`` is seen at more (t, eps).
A table's missing entries are left out of both losses by the batches' masks, as in training (MissDiff).
Nothing here draws from the training streams (the batches' (seed, step) generators, torch's global generator).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..data import Dataset
from ..data.dataset import load_heldout
from ..data.split import heldout_seed
from .config import TrainConfig

KEYS = {"train": "eval_train_loss", "heldout": "eval_heldout_loss"}  # their names in metrics.jsonl


def training_and_heldout(cfg: TrainConfig, data: Dataset) -> tuple[Dataset, Dataset | None]:
    """(the data training reads, the held-out data or None) for the whole data set ``data`` that ``cfg.data``
    names: a built-in 2-D set keeps every point and is held out by a fresh draw of ``cfg.eval_size`` points (another
    seed), digits by its test split, a file by ``cfg.holdout`` of its rows (none when 0)."""
    if cfg.holdout is not None:  # a file
        return data.split(cfg.holdout, cfg.seed)
    return data, load_heldout(cfg.data, cfg.eval_size, cfg.seed, cfg.class_conditional) if cfg.eval_every else None


class HeldOutLoss:
    """Call with the EMA model: {"eval_train_loss": ..., "eval_heldout_loss": ...} (the second only with held-out
    data), each the mean per-sample training objective over the fixed draw of the module docstring."""

    def __init__(self, objective: Callable, train: Dataset, heldout: Dataset | None, size: int, T: int, seed: int,
                 device: torch.device, chunk: int):
        """``objective(net, x0, t=, eps=, mask=[, cond=])`` returns (per-sample loss (B,), ...), as ``training_loss``
        does; ``chunk``: samples per forward pass."""
        self.objective, self.chunk = objective, chunk
        g = torch.Generator().manual_seed(heldout_seed(seed))
        sets = {"train": train} | ({"heldout": heldout} if heldout is not None else {})
        picked = {name: torch.randperm(len(d), generator=g)[:size].sort().values for name, d in sets.items()}
        self.t = torch.randint(1, T + 1, (size,), generator=g)  # on the CPU, as in training
        self.eps = torch.randn((size, *train.sample_shape), generator=g).to(device)
        width = train.dequant_width
        dequant = torch.rand((size, width), generator=g, dtype=torch.float64) if width else None
        draws = torch.arange(size)
        self.batches = {KEYS[name]: sets[name].get(rows[draws % len(rows)], dequant=dequant).to(device)
                        for name, rows in picked.items()}

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()  # no dropout: nothing random, and the network that is sampled
        try:
            return {key: self._mean_loss(model, batch) for key, batch in self.batches.items()}
        finally:
            model.train(was_training)

    def _mean_loss(self, model: torch.nn.Module, batch) -> float:
        total = 0.0
        for start in range(0, len(self.t), self.chunk):
            part = slice(start, start + self.chunk)
            cond = {"cond": {k: v[part] for k, v in batch.cond.items()}} if batch.cond else {}
            mask = None if batch.mask is None else batch.mask[part]
            loss = self.objective(model, batch.x[part], t=self.t[part], eps=self.eps[part], mask=mask, **cond)[0]
            total += loss.double().sum().item()
        return total / len(self.t)


class EarlyStopping:
    """Stop when the held-out loss has not improved for ``patience`` evaluations (``every`` steps apart), and export
    the weights it was lowest at (Keras's ``EarlyStopping(restore_best_weights=True)``): on a small table the loss
    turns up after a few hundred full-batch steps, and the weights past it copy training rows (issue 13's probe).
    The best weights (EMA and online) are kept in memory and in each checkpoint (key ``early_stopping``), so a
    resumed run stops where a whole one does."""

    KEY = "early_stopping"

    def __init__(self, patience: int, every: int):
        self.patience, self.every = patience, every
        self.step: int | None = None
        self.loss = math.inf
        self.weights: dict | None = None  # {"ema": state dict, "model": state dict} at self.step

    def update(self, step: int, loss: float, ema: torch.nn.Module, model: torch.nn.Module) -> None:
        if loss < self.loss:
            self.step, self.loss = step, loss
            self.weights = {"ema": _copy(ema.state_dict()), "model": _copy(model.state_dict())}

    def restore(self, ema: torch.nn.Module, model: torch.nn.Module) -> None:
        """Load the weights of the lowest held-out loss into ``ema`` and ``model``."""
        ema.load_state_dict(self.weights["ema"])
        model.load_state_dict(self.weights["model"])

    def done(self, step: int) -> bool:
        return self.step is not None and step - self.step >= self.patience * self.every

    def line(self, step: int) -> str:
        stopped = f"stopped early at step {step:,}: " if self.done(step) else ""
        return (f"{stopped}the held-out loss was lowest at step {self.step:,} ({self.loss:.4f}); the model holds the "
                f"weights of that step")

    def state_dict(self) -> dict:
        return {self.KEY: {"step": self.step, "loss": self.loss, "weights": self.weights}} \
            if self.step is not None else {}

    def load_state(self, state: dict) -> None:
        saved = state.get(self.KEY)
        if saved is not None:
            self.step, self.loss, self.weights = saved["step"], saved["loss"], saved["weights"]


def _copy(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}
