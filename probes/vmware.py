"""VMware vSphere: what VMs, hosts, datastores and clusters a vCenter has (action
`inventory`). Read-only; it lists no restore points of its own: which VMs are protected is
judged by rule R3 from these assets and the restore points other probes list.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterator, Literal

from pydantic import Field

from drcheck.clients import SourceError
from drcheck.demo_vcenter import LabVCenter
from drcheck.clients.vsphere import Endpoint
from drcheck.config_types import ConfigPath, Duration, SecretSpec
from drcheck.kinds import ActionConfig, ProbeTarget
from drcheck.durations import format_duration
from drcheck.results import Finding, InventoryAsset, ProbeResult, Severity, Status
from drcheck.vm_select import Exclusion

if TYPE_CHECKING:
    from drcheck.clients.vsphere_inventory import Datastore, VirtualMachine
    from drcheck.clients.vsphere_inventory import Inventory as InventoryData
    from drcheck.context import RunContext

log = logging.getLogger(__name__)


class Inventory(ActionConfig):
    """One sweep of the inventory, and the thresholds of its risky-state findings."""

    snapshot_max_age: Duration = Field(timedelta(hours=72), description="a VM snapshot older than this is a finding")
    snapshot_max_count: int = Field(3, ge=1, description="more snapshots than this on one VM is a finding")
    datastore_min_free_percent: float = Field(10.0, ge=0, le=100,
                                              description="a datastore with less free space is a finding")
    last_backup_attribute: str | None = Field(
        None, description="custom attribute where the backup product notes a VM's last backup (e.g. 'Last Backup')")
    alarms: bool = Field(True, strict=True, description="report triggered vCenter alarms as findings")


class VMwareProbe(ProbeTarget):
    """A vCenter (or standalone ESXi host) reached over the vSphere API."""

    kind: Literal["vmware"]
    url: str = Field(..., pattern=r"^https?://[^/]+(/.*)?$", description="SDK URL, e.g. 'https://vcenter.example/sdk'")
    username: str = Field(..., min_length=1, description="a read-only account (restore tests need more rights)")
    password: SecretSpec = Field(..., description="its password (secret reference)")
    ca_bundle: ConfigPath | None = Field(None, description="PEM file of the CA that signed vCenter's certificate "
                                                           "(default: the system's trust store)")
    thumbprint: str | None = Field(
        None, pattern=r"^([0-9A-Fa-f]{2}:?){20,64}$",
        description="accept a certificate no CA vouches for when it has this SHA-1/256/512 thumbprint")
    insecure: bool = Field(False, strict=True, description="turn TLS verification off (logged at every run)")
    call_timeout: Duration = Field(timedelta(seconds=60), description="limit of every single API call")
    page_size: int = Field(1000, ge=1, description="objects per RetrievePropertiesEx page")
    default_rpo: Duration = Field(timedelta(hours=24),
                                  description="RPO of a VM that no runbook claims (for rule R3.vm_protected)")
    exclusions: list[Exclusion] = Field(default_factory=list,
                                        description="VMs deliberately not backed up: reason, owner, expiry")
    max_vm_tests: int = Field(2, ge=1, description="VM restore tests running at once against this vCenter")
    inventory: Inventory = Field(default_factory=Inventory, description="the inventory sweep")

    def endpoint(self) -> Endpoint:
        return Endpoint(url=self.url, username=self.username, password=self.password.ref(),
                        ca_bundle=self.ca_bundle, thumbprint=self.thumbprint, insecure=self.insecure,
                        timeout=self.call_timeout.total_seconds())


def inventory(target: VMwareProbe, ctx: "RunContext") -> ProbeResult:
    """Sweep the inventory: VMs (keyed by instance UUID), hosts, datastores and clusters
    as assets; risky states as findings (`FINDING_CODES`). A vCenter drcheck cannot read
    is an ERROR result with the client's one-line reason.

    A run that read everything stays OK whatever it found: its CRITICAL findings are
    about the infrastructure, not a verdict on a backup, and keep their severity."""
    from drcheck.clients.vsphere import connect
    from drcheck.clients.vsphere_inventory import read_inventory

    result = ProbeResult.begin(ctx, target, "inventory")
    settings, endpoint = target.inventory, target.endpoint()
    try:
        with connect(endpoint, who=f"probe {ctx.name}") as instance:
            found = read_inventory(instance, endpoint, target.page_size, alarms=settings.alarms)
    except SourceError as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        return result.conclude(ctx)
    result.assets = inventory_assets(ctx.name, found, settings)
    result.findings = sorted(inventory_findings(found, settings, ctx.now()),
                             key=lambda f: (f.severity is not Severity.CRITICAL, f.code, f.message))
    result.details = _details(found)
    result.reason = _summary(found, result.findings)
    # FAILED means the thing under test is bad: a full datastore is a finding, not a failed read
    return result.conclude(ctx, fail_on_critical=False)


FINDING_CODES = ("snapshot_old", "snapshot_count", "consolidation_needed", "datastore_low",
                 "datastore_inaccessible", "host_disconnected", "host_maintenance", "alarm")


def _gib(value: int | None) -> float | None:
    # rounded: volatile byte counts would write an asset history row at every run
    return round(value / 2**30, 1) if value is not None else None


def vm_attributes(vm: VirtualMachine, settings: Inventory) -> dict[str, Any]:
    """The stored facts of a VM asset (JSON; nothing volatile such as the guest IP)."""
    return {
        "moref": vm.moref, "path": vm.path, "folder": vm.folder, "datacenter": vm.datacenter,
        "cluster": vm.cluster, "host": vm.host, "power_state": vm.power_state, "tools_running": vm.tools_running,
        "guest_os": vm.guest_os, "guest_hostname": vm.guest_hostname, "datastores": vm.datastores,
        "committed_gb": _gib(vm.committed_bytes), "provisioned_gb": _gib(vm.provisioned_bytes),
        "snapshots": [{"name": s.name, "created": s.created.isoformat() if s.created else None}
                      for s in vm.snapshots],
        "consolidation_needed": vm.consolidation_needed, "annotation": vm.annotation,
        "custom_attributes": vm.custom_attributes,
        "last_backup_note": vm.custom_attributes.get(settings.last_backup_attribute)
        if settings.last_backup_attribute else None,
        "template": vm.template,
    }


def inventory_assets(source: str, found: "InventoryData", settings: Inventory) -> list[InventoryAsset]:
    """VMs keyed by instance UUID (a rename keeps the asset; duplicate names stay apart;
    `vm:<moref>` for a VM whose configuration vCenter cannot read); hosts, datastores and
    clusters keyed `<kind>:<moref>`."""
    assets = [InventoryAsset(source=source, asset_id=vm.uuid or f"vm:{vm.moref}", name=vm.name, kind="vm",
                             protected=False, attributes=vm_attributes(vm, settings)) for vm in found.vms]
    for h in found.hosts:
        assets.append(InventoryAsset(source, f"host:{h.moref}", h.name, False, kind="host", attributes={
            "moref": h.moref, "path": h.path, "datacenter": h.datacenter, "cluster": h.cluster,
            "connection_state": h.connection_state, "maintenance": h.maintenance,
            "overall_status": h.overall_status, "product": h.product,
            "memory_gb": _gib(h.memory_bytes), "cpu_cores": h.cpu_cores}))
    for d in found.datastores:
        assets.append(InventoryAsset(source, f"datastore:{d.moref}", d.name, False, kind="datastore", attributes={
            "moref": d.moref, "path": d.path, "datacenter": d.datacenter, "type": d.type,
            "capacity_gb": _gib(d.capacity_bytes), "free_percent": _free_percent(d, None), "accessible": d.accessible}))
    for c in found.clusters:
        assets.append(InventoryAsset(source, f"cluster:{c.moref}", c.name, False, kind="cluster", attributes={
            "moref": c.moref, "path": c.path, "datacenter": c.datacenter, "hosts": c.hosts,
            "effective_hosts": c.effective_hosts, "overall_status": c.overall_status}))
    return assets


def _free_percent(d: Datastore, digits: int | None = 1) -> float | int | None:
    if not d.capacity_bytes or d.free_bytes is None:
        return None
    return round(100 * d.free_bytes / d.capacity_bytes, digits)


def inventory_findings(found: "InventoryData", settings: Inventory, now: datetime) -> Iterator[Finding]:
    """Risky states, each naming the object by its inventory path (WARNING unless said)."""
    for vm in found.vms:
        yield from _vm_findings(vm, settings, now)
    for d in found.datastores:
        yield from _datastore_findings(d, settings)
    for h in found.hosts:
        if h.connection_state in ("disconnected", "notResponding"):
            yield Finding(Severity.CRITICAL, "host_disconnected", f"host {h.path} is {h.connection_state}",
                          subject=f"host:{h.moref}")
        if h.maintenance:
            yield Finding(Severity.WARNING, "host_maintenance", f"host {h.path} is in maintenance mode",
                          subject=f"host:{h.moref}")
    if settings.alarms:
        for a in found.alarms:
            if a.status in ALARM_SEVERITY:
                yield Finding(ALARM_SEVERITY[a.status], "alarm",
                              f"alarm {a.alarm!r} is {a.status} on {a.entity}" + (" (acknowledged)" if a.acknowledged
                                                                                  else ""),
                              subject=f"{a.entity_type}:{a.entity}:{a.alarm}")


ALARM_SEVERITY = {"red": Severity.CRITICAL, "yellow": Severity.WARNING}


def _vm_findings(vm: VirtualMachine, settings: Inventory, now: datetime) -> Iterator[Finding]:
    limit = settings.snapshot_max_age
    old = [s for s in vm.snapshots if s.created and now - s.created > limit]
    if old:
        oldest = min(old, key=lambda s: s.created)
        yield Finding(Severity.WARNING, "snapshot_old",
                      f"VM {vm.path}: snapshot {oldest.name!r} taken {oldest.created:%Y-%m-%d %H:%M} UTC is older "
                      f"than {format_duration(limit.total_seconds())}"
                      + (f" ({len(old)} snapshots are)" if len(old) > 1 else ""), subject=_vm_subject(vm))
    if len(vm.snapshots) > settings.snapshot_max_count:
        yield Finding(Severity.WARNING, "snapshot_count",
                      f"VM {vm.path} has {len(vm.snapshots)} snapshots (limit {settings.snapshot_max_count})",
                      subject=_vm_subject(vm))
    if vm.consolidation_needed:
        yield Finding(Severity.WARNING, "consolidation_needed", f"VM {vm.path} needs its disks consolidated",
                      subject=_vm_subject(vm))


def _vm_subject(vm: VirtualMachine) -> str:
    return f"vm:{vm.uuid or vm.moref}"


def _datastore_findings(d: Datastore, settings: Inventory) -> Iterator[Finding]:
    if not d.accessible:
        yield Finding(Severity.CRITICAL, "datastore_inaccessible", f"datastore {d.path} is not accessible",
                      subject=f"datastore:{d.moref}")
        return  # an inaccessible datastore's free space is not a measurement
    free, limit = _free_percent(d), settings.datastore_min_free_percent
    if free is not None and free < limit:
        yield Finding(Severity.CRITICAL if free < limit / 2 else Severity.WARNING, "datastore_low",
                      f"datastore {d.path} has {free:g}% free ({_gib(d.free_bytes):g} of "
                      f"{_gib(d.capacity_bytes):g} GiB; limit {limit:g}%)", subject=f"datastore:{d.moref}")


def _details(found: "InventoryData") -> dict[str, Any]:
    templates = sum(vm.template for vm in found.vms)
    return {"vms": len(found.vms) - templates, "templates": templates, "hosts": len(found.hosts),
            "datastores": len(found.datastores), "clusters": len(found.clusters),
            "triggered_alarms": len(found.alarms), "pages": found.pages, "api_calls": found.calls,
            "sweep_seconds": round(found.seconds, 3)}


def _summary(found: "InventoryData", findings: list[Finding]) -> str:
    d = _details(found)
    critical = sum(f.severity is Severity.CRITICAL for f in findings)
    text = ", ".join(_count(d[k], k) for k in ("vms", "templates", "hosts", "datastores", "clusters"))
    text += f" read in {d['sweep_seconds']:.1f}s"
    if findings:
        text += f"; {_count(len(findings), 'findings')}" + (f" ({critical} critical)" if critical else "")
    return text


def _count(n: int, plural: str) -> str:
    noun = "VMs" if plural == "vms" else plural
    return f"{n} {noun if n != 1 else noun[:-1]}"


Target = VMwareProbe
ACTIONS = {"inventory": inventory}
LISTS_POINTS: frozenset[str] = frozenset()
ACTION_TIMEOUTS = {"inventory": timedelta(minutes=10)}


def lab_peer(target: VMwareProbe, loaded: Any) -> LabVCenter:
    """Demo support: the project's vCenter simulator at this probe's URL, holding what
    `loaded` (the demo's LoadedConfig) names (drcheck demo)."""
    return LabVCenter(target, loaded)
