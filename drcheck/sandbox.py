"""Sandboxes: the only places a restore may write.

A sandbox is a fresh directory under `agent.sandbox_root`. Its lease (kind `directory`,
handler this module) is committed to the store *before* the directory exists, and released
after it is removed, so leftovers of a run that crashed (or was SIGKILLed) are found and
removed by the reaper (drcheck.leases, via `cleanup`).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator

from drcheck import interrupts, leases
from drcheck.mapping import resolved_within
from drcheck.results import utcnow
from drcheck.store import LeaseConflict, Store

log = logging.getLogger(__name__)

LEASE_KIND = "directory"


class SandboxRefused(RuntimeError):
    """A write or read would leave the sandbox; nothing was done."""


def is_inside(path: Path, root: Path) -> bool:
    """True when `path`, with symlinks resolved, is `root` or below it."""
    return resolved_within(path, root)


def contained(sandbox: Path, snapshot_path: str | os.PathLike) -> Path:
    """Return where a snapshot's absolute path lives inside the sandbox. Raise
    SandboxRefused when the path, or a symlink on the way, leads outside."""
    parts = PurePosixPath(snapshot_path).parts
    if ".." in parts:
        raise SandboxRefused(f"path {str(snapshot_path)!r} would escape the sandbox")
    candidate = sandbox.joinpath(*[p for p in parts if p != "/"])
    if not is_inside(candidate, sandbox):
        raise SandboxRefused(f"{snapshot_path} resolves outside the sandbox (symlink to {candidate.resolve()})")
    return candidate


def check_entry(path: str) -> None:
    """Refuse a snapshot entry name that could be written outside the restore target."""
    parts = PurePosixPath(path).parts
    if ".." in parts or "\x00" in path or not path.startswith("/"):
        raise SandboxRefused(f"archive entry {path!r} would escape the sandbox; restore refused")


@contextmanager
def sandbox(store: Store, root: Path, test: str, target_dir: Path | None = None) -> Iterator[Path]:
    """Create a sandbox for `test` under `root`, yield it, and always remove it.

    Raise SandboxRefused, before anything is created, when `target_dir` is outside `root`
    (symlinks resolved), already holds data, or is in use by another live run.
    """
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    path = target_dir or root / f"{test}-{stamp}-{secrets.token_hex(3)}"
    if not is_inside(path, root) or Path(path).resolve() == root.resolve():
        raise SandboxRefused(f"restore target {path} is outside the sandbox root {root}; refused")
    lease = None
    try:
        # taking the lease, creating the directory and entering this `try` are one step as far
        # as a SIGTERM is concerned: never a lease or a directory this `finally` does not see
        with interrupts.shielded():
            try:
                lease = store.take_lease(LEASE_KIND, path, test, __name__)
            except LeaseConflict as exc:
                raise SandboxRefused(f"restore target {exc}; refused") from None
            if path.exists() and (path.is_symlink() or any(path.iterdir())):
                store.release_lease(lease, "refused: target not empty")
                lease = None
                raise SandboxRefused(f"restore target {path} is not empty; refusing to restore over data")
            path.mkdir(mode=0o700, exist_ok=target_dir is not None)
        yield path
    finally:
        if lease is not None:
            with interrupts.shielded():  # a SIGTERM now waits for the sandbox to be gone
                remove_tree(path, root)
                store.release_lease(lease)


def remove_tree(path: Path, root: Path) -> None:
    """Remove a sandbox tree (read-only restored directories included), only inside root.

    Removal is the largest fixed cost of a test restore after restic itself, and unlinking
    in separate directories runs in parallel on every filesystem we measured, so the first
    level with several entries is removed by a small thread pool. Symlinks are removed,
    never followed.
    """
    if not os.path.lexists(path):
        return
    if not is_inside(path.parent, root):
        raise SandboxRefused(f"refusing to remove {path}: not inside {root}")
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    top = path
    while True:
        entries = list(os.scandir(top))
        if len(entries) == 1 and entries[0].is_dir(follow_symlinks=False):
            top = Path(entries[0].path)
            continue
        break
    with ThreadPoolExecutor(max_workers=4) as pool:
        for done in [pool.submit(_remove_entry, e) for e in entries]:
            done.result()
    _rmtree(path)


def _remove_entry(entry: os.DirEntry) -> None:
    if entry.is_dir(follow_symlinks=False):
        _rmtree(Path(entry.path))
    else:
        try:
            os.unlink(entry.path)
        except PermissionError as exc:
            _make_writable(os.unlink, entry.path, exc)


def _make_writable(func, failed, _exc) -> None:
    """rmtree error hook: restored directories may be read-only; open them up and retry."""
    os.chmod(os.path.dirname(failed), stat.S_IRWXU)
    if os.path.isdir(failed) and not os.path.islink(failed):
        os.chmod(failed, stat.S_IRWXU)
    func(failed)


def _rmtree(path: Path) -> None:
    # Python 3.12 renamed the hook; both receive (function, path, error).
    hook = "onexc" if sys.version_info >= (3, 12) else "onerror"
    shutil.rmtree(path, **{hook: _make_writable})


def cleanup(lease: dict, loaded) -> None:
    """Lease handler: remove a leftover sandbox directory, only inside the configured
    `agent.sandbox_root` (raise SandboxRefused for anything else, OSError when it cannot)."""
    _remove_leased(lease, Path(loaded.config.agent.sandbox_root))


def _remove_leased(lease: dict, root: Path) -> None:
    path = Path(lease["resource"])
    if not is_inside(path, root) or path.resolve() == Path(root).resolve():
        raise SandboxRefused(f"leased directory {path} is not inside the sandbox root {root}; not removed")
    remove_tree(path, root)


def reap(store: Store, root: Path) -> list[dict]:
    """Remove the sandboxes (directory leases) of dead runs under `root`; return those
    leases. The agent reaps every kind with drcheck.engine.reap_orphans instead."""
    return leases.reap(store, lambda lease: _remove_leased(lease, root), kinds=[LEASE_KIND])
