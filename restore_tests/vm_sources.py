"""Where a `vm` restore test gets its VM from: one config model and one `prepare`
function per source, registered in `SOURCES`.

`prepare(source, vc, place)` finds what to restore without changing anything and returns a
`Plan`: what is being proven restorable (the VM, its restore point and that point's time),
what capacity the restore needs, and `create(name)`, which starts the restore task under
`name` (the caller has leased that name first), waits for it and returns the VM with the
time vCenter says the restore started. A source whose restore is not a VM of its own to
destroy (Veeam instant recovery: a mount) says how to lease and remove it (`lease`,
`dispose`). A source is one model, one function and one `SOURCES` entry.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Union

from pydantic import Field

from drcheck.clients.vsphere_vm import Compute, Missing, Network, VCenter, VSphereError
from drcheck.config_types import Duration, Name, Strict

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig

SANDBOX_PREFIX = "drcheck-"  # the names of VMs drcheck created (and may destroy)


class Sandbox(Strict):
    """Where sandbox VMs are created and which network their NICs are moved to."""

    folder: str = Field(..., min_length=1, description="inventory path of the VM folder sandbox VMs go into, "
                                                        "e.g. 'DC0/vm/drcheck-sandbox' (its first part names the "
                                                        "datacenter)")
    pool: str | None = Field(None, description="inventory path of a resource pool, cluster or host to run them on "
                                               "(default: the source VM's; register: the datacenter's first)")
    datastore: str | None = Field(None, description="datastore for their files (default: the source's)")
    network: str = Field(..., min_length=1, description="the isolated port group (no physical uplinks) every NIC "
                                                        "is moved to before power-on")

    @property
    def datacenter(self) -> str:
        return self.folder.strip("/").split("/")[0]


@dataclass
class Place:
    """The sandbox, resolved in vCenter (compute and datastore None when not configured)."""

    folder: Any
    datacenter: str
    network: Network
    networks: dict[str, str]  # network key -> name, for evidence
    compute: Compute | None
    datastore: Any | None


def resolve(vc: VCenter, sandbox: Sandbox) -> Place:
    """Find the sandbox's folder, network, compute and datastore; raise VSphereError
    naming what does not exist or is ambiguous."""
    folder = vc.find(sandbox.folder)
    if folder is None:
        raise VSphereError(f"the sandbox folder {sandbox.folder} does not exist")
    networks = vc.networks(sandbox.datacenter)
    named = [n for n in networks if n.name == sandbox.network]
    if len(named) != 1:
        raise VSphereError(f"{'no' if not named else len(named)} networks named {sandbox.network} in "
                           f"datacenter {sandbox.datacenter}; sandbox.network must name exactly one")
    return Place(folder, sandbox.datacenter, named[0], {n.key: n.name for n in networks},
                 vc.compute(sandbox.pool) if sandbox.pool else None,
                 vc.datastore(sandbox.datacenter, sandbox.datastore) if sandbox.datastore else None)


@dataclass
class Created:
    """The restored VM and when its restore started, by vCenter's clock."""

    vm: Any
    started: datetime | None


@dataclass
class Plan:
    """What one source will restore. `vm`, `vm_uuid`, `vm_path` name the VM proven
    restorable; `point_time` is the restore point's time (None: unknown, `rpo_note` says
    why); `memory_mb` and `disk_bytes` what the sandbox VM needs (0: unknown).

    `lease(name)` gives (kind, resource, handler) of the lease taken before `create`
    (default: the `vm` lease of the sandbox VM); `dispose(name)` removes what `create` made
    instead of destroying the VM, returns whether there was something, and raises
    `SourceError` when it cannot now (the lease stays for the reaper). `copy` names the
    copy restored from when the source knows it better than the test's configuration."""

    what: str
    vm: str
    vm_uuid: str
    vm_path: str
    point_id: str | None
    point_time: datetime | None
    compute: Compute
    datastore: Any | None
    memory_mb: int
    disk_bytes: int
    create: Callable[[str], Created] = field(repr=False)
    rpo_note: str | None = None
    lease: Callable[[str], tuple[str, str, str]] | None = field(default=None, repr=False)
    dispose: Callable[[str], bool] | None = field(default=None, repr=False)
    copy: str | None = None


class CloneSource(Strict):
    """A linked clone of a VM's snapshot: a replica VM kept by replication (the way SRM
    and Veeam replicas are tested) or a production VM's named snapshot."""

    type: Literal["clone"]
    vm: str | None = Field(None, description="name, inventory path or instance UUID of the VM to clone "
                                             "(with rotation: none, each VM of the set in turn)")
    snapshot: str | None = Field(None, description="snapshot name (default: the newest)")


class RegisterSource(Strict):
    """A VM's files (.vmx and disks) that an export-style backup wrote to a datastore."""

    type: Literal["register"]
    vmx: str = Field(..., pattern=r"^\[[^\]]+\] ?\S.*\.vmx$", description="datastore path, '[ds] dir/name.vmx'")


class AdoptSource(Strict):
    """A VM a backup product restored into the sandbox folder (e.g. a restore started by
    hand); the newest created VM whose name matches is taken, renamed as drcheck's."""

    type: Literal["adopt"]
    name: str = Field(..., min_length=1, description="shell pattern of the restored VM's name")


class VeeamInstantSource(Strict):
    """Instant recovery by Veeam Backup & Replication: the VM runs straight from a backup
    (Veeam publishes it into the sandbox, powered off); unmounting removes it."""

    type: Literal["veeam-instant"]
    probe: Name = Field(..., description="the veeam probe (from [probes]) whose server restores it")
    vm: str = Field(..., min_length=1, description="the VM's name as Veeam's backups name it")
    restore_point: str | None = Field(None, description="a Veeam restore point id (default: the newest clean one)")
    copy: Name | None = Field(None, description="the copy to restore from: the probe's copy or one of its "
                                                "copy_jobs copies (default: the test's copy, else the probe's)")
    mount_timeout: Duration = Field(timedelta(minutes=10), description="how long Veeam may take to publish the VM")

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        """Problems as (key below `source`, message): the probe must be a veeam probe and
        `copy` one of its copies. (Also checked when the test runs.)"""
        from drcheck.restore_tests.vm_veeam import source_problems

        return source_problems(self, loaded)


def prepare_clone(source: CloneSource, vc: VCenter, place: Place, ctx: Any = None) -> Plan:
    vm = vc.vm(source.vm or "")
    facts = vc.facts(vm)
    snapshots = vc.snapshots(vm)
    if source.snapshot:
        snapshots = [s for s in snapshots if s.name == source.snapshot]
    if not snapshots:
        which = f"named {source.snapshot}" if source.snapshot else "at all"
        raise Missing(f"VM {facts.name} has no snapshot {which}: nothing to restore")
    snapshot = snapshots[-1]
    path = "/" + source.vm.strip("/") if source.vm and "/" in source.vm else vc.path_of(vm)
    datastore = place.datastore or (vc.datastore(place.datacenter, facts.datastores[0]) if facts.datastores else None)
    compute = place.compute or vc.pool_compute(facts.pool)

    def create(name: str) -> Created:
        task = vc.clone(vm, snapshot, place.folder, name, compute.pool, place.datastore)
        return Created(vc.wait(task, f"clone {facts.name} as {name}"), vc.task_started(task))

    # a linked clone shares the snapshot's disks: it needs room for its swap file and deltas
    return Plan(f"linked clone of {path} at snapshot {snapshot.name!r}", facts.name, facts.uuid, path,
                f"{facts.uuid or facts.name}/{snapshot.name}", snapshot.created, compute, datastore,
                facts.memory_mb, facts.memory_mb * 1024 * 1024, create)


def prepare_register(source: RegisterSource, vc: VCenter, place: Place, ctx: Any = None) -> Plan:
    modified = vc.file_mtime(place.datacenter, source.vmx)
    datastore = place.datastore or vc.datastore(place.datacenter, source.vmx[1:source.vmx.index("]")])
    compute = place.compute or vc.first_compute(place.datacenter)
    stem = source.vmx.rpartition("/")[2].removesuffix(".vmx")

    def create(name: str) -> Created:
        task = vc.register(place.folder, source.vmx, name, compute)
        return Created(vc.wait(task, f"register {source.vmx}"), vc.task_started(task))

    # the files exist: only the swap file is new, and its size is not known before registering
    return Plan(f"registration of {source.vmx}", stem, "", source.vmx, source.vmx, modified, compute, datastore,
                0, 0, create)


def prepare_adopt(source: AdoptSource, vc: VCenter, place: Place, ctx: Any = None) -> Plan:
    matches = [(vm, name) for vm, name in vc.children(place.folder)
               if fnmatch.fnmatchcase(name, source.name) and not name.startswith(SANDBOX_PREFIX)]
    if not matches:
        raise VSphereError(f"no VM named like {source.name!r} in the sandbox folder: nothing to adopt "
                           "(has the backup product's restore run?)")
    created = {name: vc.creation_time(vm) for vm, name in matches}
    vm, name = max(matches, key=lambda m: (created[m[1]] is not None, created[m[1]] or 0))
    facts = vc.facts(vm)

    def create(new_name: str) -> Created:
        vc.wait(vc.rename(vm, new_name), f"rename {name} to {new_name}")
        vc.power_off(vm)  # a backup product may have powered it on: fencing comes before any power-on
        return Created(vm, created[name])

    return Plan(f"VM {name} restored into the sandbox by a backup product", name, facts.uuid,
                f"{vc.path_of(place.folder)}/{name}", name, None,
                place.compute or vc.pool_compute(facts.pool), None, facts.memory_mb, 0, create,
                rpo_note="unknown: vCenter does not record which restore point the backup product restored")


def prepare_veeam_instant(source: VeeamInstantSource, vc: VCenter, place: Place, ctx: Any = None) -> Plan:
    from drcheck.restore_tests.vm_veeam import prepare

    return prepare(source, vc, place, ctx)


SOURCES: dict[str, tuple[type[Strict], Callable[[Any, VCenter, Place, Any], Plan]]] = {
    "clone": (CloneSource, prepare_clone),
    "register": (RegisterSource, prepare_register),
    "adopt": (AdoptSource, prepare_adopt),
    "veeam-instant": (VeeamInstantSource, prepare_veeam_instant),
}

SourceSpec = Annotated[Union[tuple(model for model, _ in SOURCES.values())], Field(discriminator="type")]


def prepare(source: Any, vc: VCenter, place: Place, ctx: Any = None) -> Plan:
    """The plan of `source` (any registered model); `ctx` (the test's RunContext) for a
    source that reads the configuration (the veeam probe of `veeam-instant`)."""
    return SOURCES[source.type][1](source, vc, place, ctx)
