"""What every benchmark row records, so that anyone can rerun it and knows what it compares with: the code (the commit
and whether the working tree differed from it), the software (Python and package versions), the machine, the
command and the settings the script ran with, the torch thread count and the cpu-time / wall-time ratio of the run
up to that row (about the thread count when the cores were the run's own; far below it, other jobs competed).

    from provenance import Provenance
    prov = Provenance(vars(args))              # once, when the run starts
    f.write(json.dumps(prov.stamp(row)))       # every row: the row plus {"provenance": {...}}

A tree is dirty when ``git status --porcelain`` lists a path outside benchmarks/results/, untracked files included
(an untracked module is code that ran); the result files are what the runs themselves write, so they never count.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = "benchmarks/results"  # what benchmark runs write: never makes the tree dirty
PACKAGES = ("torch", "numpy", "diffusers", "ema-pytorch")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
MAX_LISTED = 20  # dirty paths listed in a row (their count is always given)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def git_state(repo: Path = REPO) -> dict:
    """The full commit of HEAD, whether the tree is dirty (a path other than benchmarks/results/ modified, staged,
    deleted or untracked), how many such paths and the first MAX_LISTED of them; commit and dirty are None outside a
    git checkout."""
    try:
        commit = _git(repo, "rev-parse", "HEAD").strip()
        status = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", ".", f":(exclude){OUTPUTS}")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "dirty_count": 0, "dirty_paths": []}
    paths = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(paths), "dirty_count": len(paths), "dirty_paths": paths[:MAX_LISTED]}


def versions(packages=PACKAGES) -> dict:
    """Python's version and each installed package's; a loaded torch's as it reports itself, with its build tag
    (2.13.0+cpu; 2.14.1+cu130 is a CUDA build, whose package metadata says 2.14.1)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    if "torch" in sys.modules:
        found["torch"] = sys.modules["torch"].__version__
    return found


def machine() -> dict:
    """The architecture, the CPU model (Linux) and the number of logical CPUs."""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)
    return {"arch": platform.machine(), "cpu": model, "cpus": os.cpu_count()}


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (torchrun workers, gaussdiff subprocesses)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def torch_threads() -> int | None:
    """torch's intra-op thread count, if torch is loaded."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


class Provenance:
    """The record of one run (git state, versions, machine, command, settings), taken when it starts; :meth:`stamp`
    adds it to a row with the thread count and the run's cpu/wall ratio at that moment."""

    def __init__(self, settings: dict, packages=PACKAGES):
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        self.record = {
            **git_state(),
            "command": shlex.join(["python", *sys.argv]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": versions(packages),
            "machine": machine(),
            "load_average_start": [round(v, 2) for v in os.getloadavg()],
            "settings": json.loads(json.dumps(settings, default=str)),  # Paths and the like as text
        }

    def stamp(self, row: dict) -> dict:
        """``row`` with {"provenance": the run's record, the torch threads, the thread variables set and the cpu/wall
        ratio of the run so far}."""
        wall = time.perf_counter() - self.wall
        now = {"threads": torch_threads(), "env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
               "run_seconds": round(wall, 3), "run_cpu_wall": round((_cpu_seconds() - self.cpu) / wall, 3)}
        return {**row, "provenance": {**self.record, **now}}


def commit_line(rows: list[dict]) -> str:
    """'Commit: <sha>' for rows of one clean commit; otherwise every commit with its row count and dirty flag, and
    the rows that recorded none (written before provenance was recorded)."""
    counts = Counter()
    for row in rows:
        p = row.get("provenance", {})
        counts[(p.get("commit"), p.get("dirty"))] += 1
    if len(counts) == 1 and (key := next(iter(counts)))[0] and key[1] is False:
        return f"Commit: {key[0]}"
    parts = [f"{sha} ({'dirty' if dirty else 'clean' if dirty is False else 'dirty unknown'}, {n} rows)" if sha
             else f"none recorded ({n} rows)" for (sha, dirty), n in counts.items()]
    return "Commits: " + "; ".join(parts)


def run_settings(run: Path) -> dict:
    """The resolved training config of a gaussdiff run folder (RUN/config.json), less its output path."""
    config = json.loads((Path(run) / "config.json").read_text())
    return {k: v for k, v in config.items() if k not in ("out", "data_description")}
