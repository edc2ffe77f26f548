"""Exclusive locks between processes sharing a state directory (`fcntl.flock`).

One agent per state directory, one run of a given restore test, and one run of a given
probe action at a time, whichever process (the CLI, an agent's job child, a second agent's
orphaned child) starts it; and at most N holders of a counted slot (VM restore tests
against one vCenter). The kernel releases a lock when its holder dies, SIGKILL
included, so a crash never leaves a stale lock behind; the file only says who held it last.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class Busy(RuntimeError):
    """The lock is held by another process; `pid` is the holder (None if unknown)."""

    def __init__(self, what: str, path: Path, pid: int | None):
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(f"{what} is already running ({holder}, lock {path})")
        self.what, self.path, self.pid = what, path, pid


def lock_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "locks"


def agent_lock(state_dir: Path) -> Path:
    return Path(state_dir) / "agent.lock"


def restore_test_lock(state_dir: Path, test: str) -> Path:
    return lock_dir(state_dir) / f"restore-test.{test}.lock"


def probe_lock(state_dir: Path, probe: str, action: str) -> Path:
    return lock_dir(state_dir) / f"probe.{probe}.{action}.lock"


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at `path` for the block; raise Busy at once (no waiting) when another
    process holds it. Names (restore tests, probes, actions) match the config's name
    pattern, so they are safe in file names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(what, path, holder(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race a waiter)


def holder(fd_or_path: int | Path) -> int | None:
    """The pid written by the lock's current (or last) holder."""
    try:
        if isinstance(fd_or_path, int):
            text = os.pread(fd_or_path, 32, 0).decode()
        else:
            text = Path(fd_or_path).read_text()
        return int(text.strip())
    except (OSError, ValueError):
        return None


def slot_lock(state_dir: Path, name: str, index: int) -> Path:
    return lock_dir(state_dir) / f"slot.{name}.{index}.lock"


@contextmanager
def slot(state_dir: Path, name: str, count: int, waiting: Callable[[list[int | None]], None] | None = None,
         poll: float = 0.5) -> Iterator[int]:
    """Hold one of `count` slots named `name` (a counting semaphore across every process
    sharing the state directory) for the block; yield its index. While all are held, call
    `waiting(holder pids)` and retry every `poll` seconds, without limit: the caller's job
    deadline bounds the wait. A dead holder's slot frees itself (the kernel drops its lock)."""
    reported: list[int | None] | None = None
    while True:
        holders = []
        for index in range(count):
            path = slot_lock(state_dir, name, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holders.append(holder(fd))
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                yield index
                return
            finally:
                os.close(fd)
        if waiting is not None and holders != reported:
            waiting(holders)
            reported = holders
        time.sleep(poll)
