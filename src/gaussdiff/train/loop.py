"""The training loop, readable top to bottom, the same with one process or many under torchrun:
data -> loss (L_simple, hybrid or L_vlb) -> AdamW -> EMA -> logs and checkpoints, stopping at the budget,
a signal or a divergence; then the model is exported, if its weights are finite."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import threading
import time
import warnings
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import torch
from ema_pytorch import EMA
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..atomic import write_text_atomically
from ..columns import Table
from ..data import load_dataset
from ..data.files import codes_dtype, row_format
from ..data.schema import write_schema
from ..errors import InputError, Interrupted, TrainingError
from ..losses import ImportanceSampler, check_missing_values, training_loss
from ..nets import build_network, diffusers_unet2d_config, unet_config
from ..saved import SavedModel, class_conditioning, nonfinite_tensors
from ..schedule import make_schedule
from . import distributed
from .batches import GlobalBatches
from .config import TrainConfig, read_run_config
from .folder import (DATA_HASH, RunLock, check_run_folder, check_same_data, last_checkpoint, load_latest_checkpoint,
                     prepare_run, remove_leftovers, save_checkpoint, truncate_metrics)
from .gaps import GapFiller
from .impute_choice import choice_line, choose_method
from .heldout import KEYS, EarlyStopping, HeldOutLoss, training_and_heldout
from .logs import MetricsLog, tensorboard_writer
from .preview import write_preview
from .threads import SpeedMeter, ThreadChoice, available_cores, probe_seconds, probe_threads


def lr_factor(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup_steps`` times the cosine decay 0.5 (1 + cos(pi p)), p the budget used."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    return warm * (0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) if cfg.lr_schedule == "cosine" else 1.0)


def budget_used(cfg: TrainConfig, step: int, elapsed: float) -> float:
    """The fraction of the step or wall-time budget spent (the larger one, with both)."""
    return max(step / cfg.steps if cfg.steps else 0.0, elapsed / cfg.time_budget if cfg.time_budget else 0.0)


def diverged_message(run: Path, step: int) -> str:
    kept = last_checkpoint(run)
    kept = f"the last checkpoint, {kept}, is intact" if kept else \
        f"no checkpoint was written yet to {run / 'checkpoints'}"
    return f"the loss or its gradient became non-finite at step {step}; {kept}; try a smaller --lr"


def check_finite_weights(modules: dict[str, torch.nn.Module], run: Path) -> None:
    """TrainingError naming the first tensor of the named modules that holds NaN or Inf (nothing is exported then)."""
    for which, module in modules.items():
        if bad := nonfinite_tensors(module.state_dict()):
            raise TrainingError(f"the {which} weights are not finite ({next(iter(bad))} holds NaN or Inf), so no model "
                                f"was exported to {run / 'model'}; try a smaller --lr")


class StopSignals:
    """SIGINT and SIGTERM set ``received`` instead of killing the process, so the loop can checkpoint first."""

    def __init__(self):
        self.received = 0

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.precision == "bf16" else torch.float16)


def train(cfg: TrainConfig, *, overwrite: bool = False, resume: bool = False, progress: bool = True) -> Path:
    """Train as ``cfg`` says (``resume``: continue the run folder ``cfg.out`` exactly); returns the run folder."""
    cfg.validate()
    procs = distributed.start(cfg.device)
    try:
        return _train(cfg, procs, overwrite, resume, progress)
    finally:
        distributed.stop(procs)


@dataclass
class Learner:
    """Everything a step changes and a checkpoint holds: network, EMA, optimiser, grad scaler, t sampler."""

    model: torch.nn.Module
    ema: EMA
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    t_sampler: ImportanceSampler | None

    @classmethod
    def create(cls, cfg: TrainConfig, network: dict, T: int, device: torch.device) -> "Learner":
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = build_network(network).to(device)
        return cls(model, EMA(model, beta=cfg.ema_decay, update_after_step=0, update_every=1,
                              include_online_model=False),
                   torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     fused=device.type in ("cpu", "cuda") or None),
                   torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
                   ImportanceSampler(T) if cfg.t_sampling == "importance" else None)

    def state_dict(self, step: int, elapsed: float) -> dict:
        state = dict(step=step, elapsed_s=elapsed, model=self.model.state_dict(), ema=self.ema.state_dict(),
                     optimizer=self.opt.state_dict(), scaler=self.scaler.state_dict())
        if self.t_sampler is not None:
            state["t_sampler"] = self.t_sampler.state_dict()
        return state

    def load_state(self, state: dict) -> None:
        """Take the state :meth:`state_dict` returned (or a checkpoint holds)."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.t_sampler is not None and "t_sampler" in state:  # absent: importance sampling switched on now
            self.t_sampler.load_state_dict(state["t_sampler"])

    def restore(self, run: Path, device: torch.device) -> tuple[int, float, dict]:
        """Load the newest readable checkpoint; returns (step, elapsed seconds, the checkpoint's state)."""
        path, state = load_latest_checkpoint(run, device)
        try:
            self.load_state(state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise InputError(f"{path} does not match the model of {run / 'config.json'}: "
                             f"{' '.join(str(e).split())[:200]}") from None
        return state["step"], state["elapsed_s"], state


def auto_threads(cfg: TrainConfig, procs: distributed.Processes, run: Path, resume: bool,
                 probe_step) -> ThreadChoice:
    """What ``--threads auto`` means for this run: on resume, the count the run recorded; on an accelerator or a
    single core, the cores this process may use (its share under torchrun); else the faster of 1 and N threads in a
    probe of ``probe_step`` (one step of throwaway copies), rank 0's choice on every rank."""
    if resume:
        recorded = read_run_config(run).get("threads")  # None: a run recorded before auto used torch's default
        return ThreadChoice(torch.get_num_threads() if recorded is None else recorded, why="as the run recorded")
    n = available_cores(int(os.environ.get("LOCAL_WORLD_SIZE", procs.world)))
    if procs.device.type != "cpu" or n == 1:
        return ThreadChoice(n, why=f"the steps run on {procs.device.type}" if n > 1 else "1 core available")
    with torch.random.fork_rng(devices=[]):  # the run's random streams stay as they were
        choice = probe_threads(probe_step, n, probe_seconds(cfg.time_budget),
                               together=lambda stop: bool(distributed.any_rank(procs, int(stop))))
    return dataclasses.replace(choice, threads=int(distributed.agree(procs, str(choice.threads))))


def with_null_labels(cond: dict, dropped: torch.Tensor | None, null: int) -> dict:
    """``cond`` with cond["class"] replaced by the null label where ``dropped`` (label dropout, Ho & Salimans)."""
    if dropped is None:
        return cond
    return cond | {"class": torch.where(dropped.to(cond["class"].device), null, cond["class"])}


def network_config(cfg: TrainConfig, sample_shape: tuple[int, ...], T: int, num_classes: int = 0) -> dict:
    """The full config of the network ``cfg`` asks for (kind auto: the MLP for vectors, the UNet for images), with a
    class embedding for ``num_classes`` classes (and the null label) when that is positive."""
    section = dict(cfg.network)
    kind = section.pop("kind", "auto")
    if kind == "auto":
        kind = "mlp" if len(sample_shape) == 1 else "unet"
    learn_variance = cfg.variance_type == "learned_range"
    if kind == "mlp":
        return dict(kind="mlp", sample_shape=list(sample_shape), num_train_timesteps=T, width=cfg.width,
                    depth=cfg.depth, emb_dim=cfg.emb_dim, learn_variance=learn_variance, num_classes=num_classes)
    make = diffusers_unet2d_config if kind == "diffusers_unet2d" else unet_config
    return make(list(sample_shape), T, learn_variance=learn_variance, **section, num_classes=num_classes)


def claim_run_folder(cfg: TrainConfig, procs: distributed.Processes, overwrite: bool, resume: bool,
                     stack: ExitStack, data_hash: str | None) -> Path:
    """Rank 0 creates (or checks) the run folder and locks it, refuses a resume on changed data (``data_hash``, rank
    0's) and removes what a killed write left there; every rank learns its verdict."""
    run, error = Path(cfg.out), None
    if procs.main:
        try:
            run = check_run_folder(run) if resume else prepare_run(cfg.out, overwrite, cfg.data)
            stack.enter_context(RunLock(run))
            if resume:
                check_same_data(run, cfg.data, data_hash)
            remove_leftovers(run)
        except InputError as e:
            error = str(e)
    if (error := distributed.agree(procs, error)) is not None:
        raise InputError(error)
    return run


def _train(cfg: TrainConfig, procs: distributed.Processes, overwrite: bool, resume: bool, progress: bool) -> Path:
    device = procs.device
    if cfg.precision == "fp16" and device.type != "cuda":
        raise InputError("fp16 needs a CUDA device (a gradient scaler); use --precision bf16 on CPU")
    if isinstance(cfg.threads, int):  # auto: chosen once the model exists (auto_threads)
        torch.set_num_threads(cfg.threads)
    data = load_dataset(cfg.data, cfg.n_data, cfg.seed, image_size=cfg.image_size, channels=cfg.channels,
                        pixel_range=cfg.pixel_range, class_conditional=cfg.class_conditional,
                        label_column=cfg.label_column, schema=cfg.schema)
    data_hash = data.sha256() if procs.main else None  # of the whole data set, as a resume checks it
    if data.has_missing:  # refused before the run folder exists
        check_missing_values(cfg.loss_type)
        if cfg.em_rounds and procs.world > 1:
            raise InputError("EM rounds (--em-rounds, on by default for a table with gaps) run in one process; pass "
                             "--em-rounds 0 to train under torchrun")
    data, heldout = training_and_heldout(cfg, data)
    schedule = make_schedule(cfg.beta_schedule, cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    batches = GlobalBatches(len(data), cfg.batch_size, cfg.grad_accum, cfg.seed, procs.rank, procs.world)
    T = schedule.T
    num_classes = len(data.classes) if data.conditional else 0
    network = network_config(cfg, data.sample_shape, T, num_classes)  # a bad option fails here, before the run folder
    label_dropout = cfg.label_dropout if num_classes else 0.0
    objective = partial(training_loss, schedule=schedule, prediction_type=cfg.prediction_type, loss_type=cfg.loss_type,
                        variance_type=cfg.variance_type, loss_weighting=cfg.loss_weighting,
                        min_snr_gamma=cfg.min_snr_gamma)  # per-sample loss of (net, x0, t=, eps=[, cond=])

    with ExitStack() as stack:
        run = claim_run_folder(cfg, procs, overwrite, resume, stack, data_hash)
        learner = Learner.create(cfg, network, T, device)
        model = learner.model
        step, elapsed, restored = learner.restore(run, device) if resume else (0, 0.0, {})
        stopper = EarlyStopping(cfg.early_stopping, cfg.eval_every) if cfg.early_stopping and procs.main else None
        if stopper:
            stopper.load_state(restored)
        filler = GapFiller(cfg.em_rounds, {"train": data} | ({"heldout": heldout} if heldout else {}), cfg.seed) \
            if cfg.em_rounds and data.has_missing else None
        if filler:
            filler.load_state(restored)
        torch.manual_seed(cfg.seed + procs.rank)  # rank-local randomness; the batch stream is GlobalBatches'
        net = DistributedDataParallel(model) if procs.world > 1 else model
        forward = torch.compile(net) if cfg.compile else net
        micro = batches.local // cfg.grad_accum

        def take_step(learner: Learner, net, forward, log: MetricsLog, step: int, lr: float) -> float:
            """One optimiser step of ``learner`` at ``lr`` on the global batch of ``step`` (``forward``: ``net``,
            compiled or not); returns the gradient norm."""
            for group in learner.opt.param_groups:
                group["lr"] = lr
            width = data.dequant_width  # a table's integer columns: fresh U[0, 1) draws at every step
            dequant = batches.dequant_noise(step, width) if width else None
            batch = data.get(batches.rows(step), dequant=dequant).to(device)
            t, eps, weights, dropped = batches.t_and_noise(step, T, data.sample_shape, learner.t_sampler,
                                                           label_dropout)
            x, cond, mask = batch.x, with_null_labels(batch.cond, dropped, num_classes), batch.mask
            learner.opt.zero_grad(set_to_none=True)
            seen = []  # per-sample losses for the importance sampler of t
            for i in range(cfg.grad_accum):  # the mean over the global batch, micro-batch by micro-batch
                part = slice(i * micro, (i + 1) * micro)
                with distributed.no_sync(net, i == cfg.grad_accum - 1), autocast(cfg, device):
                    loss, vlb = objective(forward, x[part], t=t[part], eps=eps[part].to(device),
                                          mask=None if mask is None else mask[part],  # missing values: MissDiff
                                          **({"cond": {k: v[part] for k, v in cond.items()}} if cond else {}))
                # importance weights 1 / (T p_t) keep the mean an unbiased estimate of the uniform-t loss
                learner.scaler.scale((loss.float() * weights[part].to(device)).sum() / batches.local).backward()
                log.add(loss.detach(), t[part])
                seen.append((vlb if vlb is not None else loss).detach().float())
            learner.scaler.unscale_(learner.opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(learner.model.parameters(), cfg.grad_clip).item()
            if not math.isfinite(grad_norm) and not learner.scaler.is_enabled():  # fp16: the scaler skips such steps
                raise TrainingError(diverged_message(run, step))
            if learner.t_sampler is not None:  # the same global-batch history on every rank
                learner.t_sampler.update(distributed.gather_global(procs, t),
                                         distributed.gather_global(procs, torch.cat(seen)))
            learner.scaler.step(learner.opt)
            learner.scaler.update()
            learner.ema.update()
            return grad_norm

        if cfg.threads == "auto":  # timed before the budget's clock starts: the probe is set-up, not training
            probe_lr = cfg.lr * lr_factor(cfg, step, budget_used(cfg, step, elapsed))

            @cache
            def spare() -> Learner:
                """A throwaway copy, made at the probe's first step (none where no probe runs), without the t sampler
                (its update gathers over ranks)."""
                twin = dataclasses.replace(Learner.create(cfg, network, T, device), t_sampler=None)
                twin.load_state(copy.deepcopy(learner.state_dict(step, elapsed)))  # no tensor shared with the run
                return twin

            def probe_step():
                try:
                    take_step(spare(), spare().model, spare().model, MetricsLog(None, T), step, probe_lr)
                except TrainingError:  # a copy that diverged still times its steps; the run meets its own divergence
                    pass

            choice = auto_threads(cfg, procs, run, resume, probe_step)
            torch.set_num_threads(choice.threads)
            cfg = dataclasses.replace(cfg, threads=choice.threads)  # what config.json records, and a resume reuses
            if procs.main:
                print(choice.line(), flush=True)

        log = MetricsLog(run / "metrics.jsonl" if procs.main else None, T, procs.world,
                         tensorboard_writer(run) if cfg.tensorboard and procs.main else None)
        stack.callback(log.close)
        if procs.main:
            truncate_metrics(run / "metrics.jsonl", step)  # lines a killed run logged after its checkpoint
            resolved = dataclasses.asdict(cfg) | {"data_description": data.description, DATA_HASH: data_hash}
            write_text_atomically(run / "config.json", json.dumps(resolved, indent=2))
            if isinstance(data.transform, Table):  # the column kinds, to read, edit and pass back as --schema
                write_schema(run / "columns.json", data.transform.specs)

        conditioning = class_conditioning(data.classes, label_dropout) if num_classes else None
        written_as = (None, codes_dtype(data.data)) if isinstance(data.transform, Table) else \
            row_format(cfg.data, cfg.label_column, data.data)  # scans every value once, not per preview

        def exported() -> SavedModel:  # the EMA weights, as they are saved and sampled
            return SavedModel(learner.ema.ema_model, schedule, cfg.prediction_type, data.transform, data.name,
                              cfg.variance_type, conditioning, *written_as)

        def checkpoint() -> Path | None:
            state = learner.state_dict(step, time.perf_counter() - start) | (stopper.state_dict() if stopper else {}) \
                | (filler.state_dict() if filler else {})
            return save_checkpoint(run, step, state, cfg.keep_checkpoints) if procs.main else None

        signals = stack.enter_context(StopSignals())
        bar = stack.enter_context(tqdm(total=cfg.steps or int(cfg.time_budget), initial=step if cfg.steps else 0,
                                       disable=not (progress and procs.main), unit="step" if cfg.steps else "s",
                                       desc="train", dynamic_ncols=True))

        def held_out_loss() -> HeldOutLoss | None:  # its fixed batches carry the data sets' fills of the moment
            return HeldOutLoss(objective, data, heldout, cfg.eval_size, T, cfg.seed, device, micro) \
                if cfg.eval_every and procs.main else None

        held_out = held_out_loss()
        start = time.perf_counter() - elapsed
        meter = SpeedMeter(step)
        last_log, shown = (time.perf_counter(), step), {}
        used = budget_used(cfg, step, time.perf_counter() - start)
        stopped = cfg.early_stopping and distributed.any_rank(procs, bool(stopper and stopper.done(step)))
        while used < 1 and not stopped:  # each step ends by updating ``used``, so the last one knows it is the last
            lr = cfg.lr * lr_factor(cfg, step, used)
            grad_norm = take_step(learner, net, forward, log, step, lr)
            step += 1
            meter.tick(step)
            log.end_step(grad_norm)

            now = time.perf_counter()
            used = budget_used(cfg, step, now - start)
            evaluating = cfg.eval_every and (step % cfg.eval_every == 0 or used >= 1)  # and at the end
            if step % cfg.log_every == 0 or evaluating or used >= 1:
                scores = held_out(learner.ema.ema_model) if evaluating and held_out else {}
                if stopper and scores:
                    stopper.update(step, scores[KEYS["heldout"]], learner.ema, model)
                if evaluating and cfg.early_stopping:  # decided on the main process, followed by every rank
                    stopped = distributed.any_rank(procs, bool(stopper and stopper.done(step)))
                if stopped and filler and filler.rounds_left:  # EM: fill the gaps, train on from the best weights
                    stopper.restore(learner.ema, model)
                    filler.fill(exported(), step)
                    stopper, held_out = EarlyStopping(cfg.early_stopping, cfg.eval_every), held_out_loss()
                    stopped = False
                row = log.write(step, lr, (step - last_log[1]) / (now - last_log[0]), now - start, scores)
                last_log = (now, step)
                shown |= dict(loss=f"{row['loss']:.4f}", it_s=f"{row['steps_per_s']:.0f}")
                if "eval_heldout_loss" in row:
                    shown["heldout"] = f"{row['eval_heldout_loss']:.4f}"
                bar.set_postfix(shown)
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            if cfg.preview_every and step % cfg.preview_every == 0 and procs.main:
                write_preview(exported(), run, step)
            bar.update((step if cfg.steps else min(int(now - start), bar.total)) - bar.n)
            if signum := distributed.any_rank(procs, signals.received):
                path = checkpoint() if step % cfg.checkpoint_every else last_checkpoint(run)
                raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {path}; "
                                  f"continue with: gaussdiff train --resume {run}", signum)
        speed = meter.speed(step, torch.get_num_threads(), cfg.steps, cfg.time_budget,
                            "images" if len(data.sample_shape) > 1 else "vectors", bool(stopped))
        if step % cfg.checkpoint_every:  # the end of the budget: a run can be continued from where it stopped
            checkpoint()
        if stopper and stopper.weights:  # the exported model: the weights of the lowest held-out loss
            stopper.restore(learner.ema, model)
        if procs.main:
            check_finite_weights({"EMA": learner.ema.ema_model, "online": model}, run)
            choice = choose_method(exported(), heldout.data, heldout.labels if heldout.conditional else None,
                                   cells=cfg.impute_check_cells, seed=cfg.seed) \
                if data.has_missing and heldout and cfg.impute_check_cells else None
            dataclasses.replace(exported(), imputation=choice).save(run / "model", online=model)
    if procs.main:  # after the progress bar closed
        print(speed.line(), flush=True)
        if filler and filler.filled_at:
            print(filler.line(), flush=True)
        if choice:
            print(choice_line(choice), flush=True)
        if stopper and stopper.weights:
            print(stopper.line(step), flush=True)
        for warning in speed.warnings():
            warnings.warn(warning, stacklevel=3)
    return run
