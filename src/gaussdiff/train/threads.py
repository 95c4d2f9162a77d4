"""How many CPU threads training uses, and what a run's speed says at its end.

``--threads auto`` times a few real steps of the run's own model and batch at 1 thread and at N (the cores this
process may use) and keeps the faster. On cores that other processes also use, a second intra-op thread waits for
a preempted sibling: on a 2-core machine beside one busy process, 2 threads ran 1-3 steps/s where 1 ran 25. A step's
cost does not change over a run, so a run that ends far slower than it started met other processes on its cores;
and a time budget can give a model too few steps. :class:`RunSpeed` words both at the end of every training.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import InputError

MAX_THREADS = 1024  # more is a typo, not a machine; a resume on a smaller machine keeps a count up to this
PROBE_SECONDS = 1.0  # the probe's timed steps take about this long, or PROBE_SHARE of a time budget if less
PROBE_SHARE = 0.02
PROBE_MIN_STEPS = 3  # timed steps at each count, however long they take
# N threads are kept only when this much faster than one: one thread cannot collapse when the machine gets busy later,
# and the two rates of a 1 s probe differ by a few per cent from noise alone.
MARGIN = 1.1
EARLY_SECONDS = 5.0  # "the first seconds" of a run, whose rate the rest is compared with
BUSY_RATIO = 0.5  # the rest of a run slower than half its early rate: other processes took the cores
# The fewest steps a time budget should give the default model of each kind (vectors, images): the first count at
# which its quality came within 1.25x of the best measured (benchmarks/RESULTS.md). Moons: SW2 3.15x its floor at
# 2,000 steps, 2.66x at 4,000, 2.51x at 8,000 (1.25x); the digits UNet: FD 3.80 at 2,500 steps, 2.61 at 6,900, 1.83
# at 9,600 (2.6, 2.3 at 8,000 by interpolation: 1.25x).
MIN_STEPS = {"vectors": 2_000, "images": 8_000}


def check_threads(value) -> None:
    """InputError unless ``value`` is "auto", None (torch's own default: runs recorded before auto) or a count."""
    if value is None or value == "auto":
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"threads must be auto or a number of threads, got {value!r}")
    if value < 1:
        raise InputError(f"threads must be positive, got {value}")
    if value > MAX_THREADS:
        raise InputError(f"threads must be at most {MAX_THREADS}, got {value}")


def available_cores(processes: int = 1) -> int:
    """The cores this process may use (its CPU affinity where the system has one, else all of them), shared evenly
    among the ``processes`` torchrun started on this machine; at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // processes)


def probe_seconds(time_budget: float | None) -> float:
    """How long the probe's timed steps may take: PROBE_SECONDS, or PROBE_SHARE of a time budget if less."""
    return PROBE_SECONDS if time_budget is None else min(PROBE_SECONDS, PROBE_SHARE * time_budget)


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count ``auto`` chose, with the steps/s it measured at each count it tried (none: no probe)."""

    threads: int
    rates: dict[int, float] = field(default_factory=dict)
    why: str = ""

    def line(self) -> str:
        if not self.rates:
            return f"threads: auto chose {self.threads} ({self.why})"
        (one, n) = sorted(self.rates)
        return (f"threads: auto chose {self.threads} of {n} ({self.rates[one]:.1f} steps/s at 1 thread, "
                f"{self.rates[n]:.1f} at {n})")


def pick(rates: dict[int, float], n: int) -> int:
    """n threads if they ran at least MARGIN times the steps/s of one, else 1."""
    return n if rates[n] >= MARGIN * rates[1] else 1


def probe_threads(step: Callable[[], None], n: int, seconds: float, *,
                  together: Callable[[bool], bool] = lambda stop: stop,
                  clock: Callable[[], float] = time.perf_counter) -> ThreadChoice:
    """Time ``step`` (one training step of throwaway copies) at 1 and at ``n`` threads, alternating step by step so
    that a passing load hits both, for about ``seconds`` and at least PROBE_MIN_STEPS steps each, after one untimed
    step at each count (first calls allocate); set torch to the faster count and return it. ``together(stop)`` makes
    every process stop at the same step (under torchrun: whether any process wants to stop)."""
    for count in (1, n):
        torch.set_num_threads(count)
        step()
    spent, done, start = {1: 0.0, n: 0.0}, {1: 0, n: 0}, clock()
    while True:
        for count in (1, n):
            torch.set_num_threads(count)
            began = clock()
            step()
            spent[count] += clock() - began
            done[count] += 1
        if together(min(done.values()) >= PROBE_MIN_STEPS and clock() - start >= seconds):
            break
    rates = {count: done[count] / max(spent[count], 1e-9) for count in (1, n)}
    choice = ThreadChoice(pick(rates, n), rates)
    torch.set_num_threads(choice.threads)
    return choice


class SpeedMeter:
    """Counts a run's steps against the clock: over the whole run, and over its first EARLY_SECONDS counted from the
    end of its first step (which pays one-off costs: allocation, kernel selection)."""

    def __init__(self, step: int, clock: Callable[[], float] = time.perf_counter):
        self.clock, self.start, self.start_step = clock, clock(), step
        self.first: tuple[float, int] | None = None  # (time, step) at the end of the first step
        self.early: float | None = None

    def tick(self, step: int) -> None:
        """Call after each step, with the step count reached."""
        now = self.clock()
        if self.first is None:
            self.first = (now, step)
        elif self.early is None and now - self.first[0] >= EARLY_SECONDS:
            self.early = (step - self.first[1]) / (now - self.first[0])

    def speed(self, step: int, threads: int, step_budget: int | None, time_budget: float | None,
              kind: str, stopped_early: bool = False) -> "RunSpeed":
        """The speed of the run that ended at ``step`` (``kind``: vectors or images, for MIN_STEPS;
        ``stopped_early``: by its held-out loss, before its budgets)."""
        now = self.clock()
        late = None
        if self.first is not None and now > self.first[0]:
            late = (step - self.first[1]) / (now - self.first[0])
        return RunSpeed(step - self.start_step, step, now - self.start, threads, step_budget, time_budget, self.early,
                        late, MIN_STEPS[kind], stopped_early)


@dataclass(frozen=True)
class RunSpeed:
    """What a run did: ``steps`` in ``seconds`` (this session; ``total_steps`` over resumes) on ``threads``, under
    its budgets; the steps/s of its first EARLY_SECONDS (None: it was shorter) and of all but its first step; the
    fewest steps a time budget should give its model; whether early stopping ended it."""

    steps: int
    total_steps: int
    seconds: float
    threads: int
    step_budget: int | None
    time_budget: float | None
    early_rate: float | None
    late_rate: float | None
    min_steps: int
    stopped_early: bool = False

    @property
    def rate(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    @property
    def stopped_by_time(self) -> bool:
        return self.time_budget is not None and not self.stopped_early and \
            (self.step_budget is None or self.total_steps < self.step_budget)

    def line(self) -> str:
        resumed = f" (to step {self.total_steps:,})" if self.total_steps != self.steps else ""
        budgets = [f"{self.step_budget:,} steps"] if self.step_budget else []
        if self.time_budget is not None:
            budgets.append(f"{self.time_budget:g} s")
        return (f"trained {self.steps:,} steps{resumed} in {self.seconds:.1f} s: {self.rate:.1f} steps/s on "
                f"{self.threads} thread{'s' if self.threads != 1 else ''} (budget: {' or '.join(budgets)})")

    def warnings(self) -> list[str]:
        """A warning when the machine got busy (the run far slower than its first seconds), and one when its time
        budget gave the model too few steps (undertrained); a step budget gives the steps asked for."""
        found = []
        if self.early_rate and self.late_rate is not None and self.late_rate < BUSY_RATIO * self.early_rate:
            advice = "try --threads 1 or a quieter machine" if self.threads > 1 else "a quieter machine trains faster"
            found.append(f"training slowed down {self.early_rate / max(self.late_rate, 1e-9):.1f}x: "
                         f"{self.late_rate:.1f} steps/s over the run against {self.early_rate:.1f} in its first "
                         f"{EARLY_SECONDS:g} s, so other processes took its cores; {advice}")
        if self.stopped_by_time and self.total_steps < self.min_steps:
            found.append(f"undertrained: the time budget gave {self.total_steps:,} steps, fewer than the "
                         f"{self.min_steps:,} such a model needs to come near its best (benchmarks/RESULTS.md); give a "
                         f"longer --time-budget or use a quieter machine")
        return found
