"""Atomic file writes: whatever happens, a path holds its old content or its complete new one (a file, or a folder
swapped in whole); and the content checksum that lets a reader verify what was written."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch


def write_atomically(path, write) -> None:
    """Call ``write(binary file)`` on a temporary file beside ``path`` (``.NAME.XXXX.tmp``), then rename it onto
    ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); keep the old file's mode, else the usual 0644.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text_atomically(path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode()))


def temporary_folder(beside: Path, tag: str) -> Path:
    """A new empty folder ``.NAME.TAG.XXXX`` next to ``beside`` (same file system, so it can be renamed onto it), with
    the usual mode 0755 rather than mkdtemp's private 0700."""
    folder = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{tag}.", dir=beside.parent))
    folder.chmod(0o755)
    return folder


def replace_folder(new: Path, folder: Path) -> None:
    """Put the complete folder ``new`` at ``folder``: an existing ``folder`` is moved aside, ``new`` renamed in, and
    only then the old one removed. If a rename fails, ``folder`` is put back as it was and the error raised (``new``
    stays where it is, for the caller to remove)."""
    aside = temporary_folder(folder, "old")
    old = aside / folder.name
    existed = os.path.lexists(folder)
    try:
        if existed:
            os.replace(folder, old)
        os.replace(new, folder)
    except BaseException:
        if os.path.lexists(old):
            os.replace(old, folder)
        aside.rmdir()
        raise
    shutil.rmtree(aside)


def content_sha256(value) -> str:
    """The SHA-256 (hex) of nested dicts, lists, tuples, tensors and plain values (None, bool, int, float, str), in a
    canonical order: dict keys sorted, a tensor as its dtype, shape and raw bytes (on the CPU), a list and a tuple
    alike. Equal contents give equal digests wherever the tensors live and however the dicts were ordered."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=lambda k: (type(k).__name__, k)):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"list {len(value)}\n".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__} {value!r}\n".encode())
    else:
        raise TypeError(f"content_sha256 covers tensors and plain values, not {type(value).__name__}")
