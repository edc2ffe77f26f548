"""A store written by release 0.1.0 opens with the current Store: migrated, every result row
kept, and the reads status, reports and metrics make return what 0.1.0 returned."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from drcheck.results import ProbeResult, RestorePoint, Status
from drcheck.sqltime import parse_ts
from drcheck.store import Store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-0.1.0.db"
V1_TABLES = ("probe_runs", "restore_points", "findings", "restore_tests", "check_results", "canaries")


def _rows(path: Path, sql: str) -> list[tuple]:
    raw = sqlite3.connect(path)
    try:
        return raw.execute(sql).fetchall()
    finally:
        raw.close()


# What 0.1.0's own queries returned on this file (its CURRENT_POINTS, CURRENT_FINDINGS, ...).
OLD_CURRENT_POINTS = """SELECT rp.id, rp.system, rp.copy, rp.point_id, rp.point_time, rp.point_count FROM restore_points rp
JOIN (SELECT MAX(id) AS id FROM probe_runs WHERE action = 'snapshots' AND status != 'error' GROUP BY probe) run
ON rp.probe_run_id = run.id ORDER BY rp.system, rp.copy"""
OLD_FINDINGS = """SELECT f.id, f.probe, f.severity, f.code, f.system, f.message FROM findings f
JOIN (SELECT MAX(id) AS id FROM probe_runs GROUP BY probe, action) run ON f.probe_run_id = run.id ORDER BY f.id"""
OLD_LATEST_RUNS = "SELECT MAX(id) FROM probe_runs GROUP BY probe, action ORDER BY probe, action"
OLD_LATEST_TESTS = "SELECT MAX(id) FROM restore_tests GROUP BY system, test ORDER BY system, test"
OLD_PASSED = "SELECT MAX(id) FROM restore_tests WHERE status = 'passed' GROUP BY system, test ORDER BY system, test"


@pytest.fixture
def old_store(tmp_path) -> Path:
    path = tmp_path / "drcheck.db"
    shutil.copy(FIXTURE, path)
    return path


def test_fixture_is_a_0_1_0_store():
    names = {r[0] for r in _rows(FIXTURE, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "sandbox_leases" in names and "leases" not in names
    assert [r[0] for r in _rows(FIXTURE, "SELECT name FROM _sqlite_migrations ORDER BY id")] == [
        "m001_initial", "m002_results_are_append_only"]


def test_migration_keeps_every_row_and_reads_identically(old_store):
    before = {t: _rows(old_store, f"SELECT * FROM {t} ORDER BY id") for t in V1_TABLES}
    leases_before = _rows(old_store, "SELECT id, test, path, pid, pid_started, host, created_at, released_at, "
                                     "release_note FROM sandbox_leases ORDER BY id")
    expected = {q: _rows(old_store, q) for q in (OLD_CURRENT_POINTS, OLD_FINDINGS, OLD_LATEST_RUNS,
                                                  OLD_LATEST_TESTS, OLD_PASSED)}
    assert all(len(rows) for rows in before.values())

    with Store(old_store) as store:
        for table, rows in before.items():  # same rows, same values (new columns appended, NULL)
            now = [r[: len(rows[0])] for r in store.db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()]
            assert now == rows, table
        leases = store.query("SELECT * FROM leases ORDER BY id")
        assert [(r["id"], r["owner"], r["resource"], r["pid"], r["pid_started"], r["host"], r["created_at"],
                 r["released_at"], r["release_note"]) for r in leases] == leases_before
        assert {(r["kind"], r["handler"], r["attempts"]) for r in leases} == {("directory", "drcheck.sandbox", 0)}
        assert [r["resource"] for r in store.open_leases()] == [leases_before[1][2]]

        points = store.current_restore_points()
        assert [(r["id"], r["system"], r["copy"], r["point_id"], r["point_time"], r["point_count"])
                for r in points] == expected[OLD_CURRENT_POINTS]
        assert {r["system"] for r in points if r["probe"] == "lab-restic"} == {"sis", "fileserver"}  # payroll gone
        assert {r["system"] for r in points if r["probe"] == "offsite"} == {"sis", "fileserver"}  # kept, ageing
        findings = sorted(store.findings_of_latest_runs(), key=lambda r: r["id"])
        assert [(r["id"], r["probe"], r["severity"], r["code"], r["system"], r["message"])
                for r in findings] == expected[OLD_FINDINGS]
        assert [r["id"] for r in store.latest_probe_runs()] == [r[0] for r in expected[OLD_LATEST_RUNS]]
        assert [r["id"] for r in store.latest_restore_tests()] == [r[0] for r in expected[OLD_LATEST_TESTS]]
        assert sorted(r["id"] for r in store.last_successful_tests()) == sorted(r[0] for r in expected[OLD_PASSED])
        assert store.latest_point_id("payroll", "lab-restic") is not None  # last reported, though gone now
        statuses = {r["status"] for r in store.query("SELECT status FROM check_results")}
        assert statuses == {"passed", "failed", "error", "ok"}
        assert store.planted_canary("tok-1")["system"] == "sis"


def test_a_migrated_store_carries_on_with_events(old_store):
    with Store(old_store) as store:
        (sis,) = [r for r in store.current_restore_points() if r["probe"] == "lab-restic" and r["system"] == "sis"]
        points = store.db.execute("SELECT COUNT(*) FROM restore_points").fetchone()[0]
        when = parse_ts(sis["confirmed_at"]) + timedelta(minutes=15)
        store.record_probe(ProbeResult(
            probe="lab-restic", kind="restic", action="snapshots", status=Status.OK, started_at=when,
            finished_at=when, copy="lab-restic",
            newest=[RestorePoint("sis", "lab-restic", parse_ts(sis["point_time"]), sis["point_id"], count=99)]))
        assert store.db.execute("SELECT COUNT(*) FROM restore_points").fetchone()[0] == points  # unchanged: no row
        (now,) = [r for r in store.current_restore_points() if r["probe"] == "lab-restic"]
        assert now["point_id"] == sis["point_id"] and now["point_count"] == 99
        assert store.db.execute("SELECT COUNT(*) FROM point_removals").fetchone()[0] == 1  # fileserver gone
