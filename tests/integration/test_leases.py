"""Leases of any resource kind: taken before the resource exists, cleaned by the module the
lease names (even for kinds no longer configured), kept with attempts/last_error while
cleanup fails, and visible in metrics."""

from __future__ import annotations

import sys
import types

import pytest

from drcheck.engine import reap_orphans
from drcheck.metrics import registry_for
from drcheck.store import LeaseConflict

DEAD_PID = 2**22 + 7  # above pid_max: never a live process


@pytest.fixture
def fake_vm_handler(monkeypatch):
    """A lease handler module for a made-up kind, importable as drcheck.fake_vm_leases:
    its cleanup fails while `peer_down` is set, and records what it removed."""
    module = types.ModuleType("drcheck.fake_vm_leases")
    module.peer_down = True
    module.removed = []

    def cleanup(lease, loaded):
        assert loaded is not None
        if module.peer_down:
            raise ConnectionError("vCenter unreachable")
        module.removed.append(lease["resource"])

    module.cleanup = cleanup
    monkeypatch.setitem(sys.modules, "drcheck.fake_vm_leases", module)
    return module


def _crash(store, lease_id):
    store.db.conn.execute("UPDATE leases SET pid = ? WHERE id = ?", [DEAD_PID, lease_id])
    store.db.conn.commit()


def _gauge(loaded, name, kind):
    for family in registry_for(loaded).collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("kind") == kind:
                return sample.value
    return 0


def test_failed_cleanup_keeps_the_lease_then_a_later_reap_releases_it(loaded, store, fake_vm_handler):
    assert "vm" not in {t.kind for t in loaded.config.restore_tests.values()}  # a kind nobody configures
    lease = store.take_lease("vm", "vm-4203-clone", "sis-vm-boot", "drcheck.fake_vm_leases")
    _crash(store, lease)
    assert _gauge(loaded, "drcheck_leases_open", "vm") == 1

    assert reap_orphans(loaded, store) == []
    (row,) = store.open_leases()
    assert row["attempts"] == 1 and "vCenter unreachable" in row["last_error"]
    assert _gauge(loaded, "drcheck_leases_uncleaned", "vm") == 1
    assert reap_orphans(loaded, store) == []
    assert store.open_leases()[0]["attempts"] == 2
    (interrupted,) = store.query("SELECT * FROM restore_tests")  # the dead run is recorded once
    assert interrupted["test"] == "sis-vm-boot" and "could not be removed yet" in interrupted["reason"]

    fake_vm_handler.peer_down = False
    (reaped,) = reap_orphans(loaded, store)
    assert fake_vm_handler.removed == ["vm-4203-clone"]
    assert (reaped["owner"], reaped["test"], reaped["resource"], reaped["path"], reaped["pid"]) == (
        "sis-vm-boot", "sis-vm-boot", "vm-4203-clone", "vm-4203-clone", DEAD_PID)
    assert reaped["created_at"]
    assert store.open_leases() == []
    (row,) = store.query("SELECT * FROM leases")
    assert row["release_note"].startswith("reaped") and "2 failed attempts" in row["release_note"]
    assert len(store.query("SELECT * FROM restore_tests")) == 1
    assert _gauge(loaded, "drcheck_leases_open", "vm") == 0 and _gauge(loaded, "drcheck_leases_uncleaned", "vm") == 0


def test_a_dead_runs_sandbox_directory_is_removed_and_its_test_recorded(loaded, store):
    root = loaded.config.agent.sandbox_root
    leftover = root / "sis-files-crashed"
    lease = store.take_lease("directory", leftover, "sis-files", "drcheck.sandbox")
    (leftover / "srv").mkdir(parents=True)
    (leftover / "srv" / "data").write_text("restored")
    _crash(store, lease)
    (reaped,) = reap_orphans(loaded, store)
    assert reaped["path"] == str(leftover) and not leftover.exists()
    (test,) = store.latest_restore_tests()
    assert test["status"] == "error" and test["sandbox"] == str(leftover) and "was removed" in test["reason"]


def test_a_directory_outside_the_sandbox_root_is_never_removed(loaded, store, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    lease = store.take_lease("directory", precious, "sis-files", "drcheck.sandbox")
    _crash(store, lease)
    assert reap_orphans(loaded, store) == []
    assert precious.exists()
    assert "not inside the sandbox root" in store.open_leases()[0]["last_error"]


def test_only_modules_under_drcheck_are_handlers(loaded, store):
    with pytest.raises(ValueError, match="not a module under drcheck"):
        store.take_lease("directory", "/x", "t", "shutil")
    store.db.conn.execute("INSERT INTO leases (kind, resource, handler, owner, pid, host, created_at) "
                          "VALUES ('evil', '/', 'os', 't', ?, ?, '2026-01-01T00:00:00+00:00')",
                          [DEAD_PID, __import__("socket").gethostname()])
    store.db.conn.commit()
    assert reap_orphans(loaded, store) == []
    assert "not a module under drcheck" in store.open_leases()[0]["last_error"]


def test_a_live_owner_holds_any_kind_and_a_dead_ones_lease_is_superseded(store, fake_vm_handler):
    first = store.take_lease("vm", "clone-1", "a", "drcheck.fake_vm_leases")
    with pytest.raises(LeaseConflict, match="in use by a"):
        store.take_lease("vm", "clone-1", "b", "drcheck.fake_vm_leases")
    store.take_lease("directory", "clone-1", "b", "drcheck.sandbox")  # another kind: another resource
    _crash(store, first)
    second = store.take_lease("vm", "clone-1", "b", "drcheck.fake_vm_leases")
    rows = {r["id"]: r for r in store.query("SELECT * FROM leases")}
    assert rows[first]["release_note"].startswith("superseded") and rows[second]["released_at"] is None
    assert store.orphaned_leases() == []
