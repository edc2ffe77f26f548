"""Atomic, durable file writes: readers (and backup programs) never see a half-written file,
and a file that was reported written survives a power cut (evidence must)."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Callable

MAX_NAME_ATTEMPTS = 1000


def write_atomically(path: Path, text: str, mtime: datetime | None = None, mode: int = 0o644) -> Path:
    """Write `text` to `path` through a temporary file in the same directory and a rename;
    set the mode (and mtime, when given). The file and then its directory are fsynced, so
    the new content is on disk once this returns. Nothing is left behind if the write fails."""
    return _write(lambda _n: path, text, mtime, mode, replace=True)


def write_new(name: Callable[[int], Path], text: str, mode: int = 0o644) -> Path:
    """Write `text` to a file that did not exist before, atomically and durably, and return
    its path. `name(n)` gives the n-th candidate (n = 0, 1, 2…); a candidate that exists is
    never overwritten (the final name is claimed with link(2), which fails if it exists),
    so two writers in the same second get two files. Raise FileExistsError if every
    candidate is taken."""
    return _write(name, text, None, mode, replace=False)


def _write(name: Callable[[int], Path], text: str, mtime: datetime | None, mode: int, replace: bool) -> Path:
    first = Path(name(0))
    first.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{first.name}.", dir=first.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if mtime is not None:
            os.utime(tmp, (mtime.timestamp(), mtime.timestamp()))
        if replace:
            final = first
            os.replace(tmp, final)
        else:
            final = _claim(name, tmp)
            os.unlink(tmp)
        fsync_directory(final.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return final


def _claim(name: Callable[[int], Path], tmp: str) -> Path:
    for n in range(MAX_NAME_ATTEMPTS):
        candidate = Path(name(n))
        try:
            os.link(tmp, candidate)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{name(0)}: {MAX_NAME_ATTEMPTS} files of that name exist already")


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
