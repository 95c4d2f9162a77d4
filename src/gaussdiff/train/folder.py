"""The run folder: creation, the lock that keeps a second trainer out, checkpoints and the metrics file.

RUN/config.json (resolved config), RUN/metrics.jsonl, RUN/checkpoints/step_XXXXXXXX.pt (plain state dicts,
loadable with ``torch.load(weights_only=True)``), RUN/model/ (the exported model), RUN/train.lock while a
trainer runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import warnings
from pathlib import Path

import torch

from ..atomic import write_atomically, write_text_atomically
from ..errors import InputError

LOCK = "train.lock"
REQUIRED = {"step", "elapsed_s", "model", "ema", "optimizer", "scaler"}  # what every checkpoint holds


def prepare_run(out: str, overwrite: bool) -> Path:
    """A fresh run folder; an existing non-empty one is refused unless ``overwrite``."""
    run = Path(out)
    if not run.parent.is_dir():
        raise InputError(f"cannot create run folder {run}: {run.parent} does not exist")
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        if not overwrite:
            raise InputError(f"{run} already exists and is not empty (pass --overwrite to replace it, "
                             f"or --resume {run} to continue it)")
        check_unlocked(run)
        shutil.rmtree(run) if run.is_dir() else run.unlink()
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    return run


def check_run_folder(run: Path) -> Path:
    """A folder that ``--resume`` can continue: it has the trainer's config.json and checkpoints/."""
    if not run.is_dir():
        raise InputError(f"cannot resume {run}: it does not exist or is not a folder")
    if not (run / "config.json").is_file() or not (run / "checkpoints").is_dir():
        raise InputError(f"cannot resume {run}: it is not a training run folder (no config.json and checkpoints/)")
    return run


# --- the lock ------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(run: Path) -> dict | None:
    """Who holds the lock, or None when it is free or stale (its process is gone from this host)."""
    try:
        holder = json.loads((run / LOCK).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}  # unreadable: assume held, the user decides
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) and not _alive(holder["pid"]):
        return None
    return holder


def check_unlocked(run: Path) -> None:
    holder = _holder(run)
    if holder is not None:
        raise InputError(f"{run} is in use by another trainer (pid {holder.get('pid')} on {holder.get('host')}); "
                         f"if none runs, delete {run / LOCK}")


class RunLock:
    """RUN/train.lock holding {pid, host}; a lock whose process is gone from this host is stale and taken over."""

    def __init__(self, run: Path):
        self.path = run / LOCK

    def __enter__(self) -> "RunLock":
        check_unlocked(self.path.parent)
        if self.path.exists():
            self._take_over_stale()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another trainer got there between the check and now
            check_unlocked(self.path.parent)
            raise InputError(f"{self.path} was taken by another trainer just now; try again") from None
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        return self

    def _take_over_stale(self) -> None:
        """Move the stale lock aside by rename (atomic: of two trainers, one wins); if what was moved is not the
        stale lock that was judged (another trainer replaced it meanwhile), put it back and refuse."""
        stale, aside = self.path.read_bytes(), self.path.with_name(f".{LOCK}.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_bytes() != stale:
            os.rename(aside, self.path)
            raise InputError(f"{self.path} changed hands while this trainer took it over; try again")
        aside.unlink()
        warnings.warn(f"removed the stale lock {self.path} (its process is gone)", stacklevel=3)

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


# --- checkpoints ---------------------------------------------------------------------------------

def save_checkpoint(run: Path, step: int, state: dict, keep: int) -> Path:
    """checkpoints/step_XXXXXXXX.pt with plain state dicts, atomically; only the last ``keep`` are kept."""
    folder = run / "checkpoints"
    path = folder / f"step_{step:08d}.pt"
    write_atomically(path, lambda f: torch.save(state, f))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


def load_latest_checkpoint(run: Path, device="cpu") -> tuple[Path, dict]:
    """The newest readable checkpoint; an unreadable newer one is skipped with a warning."""
    files = sorted((run / "checkpoints").glob("step_*.pt"), reverse=True)
    if not files:
        raise InputError(f"cannot resume {run}: no checkpoint in {run / 'checkpoints'}")
    for path in files:
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            if not isinstance(state, dict) or not REQUIRED <= set(state):
                raise ValueError("not a gaussdiff training checkpoint")
            return path, state
        except Exception as e:  # truncated zip, bad pickle opcode, wrong content: all mean "unreadable"
            warnings.warn(f"skipping unreadable checkpoint {path}: {' '.join(str(e).split())[:200]}", stacklevel=2)
    raise InputError(f"cannot resume {run}: none of its {len(files)} checkpoints is readable")


def last_checkpoint(run: Path) -> Path | None:
    files = sorted((run / "checkpoints").glob("step_*.pt"))
    return files[-1] if files else None


# --- the metrics file ----------------------------------------------------------------------------

def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines logged after ``step`` (a killed run's steps that the resume computes again)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        write_text_atomically(path, "".join(line + "\n" for line in kept))


def _logged_step(line: str) -> float:
    """The step of a metrics line; a line cut short by a kill counts as after every step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")
