"""The Prometheus collector reads the store at scrape time: stable names, timestamps not
ages, latest-per-series semantics, and an errored probe shows as down."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from drcheck.metrics import registry_for, write_textfile
from drcheck.results import Finding, ProbeResult, Severity, Status
from drcheck.rules import evaluate, has_no_restore_point

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def value(loaded, name: str, **labels) -> float | None:
    """The value of one sample (None when it is not exported), judged at NOW."""
    return registry_for(loaded, clock=lambda: NOW).get_sample_value(name, labels)


def series(loaded, name: str) -> dict[tuple, float]:
    """Every sample of family `name`: labels (sorted pairs) -> value."""
    return {tuple(sorted(s.labels.items())): s.value
            for family in registry_for(loaded, clock=lambda: NOW).collect() if family.name == name
            for s in family.samples}


def test_series_come_from_the_latest_rows(loaded, store, record):
    record.probe({"sis": NOW - timedelta(hours=30)}, at=NOW - timedelta(hours=2))
    record.probe({"sis": NOW - timedelta(hours=1)}, at=NOW)  # the newer run wins
    record.test("sis", "passed", NOW - timedelta(days=2), rto=timedelta(minutes=40), rpo=timedelta(hours=5))
    record.test("sis", "failed", NOW - timedelta(hours=3), reason="spot check mismatch")

    registry = registry_for(loaded, clock=lambda: NOW)
    got = registry.get_sample_value
    key = {"system": "sis", "test": "sis-files"}
    assert got("drcheck_restore_point_newest_timestamp_seconds", {"copy": "lab-restic", "system": "sis"}) == \
        (NOW - timedelta(hours=1)).timestamp()
    assert got("drcheck_restore_test_last_passed", key) == 0  # latest run failed
    assert got("drcheck_restore_test_last_run_timestamp_seconds", key) == (NOW - timedelta(hours=3)).timestamp()
    # success series keep pointing at the last passed run, with its measurements
    assert got("drcheck_restore_test_last_success_timestamp_seconds", key) == (NOW - timedelta(days=2)).timestamp()
    assert got("drcheck_restore_test_rto_seconds", key) == 2400
    assert got("drcheck_restore_test_rpo_seconds", key) == 5 * 3600
    assert got("drcheck_restore_test_rto_target_seconds", key) == 4 * 3600
    assert got("drcheck_system_rpo_target_seconds", {"system": "payroll"}) == 86400
    assert got("drcheck_system_tier", {"system": "fileserver"}) == 2


def test_probe_up_and_success(loaded, store):
    for status, when in ((Status.OK, NOW - timedelta(hours=1)), (Status.ERROR, NOW)):
        store.record_probe(ProbeResult(probe="lab-restic", kind="restic", action="snapshots", status=status,
                                       started_at=when, finished_at=when + timedelta(seconds=3),
                                       copy="lab-restic", reason="unreachable" if status is Status.ERROR else ""))
    store.record_probe(ProbeResult(probe="lab-restic", kind="restic", action="check", status=Status.FAILED,
                                   started_at=NOW, finished_at=NOW + timedelta(seconds=9), copy="lab-restic"))
    got = registry_for(loaded, clock=lambda: NOW).get_sample_value
    snap = {"action": "snapshots", "probe": "lab-restic"}
    check = {"action": "check", "probe": "lab-restic"}
    assert got("drcheck_probe_up", snap) == 0
    assert got("drcheck_probe_up", check) == 1 and got("drcheck_probe_success", check) == 0
    assert got("drcheck_probe_duration_seconds", check) == 9
    assert got("drcheck_probe_last_run_timestamp_seconds", snap) == (NOW + timedelta(seconds=3)).timestamp()


def test_unprotected_systems_are_the_rules_verdict_on_the_latest_listing(loaded, store, record):
    """Counted per probe from the R2.backup_age results that found no point at all (the
    rule evaluation drcheck_compliance_rule_passing shows), not from the probe's findings."""
    record.probe({"sis": NOW - timedelta(hours=2)}, at=NOW - timedelta(hours=1))
    assert value(loaded, "drcheck_unprotected_assets", source="lab-restic") == 2  # fileserver, payroll
    record.probe({"sis": NOW - timedelta(hours=2), "payroll": NOW - timedelta(days=9)}, at=NOW)
    # payroll's point is far too old (R2 fails) but it has one: it is not unprotected
    assert value(loaded, "drcheck_unprotected_assets", source="lab-restic") == 1
    assert value(loaded, "drcheck_compliance_rule_passing", rule="R2.backup_age", system="payroll") == 0

    no_point = [r for r in evaluate(loaded, store, NOW) if has_no_restore_point(r)]
    assert [(r.system, r.probe) for r in no_point] == [("fileserver", "lab-restic")]


def test_a_probes_own_no_restore_point_findings_do_not_count(loaded, store, record):
    record.probe({"sis": NOW, "fileserver": NOW, "payroll": NOW}, at=NOW - timedelta(minutes=5))
    store.record_probe(ProbeResult(  # another action saying so judges nothing about restore points
        probe="lab-restic", kind="restic", action="check", status=Status.FAILED, started_at=NOW,
        finished_at=NOW, copy="lab-restic",
        findings=[Finding(Severity.CRITICAL, "no_restore_point", "no snapshot of sis", "sis")]))
    assert value(loaded, "drcheck_unprotected_assets", source="lab-restic") == 0


def test_a_probe_that_never_listed_has_no_unprotected_series(loaded, store):
    assert series(loaded, "drcheck_unprotected_assets") == {}


def test_empty_store_scrapes_and_textfile_is_written(loaded, store, tmp_path):
    assert value(loaded, "drcheck_info", agent="demo-lab", version=__import__("drcheck").__version__) == 1
    assert series(loaded, "drcheck_restore_test_last_passed") == {}
    path = write_textfile(loaded, store, tmp_path / "m" / "drcheck.prom")
    assert "drcheck_sandbox_leases_open 0.0" in path.read_text()


def test_a_measured_breach_is_exported_so_alerts_can_fire(loaded, store, record):
    record.test("payroll", "failed", NOW - timedelta(hours=2), rpo=timedelta(days=3), reason="RPO breach")
    key = {"system": "payroll", "test": "payroll-files"}
    got = registry_for(loaded, clock=lambda: NOW).get_sample_value
    assert got("drcheck_restore_test_rpo_seconds", key) == 3 * 86400
    assert got("drcheck_restore_test_rpo_seconds", key) > got("drcheck_restore_test_rpo_target_seconds", key)
    assert got("drcheck_restore_test_last_success_timestamp_seconds", key) is None


def test_never_tested_and_unprotected_systems_are_visible(loaded, store, record):
    record.probe({"sis": NOW - timedelta(hours=1)}, at=NOW)
    record.test("sis", "passed", NOW - timedelta(hours=3), rto=timedelta(minutes=5), rpo=timedelta(hours=2))
    newest = {dict(k)["system"]: v for k, v in
              series(loaded, "drcheck_system_newest_restore_point_timestamp_seconds").items()}
    tested = {dict(k)["system"]: v for k, v in series(loaded, "drcheck_system_last_test_timestamp_seconds").items()}
    assert newest == {"sis": (NOW - timedelta(hours=1)).timestamp(), "fileserver": 0, "payroll": 0}
    assert tested == {"sis": (NOW - timedelta(hours=3)).timestamp(), "fileserver": 0, "payroll": 0}
    assert value(loaded, "drcheck_restore_points", copy="lab-restic", system="sis") == 30


def test_series_of_tests_and_probes_no_longer_configured_disappear(make_config, tmp_path):
    import tomllib

    import tomli_w

    from drcheck.config_loader import load
    from drcheck.store import Store

    from .conftest import Recorder

    loaded = make_config()
    with Store(loaded.database_path) as store:
        Recorder(loaded, store).test("fileserver", "failed", NOW - timedelta(hours=1), reason="old name")
    data = tomllib.loads(loaded.path.read_text())
    data["restore_tests"]["fileserver-weekly"] = data["restore_tests"].pop("fileserver-files")
    loaded.path.write_text(tomli_w.dumps(data))
    registry = registry_for(load(loaded.path), clock=lambda: NOW)
    assert not any(s.labels.get("test") == "fileserver-files" for family in registry.collect() for s in family.samples)
    assert registry.get_sample_value("drcheck_restore_test_last_passed",
                                     {"system": "fileserver", "test": "fileserver-files"}) is None


def test_an_interval_scheduled_test_is_overdue_one_interval_after_its_last_run(make_config):
    import tomllib

    import tomli_w

    from drcheck.config_loader import load
    from drcheck.store import Store

    from .conftest import Recorder

    loaded = make_config()
    data = tomllib.loads(loaded.path.read_text())
    data["restore_tests"]["payroll-files"]["schedule"] = {"interval": "1d"}
    data["restore_tests"]["sis-files"]["schedule"] = {"interval": "1d"}
    loaded.path.write_text(tomli_w.dumps(data))
    loaded = load(loaded.path)
    with Store(loaded.database_path) as store:
        Recorder(loaded, store).test("payroll", "passed", NOW - timedelta(days=3))
        Recorder(loaded, store).test("sis", "passed", NOW - timedelta(hours=2))
    assert value(loaded, "drcheck_compliance_rule_passing", rule="R8.test_cadence", system="payroll") == 0
    assert value(loaded, "drcheck_compliance_rule_passing", rule="R8.test_cadence", system="sis") == 1
