"""Compaction removes only probe history that adds no evidence, and says so."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drcheck.results import CheckResult, Finding, ProbeResult, RestorePoint, RestoreTestResult, Severity, Status
from drcheck.store import Store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-0.1.0.db"
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def reads(store):
    """Everything status, reports and metrics read (ids included)."""
    return (store.current_restore_points(), store.findings_of_latest_runs(), store.latest_probe_runs(),
            store.latest_restore_tests(), store.last_successful_tests(), store.current_assets(),
            store.restore_tests_between(T0 - timedelta(days=9999), T0 + timedelta(days=9999)),
            store.query("SELECT * FROM check_results ORDER BY id"), store.query("SELECT * FROM canaries"))


def test_a_year_of_probes_compacts_to_its_events(tmp_path):
    with Store(tmp_path / "db") as store:
        statuses = ["ok"] * 40 + ["error"] * 10 + ["ok"] * 50
        for day, status in enumerate(statuses):
            at = T0 + timedelta(days=day)
            point = T0 + timedelta(days=day // 10 * 10)
            stale = 20 <= day < 30
            store.record_probe(ProbeResult(
                probe="p", kind="restic", action="snapshots", status=Status(status), started_at=at, finished_at=at,
                copy="c", newest=[] if status == "error" else [RestorePoint("a", "c", point, f"pt{day // 10}", count=3)],
                findings=[Finding(Severity.CRITICAL, "rpo_breach", f"{day}", "a")] if stale else []))
            store.record_restore_test(RestoreTestResult(
                test="t", kind="files", system="a", status=Status.PASSED, started_at=at, finished_at=at,
                checks=[CheckResult("paths", Status.PASSED, "ok", 1.0)]))
        before = reads(store)
        points_before = store.query("SELECT * FROM restore_points ORDER BY id")
        findings_before = store.query("SELECT * FROM findings ORDER BY id")

        result = store.compact(keep_days=0)
        assert reads(store) == before
        assert store.query("SELECT * FROM restore_points ORDER BY id") == points_before  # each is a change
        assert store.query("SELECT * FROM findings ORDER BY id") == findings_before
        kept = [r["status"] for r in store.query("SELECT status FROM probe_runs ORDER BY id")]
        # streak edges (ok 0/39, error 40/49, ok 50/99) and the runs a kept row refers to
        referenced = {r["probe_run_id"] for r in points_before + findings_before}
        assert set(kept) == {"ok", "error"} and len(kept) <= 6 + len(referenced)
        assert result["removed"]["probe_runs"] == 100 - len(kept)
        (audit,) = store.query("SELECT * FROM compactions")
        assert audit["keep_days"] == 0 and '"probe_runs": %d' % result["removed"]["probe_runs"] in audit["removed"]
        assert store.compact(keep_days=0)["removed"]["probe_runs"] == 0  # nothing more to take

    raw = sqlite3.connect(tmp_path / "db")
    for table in ("probe_runs", "restore_points", "findings", "compactions"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(f"DELETE FROM {table}")


def test_recent_history_is_kept(tmp_path):
    now = datetime.now(timezone.utc)
    with Store(tmp_path / "db") as store:
        for n in range(10):
            at = now - timedelta(days=5, minutes=-n)
            store.record_probe(ProbeResult(probe="p", kind="restic", action="snapshots", status=Status.OK,
                                           started_at=at, finished_at=at))
        assert store.compact(keep_days=30)["removed"]["probe_runs"] == 0
        assert store.compact(keep_days=1)["removed"]["probe_runs"] == 8


def test_a_0_1_0_store_loses_its_repeats_but_no_evidence(tmp_path):
    path = tmp_path / "drcheck.db"
    shutil.copy(FIXTURE, path)
    with Store(path) as store:
        before = reads(store)
        tests = store.db.execute("SELECT COUNT(*) FROM restore_tests").fetchone()[0]
        distinct = store.query("SELECT DISTINCT probe, system, copy, point_id FROM restore_points")
        result = store.compact(keep_days=0)
        assert result["removed"]["restore_points"] > 0 and result["removed"]["probe_runs"] > 0
        assert reads(store) == before
        assert store.query("SELECT DISTINCT probe, system, copy, point_id FROM restore_points") == distinct
        assert store.db.execute("SELECT COUNT(*) FROM restore_tests").fetchone()[0] == tests
        codes = {(r["code"], r["system"]) for r in store.query("SELECT code, system FROM findings")}
        assert ("stale", "payroll") in codes and ("check_failed", None) in codes


def test_released_leases_go_open_ones_stay(tmp_path):
    with Store(tmp_path / "db") as store:
        done = store.take_lease("directory", tmp_path / "a", "t", "drcheck.sandbox")
        store.release_lease(done)
        store.take_lease("directory", tmp_path / "b", "t", "drcheck.sandbox")
        assert store.compact(keep_days=0)["removed"]["leases"] == 1
        assert [r["resource"] for r in store.query("SELECT resource FROM leases")] == [str(tmp_path / "b")]
