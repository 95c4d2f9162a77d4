"""The run folder: creation (and replacement with ``--overwrite``), the lock that keeps a second trainer out,
checkpoints, the metrics file, and what a killed write leaves behind.

RUN/config.json (resolved config, with the training data's content hash), RUN/metrics.jsonl,
RUN/checkpoints/step_XXXXXXXX.pt (plain state dicts and their SHA-256, loadable with
``torch.load(weights_only=True)``), RUN/model/ (the exported model), RUN/train.lock while a trainer runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import warnings
from pathlib import Path

import torch

from ..atomic import content_sha256, replace_folder, temporary_folder, write_atomically, write_text_atomically
from ..errors import InputError

LOCK = "train.lock"
REQUIRED = {"step", "elapsed_s", "model", "ema", "optimizer", "scaler"}  # what every checkpoint holds
CHECKSUM = "sha256"  # a checkpoint's content_sha256 of the rest of its state (absent in older checkpoints)
DATA_HASH = "data_sha256"  # RUN/config.json: the content_sha256 of the training data when the run started
ZIP_MAGIC = b"PK\x03\x04"  # how every file torch.save writes begins
RUN_CONFIG_KEYS = ("data", "out", "num_train_timesteps")  # in every config.json the trainer wrote


def prepare_run(out: str, overwrite: bool, data: str | None = None) -> Path:
    """A fresh run folder holding an empty checkpoints/. An existing non-empty ``out`` is refused unless ``overwrite``;
    then it must be a gaussdiff run (see :func:`is_run_folder`) that does not hold the training ``data``, and it is
    replaced only once the new run exists (created beside it, then swapped in), so a failure leaves it as it was."""
    run = Path(out)
    if not run.parent.is_dir():
        what = "is a file, not a folder" if run.parent.exists() else "does not exist"
        raise InputError(f"cannot create run folder {run}: {run.parent} {what}")
    if run.exists() and not run.is_dir():
        raise InputError(f"--out {run} is a file, not a folder: give a new or empty folder for the run")
    try:
        if not run.exists() or not any(run.iterdir()):
            (run / "checkpoints").mkdir(parents=True, exist_ok=True)
            return run
        if not overwrite:
            raise InputError(f"{run} already exists and is not empty (pass --overwrite to replace it, "
                             f"or --resume {run} to continue it)")
        check_replaceable(run, data)
        _swap_in_new_run(run)
    except OSError as e:
        raise InputError(f"cannot create run folder {run}: {e.strerror or e}") from None
    return run


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder the trainer made: checkpoints/ and a config.json holding a training config."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    is_training_config = isinstance(config, dict) and all(key in config for key in RUN_CONFIG_KEYS)
    return is_training_config and (path / "checkpoints").is_dir()


def check_replaceable(run: Path, data: str | None) -> None:
    """What ``--overwrite`` may replace: a gaussdiff run, not holding the training data, that no trainer holds."""
    if not is_run_folder(run):
        raise InputError(f"--overwrite replaces only a gaussdiff run folder, and {run} is not one (no config.json from "
                         f"gaussdiff train and checkpoints/): choose another --out, or empty it yourself")
    if data is not None and Path(data).exists() and Path(data).resolve().is_relative_to(run.resolve()):
        raise InputError(f"--overwrite would delete the training data {data}, which lies inside {run}: "
                         f"move the data out of the run folder, or choose another --out")
    check_unlocked(run)


def _swap_in_new_run(run: Path) -> None:
    """Create the new run (with checkpoints/) as a temporary sibling of ``run``, then swap it in for the old one."""
    new = temporary_folder(run, "new")
    try:
        (new / "checkpoints").mkdir()
        replace_folder(new, run)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise


def check_run_folder(run: Path) -> Path:
    """A folder that ``--resume`` can continue: it has the trainer's config.json and checkpoints/."""
    if not run.is_dir():
        raise InputError(f"cannot resume {run}: it does not exist or is not a folder")
    if not (run / "config.json").is_file() or not (run / "checkpoints").is_dir():
        raise InputError(f"cannot resume {run}: it is not a training run folder (no config.json and checkpoints/)")
    return run


def check_same_data(run: Path, data: str, digest: str) -> None:
    """Refuse to resume ``run`` on training data whose content hash differs from the one it started with
    (RUN/config.json's data_sha256; a run from before that field resumes unchecked)."""
    try:
        saved = json.loads((run / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{run / 'config.json'} is not readable JSON: {' '.join(str(e).split())}") from None
    started = saved.get(DATA_HASH) if isinstance(saved, dict) else None
    if started is not None and started != digest:
        raise InputError(f"cannot resume {run}: the data {data} changed since the run started (its SHA-256 was "
                         f"{str(started)[:12]}... and is now {digest[:12]}...); start a new run instead")


# Temporary files and folders a write killed midway leaves in a run folder: write_atomically's
# .NAME.XXXX.tmp beside the trainer's files, SavedModel.save's .model.XXXX and .model.old.XXXX.
LEFTOVER_FILES = ("checkpoints/.step_*.pt.*.tmp", ".config.json.*.tmp", ".metrics.jsonl.*.tmp",
                  "pictures/.preview_*.png.*.tmp")
LEFTOVER_FOLDERS = (".model.*",)


def remove_leftovers(run: Path) -> None:
    """Remove what a killed write left in ``run`` (only the patterns above; call it while holding the run's lock)."""
    for pattern in LEFTOVER_FILES:
        for path in run.glob(pattern):
            if path.is_file() and not path.is_symlink():
                path.unlink()
    for pattern in LEFTOVER_FOLDERS:
        for path in run.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)


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
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None
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
    """checkpoints/step_XXXXXXXX.pt with plain state dicts and their SHA-256, atomically; only the last ``keep`` are
    kept."""
    folder = run / "checkpoints"
    path = folder / f"step_{step:08d}.pt"
    write_atomically(path, lambda f: torch.save(state | {CHECKSUM: content_sha256(state)}, f))
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


class UnusableCheckpoint(Exception):
    """Why a checkpoint cannot be resumed from (a clause for the warning that skips it)."""


def load_latest_checkpoint(run: Path, device="cpu") -> tuple[Path, dict]:
    """The newest usable checkpoint; a newer unusable one is skipped with a warning saying why."""
    files = sorted((run / "checkpoints").glob("step_*.pt"), reverse=True)
    if not files:
        raise InputError(f"cannot resume {run}: no checkpoint in {run / 'checkpoints'}")
    for path in files:
        try:
            return path, read_checkpoint(path, device)
        except UnusableCheckpoint as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", stacklevel=2)
    raise InputError(f"cannot resume {run}: none of its {len(files)} checkpoints is readable")


def ema_network_state(checkpoint: dict) -> dict:
    """The EMA network's state dict inside a checkpoint that :func:`read_checkpoint` read (ema-pytorch keeps it
    under ``ema_model.``, beside its own counters): the weights the exported model.safetensors holds."""
    prefix = "ema_model."
    return {k.removeprefix(prefix): v for k, v in checkpoint["ema"].items() if k.startswith(prefix)}


def read_checkpoint(path: Path, device="cpu") -> dict:
    """The state :func:`save_checkpoint` wrote to ``path`` (without its checksum), verified against its checksum when
    it has one; UnusableCheckpoint otherwise. Nothing but tensors and plain values is ever unpickled."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle opcode, a forbidden object, an unreadable file
        raise UnusableCheckpoint(_load_failure(path, e)) from None
    if not isinstance(state, dict) or not REQUIRED <= set(state):
        raise UnusableCheckpoint(f"it is not a gaussdiff training checkpoint (it lacks {', '.join(sorted(REQUIRED))})")
    checksum = state.pop(CHECKSUM, None)
    if checksum is not None and checksum != content_sha256(state):
        raise UnusableCheckpoint("its contents do not match its SHA-256 checksum (it was damaged after it was written)")
    return state


def _load_failure(path: Path, error: Exception) -> str:
    """Why torch.load(weights_only=True) failed on ``path``, in our words (torch's own end with advice to unpickle)."""
    if isinstance(error, OSError):
        return f"it cannot be read ({error.strerror or error})"
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if head and head != ZIP_MAGIC:
        return "it is not a gaussdiff checkpoint (not a zip file as torch.save writes)"
    try:  # reads the pickle's opcodes without running them
        forbidden = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        forbidden = []
    if forbidden:
        return (f"it holds objects other than tensors and plain values ({', '.join(forbidden[:3])}), "
                f"which are never unpickled")
    return "it is truncated or corrupt"


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
