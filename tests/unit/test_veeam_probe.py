"""The veeam probe against the fake REST API (client boundary): its configuration and
cross-references, the clean-point view per system and copy (stalest VM of a system,
suspicious and infected points never counted), backup assets for rule R3, and the last
session of every job as findings with Veeam's own words."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from drcheck.config_loader import ConfigError
from drcheck.context import RunContext
from drcheck.engine import run_probe
from drcheck.probes import veeam
from drcheck.results import Severity, Status
from tests.unit.test_veeam_fakes import NOW, VEEAM_PROBE, FakeVeeam, install, loaded_and_store


def probe_with(**changes) -> dict:
    probe = copy.deepcopy(VEEAM_PROBE)
    probe.update(changes)
    return probe


def district() -> FakeVeeam:
    fake = FakeVeeam()
    fake.job("SIS nightly")
    fake.job("Files nightly")
    fake.job("SIS offsite", type="BackupCopy")
    for age in (6, 30, 54):
        fake.point("SIS nightly", "sis01", timedelta(hours=age))
        fake.point("SIS nightly", "sis-db01", timedelta(hours=age + 1))
        fake.point("Files nightly", "files01", timedelta(hours=age + 2))
        fake.point("SIS offsite", "sis01", timedelta(hours=age + 3))
        fake.point("SIS offsite", "sis-db01", timedelta(hours=age + 4))
    return fake


def run(builders, tmp_path, monkeypatch, fake: FakeVeeam, action: str = "points", probe: dict | None = None):
    loaded, store = loaded_and_store(builders, tmp_path, probe)
    install(monkeypatch, fake)
    return run_probe(loaded, store, "veeam", action), store


def newest(result) -> dict[tuple[str, str], tuple[str, float]]:
    return {(p.system, p.copy): (p.host, round((NOW - p.point_time).total_seconds() / 3600, 1))
            for p in result.newest}


def test_the_probe_loads_with_its_defaults_and_names_its_copies(builders, tmp_path):
    loaded, _ = loaded_and_store(builders, tmp_path)
    probe = loaded.config.probes["veeam"]
    assert isinstance(probe, veeam.VeeamProbe)
    assert probe.api_version == "1.1-rev1" and probe.page_size == 200 and probe.call_timeout.total_seconds() == 30
    assert probe.copies_of("sis") == ["local", "offsite"] and probe.copies_of("fileserver") == ["local"]
    assert probe.systems_covered() == {"sis", "fileserver"}
    assert list(veeam.ACTIONS) == ["points", "sessions"] and veeam.LISTS_POINTS == {"points"}


@pytest.mark.parametrize("changes, words", [
    ({"copy_jobs": {"SIS offsite": "tape"}}, "probes.veeam.copy_jobs.SIS offsite: unknown copy 'tape'"),
    ({"copy_jobs": {"SIS offsite": "local"}}, "would be the probe's own copy 'local'"),
    ({"systems": [{"system": "payroll", "vms": ["pay*"]}]}, "probes.veeam.systems[0].system: unknown system 'payroll'"),
    ({"systems": [{"system": "sis", "vms": ["sis01"], "copies": ["dr"]}]}, "'dr' is not a copy of this probe"),
    ({"password": "hunter2"}, "inline secrets are not allowed"),
    ({"url": "vbr.example:9419"}, "url"),
    ({"copy": None}, "copy"),
    ({"api_version": "v12"}, "api_version"),
])
def test_invalid_settings_are_refused(builders, tmp_path, changes, words):
    probe = probe_with(**changes)
    probe = {k: v for k, v in probe.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        loaded_and_store(builders, tmp_path, probe)
    assert words in str(caught.value)


def test_points_gives_each_system_its_stalest_vms_newest_clean_point_per_copy(builders, tmp_path, monkeypatch):
    result, _ = run(builders, tmp_path, monkeypatch, district())
    assert result.status is Status.OK, result.reason
    assert newest(result) == {("sis", "local"): ("sis-db01", 7.0), ("sis", "offsite"): ("sis-db01", 10.0),
                              ("fileserver", "local"): ("files01", 8.0)}
    assert result.point_counts == {"sis": 3, "fileserver": 3}
    assert result.findings == []
    assert result.details["restore_points"] == 15 and result.details["vms"] == 3
    assert result.reason == "15 restore points of 3 VMs in 2 copies"


def test_backup_assets_match_inventory_vms_by_name_per_copy(builders, tmp_path, monkeypatch):
    result, _ = run(builders, tmp_path, monkeypatch, district())
    assets = {a.asset_id: a for a in result.assets}
    assert set(assets) == {"local:sis01", "local:sis-db01", "local:files01", "offsite:sis01", "offsite:sis-db01"}
    sis = assets["offsite:sis01"]
    assert sis.kind == "backup" and sis.system == "sis" and sis.attributes["copy"] == "offsite"
    assert sis.attributes["match"] == {"vm_name": "sis01"} and sis.attributes["points"] == 3
    assert sis.attributes["newest"] == (NOW - timedelta(hours=9)).isoformat().replace("+00:00", ".123456+00:00")


def test_a_point_veeam_marks_infected_is_skipped_for_the_clean_one_and_is_critical(builders, tmp_path, monkeypatch):
    fake = district()
    infected = fake.point("SIS nightly", "sis01", timedelta(hours=1), malware="Infected")
    suspicious = fake.point("SIS nightly", "sis-db01", timedelta(hours=2), malware="Suspicious")
    result, store = run(builders, tmp_path, monkeypatch, fake)
    assert newest(result)[("sis", "local")] == ("sis-db01", 7.0)  # not the infected 1 h point
    assert result.point_counts["sis"] == 3  # never counted
    codes = {(f.code, f.subject, f.system, f.severity) for f in result.findings}
    assert codes == {("point_infected", f"point:{infected}", "sis", Severity.CRITICAL),
                     ("point_suspicious", f"point:{suspicious}", "sis", Severity.CRITICAL)}
    assert result.status is Status.FAILED and "VM sis01" in result.reason and "as Infected" in result.reason
    assets = {a.asset_id: a for a in result.assets}
    assert assets["local:sis01"].attributes["point_id"] != infected


def test_a_vm_of_a_system_missing_from_a_copy_leaves_the_system_without_a_point_there(builders, tmp_path,
                                                                                          monkeypatch):
    fake = district()
    offsite = fake.backups[2]["id"]
    fake.points = [p for p in fake.points if not (p["name"] == "sis-db01" and p["backupId"] == offsite)]
    result, _ = run(builders, tmp_path, monkeypatch, fake)
    assert ("sis", "offsite") not in newest(result)
    (finding,) = [f for f in result.findings if f.code == "vm_missing_in_copy"]
    assert finding.message == "VM sis-db01 of sis has no clean restore point in offsite: the system has none there"
    assert finding.severity is Severity.WARNING and result.status is Status.OK


def test_a_vm_whose_only_points_in_a_copy_are_infected_leaves_its_system_without_a_point_there(
        builders, tmp_path, monkeypatch):
    fake = district()
    offsite = fake.backups[2]["id"]
    for p in fake.points:
        if p["name"] == "sis-db01" and p["backupId"] == offsite:
            p["malwareStatus"] = "Infected"
    result, _ = run(builders, tmp_path, monkeypatch, fake)
    assert ("sis", "offsite") not in newest(result)  # sis01 alone there is not the system
    assert newest(result)[("sis", "local")] == ("sis-db01", 7.0)
    assert [f.code for f in result.findings].count("point_infected") == 3
    assert "offsite:sis-db01" not in {a.asset_id for a in result.assets}


def test_each_copy_carries_its_own_point_count(builders, tmp_path, monkeypatch):
    fake = district()
    fake.point("SIS offsite", "sis01", timedelta(hours=80))
    fake.point("SIS offsite", "sis-db01", timedelta(hours=81))
    result, store = run(builders, tmp_path, monkeypatch, fake)
    assert {(p.system, p.copy): p.count for p in result.newest} == {
        ("sis", "local"): 3, ("sis", "offsite"): 4, ("fileserver", "local"): 3}
    stored = {(r["system"], r["copy"]): r["point_count"] for r in store.current_restore_points()}
    assert stored == {("sis", "local"): 3, ("sis", "offsite"): 4, ("fileserver", "local"): 3}


@pytest.mark.parametrize("typed", [{"type": "BackupCopy"}, {"type": "Unknown", "sourceJobId": "the-files-job"}])
def test_an_unmapped_backup_copy_job_is_reported_and_not_counted(builders, tmp_path, monkeypatch, typed):
    fake = district()
    fake.job("Files to tape")
    fake.jobs[-1].update(typed)
    fake.point("Files to tape", "files01", timedelta(hours=1))
    result, _ = run(builders, tmp_path, monkeypatch, fake)
    assert newest(result)[("fileserver", "local")] == ("files01", 8.0)
    (finding,) = [f for f in result.findings if f.code == "copy_job_unmapped"]
    assert "'Files to tape'" in finding.message and finding.severity is Severity.WARNING


def test_results_over_several_pages_are_all_read(builders, tmp_path, monkeypatch):
    fake = district()
    result, _ = run(builders, tmp_path, monkeypatch, fake, probe=probe_with(page_size=4))
    assert result.details["restore_points"] == 15
    listings = [r for r in fake.requests if r.url.path == "/api/v1/restorePoints"]
    assert [r.url.params["skip"] for r in listings] == ["0", "4", "8", "12"]


def test_an_unreachable_server_is_an_error_with_one_line(builders, tmp_path, monkeypatch):
    fake = district()
    fake.down = True
    result, _ = run(builders, tmp_path, monkeypatch, fake)
    assert result.status is Status.ERROR
    assert result.reason == ("Veeam B&R https://vbr.example:9419/api/oauth2/token: unreachable (connection refused) "
                             "(after 3 attempts)")


def test_bad_credentials_are_an_error_naming_the_user(builders, tmp_path, monkeypatch):
    fake = district()
    loaded, store = loaded_and_store(builders, tmp_path)
    install(monkeypatch, fake)
    monkeypatch.setenv("VEEAM_PASSWORD", "wrong")
    result = run_probe(loaded, store, "veeam", "points")
    assert result.status is Status.ERROR
    assert "login of user 'svc-drcheck' refused (wrong user name or password): HTTP 401: Invalid username or " \
           "password. (AccessDenied)" in result.reason and "wrong" not in result.reason.replace("wrong user", "")


def test_sessions_make_failed_and_warning_jobs_findings_with_veeams_message(builders, tmp_path, monkeypatch):
    fake = district()
    fake.job("Exchange nightly", result="Failed", message="Processing exch01 Error: Failed to create VM snapshot: "
                                                          "the datastore is full")
    fake.job("Web nightly", result="Warning", message="Changed block tracking cannot be enabled")
    result, _ = run(builders, tmp_path, monkeypatch, fake, action="sessions")
    assert result.status is Status.OK  # the server was read: a failed job is judged per system (its finding)
    found = {f.code: f for f in result.findings}
    assert found["session_failed"].severity is Severity.CRITICAL
    assert found["session_failed"].message == ("job 'Exchange nightly': last session failed (2026-11-23 06:00 UTC): "
                                               "Processing exch01 Error: Failed to create VM snapshot: the "
                                               "datastore is full")
    assert found["session_warning"].severity is Severity.WARNING
    assert found["session_warning"].subject == f"job:{fake.jobs[-1]['id']}"
    assert result.details["last_results"] == {"Failed": 1, "Success": 3, "Warning": 1}


def test_session_findings_name_the_systems_the_last_points_run_saw_in_the_job(builders, tmp_path, monkeypatch):
    fake = district()
    fake.states[0].update(lastResult="Failed")
    fake.sessions[fake.states[0]["sessionId"]]["result"] = {"result": "Failed", "message": "sis-db01: disk busy"}
    loaded, store = loaded_and_store(builders, tmp_path)
    install(monkeypatch, fake)
    before = run_probe(loaded, store, "veeam", "sessions")
    assert [f.system for f in before.findings] == [None]
    run_probe(loaded, store, "veeam", "points")
    after = run_probe(loaded, store, "veeam", "sessions")
    assert [(f.system, f.code) for f in after.findings] == [("sis", "session_failed")]


def test_a_job_state_without_a_session_id_reads_the_jobs_last_session(builders, tmp_path, monkeypatch):
    fake = district()
    fake.states[1].update(lastResult="Warning", sessionId=None)
    sid = next(s for s in fake.sessions.values() if s["name"] == "Files nightly")["id"]
    fake.sessions[sid]["result"] = {"result": "Warning", "message": "retried twice"}
    monkeypatch.setattr(FakeVeeam, "__call__", _with_session_listing(FakeVeeam.__call__))
    result, _ = run(builders, tmp_path, monkeypatch, fake, action="sessions")
    assert [f.message for f in result.findings] == ["job 'Files nightly': last session warning (2026-11-23 06:00 "
                                                    "UTC): retried twice"]


def _with_session_listing(call):
    import httpx

    from tests.unit.test_veeam_fakes import page

    def handler(self, request):
        if request.url.path == "/api/v1/sessions":
            job = request.url.params["jobIdFilter"]
            assert request.url.params["orderColumn"] == "CreationTime" and request.url.params["orderAsc"] == "false"
            found = [s for s in self.sessions.values() if s["jobId"] == job]
            self.requests.append(request)
            return page(found, dict(request.url.params)) if found else httpx.Response(200, json={"data": []})
        return call(self, request)

    return handler


def test_the_probe_run_records_points_per_system_and_copy(builders, tmp_path, monkeypatch):
    result, store = run(builders, tmp_path, monkeypatch, district())
    rows = store.current_restore_points()
    assert {(r["system"], r["copy"]) for r in rows} == {("sis", "local"), ("sis", "offsite"), ("fileserver", "local")}


def test_actions_take_the_target_and_context_and_never_raise_for_the_server(builders, tmp_path, monkeypatch):
    fake = FakeVeeam()
    fake.jobs.append({"name": "broken: no id"})
    loaded, store = loaded_and_store(builders, tmp_path)
    install(monkeypatch, fake)
    result = veeam.points(loaded.config.probes["veeam"], RunContext("veeam", loaded, store))
    assert result.status is Status.ERROR
    assert result.reason == "Veeam B&R https://vbr.example:9419: unexpected answer listing jobs (KeyError: 'id')"
