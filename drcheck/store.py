"""The SQLite store: the evidence (probe runs, restore points, findings, assets, restore
tests and their checks), append-only, plus small current-state tables.

Everything the outside sees (metrics, status, reports) is computed from these rows, so a
restart loses nothing and every number can be traced to a row. The store grows with
*events*, not with probe frequency: a probe run is one row, but a restore point, a
finding or an asset is written to history only when it appears, changes or goes away; an
unchanged one is confirmed in place in its current-state table (`current_points`,
`current_findings`, `current_assets`, with `confirmed_at` and the confirming
`probe_run_id`). `probe_latest` and `test_latest` name the latest run of each probe
action and restore test, so no read scans history (see drcheck.migrations).

Mutable operational state: the current-state tables and `leases` (drcheck.leases).
Results are only ever inserted; `compact()` (drcheck.compaction) is the one audited
exception. Every result row is sealed in the evidence hash chain by trigger, in its own
transaction (drcheck.evidence); the SQL functions the triggers call are defined on every
connection a Store opens. Timestamps are stored as UTC ISO-8601 text and returned as aware datetimes.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

from drcheck import evidence
from drcheck.leases import LeaseConflict, LeaseStore
from drcheck.migrations import RESULT_TABLES, migrations
from drcheck.results import Finding, ProbeResult, RestoreTestResult, Severity, Status, utcnow
from drcheck.sqltime import parse_ts, ts

__all__ = ["Store", "LeaseConflict", "RESULT_TABLES", "ts", "parse_ts", "CURRENT_POINTS", "CURRENT_FINDINGS",
           "LATEST_PROBE_RUNS", "LATEST_TESTS", "LAST_PASSED_TESTS"]

log = logging.getLogger(__name__)


def latest_via(state: str, key: str, table: str, columns: str = "*") -> str:
    """SQL joining current-state table `state` (alias l) to the history rows of `table`
    (alias t) its column `key` names, selecting `columns` of them (qualified as t.)."""
    selected = ", ".join(f"t.{c.strip()}" for c in columns.split(","))
    return f"SELECT {selected} FROM {state} l JOIN {table} t ON t.id = l.{key}"


LATEST_PROBE_RUNS = latest_via("probe_latest", "probe_run_id", "probe_runs")
LATEST_TESTS = latest_via("test_latest", "last_id", "restore_tests")
LAST_PASSED_TESTS = latest_via("test_latest", "passed_id", "restore_tests")
# The points of each probe's latest successful listing (one per system and copy): the
# release-0.1.0 row shape, with the latest listing's run id and point count, and
# `confirmed_at` (when that listing saw it).
CURRENT_POINTS = """SELECT rp.id, cp.probe_run_id, rp.probe, rp.system, rp.copy, rp.point_time, rp.point_id,
rp.size_bytes, rp.status, rp.host, rp.paths, cp.point_count, rp.recorded_at, cp.confirmed_at
FROM current_points cp JOIN restore_points rp ON rp.id = cp.restore_point_id"""
# The findings of the latest run of each probe and action (the release-0.1.0 row shape;
# `id` is the history row of when it appeared or last changed severity).
CURRENT_FINDINGS = """SELECT f.finding_id AS id, f.probe_run_id, f.probe, f.action, f.severity, f.code, f.system,
f.subject, f.message, f.confirmed_at AS recorded_at FROM current_findings f"""
CURRENT_ASSETS = """SELECT a.id, ca.probe_run_id, a.probe, a.action, a.source, a.asset_id, a.kind, a.name, a.protected,
a.system, a.attributes, a.recorded_at AS first_recorded_at, ca.confirmed_at
FROM current_assets ca JOIN assets a ON a.id = ca.asset_row_id"""

_TEST_COLUMNS = [f.name for f in fields(RestoreTestResult) if f.name != "checks"] + ["agent"]
_INSERT_TEST = (f"INSERT INTO restore_tests ({', '.join(_TEST_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_TEST_COLUMNS))})")
_INSERT_POINT = ("INSERT INTO restore_points (probe_run_id, probe, system, copy, point_time, point_id, size_bytes, "
                 "status, host, paths, point_count, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_FINDING = ("INSERT INTO findings (probe_run_id, probe, action, event, severity, code, system, subject, "
                   "message, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_ASSET = ("INSERT INTO assets (probe_run_id, probe, action, event, source, asset_id, kind, name, protected, "
                 "system, attributes, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


class Store(LeaseStore):
    """Access to the drcheck database at `path` (created and migrated on open)."""

    def __init__(self, path: str | os.PathLike, agent: str = "drcheck"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.agent = agent
        self.db = sqlite_utils.Database(self.path)
        evidence.register(self.db.conn)  # the evidence chain's triggers call these
        self.db.conn.execute("PRAGMA busy_timeout = 30000")
        self.db.enable_wal()
        self.db.conn.execute("PRAGMA foreign_keys = ON")
        self.db.conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    @classmethod
    def reading(cls, conn: sqlite3.Connection, path: str | os.PathLike) -> "Store":
        """The store's read methods over an open connection to the database at `path` (the
        metrics scrape's read-only one, so rules and metrics read one snapshot): nothing is
        created, set or migrated; writes are not for this object."""
        store = cls.__new__(cls)
        store.path, store.agent = Path(path), "drcheck"
        store.db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
        evidence.register(conn)
        return store

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
        decisions that other processes must not interleave with. Nested use is a savepoint
        of the outer transaction, so many writes can share one commit (bulk loading)."""
        conn = self.db.conn
        if conn.in_transaction:
            conn.execute("SAVEPOINT drcheck_write")
            try:
                yield
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO drcheck_write")
                    conn.execute("RELEASE drcheck_write")
                raise
            conn.execute("RELEASE drcheck_write")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------

    def record_probe(self, result: ProbeResult) -> int:
        """Record a probe run in one transaction and return its id.

        The run itself is always a new row. Its restore points, findings and assets update
        the current state and reach history only when they changed:
        - a listing (`result.lists_points`: an action its kind declares in `LISTS_POINTS`)
          that could read its source (status not error) replaces the
          probe's current points: a new or different newest point is a `restore_points`
          row, an unchanged one is confirmed in place, a system no longer listed loses its
          point (a `point_removals` row). A failed connection (error) leaves them, ageing.
        - every run replaces the findings of its (probe, action): a finding (code, system)
          that appeared or changed severity is a `findings` row (event appeared/changed),
          one no longer reported a row with event cleared; a new message text of the same
          finding is refreshed in place.
        - a run that could read its source and reports assets, or whose action reported
          assets before, replaces the current assets of its (probe, action) the same way
          (`assets` rows with event appeared/changed/gone).
        """
        now = ts(utcnow())
        confirmed = ts(result.finished_at)
        with self.write_lock():
            conn = self.db.conn
            run_id = conn.execute(
                "INSERT INTO probe_runs (probe, kind, action, copy, status, reason, started_at, finished_at, "
                "duration_seconds, details, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [result.probe, result.kind, result.action, result.copy, result.status.value, result.reason,
                 ts(result.started_at), confirmed, result.duration_seconds,
                 json.dumps(result.details, default=str), self.agent]).lastrowid
            if result.status is Status.SKIPPED:  # it did not run: the latest run and its state stand
                return run_id
            conn.execute("INSERT INTO probe_latest (probe, action, probe_run_id) VALUES (?, ?, ?) "
                         "ON CONFLICT (probe, action) DO UPDATE SET probe_run_id = excluded.probe_run_id",
                         [result.probe, result.action, run_id])
            if result.lists_points and result.status is not Status.ERROR:
                self._update_points(result, run_id, now, confirmed)
            elif result.newest:  # not a listing of current points: history only, as 0.1.0 kept them
                for p in result.newest:
                    conn.execute(_INSERT_POINT, self._point_row(result, p, run_id, now))
            self._update_findings(result, run_id, now, confirmed)
            if result.status is not Status.ERROR:
                self._update_assets(result, run_id, now, confirmed)
        return run_id

    @staticmethod
    def _point_row(result: ProbeResult, p, run_id: int, now: str) -> list:
        return [run_id, result.probe, p.system, p.copy, ts(p.point_time), p.point_id, p.size_bytes, p.status,
                p.host, json.dumps(list(p.paths)), p.count, now]

    def _update_points(self, result: ProbeResult, run_id: int, now: str, confirmed: str) -> None:
        conn = self.db.conn
        current = {
            (system, copy): (rp_id, point_id, status, count)
            for system, copy, rp_id, point_id, status, count in conn.execute(
                "SELECT cp.system, cp.copy, cp.restore_point_id, rp.point_id, rp.status, cp.point_count "
                "FROM current_points cp JOIN restore_points rp ON rp.id = cp.restore_point_id WHERE cp.probe = ?",
                [result.probe])
        }
        for p in result.newest:
            count = p.count
            known = current.pop((p.system, p.copy), None)
            if known is not None and known[1] == p.point_id and known[2] == p.status:
                if known[3] != count:
                    conn.execute("UPDATE current_points SET point_count = ? WHERE probe = ? AND system = ? "
                                 "AND copy = ?", [count, result.probe, p.system, p.copy])
                continue
            rp_id = conn.execute(_INSERT_POINT, self._point_row(result, p, run_id, now)).lastrowid
            conn.execute(
                "INSERT INTO current_points (probe, system, copy, restore_point_id, point_count, confirmed_at, "
                "probe_run_id) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (probe, system, copy) DO UPDATE SET "
                "restore_point_id = excluded.restore_point_id, point_count = excluded.point_count",
                [result.probe, p.system, p.copy, rp_id, count, confirmed, run_id])
        for (system, copy), (rp_id, *_rest) in current.items():  # no longer listed: it has no point now
            conn.execute("INSERT INTO point_removals (probe_run_id, probe, system, copy, restore_point_id, "
                         "recorded_at) VALUES (?, ?, ?, ?, ?, ?)", [run_id, result.probe, system, copy, rp_id, now])
            conn.execute("DELETE FROM current_points WHERE probe = ? AND system = ? AND copy = ?",
                         [result.probe, system, copy])
        conn.execute("UPDATE current_points SET confirmed_at = ?, probe_run_id = ? WHERE probe = ?",
                     [confirmed, run_id, result.probe])

    def _update_findings(self, result: ProbeResult, run_id: int, now: str, confirmed: str) -> None:
        conn = self.db.conn
        current: dict[tuple, list] = {}
        for row in conn.execute("SELECT id, code, system, subject, severity, message FROM current_findings "
                                "WHERE probe = ? AND action = ? ORDER BY id", [result.probe, result.action]):
            current.setdefault(row[1:4], []).append(row)
        if not current and not result.findings:
            return

        def history(event: str, severity: str, f) -> int:
            return conn.execute(_INSERT_FINDING, [run_id, result.probe, result.action, event, severity, f.code,
                                                  f.system, f.subject, f.message, now]).lastrowid

        for f in result.findings:
            same = current.get((f.code, f.system, f.subject))
            known = same.pop(0) if same else None
            if known is None:
                finding_id = history("appeared", f.severity.value, f)
                conn.execute("INSERT INTO current_findings (probe, action, code, system, subject, severity, message, "
                             "finding_id, probe_run_id, confirmed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [result.probe, result.action, f.code, f.system, f.subject, f.severity.value, f.message,
                              finding_id, run_id, confirmed])
            elif known[4] != f.severity.value:
                finding_id = history("changed", f.severity.value, f)
                conn.execute("UPDATE current_findings SET severity = ?, message = ?, finding_id = ? WHERE id = ?",
                             [f.severity.value, f.message, finding_id, known[0]])
            elif known[5] != f.message:
                conn.execute("UPDATE current_findings SET message = ? WHERE id = ?", [f.message, known[0]])
        for rows in current.values():
            for row_id, code, system, subject, severity, message in rows:
                history("cleared", severity, Finding(Severity(severity), code, message, system, subject))
                conn.execute("DELETE FROM current_findings WHERE id = ?", [row_id])
        conn.execute("UPDATE current_findings SET probe_run_id = ?, confirmed_at = ? WHERE probe = ? AND action = ?",
                     [run_id, confirmed, result.probe, result.action])

    def _update_assets(self, result: ProbeResult, run_id: int, now: str, confirmed: str) -> None:
        conn = self.db.conn
        current = {
            row[0]: row for row in conn.execute(
                "SELECT a.asset_id, a.id, a.source, a.kind, a.name, a.protected, a.system, a.attributes "
                "FROM current_assets ca JOIN assets a ON a.id = ca.asset_row_id "
                "WHERE ca.probe = ? AND ca.action = ?", [result.probe, result.action])
        }
        if not current and not result.assets:
            return
        for asset in result.assets:
            values = (asset.source, asset.kind, asset.name, int(asset.protected), asset.system,
                      _json(asset.attributes))
            known = current.pop(asset.asset_id, None)
            if known is not None and tuple(known[2:]) == values:
                continue
            row_id = conn.execute(_INSERT_ASSET, [run_id, result.probe, result.action,
                                                  "changed" if known else "appeared", values[0], asset.asset_id,
                                                  *values[1:], now]).lastrowid
            conn.execute(
                "INSERT INTO current_assets (probe, asset_id, action, asset_row_id, probe_run_id, confirmed_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (probe, asset_id) DO UPDATE SET action = excluded.action, "
                "asset_row_id = excluded.asset_row_id", [result.probe, asset.asset_id, result.action, row_id, run_id,
                                                         confirmed])
        for asset_id, (_, _row, *values) in current.items():
            conn.execute(_INSERT_ASSET, [run_id, result.probe, result.action, "gone", values[0], asset_id,
                                         *values[1:], now])
            conn.execute("DELETE FROM current_assets WHERE probe = ? AND asset_id = ?", [result.probe, asset_id])
        conn.execute("UPDATE current_assets SET probe_run_id = ?, confirmed_at = ? WHERE probe = ? AND action = ?",
                     [run_id, confirmed, result.probe, result.action])

    def record_restore_test(self, result: RestoreTestResult) -> int:
        """Insert a restore test with its check results in one transaction; return its id."""
        row = asdict(result)
        checks = row.pop("checks")
        for key in ("started_at", "finished_at", "point_time"):
            row[key] = ts(getattr(result, key))
        row["status"] = result.status.value
        row["details"] = _json(result.details) if result.details else None
        row["agent"] = self.agent
        with self.write_lock():
            conn = self.db.conn
            test_id = conn.execute(_INSERT_TEST, [row[c] for c in _TEST_COLUMNS]).lastrowid
            conn.executemany(
                "INSERT INTO check_results (restore_test_id, name, status, evidence, duration_seconds, details) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(test_id, c["name"], c["status"].value, c["evidence"], c["duration_seconds"],
                  json.dumps(c["details"], default=str)) for c in checks])
            if result.status is Status.SKIPPED:  # it did not run: evidence of nothing, hides nothing
                return test_id
            conn.execute(
                "INSERT INTO test_latest (system, test, last_id, passed_id, rto_id, rpo_id) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (system, test) DO UPDATE SET last_id = excluded.last_id, "
                "passed_id = COALESCE(excluded.passed_id, passed_id), rto_id = COALESCE(excluded.rto_id, rto_id), "
                "rpo_id = COALESCE(excluded.rpo_id, rpo_id)",
                [result.system, result.test, test_id, test_id if result.status is Status.PASSED else None,
                 test_id if result.rto_seconds is not None else None,
                 test_id if result.rpo_seconds is not None else None])
        return test_id

    def record_canary(self, test: str, system: str, path: str, token: str, written_at: datetime) -> None:
        with self.write_lock():
            self.db.conn.execute("INSERT INTO canaries (test, system, path, token, written_at) VALUES (?, ?, ?, ?, ?)",
                                 [test, system, path, token, ts(written_at)])

    def planted_canary(self, token: str) -> dict[str, Any] | None:
        """Return the record of the canary drcheck planted with this token (system, test,
        path, written_at as an aware datetime), or None if it never planted one."""
        rows = self.query("SELECT system, test, path, written_at FROM canaries WHERE token = ?", [token])
        if not rows:
            return None
        rows[0]["written_at"] = parse_ts(rows[0]["written_at"])
        return rows[0]

    def compact(self, keep_days: int) -> dict[str, Any]:
        """Remove probe history older than `keep_days` days that adds no evidence (repeats
        of an unchanged point or finding, the middle of a streak of same-outcome probe runs)
        and released leases; keep every restore test, check, point change, finding change
        and asset event. Return {"cutoff", "removed": {table: rows}}, also recorded in the
        append-only `compactions` table. See drcheck.compaction for the exact policy."""
        from drcheck.compaction import compact

        return compact(self, keep_days)

    # -- reads ------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return self.db.execute_returning_dicts(sql, list(params))

    def current_restore_points(self) -> list[dict[str, Any]]:
        """The restore points each probe's latest successful listing reported (one per
        system it maps). A system the probe no longer finds has none; a probe that is
        failing to connect keeps its last known points, ageing."""
        return self.query(CURRENT_POINTS + " ORDER BY rp.system, rp.copy")

    def latest_point_id(self, system: str, copy: str) -> str | None:
        """The id of the newest restore point a probe last reported for (system, copy)."""
        row = self.db.execute(
            "SELECT rp.point_id FROM current_points cp JOIN restore_points rp ON rp.id = cp.restore_point_id "
            "WHERE cp.system = ? AND cp.copy = ? ORDER BY cp.confirmed_at DESC LIMIT 1", [system, copy]).fetchone()
        if row is None:  # no probe lists it now: the last one any probe reported
            row = self.db.execute("SELECT point_id FROM restore_points WHERE system = ? AND copy = ? "
                                  "ORDER BY id DESC LIMIT 1", [system, copy]).fetchone()
        return row[0] if row else None

    def current_assets(self) -> list[dict[str, Any]]:
        """The assets each probe's latest readable inventory reported, keyed by (probe,
        asset_id), with `attributes` parsed and `protected` as a bool."""
        rows = self.query(CURRENT_ASSETS + " ORDER BY a.probe, a.asset_id")
        for row in rows:
            row["attributes"] = json.loads(row["attributes"]) if row["attributes"] else {}
            row["protected"] = bool(row["protected"])
        return rows

    def latest_probe_runs(self) -> list[dict[str, Any]]:
        """Latest run per (probe, action)."""
        return self.query(LATEST_PROBE_RUNS + " ORDER BY t.probe, t.action")

    def latest_restore_tests(self) -> list[dict[str, Any]]:
        """Latest run per (system, test)."""
        return self.query(LATEST_TESTS + " ORDER BY t.system, t.test")

    def last_successful_tests(self) -> list[dict[str, Any]]:
        """Latest passed run per (system, test)."""
        return self.query(LAST_PASSED_TESTS)

    def latest_measuring(self, column: str) -> list[dict[str, Any]]:
        """Latest run per (system, test) that measured `column` (`rto_seconds` or
        `rpo_seconds`): a failed run still measures the RPO it achieved."""
        if column not in ("rto_seconds", "rpo_seconds"):
            raise ValueError(f"not a measured column: {column}")
        key = {"rto_seconds": "rto_id", "rpo_seconds": "rpo_id"}[column]
        return self.query(latest_via("test_latest", key, "restore_tests", f"id, system, test, started_at, {column}"))

    def last_proven_vms(self) -> dict[str, dict[str, Any]]:
        """VM instance UUID -> its latest passed `vm` restore test (id, test, started_at):
        when each VM was last proven restorable."""
        rows = self.query(
            "SELECT json_extract(details, '$.vm_uuid') AS vm_uuid, id, test, MAX(started_at) AS started_at "
            "FROM restore_tests WHERE kind = 'vm' AND status = 'passed' "
            "GROUP BY json_extract(details, '$.vm_uuid')")
        return {row.pop("vm_uuid"): row for row in rows if row["vm_uuid"]}

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
