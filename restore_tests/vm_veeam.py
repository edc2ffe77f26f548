"""The `veeam-instant` source of the `vm` restore test, and the lease handler of its mounts.

`prepare(source, vc, place, ctx)` finds, without changing anything, the restore point to
prove (the one named, else the newest point Veeam marks clean, in the chosen copy) and
where the VM goes (the sandbox folder, pool and host; redo logs on the sandbox datastore
when one is configured). Its `Plan`:
- `lease(name)`: kind `veeam-instant`, resource "<veeam probe>/<vm name>", this module as
  handler; vm_run commits it before the mount starts;
- `create(name)`: notes vCenter's clock (the RTO runs from there), asks Veeam to publish the
  point as `name` powered off (power-on is drcheck's, after fencing; its NICs keep their
  networks until vm_run moves every one to the isolated port group), waits until it is
  Mounted and finds the VM in vCenter;
- `dispose(name)`: unmounts it (Veeam removes the VM), in vm_run's `finally`.

`cleanup(lease, loaded)`: the reaper's handler for a crashed run's mount: unmount every
mount of the leased VM name. A mount already gone is success; Veeam unreachable (or a
mount still being published) raises, so the lease stays and is retried.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from drcheck.clients import SourceError
from drcheck.clients.vsphere_vm import Missing, VCenter, VSphereError
from drcheck.restore_tests.vm_sources import SANDBOX_PREFIX, Created, Place, Plan

if TYPE_CHECKING:
    from drcheck.clients.veeam import Endpoint, Point, Veeam
    from drcheck.config_loader import LoadedConfig
    from drcheck.restore_tests.vm_sources import VeeamInstantSource

log = logging.getLogger(__name__)

LEASE_KIND = "veeam-instant"
HANDLER = "drcheck.restore_tests.vm_veeam"
UNMOUNT_TIMEOUT = 300.0  # seconds an unmount may take (Veeam powers the VM off and unregisters it)


class Refused(SourceError):
    """The restore point asked for must not be restored: Veeam marks it Suspicious or
    Infected (FAILED: the backup is bad)."""

    def __init__(self, reason: str):
        super().__init__(reason, damaged=True)


def source_problems(source: "VeeamInstantSource", loaded: "LoadedConfig") -> list[tuple[str, str]]:
    """Problems of a `veeam-instant` source as (key below `source`, message)."""
    probe = loaded.config.probes.get(source.probe)
    if probe is None:
        known = ", ".join(sorted(n for n, p in loaded.config.probes.items() if p.kind == "veeam")) or "none"
        return [("probe", f"unknown probe {source.probe!r} (veeam probes: {known})")]
    if probe.kind != "veeam":
        return [("probe", f"probe {source.probe!r} is a {probe.kind} probe; veeam-instant needs a veeam probe")]
    if source.copy is not None and source.copy not in probe.all_copies():
        return [("copy", f"{source.copy!r} is not a copy of probe {source.probe} "
                         f"(its copies: {', '.join(probe.all_copies())})")]
    return []


def _probe(source: "VeeamInstantSource", loaded: "LoadedConfig"):
    problems = source_problems(source, loaded)
    if problems:
        raise VSphereError(f"source.{problems[0][0]}: {problems[0][1]}")
    return loaded.config.probes[source.probe]


def choose_point(source: "VeeamInstantSource", probe: Any, veeam: "Veeam", wanted: str) -> tuple["Point", str]:
    """(the restore point to restore, its copy): the one named, else the newest clean one
    in copy `wanted`. Raise Missing when there is none, Refused when the one named is not
    clean."""
    from drcheck.probes.veeam import copy_of

    jobs = {job.id: job for job in veeam.jobs()}
    copies = {b.id: copy_of(probe, b, jobs) for b in veeam.backups()}
    points = sorted((p for p in veeam.restore_points(nameFilter=source.vm) if p.name == source.vm),
                    key=lambda p: p.created, reverse=True)
    if source.restore_point:
        named = [p for p in points if p.id == source.restore_point]
        if not named:
            raise Missing(f"Veeam has no restore point {source.restore_point} of VM {source.vm}")
        point = named[0]
        if not point.clean:
            raise Refused(f"Veeam marks restore point {point.id} of VM {source.vm} as {point.malware_status}: "
                          "drcheck does not restore it")
        return point, copies.get(point.backup_id) or wanted
    in_copy = [p for p in points if copies.get(p.backup_id, probe.copy) == wanted]
    clean = [p for p in in_copy if p.clean]
    if not clean:
        shunned = f" ({len(in_copy)} marked suspicious or infected)" if in_copy else ""
        raise Missing(f"Veeam has no clean restore point of VM {source.vm} in {wanted}{shunned}: nothing to restore")
    return clean[0], wanted


def prepare(source: "VeeamInstantSource", vc: VCenter, place: Place, ctx: Any) -> Plan:
    """The plan of a `veeam-instant` source (see the module doc). Raise Missing/Refused for
    a restore point that is not there or must not be restored, SourceError when Veeam or
    vCenter cannot be read."""
    from drcheck.clients.veeam import Veeam, VSphereObject

    probe = _probe(source, ctx.loaded)
    test = ctx.loaded.config.restore_tests.get(ctx.name)
    wanted = source.copy or getattr(test, "copy", None) or probe.copy
    if wanted not in probe.all_copies():
        raise VSphereError(f"copy {wanted!r} is not a copy of probe {source.probe} "
                           f"(its copies: {', '.join(probe.all_copies())})")
    endpoint = probe.endpoint()
    who = f"restore test {ctx.name}"
    with Veeam(endpoint, who=who) as veeam:
        point, copy = choose_point(source, probe, veeam, wanted)
    production = vc.vms_named(source.vm)
    facts = vc.facts(production[0]) if len(production) == 1 else None
    compute = place.compute or (vc.pool_compute(facts.pool) if facts else vc.first_compute(place.datacenter))
    host = _roomiest_host(vc, compute)
    folder = VSphereObject("Folder", _name(vc, place.folder), _moref(place.folder))
    pool = VSphereObject("ResourcePool", _name(vc, compute.pool), _moref(compute.pool))
    datastore = VSphereObject("Datastore", _name(vc, place.datastore), _moref(place.datastore)) \
        if place.datastore is not None else None
    made: dict[str, str] = {}

    def create(name: str) -> Created:
        started = vc.server_time()
        with Veeam(endpoint, who=who) as veeam:
            session = veeam.start_instant_recovery(
                point.id, name, vcenter=vc.endpoint.host, folder=folder, pool=pool, host=host, datastore=datastore,
                nics_enabled=True, reason=f"drcheck restore test {ctx.name}: fenced boot verification")
            made["session"] = session.id
            mount = veeam.wait_mounted(session.id, name, source.mount_timeout.total_seconds())
            made["mount"] = mount.id
        found = vc.vms_named(name)
        if len(found) != 1:
            raise VSphereError(f"Veeam published {name}, but vCenter {vc.endpoint.url} has {len(found)} VMs of "
                               "that name")
        return Created(found[0], started)

    def dispose(name: str) -> bool:
        with Veeam(endpoint, who=who) as veeam:
            return unmount_all(veeam, name) > 0

    memory = facts.memory_mb if facts else 0
    return Plan(f"Veeam instant recovery of {source.vm} from restore point {point.id} "
                f"({point.created:%Y-%m-%d %H:%M} UTC, {copy})", source.vm, facts.uuid if facts else "",
                vc.path_of(production[0]) if facts else source.vm, point.id, point.created, compute, place.datastore,
                memory, memory * 1024 * 1024, create,
                lease=lambda name: (LEASE_KIND, f"{source.probe}/{name}", HANDLER), dispose=dispose, copy=copy)


def unmount_all(veeam: "Veeam", name: str) -> int:
    """Unmount every instant-recovery mount of VM `name`; return how many there were. A
    mount that failed to publish holds nothing: its removal may be refused harmlessly."""
    from drcheck.clients.http import StatusError

    mounts = veeam.mounts(name)
    for mount in mounts:
        try:
            veeam.unmount(mount.id, UNMOUNT_TIMEOUT)
        except StatusError:
            if mount.state != "Failed":
                raise
    return len(mounts)


def _roomiest_host(vc: VCenter, compute) -> Any:
    from drcheck.clients.veeam import VSphereObject

    hosts = list(compute.hosts)
    if not hosts:
        return None
    memory = vc.host_memory(compute)
    usable = [(m.free_mb, i) for i, m in enumerate(memory) if m.usable] or [(0, 0)]
    chosen = hosts[max(usable)[1]]
    return VSphereObject("Host", memory[max(usable)[1]].name if memory else _name(vc, chosen), _moref(chosen))


def _moref(handle: Any) -> str:
    return getattr(handle, "_moId", None) or str(handle)


def _name(vc: VCenter, handle: Any) -> str:
    return str(vc.props(handle, "name").get("name", "?"))


def cleanup(lease: dict, loaded: "LoadedConfig") -> None:
    """Lease handler: unmount the instant recovery `lease` names ("<veeam probe>/<vm
    name>") through that probe's Veeam server. None left is a success. Raise (the lease
    stays and is retried) when Veeam cannot be reached or refuses, when the probe is no
    longer configured, or for a name drcheck never gives its VMs."""
    from drcheck.clients.veeam import Veeam

    probe_name, _, name = lease["resource"].partition("/")
    if not name.startswith(SANDBOX_PREFIX):
        raise ValueError(f"{lease['resource']} does not name a drcheck sandbox VM; not unmounted")
    probe = loaded.config.probes.get(probe_name)
    if probe is None or probe.kind != "veeam":
        raise LookupError(f"no veeam probe {probe_name} is configured: cannot reach the Veeam server publishing "
                          f"{name}")
    endpoint: Endpoint = probe.endpoint()
    with Veeam(endpoint, who="reaper") as veeam:
        if unmount_all(veeam, name):
            log.warning("unmounted leftover instant recovery %s through %s", name, probe.url)
