"""Compaction: the one audited exception to append-only results.

`compact(store, keep_days)` removes probe history older than `keep_days` that adds no
evidence, and records what it removed in `compactions` (itself append-only). It keeps
everything a report, a plan or an audit needs:

- every restore test, check result and canary (never touched, whatever their age);
- every point change: the first and the last row of each run of identical restore points
  of a (probe, system, copy) (stores written before event-based recording repeat an
  unchanged point on every probe run; only those repeats in between go), every
  `point_removals` and `assets` row;
- every finding change: event rows (appeared/changed/cleared) always; of the per-run
  findings older stores wrote, the first and last of each streak of the same finding over
  consecutive runs of its probe action;
- of probe runs: the first and last run of each streak of the same outcome (status) per
  (probe, action), every run a kept row refers to, and the latest runs (current state).

Every removed row is first recorded in `evidence_removals` (compaction id, table, row id,
the row's digest recomputed from the row being deleted), which is itself sealed in the
evidence chain (drcheck.evidence): `drcheck evidence verify` accepts a recorded removal in
place of the sealed row, and names a row changed before it was removed.
Released leases (operational state, not evidence) released before the cutoff go too.
Only rows whose probe run finished before the cutoff are candidates. The deletion, the
audit row and the append-only triggers' removal and re-creation happen in one
transaction, so no other connection ever sees the triggers missing. Freed pages are
reused by later writes; run `VACUUM` (offline) to shrink the file itself.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Iterator

from drcheck.evidence import digest_sql
from drcheck.migrations import append_only_triggers
from drcheck.results import utcnow
from drcheck.sqltime import ts

_TABLES = ("probe_runs", "restore_points", "findings")


def _middles_of_streaks(rows, key_of, value_of, consecutive=lambda prev, row: True) -> Iterator[tuple]:
    """Yield the rows, from `rows` in (key, id) order, that are neither the first nor the
    last of a streak of equal values within their key: the redundant middle of each."""
    streak: list = []
    for row in rows:
        if streak and (key_of(streak[-1]) != key_of(row) or value_of(streak[-1]) != value_of(row)
                       or not consecutive(streak[-1], row)):
            yield from streak[1:-1]
            streak = []
        streak.append(row)
    yield from streak[1:-1]


def _collect(conn, rows: Iterator[tuple], keep) -> int:
    """Put the ids (row[0]) of `rows` that `keep(row)` does not protect into temp.compact_drop."""
    conn.execute("DELETE FROM temp.compact_drop")
    count, batch = 0, []
    for row in rows:
        if not keep(row):
            batch.append((row[0],))
        if len(batch) >= 50_000:
            conn.executemany("INSERT INTO temp.compact_drop VALUES (?)", batch)
            count, batch = count + len(batch), []
    conn.executemany("INSERT INTO temp.compact_drop VALUES (?)", batch)
    return count + len(batch)


def _remove(conn, table: str, compaction_id: int) -> int:
    """Record in `evidence_removals`, then delete, the rows of `table` named in temp.compact_drop."""
    conn.execute(f"INSERT INTO evidence_removals (compaction_id, tbl, row_id, row_digest) "
                 f"SELECT ?, '{table}', id, {digest_sql(conn, table)} FROM {table} "
                 f"WHERE id IN (SELECT id FROM temp.compact_drop) ORDER BY id", [compaction_id])
    return conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM temp.compact_drop)").rowcount


def compact(store, keep_days: int) -> dict[str, Any]:
    """Remove redundant probe history older than `keep_days` days (see the module doc);
    return `{"cutoff": <UTC ISO text>, "removed": {table: rows}}` for probe_runs,
    restore_points, findings and leases, as also recorded in `compactions`."""
    if keep_days < 0:
        raise ValueError("keep_days must be >= 0")
    started = utcnow()
    cutoff = ts(started - timedelta(days=keep_days))
    conn = store.db.conn
    with store.write_lock():
        compaction_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM compactions").fetchone()[0]
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS compact_old (id INTEGER PRIMARY KEY)")
        conn.execute("DELETE FROM temp.compact_old")
        conn.execute("INSERT INTO temp.compact_old SELECT id FROM probe_runs WHERE finished_at < ? "
                     "AND id NOT IN (SELECT probe_run_id FROM probe_latest)", [cutoff])
        old = {r[0] for r in conn.execute("SELECT id FROM temp.compact_old")}

        conn.execute("CREATE TEMP TABLE IF NOT EXISTS compact_drop (id INTEGER PRIMARY KEY)")
        for table in _TABLES:
            conn.execute(f"DROP TRIGGER {table}_no_delete")
        removed: dict[str, int] = {}

        # restore points: the repeats of an unchanged point between its first and last row
        current_points = {r[0] for r in conn.execute("SELECT restore_point_id FROM current_points")}
        removals: dict[tuple, list[int]] = {}
        for probe, system, copy, run_id in conn.execute(
                "SELECT probe, system, copy, probe_run_id FROM point_removals"):
            removals.setdefault((probe, system, copy), []).append(run_id)

        def point_consecutive(prev, row) -> bool:  # a removal in between makes a reappearance an event
            return not any(prev[6] < run <= row[6] for run in removals.get(row[1:4], ()))

        points = conn.execute("SELECT id, probe, system, copy, point_id, status, probe_run_id FROM restore_points "
                              "ORDER BY probe, system, copy, id")
        _collect(conn, _middles_of_streaks(points, lambda r: r[1:4], lambda r: r[4:6], point_consecutive),
                 lambda r: r[6] not in old or r[0] in current_points)
        removed["restore_points"] = _remove(conn, "restore_points", compaction_id)

        # per-run findings of older stores: the repeats over consecutive runs of an action
        runs = conn.execute("SELECT id, probe, action, status FROM probe_runs ORDER BY probe, action, id").fetchall()
        position = {r[0]: n for n, r in enumerate(runs)}
        current_findings = {r[0] for r in conn.execute("SELECT finding_id FROM current_findings")}
        legacy = conn.execute(
            "SELECT f.id, f.probe, r.action, f.code, f.system, f.severity, f.probe_run_id FROM findings f "
            "JOIN probe_runs r ON r.id = f.probe_run_id WHERE f.event IS NULL "
            "ORDER BY f.probe, r.action, f.code, f.system, f.severity, f.id")
        _collect(conn, _middles_of_streaks(legacy, lambda r: r[1:5], lambda r: r[5],
                                           lambda prev, row: position[row[6]] == position[prev[6]] + 1),
                 lambda r: r[6] not in old or r[0] in current_findings)
        removed["findings"] = _remove(conn, "findings", compaction_id)

        # probe runs: the middle of each outcome streak, unless a kept row refers to it
        _collect(conn, _middles_of_streaks(runs, lambda r: (r[1], r[2]), lambda r: r[3]), lambda r: r[0] not in old)
        conn.execute("""DELETE FROM temp.compact_drop WHERE
               EXISTS (SELECT 1 FROM restore_points x WHERE x.probe_run_id = compact_drop.id)
            OR EXISTS (SELECT 1 FROM findings x WHERE x.probe_run_id = compact_drop.id)
            OR EXISTS (SELECT 1 FROM assets x WHERE x.probe_run_id = compact_drop.id)
            OR EXISTS (SELECT 1 FROM point_removals x WHERE x.probe_run_id = compact_drop.id)
            OR id IN (SELECT probe_run_id FROM current_points)
            OR id IN (SELECT probe_run_id FROM current_findings)
            OR id IN (SELECT probe_run_id FROM current_assets)""")
        removed["probe_runs"] = _remove(conn, "probe_runs", compaction_id)
        for table in _TABLES:
            conn.execute(append_only_triggers(table)[1])
        removed["leases"] = conn.execute("DELETE FROM leases WHERE released_at IS NOT NULL AND released_at < ?",
                                         [cutoff]).rowcount
        conn.execute("DROP TABLE temp.compact_drop")
        conn.execute("DROP TABLE temp.compact_old")
        conn.execute("INSERT INTO compactions (id, started_at, finished_at, keep_days, cutoff, removed, agent) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [compaction_id, ts(started), ts(utcnow()), keep_days, cutoff, json.dumps(removed), store.agent])
    return {"cutoff": cutoff, "removed": removed}
