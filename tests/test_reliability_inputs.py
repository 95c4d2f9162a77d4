"""Sizes, seeds, a one-step chain and torchrun's reports (issue 10): work that cannot fit this machine's memory is
refused up front with one line naming the option, and an allocation failure that still happens is one line too;
every command refuses a seed outside [0, 2^32) by the same check; training refuses T = 1, and elbo a T = 1 model;
under torchrun the one line of rank 0 is never lost to another rank's exit."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gaussdiff.errors
from gaussdiff import cli
from gaussdiff.cli import main
from gaussdiff.data import Standardize
from gaussdiff.nets import MLP
from gaussdiff.saved import SavedModel
from gaussdiff.schedule import make_schedule
from gaussdiff.sweep import FLOOR_DRAWS
from gaussdiff.train import TrainConfig
from gaussdiff.train.batches import GlobalBatches
from gaussdiff.train.config import mlp_bytes

from test_cli import one_line_error

SRC = str(Path(__file__).resolve().parents[1] / "src")
T = 20
TINY = ["--n-data", "200", "--width", "16", "--depth", "1", "--emb-dim", "16", "--num-train-timesteps", "20",
        "--batch-size", "64", "--steps", "2", "--threads", "1", "--no-pictures"]
MEMORY = 8e9  # the machine the size checks are asked about, whatever machine runs the tests
SEED_MESSAGE = "the seed must be an integer in [0, 4294967295], got "


def save_model(folder, T=T):
    """An untrained 2-D model of the moons in their own units, as a run would export it."""
    torch.manual_seed(0)
    model = SavedModel(MLP(2, T, width=16, depth=1, emb_dim=8), make_schedule("linear", T), "v_prediction",
                       Standardize.identity(2), "moons", "fixed_small")
    return model.save(folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.setattr(gaussdiff.errors, "machine_memory", lambda: int(MEMORY))


# --- sizes checked up front ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, needles", [
    (["--width", "200000"], ["training an MLP of width 200000 and depth 1 (",
                             "more than this machine's 8 GB: choose a smaller --width, --depth or --batch-size"]),
    (["--depth", "10000", "--width", "64", "--emb-dim", "128", "--batch-size", "1024", "--n-data", "2000"],
     ["training an MLP of width 64 and depth 10000 (167,056,833 parameters) on micro-batches of 1024 would take at "
      "least 15.9 GB", "--width, --depth or --batch-size"]),
    (["--n-data", str(10**12)], ["--n-data 1000000000000: the data set would take at least 16,000 GB of memory",
                                 "choose a smaller --n-data"]),
    (["--num-train-timesteps", str(10**9)], ["num_train_timesteps 1000000000: the noise schedule would take at least "
                                            "40 GB", "choose a smaller num_train_timesteps"]),
])
def test_training_too_big_for_the_machine_is_one_line_before_the_run_folder(machine, tmp_path, capsys, flags, needles):
    one_line_error(capsys, ["train", "--out", tmp_path / "run", *TINY, *flags], *needles)
    assert list(tmp_path.iterdir()) == []


def test_depth_10000_at_the_default_batch_needs_more_than_8_gb():
    """The estimate for the issue's --depth 10000 (width 64, batch 1024): 167,056,833 parameters (counted below from
    the MLP's layers), four copies of them (weights, EMA, Adam's two moments) and the activations autograd keeps:
    more than the 8 GB of the tests' machine."""
    w, e, depth = 64, 128, 10000
    block = 2 * w + 2 * (w * w + w) + (e * w + w)  # LayerNorm, fc1 and fc2, the time embedding's projection
    params = (e * e + e) + (1 * w + w) + depth * block + 2 * w + (w * 1 + 1)  # time MLP, input, blocks, output
    cfg = TrainConfig(depth=depth)
    one, two = mlp_bytes(cfg, 1, 1024), mlp_bytes(cfg, 2, 1024)
    assert params == 167_056_833 and one[0] + (depth - 1) * (two[0] - one[0]) == 4 * params
    kept = one[1] + (depth - 1) * (two[1] - one[1])
    assert 4 * 4 * params + kept > MEMORY
    # per block and sample autograd keeps at least LayerNorm's input and fc1's and fc2's inputs: 3 x 64 floats
    assert (two[1] - one[1]) / 1024 >= 3 * w * 4


def test_the_mlp_estimate_grows_linearly_with_depth():
    """The training check measures depths 1 and 2 and extrapolates; a direct measure at depth 6 agrees exactly."""
    cfg = TrainConfig(width=24, emb_dim=16)
    one, two, six = (mlp_bytes(cfg, depth, 50) for depth in (1, 2, 6))
    assert six == tuple(a + 5 * (b - a) for a, b in zip(one, two))
    assert six[0] == 4 * sum(p.numel() for p in MLP(1, cfg.num_train_timesteps, 24, 6, 16).parameters())


def test_a_run_that_fits_is_not_refused(machine, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), *TINY]) == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("command, extra, option, per_point", [
    ("elbo", ["--data", "moons"], "-n/--num-points", 16),
    ("nll", ["--data", "moons"], "-n/--num-samples", 16),
    ("sweep", ["--data", "moons", "--nfe", "5"], "-n/--num-samples", 16 * (FLOOR_DRAWS + 1)),
    ("plot", [], "-n/--num-samples", 16),
])
def test_evaluating_too_many_points_is_one_line(machine, model, tmp_path, capsys, command, extra, option, per_point):
    n = 10**12
    one_line_error(capsys, [command, model, *extra, "-n", n, "--out", tmp_path / "out"],
                   f"-n {n}: the ", f"would take at least {per_point * n / 1e9:,.0f} GB of memory",
                   f"choose a smaller {option}")
    assert not (tmp_path / "out").exists()


def test_n_beyond_a_files_rows_takes_them_all_and_is_not_refused(machine, model, tmp_path, capsys):
    """-n counts fresh points of a built-in set only; of a file it takes at most all the rows."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(12, 2)))
    assert main(["elbo", str(model), "--data", str(tmp_path / "x.npy"), "-n", str(10**12), "--threads", "1",
                 "--out", str(tmp_path / "elbo")]) == 0
    assert "all 12 rows" in capsys.readouterr().out


# --- allocation failures that still happen ---------------------------------------------------------------------------

def cuda_out_of_memory():
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.mark.parametrize("command, allocate, needle", [
    ("elbo", lambda: torch.empty(10**13), "out of memory (an allocation of 40000000000000 bytes failed); choose a "
                                          "smaller -n/--num-points or --batch-size"),
    ("train", lambda: np.empty((10**12, 2)), "out of memory (an allocation of 14.6 TiB failed); choose a smaller "
                                             "--n-data, --batch-size, --width"),
    ("plot", cuda_out_of_memory, "out of memory (an allocation of 20.00 GiB failed); choose a smaller "
                                 "-n/--num-samples"),
])
def test_an_allocation_failure_is_one_line_naming_the_sizes(monkeypatch, capsys, tmp_path, command, allocate, needle):
    """Real allocations larger than any memory fail at once (torch's and numpy's allocators), and CUDA's error."""
    monkeypatch.setitem(cli.COMMANDS, command, lambda args: allocate())
    argv = {"elbo": ["elbo", tmp_path, "--data", "moons"], "train": ["train"], "plot": ["plot", tmp_path]}[command]
    one_line_error(capsys, argv, needle)


def test_other_runtime_errors_are_not_taken_for_memory(monkeypatch):
    def fail(args):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setitem(cli.COMMANDS, "plot", fail)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(["plot", "run"])


# --- seeds -----------------------------------------------------------------------------------------------------------

def command_lines(model, out):
    """One command line of every command that takes --seed, writing under ``out``."""
    return {"train": ["train", "--out", out / "run", *TINY],
            "sample": ["sample", model, "-n", "5", "--out", out / "s.npy"],
            "inpaint": ["inpaint", model, "--image", out / "x.npy", "--mask", out / "m.npy", "--out", out / "i.npy"],
            "elbo": ["elbo", model, "--data", "moons", "-n", "5", "--out", out / "elbo"],
            "nll": ["nll", model, "--data", "moons", "-n", "5", "--out", out / "nll"],
            "sweep": ["sweep", model, "--data", "moons", "-n", "5", "--out", out / "sweep"],
            "plot": ["plot", model, "-n", "5", "--out", out / "pictures"]}


@pytest.mark.parametrize("seed", [-1, 2**70, 2**32])
@pytest.mark.parametrize("command", ["train", "sample", "inpaint", "elbo", "nll", "sweep", "plot"])
def test_every_command_refuses_a_seed_outside_the_shared_range(model, tmp_path, capsys, command, seed):
    one_line_error(capsys, [*command_lines(model, tmp_path)[command], "--seed", seed], f"{SEED_MESSAGE}{seed}")
    assert list(tmp_path.iterdir()) == []


def test_the_top_of_the_seed_range_works_in_training(tmp_path):
    """2^32 - 1 is accepted by a training config (it was refused above 2^31) and its batch stream, seeded by
    seed << 32 | step, draws; a config file's seed goes through the same check as the flag."""
    TrainConfig(steps=1, seed=2**32 - 1).validate()
    t, eps, _, _ = GlobalBatches(100, 10, 1, 2**32 - 1).t_and_noise(2**32 - 1, T, (2,))
    assert t.shape == (10,) and torch.isfinite(eps).all()
    with pytest.raises(gaussdiff.errors.InputError, match=r"the seed must be an integer in \[0, 4294967295\]"):
        TrainConfig(steps=1, seed=2**32).validate()


# --- T = 1 -----------------------------------------------------------------------------------------------------------

def test_training_refuses_a_one_step_chain_and_says_why(tmp_path, capsys):
    flags = [f for f in TINY if f not in ("--num-train-timesteps", "20")]
    one_line_error(capsys, ["train", "--out", tmp_path / "run", *flags, "--num-train-timesteps", "1"],
                   "num-train-timesteps must be at least 2, got 1: the reverse step at t = 1 takes its variance "
                   "from t = 2")
    assert list(tmp_path.iterdir()) == []


def test_elbo_of_a_one_step_model_is_one_line_and_writes_nothing(tmp_path, capsys):
    """A T = 1 model saved through the API (training refuses to make one): refused before any work."""
    run = save_model(tmp_path / "t1", T=1)
    saved = sorted(run.iterdir())
    one_line_error(capsys, ["elbo", run, "--data", "moons", "-n", "5"], "has a chain of T = 1 step",
                   "elbo needs T >= 2")
    assert sorted(run.iterdir()) == saved and sorted(tmp_path.iterdir()) == [run]


# --- torchrun ---------------------------------------------------------------------------------------------------------

def test_another_rank_waits_for_rank_0_to_report_then_reports_what_it_met_alone(monkeypatch, capsys):
    """A rank other than 0 stays alive (torchrun ends it when rank 0 exits after its report); if it is still alive
    after the wait, the error was its own, and it says so with its rank."""
    waits = []
    monkeypatch.setattr(cli.time, "sleep", waits.append)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["plot", "run", "--seed", "-1"]) == 2
    assert waits == [cli.PEER_REPORT_WAIT_S]
    assert capsys.readouterr().err == f"gaussdiff plot (rank 1 of 2): error: {SEED_MESSAGE}-1\n"
    monkeypatch.setenv("RANK", "0")
    assert main(["plot", "run", "--seed", "-1"]) == 2
    assert waits == [cli.PEER_REPORT_WAIT_S] and capsys.readouterr().err == f"gaussdiff plot: error: {SEED_MESSAGE}-1\n"


SLOW_RANK_0 = """
import os, sys, time
from gaussdiff.cli import main

class Late:  # rank 0 writes 3 s late, as on a loaded machine: the other rank must not end the job meanwhile
    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        time.sleep(3)
        return self.stream.write(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)

if os.environ["RANK"] == "0":
    sys.stderr = Late(sys.stderr)
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.process
@pytest.mark.parametrize("flags, message", [
    (["--n-data", "1", "--batch-size", "1"], "2 process(es) x 1 micro-batch(es) need at least 2 data rows; the data "
                                             "has 1"),  # met by both ranks after they joined the process group
    (["--seed", "-1"], f"{SEED_MESSAGE}-1"),  # met by both ranks before it
])
def test_rank_0_reports_under_torchrun_however_late(tmp_path, flags, message):
    """torchrun ends every worker as soon as one fails; rank 1 meets the same error and waits, so rank 0's one line
    appears even when rank 0 is 3 s late to write it (before the fix rank 1 exited and torchrun killed rank 0)."""
    (tmp_path / "slow_rank_0.py").write_text(SLOW_RANK_0)
    env = os.environ | {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(tmp_path / "slow_rank_0.py"), "train", "--out", str(tmp_path / "run"), *TINY, *flags],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("gaussdiff train")] == [
        f"gaussdiff train: error: {message}"]
    assert "exitcode  : 2" in result.stderr  # rank 0's, in torchrun's summary
