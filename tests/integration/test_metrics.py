"""The Prometheus collector reads the store at scrape time: stable names, timestamps not
ages, latest-per-series semantics, and an errored probe shows as down."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drcheck.metrics import registry_for, write_textfile
from drcheck.results import Finding, ProbeResult, Severity, Status

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def samples(loaded) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry_for(loaded)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_series_come_from_the_latest_rows(loaded, store, record):
    record.probe({"sis": NOW - timedelta(hours=30)}, at=NOW - timedelta(hours=2))
    record.probe({"sis": NOW - timedelta(hours=1)}, at=NOW)  # the newer run wins
    record.test("sis", "passed", NOW - timedelta(days=2), rto=timedelta(minutes=40), rpo=timedelta(hours=5))
    record.test("sis", "failed", NOW - timedelta(hours=3), reason="spot check mismatch")

    got = samples(loaded)

    key = ("system", "sis"), ("test", "sis-files")
    assert got[("drcheck_restore_point_newest_timestamp_seconds", (("copy", "lab-restic"), ("system", "sis")))] == \
        (NOW - timedelta(hours=1)).timestamp()
    assert got[("drcheck_restore_test_last_passed", key)] == 0  # latest run failed
    assert got[("drcheck_restore_test_last_run_timestamp_seconds", key)] == (NOW - timedelta(hours=3)).timestamp()
    # success series keep pointing at the last passed run, with its measurements
    assert got[("drcheck_restore_test_last_success_timestamp_seconds", key)] == (NOW - timedelta(days=2)).timestamp()
    assert got[("drcheck_restore_test_rto_seconds", key)] == 2400
    assert got[("drcheck_restore_test_rpo_seconds", key)] == 5 * 3600
    assert got[("drcheck_restore_test_rto_target_seconds", key)] == 4 * 3600
    assert got[("drcheck_system_rpo_target_seconds", (("system", "payroll"),))] == 86400
    assert got[("drcheck_system_tier", (("system", "fileserver"),))] == 2


def test_probe_up_and_success(loaded, store):
    for status, when in ((Status.OK, NOW - timedelta(hours=1)), (Status.ERROR, NOW)):
        store.record_probe(ProbeResult(probe="lab-restic", kind="restic", action="snapshots", status=status,
                                       started_at=when, finished_at=when + timedelta(seconds=3),
                                       copy="lab-restic", reason="unreachable" if status is Status.ERROR else ""))
    store.record_probe(ProbeResult(probe="lab-restic", kind="restic", action="check", status=Status.FAILED,
                                   started_at=NOW, finished_at=NOW + timedelta(seconds=9), copy="lab-restic"))
    got = samples(loaded)
    snap = (("action", "snapshots"), ("probe", "lab-restic"))
    check = (("action", "check"), ("probe", "lab-restic"))
    assert got[("drcheck_probe_up", snap)] == 0
    assert got[("drcheck_probe_up", check)] == 1 and got[("drcheck_probe_success", check)] == 0
    assert got[("drcheck_probe_duration_seconds", check)] == 9
    assert got[("drcheck_probe_last_run_timestamp_seconds", snap)] == (NOW + timedelta(seconds=3)).timestamp()


def test_unprotected_systems_are_counted_from_the_latest_run_only(loaded, store):
    def run(at, unprotected):
        store.record_probe(ProbeResult(
            probe="lab-restic", kind="restic", action="snapshots", status=Status.FAILED, started_at=at,
            finished_at=at, copy="lab-restic",
            findings=[Finding(Severity.CRITICAL, "no_restore_point", f"no snapshot of {s}", s) for s in unprotected]
            + [Finding(Severity.WARNING, "unmapped_snapshots", "2 snapshot(s) match no system rule")]))

    run(NOW - timedelta(hours=1), ["fileserver", "payroll", "sis"])
    run(NOW, ["fileserver", "payroll"])
    assert samples(loaded)[("drcheck_unprotected_assets", (("source", "lab-restic"),))] == 2


def test_empty_store_scrapes_and_textfile_is_written(loaded, store, tmp_path):
    got = samples(loaded)
    assert got[("drcheck_info", (("agent", "demo-lab"), ("version", __import__("drcheck").__version__)))] == 1
    assert not any(name == "drcheck_restore_test_last_passed" for name, _ in got)
    path = write_textfile(loaded, store, tmp_path / "m" / "drcheck.prom")
    assert "drcheck_sandbox_leases_open 0.0" in path.read_text()


def test_a_measured_breach_is_exported_so_alerts_can_fire(loaded, store, record):
    record.test("payroll", "failed", NOW - timedelta(hours=2), rpo=timedelta(days=3), reason="RPO breach")
    got = samples(loaded)
    key = ("system", "payroll"), ("test", "payroll-files")
    assert got[("drcheck_restore_test_rpo_seconds", key)] == 3 * 86400
    assert got[("drcheck_restore_test_rpo_seconds", key)] > got[("drcheck_restore_test_rpo_target_seconds", key)]
    assert ("drcheck_restore_test_last_success_timestamp_seconds", key) not in got


def test_never_tested_and_unprotected_systems_are_visible(loaded, store, record):
    record.probe({"sis": NOW - timedelta(hours=1)}, at=NOW)
    record.test("sis", "passed", NOW - timedelta(hours=3), rto=timedelta(minutes=5), rpo=timedelta(hours=2))
    got = samples(loaded)
    newest = {labels[0][1]: v for (name, labels), v in got.items()
              if name == "drcheck_system_newest_restore_point_timestamp_seconds"}
    tested = {labels[0][1]: v for (name, labels), v in got.items()
              if name == "drcheck_system_last_test_timestamp_seconds"}
    assert newest == {"sis": (NOW - timedelta(hours=1)).timestamp(), "fileserver": 0, "payroll": 0}
    assert tested == {"sis": (NOW - timedelta(hours=3)).timestamp(), "fileserver": 0, "payroll": 0}
    assert got[("drcheck_restore_points", (("copy", "lab-restic"), ("system", "sis")))] == 30


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
    got = samples(load(loaded.path))
    assert not any(dict(labels).get("test") == "fileserver-files" for _, labels in got)
