"""VM restore test (fenced): restore a VM into a sandbox folder of a vCenter, fence its
NICs onto an isolated port group, power it on, verify the guest boots (heartbeat, tools, IP,
an optional guest command and screenshot), measure RTO and achieved RPO, and always power
it off and destroy it.

Sources (`source.type`, see drcheck.restore_tests.vm_sources): `clone` (a linked clone of
a replica's or a VM's snapshot), `register` (an export-style backup's .vmx on a
datastore) and `adopt` (a VM a backup product restored into the sandbox folder). With
`rotation`, a run tests the least recently proven VMs of a set, a few at a time, and
returns one result per VM (`coverage` projects when all will have been tested).

Every sandbox VM is leased (kind `vm`, resource "<probe>/<vm name>") before its restore
task starts; `cleanup` is the reaper's handler for a crashed run's VM. At most the vmware
probe's `max_vm_tests` VM tests run at once against one vCenter, across processes.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from drcheck.config_types import Duration, Name
from drcheck.kinds import RestoreTestTarget
from drcheck.restore_tests import vm_rotation, vm_run
from drcheck.restore_tests.vm_guards import CapacityMargins
from drcheck.restore_tests.vm_rotation import Coverage, Rotation
from drcheck.restore_tests.vm_sources import SANDBOX_PREFIX, Sandbox, SourceSpec
from drcheck.restore_tests.vm_verify import GuestCommand
from drcheck.results import RestoreTestResult

if TYPE_CHECKING:
    from datetime import datetime

    from drcheck.config_loader import LoadedConfig
    from drcheck.context import RunContext
    from drcheck.store import Store

log = logging.getLogger(__name__)

LEASE_KIND, HANDLER = vm_run.LEASE_KIND, vm_run.HANDLER
__all__ = ["VmRestoreTest", "Target", "run", "cleanup", "coverage", "Coverage"]


class VmRestoreTest(RestoreTestTarget):
    """Restore a VM into a vCenter sandbox, fenced, and prove its guest boots."""

    kind: Literal["vm"]
    copy: Name | None = Field(None, description="the copy (from [copies]) the restored VM comes from "
                                                "(default: the probe's)")
    source: SourceSpec = Field(..., description="where the VM comes from: clone, register or adopt")
    sandbox: Sandbox = Field(..., description="folder, compute, datastore and isolated network of sandbox VMs")
    boot_timeout: Duration = Field(timedelta(minutes=10), description="how long the guest may take to boot "
                                                                      "(heartbeat green, tools running, an IP)")
    guest_command: GuestCommand | None = Field(None, description="a program to run in the booted guest")
    screenshot: bool = Field(False, strict=True, description="save a console screenshot as evidence")
    capacity: CapacityMargins = Field(default_factory=CapacityMargins,
                                      description="what must stay free on the datastore and hosts")
    rotation: Rotation | None = Field(None, description="test a set of VMs in turn (clone source without vm)")


    @model_validator(mode="after")
    def _source_fits_rotation(self) -> "VmRestoreTest":
        if self.rotation is not None:
            if self.source.type != "clone":
                raise ValueError("rotation needs source.type = \"clone\" (each VM's newest snapshot is cloned)")
            if self.source.vm:
                raise ValueError("give source.vm or rotation, not both (rotation picks the VMs)")
        elif self.source.type == "clone" and not self.source.vm:
            raise ValueError("source.vm is required for a clone (or give a rotation)")
        return self

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        probe = loaded.config.probes.get(self.probe)
        problems = []
        if probe is not None and probe.kind != "vmware":
            problems.append(("probe", f"probe {self.probe!r} is a {probe.kind} probe; a vm restore test needs a "
                                      "vmware probe (its vCenter)"))
        if self.copy is not None and self.copy not in loaded.config.copies:
            problems.append(("copy", f"unknown copy {self.copy!r} (known: "
                                     f"{', '.join(sorted(loaded.config.copies)) or 'none defined'})"))
        if hasattr(self.source, "references"):  # a source reading another probe (veeam-instant)
            problems += [(f"source.{key}" if key else "source", message)
                         for key, message in self.source.references(loaded)]
        return problems


Target = VmRestoreTest


def run(target: VmRestoreTest, ctx: "RunContext") -> RestoreTestResult | list[RestoreTestResult]:
    """Run the test: one result, or with a rotation one per VM tested (in order)."""
    if target.rotation is not None:
        return vm_rotation.run(target, ctx, vm_run.test_vm)
    return vm_run.test_vm(target, ctx, target.source)


def cleanup(lease: dict, loaded: "LoadedConfig") -> None:
    """Lease handler: destroy the leftover sandbox VM `lease` names ("<probe>/<vm name>")
    through that probe's vCenter. A VM that is already gone is a success. Raise (the
    lease stays and is retried) when vCenter cannot be reached or refuses, when the probe
    is no longer configured, or for a name drcheck never gives its VMs."""
    from drcheck.clients import vsphere_vm

    probe_name, _, name = lease["resource"].partition("/")
    if not name.startswith(SANDBOX_PREFIX):
        raise ValueError(f"{lease['resource']} does not name a drcheck sandbox VM; not removed")
    probe = loaded.config.probes.get(probe_name)
    if probe is None or probe.kind != "vmware":
        raise LookupError(f"no vmware probe {probe_name} is configured: cannot reach the vCenter holding {name}")
    with vsphere_vm.session(probe.endpoint()) as vc:
        for vm in vc.vms_named(name):
            vc.destroy(vm)
            log.warning("destroyed leftover sandbox VM %s in %s", name, probe.url)


def coverage(loaded: "LoadedConfig", store: "Store", test_name: str, now: "datetime") -> Coverage:
    """Per VM of `test_name`'s rotation set: name, path, UUID, last proven restorable (or
    None); and the projected days until every VM has been tested (see vm_rotation)."""
    return vm_rotation.coverage(loaded, store, test_name, now)
