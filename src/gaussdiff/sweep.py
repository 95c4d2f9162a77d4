"""Distance to held-out data versus NFE for every sampler of a trained model: which is the cheapest
sampler that is good enough? (layer 7; ``gaussdiff sweep`` prints and writes what this computes).

For each sampler and target NFE, the steps K are the most whose run makes at most that many denoiser
calls (found by probe runs on one sample: Heun makes 2K - 1 calls); the real run counts its calls, and
that actual NFE is what is reported. An adaptive sampler (the registry's trait: an error tolerance sets its
NFE) runs once, on the full grid, at the NFE it needs. Every run draws rows 0..N-1 of the sample set of one seed
(the same x_T for every run), each sampler with its options as ``gaussdiff sample`` resolves them (ddpm: the model's
own reverse variance), and its N samples, mapped to the data's own units by
``transform.inverse``, are compared with a held-out reference set of N true points by
``metrics.sliced_w2``. The floor is the same distance from fresh true sets of N points to that
reference (mean and sd over FLOOR_DRAWS draws): no sampler can be told apart from the data below it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import plots
from .atomic import write_text_atomically
from .data import BUILTIN, check_seed, load_points
from .data.heldout import heldout_points
from .data.split import heldout_seed
from .errors import InputError, check_int
from .metrics import sliced_w2
from .param import CountingDenoiser
from .samplers import SAMPLERS, generate, get_sampler, timestep_grid
from .sampling import sampler_inputs
from .saved import SavedModel

DEFAULT_NFE = (5, 10, 20, 50, 100)
FLOOR_DRAWS = 10
HELD_OUT_SALT = 0x5EED_0DA7A  # built-in held-out sets are drawn under seeds from (seed, salt), not training's


@dataclass
class SweepRow:
    sampler: str
    target_nfe: int | None  # None: an adaptive sampler, run once on the full grid
    steps: int
    nfe: int  # denoiser calls the run actually made
    sw2: float  # to the held-out reference, in the data's own units
    seconds: float
    cpu_per_wall: float


@dataclass
class SweepResult:
    rows: list[SweepRow]
    floor_mean: float
    floor_sd: float
    n: int
    seed: int
    threads: int
    unreachable: list[str] = field(default_factory=list)  # "sampler NFE": even one step costs more calls
    data: str = ""  # what the true sets are (HeldOut.description and note)

    def cheapest(self, within: float) -> SweepRow | None:
        """The run with the fewest calls (then the fastest) whose SW2 is within ``within`` x the floor."""
        good = [r for r in self.rows if r.sw2 <= within * self.floor_mean]
        return min(good, key=lambda r: (r.nfe, r.seconds), default=None)


# --- inputs --------------------------------------------------------------------------------------

def check_request(schedule, samplers, nfes, spacing: str = "trailing") -> tuple[list[str], list[int]]:
    """Known sampler names (default: all) and target NFEs in [1, T], sorted and without repeats."""
    T = schedule.T
    timestep_grid(schedule, 1, spacing)  # an unknown spacing fails here, before any run
    samplers = list(SAMPLERS) if samplers is None else list(dict.fromkeys(samplers))
    for name in samplers:
        get_sampler(name)  # an unknown name: one line listing the known ones
    if not samplers or not nfes:
        raise InputError("a sweep needs at least one sampler and one NFE")
    return samplers, sorted({check_int("every NFE", k, 1, T) for k in nfes})


@dataclass
class HeldOut:
    """A sweep's true sets, float64 in the data's own units: the reference, FLOOR_DRAWS fresh sets of its size, what
    they are, and why they are smaller than asked (None: they are not)."""

    reference: torch.Tensor
    fresh: list[torch.Tensor]
    description: str
    note: str | None = None


def held_out(data: str, n: int, seed: int, sample_shape: tuple[int, ...]) -> HeldOut:
    """The true sets of --data, n points each (fewer for a small file, see :func:`table_sets`).

    A built-in name: independent draws (``data.load_points``) under seeds from (seed, HELD_OUT_SALT). A .npy / .csv
    file: :func:`table_sets` of all its rows."""
    _check_size(n, seed)
    if data in BUILTIN:
        sets = _fresh_draws(data, n, seed, FLOOR_DRAWS + 1)
        held = HeldOut(sets[0], sets[1:], f"built-in {data!r}: a reference and {FLOOR_DRAWS} floor sets of {n:,} fresh "
                                          f"points each, under seeds from --seed {seed}")
    else:
        held = table_sets(*load_points(data, None, seed), n, seed)
    return _checked_shape(held, sample_shape)


def run_held_out(config: dict, n: int, seed: int, sample_shape: tuple[int, ...], run: str = "the run") -> HeldOut:
    """The true sets from the points the run whose RUN/config.json is ``config`` was not trained on
    (``data.heldout.heldout_points``). A built-in set: the reference is its held-out draw of n points, and the floor
    sets FLOOR_DRAWS more fresh draws; a file: :func:`table_sets` of its held-out rows, split under ``seed``."""
    _check_size(n, seed)
    if config.get("data") in BUILTIN:
        reference, description = heldout_points(config, n, run=run)
        fresh = _fresh_draws(config["data"], n, heldout_seed(config["seed"]), FLOOR_DRAWS)
        held = HeldOut(reference, fresh, f"{description} as the reference; {FLOOR_DRAWS} more fresh draws as the "
                                         "floor sets")
    else:
        held = table_sets(*heldout_points(config, None, run=run), n, seed)
    return _checked_shape(held, sample_shape)


def table_sets(rows: torch.Tensor, what: str, n: int, seed: int) -> HeldOut:
    """A reference of n of the rows drawn under seed, and FLOOR_DRAWS floor sets of n of the others. A table with
    fewer than 3n rows lowers n to a third of them, so the floor sets are drawn from at least twice as many rows and
    differ from draw to draw (from only n others they would all be the same set, with a floor sd of 0)."""
    m = len(rows)
    k = min(n, m // 3)
    if k < 2:
        raise InputError(f"{what}: {m} rows are too few for a sweep, which compares sets of at least 2 points and "
                         "needs 3 times as many rows (a reference set and floor sets drawn from the others)")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(m, generator=g)
    rest = rows[perm[k:]]
    sets = [rows[perm[:k]]] + [rest[torch.randperm(len(rest), generator=g)[:k]] for _ in range(FLOOR_DRAWS)]
    note = None if k == n else (f"n lowered from {n:,} to {k:,}: the data have {m:,} rows, fewer than the 3n = "
                                f"{3 * n:,} a sweep of n = {n:,} takes (a reference set, and floor sets drawn from "
                                f"twice as many other rows); SW2 and its floor are both at n = {k:,}")
    return HeldOut(sets[0], sets[1:], f"{what}; a reference of {k:,} of them drawn under seed {seed}, floor sets of "
                                      f"{k:,} from the other {m - k:,}", note)


def _check_size(n: int, seed: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise InputError(f"a sweep compares sets of at least 2 points, got n = {n!r}")
    check_seed(seed)


def _fresh_draws(name: str, n: int, seed: int, count: int) -> list[torch.Tensor]:
    """``count`` independent draws of n points of built-in set ``name``, under seeds from (seed, HELD_OUT_SALT)."""
    seeds = np.random.SeedSequence([seed, HELD_OUT_SALT]).generate_state(count)
    return [load_points(name, n, int(s))[0] for s in seeds]


def _checked_shape(held: HeldOut, sample_shape: tuple[int, ...]) -> HeldOut:
    if tuple(held.reference.shape[1:]) != tuple(sample_shape):
        raise InputError(f"the held-out data has samples of shape {tuple(held.reference.shape[1:])}, "
                         f"the model {tuple(sample_shape)}")
    return held


# --- the sweep -------------------------------------------------------------------------------------

def steps_for_nfe(probe, target: int) -> int | None:
    """The most steps K <= target with probe(K) <= target calls (calls grow with K), or None."""
    if probe(target) <= target:
        return target
    lo, hi = 0, target  # probe(hi) > target; lo: the largest K known to fit (0: none yet)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if probe(mid) <= target else (lo, mid)
    return lo or None


@torch.no_grad()
def sweep(model: SavedModel, reference, fresh, samplers=None, nfes=DEFAULT_NFE, seed: int = 0, spacing="trailing",
          progress: bool = False) -> SweepResult:
    """SW2 to ``reference`` of len(reference) samples per sampler and NFE, and the floor from ``fresh``."""
    samplers, nfes = check_request(model.schedule, samplers, nfes, spacing)
    n = len(reference)
    floor = [sliced_w2(x, reference) for x in fresh]
    result = SweepResult([], float(np.mean(floor)), float(np.std(floor, ddof=1)), n, seed, torch.get_num_threads())
    bar = tqdm(total=len(samplers) * len(nfes), desc="sweep", unit="run", disable=not progress)
    for name in samplers:
        if SAMPLERS[name].adaptive:  # its tolerance, not the steps, sets its NFE
            bar.update(len(nfes))
            result.rows.append(replace(_run(model, name, model.schedule.T, reference, seed, spacing), target_nfe=None))
            continue
        probe = _prober(model, name, spacing)
        runs = {}  # steps -> row: a budget that allows no more steps than a smaller one repeats its run
        for target in nfes:
            bar.update()
            steps = steps_for_nfe(probe, target)
            if steps is None:
                result.unreachable.append(f"{name} {target}")
                continue
            if steps not in runs:
                runs[steps] = _run(model, name, steps, reference, seed, spacing)
            result.rows.append(replace(runs[steps], target_nfe=target))
    bar.close()
    return result


def _counted_run(model: SavedModel, name: str, n: int, steps: int, spacing: str, seed: int):
    """(samples, denoiser calls) of one run of sampler ``name``: rows 0..n-1 of the sample set ``seed``."""
    denoiser, options = sampler_inputs(model, name)
    counter = CountingDenoiser(denoiser)
    x = generate(counter, (n, *model.transform.sample_shape), model.schedule, sampler=name, steps=steps,
                 spacing=spacing, seed=seed, **options)
    return x, counter.calls


def _prober(model: SavedModel, name: str, spacing: str):
    """probe(K) -> the calls of a K-step run on one sample (memoized)."""
    cache = {}

    def probe(steps: int) -> int:
        if steps not in cache:
            cache[steps] = _counted_run(model, name, 1, steps, spacing, 0)[1]
        return cache[steps]

    return probe


def _run(model: SavedModel, name: str, steps: int, reference, seed: int, spacing: str) -> SweepRow:
    wall, cpu = time.perf_counter(), time.process_time()
    x, calls = _counted_run(model, name, len(reference), steps, spacing, seed)  # one x_T for every run
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    samples = model.transform.inverse(x.double())
    sw2 = sliced_w2(samples, reference) if torch.isfinite(samples).all() else math.nan
    return SweepRow(name, steps, steps, calls, sw2, wall, cpu / max(wall, 1e-9))


# --- output ------------------------------------------------------------------------------------------

def format_table(result: SweepResult, within: float = 2.0) -> str:
    """Samplers x target NFE, SW2 per cell (the actual NFE in brackets where it differs), adaptive samplers
    a line each, the floor, and the cheapest run within ``within`` x the floor (else the closest)."""
    lines = _grid_table([r for r in result.rows if r.target_nfe is not None])
    lines += [f"{r.sampler} (adaptive, sets its own NFE): SW2 {r.sw2:.4f} at {r.nfe} NFE"
              for r in result.rows if r.target_nfe is None]
    lines.append(f"floor (fresh true sets vs the reference): {result.floor_mean:.4f} +- {result.floor_sd:.4f} "
                 f"(sd over {FLOOR_DRAWS} draws); SW2 in the data's units, n = {result.n}, "
                 f"{result.threads} thread(s)")
    if result.unreachable:
        lines.append(f"unreachable (one step costs more calls): {', '.join(result.unreachable)}")
    best = result.cheapest(within)
    finite = [r for r in result.rows if math.isfinite(r.sw2)]
    closest = f"none; closest: {_describe(min(finite, key=lambda r: r.sw2), result)}" if finite else "none"
    lines.append(f"cheapest within {within:g} x floor: " + (_describe(best, result) if best else closest))
    return "\n".join(lines)


def _describe(row: SweepRow, result: SweepResult) -> str:
    return (f"{row.sampler} at {row.nfe} NFE ({row.steps} steps), SW2 {row.sw2:.4f} "
            f"= {row.sw2 / result.floor_mean:.1f} x floor")


def _grid_table(rows: list[SweepRow]) -> list[str]:
    if not rows:
        return []
    nfes = sorted({r.target_nfe for r in rows})
    cells = {(r.sampler, r.target_nfe): f"{r.sw2:.4f}" + (f" ({r.nfe})" if r.nfe != r.target_nfe else "")
             for r in rows}
    header = ["sampler"] + [f"NFE {k}" for k in nfes]
    body = [[name] + [cells.get((name, k), "-") for k in nfes] for name in dict.fromkeys(r.sampler for r in rows)]
    widths = [max(len(row[j]) for row in [header] + body) for j in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + body]


def write_results(result: SweepResult, out: Path) -> list[Path]:
    """sweep.csv, sweep.json and sweep.png in ``out``, each written atomically."""
    rows = [asdict(r) for r in result.rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(SweepRow.__dataclass_fields__), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(out / "sweep.csv", buffer.getvalue())
    write_text_atomically(out / "sweep.json", json.dumps(asdict(result), indent=2) + "\n")
    points = {}  # sampler -> {nfe: sw2}: a run repeated under a larger budget is one point
    for r in result.rows:
        points.setdefault(r.sampler, {})[r.nfe] = r.sw2
    curves = {name: (list(p), list(p.values())) for name, p in points.items()}
    plots.sweep_curves(curves, result.floor_mean, result.floor_sd, out / "sweep.png")
    return [out / "sweep.csv", out / "sweep.json", out / "sweep.png"]
