"""The `veeam-instant` source of the `vm` restore test against a fake vCenter and the fake
Veeam REST API: the lease is committed before the mount starts, the newest clean point is
published powered off into the sandbox, fenced, booted, timed from the mount start and
unmounted in `finally`; refusals; a mount Veeam cannot remove keeps its lease; the
reaper's handler."""

from __future__ import annotations

import copy
from datetime import timedelta
from types import SimpleNamespace

import pytest

from drcheck.clients import SourceError
from drcheck.config_loader import ConfigError, load
from drcheck.context import RunContext
from drcheck.results import Status
from drcheck.restore_tests import vm, vm_veeam, vm_verify
from drcheck.store import Store
from tests.unit.test_veeam_fakes import NOW, VEEAM_PROBE, FakeVeeam
from tests.unit.test_veeam_fakes import install as install_veeam
from tests.unit.test_vm_fakes import ISOLATED, World
from tests.unit.test_vm_fakes import install as install_vcenter

SOURCE = {"type": "veeam-instant", "probe": "veeam", "vm": "sis01"}


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(vm_verify, "BOOT_POLL", (0.01, 0.05))
    monkeypatch.setattr("drcheck.clients.veeam.SESSION_POLL", (0.0, 0.0))


def config(builders, directory, **source) -> tuple:
    cfg = builders.valid_config()
    cfg["agent"]["state_dir"] = str(directory / "state")
    cfg["agent"]["sandbox_root"] = str(directory / "state" / "sandbox")
    cfg["probes"]["vc"] = {"kind": "vmware", "url": "https://127.0.0.1:8989/sdk", "username": "drcheck",
                           "password": {"env": "VC_PASSWORD"}, "max_vm_tests": 1}
    cfg["probes"]["veeam"] = copy.deepcopy(VEEAM_PROBE)
    cfg["restore_tests"]["vm-sis"] = {
        "kind": "vm", "probe": "vc", "system": "sis", "source": {**SOURCE, **source},
        "sandbox": {"folder": "DC0/vm/drcheck-sandbox", "network": "drcheck-isolated"}, "boot_timeout": "2s"}
    loaded = load(builders.write_config(directory, cfg))
    return loaded, Store(loaded.database_path)


class Lab:
    """A fake vCenter and a fake Veeam that publishes VMs into it."""

    def __init__(self, monkeypatch):
        self.world = World()
        self.vc = install_vcenter(monkeypatch, self.world)
        self.vc.endpoint = SimpleNamespace(host="vcenter.example", url="https://127.0.0.1:8989/sdk")
        self.vc.props.side_effect = lambda obj, *paths: {"name": f"name-of-{obj}"}
        self.veeam = FakeVeeam()
        self.veeam.job("SIS nightly")
        self.veeam.job("SIS offsite", type="BackupCopy")
        self.clean = self.veeam.point("SIS nightly", "sis01", timedelta(hours=6))
        self.older = self.veeam.point("SIS nightly", "sis01", timedelta(hours=30))
        self.offsite = self.veeam.point("SIS offsite", "sis01", timedelta(hours=9))
        self.veeam.on_start = lambda body: self.world.existing.update(
            {body["destination"]["restoredVmName"]: "published-vm"})
        self.veeam.on_unmount = lambda name: self.world.existing.pop(name, None)
        install_veeam(monkeypatch, self.veeam)

    def run(self, loaded, store):
        return vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store))


@pytest.fixture
def lab(monkeypatch) -> Lab:
    return Lab(monkeypatch)


def test_the_newest_clean_point_is_published_fenced_booted_timed_and_unmounted(builders, tmp_path, lab):
    loaded, store = config(builders, tmp_path)
    leases_at_start = []
    lab.veeam.on_start = lambda body: (leases_at_start.extend(store.open_leases()),
                                       lab.world.existing.update({body["destination"]["restoredVmName"]: "vm-h"}))
    result = lab.run(loaded, store)
    assert result.status is Status.PASSED, result.reason
    name = result.details["sandbox_vm"]
    # leased before the mount started, released once it was unmounted
    assert [(x["kind"], x["resource"], x["handler"]) for x in leases_at_start] == [
        ("veeam-instant", f"veeam/{name}", "drcheck.restore_tests.vm_veeam")]
    assert store.open_leases() == [] and result.sandbox == f"veeam/{name}"
    (body,) = lab.veeam.started
    assert body["restorePointId"] == lab.clean and body["type"] == "Customized"
    assert body["powerUp"] is False and body["nicsEnabled"] is True
    assert body["destination"]["restoredVmName"] == name
    assert body["destination"]["folder"] == {"platform": "VMware", "hostName": "vcenter.example",
                                             "name": "name-of-folder-handle", "type": "Folder",
                                             "objectId": "folder-handle"}
    assert body["datastore"] == {"redirectEnabled": False}
    # fenced before power-on; Veeam removed the VM (no vCenter destroy)
    assert all(n.network_key == ISOLATED.key for n in lab.world.nics)
    assert lab.world.powered_on == ["vm-h"] and lab.vc.destroy.call_count == 0
    assert lab.veeam.mounts == {} and name not in lab.world.existing
    assert result.point_id == lab.clean and result.copy == "local"
    assert result.point_time.replace(microsecond=0) == NOW - timedelta(hours=6)
    assert result.rto_seconds > 0 and result.rto_seconds == pytest.approx(result.restore_seconds
                                                                          + result.verify_seconds, abs=0.01)
    assert result.details["restore"].startswith(f"Veeam instant recovery of sis01 from restore point {lab.clean}")
    assert {"restore", "fence", "boot", "cleanup"} <= set(result.details["phases"])


def test_an_infected_newest_point_is_skipped_for_the_clean_one(builders, tmp_path, lab):
    lab.veeam.point("SIS nightly", "sis01", timedelta(hours=1), malware="Infected")
    loaded, store = config(builders, tmp_path)
    result = lab.run(loaded, store)
    assert result.status is Status.PASSED and result.point_id == lab.clean


def test_a_named_infected_point_is_refused_and_nothing_is_mounted(builders, tmp_path, lab):
    bad = lab.veeam.point("SIS nightly", "sis01", timedelta(hours=1), malware="Suspicious")
    loaded, store = config(builders, tmp_path, restore_point=bad)
    result = lab.run(loaded, store)
    assert result.status is Status.FAILED
    assert f"Veeam marks restore point {bad} of VM sis01 as Suspicious: drcheck does not restore it" in result.reason
    assert lab.veeam.started == [] and store.open_leases() == []


@pytest.mark.parametrize("source, words", [
    ({"vm": "sis02"}, "Veeam has no clean restore point of VM sis02 in local: nothing to restore"),
    ({"restore_point": "0000"}, "Veeam has no restore point 0000 of VM sis01"),
])
def test_a_missing_point_fails_and_mounts_nothing(builders, tmp_path, lab, source, words):
    loaded, store = config(builders, tmp_path, **source)
    result = lab.run(loaded, store)
    assert result.status is Status.FAILED and words in result.reason
    assert lab.veeam.started == []


def test_the_offsite_copy_can_be_proven(builders, tmp_path, lab):
    loaded, store = config(builders, tmp_path, copy="offsite")
    result = lab.run(loaded, store)
    assert result.status is Status.PASSED, result.reason
    assert result.point_id == lab.offsite and result.copy == "offsite"


def test_a_mount_veeam_fails_is_an_error_with_its_message_and_is_removed(builders, tmp_path, lab):
    lab.veeam.mount_error = "Failed to publish VM: vPower NFS datastore is not mounted on DC0_H0"
    lab.veeam.on_start = None
    loaded, store = config(builders, tmp_path)
    result = lab.run(loaded, store)
    assert result.status is Status.ERROR
    assert "instant recovery of drcheck-vm-sis-" in result.reason and "vPower NFS datastore is not mounted" \
        in result.reason
    assert lab.world.powered_on == [] and lab.veeam.mounts == {} and store.open_leases() == []


def test_a_mount_veeam_cannot_remove_keeps_its_lease_for_the_reaper(builders, tmp_path, lab):
    lab.veeam.unmount_error = (500, "InternalError", "The Veeam Backup Service is stopping.")
    loaded, store = config(builders, tmp_path)
    result = lab.run(loaded, store)
    assert result.status is Status.ERROR
    assert f"sandbox VM {result.details['sandbox_vm']} was left behind (its lease is kept" in result.reason
    assert "The Veeam Backup Service is stopping." in result.reason
    (lease,) = store.open_leases()
    assert lease["kind"] == "veeam-instant" and lease["attempts"] == 1

    lab.veeam.unmount_error = None
    vm_veeam.cleanup(lease, loaded)
    assert lab.veeam.mounts == {} and result.details["sandbox_vm"] not in lab.world.existing
    vm_veeam.cleanup(lease, loaded)  # nothing left: a success


def test_the_reaper_handler_refuses_what_is_not_drchecks_and_raises_while_veeam_is_down(builders, tmp_path, lab):
    loaded, _ = config(builders, tmp_path)
    with pytest.raises(ValueError, match="does not name a drcheck sandbox VM"):
        vm_veeam.cleanup({"resource": "veeam/sis01"}, loaded)
    with pytest.raises(LookupError, match="no veeam probe gone is configured"):
        vm_veeam.cleanup({"resource": "gone/drcheck-x"}, loaded)
    lab.veeam.down = True
    with pytest.raises(SourceError, match="unreachable"):
        vm_veeam.cleanup({"resource": "veeam/drcheck-vm-sis-20261123T120000Z"}, loaded)


def test_a_source_naming_no_veeam_probe_is_an_error_when_run(builders, tmp_path, lab):
    loaded, store = config(builders, tmp_path, probe="vc")
    result = lab.run(loaded, store)
    assert result.status is Status.ERROR
    assert "source.probe: probe 'vc' is a vmware probe; veeam-instant needs a veeam probe" in result.reason


def test_the_source_checks_its_references(builders, tmp_path):
    loaded, _ = config(builders, tmp_path)
    source = loaded.config.restore_tests["vm-sis"].source
    assert source.references(loaded) == []
    assert source.model_copy(update={"copy": "tape"}).references(loaded) == [
        ("copy", "'tape' is not a copy of probe veeam (its copies: local, offsite)")]
    assert source.model_copy(update={"probe": "nope"}).references(loaded) == [
        ("probe", "unknown probe 'nope' (veeam probes: veeam)")]
    with pytest.raises(ConfigError, match="mount_timeout"):
        config(builders, tmp_path, mount_timeout="soon")


def test_the_tests_own_copy_key_chooses_the_copy_when_the_source_names_none(builders, tmp_path, lab):
    loaded, store = config(builders, tmp_path)
    test = loaded.config.restore_tests["vm-sis"].model_copy(update={"copy": "offsite"})
    loaded.config.restore_tests["vm-sis"] = test
    result = lab.run(loaded, store)
    assert result.status is Status.PASSED, result.reason
    assert result.point_id == lab.offsite and result.copy == "offsite"
