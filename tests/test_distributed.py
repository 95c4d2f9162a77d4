"""Data parallel through torchrun (gloo on CPU): 2 processes compute what 1 process computes on the same
global batch, a 2-process run stopped by a signal resumes exactly, and rank 0 alone writes and reports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gaussdiff.train import TrainConfig, train
from gaussdiff.train.batches import GlobalBatches

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = dict(data="moons", n_data=2000, batch_size=128, width=32, depth=1, emb_dim=16, num_train_timesteps=50,
            warmup_steps=5, threads=1, steps=60, log_every=10, checkpoint_every=20)


def flags(cfg: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]


def torchrun(*args, nproc=2):
    env = os.environ | {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             f"--nproc_per_node={nproc}", "-m", "gaussdiff", "train", *map(str, args)],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    process = torchrun("--out", out, "--no-pictures", *flags(TINY))
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return out, stdout, stderr


@pytest.mark.process
def test_two_processes_match_one_process(two_process_run, tmp_path):
    """Each rank takes half of the global batch (rows, t and noise) and DDP averages the gradients, so the
    update is the one-process update up to float32 summation order (~1e-7 relative per step). Adam keeps
    such differences small: after 60 steps the weights agree to 1e-5 (seen ~1e-7), while one step alone
    moves them by more than 1e-3."""
    run, _, _ = two_process_run
    one = train(TrainConfig(out=str(tmp_path / "one"), **TINY), progress=False)
    a, b = load_file(run / "model" / "online.safetensors"), load_file(one / "model" / "online.safetensors")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    rows_two = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows_one = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    # The logged loss is the global batch's (summed over ranks), not rank 0's half.
    assert [r["loss"] for r in rows_two] == pytest.approx([r["loss"] for r in rows_one], rel=1e-4)


@pytest.mark.process
def test_rank_zero_alone_writes_and_reports(two_process_run):
    run, stdout, stderr = two_process_run
    assert stdout.count("trained:") == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json", "metrics.jsonl", "model"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6  # not one set of lines per rank


@pytest.mark.process
def test_two_process_run_stopped_by_sigterm_resumes_exactly(two_process_run, tmp_path):
    """torchrun passes SIGTERM to both workers; they agree on the step to stop at (an all-reduce of the
    signal flag), rank 0 checkpoints, and a 2-process resume ends byte-identical to the uninterrupted
    2-process run (same processes, same reduction order: nothing may differ)."""
    run = tmp_path / "run"
    process = torchrun("--out", run, "--no-pictures", *flags(TINY))
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "step_00000020.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert stderr.count("stopped by SIGTERM at step") == 1  # rank 0 alone reports
    assert not (run / "model").exists() and not (run / "train.lock").exists()

    resumed = torchrun("--resume", run, "--no-pictures")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    reference, _, _ = two_process_run
    for name in ("model.safetensors", "online.safetensors"):
        assert (run / "model" / name).read_bytes() == (reference / "model" / name).read_bytes()


@pytest.mark.process
def test_more_processes_than_data_is_one_line(tmp_path):
    process = torchrun("--out", tmp_path / "run", *flags(TINY | dict(n_data=1, batch_size=1)))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    ours = [line for line in stderr.splitlines() if line.startswith("gaussdiff train:")]
    assert ours == ["gaussdiff train: error: 2 process(es) x 1 micro-batch(es) need at least 2 data rows; "
                    "the data has 1"]
    assert "exitcode  : 2" in stderr  # each worker exited 2; the summary around it is torchrun's own


@pytest.mark.process
def test_importance_sampling_of_t_is_the_same_on_two_processes(tmp_path):
    """The t sampler's history is fed the global batch in one-process order (gathered from both ranks), so
    its p_t, and so the drawn t, are the same as one process's; the weights agree as in the uniform case.
    (p_t could differ by float32 noise in the losses, ~1e-7 relative, and flip a draw with probability of
    order 1e-7 per sample; over 60 x 128 draws that is ~1e-3, accepted.)"""
    cfg = TINY | dict(loss_type="hybrid", variance_type="learned_range", t_sampling="importance")
    process = torchrun("--out", tmp_path / "two", "--no-pictures", *flags(cfg))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    one = train(TrainConfig(out=str(tmp_path / "one"), **cfg), progress=False)
    a, b = (load_file(r / "model" / "online.safetensors") for r in (tmp_path / "two", one))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_the_ranks_slices_interleaved_are_the_one_process_batch():
    """Why 2 processes compute what 1 computes, checked without starting any (`make test-fast` keeps this test):
    at every step, across epoch boundaries, the rows, t, weights, noise and label-dropout draws of rank 0 and rank 1,
    interleaved (positions r, r + 2, ...), are exactly the one-process global batch, uniform or importance-sampled."""
    def interleaved(parts):
        return torch.stack(parts, 1).flatten(0, 1)

    class Skewed:  # a t sampler with non-uniform p_t: t ~ p_t through the step's generator, weights 1 / (T p_t)
        p = torch.arange(1, 51, dtype=torch.float64) / 1275

        def sample(self, n, generator):
            t = torch.multinomial(self.p, n, replacement=True, generator=generator) + 1
            return t, 1 / (50 * self.p[t - 1])

    one = GlobalBatches(2000, 128, 1, seed=3)
    ranks = [GlobalBatches(2000, 128, 1, seed=3, rank=r, world=2) for r in range(2)]
    for step in (0, 1, one.per_epoch - 1, one.per_epoch, 5 * one.per_epoch + 2):
        assert torch.equal(interleaved([b.rows(step) for b in ranks]), one.rows(step))
        for t_sampler in (None, Skewed()):
            whole = one.t_and_noise(step, 50, (2,), t_sampler, label_dropout=0.3)
            parts = [b.t_and_noise(step, 50, (2,), t_sampler, label_dropout=0.3) for b in ranks]
            for i, value in enumerate(whole):
                assert torch.equal(interleaved([part[i] for part in parts]), value)
