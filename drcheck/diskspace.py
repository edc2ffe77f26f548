"""Room in the sandbox: refuse a restore that cannot fit before anything is created, and
name a full disk as the cause when one fills up anyway.

`require_space` is for every restore kind: call it with the restore point's size from the
listing right before taking the sandbox. `explain_full` turns "No space left on device"
(restic's stderr, or an OSError's ENOSPC) into a reason naming the file system and how
much was free against how much was needed.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from drcheck.clients import SourceError

MARGIN_FRACTION = 0.05  # file system metadata and growth while restoring
MARGIN_BYTES = 1 << 20
BLOCK = 4096  # a small file still takes a block


class InsufficientSpace(SourceError):
    """The sandbox's file system cannot hold the restore (drcheck could not test: ERROR)."""


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding `path` (or its nearest existing parent)."""
    path = _existing(path).resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def needed_bytes(size: int, files: int = 0) -> int:
    return int(size * (1 + MARGIN_FRACTION)) + files * BLOCK + MARGIN_BYTES


def require_space(root: Path, size: int | None, files: int = 0, what: str = "the restore point") -> None:
    """Raise InsufficientSpace when the file system of sandbox `root` has less free space
    than `size` bytes (from the listing) of `files` files plus a margin."""
    if size is None:
        return
    need = needed_bytes(size, files)
    free = shutil.disk_usage(_existing(root)).free
    if free < need:
        raise InsufficientSpace(
            f"not enough space to restore {what}: {human(size)} in {files} files (+ margin: {human(need)}) "
            f"needed, {human(free)} free on {mount_point(root)} (sandbox {root}); nothing was restored")


def is_full(error: BaseException | str) -> bool:
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return "no space left on device" in str(error).lower()


def explain_full(root: Path, needed: int | None = None) -> str:
    """The reason for a restore that ran out of space in sandbox `root`."""
    usage = shutil.disk_usage(_existing(root))
    wanted = f", {human(needed)} needed" if needed else ""
    return (f"disk full in the sandbox: {mount_point(root)} has {human(usage.free)} free of "
            f"{human(usage.total)}{wanted} (no space left on device)")
