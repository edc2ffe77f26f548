"""VM operations for the `vm` restore test: find a VM, its snapshots, its creation event
and a backup's files; clone, register, rename, reconfigure NICs, power on and off,
destroy. `VCenter` also mixes in the sandbox reads (datastores, networks and their
uplinks, compute, host memory: `vsphere_vm_sandbox`) and the guest (state, guest programs,
screenshots: `vsphere_vm_guest`). Every read is one `RetrievePropertiesEx` of the
properties needed, never attribute-by-attribute reads.

Values handed back are plain dataclasses; vSphere objects travel as opaque handles the
caller only passes back. Every failure is a `VSphereError` (ERROR); `Missing` (a
restore point that is not there: no snapshot, no .vmx) has `damaged=True` (FAILED).
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from drcheck.clients.vsphere import Endpoint, VSphereError, api_errors, connect
from drcheck.clients.vsphere_vm_guest import DATASTORE_PATH, Guest, GuestLoginRefused, GuestOps, NotOffered
from drcheck.clients.vsphere_vm_sandbox import Compute, DatastoreSpace, HostMemory, Network, SandboxReads

log = logging.getLogger(__name__)

__all__ = ["VCenter", "session", "Missing", "GuestLoginRefused", "NotOffered", "Snapshot", "Nic", "VmFacts", "Guest",
           "Network", "Compute", "HostMemory", "DatastoreSpace", "VSphereError"]

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TASK_POLL = (0.05, 1.0)  # first and longest pause between polls of a running task (seconds)


class Missing(VSphereError):
    """What should be restored is not there (no such snapshot, file or VM): FAILED."""

    def __init__(self, reason: str):
        super().__init__(reason, damaged=True)


@dataclass(frozen=True)
class Snapshot:
    name: str
    created: datetime
    handle: Any = field(compare=False, repr=False)


@dataclass(frozen=True)
class Nic:
    device_key: int
    label: str
    network_key: str | None
    connected: bool
    start_connected: bool


@dataclass(frozen=True)
class VmFacts:
    name: str
    uuid: str
    memory_mb: int
    committed: int
    datastores: tuple[str, ...]
    power_state: str
    pool: Any = field(repr=False)
    handle: Any = field(repr=False)


@contextmanager
def session(endpoint: Endpoint) -> Iterator["VCenter"]:
    """A logged-in `VCenter`, logged out on exit (see drcheck.clients.vsphere.connect)."""
    with connect(endpoint) as instance:
        yield VCenter(instance, endpoint)


class VCenter(SandboxReads, GuestOps):
    """VM operations over one session. Each method raises VSphereError (or a subclass)."""

    def __init__(self, instance: Any, endpoint: Endpoint):
        self.si, self.endpoint = instance, endpoint
        with self._api("read the service content"):
            self.content = instance.RetrieveContent()

    def _api(self, what: str):
        return api_errors(self.endpoint, what)

    # -- reads ------------------------------------------------------------------------

    def props(self, obj: Any, *paths: str) -> dict[str, Any]:
        """The properties `paths` of `obj` in one call (unset ones are absent)."""
        return self.props_of([obj], *paths)[0]

    def props_of(self, objs: list, *paths: str) -> list[dict[str, Any]]:
        """The properties `paths` of each object, in one call, in `objs` order."""
        from pyVmomi import vmodl

        if not objs:
            return []
        pc = vmodl.query.PropertyCollector
        types = list(dict.fromkeys(type(o) for o in objs))
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=o, skip=False) for o in objs],
                             propSet=[pc.PropertySpec(type=t, pathSet=list(paths)) for t in types])
        found: dict[str, dict[str, Any]] = {}
        with self._api(f"read {', '.join(paths)}"):
            page = self.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
            while page is not None:
                for item in page.objects:
                    found[item.obj._moId] = {p.name: p.val for p in item.propSet}
                if not page.token:
                    break
                page = self.content.propertyCollector.ContinueRetrievePropertiesEx(page.token)
        return [found.get(o._moId, {}) for o in objs]

    def server_time(self) -> datetime:
        with self._api("read the server clock"):
            return self.si.CurrentTime()

    def find(self, path: str) -> Any | None:
        """The entity at inventory path `path` ("DC0/vm/Folder/name"), or None."""
        with self._api(f"find {path}"):
            return self.content.searchIndex.FindByInventoryPath(path.strip("/"))

    def vms_named(self, name: str) -> list[Any]:
        """Every VM (or template) named exactly `name`."""
        from pyVmomi import vim

        with self._api("list VMs"):
            view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.VirtualMachine], True)
            try:
                handles = list(view.view)
            finally:
                view.DestroyView()
        return [h for h, p in zip(handles, self.props_of(handles, "name"), strict=True) if p.get("name") == name]

    def vm(self, ref: str) -> Any:
        """The VM `ref` names: an inventory path, an instance UUID or a unique name.
        Raise Missing when there is none, VSphereError when a name is ambiguous."""
        if UUID.match(ref):
            with self._api(f"find VM {ref}"):
                found = self.content.searchIndex.FindByUuid(None, ref, True, True)
            found = [found] if found is not None else []
        elif "/" in ref:
            found = [f for f in [self.find(ref)] if f is not None]
        else:
            found = self.vms_named(ref)
        if not found:
            raise Missing(f"no VM {ref} in vCenter {self.endpoint.url}")
        if len(found) > 1:
            raise VSphereError(f"{len(found)} VMs are named {ref}; give its inventory path")
        return found[0]

    def facts(self, vm: Any) -> VmFacts:
        p = self.props(vm, "name", "config.instanceUuid", "config.hardware.memoryMB", "summary.storage.committed",
                       "datastore", "runtime.powerState", "resourcePool")
        names = [d.get("name", "?") for d in self.props_of(list(p.get("datastore") or []), "name")]
        return VmFacts(p.get("name", "?"), p.get("config.instanceUuid") or "", int(p.get("config.hardware.memoryMB") or 0),
                       int(p.get("summary.storage.committed") or 0), tuple(names), str(p.get("runtime.powerState")),
                       p.get("resourcePool"), vm)

    def path_of(self, entity: Any) -> str:
        """The inventory path of `entity` ("/DC0/vm/Folder/name")."""
        parts = []
        while entity is not None:
            p = self.props(entity, "name", "parent")
            parts.append(p.get("name", "?"))
            entity = p.get("parent")
        return "/" + "/".join(reversed(parts[:-1]))  # the root folder has no place in paths

    def snapshots(self, vm: Any) -> list[Snapshot]:
        """Every snapshot of `vm`, oldest first."""
        info = self.props(vm, "snapshot").get("snapshot")
        found, todo = [], list(info.rootSnapshotList) if info else []
        while todo:
            tree = todo.pop()
            found.append(Snapshot(tree.name, tree.createTime, tree.snapshot))
            todo.extend(tree.childSnapshotList or [])
        return sorted(found, key=lambda s: s.created)

    def children(self, folder: Any) -> list[tuple[Any, str]]:
        """(handle, name) of each VM directly in `folder`."""
        from pyVmomi import vim

        vms = [c for c in self.props(folder, "childEntity").get("childEntity") or [] if isinstance(c, vim.VirtualMachine)]
        return [(vm, p.get("name", "?")) for vm, p in zip(vms, self.props_of(vms, "name"), strict=True)]

    def creation_time(self, vm: Any) -> datetime | None:
        """When vCenter created (deployed, cloned or registered) `vm`, from its events."""
        from pyVmomi import vim

        spec = vim.event.EventFilterSpec(
            entity=vim.event.EventFilterSpec.ByEntity(entity=vm, recursion="self"),
            eventTypeId=["VmCreatedEvent", "VmClonedEvent", "VmRegisteredEvent", "VmDeployedEvent"])
        with self._api("read the VM's events"):
            events = self.content.eventManager.QueryEvents(spec)
        return max((e.createdTime for e in events or []), default=None)

    def file_mtime(self, datacenter: str, datastore_path: str) -> datetime:
        """The modification time of a datastore file; raise Missing when it is not there."""
        from pyVmomi import vim

        match = DATASTORE_PATH.match(datastore_path)
        if not match:
            raise VSphereError(f"{datastore_path!r} is not a datastore path ('[datastore] dir/file')")
        directory, _, name = match["path"].rpartition("/")
        ds = self.datastore(datacenter, match["ds"])
        browser = self.props(ds, "browser")["browser"]
        spec = vim.host.DatastoreBrowser.SearchSpec(
            matchPattern=[name], details=vim.host.DatastoreBrowser.FileInfo.Details(modification=True, fileSize=True))
        try:
            with self._api(f"look for {datastore_path}"):
                task = browser.SearchDatastore_Task(datastorePath=f"[{match['ds']}] {directory}", searchSpec=spec)
            result = self.wait(task, f"look for {datastore_path}")
        except VSphereError as exc:
            if "FileNotFound" in str(exc):
                raise Missing(f"{datastore_path} is not on the datastore") from None
            raise
        files = [f for f in (result.file if result else []) or [] if f.path == name]
        if not files:
            raise Missing(f"{datastore_path} is not on the datastore")
        return files[0].modification

    # -- changes ------------------------------------------------------------------------

    def clone(self, vm: Any, snapshot: Snapshot, folder: Any, name: str, pool: Any, datastore: Any | None) -> Any:
        """Start a linked clone of `vm` at `snapshot`, powered off; return its task."""
        from pyVmomi import vim

        location = vim.vm.RelocateSpec(pool=pool, datastore=datastore, diskMoveType="createNewChildDiskBacking")
        spec = vim.vm.CloneSpec(location=location, snapshot=snapshot.handle, powerOn=False, template=False)
        with self._api(f"clone {name}"):
            return vm.CloneVM_Task(folder=folder, name=name, spec=spec)

    def register(self, folder: Any, vmx: str, name: str, compute: Compute) -> Any:
        """Start registering the VM whose files are at `vmx` as `name`; return its task."""
        with self._api(f"register {vmx}"):
            return folder.RegisterVM_Task(path=vmx, name=name, asTemplate=False, pool=compute.pool,
                                          host=compute.hosts[0] if len(compute.hosts) == 1 else None)

    def rename(self, vm: Any, name: str) -> Any:
        with self._api(f"rename to {name}"):
            return vm.Rename_Task(newName=name)

    def task_started(self, task: Any) -> datetime | None:
        """When vCenter started `task` (its clock)."""
        info = self.props(task, "info").get("info")
        return info.startTime or info.queueTime if info else None

    def wait(self, task: Any, what: str, timeout: float | None = None) -> Any:
        """Wait for `task` to end; return its result; raise VSphereError when it failed
        or is still running after `timeout` seconds."""
        pause, limit = TASK_POLL[0], time.monotonic() + timeout if timeout else None
        while True:
            info = self.props(task, "info")["info"]
            if info.state == "success":
                return info.result
            if info.state == "error":
                fault = info.error
                raise VSphereError(f"vCenter {self.endpoint.url}: {what}: {type(fault).__name__.rpartition('.')[2]}: "
                                   f"{getattr(fault, 'msg', None) or 'failed'}")
            if limit is not None and time.monotonic() > limit:
                raise VSphereError(f"vCenter {self.endpoint.url}: {what}: still running after {timeout:.0f}s")
            time.sleep(pause)
            pause = min(pause * 2, TASK_POLL[1])

    def nics(self, vm: Any) -> list[Nic]:
        """The network adapters of `vm` as they are configured now."""
        return [_nic(d) for d in self._ethernet(vm)]

    def move_nics(self, vm: Any, device_keys: list[int], network: Network) -> None:
        """Put the NICs `device_keys` of `vm` on `network` (one reconfigure task)."""
        from pyVmomi import vim

        card = vim.vm.device.VirtualEthernetCard
        changes = []
        for device in self._ethernet(vm):
            if device.key not in device_keys:
                continue
            if network.kind == "distributed":
                device.backing = card.DistributedVirtualPortBackingInfo(
                    port=vim.dvs.PortConnection(switchUuid=network.switch_uuid, portgroupKey=network.key))
            else:
                device.backing = card.NetworkBackingInfo(network=network.handle, deviceName=network.name)
            changes.append(vim.vm.device.VirtualDeviceSpec(operation="edit", device=device))
        with self._api("reconfigure the NICs"):
            task = vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes))
        self.wait(task, "reconfigure the NICs")

    def power_on(self, vm: Any) -> None:
        with self._api("power on"):
            task = vm.PowerOnVM_Task()
        self.wait(task, "power on")

    def power_off(self, vm: Any) -> None:
        if self.props(vm, "runtime.powerState").get("runtime.powerState") == "poweredOff":
            return
        with self._api("power off"):
            task = vm.PowerOffVM_Task()
        self.wait(task, "power off")

    def destroy(self, vm: Any) -> None:
        """Power `vm` off and delete it with its files."""
        self.power_off(vm)
        with self._api("destroy"):
            task = vm.Destroy_Task()
        self.wait(task, "destroy")

    # -- helpers --------------------------------------------------------------------------

    def _ethernet(self, vm: Any) -> list:
        from pyVmomi import vim

        devices = self.props(vm, "config.hardware.device").get("config.hardware.device") or []
        return [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def _nic(device) -> Nic:
    from pyVmomi import vim

    backing, card = device.backing, vim.vm.device.VirtualEthernetCard
    if isinstance(backing, card.NetworkBackingInfo):
        key = backing.network._moId if backing.network is not None else None
    elif isinstance(backing, card.DistributedVirtualPortBackingInfo):
        key = backing.port.portgroupKey if backing.port else None
    elif isinstance(backing, card.OpaqueNetworkBackingInfo):
        key = f"opaque:{backing.opaqueNetworkId}"
    else:
        key = f"{type(backing).__name__}"
    connectable = device.connectable
    return Nic(device.key, device.deviceInfo.label if device.deviceInfo else f"NIC {device.key}", key,
               bool(connectable and connectable.connected), bool(connectable and connectable.startConnected))
