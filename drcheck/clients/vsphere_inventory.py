"""What a vCenter's inventory holds, read in a few property sweeps (one per object type,
never one read per object) and returned as plain dataclasses: no pyVmomi object leaves
this module.

Paths are inventory paths without the root folder ("/DC0/vm/Schools/High/sis01"), built
from the Folder/Datacenter/ComputeResource sweeps' `name` and `parent`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from drcheck.clients.vsphere import Counter, Endpoint, Row, api_errors, read_objects, sweep

ENTITY_PROPS = ("name", "parent")
COMPUTE_PROPS = ("name", "parent", "overallStatus", "summary.numHosts", "summary.numEffectiveHosts")
HOST_PROPS = ("name", "parent", "runtime.connectionState", "runtime.inMaintenanceMode", "overallStatus",
              "summary.config.product.fullName", "summary.hardware.memorySize", "summary.hardware.numCpuCores")
DATASTORE_PROPS = ("name", "parent", "summary.capacity", "summary.freeSpace", "summary.accessible", "summary.type")
VM_PROPS = ("name", "parent", "config.instanceUuid", "config.template", "config.guestFullName", "config.annotation",
            "runtime.powerState", "runtime.host", "runtime.consolidationNeeded", "guest.toolsRunningStatus",
            "guest.hostName", "datastore", "summary.storage.committed", "summary.storage.uncommitted",
            "snapshot.rootSnapshotList", "customValue")
ALARM_STATE = "triggeredAlarmState"


@dataclass(frozen=True)
class Snapshot:
    name: str
    created: datetime | None
    moref: str


@dataclass
class VirtualMachine:
    moref: str
    name: str
    uuid: str | None
    path: str
    folder: str
    datacenter: str | None
    cluster: str | None
    host: str | None
    power_state: str | None
    tools_running: str | None
    guest_os: str | None
    guest_hostname: str | None
    datastores: list[str]
    committed_bytes: int | None
    provisioned_bytes: int | None
    snapshots: list[Snapshot]
    consolidation_needed: bool
    annotation: str
    custom_attributes: dict[str, str]
    template: bool


@dataclass
class Host:
    moref: str
    name: str
    path: str
    datacenter: str | None
    cluster: str | None
    connection_state: str | None
    maintenance: bool
    overall_status: str | None
    product: str | None
    memory_bytes: int | None
    cpu_cores: int | None


@dataclass
class Datastore:
    moref: str
    name: str
    path: str
    datacenter: str | None
    type: str | None
    capacity_bytes: int | None
    free_bytes: int | None
    accessible: bool


@dataclass
class Cluster:
    moref: str
    name: str
    path: str
    datacenter: str | None
    hosts: int | None
    effective_hosts: int | None
    overall_status: str | None


@dataclass(frozen=True)
class TriggeredAlarm:
    """An alarm in red or yellow (or gray/green, as vCenter reports it) on an entity;
    `entity` is the entity's inventory path (its moref when not swept)."""

    alarm: str
    status: str
    entity: str
    entity_type: str
    time: datetime | None
    acknowledged: bool


@dataclass
class Inventory:
    """One read of a vCenter: its objects, triggered alarms (when asked), and what the
    read cost (`calls`, `pages`, `seconds`)."""

    vms: list[VirtualMachine] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    datastores: list[Datastore] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    alarms: list[TriggeredAlarm] = field(default_factory=list)
    calls: int = 0
    pages: int = 0
    seconds: float = 0.0


def read_inventory(instance: Any, endpoint: Endpoint, page_size: int = 1000, alarms: bool = True) -> Inventory:
    """Read VMs, hosts, datastores and clusters of the logged-in `instance` (from
    `vsphere.connect`), each type in one paged sweep, plus custom field names (one read)
    and, with `alarms`, triggered alarms and their names (one read). Raise VSphereError
    when any read fails."""
    from pyVmomi import vim

    counter = Counter()
    started = time.monotonic()
    extra = (ALARM_STATE,) if alarms else ()
    with api_errors(endpoint, "inventory sweep"):
        counter.calls += 1
        content = instance.RetrieveContent()

        def of(view_types: list[type], prop_type: type, props: tuple[str, ...]) -> list[Row]:
            return sweep(content, view_types, prop_type, props + extra, page_size, counter)

        entities = of([vim.Folder, vim.Datacenter], vim.ManagedEntity, ENTITY_PROPS)
        # ComputeResource covers standalone hosts' resources and, as their base, clusters
        computes = of([vim.ComputeResource, vim.ClusterComputeResource], vim.ComputeResource, COMPUTE_PROPS)
        hosts = of([vim.HostSystem], vim.HostSystem, HOST_PROPS)
        datastores = of([vim.Datastore], vim.Datastore, DATASTORE_PROPS)
        vms = of([vim.VirtualMachine], vim.VirtualMachine, VM_PROPS)
        fields = _custom_fields(content, page_size, counter)
        tree = _Tree(content.rootFolder._moId, entities + computes + hosts + datastores + vms)
        inventory = Inventory(
            vms=[_vm(row, tree, fields) for row in vms],
            hosts=[_host(row, tree) for row in hosts],
            datastores=[_datastore(row, tree) for row in datastores],
            clusters=[_cluster(row, tree) for row in computes if row.type == "ClusterComputeResource"])
        if alarms:
            states = [s for rows in (entities, computes, hosts, datastores, vms) for r in rows
                      for s in r.props.get(ALARM_STATE) or ()]
            inventory.alarms = _alarms(content, states, tree, page_size, counter)
    inventory.calls, inventory.pages = counter.calls, counter.pages
    inventory.seconds = time.monotonic() - started
    return inventory


class _Tree:
    """Names, parents and types of every swept entity: paths, datacenters and clusters
    are computed from it, never read per object."""

    def __init__(self, root: str, rows: Iterable[Row]):
        self.root = root
        self.rows = {row.moref: row for row in rows}

    def name(self, moref: str | None) -> str | None:
        row = self.rows.get(moref) if moref else None
        return row.props.get("name") if row else None

    def ancestors(self, moref: str) -> list[Row]:
        """The entity's row and its ancestors' below the root folder, nearest first."""
        chain, seen = [], set()
        while moref and moref != self.root and moref not in seen and moref in self.rows:
            seen.add(moref)
            chain.append(self.rows[moref])
            moref = _moref(self.rows[moref].props.get("parent"))
        return chain

    def path(self, moref: str) -> str:
        return "/" + "/".join(str(r.props.get("name", r.moref)) for r in reversed(self.ancestors(moref)))

    def datacenter(self, moref: str) -> str | None:
        return next((r.props.get("name") for r in self.ancestors(moref) if r.type == "Datacenter"), None)

    def cluster_of_host(self, host: str | None) -> str | None:
        parent = _moref(self.rows[host].props.get("parent")) if host in self.rows else None
        row = self.rows.get(parent) if parent else None
        return row.props.get("name") if row and row.type == "ClusterComputeResource" else None


def _moref(obj: Any) -> str | None:
    return getattr(obj, "_moId", None) if obj is not None else None


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _custom_fields(content: Any, page_size: int, counter: Counter) -> dict[int, str]:
    """Custom attribute key -> name, read once from the CustomFieldsManager (none on an
    ESXi host without one)."""
    from pyVmomi import vim

    manager = content.customFieldsManager
    if manager is None:
        return {}
    rows = read_objects(content, [manager], vim.CustomFieldsManager, ["field"], page_size, counter)
    return {d.key: d.name for row in rows for d in row.props.get("field") or ()}


def _snapshots(trees: Iterable[Any]) -> list[Snapshot]:
    """The snapshot trees (data objects already read), flattened depth-first."""
    found = []
    for tree in trees or ():
        created = tree.createTime.astimezone(timezone.utc) if tree.createTime else None
        found.append(Snapshot(str(tree.name), created, _moref(tree.snapshot) or ""))
        found.extend(_snapshots(tree.childSnapshotList))
    return found


def _vm(row: Row, tree: _Tree, fields: dict[int, str]) -> VirtualMachine:
    p = row.props
    host = _moref(p.get("runtime.host"))
    path = tree.path(row.moref)
    committed, uncommitted = _int(p.get("summary.storage.committed")), _int(p.get("summary.storage.uncommitted"))
    return VirtualMachine(
        moref=row.moref, name=str(p.get("name", row.moref)), uuid=_str(p.get("config.instanceUuid")),
        path=path, folder=path.rpartition("/")[0] or "/", datacenter=tree.datacenter(row.moref),
        cluster=tree.cluster_of_host(host), host=tree.name(host),
        power_state=_str(p.get("runtime.powerState")), tools_running=_str(p.get("guest.toolsRunningStatus")),
        guest_os=_str(p.get("config.guestFullName")), guest_hostname=_str(p.get("guest.hostName")),
        datastores=sorted(n for n in (tree.name(_moref(d)) for d in p.get("datastore") or ()) if n),
        committed_bytes=committed,
        provisioned_bytes=committed + (uncommitted or 0) if committed is not None else None,
        snapshots=_snapshots(p.get("snapshot.rootSnapshotList")),
        consolidation_needed=bool(p.get("runtime.consolidationNeeded")),
        annotation=str(p.get("config.annotation") or ""),
        custom_attributes={fields.get(v.key, str(v.key)): str(getattr(v, "value", "") or "")
                           for v in p.get("customValue") or ()},
        template=bool(p.get("config.template")))


def _host(row: Row, tree: _Tree) -> Host:
    p = row.props
    return Host(
        moref=row.moref, name=str(p.get("name", row.moref)), path=tree.path(row.moref),
        datacenter=tree.datacenter(row.moref), cluster=tree.cluster_of_host(row.moref),
        connection_state=_str(p.get("runtime.connectionState")), maintenance=bool(p.get("runtime.inMaintenanceMode")),
        overall_status=_str(p.get("overallStatus")), product=_str(p.get("summary.config.product.fullName")),
        memory_bytes=_int(p.get("summary.hardware.memorySize")), cpu_cores=_int(p.get("summary.hardware.numCpuCores")))


def _datastore(row: Row, tree: _Tree) -> Datastore:
    p = row.props
    accessible = p.get("summary.accessible")
    return Datastore(
        moref=row.moref, name=str(p.get("name", row.moref)), path=tree.path(row.moref),
        datacenter=tree.datacenter(row.moref), type=_str(p.get("summary.type")),
        capacity_bytes=_int(p.get("summary.capacity")), free_bytes=_int(p.get("summary.freeSpace")),
        accessible=accessible is None or bool(accessible))


def _cluster(row: Row, tree: _Tree) -> Cluster:
    p = row.props
    return Cluster(
        moref=row.moref, name=str(p.get("name", row.moref)), path=tree.path(row.moref),
        datacenter=tree.datacenter(row.moref), hosts=_int(p.get("summary.numHosts")),
        effective_hosts=_int(p.get("summary.numEffectiveHosts")), overall_status=_str(p.get("overallStatus")))


def _alarms(content: Any, states: list[Any], tree: _Tree, page_size: int, counter: Counter) -> list[TriggeredAlarm]:
    """The distinct triggered alarm states (vCenter propagates them up to every ancestor),
    with the alarms' names read in one go."""
    from pyVmomi import vim

    unique = {(_moref(s.alarm), _moref(s.entity)): s for s in states}
    alarms = {_moref(s.alarm): s.alarm for s in unique.values()}
    rows = read_objects(content, list(alarms.values()), vim.alarm.Alarm, ["info.name"], page_size, counter)
    names = {row.moref: str(row.props.get("info.name") or row.moref) for row in rows}
    found = []
    for (alarm, entity), s in sorted(unique.items(), key=lambda kv: (str(kv[0][1]), str(kv[0][0]))):
        known = entity in tree.rows
        found.append(TriggeredAlarm(
            alarm=names.get(alarm, alarm or "?"), status=str(s.overallStatus),
            entity=tree.path(entity) if known else f"{entity}",
            entity_type=tree.rows[entity].type if known else getattr(s.entity, "_wsdlName", "?"),
            time=s.time.astimezone(timezone.utc) if s.time else None, acknowledged=bool(s.acknowledged)))
    return found
