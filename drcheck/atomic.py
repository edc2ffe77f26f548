"""Atomic file writes: readers (and backup programs) never see a half-written file."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path


def write_atomically(path: Path, text: str, mtime: datetime | None = None, mode: int = 0o644) -> Path:
    """Write `text` to `path` through a temporary file in the same directory and a rename;
    set the mode (and mtime, when given). Nothing is left behind if the write fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        if mtime is not None:
            os.utime(tmp, (mtime.timestamp(), mtime.timestamp()))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
