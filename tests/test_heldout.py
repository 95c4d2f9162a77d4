"""The held-out loss watched during training (issue 11): what it estimates, on which rows, that its data never
reach a training batch, that it leaves training untouched, and how the run records it."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

from gaussdiff.atomic import content_sha256
from gaussdiff.cli import main
from gaussdiff.data import load_dataset
from gaussdiff.data.digits import digits_split
from gaussdiff.data.split import heldout_seed, split_rows
from gaussdiff.data.toys import labeled
from gaussdiff.errors import InputError
from gaussdiff.saved import load_model
from gaussdiff.train import TrainConfig, resolve, train

TINY = dict(data="moons", n_data=2000, batch_size=128, width=32, depth=1, emb_dim=16, num_train_timesteps=50,
            warmup_steps=5, threads=1, steps=40, log_every=10, checkpoint_every=1000)
TINY_UNET = {"kind": "unet", "base_channels": 8, "norm_groups": 4, "attention_resolutions": [], "num_heads": 1,
             "dropout": 0.1}  # dropout: a network that draws random numbers in train mode


def rows_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def fixed_draw(seed, n_train, n_heldout, size, T, shape):
    """The documented draw, written out again: (training rows, held-out rows, t, eps) of the ``size`` draws."""
    g = torch.Generator().manual_seed(heldout_seed(seed))
    train_rows = torch.randperm(n_train, generator=g)[:size].sort().values
    held_rows = torch.randperm(n_heldout, generator=g)[:size].sort().values
    t = torch.randint(1, T + 1, (size,), generator=g)
    eps = torch.randn((size, *shape), generator=g)
    cycle = lambda rows: torch.cat([rows] * (size // len(rows) + 1))[:size]  # draw i: row i mod their number
    return cycle(train_rows), cycle(held_rows), t, eps


def v_loss(model, x0, t, eps, cond=None):
    """L_simple of a v-prediction model by hand: x_t = a x0 + s eps, v = a eps - s x0 (Salimans & Ho 2022),
    the mean over samples of the mean square over dimensions, in float64."""
    abar = model.schedule.alpha_bar[t].double().reshape(-1, *[1] * (x0.dim() - 1))
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x0, eps = x0.double(), eps.double()
    with torch.no_grad():
        out = model.network((a * x0 + s * eps).float(), t.float(), **({"cond": cond} if cond else {})).double()
    return ((out - (a * eps - s * x0)) ** 2).flatten(1).mean(1).mean().item()


def test_heldout_loss_is_the_exported_models_loss_at_the_fixed_draw(tmp_path):
    """moons: held out by a fresh draw under heldout_seed(seed). The logged numbers of the last evaluation (the end
    of training) must equal L_simple of the exported EMA weights recomputed by hand on the documented rows, t and
    eps, to float32 rounding (1e-5 relative; both sum 300 float32 per-sample losses)."""
    run = train(TrainConfig(out=str(tmp_path / "r"), **TINY | dict(eval_every=15, eval_size=300)), progress=False)
    rows = rows_of(run)
    assert [r["step"] for r in rows] == [10, 15, 20, 30, 40]  # evaluations at 15, 30 and the end, 40
    assert [("eval_heldout_loss" in r, "eval_train_loss" in r) for r in rows] == \
        [(False, False), (True, True), (False, False), (True, True), (True, True)]
    model = load_model(run)
    train_rows, held_rows, t, eps = fixed_draw(0, 2000, 300, 300, 50, (2,))
    training_points = labeled("moons", 2000, 0)[0]
    heldout_points = labeled("moons", 300, heldout_seed(0))[0]
    assert rows[-1]["eval_train_loss"] == pytest.approx(v_loss(model, training_points[train_rows], t, eps), rel=1e-5)
    assert rows[-1]["eval_heldout_loss"] == pytest.approx(v_loss(model, heldout_points[held_rows], t, eps), rel=1e-5)
    assert rows[1]["eval_heldout_loss"] != rows[3]["eval_heldout_loss"]  # the model moved between evaluations


def test_heldout_rows_of_a_file_never_reach_training(tmp_path):
    """A file whose held-out rows (split_rows' choice) hold 1e6: had one of them entered a batch, that batch's loss
    would be ~1e11, and had they shaped the standardizer, its std would be ~3e5. The held-out loss sees them."""
    x = np.random.default_rng(0).standard_normal((200, 2))
    train_rows, held_rows = split_rows(200, 0.1, 0)
    x[held_rows] = 1e6
    np.save(tmp_path / "points.npy", x)
    run = train(TrainConfig(out=str(tmp_path / "r"), **TINY | dict(data=str(tmp_path / "points.npy"), batch_size=64,
                                                                   eval_every=10)), progress=False)
    model = load_model(run)
    np.testing.assert_allclose(model.transform.mean.numpy(), x[train_rows].mean(0), rtol=1e-12)
    np.testing.assert_allclose(model.transform.std.numpy(), x[train_rows].std(0), rtol=1e-12)
    rows = rows_of(run)
    assert all(r["loss"] < 10 and r["eval_train_loss"] < 10 and r["eval_heldout_loss"] > 1e10 for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["holdout"] == 0.1 and "20 held out" in config["data_description"]
    whole = load_dataset(str(tmp_path / "points.npy"))  # the data hash stays the whole file's: resume checks it
    assert config["data_sha256"] == content_sha256({"data": whole.data, "labels": whole.labels})


def test_holdout_zero_trains_on_every_row(tmp_path):
    x = np.random.default_rng(1).standard_normal((100, 3)) * [1, 2, 3]
    np.save(tmp_path / "points.npy", x)
    run = train(TrainConfig(out=str(tmp_path / "r"), **TINY | dict(data=str(tmp_path / "points.npy"), holdout=0.0,
                                                                   batch_size=32, steps=10)), progress=False)
    np.testing.assert_allclose(load_model(run).transform.mean.numpy(), x.mean(0), rtol=1e-12)
    last = rows_of(run)[-1]
    assert "eval_heldout_loss" not in last and math.isfinite(last["eval_train_loss"])  # nothing held out


def test_a_run_from_before_holdout_resumes_on_every_row(tmp_path):
    np.save(tmp_path / "points.npy", np.random.default_rng(1).standard_normal((100, 2)))
    run = train(TrainConfig(out=str(tmp_path / "r"), **TINY | dict(data=str(tmp_path / "points.npy"), holdout=0.0,
                                                                   batch_size=32, steps=4)), progress=False)
    config = json.loads((run / "config.json").read_text())
    del config["holdout"]  # the config.json of a run trained before the field existed
    (run / "config.json").write_text(json.dumps(config))
    assert resolve({"steps": 8}, resume=run).holdout == 0.0
    with pytest.raises(InputError, match="holdout was 0.0 and is now 0.2"):
        resolve({"holdout": 0.2}, resume=run)


@pytest.mark.parametrize("values, needle", [
    (dict(data="moons", holdout=0.1), "the built-in 'moons' is held out by a fresh draw under another seed"),
    (dict(data="digits", holdout=0.0), "the built-in 'digits' is held out by its test split"),
    (dict(data="x.csv", holdout=1.0), "holdout must lie in [0, 1) (0: train on every row), got 1.0"),
    (dict(data="x.csv", holdout=-0.1), "holdout must lie in [0, 1)"),
    (dict(eval_every=-1), "eval-every must be >= 0"),
    (dict(eval_size=0), "eval-size positive"),
])
def test_bad_holdout_and_eval_options_are_refused(values, needle):
    with pytest.raises(InputError) as e:
        TrainConfig(**values).validate()
    assert needle in str(e.value)


def test_holdout_on_a_builtin_is_one_line_from_the_cli(tmp_path, capsys):
    assert main(["train", "--data", "moons", "--holdout", "0.2", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--holdout splits the rows of a data file" in err


def test_defaults_by_data():
    assert (TrainConfig().validate().eval_every, TrainConfig().validate().eval_size) == (500, 1000)
    digits = TrainConfig(data="digits").validate()
    assert (digits.eval_every, digits.eval_size, digits.holdout) == (250, 256, None)
    assert TrainConfig(data="x.csv").validate().holdout == 0.1


def digits_run(out, **overrides):
    cfg = dict(data="digits", network=TINY_UNET, num_train_timesteps=20, batch_size=8, grad_accum=2, threads=1,
               steps=4, log_every=2, checkpoint_every=1000, preview_every=0, class_conditional=True,
               precision="bf16", eval_every=2, eval_size=24) | overrides
    return train(TrainConfig(out=str(out), **cfg), progress=False)


def test_evaluation_leaves_training_untouched_unet_grad_accum_bf16(tmp_path):
    """A class-conditional UNet with dropout, in micro-batches under bf16 autocast: evaluating every 2 steps and
    never must give byte-identical weights (the evaluation draws nothing from the training streams, and the EMA model
    runs in eval mode). The held-out number is the fp32 EMA model's loss on digits' test split with its labels,
    recomputed by hand (the model's own pixel map), to 1e-5 relative."""
    watched, unwatched = digits_run(tmp_path / "on"), digits_run(tmp_path / "off", eval_every=0)
    for name in ("model.safetensors", "online.safetensors"):
        assert (watched / "model" / name).read_bytes() == (unwatched / "model" / name).read_bytes()
    assert all("eval_train_loss" not in r for r in rows_of(unwatched))
    last = rows_of(watched)[-1]
    model = load_model(watched)
    images, labels = (torch.from_numpy(a) for a in digits_split("test"))
    _, held_rows, t, eps = fixed_draw(0, 1500, 297, 24, 20, (1, 8, 8))
    x0 = model.transform.forward(images[held_rows]).float()
    labels = labels[held_rows]
    assert last["eval_heldout_loss"] == pytest.approx(v_loss(model, x0, t, eps, {"class": labels}), rel=1e-5)
    wrong = v_loss(model, x0, t, eps, {"class": (labels + 1) % 10})
    assert last["eval_heldout_loss"] != pytest.approx(wrong, rel=1e-5)  # the labels matter: the conditional model


def test_resume_with_evaluation_is_byte_exact(tmp_path):
    """Resumed from its step-20 checkpoint (later ones and the model removed, as if it had died there), with an
    evaluation every 10 steps: the same weights and the same held-out numbers as the run that never stopped."""
    cfg = TrainConfig(out=str(tmp_path / "whole"), **TINY | dict(eval_every=10, checkpoint_every=20))
    whole = train(cfg, progress=False)
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    shutil.rmtree(part / "model")
    (part / "checkpoints" / "step_00000040.pt").unlink()
    train(dataclasses.replace(cfg, out=str(part)), resume=True, progress=False)
    for name in ("model.safetensors", "online.safetensors"):
        assert (part / "model" / name).read_bytes() == (whole / "model" / name).read_bytes()
    evals = lambda run: [(r["step"], r["eval_train_loss"], r["eval_heldout_loss"]) for r in rows_of(run)]
    assert evals(part) == evals(whole)


def test_tensorboard_and_progress_bar_show_the_heldout_loss(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(TrainConfig(out=str(tmp_path / "r"), **TINY | dict(steps=20, eval_every=10, tensorboard=True)))
    rows = rows_of(run)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for key in ("heldout_loss", "train_loss"):
        logged = events.Scalars(f"eval/{key}")
        assert [(e.step, e.value) for e in logged] == [(r["step"], pytest.approx(r[f"eval_{key}"], rel=1e-6))
                                                       for r in rows]
    assert f"heldout={rows[-1]['eval_heldout_loss']:.4f}" in capsys.readouterr().err


def test_a_model_trained_on_ten_rows_shows_overfitting(tmp_path):
    """10 training rows of N(0, I_8) (--holdout 0.95 of 200), 300 steps: the network memorizes them, so its loss on the
    190 unseen rows is far above its loss on the 10 it saw. Over 5 data seeds the ratio was 3.4-4.0 (1.9-2.1 against
    0.53-0.61); a model that had learnt the distribution instead would show a ratio near 1, the mean of 10 unseen
    rows' losses spreading by an sd of ~0.2 there, so > 2x is a gap of > 5 such sd. The training number is recomputed
    by hand: the 10 rows cycled over the 1,000 draws."""
    x = np.random.default_rng(100).standard_normal((200, 8))
    np.save(tmp_path / "points.npy", x)
    run = train(TrainConfig(out=str(tmp_path / "r"), data=str(tmp_path / "points.npy"), holdout=0.95, steps=300,
                            batch_size=10, width=64, depth=2, emb_dim=32, num_train_timesteps=100, threads=1, lr=1e-2,
                            eval_every=100, log_every=100, checkpoint_every=1000), progress=False)
    last = rows_of(run)[-1]
    assert last["eval_heldout_loss"] > 2 * last["eval_train_loss"], last
    model = load_model(run)
    train_rows, held_rows = split_rows(200, 0.95, 0)
    assert len(train_rows) == 10
    mine, _, t, eps = fixed_draw(0, 10, 190, 1000, 100, (8,))
    x0 = model.transform.forward(torch.from_numpy(x[train_rows][mine])).float()
    assert last["eval_train_loss"] == pytest.approx(v_loss(model, x0, t, eps), rel=1e-5)
