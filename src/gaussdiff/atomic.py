"""Atomic file writes: whatever happens, a path holds its old content or its complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path, write) -> None:
    """Call ``write(binary file)`` on a temporary file beside ``path``, then rename it onto ``path``."""
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
