"""Tests of gaussdiff.train: the run folder it writes, that it learns, that it is reproducible, its
learning-rate schedule and minibatches, its checks, user data files, and what happens on NaN."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from gaussdiff.train import loop as train_loop
from gaussdiff.cli import main
from gaussdiff.data.split import split_rows
from gaussdiff.errors import InputError, TrainingError
from gaussdiff.nets import MLP
from gaussdiff.saved import load_model
from gaussdiff.train import GlobalBatches, TrainConfig, lr_factor, train

# Tiny models contend badly for 2 shared cores with torch's default thread count.

TINY = dict(data="moons", n_data=2000, batch_size=128, width=32, depth=1, emb_dim=16, num_train_timesteps=50,
            warmup_steps=5, threads=1)
METRIC_KEYS = {"step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed_s", "loss_q0", "loss_q1", "loss_q2",
               "loss_q3"}


def tiny(out, **overrides) -> TrainConfig:
    return TrainConfig(out=str(out), **(TINY | dict(steps=40, log_every=10, checkpoint_every=10) | overrides))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """40 steps, a metrics line every 10 and a checkpoint every 10 (2 kept)."""
    cfg = tiny(tmp_path_factory.mktemp("train") / "run")
    return train(cfg, progress=False), cfg


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the run folder ----------------------------------------------------------------------------

def test_run_folder_layout(run):
    path, _ = run
    assert sorted(p.name for p in path.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl", "model"]
    assert sorted(p.name for p in (path / "model").iterdir()) == ["config.json", "model.safetensors",
                                                                   "online.safetensors", "scheduler_config.json"]
    assert not [p for p in path.rglob(".*")], "temporary files left behind"


def test_config_json_is_the_resolved_config(run):
    path, cfg = run
    saved = json.loads((path / "config.json").read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(TrainConfig)} | {"data_description", "data_sha256"}
    for name, value in dataclasses.asdict(cfg).items():
        assert saved[name] == value, name
    assert saved["steps"] == 40 and saved["width"] == 32 and saved["threads"] == 1
    assert saved["data"] == "moons" and "moons" in saved["data_description"]


def test_validate_accepts_edge_values():
    TrainConfig(grad_clip=math.inf, warmup_steps=0, weight_decay=0.0, ema_decay=0.0).validate()


def test_validate_resolves_the_default_budget():
    cfg = TrainConfig().validate()
    assert cfg.steps == 5000 and cfg.time_budget is None
    assert TrainConfig(time_budget=2.0).validate().steps is None  # time alone bounds the run


def test_metrics_lines(run):
    path, cfg = run
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    for r in rows:  # the last line also carries the end-of-training held-out evaluation
        assert set(r) == METRIC_KEYS | ({"eval_train_loss", "eval_heldout_loss"} if r is rows[-1] else set())
        assert all(isinstance(r[k], (int, float)) and math.isfinite(r[k]) for k in METRIC_KEYS)
        assert 0 < r["loss"] < 10 and r["grad_norm"] > 0 and r["steps_per_s"] > 0 and r["elapsed_s"] > 0
        assert all(r[f"loss_q{i}"] > 0 for i in range(4))
        # The lr logged is the one of the interval's last step (0-based step - 1).
        assert r["lr"] == pytest.approx(cfg.lr * lr_factor(cfg, r["step"] - 1, (r["step"] - 1) / cfg.steps),
                                        rel=1e-12)
    assert [r["elapsed_s"] for r in rows] == sorted(r["elapsed_s"] for r in rows)


def test_checkpoints_are_plain_state_dicts(run):
    path, cfg = run
    files = sorted((path / "checkpoints").iterdir())
    assert [f.name for f in files] == ["step_00000030.pt", "step_00000040.pt"]  # keep_checkpoints = 2
    for f in files:
        ckpt = torch.load(f, weights_only=True)
        assert set(ckpt) == {"step", "elapsed_s", "model", "ema", "optimizer", "scaler", "sha256"}
        assert len(ckpt["sha256"]) == 64 and int(ckpt["sha256"], 16) >= 0  # a hex SHA-256 of the rest
        assert ckpt["step"] == int(f.stem.split("_")[1])
        net = MLP(2, cfg.num_train_timesteps, cfg.width, cfg.depth, cfg.emb_dim)
        net.load_state_dict(ckpt["model"])  # strict: every key, every shape
        assert all(torch.is_tensor(v) for v in ckpt["model"].values())
        opt = torch.optim.AdamW(net.parameters())
        opt.load_state_dict(ckpt["optimizer"])
        assert opt.state[next(iter(net.parameters()))]["step"] == ckpt["step"]
    a, b = (torch.load(f, weights_only=True)["model"] for f in files)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_keep_checkpoints_bounds_the_folder(tmp_path):
    path = train(tiny(tmp_path / "r", steps=12, checkpoint_every=2, keep_checkpoints=3, log_every=4),
                 progress=False)
    assert [p.name for p in sorted((path / "checkpoints").iterdir())] == [
        "step_00000008.pt", "step_00000010.pt", "step_00000012.pt"]


def test_exported_model_matches_the_config(run):
    path, cfg = run
    model = load_model(path)
    assert model.network.config == dict(kind="mlp", sample_shape=[2], num_train_timesteps=50, width=32, depth=1,
                                        emb_dim=16, learn_variance=False, num_classes=0, cond_keys=[])
    assert model.schedule.T == 50 and model.prediction_type == cfg.prediction_type and model.data_name == "moons"
    assert model.transform.to_dict() == {"kind": "standardize", "mean": [0.0, 0.0], "std": [1.0, 1.0]}


# --- learning and reproducibility --------------------------------------------------------------

def test_loss_decreases(tmp_path):
    """An untrained network's eps-loss is about 1 (the variance of eps). Over 200 steps the tiny MLP gets
    it to about 0.75 on moons (T = 50); each logged loss averages 10 x 256 samples, so the mean of 3 or 5
    lines has a Monte Carlo sd of about 0.02, far below the 10% margin asked for."""
    path = train(tiny(tmp_path / "r", steps=200, batch_size=256, lr=5e-3, warmup_steps=10, checkpoint_every=1000,
                     prediction_type="epsilon"),
                 progress=False)
    losses = [r["loss"] for r in read_metrics(path)]
    assert len(losses) == 20
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert last < 0.9 * first, (first, last)


def test_same_seed_and_budget_give_identical_weights(run, tmp_path):
    path, cfg = run
    again = train(dataclasses.replace(cfg, out=str(tmp_path / "again")), progress=False)
    other = train(dataclasses.replace(cfg, out=str(tmp_path / "other"), seed=1), progress=False)
    for name in ("model.safetensors", "online.safetensors"):
        assert (again / "model" / name).read_bytes() == (path / "model" / name).read_bytes()
        assert (other / "model" / name).read_bytes() != (path / "model" / name).read_bytes()
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("steps_per_s", "elapsed_s")} for r in rows]
    assert strip(read_metrics(again)) == strip(read_metrics(path))


def test_time_budget_alone_ends_the_run(tmp_path):
    path = train(tiny(tmp_path / "r", steps=None, time_budget=0.5, log_every=1), progress=False)  # >= 1 step, 1 line
    assert json.loads((path / "config.json").read_text())["steps"] is None
    assert read_metrics(path) and load_model(path).network.config["width"] == 32


# --- learning rate and batches -----------------------------------------------------------------

def test_lr_factor_warm_up_then_constant():
    cfg = TrainConfig(warmup_steps=10, lr_schedule="constant")
    for step in range(30):
        assert lr_factor(cfg, step, step / 30) == pytest.approx(min(1.0, (step + 1) / 10), rel=1e-15)


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0, 1.5])
def test_lr_factor_cosine_decay(progress):
    cfg = TrainConfig(warmup_steps=0, lr_schedule="cosine")
    expected = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    assert lr_factor(cfg, 1000, progress) == pytest.approx(expected, abs=1e-15)
    assert lr_factor(cfg, 1000, 0.5) == pytest.approx(0.5)
    assert lr_factor(cfg, 1000, 1.0) == pytest.approx(0.0, abs=1e-15)


def test_lr_factor_warm_up_times_cosine():
    cfg = TrainConfig(warmup_steps=20, lr_schedule="cosine")
    for step, progress in [(0, 0.0), (4, 0.04), (9, 0.3), (19, 0.5), (50, 0.75)]:
        expected = min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_factor(cfg, step, progress) == pytest.approx(expected, rel=1e-12)


def epoch_rows(batches, epoch):
    return torch.cat([batches.rows(epoch * batches.per_epoch + k) for k in range(batches.per_epoch)])


def test_batches_visit_every_row_once_per_epoch_and_reshuffle():
    batches = GlobalBatches(60, 12, 1, seed=0)
    epochs = [epoch_rows(batches, e) for e in range(3)]
    for rows in epochs:
        assert sorted(rows.tolist()) == list(range(60))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_batches_drop_the_short_batch_and_clamp_the_size():
    batches = GlobalBatches(22, 5, 1, seed=0)
    rows = epoch_rows(batches, 0)
    assert batches.per_epoch == 4 and len(set(rows.tolist())) == 20  # no row twice within an epoch
    big = GlobalBatches(22, 1000, 1, seed=0)
    assert sorted(big.rows(0).tolist()) == list(range(22))


@pytest.mark.parametrize("world, accum", [(2, 1), (4, 1), (2, 2)])
def test_ranks_together_see_the_one_process_batch(world, accum):
    """Rank r's slice of each global batch is positions r, r + world, ...: the rows, t and eps of all ranks,
    interleaved, are exactly what one process gets (the data-parallel equivalence rests on this)."""
    one = GlobalBatches(103, 24, accum, seed=3)
    ranks = [GlobalBatches(103, 24, accum, seed=3, rank=r, world=world) for r in range(world)]
    assert all(b.per_epoch == one.per_epoch for b in ranks)
    for step in [0, 1, one.per_epoch - 1, one.per_epoch, 5 * one.per_epoch + 2]:
        rows = torch.stack([b.rows(step) for b in ranks], 1).flatten()
        assert torch.equal(rows, one.rows(step))
        t1, eps1, _, drop1 = one.t_and_noise(step, 50, (3,), label_dropout=0.25)
        parts = [b.t_and_noise(step, 50, (3,), label_dropout=0.25) for b in ranks]
        assert torch.equal(torch.stack([p[0] for p in parts], 1).flatten(), t1)
        assert torch.equal(torch.stack([p[1] for p in parts], 1).flatten(0, 1), eps1)
        assert torch.equal(torch.stack([p[3] for p in parts], 1).flatten(), drop1)


def test_batches_are_a_function_of_seed_and_step_alone():
    """A resumed run builds its stream afresh: step k must give the same batch whatever came before."""
    a, b = GlobalBatches(100, 10, 1, seed=7), GlobalBatches(100, 10, 1, seed=7)
    for step in range(25):
        a.rows(step)
    assert torch.equal(a.rows(37), b.rows(37))
    assert all(torch.equal(u, v) for u, v in zip(a.t_and_noise(37, 50, (2,), label_dropout=0.1),
                                                  b.t_and_noise(37, 50, (2,), label_dropout=0.1)))
    c = GlobalBatches(100, 10, 1, seed=8)
    assert not torch.equal(a.rows(37), c.rows(37))


@pytest.mark.parametrize("n, batch, accum, world, message", [
    (3, 4, 1, 4, "need at least 4 data rows; the data has 3"),
    (100, 10, 1, 4, "batch-size 10 must be a multiple of processes x grad-accum = 4"),
    (100, 9, 2, 1, "batch-size 9 must be a multiple of processes x grad-accum = 2"),
])
def test_batches_refuse_impossible_splits(n, batch, accum, world, message):
    with pytest.raises(InputError, match=message):
        GlobalBatches(n, batch, accum, seed=0, rank=0, world=world)


# --- checks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be positive"),
    ("steps", -5, "steps must be positive"),
    ("batch_size", 0, "batch-size must be positive"),
    ("batch_size", -1, "batch-size must be positive"),
    ("lr", 0.0, "lr must be a positive number"),
    ("lr", -1e-3, "lr must be a positive number"),
    ("lr", float("nan"), "lr must be a positive number"),
    ("lr", float("inf"), "lr must be a positive number"),
    ("time_budget", 0.0, "time-budget must be a positive number"),
    ("prediction_type", "noise", "unknown prediction_type 'noise'"),
    ("lr_schedule", "linear", "unknown lr-schedule 'linear'"),
    ("ema_decay", 1.0, "ema-decay must lie in"),
    ("grad_clip", -1.0, "grad-clip must be positive"),  # would turn descent into ascent
    ("grad_clip", 0.0, "grad-clip must be positive"),
    ("grad_clip", float("nan"), "grad-clip must be positive"),
    ("warmup_steps", -1, "warmup-steps and weight-decay must be >= 0"),
    ("weight_decay", -0.1, "warmup-steps and weight-decay must be >= 0"),
    ("num_train_timesteps", 0, "num-train-timesteps must be positive"),
    ("keep_checkpoints", 0, "keep-checkpoints must be positive"),
])
def test_validate_rejects_bad_values(tmp_path, field, value, message):
    cfg = tiny(tmp_path / "r", **{field: value})
    with pytest.raises(InputError, match=message):
        cfg.validate()
    with pytest.raises(InputError, match=message):
        train(cfg, progress=False)
    assert not (tmp_path / "r").exists()  # refused before anything is written


@pytest.mark.parametrize("overrides, message", [
    (dict(data="no_such_set"), "unknown dataset 'no_such_set'"),
    (dict(beta_start=0.0), "every beta must lie in the open interval"),
    (dict(beta_end=1.5), "every beta must lie in the open interval"),
    (dict(beta_schedule="quadratic"), "unknown beta_schedule 'quadratic'"),
])
def test_bad_data_or_schedule_is_refused_before_writing(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        train(tiny(tmp_path / "r", **overrides), progress=False)
    assert not (tmp_path / "r").exists()


def test_existing_run_is_refused_without_overwrite(run):
    path, cfg = run
    before = snapshot(path)
    with pytest.raises(InputError, match="already exists and is not empty"):
        train(cfg, progress=False)
    assert snapshot(path) == before


# --- user data ---------------------------------------------------------------------------------

def test_data_file_trains_and_samples_come_back_in_user_units(tmp_path, capsys):
    """3-D data far from standard units (offsets 1000 / -1e5 / 5, scales 50 / 0.01 / 3, two clusters).

    The model works in standardized units; `gaussdiff sample` must map back. 60 steps do not make a good
    model, so the check is loose: per axis the sample mean lies within 0.25 data-sd of the data mean and
    the sample sd within [0.6, 1.5] data-sd (seen: within 0.05 and [0.93, 1.05]; the Monte Carlo error of
    2000 samples is ~0.02 sd). A missing, doubled or transposed map misses by a factor of 50 or more.
    The second axis (mean -1e5, sd 0.006) is finer than float32's grid there (0.0078): mapped back in
    float32 its 2000 samples took only 7 distinct values."""
    rng = np.random.default_rng(0)
    n = 2000
    sign = np.where(rng.integers(2, size=n) == 1, 1.0, -1.0)[:, None]
    z = 0.3 * rng.standard_normal((n, 3)) + sign * np.array([1.0, 0.5, 0.0])
    x = z * np.array([50.0, 0.01, 3.0]) + np.array([1000.0, -1e5, 5.0])
    np.save(tmp_path / "points.npy", x)

    path = train(tiny(tmp_path / "run", data=str(tmp_path / "points.npy"), steps=60, batch_size=256, lr=5e-3),
                 progress=False)
    model = load_model(path)
    assert model.sample_shape == (3,) and model.data_name == str(tmp_path / "points.npy")
    fitted = x[split_rows(n, 0.1, 0)[0]]  # the standardizer sees the training rows only (--holdout 0.1 by default)
    np.testing.assert_allclose(model.transform.mean.numpy(), fitted.mean(0), rtol=1e-12)
    np.testing.assert_allclose(model.transform.std.numpy(), fitted.std(0), rtol=1e-8)  # sums of 1e5-size terms

    out = tmp_path / "samples.npy"
    assert main(["sample", str(path), "-n", "2000", "--steps", "20", "--out", str(out), "--threads", "1"]) == 0
    assert "wrote 2000 samples" in capsys.readouterr().out
    s = np.load(out)
    assert s.shape == (2000, 3) and np.isfinite(s).all()
    assert all(len(np.unique(s[:, i])) > 1900 for i in range(3)), [len(np.unique(s[:, i])) for i in range(3)]
    assert np.all(np.abs(s.mean(0) - x.mean(0)) < 0.25 * x.std(0)), (s.mean(0), x.mean(0))
    ratio = s.std(0) / x.std(0)
    assert np.all((ratio > 0.6) & (ratio < 1.5)), ratio

    # The pictures of a run on a data file (held-out rows come from the file itself).
    assert main(["plot", str(path), "-n", "200"]) == 0
    assert sorted(p.name for p in (path / "pictures").iterdir()) == ["chain.png", "loss.png", "samples.png"]


# --- divergence --------------------------------------------------------------------------------

def test_nan_loss_raises_training_error_naming_the_checkpoints(tmp_path, monkeypatch):
    """The 25th loss (0-based step 24) turns NaN, after the checkpoints of steps 10 and 20."""
    calls, training_loss = [], train_loop.training_loss

    def loss_that_turns_nan(*args, **kwargs):
        calls.append(1)
        loss, vlb = training_loss(*args, **kwargs)
        return (loss * float("nan") if len(calls) == 25 else loss), vlb

    monkeypatch.setattr(train_loop, "training_loss", loss_that_turns_nan)
    with pytest.raises(TrainingError) as info:
        train(tiny(tmp_path / "r", steps=40), progress=False)
    message = str(info.value)
    assert "step 24" in message and "\n" not in message
    assert f"the last checkpoint, {tmp_path / 'r' / 'checkpoints' / 'step_00000020.pt'}, is intact" in message
    # The checkpoints written before (steps 10 and 20) are intact; no model was exported.
    ckpts = sorted((tmp_path / "r" / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["step_00000010.pt", "step_00000020.pt"]
    for p in ckpts:
        state = torch.load(p, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "r" / "model").exists()


def test_huge_learning_rate_ends_with_one_line_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["train", "--out", str(out), "--steps", "40", "--width", "32", "--depth", "1", "--n-data", "2000",
                 "--num-train-timesteps", "50", "--threads", "1", "--lr", "1e30", "--warmup-steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gaussdiff train: error: ") and "non-finite" in err
    assert "Traceback" not in err
    # It diverges at once, before any checkpoint: the message must not promise one.
    assert f"no checkpoint was written yet to {out / 'checkpoints'}" in err


def test_a_run_ends_with_a_checkpoint_and_continues_from_it_byte_identically(tmp_path):
    """5 steps with a checkpoint every 2: the end of the budget writes step 5, and a resume to 9 steps equals an
    uninterrupted 9-step run (a constant learning rate, so the budget does not shape the schedule)."""
    steps = dict(lr_schedule="constant", checkpoint_every=2, keep_checkpoints=3)
    short = train(tiny(tmp_path / "short", steps=5, **steps), progress=False)
    assert [p.name for p in sorted((short / "checkpoints").iterdir())] == [
        "step_00000002.pt", "step_00000004.pt", "step_00000005.pt"]
    train(tiny(tmp_path / "short", steps=9, **steps), resume=True, progress=False)
    whole = train(tiny(tmp_path / "whole", steps=9, **steps), progress=False)
    assert (short / "model" / "model.safetensors").read_bytes() == (whole / "model" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("data, out", [("moons", "runs/moons"), ("digits", "runs/digits"),
                                       ("/somewhere/iris.csv", "runs/iris"), ("pictures/", "runs/pictures")])
def test_the_run_folder_defaults_to_the_datas_name(data, out):
    assert TrainConfig(data=data).validate().out == out
    assert TrainConfig(data=data, out="elsewhere").validate().out == "elsewhere"
