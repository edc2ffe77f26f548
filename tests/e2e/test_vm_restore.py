"""The `vm` restore test against the project's vCenter simulator (verified TLS, a real
pyvmomi session): fenced clone, register and adopt passing with measured RTO and RPO; a VM
that never boots failing; networks with uplinks refused with the VM never powered on (the
simulator's power log); a guest command's wrong credentials and wrong exit code failing;
vCenter going away mid-test leaving the VM leased until the reaper removes it once vCenter
is back; a rotation over 12 VMs covering all of them in the projected number of runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import tomli_w

from drcheck.config_loader import load
from drcheck.engine import reap_orphans, run_restore_tests
from drcheck.restore_tests import vm
from drcheck.results import InventoryAsset, ProbeResult, Status, utcnow
from drcheck.store import Store
from tests.e2e.vcsim_fixtures import vsphere_connect

pytest.importorskip("pyVmomi")
pytestmark = pytest.mark.e2e

SANDBOX = "DC0/vm/drcheck-sandbox"
SCHOOLS = [f"school{i:02d}" for i in range(12)]


def lab_vm(name: str, folder: str = "DC0/vm/Production", **settings) -> dict:
    return {"name": name, "folder": folder, "cluster": "DC0_C0", "datastore": "LocalDS_0", "network": "VM Network",
            "memory_mb": 128, "power": "on", "snapshots": [{"name": "nightly", "age": "6h"}], **settings}


SCENARIO = {
    "folders": ["DC0/vm/Production", "DC0/vm/Schools", SANDBOX],
    "networks": [{"datacenter": "DC0", "name": "drcheck-isolated", "uplinks": False},
                 {"datacenter": "DC0", "name": "lab-uplinked", "uplinks": True}],
    "vms": [lab_vm("sis01", memory_mb=256, hostname="sis01.district.local"),
            lab_vm("dead01", boot="never"),
            lab_vm("exit3", guest_exit=3),
            lab_vm("slow01", boot="1m"),
            *(lab_vm(name, folder="DC0/vm/Schools", snapshots=[{"name": "nightly", "age": f"{10 + i}h"}])
              for i, name in enumerate(SCHOOLS))],
}
RUNBOOK = {"name": "Student Information System", "tier": 1, "owner": "Network Administrator",
           "rto": "4h", "rpo": "24h", "mtd": "1d"}


class VmLab:
    """A simulator with the scenario above and a drcheck configured against it (verified
    TLS through the test CA, secrets in files)."""

    def __init__(self, root: Path, sim, ca):
        self.root, self.sim, self.ca = root, sim, ca
        (root / "vc-password").write_text(sim.password)
        (root / "guest-password").write_text(sim.guest_password)
        (root / "runbooks").mkdir(parents=True, exist_ok=True)
        (root / "runbooks" / "sis.toml").write_text(tomli_w.dumps(RUNBOOK))
        self.config_path = root / "drcheck.toml"

    def test(self, source: dict, **settings) -> dict:
        return {"kind": "vm", "probe": "vc", "system": "sis", "source": source,
                "sandbox": {"folder": SANDBOX, "network": "drcheck-isolated"}, "boot_timeout": "30s", **settings}

    def configure(self, **tests) -> tuple:
        config = {
            "agent": {"name": "vm-lab", "state_dir": str(self.root / "state"),
                      "sandbox_root": str(self.root / "state" / "sandbox"), "runbooks_dir": str(self.root / "runbooks"),
                      "timezone": "UTC"},
            "probes": {"vc": {"kind": "vmware", "url": self.sim.url, "username": self.sim.username,
                              "password": {"file": str(self.root / "vc-password")}, "ca_bundle": str(self.ca.ca),
                              "call_timeout": "10s", "max_vm_tests": 2}},
            "restore_tests": tests,
        }
        self.config_path.write_text(tomli_w.dumps(config))
        loaded = load(self.config_path)
        return loaded, Store(loaded.database_path)

    def run(self, name: str, **tests) -> list:
        loaded, store = self.configure(**tests)
        phases = []
        results = run_restore_tests(loaded, store, name, progress=lambda phase, *a: phases.append(phase))
        self.phases = phases
        return results

    def guest_command(self, password_file: str = "guest-password") -> dict:
        return {"program": "/usr/bin/check-app", "arguments": "--quick", "user": self.sim.guest_user,
                "password": {"file": str(self.root / password_file)}, "timeout": "20s"}

    def powered_on_in_sandbox(self) -> list[dict]:
        return [entry for entry in self.sim.power_log() if entry["folder"] == SANDBOX]

    def sandbox_vms(self) -> list[str]:
        si = vsphere_connect(self.sim)
        folder = si.RetrieveContent().searchIndex.FindByInventoryPath(SANDBOX)
        return [child.name for child in folder.childEntity]


TIB, GIB = 1024**4, 1024**3


@pytest.fixture
def lab(make_vcenter, vcsim_ca, tmp_path) -> VmLab:
    sim = make_vcenter(scenario=SCENARIO, boot_delay="500ms", tls=vcsim_ca)
    # the simulated datastore lives wherever the simulator keeps its files: give it a size
    # of its own, so the capacity guard judges the same figures on every machine
    sim.control("/datastore", {"datastore": "LocalDS_0", "capacity": 2 * TIB, "free": TIB})
    return VmLab(tmp_path, sim, vcsim_ca)


def only(results):
    assert len(results) == 1, results
    return results[0]


def assert_fenced_power_on(lab: VmLab, name: str) -> None:
    entries = [e for e in lab.powered_on_in_sandbox() if e["vm"] == name]
    assert entries, f"{name} was never powered on"
    for entry in entries:
        for nic in entry["nics"]:
            assert nic["network"] == "drcheck-isolated" or not (nic["connected"] or nic["start_connected"]), entry


def test_a_fenced_clone_passes_with_measured_rto_and_rpo(lab):
    result = only(lab.run("vm-sis", **{"vm-sis": lab.test({"type": "clone", "vm": "DC0/vm/Production/sis01"},
                                                          guest_command=lab.guest_command(), screenshot=True)}))
    assert result.status is Status.PASSED, result.reason
    name = result.details["sandbox_vm"]
    assert_fenced_power_on(lab, name)
    assert name not in lab.sandbox_vms()  # destroyed
    # the guest boots 0.5 s after power-on: the RTO holds the clone, fencing, the boot and the guest command
    assert 0.5 <= result.rto_seconds < 30
    assert result.rto_seconds == pytest.approx(result.restore_seconds + result.verify_seconds, abs=0.01)
    assert result.rpo_seconds == pytest.approx(6 * 3600, abs=120)
    checks = {c.name: c for c in result.checks}
    assert checks["fencing"].evidence.startswith("Network adapter 1: VM Network -> drcheck-isolated")
    assert checks["guest command /usr/bin/check-app"].evidence == "exit code 0 (expected 0)"
    assert checks["guest-ip"].evidence.split(": ")[1].startswith("10.")
    shot = Path(checks["screenshot"].details["path"])  # evidence, downloaded over the session
    assert checks["screenshot"].status is Status.PASSED and shot.read_bytes().startswith(b"\x89PNG")
    assert shot.parent == lab.root / "state" / "evidence"
    assert {"restore", "fence", "power-on", "boot", "guest-command", "cleanup"} <= set(result.details["phases"])
    assert any(p.startswith("waiting for the guest to boot") for p in lab.phases)
    _, store = lab.configure()
    assert store.open_leases() == []
    print(f"\nfenced clone: RTO {result.rto_seconds:.2f}s (restore {result.restore_seconds:.2f}s, "
          f"verify {result.verify_seconds:.2f}s), phases {result.details['phases']}")


def test_register_of_exported_files_passes_with_rpo_from_the_vmx(lab):
    exported = lab.sim.control("/export", {"vm": "DC0/vm/Production/sis01", "datastore": "LocalDS_0",
                                           "dir": "exports/sis01"})
    result = only(lab.run("vm-reg", **{"vm-reg": lab.test({"type": "register", "vmx": exported["path"]})}))
    assert result.status is Status.PASSED, result.reason
    assert result.point_id == exported["path"]
    assert 0 <= result.rpo_seconds < 120  # the files were written just now
    assert result.details["vm_uuid"]
    assert_fenced_power_on(lab, result.details["sandbox_vm"])
    assert result.details["sandbox_vm"] not in lab.sandbox_vms()


@pytest.mark.parametrize("source, words", [
    ({"type": "register", "vmx": "[LocalDS_0] exports/gone/gone.vmx"}, "[LocalDS_0] exports/gone/gone.vmx is not on"),
    ({"type": "clone", "vm": "sis01", "snapshot": "weekly"}, "VM sis01 has no snapshot named weekly"),
    ({"type": "clone", "vm": "DC0/vm/Replicas/sis01_replica"}, "no VM DC0/vm/Replicas/sis01_replica"),
])
def test_a_missing_restore_point_fails_and_creates_nothing(lab, source, words):
    result = only(lab.run("vm-gone", **{"vm-gone": lab.test(source)}))
    assert result.status is Status.FAILED and words in result.reason
    assert lab.sandbox_vms() == [] and lab.powered_on_in_sandbox() == []


def test_adopt_fences_a_vm_a_backup_product_restored_and_counts_rto_from_its_creation(lab):
    restored = lab.sim.control("/restore", {"source": "DC0/vm/Production/sis01", "name": "sis01-restored",
                                            "folder": SANDBOX})
    created = datetime.fromisoformat(restored["created"].replace("Z", "+00:00"))
    time.sleep(1)  # drcheck picks it up later than the backup product created it
    result = only(lab.run("vm-adopt", **{"vm-adopt": lab.test({"type": "adopt", "name": "sis01-restored*"})}))
    assert result.status is Status.PASSED, result.reason
    assert result.details["vm"] == "sis01-restored" and result.details["vm_uuid"] == restored["uuid"]
    assert result.rto_seconds >= (result.started_at - created).total_seconds() >= 1
    assert result.rpo_seconds is None and result.details["rpo"].startswith("unknown")
    # it came with its production NIC connected at power-on; it was powered on fenced, then destroyed
    assert_fenced_power_on(lab, result.details["sandbox_vm"])
    assert lab.sandbox_vms() == []


def test_a_vm_that_never_boots_fails_with_its_phases(lab):
    result = only(lab.run("vm-dead", **{"vm-dead": lab.test({"type": "clone", "vm": "dead01"}, boot_timeout="2s")}))
    assert result.status is Status.FAILED
    assert {c.name for c in result.checks if c.status is Status.FAILED} == {"heartbeat", "tools", "guest-ip"}
    assert "heartbeat: not within 2" in result.reason and result.rto_seconds is None
    start, end = result.details["phases"]["boot"]
    assert end - start >= 2
    assert result.details["sandbox_vm"] not in lab.sandbox_vms()


@pytest.mark.parametrize("network, words", [
    ("VM Network", "sandbox network VM Network is not isolated: vSwitch vSwitch0 on DC0_C0_H0 has physical "
                   "uplinks (vmnic0)"),
    ("lab-uplinked", "sandbox network lab-uplinked is not isolated: vSwitch"),
])
def test_a_network_with_uplinks_is_refused_and_nothing_is_powered_on(lab, network, words):
    test = lab.test({"type": "clone", "vm": "sis01"})
    test["sandbox"]["network"] = network
    result = only(lab.run("vm-sis", **{"vm-sis": test}))
    assert result.status is Status.ERROR and words in result.reason
    assert lab.powered_on_in_sandbox() == []
    assert lab.sandbox_vms() == []


@pytest.mark.parametrize("vm_name, password_file, words", [
    ("sis01", "wrong-password", "the guest refused the login of 'lab'"),
    ("exit3", "guest-password", "exit code 3 (expected 0)"),
])
def test_a_guest_command_with_wrong_credentials_or_exit_code_fails(lab, vm_name, password_file, words):
    (lab.root / "wrong-password").write_text("not the password")
    test = lab.test({"type": "clone", "vm": vm_name}, guest_command=lab.guest_command(password_file))
    result = only(lab.run("vm-guest", **{"vm-guest": test}))
    assert result.status is Status.FAILED and words in result.reason
    assert result.rto_seconds is None


@pytest.mark.parametrize("control, words", [
    (("/datastore", {"datastore": "LocalDS_0", "free": 5 * GIB}), "datastore LocalDS_0 has 5.0 GiB free"),
    (("/host", {"host": "DC0_C0_H0", "memory_free_mb": 600}), "no host has 1280 MB of memory free"),
])
def test_the_capacity_guard_refuses_before_anything_is_created(lab, control, words):
    lab.sim.control("/host", {"host": "DC0_C0_H1", "maintenance": True})  # sis01's cluster: one usable host
    lab.sim.control(*control)
    loaded, store = lab.configure(**{"vm-sis": lab.test({"type": "clone", "vm": "sis01"})})
    result = only(run_restore_tests(loaded, store, "vm-sis"))
    assert result.status is Status.ERROR and words in result.reason
    assert lab.sandbox_vms() == [] and store.query("SELECT COUNT(*) AS n FROM leases")[0]["n"] == 0


def test_vcenter_going_away_mid_test_is_an_error_and_the_vm_is_reaped_once_it_is_back(lab):
    lab.configure(**{"vm-slow": lab.test({"type": "clone", "vm": "slow01"}, boot_timeout="2m")})
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path), "restore-test",
                             "vm-slow", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not lab.powered_on_in_sandbox():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        name = lab.powered_on_in_sandbox()[0]["vm"]
        lab.sim.outage("refuse")
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    result = json.loads(out)
    assert result["status"] == "error" and f"sandbox VM {name} was left behind" in result["reason"]

    loaded, store = lab.configure(**{"vm-slow": lab.test({"type": "clone", "vm": "slow01"})})
    (lease,) = store.open_leases()
    assert (lease["kind"], lease["resource"], lease["pid"]) == ("vm", f"vc/{name}", proc.pid)
    assert reap_orphans(loaded, store) == []  # vCenter still away: the lease stays, counted
    (lease,) = store.open_leases()
    assert lease["attempts"] == 1 and "vCenter" in lease["last_error"]

    lab.sim.outage("none")
    assert name in lab.sandbox_vms()  # the simulator kept it through the outage
    (reaped,) = reap_orphans(loaded, store)
    assert reaped["resource"] == f"vc/{name}"
    assert store.open_leases() == [] and lab.sandbox_vms() == []


def record_schools_inventory(lab: VmLab, store: Store) -> None:
    """The assets an inventory probe of the simulator stores (section 3 of the VMware
    contract): instance UUID, name, folder and path of each school VM."""
    si = vsphere_connect(lab.sim)
    folder = si.RetrieveContent().searchIndex.FindByInventoryPath("DC0/vm/Schools")
    assets = [InventoryAsset(source="vc", asset_id=child.config.instanceUuid, name=child.name, kind="vm",
                             protected=False, attributes={"folder": "/DC0/vm/Schools",
                                                          "path": f"/DC0/vm/Schools/{child.name}", "template": False})
              for child in folder.childEntity]
    now = utcnow()
    store.record_probe(ProbeResult(probe="vc", kind="vmware", action="inventory", status=Status.OK,
                                   started_at=now, finished_at=now, assets=assets))


def test_a_rotation_over_twelve_vms_covers_them_all_in_the_projected_runs(lab):
    rotation = lab.test({"type": "clone"}, rotation={"vms": [{"folder": "/DC0/vm/Schools"}], "per_run": 4},
                        schedule={"cron": "0 1 * * *"})
    loaded, store = lab.configure(**{"vm-schools": rotation})
    record_schools_inventory(lab, store)
    planned = vm.coverage(loaded, store, "vm-schools", utcnow())
    assert len(planned.vms) == 12 and planned.runs_to_cover == 3 and planned.days_to_cover == 3.0
    proven, durations = set(), []
    for _ in range(planned.runs_to_cover):
        began = time.monotonic()
        results = run_restore_tests(loaded, store, "vm-schools")
        durations.append(time.monotonic() - began)
        assert [r.status for r in results] == [Status.PASSED] * 4, [r.reason for r in results]
        proven |= {r.details["vm"] for r in results}
    assert proven == set(SCHOOLS)
    covered = vm.coverage(loaded, store, "vm-schools", utcnow())
    assert covered.untested == [] and covered.days_to_cover == 0.0
    assert all(m.last_proven is not None for m in covered.vms)
    assert lab.sandbox_vms() == [] and store.open_leases() == []
    print(f"\nrotation: 3 runs of 4 VMs took {', '.join(f'{d:.1f}s' for d in durations)}")


def test_results_are_recorded_with_their_vm(lab):
    """What status and reports read: one row per VM with its UUID and path."""
    loaded, store = lab.configure(**{"vm-sis": lab.test({"type": "clone", "vm": "sis01"})})
    run_restore_tests(loaded, store, "vm-sis")
    (row,) = store.query("SELECT details, rto_seconds, status FROM restore_tests WHERE test = 'vm-sis'")
    details = json.loads(row["details"])
    assert row["status"] == "passed" and row["rto_seconds"] > 0
    assert details["vm_path"] == "/DC0/vm/Production/sis01" and details["vm"] == "sis01"
    assert details["vm_uuid"] and details["guest_ip"].startswith("10.")
