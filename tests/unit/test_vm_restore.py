"""The `vm` restore test against a fake vCenter boundary: the order of guards, lease and
restore; fencing refusals that never power on; boot, guest command and screenshot checks;
RTO and RPO; cleanup that keeps the lease when vCenter cannot destroy the VM."""

from __future__ import annotations

import copy
import time
from datetime import timedelta

import pytest

from drcheck.clients.vsphere import VSphereError
from drcheck.clients.vsphere_vm import Missing, Nic
from drcheck.context import RunContext
from drcheck.results import Status
from drcheck.restore_tests import vm, vm_verify
from tests.unit.test_vm_fakes import GIB, ISOLATED, NOW, PRODUCTION, VM_TEST, World, install, loaded_and_store


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(vm_verify, "BOOT_POLL", (0.01, 0.05))


def run_test(builders, tmp_path, monkeypatch, world: World, test: dict | None = None, progress=None):
    loaded, store = loaded_and_store(builders, tmp_path, test)
    vc = install(monkeypatch, world)
    ctx = RunContext(name="vm-sis", loaded=loaded, store=store, progress=progress or (lambda *a: None))
    result = vm.run(loaded.config.restore_tests["vm-sis"], ctx)
    return result, vc, store


def with_(**changes) -> dict:
    test = copy.deepcopy(VM_TEST)
    test.update(changes)
    return test


def test_a_fenced_clone_passes_with_measured_rto_and_rpo(builders, tmp_path, monkeypatch):
    phases = []
    result, vc, store = run_test(builders, tmp_path, monkeypatch, World(), progress=lambda p, *a: phases.append(p))
    assert result.status is Status.PASSED, result.reason
    assert [c.name for c in result.checks] == ["capacity", "fencing", "power-on", "heartbeat", "tools", "guest-ip"]
    assert result.details["guest_ip"] == "10.0.0.5"
    assert result.details["vm"] == "sis01" and result.details["vm_uuid"] == "4210-uuid-sis01"
    assert result.point_id == "4210-uuid-sis01/nightly"
    # the clone task started 30 s before the (pinned-skew) test clock's "now" of vCenter
    assert result.rto_seconds >= 30 and result.restore_seconds >= 30
    assert result.rpo_seconds == pytest.approx((result.started_at - (NOW - timedelta(hours=6))).total_seconds())
    assert set(result.details["phases"]) >= {"connect", "sandbox", "source", "capacity", "restore", "fence",
                                              "power-on", "boot", "cleanup"}
    name = result.details["sandbox_vm"]
    assert name.startswith("drcheck-vm-sis-") and result.sandbox == f"vc/{name}"
    assert vc.destroy.call_count == 1 and not store.open_leases()
    assert any("fencing" in p for p in phases) and any("boot" in p for p in phases)


def test_the_lease_is_committed_before_the_clone_task_starts(builders, tmp_path, monkeypatch):
    world, seen = World(), []
    result, _, store = None, None, None
    loaded, store = loaded_and_store(builders, tmp_path)
    world.on_clone = lambda w: seen.extend(store.open_leases())
    install(monkeypatch, world)
    result = vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store))
    assert result.status is Status.PASSED
    assert [(lease["kind"], lease["handler"]) for lease in seen] == [("vm", "drcheck.restore_tests.vm")]
    assert seen[0]["resource"] == f"vc/{result.details['sandbox_vm']}"


def test_a_nic_left_on_the_production_network_is_refused_and_never_powered_on(builders, tmp_path, monkeypatch):
    world = World()
    world.move_keeps = True  # the reconfigure "succeeded" but the NIC is still on VM Network
    result, vc, store = run_test(builders, tmp_path, monkeypatch, world)
    assert result.status is Status.ERROR
    assert "refused to power on: Network adapter 1 would be on VM Network (connected at power-on)" in result.reason
    assert world.powered_on == [] and vc.power_on.call_count == 0
    assert world.destroyed == [result.details["sandbox_vm"]] and not store.open_leases()


def test_a_disconnected_nic_not_connected_at_power_on_counts_as_fenced(builders, tmp_path, monkeypatch):
    world = World()
    world.move_keeps = True
    world.nics = [Nic(4000, "Network adapter 1", ISOLATED.key, True, True),
                  Nic(4001, "Network adapter 2", PRODUCTION.key, False, False)]
    result, _, _ = run_test(builders, tmp_path, monkeypatch, world)
    assert result.status is Status.PASSED, result.reason
    assert "Network adapter 2: VM Network -> VM Network (disconnected)" in result.checks[1].evidence


def test_an_uplinked_isolated_port_group_is_refused_before_anything_is_created(builders, tmp_path, monkeypatch):
    world = World()
    world.uplinks = ["vSwitch1 on DC0_H0 has physical uplinks (vmnic1)"]
    result, vc, store = run_test(builders, tmp_path, monkeypatch, world)
    assert result.status is Status.ERROR
    assert "sandbox network drcheck-isolated is not isolated: vSwitch1 on DC0_H0" in result.reason
    assert vc.clone.call_count == 0 and vc.power_on.call_count == 0
    assert store.query("SELECT COUNT(*) AS n FROM leases")[0]["n"] == 0


@pytest.mark.parametrize("tweak, words", [
    (lambda w: setattr(w, "free_bytes", 2 * GIB), "datastore LocalDS_0 has 2.0 GiB free"),
    (lambda w: setattr(w, "host_free_mb", 600), "no host has 1280 MB of memory free"),
])
def test_the_capacity_guard_refuses_before_anything_is_created(builders, tmp_path, monkeypatch, tweak, words):
    world = World()
    tweak(world)
    result, vc, store = run_test(builders, tmp_path, monkeypatch, world)
    assert result.status is Status.ERROR and words in result.reason
    assert vc.clone.call_count == 0
    assert store.query("SELECT COUNT(*) AS n FROM leases")[0]["n"] == 0


def test_a_vm_that_never_boots_fails_with_phase_timings(builders, tmp_path, monkeypatch):
    world = World()
    world.boot_after = None
    result, _, store = run_test(builders, tmp_path, monkeypatch, world, with_(boot_timeout="0.3s"))
    assert result.status is Status.FAILED
    failed = {c.name for c in result.checks if c.status is Status.FAILED}
    assert failed == {"heartbeat", "tools", "guest-ip"}
    assert "heartbeat: not within 0.3" in result.reason
    assert "of power-on; last seen: power poweredOn, heartbeat gray, tools guestToolsNotRunning, IP none" \
        in result.reason
    assert result.rto_seconds is None
    start, end = result.details["phases"]["boot"]
    assert end - start >= 0.3
    assert not store.open_leases()


@pytest.mark.parametrize("login_ok, exit_code, status, words", [
    (True, 0, Status.PASSED, ""),
    (True, 3, Status.FAILED, "exit code 3 (expected 0)"),
    (False, 0, Status.FAILED, "the guest refused the login of 'Administrator'"),
])
def test_the_guest_command(builders, tmp_path, monkeypatch, login_ok, exit_code, status, words):
    monkeypatch.setenv("GUEST_PASSWORD", "lab")
    world = World()
    world.login_ok, world.exit_code = login_ok, exit_code
    command = {"program": "C:\\check.cmd", "user": "Administrator", "password": {"env": "GUEST_PASSWORD"}}
    result, _, _ = run_test(builders, tmp_path, monkeypatch, world, with_(guest_command=command))
    assert result.status is status, result.reason
    assert words in result.reason
    assert result.checks[-1].name == "guest command C:\\check.cmd"


def test_a_screenshot_is_kept_as_evidence(builders, tmp_path, monkeypatch):
    result, _, _ = run_test(builders, tmp_path, monkeypatch, World(), with_(screenshot=True))
    assert result.status is Status.PASSED
    shot = result.checks[-1]
    assert shot.name == "screenshot" and shot.status is Status.PASSED
    assert shot.details["path"].endswith(f"state/evidence/{result.details['sandbox_vm']}.png")


def test_a_vm_vcenter_cannot_destroy_keeps_its_lease(builders, tmp_path, monkeypatch):
    world = World()
    world.destroy_error = VSphereError("vCenter https://127.0.0.1:8989/sdk: unreachable (connection refused)")
    result, _, store = run_test(builders, tmp_path, monkeypatch, world)
    assert result.status is Status.ERROR
    assert "was left behind (its lease is kept; the reaper removes it)" in result.reason
    assert [lease["resource"] for lease in store.open_leases()] == [result.sandbox]


def test_a_missing_snapshot_is_a_failure_and_creates_nothing(builders, tmp_path, monkeypatch):
    world = World()
    result_missing = Missing("VM sis01 has no snapshot named weekly: nothing to restore")
    loaded, store = loaded_and_store(builders, tmp_path, with_(source={"type": "clone", "vm": "sis01",
                                                                        "snapshot": "weekly"}))
    vc = install(monkeypatch, world)
    result = vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store))
    assert result.status is Status.FAILED and str(result_missing) in result.reason
    assert vc.clone.call_count == 0


def test_register_measures_rpo_from_the_vmx_file(builders, tmp_path, monkeypatch):
    test = with_(source={"type": "register", "vmx": "[LocalDS_0] exports/sis01/sis01.vmx"})
    result, vc, _ = run_test(builders, tmp_path, monkeypatch, World(), test)
    assert result.status is Status.PASSED, result.reason
    assert result.point_time == NOW - timedelta(hours=3) and result.rpo_source == "restore_point"
    assert result.details["vm"] == "sis01" and result.details["vm_uuid"] == "4210-uuid-sis01"
    vc.register.assert_called_once()


def test_adopt_takes_the_newest_match_and_counts_rto_from_its_creation(builders, tmp_path, monkeypatch):
    world = World()
    world.adoptable = [("sis01-restored", NOW - timedelta(minutes=20)), ("sis01-old", NOW - timedelta(days=2)),
                       ("other", NOW)]
    test = with_(source={"type": "adopt", "name": "sis01-*"})
    result, vc, _ = run_test(builders, tmp_path, monkeypatch, world, test)
    assert result.status is Status.PASSED, result.reason
    assert result.details["vm"] == "sis01-restored"
    vc.rename.assert_called_once_with("vm-sis01-restored", result.details["sandbox_vm"])
    assert result.rto_seconds >= 20 * 60
    assert result.rpo_seconds is None and result.details["rpo"].startswith("unknown")
    assert world.destroyed == [result.details["sandbox_vm"]]


def test_nothing_to_adopt_is_an_error(builders, tmp_path, monkeypatch):
    result, vc, _ = run_test(builders, tmp_path, monkeypatch, World(), with_(source={"type": "adopt", "name": "x*"}))
    assert result.status is Status.ERROR and "nothing to adopt" in result.reason
    assert vc.rename.call_count == 0


def test_cleanup_destroys_the_leased_vm_and_succeeds_when_it_is_gone(builders, tmp_path, monkeypatch):
    loaded, _ = loaded_and_store(builders, tmp_path)
    world = World()
    world.existing["drcheck-vm-sis-20261123T120000Z"] = "leftover"
    install(monkeypatch, world)
    lease = {"resource": "vc/drcheck-vm-sis-20261123T120000Z"}
    vm.cleanup(lease, loaded)
    assert world.destroyed == ["drcheck-vm-sis-20261123T120000Z"]
    vm.cleanup(lease, loaded)  # already gone: a success
    with pytest.raises(ValueError, match="does not name a drcheck sandbox VM"):
        vm.cleanup({"resource": "vc/sis01"}, loaded)
    with pytest.raises(LookupError, match="no vmware probe gone is configured"):
        vm.cleanup({"resource": "gone/drcheck-x"}, loaded)


def test_a_test_waits_for_a_free_vm_test_slot_and_says_so(builders, tmp_path, monkeypatch):
    import threading

    from drcheck import locks

    loaded, store = loaded_and_store(builders, tmp_path)
    install(monkeypatch, World())
    held, waited, phases = threading.Event(), threading.Event(), []

    def elsewhere():  # max_vm_tests = 1: another test holds the vCenter's only slot until ours waits
        with locks.slot(loaded.config.agent.state_dir, "vm-tests.vc", 1):
            held.set()
            waited.wait(5)
            time.sleep(0.1)

    def progress(phase, *rest):
        phases.append(phase)
        if phase.startswith("waiting"):
            waited.set()

    holder = threading.Thread(target=elsewhere)
    holder.start()
    held.wait(5)
    result = vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store, progress=progress))
    holder.join()
    assert phases[0].startswith("waiting for a VM test slot on vc (1 of 1 in use by pid")
    assert result.status is Status.PASSED
    start, end = result.details["phases"]["wait-slot"]
    assert end - start >= 0.1
