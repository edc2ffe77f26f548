"""The store grows with events, not probe frequency, and no read scans history."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from drcheck import metrics
from drcheck.results import (CheckResult, Finding, InventoryAsset, ProbeResult, RestorePoint, RestoreTestResult,
                             Severity, Status)
from drcheck.store import CURRENT_ASSETS, CURRENT_FINDINGS, CURRENT_POINTS, LAST_PASSED_TESTS, LATEST_PROBE_RUNS, \
    LATEST_TESTS, Store, ts

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def listing(at, points, *, status=Status.OK, findings=(), counts=None, assets=(), action="snapshots", probe="p"):
    return ProbeResult(
        probe=probe, kind="restic", action=action, status=status, started_at=at, finished_at=at, copy="c",
        newest=[RestorePoint(s, "c", when, f"{s}-{when:%H%M}", count=(counts or {}).get(s, 5))
                for s, when in points.items()],
        findings=list(findings), assets=list(assets))


def count(store, table):
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "db") as opened:
        yield opened


def test_unchanged_points_are_confirmed_in_place(store):
    a, b = T0 - timedelta(hours=1), T0 - timedelta(hours=2)
    for n in range(96):  # a day of 15-minute probes, one new point of a at noon
        at = T0 + timedelta(minutes=15 * n)
        newest_a = a if n < 48 else T0 + timedelta(hours=11, minutes=50)
        store.record_probe(listing(at, {"a": newest_a, "b": b}, counts={"a": 5 + (n >= 48), "b": 7}))
    assert count(store, "probe_runs") == 96
    assert count(store, "restore_points") == 3  # a, b, then a's new point
    current = {r["system"]: r for r in store.current_restore_points()}
    last = ts(T0 + timedelta(minutes=15 * 95))
    assert current["a"]["point_time"] == ts(T0 + timedelta(hours=11, minutes=50)) and current["a"]["point_count"] == 6
    assert current["b"]["confirmed_at"] == last and current["b"]["recorded_at"]
    assert {r["probe_run_id"] for r in current.values()} == {store.latest_probe_runs()[0]["id"]}
    assert store.latest_point_id("a", "c") == "a-1150"


def test_error_keeps_points_ageing_and_a_system_no_longer_found_has_none(store):
    store.record_probe(listing(T0, {"a": T0, "b": T0}))
    store.record_probe(listing(T0 + timedelta(minutes=15), {}, status=Status.ERROR))
    assert {r["system"] for r in store.current_restore_points()} == {"a", "b"}
    assert store.current_restore_points()[0]["confirmed_at"] == ts(T0)  # ageing: not re-confirmed
    store.record_probe(listing(T0 + timedelta(minutes=30), {"a": T0}, status=Status.FAILED))
    assert {r["system"] for r in store.current_restore_points()} == {"a"}
    assert store.query("SELECT system FROM point_removals") == [{"system": "b"}]
    assert store.latest_point_id("b", "c") == "b-0000"  # the last one reported
    store.record_probe(listing(T0 + timedelta(minutes=45), {"a": T0, "b": T0}))  # b is back: an event
    assert count(store, "restore_points") == 3


def test_findings_are_history_only_when_they_change(store):
    stale = [Finding(Severity.CRITICAL, "rpo_breach", f"a is {n}h old", "a") for n in range(4)]
    store.record_probe(listing(T0, {"a": T0}, findings=[stale[0]]))
    store.record_probe(listing(T0 + timedelta(minutes=15), {"a": T0}, findings=[stale[1]]))
    (f,) = store.findings_of_latest_runs()
    assert f["message"] == "a is 1h old" and f["probe_run_id"] == store.latest_probe_runs()[0]["id"]
    store.record_probe(listing(T0 + timedelta(minutes=30), {"a": T0},
                               findings=[Finding(Severity.WARNING, "rpo_breach", "a is 2h old", "a")]))
    store.record_probe(listing(T0 + timedelta(minutes=45), {"a": T0}, action="check"))  # another action
    assert [f["severity"] for f in store.findings_of_latest_runs()] == ["warning"]
    store.record_probe(listing(T0 + timedelta(hours=1), {"a": T0}))
    assert store.findings_of_latest_runs() == []
    events = store.query("SELECT event, severity, message FROM findings ORDER BY id")
    assert [(e["event"], e["severity"]) for e in events] == [
        ("appeared", "critical"), ("changed", "warning"), ("cleared", "warning")]


def test_assets_are_current_and_event_based(store):
    vm = InventoryAsset("vc", "4203-aaaa", "sis01", True, "sis", "vm", {"power": "on"})
    other = InventoryAsset("vc", "4203-bbbb", "old01", False, None, "vm", {"power": "off"})
    store.record_probe(listing(T0, {}, action="inventory", assets=[vm, other]))
    store.record_probe(listing(T0 + timedelta(hours=1), {}, action="inventory", assets=[vm, other]))
    store.record_probe(listing(T0 + timedelta(hours=2), {"a": T0}))  # a listing does not touch assets
    renamed = InventoryAsset("vc", "4203-aaaa", "sis01-new", True, "sis", "vm", {"power": "on"})
    store.record_probe(listing(T0 + timedelta(hours=3), {}, action="inventory", status=Status.ERROR))
    assert len(store.current_assets()) == 2
    store.record_probe(listing(T0 + timedelta(hours=4), {}, action="inventory", assets=[renamed]))
    (current,) = store.current_assets()
    assert (current["asset_id"], current["name"], current["kind"], current["attributes"], current["protected"]) == (
        "4203-aaaa", "sis01-new", "vm", {"power": "on"}, True)
    assert [r["event"] for r in store.query("SELECT event FROM assets ORDER BY id")] == [
        "appeared", "appeared", "changed", "gone"]


def test_restore_test_details_are_stored(store):
    store.record_restore_test(RestoreTestResult(
        test="vm", kind="vm_clone", system="sis", status=Status.PASSED, started_at=T0, finished_at=T0,
        details={"clone": "drcheck-sis-1", "guest_ip": "10.0.0.5"},
        checks=[CheckResult("heartbeat", Status.PASSED, "green", 1.0)]))
    import json
    assert json.loads(store.latest_restore_tests()[0]["details"]) == {"clone": "drcheck-sis-1", "guest_ip": "10.0.0.5"}


def test_nested_writes_share_one_transaction_and_roll_back_together(store):
    with pytest.raises(RuntimeError):
        with store.write_lock():
            store.record_probe(listing(T0, {"a": T0}))
            raise RuntimeError("boom")
    assert count(store, "probe_runs") == 0 and store.current_restore_points() == []
    with store.write_lock():
        for n in range(3):
            store.record_probe(listing(T0 + timedelta(minutes=n), {"a": T0}))
    assert count(store, "probe_runs") == 3


HISTORY = {"probe_runs", "restore_points", "findings", "restore_tests", "check_results", "assets", "point_removals",
           "canaries"}


def _plan(store, sql, params=()):
    return [row[3] for row in store.db.execute(f"EXPLAIN QUERY PLAN {sql}", list(params)).fetchall()]


def _scanned_tables(sql: str, plan: list[str]) -> set[str]:
    """Tables fully scanned in `plan` (aliases resolved against `sql`)."""
    aliases = {alias: table for table, alias in re.findall(r"(?:FROM|JOIN)\s+(\w+)\s+(\w+)", sql)}
    scanned = set()
    for line in plan:
        found = re.match(r"SCAN (\w+)", line)
        if found and "USING COVERING INDEX leases_open" not in line and "USING INDEX leases_open" not in line:
            scanned.add(aliases.get(found.group(1), found.group(1)))
    return scanned


READS = {
    "latest_probe_runs": (LATEST_PROBE_RUNS + " ORDER BY t.probe, t.action", ()),
    "latest_restore_tests": (LATEST_TESTS + " ORDER BY t.system, t.test", ()),
    "last_successful_tests": (LAST_PASSED_TESTS, ()),
    "current_restore_points": (CURRENT_POINTS + " ORDER BY rp.system, rp.copy", ()),
    "findings_of_latest_runs": (CURRENT_FINDINGS + " ORDER BY f.severity, f.system", ()),
    "current_assets": (CURRENT_ASSETS, ()),
    "SCRAPE_TESTS": (metrics.SCRAPE_TESTS, ()),
    "SCRAPE_PASSED": (metrics.SCRAPE_PASSED, ()),
    "SCRAPE_RTO": (metrics.SCRAPE_RTO, ()),
    "SCRAPE_RPO": (metrics.SCRAPE_RPO, ()),
    "SCRAPE_PROBE_RUNS": (metrics.SCRAPE_PROBE_RUNS, ()),
    "LEASES_OPEN": (metrics.LEASES_OPEN, ()),
    "LEASES_UNCLEANED": (metrics.LEASES_UNCLEANED, ()),
    "latest_point_id (current)": (
        "SELECT rp.point_id FROM current_points cp JOIN restore_points rp ON rp.id = cp.restore_point_id "
        "WHERE cp.system = ? AND cp.copy = ? ORDER BY cp.confirmed_at DESC LIMIT 1", ("a", "c")),
    "latest_point_id (history)": (
        "SELECT point_id FROM restore_points WHERE system = ? AND copy = ? ORDER BY id DESC LIMIT 1", ("a", "c")),
    "restore_tests_between": (
        "SELECT * FROM restore_tests WHERE started_at >= ? AND started_at < ? ORDER BY started_at", ("a", "b")),
    "checks_for": ("SELECT * FROM check_results WHERE restore_test_id IN (?, ?) ORDER BY id", (1, 2)),
    "scheduler marker": ("SELECT COALESCE(MAX(id), 0) FROM restore_tests", ()),
    "scheduler silent test": ("SELECT COUNT(*) FROM restore_tests WHERE id > ? AND test = ?", (1, "t")),
    "scheduler silent probe": ("SELECT COUNT(*) FROM probe_runs WHERE id > ? AND probe = ? AND action = ?",
                               (1, "p", "snapshots")),
}


@pytest.mark.parametrize("name", READS)
def test_no_read_scans_history(store, name):
    for n in range(30):  # enough rows for the planner to prefer indexes as it would on a big store
        store.record_probe(listing(T0 + timedelta(minutes=n), {"a": T0 + timedelta(minutes=n)}))
        store.record_restore_test(RestoreTestResult(test="t", kind="files", system="a", status=Status.PASSED,
                                                    started_at=T0, finished_at=T0, rto_seconds=1.0))
    sql, params = READS[name]
    plan = _plan(store, sql, params)
    assert not (_scanned_tables(sql, plan) & HISTORY), plan
