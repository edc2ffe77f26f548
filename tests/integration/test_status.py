"""Per-system status from the store and the current configuration."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from drcheck.status import system_statuses

NOW = datetime(2026, 11, 25, 16, 0, tzinfo=timezone.utc)  # Wed 08:00 in Los Angeles
H = timedelta(hours=1)


def by_system(loaded, store):
    return {s.system: s for s in system_statuses(loaded, store, NOW)}


def healthy_week(record, sis_tested_at=NOW - 6.5 * H):
    record.probe({"sis": NOW - 3 * H, "fileserver": NOW - 3 * H, "payroll": NOW - 3 * H}, at=NOW - H)
    record.probe({}, at=NOW - 2 * H, action="check")
    record.test("sis", "passed", sis_tested_at, rto=H, rpo=4 * H)            # daily at 01:30
    record.test("payroll", "passed", NOW - 6 * H, rto=H, rpo=4 * H)          # daily at 02:00
    record.test("fileserver", "passed", NOW - 3 * 24 * H - 6 * H, rto=H, rpo=4 * H)  # Sunday 02:00


def test_all_good(loaded, store, record):
    healthy_week(record)
    assert {s: st.problems for s, st in by_system(loaded, store).items()} == {"sis": [], "fileserver": [], "payroll": []}


def test_a_snapshot_the_probe_no_longer_finds_is_not_a_restore_point(loaded, store, record):
    healthy_week(record)
    record.probe({"sis": NOW - 3 * H, "fileserver": NOW - 3 * H}, at=NOW)  # payroll's snapshots are gone
    payroll = by_system(loaded, store)["payroll"]
    assert payroll.points == []
    assert "no restore point in lab-restic" in payroll.problems


def test_an_unreachable_repository_keeps_the_last_known_points_and_says_so(loaded, store, record):
    healthy_week(record)
    record.probe({}, at=NOW, status="error", reason="no restic repository at the configured location")
    sis = by_system(loaded, store)["sis"]
    assert [p.copy for p in sis.points] == ["lab-restic"]
    assert "probe lab-restic could not list restore points: no restic repository at the configured location" \
        in sis.problems


def test_a_failed_repository_check_is_every_mapped_systems_problem(loaded, store, record):
    healthy_week(record)
    record.probe({}, at=NOW, action="check", status="failed", reason="repository check failed: damaged")
    for system in ("sis", "fileserver", "payroll"):
        assert any(p.startswith("check of lab-restic failed") for p in by_system(loaded, store)[system].problems)


def test_an_overdue_restore_test_is_a_problem(loaded, store, record):
    healthy_week(record, sis_tested_at=NOW - 30.5 * H)  # today's 01:30 run never happened
    assert by_system(loaded, store)["sis"].problems == ["restore test sis-files is overdue: last ran 1d 6h ago"]


def test_a_renamed_test_no_longer_decides_the_verdict(make_config, tmp_path):
    import tomllib

    import tomli_w

    from drcheck.config_loader import load
    from drcheck.store import Store

    from .conftest import Recorder

    loaded = make_config()
    with Store(loaded.database_path) as store:
        record = Recorder(loaded, store)
        healthy_week(record)
        record.test("fileserver", "failed", NOW - H, reason="old name")
        data = tomllib.loads(loaded.path.read_text())
        data["restore_tests"]["fileserver-weekly"] = data["restore_tests"].pop("fileserver-files")
        loaded.path.write_text(tomli_w.dumps(data))
        renamed = load(loaded.path)
        fileserver = by_system(renamed, store)["fileserver"]
    assert fileserver.problems == ["restore test fileserver-weekly has never run"]
