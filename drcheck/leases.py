"""Leases: every resource a run creates (a directory, a VM, a scratch database, a mount) is
recorded in the store *before* it exists and released after it is gone, so a crashed run's
leftovers are found and removed later, even of kinds no longer configured.

A lease names its `handler`: the dotted path of a module under `drcheck.` whose
`cleanup(lease: dict, loaded) -> None` removes the resource. Cleanup raises to say it cannot
remove it now (peer down); the lease then stays open, with `attempts` and `last_error`, and
is retried at every start and by each periodic reap. Cleanup must be idempotent: a resource
that is already gone is a success (two reapers may race).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from types import ModuleType
from typing import Any, Callable, Iterable

from drcheck import procfs
from drcheck.results import utcnow
from drcheck.sqltime import ts

log = logging.getLogger(__name__)


class LeaseConflict(RuntimeError):
    """Another live run holds a lease on the same resource."""


def check_handler(handler: str) -> str:
    """Return `handler` when it names a module under `drcheck.`; raise ValueError otherwise
    (the reaper imports it: a lease row must not make it import arbitrary code)."""
    parts = handler.split(".")
    if len(parts) < 2 or parts[0] != "drcheck" or not all(p.isidentifier() for p in parts):
        raise ValueError(f"lease handler {handler!r} is not a module under drcheck.")
    return handler


def handler_module(lease: dict[str, Any]) -> ModuleType:
    """Import the module that cleans up `lease`'s resource; raise ValueError/ImportError."""
    module = importlib.import_module(check_handler(lease["handler"]))
    if not callable(getattr(module, "cleanup", None)):
        raise ImportError(f"{lease['handler']} has no cleanup(lease, loaded)")
    return module


def with_aliases(lease: dict[str, Any]) -> dict[str, Any]:
    """A lease row with the names of release 0.1.0's sandbox leases too (`test`, `path`)."""
    return {**lease, "test": lease["owner"], "path": lease["resource"]}


class LeaseStore:
    """The lease methods of drcheck.store.Store (mixed in; needs `db`, `query`, `write_lock`)."""

    def take_lease(self, kind: str, resource: str | os.PathLike, owner: str, handler: str) -> int:
        """Record that `owner` (a job or test name) of this process is about to create
        `resource` of `kind`; return the lease id. Committed before the resource exists,
        so a crash leaves a lease that names the leftovers. Raise LeaseConflict when a live
        run (of any process on this host, or any run on another host) holds the same
        (kind, resource); a dead run's lease on it is superseded (released) instead, so no
        reaper removes the resource under the new owner."""
        check_handler(handler)
        pid, host, resource = os.getpid(), socket.gethostname(), str(resource)
        with self.write_lock():
            for row in self.query("SELECT * FROM leases WHERE released_at IS NULL AND kind = ? AND resource = ?",
                                  [kind, resource]):
                if row["host"] != host or procfs.alive(row["pid"], row["pid_started"]):
                    raise LeaseConflict(f"{resource} is in use by {row['owner']} (pid {row['pid']} on {row['host']})")
                self.release_lease(row["id"], "superseded by a new run on the same resource")
            return self.db.conn.execute(
                "INSERT INTO leases (kind, resource, handler, owner, pid, pid_started, host, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [kind, resource, handler, owner, pid, procfs.start_time(pid), host, ts(utcnow())]).lastrowid

    def release_lease(self, lease_id: int, note: str = "cleaned up") -> None:
        """Mark lease `lease_id` released (its resource is gone) with `note`."""
        with self.write_lock():
            self.db.conn.execute("UPDATE leases SET released_at = ?, release_note = ? WHERE id = ?",
                                 [ts(utcnow()), note, lease_id])

    def note_cleanup_failure(self, lease_id: int, error: str) -> None:
        """Keep lease `lease_id` open, counting a failed cleanup attempt and its error."""
        with self.write_lock():
            self.db.conn.execute("UPDATE leases SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                                 [error, lease_id])

    def open_leases(self) -> list[dict[str, Any]]:
        """Every lease not yet released (in use, or left behind), oldest first."""
        return self.query("SELECT * FROM leases WHERE released_at IS NULL ORDER BY id")

    def orphaned_leases(self) -> list[dict[str, Any]]:
        """Open leases whose owning process on this host is gone, oldest first."""
        host = socket.gethostname()
        return [r for r in self.open_leases() if r["host"] == host and not procfs.alive(r["pid"], r["pid_started"])]


def reap(store, clean: Callable[[dict[str, Any]], None], kinds: Iterable[str] | None = None,
         orphans: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Clean up the resources of orphaned leases (`orphans`, default store.orphaned_leases(),
    of `kinds`, default all) with `clean(lease)` and release them; return the released leases
    (with `test`/`path` aliases). A cleanup that raises leaves its lease open, counts the
    attempt and stores the error, for the next reap."""
    wanted = set(kinds) if kinds is not None else None
    reaped = []
    for lease in store.orphaned_leases() if orphans is None else orphans:
        if wanted is not None and lease["kind"] not in wanted:
            continue
        try:
            clean(lease)
        except Exception as exc:  # any failure of a handler: keep the lease for a retry
            error = f"{type(exc).__name__}: {exc}"
            store.note_cleanup_failure(lease["id"], error)
            log.error("cannot clean up leftover %s %s of %s (attempt %d): %s", lease["kind"], lease["resource"],
                      lease["owner"], lease["attempts"] + 1, error)
            continue
        note = "reaped: owner process was gone" + (f" (after {lease['attempts']} failed attempts)"
                                                   if lease["attempts"] else "")
        store.release_lease(lease["id"], note)
        log.warning("removed leftover %s %s of %s (owner pid %s gone)", lease["kind"], lease["resource"],
                    lease["owner"], lease["pid"])
        reaped.append(with_aliases(lease))
    return reaped


def clean_with_handler(loaded) -> Callable[[dict[str, Any]], None]:
    """A `clean` for reap(): dispatch each lease to its handler module's cleanup."""
    return lambda lease: handler_module(lease).cleanup(lease, loaded)
