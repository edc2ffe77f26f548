"""drcheck against the project's Veeam B&R REST replay (x-api-version 1.1-rev1, verified TLS,
a real httpx client) and vCenter simulator: a healthy server; a stale newest point (R2); a
failed session; an infected point skipped for the clean one; tokens expiring mid-run; bad
credentials; a server down or hanging; listings over many pages; the vCenter's VMs counted as
protected by Veeam (R3); a passing fenced `veeam-instant` test with measured RTO; and a run
killed mid-test whose mount and VM are removed at the next start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tomli_w

from drcheck.config_loader import load
from drcheck.engine import reap_orphans, run_probe, run_restore_tests
from drcheck.rules import evaluate
from drcheck.results import Severity, Status, utcnow
from drcheck.store import Store
from tests.e2e.conftest import wait_for
from tests.e2e.vcsim_fixtures import vsphere_connect

pytest.importorskip("pyVmomi")
pytestmark = pytest.mark.e2e

SANDBOX = "DC0/vm/drcheck-sandbox"
VMS = ("sis01", "files01", "slow01")


def lab_vm(name: str, **settings) -> dict:
    return {"name": name, "folder": "DC0/vm/Schools", "cluster": "DC0_C0", "datastore": "LocalDS_0",
            "network": "VM Network", "memory_mb": 128, "power": "on", "hostname": f"{name}.district.local",
            **settings}


VCENTER = {
    "folders": ["DC0/vm/Schools", SANDBOX],
    "networks": [{"datacenter": "DC0", "name": "drcheck-isolated", "uplinks": False}],
    "vms": [lab_vm("sis01"), lab_vm("files01"), lab_vm("slow01", boot="1m"), lab_vm("kiosk01")],
}
RUNBOOK = {"tier": 1, "owner": "Network Administrator", "rto": "4h", "rpo": "24h", "mtd": "1d"}


class VeeamLab:
    """A vCenter simulator, the Veeam replay publishing into it, and drcheck configured
    against both (verified TLS through the test CA, secrets in files)."""

    def __init__(self, root: Path, sim, ca, make_veeam, **replay):
        self.root, self.sim, self.ca = root, sim, ca
        index = vsphere_connect(sim).RetrieveContent().searchIndex
        self.sandbox_moref = index.FindByInventoryPath(SANDBOX)._moId
        self.morefs = {n: index.FindByInventoryPath(f"DC0/vm/Schools/{n}")._moId for n in VMS}
        self.replay = make_veeam(scenario=self.scenario(), vcsim_control_url=sim.control_url, **replay)
        (root / "vc-password").write_text(sim.password)
        (root / "veeam-password").write_text(self.replay.password)
        (root / "runbooks").mkdir(parents=True, exist_ok=True)
        for system, name in (("sis", "Student Information System"), ("files", "File server")):
            (root / "runbooks" / f"{system}.toml").write_text(tomli_w.dumps({"name": name, **RUNBOOK}))
        self.config_path = root / "drcheck.toml"

    def scenario(self, sis: dict | None = None, sessions: list | None = None) -> dict:
        """sis01's points (default: 7, a day apart, the newest 6 h old) and the nightly
        job's sessions; files01 and slow01 as defaults; an offsite copy job 4 h old."""
        return {
            "vcenter": {"host": "127.0.0.1", "folders": {self.sandbox_moref: SANDBOX}},
            "repositories": [{"name": "Default Backup Repository"}, {"name": "Offsite Repository"}],
            "vms": [{"name": n, "moref": self.morefs[n], "source": f"DC0/vm/Schools/{n}"} for n in VMS],
            "jobs": [
                {"name": "Servers nightly", "objects": [{"vm": "sis01", "points": sis or {"count": 7}}, "files01",
                                                        "slow01"],
                 "sessions": sessions or [{"age": "30h"}, {"age": "6h", "result": "Success"}]},
                {"name": "Offsite copy", "type": "BackupCopy", "source_job": "Servers nightly",
                 "repository": "Offsite Repository", "objects": ["sis01", "files01"],
                 "points": {"count": 3, "every": "24h", "newest": "4h"}},
            ],
        }

    def veeam_probe(self, **changes) -> dict:
        return {"kind": "veeam", "copy": "local", "url": self.replay.url, "username": self.replay.username,
                "password": {"file": str(self.root / "veeam-password")}, "ca_bundle": str(self.ca.ca),
                "call_timeout": "5s", "copy_jobs": {"Offsite copy": "offsite"},
                "systems": [{"system": "sis", "vms": ["sis01"]}, {"system": "files", "vms": ["files01"]}], **changes}

    def test(self, vm: str = "sis01", **settings) -> dict:
        return {"kind": "vm", "probe": "vc", "system": "sis", "boot_timeout": "30s",
                "source": {"type": "veeam-instant", "probe": "veeam", "vm": vm, "mount_timeout": "30s"},
                "sandbox": {"folder": SANDBOX, "network": "drcheck-isolated"}, **settings}

    def configure(self, probe: dict | None = None, **tests) -> tuple:
        config = {
            "agent": {"name": "veeam-lab", "state_dir": str(self.root / "state"),
                      "sandbox_root": str(self.root / "state" / "sandbox"), "runbooks_dir": str(self.root / "runbooks"),
                      "timezone": "UTC"},
            "sites": {"office": {"description": "server room"}, "dr": {"description": "second site", "distance_km": 15}},
            "copies": {"local": {"site": "office"}, "offsite": {"site": "dr"}},
            "probes": {"vc": {"kind": "vmware", "url": self.sim.url, "username": self.sim.username,
                              "password": {"file": str(self.root / "vc-password")}, "ca_bundle": str(self.ca.ca),
                              "call_timeout": "10s"},
                       "veeam": probe or self.veeam_probe()},
            "restore_tests": tests or {"vm-sis": self.test()},
        }
        self.config_path.write_text(tomli_w.dumps(config))
        loaded = load(self.config_path)
        return loaded, Store(loaded.database_path)

    def probe(self, action: str = "points", **changes):
        loaded, store = self.configure(self.veeam_probe(**changes))
        with store:
            return run_probe(loaded, store, "veeam", action)

    def verdicts(self, rule: str) -> dict:
        loaded, store = self.configure()
        with store:
            return {(r.system, r.subject): r for r in evaluate(loaded, store, utcnow()) if r.rule == rule}

    def sandbox_vms(self) -> list[str]:
        folder = vsphere_connect(self.sim).RetrieveContent().searchIndex.FindByInventoryPath(SANDBOX)
        return [child.name for child in folder.childEntity]


@pytest.fixture
def lab(make_vcenter, make_veeam, vcsim_ca, tmp_path) -> VeeamLab:
    sim = make_vcenter(scenario=VCENTER, boot_delay="500ms", tls=vcsim_ca)
    sim.control("/datastore", {"datastore": "LocalDS_0", "capacity": 2 * 1024**4, "free": 1024**4})
    return VeeamLab(tmp_path, sim, vcsim_ca, make_veeam)


def ages(result) -> dict[tuple[str, str], float]:
    now = result.started_at
    return {(p.system, p.copy): round((now - p.point_time).total_seconds() / 3600, 1) for p in result.newest}


def test_a_healthy_server_lists_every_systems_clean_points_in_each_copy(lab):
    result = lab.probe()
    assert result.status is Status.OK, result.reason
    assert ages(result) == {("sis", "local"): 6.0, ("sis", "offsite"): 4.0, ("files", "local"): 6.0,
                            ("files", "offsite"): 4.0}
    assert result.point_counts == {"sis": 7, "files": 7} and result.findings == []
    verdicts = lab.verdicts("R2.backup_age")
    assert all(v.passed for v in verdicts.values()) and set(verdicts) == {
        ("sis", "local"), ("sis", "offsite"), ("files", "local"), ("files", "offsite")}
    sessions = lab.probe("sessions")
    assert sessions.status is Status.OK and sessions.reason == "2 success" and sessions.findings == []


def test_a_stale_newest_point_fails_the_backup_age_rule(lab):
    lab.replay.set_scenario(lab.scenario(sis={"count": 3, "newest": "40h"}))
    result = lab.probe()
    assert ages(result)[("sis", "local")] == 40.0
    verdicts = lab.verdicts("R2.backup_age")
    stale = verdicts[("sis", "local")]
    assert not stale.passed and stale.message == "newest restore point in local is 1d 16h old (RPO 1d)"
    assert verdicts[("sis", "offsite")].passed and verdicts[("files", "local")].passed


def test_a_failed_session_is_a_finding_with_veeams_message(lab):
    said = "Processing sis01 Error: Failed to create VM snapshot: the datastore is full"
    lab.replay.set_scenario(lab.scenario(sessions=[{"age": "30h"}, {"age": "6h", "result": "Failed",
                                                                     "message": said}]))
    lab.probe("points")  # learns which systems the job's backups hold
    result = lab.probe("sessions")
    assert result.status is Status.OK  # the server was read; the failed job is judged per system it backs up
    assert sorted(f.system for f in result.findings) == ["files", "sis"]  # the job backs both up
    finding = result.findings[0]
    assert finding.severity is Severity.CRITICAL and finding.code == "session_failed"
    assert finding.message.startswith("job 'Servers nightly' (backs up files): last session failed (") and \
        finding.message.endswith(
        f"UTC): {said}")
    assert finding.subject.startswith("job:")
    judged = lab.verdicts("R10.source_findings")
    assert {system for (system, _), r in judged.items() if not r.passed and said in r.message} == {"files", "sis"}


def test_an_infected_point_is_skipped_for_the_clean_one_and_is_critical(lab):
    lab.replay.set_scenario(lab.scenario(sis={"count": 4, "newest": "2h", "malware": {"0": "Infected",
                                                                                      "1": "Suspicious"}}))
    result = lab.probe()
    assert ages(result)[("sis", "local")] == 50.0  # 2 h and 26 h are marked: the clean one is 50 h old
    assert result.point_counts["sis"] == 2
    codes = sorted((f.code, f.severity, f.system) for f in result.findings)
    assert codes == [("point_infected", Severity.CRITICAL, "sis"), ("point_suspicious", Severity.CRITICAL, "sis")]
    assert result.status is Status.FAILED and "as Infected: it is never counted as a clean point" in result.reason
    assert not lab.verdicts("R2.backup_age")[("sis", "local")].passed  # 50 h > RPO 24 h
    assert not lab.verdicts("R10.source_findings")[("sis", "veeam")].passed


def test_tokens_expiring_mid_run_are_renewed(lab):
    """Tokens live 1 s; mid-listing the server holds requests for 1.3 s, so the token of a
    held request has expired when it is served (a 401, renewed once and retried) and the
    next requests find their token past its lifetime (refreshed before they are sent)."""
    lab.replay.control("/token-lifetime", {"seconds": 1})
    lab.replay.control("/requests/reset", {})
    lab.replay.outage("hang", after=10)  # the server holds the listing from its 11th request on

    def stall():
        wait_for(lambda: len(lab.replay.requests()) >= 10, timeout=30, interval=0.01, what="the listing to start")
        time.sleep(1.3)
        lab.replay.outage("none")

    staller = threading.Thread(target=stall, daemon=True)
    staller.start()
    began = time.monotonic()
    result = lab.probe(page_size=1)
    took = time.monotonic() - began
    staller.join()
    assert result.status is Status.OK, result.reason
    assert result.details["restore_points"] == 7 * 3 + 3 * 2
    log = lab.replay.requests()
    grants = [r for r in log if r["path"] == "/api/oauth2/token"]
    refused = [r for r in log if r["status"] == 401]
    assert len(grants) >= 2 and all(r["status"] == 200 for r in grants)
    assert len(refused) == 1 and log[log.index(refused[0]) + 1]["path"] == "/api/oauth2/token"
    print(f"\ntoken expiry: {len(grants)} token grants, {len(refused)} refused request renewed, "
          f"{len(log)} requests in {took:.2f}s")


def test_bad_credentials_are_a_clear_error(lab):
    (lab.root / "veeam-password").write_text("not the password")
    result = lab.probe()
    assert result.status is Status.ERROR
    assert result.reason == (f"Veeam B&R {lab.replay.url}/api/oauth2/token: login of user 'drcheck' refused "
                             "(wrong user name or password): HTTP 401: Invalid username or password. (AccessDenied)")
    assert "not the password" not in result.reason


def test_a_server_that_is_down_or_hangs_is_a_clear_error(lab):
    lab.replay.outage("hang")
    try:
        hung = lab.probe(call_timeout="1s", retries=0)
    finally:
        lab.replay.outage("none")
    assert hung.status is Status.ERROR
    assert hung.reason == f"Veeam B&R {lab.replay.url}/api/oauth2/token: no answer within 1s"
    url = lab.replay.url
    lab.replay.stop()
    down = lab.probe()
    assert down.status is Status.ERROR
    assert down.reason == f"Veeam B&R {url}/api/oauth2/token: unreachable (connection refused) (after 3 attempts)"
    assert not lab.verdicts("P2.probe_up")[("sis", "veeam")].passed


def test_results_over_several_pages_are_read_whole(lab):
    whole = lab.probe()
    lab.replay.control("/requests/reset", {})
    paged = lab.probe(page_size=4)
    assert ages(paged) == ages(whole) and paged.details["restore_points"] == whole.details["restore_points"] == 27
    listing = [r for r in lab.replay.requests() if r["path"] == "/api/v1/restorePoints"]
    skips = [dict(p.split("=") for p in r["query"].split("&"))["skip"] for r in listing]
    assert skips == [str(n) for n in range(0, 28, 4)]


def test_the_vcenters_vms_are_protected_by_veeams_points(lab):
    loaded, store = lab.configure()
    with store:
        assert run_probe(loaded, store, "vc", "inventory").status is Status.OK
        assert run_probe(loaded, store, "veeam", "points").status is Status.OK
        verdicts = {r.subject: r for r in evaluate(loaded, store, utcnow()) if r.rule == "R3.vm_protected"}
    assert verdicts["/DC0/vm/Schools/sis01"].passed
    assert "newest restore point in offsite is 4h" in verdicts["/DC0/vm/Schools/sis01"].message
    assert not verdicts["/DC0/vm/Schools/kiosk01"].passed  # Veeam backs it up nowhere


def test_a_veeam_instant_recovery_passes_fenced_with_measured_rto(lab):
    loaded, store = lab.configure()
    with store:
        (result,) = run_restore_tests(loaded, store, "vm-sis")
        leases = store.open_leases()
    assert result.status is Status.PASSED, result.reason
    name = result.details["sandbox_vm"]
    (mount,) = lab.replay.mounts()
    assert mount["vmName"] == name and mount["state"] == "Unmounted" and mount["folder"] == SANDBOX
    powered = [e for e in lab.sim.power_log() if e["vm"] == name]
    assert powered and all(n["network"] == "drcheck-isolated" for e in powered for n in e["nics"])
    assert name not in lab.sandbox_vms() and leases == []
    assert result.copy == "local" and result.point_id == mount["restorePointId"]
    assert result.rpo_seconds == pytest.approx(6 * 3600, abs=120)
    assert 0.5 <= result.rto_seconds < 60 and result.rto_seconds == pytest.approx(
        result.restore_seconds + result.verify_seconds, abs=0.01)
    assert result.checks[1].name == "fencing" and "VM Network -> drcheck-isolated" in result.checks[1].evidence
    with Store(loaded.database_path) as store:
        (row,) = store.query("SELECT status, copy, rto_seconds FROM restore_tests WHERE test = 'vm-sis'")
    assert row["status"] == "passed" and row["copy"] == "local"
    print(f"\nveeam-instant: RTO {result.rto_seconds:.2f}s (mount {result.restore_seconds:.2f}s, verify "
          f"{result.verify_seconds:.2f}s), phases {json.dumps(result.details['phases'])}")


def test_a_run_killed_mid_test_has_its_mount_and_vm_removed_at_the_next_start(lab):
    loaded, _ = lab.configure(**{"vm-slow": lab.test(vm="slow01", boot_timeout="2m")})
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path), "restore-test",
                             "vm-slow", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        powered = wait_for(lambda: [e["vm"] for e in lab.sim.power_log() if e["folder"] == SANDBOX]
                           or proc.poll() is not None and pytest.fail(proc.communicate()), timeout=60,
                           what="the published VM to be powered on")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    (name,) = powered
    assert name in lab.sandbox_vms() and [m["state"] for m in lab.replay.mounts()] == ["Mounted"]
    with Store(loaded.database_path) as store:
        (lease,) = store.open_leases()
        assert (lease["kind"], lease["resource"], lease["pid"]) == ("veeam-instant", f"veeam/{name}", proc.pid)
        (reaped,) = reap_orphans(loaded, store)
        assert reaped["resource"] == f"veeam/{name}" and store.open_leases() == []
        (row,) = store.query("SELECT status, reason FROM restore_tests WHERE test = 'vm-slow'")
    assert [m["state"] for m in lab.replay.mounts()] == ["Unmounted"]
    assert name not in lab.sandbox_vms()
    assert row["status"] == "error" and f"its veeam-instant veeam/{name} was removed at next start" in row["reason"]


def test_the_reaper_keeps_the_lease_while_veeam_is_down(lab):
    loaded, _ = lab.configure(**{"vm-slow": lab.test(vm="slow01", boot_timeout="2m")})
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path), "restore-test",
                             "vm-slow"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(e["folder"] == SANDBOX for e in lab.sim.power_log()), timeout=60, what="power-on")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    lab.replay.outage("refuse")
    with Store(loaded.database_path) as store:
        assert reap_orphans(loaded, store) == []
        (lease,) = store.open_leases()
        assert lease["attempts"] == 1 and "unreachable" in lease["last_error"]
        lab.replay.outage("none")
        assert len(reap_orphans(loaded, store)) == 1 and store.open_leases() == []
    assert lab.sandbox_vms() == []


def test_the_points_are_current_in_the_store_per_copy(lab):
    loaded, store = lab.configure()
    with store:
        run_probe(loaded, store, "veeam", "points")
        rows = store.current_restore_points()
    assert {(r["system"], r["copy"], r["host"]) for r in rows} == {
        ("sis", "local", "sis01"), ("sis", "offsite", "sis01"), ("files", "local", "files01"),
        ("files", "offsite", "files01")}


def test_the_demo_peer_serves_the_backups_the_probe_expects(tmp_path):
    from drcheck.probes import veeam

    lab_dir = tmp_path / "lab" / "veeam"
    (tmp_path / "runbooks").mkdir()
    for system in ("sis", "files"):
        (tmp_path / "runbooks" / f"{system}.toml").write_text(tomli_w.dumps({"name": system, **RUNBOOK}))
    config = {
        "agent": {"name": "demo", "state_dir": str(tmp_path / "state"), "sandbox_root": str(tmp_path / "state" / "sb"),
                  "runbooks_dir": str(tmp_path / "runbooks"), "timezone": "UTC"},
        "sites": {"office": {}, "dr": {}}, "copies": {"local": {"site": "office"}, "offsite": {"site": "dr"}},
        "probes": {"veeam": {"kind": "veeam", "copy": "local", "url": "https://127.0.0.1:0", "username": "demo",
                             "password": {"file": str(lab_dir / "password")}, "ca_bundle": str(lab_dir / "ca.pem"),
                             "copy_jobs": {"Offsite copy": "offsite"},
                             "systems": [{"system": "sis", "vms": ["sis01"]}, {"system": "files", "vms": ["files*"]}]}},
    }
    path = tmp_path / "drcheck.toml"
    path.write_text(tomli_w.dumps(config))
    loaded = load(path)
    peer = veeam.lab_peer(loaded.config.probes["veeam"], loaded)
    assert all(lab_dir == p or lab_dir in p.parents for p in peer.owned_paths())
    peer.init()
    peer.start()
    try:
        url = peer._replay.url  # port 0 in this configuration: the replay picked one
        config["probes"]["veeam"]["url"] = url
        path.write_text(tomli_w.dumps(config))
        loaded = load(path)
        with Store(loaded.database_path) as store:
            result = run_probe(loaded, store, "veeam", "points")
    finally:
        peer.stop()
    assert result.status is Status.OK, result.reason
    assert ages(result) == {("sis", "local"): 5.0, ("sis", "offsite"): 3.0}  # files* names no VM for the demo
