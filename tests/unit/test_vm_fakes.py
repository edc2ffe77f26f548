"""A stand-in for the vCenter boundary (`drcheck.clients.vsphere_vm.VCenter`, autospecced
so a call the client does not offer fails) holding a little state: NICs that move when
`move_nics` is called, a guest that boots after N polls, VMs that exist until destroyed.
Also a config with a vmware probe and a `vm` restore test, loaded for real."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest.mock import create_autospec

from drcheck.clients import vsphere_vm
from drcheck.clients.vsphere_vm import (
    Compute, DatastoreSpace, Guest, HostMemory, Network, Nic, Snapshot, VCenter, VmFacts)
from drcheck.config_loader import load
from drcheck.store import Store

GIB = 1024**3
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
ISOLATED = Network("drcheck-isolated", "network-iso", "standard", object())
PRODUCTION = Network("VM Network", "network-7", "standard", object())


class World:
    """What the fake vCenter knows. Tweak attributes before the test runs."""

    def __init__(self):
        self.nics = [Nic(4000, "Network adapter 1", PRODUCTION.key, True, True)]
        self.move_keeps = False  # True: a reconfigure that leaves the NICs where they were
        self.boot_after = 1  # polls of the guest until it has booted (None: never)
        self.polls = 0
        self.powered_on: list[str] = []
        self.existing: dict[str, str] = {}  # name -> handle
        self.destroyed: list[str] = []
        self.uplinks: list[str] = []
        self.free_bytes = 50 * GIB
        self.host_free_mb = 8000
        self.exit_code = 0
        self.login_ok = True
        self.snapshot_time = NOW - timedelta(hours=6)
        self.task_started = NOW - timedelta(seconds=30)
        self.on_clone = None  # called with the world when the clone task runs
        self.destroy_error: Exception | None = None
        self.adoptable: list[tuple[str, datetime]] = []


def fake_vcenter(world: World) -> VCenter:
    vc = create_autospec(VCenter, instance=True)
    vc.server_time.return_value = NOW
    vc.find.return_value = "folder-handle"
    vc.networks.return_value = [ISOLATED, PRODUCTION]
    vc.uplinks.side_effect = lambda network, hosts=(): list(world.uplinks)
    vc.vm.side_effect = lambda ref: "source-vm"
    vc.facts.side_effect = lambda vm: VmFacts("sis01" if vm == "source-vm" else str(vm), "4210-uuid-sis01", 256,
                                              GIB, ("LocalDS_0",), "poweredOff", "pool", vm)
    vc.snapshots.side_effect = lambda vm: [Snapshot("nightly", world.snapshot_time, "snap")]
    vc.path_of.return_value = "/DC0/vm/Production/sis01"
    vc.datastore.return_value = "ds-handle"
    vc.pool_compute.return_value = Compute("pool", ("host",))
    vc.first_compute.return_value = Compute("pool", ("host",))
    vc.datastore_space.side_effect = lambda ds: DatastoreSpace("LocalDS_0", 100 * GIB, world.free_bytes, True)
    vc.host_memory.side_effect = lambda compute: [HostMemory("DC0_H0", world.host_free_mb, True)]
    vc.file_mtime.return_value = NOW - timedelta(hours=3)
    vc.children.side_effect = lambda folder: [(f"vm-{n}", n) for n, _ in world.adoptable]
    vc.creation_time.side_effect = lambda vm: dict((f"vm-{n}", t) for n, t in world.adoptable)[vm]

    def created(name):
        world.existing[name] = f"handle-{name}"
        return f"task-{name}"

    def clone(vm, snapshot, folder, name, pool, datastore):
        if world.on_clone:
            world.on_clone(world)
        return created(name)

    vc.clone.side_effect = clone
    vc.register.side_effect = lambda folder, vmx, name, compute: created(name)

    def rename(vm, name):
        world.existing[name] = vm
        return "rename-task"

    vc.rename.side_effect = rename
    vc.wait.side_effect = lambda task, what, timeout=None: (
        world.existing[task[5:]] if isinstance(task, str) and task.startswith("task-") else None)
    vc.task_started.side_effect = lambda task: world.task_started
    vc.nics.side_effect = lambda vm: list(world.nics)

    def move(vm, keys, network):
        if not world.move_keeps:
            world.nics = [Nic(n.device_key, n.label, network.key if n.device_key in keys else n.network_key,
                              n.connected, n.start_connected) for n in world.nics]

    vc.move_nics.side_effect = move
    vc.power_on.side_effect = lambda vm: world.powered_on.append(vm)

    def guest(vm):
        world.polls += 1
        up = world.boot_after is not None and world.polls >= world.boot_after
        return Guest("poweredOn", "guestToolsRunning" if up else "guestToolsNotRunning",
                     "green" if up else "gray", "10.0.0.5" if up else None)

    vc.guest.side_effect = guest

    def run_in_guest(vm, user, password, program, arguments, timeout):
        if not world.login_ok:
            raise vsphere_vm.GuestLoginRefused(f"the guest refused the login of {user!r}")
        return world.exit_code

    vc.run_in_guest.side_effect = run_in_guest

    def screenshot(vm, datacenter, dest: Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(b"\x89PNG")
        return dest

    vc.screenshot.side_effect = screenshot
    vc.vms_named.side_effect = lambda name: [world.existing[name]] if name in world.existing else []

    def destroy(vm):
        if world.destroy_error is not None:
            raise world.destroy_error
        name = next(n for n, h in world.existing.items() if h == vm)
        del world.existing[name]
        world.destroyed.append(name)

    vc.destroy.side_effect = destroy
    return vc


def install(monkeypatch, world: World) -> VCenter:
    """Make every `vsphere_vm.session` yield one fake vCenter over `world`; return it."""
    vc = fake_vcenter(world)

    @contextmanager
    def session(endpoint):
        yield vc

    monkeypatch.setattr(vsphere_vm, "session", session)
    return vc


VM_TEST = {
    "kind": "vm", "probe": "vc", "system": "sis",
    "source": {"type": "clone", "vm": "sis01"},
    "sandbox": {"folder": "DC0/vm/drcheck-sandbox", "network": "drcheck-isolated"},
    "boot_timeout": "2s",
}


def vm_config(builders, directory: Path, test: dict | None = None, **tests) -> Path:
    """Write the builders' valid config plus a vmware probe `vc` and vm test(s) (`vm-sis`
    by default); return drcheck.toml's path."""
    config = builders.valid_config()
    config["agent"]["state_dir"] = str(directory / "state")
    config["agent"]["sandbox_root"] = str(directory / "state" / "sandbox")
    config["probes"]["vc"] = {"kind": "vmware", "url": "https://127.0.0.1:8989/sdk", "username": "drcheck",
                              "password": {"env": "VC_PASSWORD"}, "max_vm_tests": 1}
    config["restore_tests"].update(tests or {"vm-sis": copy.deepcopy(test or VM_TEST)})
    return builders.write_config(directory, config)


def loaded_and_store(builders, directory: Path, test: dict | None = None, **tests):
    loaded = load(vm_config(builders, directory, test, **tests))
    return loaded, Store(loaded.database_path)


def test_the_fake_offers_only_what_the_client_offers():
    import pytest

    vc = fake_vcenter(World())
    with pytest.raises(AttributeError):
        vc.delete_everything()
    with pytest.raises(TypeError):
        vc.power_on()  # the real signature takes the VM
