"""Training you can trust: exact resume after SIGKILL or SIGTERM, the run lock, corrupt checkpoints,
config files.

"Bit-identical" below means byte-identical safetensors files: the batch stream is a pure function of
(seed, step) and the checkpoint holds every other piece of state, so nothing may differ at all.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gaussdiff.cli import main
from gaussdiff.train import TrainConfig, resolve

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--n-data", "2000", "--width", "32", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", "50",
        "--batch-size", "128", "--warmup-steps", "5", "--threads", "1", "--log-every", "10"]
STEPS = 300  # stopped at step 50 or 100, a run has 200+ steps (over a second on a busy machine) to meet the signal


def cli_process(*args, **popen):
    env = os.environ | {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "gaussdiff", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def weights(run):
    return {name: (Path(run) / "model" / name).read_bytes() for name in ("model.safetensors", "online.safetensors")}


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def wait_for(path: Path, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted STEPS-step run, checkpoints every 50 steps."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(["train", "--out", str(out), "--steps", str(STEPS), "--checkpoint-every", "50", "--no-pictures",
                 *TINY]) == 0
    return out


def metrics_steps(run):
    return [json.loads(line)["step"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


# --- exact resume --------------------------------------------------------------------------------

@pytest.mark.process
def test_sigkill_between_checkpoints_then_resume_is_bit_identical(reference, tmp_path):
    """Killed with SIGKILL (no chance to save anything) once the step-50 checkpoint exists, i.e. somewhere
    between checkpoints; the resume restarts from the newest checkpoint and must end byte-identical."""
    run = tmp_path / "run"
    process = cli_process("train", "--out", run, "--steps", STEPS, "--checkpoint-every", 50, "--no-pictures", *TINY)
    wait_for(run / "checkpoints" / "step_00000050.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "model").exists(), "the run finished before the kill; the test proves nothing"
    assert (run / "train.lock").exists()  # a stale lock: its process is gone

    with pytest.warns(UserWarning, match="stale lock"):
        assert main(["train", "--resume", str(run), "--no-pictures"]) == 0
    assert weights(run) == weights(reference)
    assert metrics_steps(run) == metrics_steps(reference)  # lines the killed run logged past its checkpoint dropped
    assert not (run / "train.lock").exists()


@pytest.mark.process
def test_sigterm_saves_a_checkpoint_then_resume_is_bit_identical(reference, tmp_path):
    run = tmp_path / "run"
    process = cli_process("train", "--out", run, "--steps", STEPS, "--checkpoint-every", 50, "--no-pictures", *TINY)
    wait_for(run / "checkpoints" / "step_00000050.pt", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stopped by SIGTERM at step" in lines[0] and f"--resume {run}" in lines[0]
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert (run / "checkpoints" / f"step_{step:08d}.pt").exists()  # saved on the signal, not only every 50
    assert not (run / "train.lock").exists()
    assert main(["train", "--resume", str(run), "--no-pictures"]) == 0
    assert weights(run) == weights(reference)


@pytest.mark.process
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    """A kill can leave the newest checkpoint truncated (say, a disk filled up); it is skipped with a
    warning, the previous one is intact, so the resumed run still ends byte-identical."""
    run = tmp_path / "run"
    process = cli_process("train", "--out", run, "--steps", STEPS, "--checkpoint-every", 50, "--no-pictures", *TINY)
    wait_for(run / "checkpoints" / "step_00000100.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    newest = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning) as caught:
        assert main(["train", "--resume", str(run), "--no-pictures"]) == 0
    assert any(str(w.message) == f"skipping checkpoint {newest}: it is truncated or corrupt" for w in caught)
    assert weights(run) == weights(reference)


def test_every_checkpoint_unreadable_is_one_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "20", "--checkpoint-every", "10", "--no-pictures",
                 *TINY]) == 0
    for path in (run / "checkpoints").iterdir():
        path.write_bytes(b"not a checkpoint")
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--steps", "40", "--no-pictures"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"gaussdiff train: error: cannot resume {run}: none of its 2 checkpoints is readable"
    assert snapshot(run) == before


def test_resume_may_extend_the_budget_but_not_change_the_model(reference, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "100", "--checkpoint-every", "50", "--no-pictures",
                 *TINY]) == 0
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--width", "64", "--no-pictures"]) == 2
    err = capsys.readouterr().err
    assert err == (f"gaussdiff train: error: cannot resume {run}: width was 32 and is now 64, which changes the "
                   f"model; start a new run instead\n")
    assert snapshot(run) == before
    assert main(["train", "--resume", str(run), "--steps", "150", "--no-pictures"]) == 0
    assert json.loads((run / "config.json").read_text())["steps"] == 150
    assert metrics_steps(run)[-1] == 150


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "cannot resume {p}: it does not exist or is not a folder"),
    (lambda p: p.mkdir(), "cannot resume {p}: it is not a training run folder"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{}"), (p / "checkpoints").mkdir()),
     "cannot resume {p}: no checkpoint in"),
])
def test_resume_from_what_is_not_a_run(tmp_path, capsys, make, message):
    path = tmp_path / "x"
    make(path)
    assert main(["train", "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(p=path) in err and "Traceback" not in err


def test_resume_with_another_out_or_overwrite_is_refused(reference, capsys, tmp_path):
    assert main(["train", "--resume", str(reference), "--out", str(tmp_path / "y")]) == 2
    assert "do not give another --out" in capsys.readouterr().err
    assert main(["train", "--resume", str(reference), "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err


# --- the lock ------------------------------------------------------------------------------------

def test_a_live_lock_refuses_a_second_trainer(reference, capsys):
    """The lock names this very (live) test process, as a running trainer's would."""
    lock = reference / "train.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    try:
        before = snapshot(reference)
        assert main(["train", "--resume", str(reference), "--steps", "700", "--no-pictures"]) == 2
        err = capsys.readouterr().err
        assert err == (f"gaussdiff train: error: {reference} is in use by another trainer (pid {os.getpid()} on "
                       f"{socket.gethostname()}); if none runs, delete {lock}\n")
        assert main(["train", "--out", str(reference), "--overwrite", *TINY]) == 2  # nor may it be replaced
        assert "is in use by another trainer" in capsys.readouterr().err
        assert snapshot(reference) == before
    finally:
        lock.unlink()


def test_a_lock_from_another_host_is_never_taken_as_stale(reference, capsys):
    lock = reference / "train.lock"
    lock.write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere"}))  # cannot check that pid: respect it
    try:
        assert main(["train", "--resume", str(reference), "--steps", "700", "--no-pictures"]) == 2
        assert "in use by another trainer (pid 999999999 on elsewhere)" in capsys.readouterr().err
    finally:
        lock.unlink()


# --- config files --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text", [
    ("c.toml", 'width = 48\nlr = 1\nsteps = 7\nbeta_schedule = "squaredcos_cap_v2"\ncompile = false\n'),
    ("c.yaml", "width: 48\nlr: 1\nsteps: 7\nbeta_schedule: squaredcos_cap_v2\ncompile: false\n"),
])
def test_config_file_values_and_flags_win(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    cfg = resolve({"steps": 9}, tmp_path / name)
    assert (cfg.width, cfg.lr, cfg.steps, cfg.beta_schedule) == (48, 1.0, 9, "squaredcos_cap_v2")
    assert isinstance(cfg.lr, float) and cfg.depth == TrainConfig.depth  # an int in the file is a float field


def test_config_file_run_saves_the_resolved_config(tmp_path):
    (tmp_path / "c.toml").write_text('width = 24\nsteps = 12\ndata = "circles"\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(out), "--steps", "6", "--no-pictures",
                 *TINY]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["width"], saved["steps"], saved["data"]) == (32, 6, "circles")  # TINY's --width 32 wins too


@pytest.mark.parametrize("name, text, message", [
    ("c.toml", "widht = 3\n", "unknown key 'widht'"),
    ("c.toml", 'width = "wide"\n', "width must be of type int, got 'wide'"),
    ("c.toml", "width = 3.5\n", "width must be of type int, got 3.5"),
    ("c.toml", "width = true\n", "width must be of type int, got True"),
    ("c.yaml", "lr: fast\n", "lr must be of type float | None, got 'fast'"),
    ("c.yaml", "- 1\n- 2\n", "must hold a mapping of options"),
    ("c.toml", "width = \n", "is not valid TOML"),
    ("c.yaml", "a: [1\n", "is not valid YAML"),
    ("c.json", "{}", "must end in .toml, .yaml or .yml"),
    ("missing.toml", None, "does not exist"),
])
def test_bad_config_files_are_one_line(tmp_path, capsys, name, text, message):
    if text is not None:
        (tmp_path / name).write_text(text)
    assert main(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
