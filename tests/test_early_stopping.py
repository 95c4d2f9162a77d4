"""Early stopping on the held-out loss (issue 13): training stops ``patience`` evaluations after the lowest held-out
loss and the model keeps the weights of that evaluation; a resumed run stops where a whole one does; tables turn it
on by default. The oracle is the run's own record: the held-out losses in metrics.jsonl (argmin by hand) and the
checkpoint written at every evaluation (the EMA and online weights of each step)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from gaussdiff.cli import main
from gaussdiff.train import TrainConfig, train
from gaussdiff.train.config import PATIENCE, TABLE_DEFAULTS
from gaussdiff.train.folder import ema_network_state, read_checkpoint

EVERY, PATIENCE_HERE = 10, 3


def overfitting(tmp_path, name="r", **extra) -> TrainConfig:
    """10 training rows of N(0, I_8) (--holdout 0.95 of 200) at a high rate: memorized within ~100 steps
    (test_heldout's over-fitting check), so the held-out loss turns up long before the 400-step budget."""
    points = tmp_path / "points.npy"
    if not points.exists():
        np.save(points, np.random.default_rng(100).standard_normal((200, 8)))
    return TrainConfig(out=str(tmp_path / name), data=str(points), holdout=0.95, steps=400, batch_size=10, width=64,
                       depth=2, emb_dim=32, num_train_timesteps=100, threads=1, lr=1e-2, eval_every=EVERY,
                       log_every=EVERY, checkpoint_every=EVERY, keep_checkpoints=1000,
                       early_stopping=PATIENCE_HERE, **extra)


def held_out(run) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["eval_heldout_loss"] for r in rows if "eval_heldout_loss" in r}


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("early")
    return train(overfitting(tmp_path), progress=False)


def test_training_stops_patience_evaluations_after_the_lowest_held_out_loss(whole):
    losses = held_out(whole)
    best = min(losses, key=losses.get)
    assert max(losses) == best + PATIENCE_HERE * EVERY < 400  # stopped, and no sooner
    assert all(losses[s] > losses[best] for s in losses if s > best)


def test_the_model_holds_the_weights_of_the_lowest_held_out_loss(whole):
    losses = held_out(whole)
    best = read_checkpoint(whole / "checkpoints" / f"step_{min(losses, key=losses.get):08d}.pt")
    assert same_tensors(load_file(whole / "model" / "model.safetensors"), ema_network_state(best))
    assert same_tensors(load_file(whole / "model" / "online.safetensors"), best["model"])
    last = read_checkpoint(whole / "checkpoints" / f"step_{max(losses):08d}.pt")
    # the last weights (kept for a resume) are not the model's
    assert not same_tensors(ema_network_state(last), ema_network_state(best))


def test_a_run_resumed_between_its_lowest_loss_and_its_stop_ends_the_same(whole, tmp_path):
    """Resumed from the checkpoint one evaluation after the lowest loss (later ones and the model removed, as if it
    had died there): it must remember the lowest loss and its weights to stop at the same step with the same model."""
    losses = held_out(whole)
    cut = min(losses, key=losses.get) + EVERY
    part = tmp_path / "part"
    shutil.copytree(whole, part)
    shutil.rmtree(part / "model")
    for path in (part / "checkpoints").glob("step_*.pt"):
        if int(path.stem.split("_")[1]) > cut:
            path.unlink()
    train(dataclasses.replace(overfitting(tmp_path), out=str(part)), resume=True, progress=False)
    for name in ("model.safetensors", "online.safetensors"):
        assert (part / "model" / name).read_bytes() == (whole / "model" / name).read_bytes()
    assert held_out(part) == held_out(whole)


def test_the_end_says_where_it_stopped_and_does_not_call_the_run_undertrained(tmp_path, capsys):
    """A time budget that early stopping cuts short is not an undertrained run."""
    np.save(tmp_path / "points.npy", np.random.default_rng(100).standard_normal((200, 8)))
    code = main(["train", "--data", str(tmp_path / "points.npy"), "--out", str(tmp_path / "r"), "--holdout", "0.95",
                 "--time-budget", "600", "--batch-size", "10", "--width", "64", "--depth", "2", "--emb-dim", "32",
                 "--num-train-timesteps", "100", "--threads", "1", "--lr", "0.01", "--lr-schedule", "constant",
                 "--eval-every", str(EVERY),
                 "--early-stopping", str(PATIENCE_HERE), "--no-pictures"])
    assert code == 0
    losses = held_out(tmp_path / "r")
    best = min(losses, key=losses.get)
    out = capsys.readouterr()
    assert f"stopped early at step {max(losses):,}: the held-out loss was lowest at step {best:,}" in out.out
    assert "undertrained" not in out.err


def write_table(path):
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b}" for a, b in zip(rng.normal(size=50), rng.choice(["u", "v"], 50))]
    path.write_text("x,kind\n" + "\n".join(rows) + "\n")
    return str(path)


def test_a_table_stops_early_by_default_and_other_data_do_not(tmp_path):
    table = write_table(tmp_path / "t.csv")
    np.save(tmp_path / "v.npy", np.zeros((50, 2)))
    cfg = TrainConfig(data=table).validate()
    assert (cfg.early_stopping, cfg.eval_every) == (PATIENCE, TABLE_DEFAULTS["eval_every"])
    assert TrainConfig(data=table, holdout=0.0).validate().early_stopping == 0  # no held-out rows to watch
    assert TrainConfig(data=table, eval_every=0).validate().early_stopping == 0
    assert TrainConfig(data=str(tmp_path / "v.npy")).validate().early_stopping == 0
    assert TrainConfig(data="moons").validate().early_stopping == 0
    assert TrainConfig(data="moons", early_stopping=5).validate().early_stopping == 5  # a fresh held-out draw


@pytest.mark.parametrize("flags, message", [
    (["--early-stopping", "-1"], "early-stopping must be >= 0"),
    (["--early-stopping", "5", "--holdout", "0"], "it needs held-out rows (--holdout > 0) and --eval-every > 0"),
    (["--early-stopping", "5", "--eval-every", "0"], "it needs held-out rows (--holdout > 0) and --eval-every > 0"),
])
def test_early_stopping_without_a_held_out_loss_is_refused(tmp_path, capsys, flags, message):
    code = main(["train", "--data", write_table(tmp_path / "t.csv"), "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
