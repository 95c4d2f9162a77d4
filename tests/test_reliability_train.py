"""Training loses nothing and hides nothing (issue 10): ``--overwrite`` replaces only a gaussdiff run, and only once the
new one exists; checkpoints verify their checksum and a skipped one says why in our words; what a killed write left
behind is removed on resume; a resume on changed data is refused; a model with non-finite weights is never exported.
"""

import contextlib
import errno
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.errors import InputError
from gaussdiff.train import TrainConfig, loop as train_loop, train
from gaussdiff.train.folder import load_latest_checkpoint, save_checkpoint

TINY = dict(data="moons", n_data=500, batch_size=64, width=16, depth=1, emb_dim=8, num_train_timesteps=20,
            warmup_steps=1, threads=1, log_every=2, lr_schedule="constant")
TINY_FLAGS = ["--n-data", "500", "--batch-size", "64", "--width", "16", "--depth", "1", "--emb-dim", "8",
              "--num-train-timesteps", "20", "--threads", "1", "--no-pictures"]


def tiny(out, **overrides) -> TrainConfig:
    return TrainConfig(out=str(out), **(TINY | dict(steps=4, checkpoint_every=2) | overrides))


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@contextlib.contextmanager
def unwritable(folder: Path, monkeypatch):
    """``folder`` at mode 0555; for root, whom modes do not stop, creating an entry in it (os.mkdir, os.open with
    O_CREAT) fails with EACCES as it would for anyone else."""
    folder.chmod(0o555)
    if os.geteuid() == 0:
        def refuse(real, creates=lambda args: True):
            def call(path, *args, **kwargs):
                if creates(args) and Path(path).parent == folder:
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
                return real(path, *args, **kwargs)
            return call
        monkeypatch.setattr(os, "mkdir", refuse(os.mkdir))
        monkeypatch.setattr(os, "open", refuse(os.open, lambda args: args[0] & os.O_CREAT))
    try:
        yield
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)


@pytest.fixture
def old_run(tmp_path):
    return train(tiny(tmp_path / "run"), progress=False)


# --- --overwrite and --out -----------------------------------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    """The issue's case: a folder holding the --data file and unrelated files was deleted whole, exit 0."""
    folder = tmp_path / "work"
    folder.mkdir()
    np.save(folder / "points.npy", np.random.default_rng(0).standard_normal((200, 2)))
    (folder / "notes.txt").write_text("mine")
    before = snapshot(folder)
    assert main(["train", "--data", str(folder / "points.npy"), "--out", str(folder), "--overwrite", "--steps", "2",
                 *TINY_FLAGS]) == 2
    assert f"--overwrite replaces only a gaussdiff run folder, and {folder} is not one" in one_error_line(capsys)
    assert snapshot(folder) == before


def test_overwrite_refuses_a_run_that_holds_the_training_data(old_run, capsys):
    np.save(old_run / "points.npy", np.random.default_rng(0).standard_normal((200, 2)))
    before = snapshot(old_run)
    assert main(["train", "--data", str(old_run / "points.npy"), "--out", str(old_run), "--overwrite", "--steps", "2",
                 *TINY_FLAGS]) == 2
    assert f"--overwrite would delete the training data {old_run / 'points.npy'}, which lies inside {old_run}" \
        in one_error_line(capsys)
    assert snapshot(old_run) == before


def test_overwrite_replaces_a_run_whole(old_run):
    train(tiny(old_run, steps=3, checkpoint_every=3), overwrite=True, progress=False)
    assert [p.name for p in (old_run / "checkpoints").iterdir()] == ["step_00000003.pt"]  # none of the old run's
    assert json.loads((old_run / "config.json").read_text())["steps"] == 3
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]  # no temporary sibling left


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_be_created(old_run, capsys, monkeypatch):
    """The new run is made beside the old one first; here its folder cannot be created, so the old run stays whole."""
    before = snapshot(old_run)
    with unwritable(old_run.parent, monkeypatch):
        assert main(["train", "--out", str(old_run), "--overwrite", "--steps", "2", *TINY_FLAGS]) == 2
        err = one_error_line(capsys)
    assert err == f"gaussdiff train: error: cannot create run folder {old_run}: Permission denied\n"
    assert snapshot(old_run) == before
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_file_given_as_out_has_its_own_message(tmp_path, capsys, overwrite):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    assert main(["train", "--out", str(out), *overwrite, "--steps", "2", *TINY_FLAGS]) == 2
    assert f"--out {out} is a file, not a folder: give a new or empty folder for the run" in one_error_line(capsys)
    assert out.read_text() == "mine"


def test_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["train", "--out", str(tmp_path / "notes.txt" / "run"), "--steps", "2", *TINY_FLAGS]) == 2
    assert f"cannot create run folder {tmp_path / 'notes.txt' / 'run'}: {tmp_path / 'notes.txt'} is a file, not a " \
           f"folder" in one_error_line(capsys)


def test_out_in_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    with unwritable(tmp_path, monkeypatch):
        assert main(["train", "--out", str(tmp_path / "run"), "--steps", "2", *TINY_FLAGS]) == 2
        err = one_error_line(capsys)
    assert err == f"gaussdiff train: error: cannot create run folder {tmp_path / 'run'}: Permission denied\n"
    assert list(tmp_path.iterdir()) == []


def test_resuming_a_run_that_cannot_be_written_is_one_line(old_run, capsys, monkeypatch):
    before = snapshot(old_run)
    with unwritable(old_run, monkeypatch):
        assert main(["train", "--resume", str(old_run), "--steps", "6"]) == 2
        err = one_error_line(capsys)
    assert err == f"gaussdiff train: error: cannot write {old_run / 'train.lock'}: Permission denied\n"
    assert snapshot(old_run) == before


# --- checkpoints: checksums and the reasons a checkpoint is skipped ----------------------------

def resumed_equals_uninterrupted(short: Path, tmp_path: Path) -> bool:
    """Continue ``short`` (a 5-step run) to 9 steps and compare with a 9-step run that never stopped."""
    train(tiny(short, steps=9, checkpoint_every=2, keep_checkpoints=3), resume=True, progress=False)
    whole = train(tiny(tmp_path / "whole", steps=9, checkpoint_every=2, keep_checkpoints=3), progress=False)
    return (short / "model" / "model.safetensors").read_bytes() == (whole / "model" / "model.safetensors").read_bytes()


def test_a_damaged_newest_checkpoint_is_skipped_and_the_previous_one_used(tmp_path):
    """One weight of the newest checkpoint changed, the zip container intact (what disk damage can do): it was
    resumed silently before; now its checksum fails, it is skipped with a warning naming it, and the resume from the
    step-4 checkpoint still ends byte-identical to a run that never stopped."""
    short = train(tiny(tmp_path / "short", steps=5, checkpoint_every=2, keep_checkpoints=3), progress=False)
    newest = short / "checkpoints" / "step_00000005.pt"
    state = torch.load(newest, weights_only=True)
    state["model"]["out.2.weight"].view(-1)[0] += 1.0
    torch.save(state, newest)  # the stored checksum is the old one
    with pytest.warns(UserWarning) as caught:
        assert resumed_equals_uninterrupted(short, tmp_path)
    assert f"skipping checkpoint {newest}: its contents do not match its SHA-256 checksum (it was damaged after it " \
           f"was written)" in [str(w.message) for w in caught]


def test_a_checkpoint_from_before_checksums_still_resumes(tmp_path):
    short = train(tiny(tmp_path / "short", steps=5, checkpoint_every=2, keep_checkpoints=3), progress=False)
    for path in (short / "checkpoints").iterdir():
        state = torch.load(path, weights_only=True)
        del state["sha256"]
        torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not skipped: no warning at all
        assert resumed_equals_uninterrupted(short, tmp_path)


def plain_state(step: int) -> dict:
    return dict(step=step, elapsed_s=0.5, model={"w": torch.arange(4.0)}, ema={"w": torch.ones(4)},
                optimizer={"state": {}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0]}]}, scaler={})


class Bomb:
    """Unpickling it would create the folder ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def truncated(path, tmp_path):
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


def damaged(path, tmp_path):
    state = torch.load(path, weights_only=True)
    state["ema"]["w"][0] = 7.0
    torch.save(state, path)


def pickle_bomb(path, tmp_path):
    torch.save(plain_state(2) | {"model": {"w": Bomb(tmp_path / "marker")}}, path)


def foreign(path, tmp_path):
    torch.save({"weights": torch.ones(3)}, path)


def not_a_zip(path, tmp_path):
    path.write_bytes(b"not a checkpoint")


@pytest.mark.parametrize("spoil, cause", [
    (truncated, "it is truncated or corrupt"),
    (damaged, "its contents do not match its SHA-256 checksum (it was damaged after it was written)"),
    (pickle_bomb, "it holds objects other than tensors and plain values (posix.mkdir), which are never unpickled"),
    (foreign, "it is not a gaussdiff training checkpoint (it lacks elapsed_s, ema, model, optimizer, scaler, step)"),
    (not_a_zip, "it is not a gaussdiff checkpoint (not a zip file as torch.save writes)"),
])
def test_a_skipped_checkpoint_says_why_in_our_words(tmp_path, spoil, cause):
    """Torch's own message, cut at 200 characters, ended for a pickle bomb in its advice to load with
    weights_only=False; each cause now has our one clause, and the older checkpoint is used."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(run, 1, plain_state(1), keep=3)
    newest = save_checkpoint(run, 2, plain_state(2), keep=3)
    spoil(newest, tmp_path)
    with pytest.warns(UserWarning) as caught:
        path, state = load_latest_checkpoint(run)
    assert [str(w.message) for w in caught] == [f"skipping checkpoint {newest}: {cause}"]
    assert path.name == "step_00000001.pt" and state["step"] == 1 and "sha256" not in state
    assert not (tmp_path / "marker").exists()  # the bomb was never unpickled


# --- what a killed write leaves behind --------------------------------------------------------

LEFTOVERS = ["checkpoints/.step_00000004.pt.k2j4h1.tmp", ".config.json.a8sd7f.tmp", ".metrics.jsonl.x1.tmp",
             ".model.3kd8s0/model.safetensors", ".model.old.9dk2la/model/config.json"]
NOT_OURS = ["notes.tmp", "checkpoints/.other.tmp", ".model.txt", "model.old/keep.txt"]


def plant(run: Path, names: list[str]) -> None:
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"half")


def test_a_resume_removes_what_killed_writes_left_and_nothing_else(old_run):
    plant(old_run, LEFTOVERS + NOT_OURS)
    train(tiny(old_run, steps=6), resume=True, progress=False)
    assert not [name for name in LEFTOVERS if (old_run / name).exists()]
    assert not [p for p in old_run.glob(".model.*") if p.is_dir()], "a leftover folder stayed"
    assert all((old_run / name).read_bytes() == b"half" for name in NOT_OURS)


def test_leftovers_stay_while_another_trainer_holds_the_run(old_run, capsys):
    plant(old_run, LEFTOVERS)
    (old_run / "train.lock").write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere"}))
    assert main(["train", "--resume", str(old_run), "--steps", "6"]) == 2
    assert "is in use by another trainer" in one_error_line(capsys)
    assert all((old_run / name).exists() for name in LEFTOVERS)


# --- resume after the data changed -------------------------------------------------------------

@pytest.mark.parametrize("change", [
    lambda x: np.concatenate([x, x + 1.0]),  # the case: 500 -> 1,000 rows, a new mean and std
    lambda x: np.where(np.arange(x.size).reshape(x.shape) == 7, x + 1e-9, x),  # one value, by a hair
])
def test_resume_on_changed_data_is_refused(tmp_path, capsys, change):
    data = tmp_path / "points.npy"
    x = np.random.default_rng(1).standard_normal((500, 2))
    np.save(data, x)
    run = train(tiny(tmp_path / "run", data=str(data)), progress=False)
    assert len(json.loads((run / "config.json").read_text())["data_sha256"]) == 64
    np.save(data, change(x))
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--steps", "6"]) == 2
    err = one_error_line(capsys)
    assert f"cannot resume {run}: the data {data} changed since the run started" in err
    assert snapshot(run) == before


def test_resume_on_the_same_data_and_from_a_run_without_a_data_hash(tmp_path):
    data = tmp_path / "points.npy"
    np.save(data, np.random.default_rng(1).standard_normal((500, 2)))
    run = train(tiny(tmp_path / "run", data=str(data)), progress=False)
    recorded = json.loads((run / "config.json").read_text())["data_sha256"]
    train(tiny(run, data=str(data), steps=6), resume=True, progress=False)  # unchanged data: accepted
    config = json.loads((run / "config.json").read_text())
    assert config["data_sha256"] == recorded
    del config["data_sha256"]  # a run folder from before the field existed
    (run / "config.json").write_text(json.dumps(config))
    train(tiny(run, data=str(data), steps=8), resume=True, progress=False)
    assert json.loads((run / "config.json").read_text())["data_sha256"] == recorded  # recorded from now on


def test_a_data_hash_mismatch_from_the_api_is_an_input_error(tmp_path):
    run = train(tiny(tmp_path / "run"), progress=False)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(config | {"data_sha256": "0" * 64}))
    with pytest.raises(InputError, match="the data moons changed since the run started"):
        train(tiny(run, steps=6), resume=True, progress=False)


# --- never export non-finite weights -----------------------------------------------------------

@pytest.mark.parametrize("which", ["EMA", "online"])
def test_a_model_with_non_finite_weights_is_never_exported(tmp_path, capsys, monkeypatch, which):
    """A NaN put into one weight after the last step (the EMA's, or the online network's): training used to export
    it; now it stops with one line naming the tensor, and writes no model."""

    class PoisonedEMA(train_loop.EMA):
        def update(self):
            super().update()
            if self.step.item() == 4:  # the last of 4 steps
                target = self.ema_model if which == "EMA" else self.model
                with torch.no_grad():
                    dict(target.named_parameters())["out.2.weight"].view(-1)[0] = float("nan")

    monkeypatch.setattr(train_loop, "EMA", PoisonedEMA)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "4", *TINY_FLAGS]) == 2
    assert one_error_line(capsys) == (f"gaussdiff train: error: the {which} weights are not finite (out.2.weight holds "
                                      f"NaN or Inf), so no model was exported to {out / 'model'}; try a smaller --lr\n")
    assert not (out / "model").exists()
