"""The SQLite store: every probe run, restore test and check, append-only.

Everything the outside sees (metrics, status, reports) is computed from these rows, so a
restart loses nothing and every number can be traced to a row. Results are only ever
inserted; the one mutable table is `sandbox_leases`, operational state that records a
sandbox before it is created so a crashed run's leftovers can be reaped.

Timestamps are stored as UTC ISO-8601 text (sortable) and returned as aware datetimes.
"""

from __future__ import annotations

import functools

import json
import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils
from sqlite_utils.migrations import Migrations

from drcheck.results import ProbeResult, RestoreTestResult, utcnow

log = logging.getLogger(__name__)
migrations = Migrations("drcheck")


def ts(value: datetime | None) -> str | None:
    """Return a UTC ISO-8601 string for an aware datetime (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use timezone-aware UTC")
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_ts(value: str | None) -> datetime | None:
    """Return an aware UTC datetime from a stored timestamp."""
    return datetime.fromisoformat(value) if value else None


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["probe_runs"].create(
        {
            "id": int, "probe": str, "kind": str, "action": str, "copy": str,
            "status": str, "reason": str, "started_at": str, "finished_at": str,
            "duration_seconds": float, "details": str, "agent": str,
        },
        pk="id", not_null={"probe", "kind", "action", "status", "started_at", "finished_at"},
    )
    db["probe_runs"].create_index(["probe", "action", "id"])
    db["restore_points"].create(
        {
            "id": int, "probe_run_id": int, "probe": str, "system": str, "copy": str,
            "point_time": str, "point_id": str, "size_bytes": int, "status": str,
            "host": str, "paths": str, "point_count": int, "recorded_at": str,
        },
        pk="id", foreign_keys=[("probe_run_id", "probe_runs", "id")],
        not_null={"system", "copy", "point_time", "point_id"},
    )
    db["restore_points"].create_index(["system", "copy", "id"])
    db["findings"].create(
        {
            "id": int, "probe_run_id": int, "probe": str, "severity": str, "code": str,
            "system": str, "message": str, "recorded_at": str,
        },
        pk="id", foreign_keys=[("probe_run_id", "probe_runs", "id")],
    )
    db["findings"].create_index(["probe_run_id"])
    db["restore_tests"].create(
        {
            "id": int, "test": str, "kind": str, "system": str, "probe": str, "copy": str,
            "status": str, "reason": str, "started_at": str, "finished_at": str,
            "point_id": str, "point_time": str, "restore_seconds": float,
            "verify_seconds": float, "rto_seconds": float, "rpo_seconds": float,
            "rpo_source": str, "rto_target_seconds": float, "rpo_target_seconds": float,
            "files_restored": int, "bytes_restored": int, "sandbox": str, "agent": str,
        },
        pk="id", not_null={"test", "kind", "system", "status", "started_at", "finished_at"},
    )
    db["restore_tests"].create_index(["system", "test", "id"])
    db["restore_tests"].create_index(["started_at"])
    db["check_results"].create(
        {
            "id": int, "restore_test_id": int, "name": str, "status": str,
            "evidence": str, "duration_seconds": float, "details": str,
        },
        pk="id", foreign_keys=[("restore_test_id", "restore_tests", "id")],
    )
    db["check_results"].create_index(["restore_test_id"])
    db["canaries"].create(
        {"id": int, "test": str, "system": str, "path": str, "token": str, "written_at": str},
        pk="id",
    )
    db["canaries"].create_index(["token"], unique=True)
    db["sandbox_leases"].create(
        {
            "id": int, "test": str, "path": str, "pid": int, "pid_started": str,
            "host": str, "created_at": str, "released_at": str, "release_note": str,
        },
        pk="id",
    )
    db["sandbox_leases"].create_index(["released_at"])


def newest_per(table: str, group_by: str, where: str = "", columns: str = "*") -> str:
    """SQL for the newest row (highest id: results are appended) of `table` per group,
    selecting `columns` of it (qualified as t.)."""
    condition = f"WHERE {where} " if where else ""
    selected = ", ".join(f"t.{c.strip()}" for c in columns.split(","))
    return (f"SELECT {selected} FROM {table} t JOIN (SELECT MAX(id) AS id FROM {table} {condition}"
            f"GROUP BY {group_by}) newest ON t.id = newest.id")


LATEST_PROBE_RUNS = newest_per("probe_runs", "probe, action")
LATEST_TESTS = newest_per("restore_tests", "system, test")
LAST_PASSED_TESTS = newest_per("restore_tests", "system, test", "status = 'passed'")
# runs whose findings and points are current: the latest run of each probe and action,
# and for points the latest listing that could read its repository
_LATEST_RUN_IDS = "SELECT MAX(id) AS id FROM probe_runs GROUP BY probe, action"


@functools.cache
def current_points_sql() -> str:
    """SQL for the current restore points: those of each probe's latest listing run (an
    action its kind declares in LISTS_POINTS) that could read its repository. Built on first
    use from the registry (kind modules import the store: not at import time)."""
    from drcheck.kinds import probe_module
    from drcheck.probes import REGISTRY

    def quoted(name: str) -> str:
        return "'" + name.replace("'", "''") + "'"

    listing = " OR ".join(
        f"(kind = {quoted(kind)} AND action IN ({', '.join(map(quoted, sorted(actions)))}))"
        for kind in REGISTRY if (actions := probe_module(kind).LISTS_POINTS))
    return f"""SELECT rp.* FROM restore_points rp
JOIN ({newest_per("probe_runs", "probe", f"({listing or '0'}) AND status != 'error'")}) run
ON rp.probe_run_id = run.id"""
CURRENT_FINDINGS = f"SELECT f.* FROM findings f JOIN ({_LATEST_RUN_IDS}) run ON f.probe_run_id = run.id"

RESULT_TABLES = ("probe_runs", "restore_points", "findings", "restore_tests", "check_results", "canaries")


@migrations()
def m002_results_are_append_only(db: sqlite_utils.Database) -> None:
    # Evidence for auditors: once recorded, a result can be neither changed nor removed.
    for table in RESULT_TABLES:
        for action in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


class Store:
    """Append-only access to the drcheck database at `path` (created and migrated on open)."""

    def __init__(self, path: str | os.PathLike, agent: str = "drcheck"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.agent = agent
        self.db = sqlite_utils.Database(self.path)
        self.db.conn.execute("PRAGMA busy_timeout = 30000")
        self.db.enable_wal()
        self.db.conn.execute("PRAGMA foreign_keys = ON")
        self.db.conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        """Apply pending migrations under the write lock, so agents and CLI runs opening a
        new database at once neither race nor fail on a stale read."""
        if not migrations.pending(self.db):
            return
        with self.write_lock():
            migrations.apply(self.db)  # re-reads what is pending, now under the lock

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """A transaction that holds SQLite's write lock from its start, for read-then-write
        decisions that other processes must not interleave with."""
        self.db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.execute("ROLLBACK")
            raise
        self.db.conn.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------

    def record_probe(self, result: ProbeResult) -> int:
        """Insert a probe run with its restore points and findings in one transaction;
        return the probe run id."""
        now = ts(utcnow())
        with self.write_lock():
            run_id = self.db["probe_runs"].insert(
                {
                    "probe": result.probe, "kind": result.kind, "action": result.action,
                    "copy": result.copy, "status": result.status.value, "reason": result.reason,
                    "started_at": ts(result.started_at), "finished_at": ts(result.finished_at),
                    "duration_seconds": result.duration_seconds,
                    "details": json.dumps(result.details, default=str), "agent": self.agent,
                }
            ).last_pk
            self.db["restore_points"].insert_all(
                {
                    "probe_run_id": run_id, "probe": result.probe, "system": p.system,
                    "copy": p.copy, "point_time": ts(p.point_time), "point_id": p.point_id,
                    "size_bytes": p.size_bytes, "status": p.status, "host": p.host,
                    "paths": json.dumps(list(p.paths)),
                    "point_count": result.point_counts.get(p.system), "recorded_at": now,
                }
                for p in result.newest
            )
            self.db["findings"].insert_all(
                {
                    "probe_run_id": run_id, "probe": result.probe, "severity": f.severity.value,
                    "code": f.code, "system": f.system, "message": f.message, "recorded_at": now,
                }
                for f in result.findings
            )
        return run_id

    def record_restore_test(self, result: RestoreTestResult) -> int:
        """Insert a restore test with its check results in one transaction; return its id."""
        row = asdict(result)
        checks = row.pop("checks")
        for key in ("started_at", "finished_at", "point_time"):
            row[key] = ts(getattr(result, key))
        row["status"] = result.status.value
        row["agent"] = self.agent
        with self.write_lock():
            test_id = self.db["restore_tests"].insert(row).last_pk
            self.db["check_results"].insert_all(
                {
                    "restore_test_id": test_id, "name": c["name"], "status": c["status"].value,
                    "evidence": c["evidence"], "duration_seconds": c["duration_seconds"],
                    "details": json.dumps(c["details"], default=str),
                }
                for c in checks
            )
        return test_id

    def record_canary(self, test: str, system: str, path: str, token: str, written_at: datetime) -> None:
        self.db["canaries"].insert(
            {"test": test, "system": system, "path": path, "token": token, "written_at": ts(written_at)}
        )

    def planted_canary(self, token: str) -> dict[str, Any] | None:
        """Return the record of the canary drcheck planted with this token (system, test,
        path, written_at as an aware datetime), or None if it never planted one."""
        rows = self.query("SELECT system, test, path, written_at FROM canaries WHERE token = ?", [token])
        if not rows:
            return None
        rows[0]["written_at"] = parse_ts(rows[0]["written_at"])
        return rows[0]

    # -- sandbox leases -----------------------------------------------------------------

    def take_lease(self, test: str, path: Path) -> int:
        """Record that `test` is about to create `path`; return the lease id. Committed
        before the sandbox exists, so a crash leaves a lease that names the leftovers.
        Raise LeaseConflict when a live run (of any process on this host) holds `path`."""
        pid, host = os.getpid(), socket.gethostname()
        with self.write_lock():
            for row in self.query("SELECT * FROM sandbox_leases WHERE released_at IS NULL AND path = ?", [str(path)]):
                if row["host"] != host or owner_alive(row["pid"], row["pid_started"]):
                    raise LeaseConflict(f"{path} is in use by {row['test']} (pid {row['pid']} on {row['host']})")
                # A dead run's lease on this very path: ours replaces it, so no reaper
                # deletes the path under us later (leftover data is refused by the caller).
                self.release_lease(row["id"], "superseded by a new run on the same path")
            return self.db["sandbox_leases"].insert(
                {
                    "test": test, "path": str(path), "pid": pid, "pid_started": process_start(pid),
                    "host": host, "created_at": ts(utcnow()),
                }
            ).last_pk

    def release_lease(self, lease_id: int, note: str = "cleaned up") -> None:
        self.db["sandbox_leases"].update(lease_id, {"released_at": ts(utcnow()), "release_note": note})

    def orphaned_leases(self) -> list[dict[str, Any]]:
        """Return open leases whose owning process on this host is gone."""
        host = socket.gethostname()
        rows = self.db.execute_returning_dicts(
            "SELECT * FROM sandbox_leases WHERE released_at IS NULL ORDER BY id"
        )
        return [r for r in rows if r["host"] == host and not owner_alive(r["pid"], r["pid_started"])]

    # -- reads ------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return self.db.execute_returning_dicts(sql, list(params))

    def current_restore_points(self) -> list[dict[str, Any]]:
        """The restore points each probe's latest successful listing reported (one per
        system it maps). A system the probe no longer finds has none; a probe that is
        failing to connect keeps its last known points, ageing."""
        return self.query(current_points_sql() + " ORDER BY rp.system, rp.copy")

    def latest_point_id(self, system: str, copy: str) -> str | None:
        """The id of the newest restore point a probe last reported for (system, copy)."""
        row = self.db.execute(
            "SELECT point_id FROM restore_points WHERE system = ? AND copy = ? ORDER BY id DESC LIMIT 1",
            [system, copy]).fetchone()
        return row[0] if row else None

    def latest_probe_runs(self) -> list[dict[str, Any]]:
        """Latest run per (probe, action)."""
        return self.query(LATEST_PROBE_RUNS + " ORDER BY t.probe, t.action")

    def latest_restore_tests(self) -> list[dict[str, Any]]:
        """Latest run per (system, test)."""
        return self.query(LATEST_TESTS + " ORDER BY t.system, t.test")

    def last_successful_tests(self) -> list[dict[str, Any]]:
        """Latest passed run per (system, test)."""
        return self.query(LAST_PASSED_TESTS)

    def restore_tests_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM restore_tests WHERE started_at >= ? AND started_at < ? ORDER BY started_at",
            [ts(start), ts(end)],
        )

    def checks_for(self, test_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """Return check results grouped by restore test id."""
        grouped: dict[int, list[dict[str, Any]]] = {i: [] for i in test_ids}
        for start in range(0, len(test_ids), 500):
            chunk = test_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.query(
                f"SELECT * FROM check_results WHERE restore_test_id IN ({marks}) ORDER BY id", chunk
            ):
                grouped[row["restore_test_id"]].append(row)
        return grouped

    def findings_of_latest_runs(self) -> list[dict[str, Any]]:
        """Findings of the latest run of each probe and action."""
        return self.query(CURRENT_FINDINGS + " ORDER BY f.severity, f.system")


class LeaseConflict(RuntimeError):
    """Another live run holds a lease on the same sandbox path."""


def _proc_stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """Return an identifier of when process `pid` started (None when unreadable), so a
    recycled pid is not mistaken for a lease's owner."""
    fields = _proc_stat(pid)
    return fields[19].decode() if fields else None


def owner_alive(pid: int, started: str | None) -> bool:
    """True unless process `pid` is provably not the one that started at `started`: gone,
    a zombie (it holds its pid but will never clean up), or a recycled pid. When /proc
    hides other users' processes (hidepid), an existing pid counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] in (b"Z", b"X"):
        return False
    return started is None or fields[19].decode() == started
