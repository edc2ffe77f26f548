"""The guards of a `vm` restore test: enough capacity before anything is created, and
fencing enforced before power-on.

Fencing is verified, never assumed: the isolated port group's switch must have no physical
uplinks on any host, and after the NICs were moved to it, their state is read back; a VM
with any NIC that is neither on the isolated port group nor disconnected (and not
connected at power-on) is refused. Every refusal raises `Refused`: the test is an ERROR
and the VM is never powered on.
"""

from __future__ import annotations

import time

from pydantic import Field

from drcheck.clients.vsphere_vm import Nic, VCenter
from drcheck.config_types import Strict
from drcheck.results import CheckResult, Status
from drcheck.restore_tests.vm_sources import Place, Plan

GIB, MIB = 1024**3, 1024**2


class Refused(Exception):
    """A guard refused the test; nothing more is created and nothing is powered on."""


class CapacityMargins(Strict):
    """What must stay free after a sandbox VM is created and powered on."""

    datastore_min_free_gb: float = Field(10.0, ge=0, description="free space left on the datastore after the "
                                                                 "sandbox VM's swap file and delta disks")
    datastore_min_free_percent: float = Field(5.0, ge=0, le=100, description="the same as a share of its capacity")
    host_memory_margin_mb: int = Field(1024, ge=0, description="memory a host keeps free beyond the VM's own")


def check_capacity(vc: VCenter, plan: Plan, margins: CapacityMargins) -> CheckResult:
    """Refuse (raise Refused) when the datastore would drop below its margins or no usable
    host has the VM's memory plus the margin free; return the passing evidence."""
    begun, evidence = time.perf_counter(), []
    if plan.datastore is not None:
        space = vc.datastore_space(plan.datastore)
        keep = max(margins.datastore_min_free_gb * GIB, space.capacity * margins.datastore_min_free_percent / 100)
        if not space.accessible:
            raise Refused(f"datastore {space.name} is not accessible")
        if space.free - plan.disk_bytes < keep:
            raise Refused(f"datastore {space.name} has {space.free / GIB:.1f} GiB free; the sandbox VM needs "
                          f"{plan.disk_bytes / GIB:.1f} GiB and {keep / GIB:.1f} GiB must stay free")
        evidence.append(f"datastore {space.name}: {space.free / GIB:.1f} GiB free")
    hosts = vc.host_memory(plan.compute)
    need = plan.memory_mb + margins.host_memory_margin_mb
    fitting = [h for h in hosts if h.usable and h.free_mb >= need]
    if not fitting:
        seen = ", ".join(f"{h.name} {h.free_mb} MB free" + ("" if h.usable else " (unusable)") for h in hosts)
        raise Refused(f"no host has {need} MB of memory free for the sandbox VM ({plan.memory_mb} MB + "
                      f"{margins.host_memory_margin_mb} MB margin): {seen or 'no hosts'}")
    best = max(fitting, key=lambda h: h.free_mb)
    evidence.append(f"host {best.name}: {best.free_mb} MB free for {need} MB")
    return CheckResult("capacity", Status.PASSED, "; ".join(evidence), time.perf_counter() - begun)


def check_isolated(vc: VCenter, place: Place, plan: Plan) -> str:
    """Refuse when the isolated port group's switch has physical uplinks (on any host that
    has it or may run the VM); return the evidence that it has none."""
    uplinks = vc.uplinks(place.network, plan.compute.hosts)
    if uplinks:
        raise Refused(f"sandbox network {place.network.name} is not isolated: {'; '.join(uplinks)}")
    return f"{place.network.name} ({place.network.kind} port group) has no physical uplinks"


def fence(vc: VCenter, vm, place: Place, isolated_evidence: str) -> CheckResult:
    """Move every NIC of `vm` that is not on the isolated port group onto it, read the NICs
    back and refuse (raise Refused) unless each is on it or disconnected and not connected
    at power-on. Return the passing evidence (each NIC, where it was, where it is)."""
    begun = time.perf_counter()
    before = vc.nics(vm)
    moving = [n.device_key for n in before if n.network_key != place.network.key]
    if moving:
        vc.move_nics(vm, moving, place.network)
    after = vc.nics(vm)
    stray = [n for n in after if not _fenced(n, place)]
    if stray:
        raise Refused("refused to power on: " + "; ".join(
            f"{n.label} would be on {_network(n, place)}" + (" (connected at power-on)" if n.start_connected else "")
            for n in stray))
    was = {n.device_key: _network(n, place) for n in before}
    lines = [f"{n.label}: {was.get(n.device_key, 'new')} -> {_network(n, place)}"
             + ("" if n.network_key == place.network.key else " (disconnected)") for n in after]
    return CheckResult("fencing", Status.PASSED, "; ".join([*lines, isolated_evidence]) or isolated_evidence,
                       time.perf_counter() - begun, {"nics": len(after), "moved": len(moving)})


def _fenced(nic: Nic, place: Place) -> bool:
    return nic.network_key == place.network.key or (not nic.connected and not nic.start_connected)


def _network(nic: Nic, place: Place) -> str:
    return place.networks.get(nic.network_key or "", nic.network_key or "no network")
