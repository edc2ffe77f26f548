"""The store on a real SQLite file: append-only results, migrations, WAL, concurrency."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import datetime, timezone

import pytest

from drcheck.results import CheckResult, Finding, InventoryAsset, ProbeResult, RestorePoint, RestoreTestResult, Severity, Status
from drcheck.store import RESULT_TABLES, Store

WHEN = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def a_test_result() -> RestoreTestResult:
    return RestoreTestResult(test="t", kind="files", system="sis", status=Status.PASSED, started_at=WHEN,
                             finished_at=WHEN, rto_seconds=10.0, rpo_seconds=60.0,
                             checks=[CheckResult("canary", Status.PASSED, "fresh", 0.1)])


@pytest.mark.parametrize("table", RESULT_TABLES)
def test_results_cannot_be_changed_or_removed(tmp_path, table):
    with Store(tmp_path / "db") as store:
        store.record_restore_test(a_test_result())
        store.record_probe(ProbeResult(
            probe="p", kind="restic", action="snapshots", status=Status.OK, started_at=WHEN, finished_at=WHEN,
            newest=[RestorePoint("sis", "c", WHEN, "abc")], findings=[Finding(Severity.WARNING, "x", "y")]))
        store.record_canary("t", "sis", "/srv/.drcheck-canary", "tok", WHEN)
        store.record_probe(ProbeResult(  # sis is gone; an inventory reports an asset
            probe="p", kind="restic", action="snapshots", status=Status.OK, started_at=WHEN, finished_at=WHEN,
            assets=[InventoryAsset("vc", "4203-uuid", "sis01", True, "sis", "vm", {"power": "on"})]))
        store.compact(keep_days=0)
    raw = sqlite3.connect(tmp_path / "db")
    assert raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] > 0
    for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(statement)


def test_leases_stay_mutable_and_timestamps_are_utc(tmp_path):
    with Store(tmp_path / "db") as store:
        lease = store.take_lease("directory", tmp_path / "sandbox" / "x", "t", "drcheck.sandbox")
        store.release_lease(lease)
        row = store.query("SELECT * FROM leases")[0]
        assert row["released_at"].endswith("+00:00")
        store.record_restore_test(a_test_result())
        assert store.query("SELECT started_at FROM restore_tests")[0]["started_at"] == "2026-11-23T12:00:00.000000+00:00"


def test_naive_timestamps_are_refused(tmp_path):
    result = a_test_result()
    result.started_at = datetime(2026, 11, 23, 12, 0)
    with Store(tmp_path / "db") as store, pytest.raises(ValueError, match="naive"):
        store.record_restore_test(result)


def test_wal_and_migrations_recorded(tmp_path):
    with Store(tmp_path / "db") as store:
        assert store.db.journal_mode == "wal"
        names = [r["name"] for r in store.query("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names == ["m001_initial", "m002_results_are_append_only", "m003_leases_of_any_resource",
                     "m004_details_and_assets", "m005_current_state", "m006_proven_vms",
                     "m007_finding_subjects", "m008_corrective_actions", "m009_evidence_chain",
                     "m010_deliveries"]


def _open_and_record(path: str) -> None:
    with Store(path) as store:
        for _ in range(20):
            store.record_restore_test(a_test_result())


def test_many_processes_create_and_write_one_new_database(tmp_path):
    path = str(tmp_path / "fresh.db")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_open_and_record, args=(path,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with Store(path) as store:
        assert store.query("SELECT COUNT(*) AS n FROM restore_tests")[0]["n"] == 80
