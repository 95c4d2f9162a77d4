"""--threads auto and the end-of-run speed line (issue 11): the probe keeps the faster of 1 and N threads, measured
alternately on throwaway copies, so a run with auto computes exactly what a run with the chosen count computes and a
resume keeps the recorded count; the rules that read a run's speed, on injected numbers (no wall clock); and the
OpenMP wait policy gaussdiff sets before torch loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gaussdiff.cli import main
from gaussdiff.errors import InputError
from gaussdiff.train import TrainConfig, loop as train_loop, threads, train

TINY = dict(data="moons", n_data=500, batch_size=64, width=16, depth=1, emb_dim=8, num_train_timesteps=20,
            warmup_steps=2, log_every=5, lr_schedule="constant", checkpoint_every=5)
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def one_thread_after():
    """conftest's one thread, whatever a test set."""
    yield
    torch.set_num_threads(1)


def weights(run: Path) -> bytes:
    return (run / "model" / "model.safetensors").read_bytes() + (run / "model" / "online.safetensors").read_bytes()


# --- the option -------------------------------------------------------------------------------------------------

def test_the_default_is_auto_and_counts_are_checked():
    assert TrainConfig().threads == "auto" and TrainConfig().validate().threads == "auto"
    for value in (1, 64, threads.MAX_THREADS, None):  # None: a run recorded before auto (torch's default)
        assert TrainConfig(threads=value).validate().threads == value
    for value, message in [(0, "threads must be positive, got 0"), (-2, "threads must be positive, got -2"),
                           (threads.MAX_THREADS + 1, f"threads must be at most {threads.MAX_THREADS}, got 1025"),
                           ("many", "threads must be auto or a number of threads, got 'many'"),
                           (2.5, "threads must be auto or a number of threads, got 2.5")]:
        with pytest.raises(InputError, match=message):
            TrainConfig(threads=value).validate()


@pytest.mark.parametrize("value, message", [("0", "threads must be positive, got 0"),
                                            ("100000", "threads must be at most 1024, got 100000")])
def test_bad_thread_counts_are_one_line(tmp_path, capsys, value, message):
    assert main(["train", "--out", str(tmp_path / "r"), "--steps", "2", "--threads", value]) == 2
    assert capsys.readouterr().err == f"gaussdiff train: error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_available_cores_follows_the_affinity_and_the_processes(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert [threads.available_cores(p) for p in (1, 3, 8, 16)] == [8, 2, 1, 1]
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows: all the machine's cores
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert threads.available_cores(2) == 3


# --- the probe, on a fake clock ---------------------------------------------------------------------------------

class FakeSteps:
    """Steps whose cost depends on torch's thread count, on a clock they advance themselves; ``burst`` multiplies
    the cost of every step that starts inside a window of fake time (another process passing by)."""

    def __init__(self, cost: dict[int, float], burst=(0.0, 0.0, 1.0)):
        self.now, self.cost, self.burst, self.counts = 0.0, cost, burst, []

    def clock(self) -> float:
        return self.now

    def step(self) -> None:
        n = torch.get_num_threads()
        self.counts.append(n)
        start, end, factor = self.burst
        self.now += self.cost[n] * (factor if start <= self.now < end else 1.0)


@pytest.mark.parametrize("cost, chosen", [({1: 0.010, 2: 0.100}, 1),  # the collapse: 2 threads 10x slower
                                          ({1: 0.010, 2: 0.006}, 2),  # a quiet machine: 2 threads faster
                                          ({1: 0.010, 2: 0.0095}, 1)])  # within MARGIN: one thread is safer
def test_the_probe_keeps_the_faster_count(cost, chosen):
    fake = FakeSteps(cost)
    choice = threads.probe_threads(fake.step, 2, 1.0, clock=fake.clock)
    assert choice.threads == chosen and torch.get_num_threads() == chosen
    assert choice.rates == {n: pytest.approx(1 / c, rel=1e-9) for n, c in cost.items()}
    # one untimed step at each count, then strictly alternating steps, until 1 s of timed steps
    assert fake.counts[:2] == [1, 2] and fake.counts[2:] == [1, 2] * ((len(fake.counts) - 2) // 2)
    round_s = cost[1] + cost[2]
    assert (len(fake.counts) - 2) // 2 == max(threads.PROBE_MIN_STEPS, int(1.0 / round_s - 1e-9) + 1)
    assert choice.line() == (f"threads: auto chose {chosen} of 2 ({1 / cost[1]:.1f} steps/s at 1 thread, "
                             f"{1 / cost[2]:.1f} at 2)")


def test_alternating_spreads_a_passing_load_over_both_counts():
    """A burst (steps 5x slower) from 0.4 s to 0.8 s of the probe: alternating steps share it, so 2 threads, truly
    1.5x faster, measure 1.5x and win; timing the 1-thread steps first and the 2-thread ones after would have put
    the burst on the second count alone (0.91x in a simulation of the same steps) and kept 1 thread."""
    fake = FakeSteps({1: 0.006, 2: 0.004}, burst=(0.4, 0.8, 5.0))
    choice = threads.probe_threads(fake.step, 2, 1.0, clock=fake.clock)
    assert choice.threads == 2
    assert choice.rates[2] / choice.rates[1] == pytest.approx(1.5, rel=0.05)


def test_every_process_stops_the_probe_at_the_same_step():
    fake, asked = FakeSteps({1: 1.0, 2: 1.0}), []
    together = lambda stop: asked.append(stop) or len(asked) == 5  # e.g. another rank wants 5 rounds
    threads.probe_threads(fake.step, 2, 0.5, together=together, clock=fake.clock)
    assert asked == [False, False, True, True, True] and len(fake.counts) == 2 + 2 * 5


def test_the_probe_takes_a_small_share_of_a_time_budget():
    assert threads.probe_seconds(None) == threads.PROBE_SECONDS == 1.0
    assert threads.probe_seconds(120) == 1.0 and threads.probe_seconds(5) == pytest.approx(0.1)


# --- auto in a real run ----------------------------------------------------------------------------------------

@pytest.fixture
def forced_choice(monkeypatch):
    """Make auto probe on 2 cores for 0.05 s and choose the count ``forced[0]``; records each probe's rates."""
    forced, probes = [1], []
    monkeypatch.setattr(train_loop, "available_cores", lambda processes=1: 2)
    monkeypatch.setattr(threads, "PROBE_SECONDS", 0.05)
    monkeypatch.setattr(threads, "pick", lambda rates, n: probes.append(rates) or forced[0])
    return forced, probes


@pytest.mark.parametrize("count, t_sampling", [(1, "uniform"), (2, "importance")])
def test_auto_computes_what_its_chosen_count_computes(tmp_path, capsys, forced_choice, count, t_sampling):
    """The probe's steps run on copies: the weights, the optimiser, the t sampler, the random streams and the
    batches of the run stay untouched, so auto ends byte-identical to --threads K for the K it chose."""
    forced, probes = forced_choice
    forced[0] = count
    auto = train(TrainConfig(out=str(tmp_path / "auto"), steps=12, t_sampling=t_sampling, **TINY), progress=False)
    assert len(probes) == 1 and set(probes[0]) == {1, 2} and all(r > 0 for r in probes[0].values())
    fixed = train(TrainConfig(out=str(tmp_path / "fixed"), steps=12, t_sampling=t_sampling, threads=count, **TINY),
                  progress=False)
    assert json.loads((auto / "config.json").read_text())["threads"] == count
    assert weights(auto) == weights(fixed)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"threads: auto chose {count} of 2 (")
    assert printed[1].startswith("trained 12 steps in ") and printed[1].endswith(
        f" steps/s on {count} thread{'s' * (count > 1)} (budget: 12 steps)")


@pytest.mark.slow
def test_a_resume_keeps_the_recorded_count_and_stays_exact(tmp_path, forced_choice):
    """A run that chose 2 threads, continued from the command line and from Python (auto there too): both keep 2
    without probing again, and end byte-identical to a run that never stopped."""
    forced, probes = forced_choice
    forced[0] = 2
    cli_run, api_run = tmp_path / "cli", tmp_path / "api"
    for run in (cli_run, api_run):
        train(TrainConfig(out=str(run), steps=10, **TINY), progress=False)
    assert len(probes) == 2
    torch.set_num_threads(1)
    assert main(["train", "--resume", str(cli_run), "--steps", "20", "--no-pictures"]) == 0
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    train(TrainConfig(out=str(api_run), steps=20, **TINY), resume=True, progress=False)
    assert torch.get_num_threads() == 2 and len(probes) == 2  # no probe on resume
    whole = train(TrainConfig(out=str(tmp_path / "whole"), steps=20, threads=2, **TINY), progress=False)
    for run in (cli_run, api_run):
        assert json.loads((run / "config.json").read_text())["threads"] == 2
        assert weights(run) == weights(whole)


def test_the_end_of_a_run_says_its_speed_and_warns_when_undertrained(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(threads.MIN_STEPS, "vectors", 10**9)
    argv = ["train", "--out", str(tmp_path / "r"), "--time-budget", "0.3", "--threads", "1", "--no-pictures",
            *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]]
    with pytest.warns(UserWarning) as caught:
        assert main(argv) == 0
    out = capsys.readouterr().out
    steps = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    assert f"trained {steps:,} steps in " in out and out.splitlines()[0].endswith("on 1 thread (budget: 0.3 s)")
    assert [str(w.message) for w in caught] == [
        f"undertrained: the time budget gave {steps:,} steps, fewer than the 1,000,000,000 such a model needs to come "
        f"near its best (benchmarks/RESULTS.md); give a longer --time-budget or use a quieter machine"]


# --- the rules that read a run's speed ---------------------------------------------------------------------------

def speed(**values) -> threads.RunSpeed:
    base = dict(steps=3000, total_steps=3000, seconds=30.0, threads=2, step_budget=None, time_budget=30.0,
                early_rate=100.0, late_rate=100.0, min_steps=2000)
    return threads.RunSpeed(**(base | values))


def test_a_run_far_slower_than_its_first_seconds_warns_that_the_machine_got_busy():
    (warning,) = speed(early_rate=25.0, late_rate=2.0).warnings()
    assert warning.startswith("training slowed down 12.5x: 2.0 steps/s over the run against 25.0 in its first 5 s")
    assert warning.endswith("try --threads 1 or a quieter machine")
    assert speed(threads=1, early_rate=25.0, late_rate=2.0).warnings()[0].endswith("a quieter machine trains faster")
    assert speed(early_rate=25.0, late_rate=12.5).warnings() == []  # half the early rate: not yet "far below"
    assert speed(early_rate=25.0, late_rate=12.4).warnings() != []
    assert speed(early_rate=None, late_rate=1.0).warnings() == []  # shorter than the first seconds: nothing to compare


@pytest.mark.parametrize("values, undertrained", [
    (dict(total_steps=218, time_budget=120.0), True),  # the busy demo
    (dict(total_steps=1999), True), (dict(total_steps=2000), False),
    (dict(total_steps=218, time_budget=None, step_budget=218), False),  # a step budget gives what was asked
    (dict(total_steps=500, time_budget=60.0, step_budget=500), False),  # the step budget ended it first
    (dict(total_steps=400, time_budget=60.0, step_budget=500), True),
    (dict(total_steps=5000, min_steps=threads.MIN_STEPS["images"]), True),
])
def test_a_time_budget_that_gave_too_few_steps_warns_undertrained(values, undertrained):
    found = speed(**values).warnings()
    assert bool(found) == undertrained
    if undertrained:
        assert found[0].startswith(f"undertrained: the time budget gave {values['total_steps']:,} steps, fewer than")


def test_the_speed_line():
    assert speed(steps=24134, total_steps=24134, seconds=120.0, time_budget=120.0).line() == \
        "trained 24,134 steps in 120.0 s: 201.1 steps/s on 2 threads (budget: 120 s)"
    assert speed(steps=100, total_steps=300, seconds=4.0, threads=1, step_budget=300, time_budget=None).line() == \
        "trained 100 steps (to step 300) in 4.0 s: 25.0 steps/s on 1 thread (budget: 300 steps)"
    assert speed(step_budget=5000, time_budget=60.0).line().endswith("(budget: 5,000 steps or 60 s)")


def test_the_meter_times_the_first_seconds_from_the_end_of_the_first_step():
    now = [0.0]
    meter = threads.SpeedMeter(100, clock=lambda: now[0])
    now[0] = 2.0  # the first step pays one-off costs
    meter.tick(101)
    for step in range(102, 142):  # then 8 steps/s
        now[0] += 0.125
        meter.tick(step)
    assert meter.early == 8.0  # 40 steps in the 5 s after the first
    for step in range(142, 152):  # then the machine got busy: 1 step/s
        now[0] += 1.0
        meter.tick(step)
    s = meter.speed(151, 2, None, 30.0, "vectors")
    assert (s.steps, s.total_steps, s.seconds, s.min_steps) == (51, 151, 17.0, 2000)
    assert s.late_rate == 50 / 15.0 and s.rate == 51 / 17.0
    assert s.warnings()[0].startswith("training slowed down 2.4x: 3.3 steps/s over the run against 8.0")


# --- the OpenMP wait policy --------------------------------------------------------------------------------------

MODULE = ["-m", "gaussdiff", "--version"]  # python -m gaussdiff
SCRIPT = ["-c", "import sys; from gaussdiff.cli import main; sys.exit(main(['--version']))"]  # the console script


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("how, user, shown", [(MODULE, None, "GOMP_SPINCOUNT = '0'"),
                                              (SCRIPT, None, "GOMP_SPINCOUNT = '0'"),
                                              (MODULE, "ACTIVE", "OMP_WAIT_POLICY = 'ACTIVE'")])
def test_the_command_waits_passively_unless_the_user_says_otherwise(how, user, shown):
    """libgomp (torch's OpenMP on Linux) prints its settings under OMP_DISPLAY_ENV=VERBOSE when torch loads it: no
    spinning (GOMP_SPINCOUNT 0, where it is 300000 by default) for python -m gaussdiff and the gaussdiff command, and
    the user's own OMP_WAIT_POLICY kept."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # this process set it when it imported us
    env |= {"OMP_DISPLAY_ENV": "VERBOSE", "PYTHONPATH": SRC + os.pathsep + env.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, *how], capture_output=True, text=True, timeout=120,
                          env=env | ({"OMP_WAIT_POLICY": user} if user else {}))
    assert done.returncode == 0 and done.stdout.startswith("gaussdiff "), done.stderr
    assert shown in done.stderr, done.stderr
