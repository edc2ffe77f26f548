"""VMware vSphere: what VMs, hosts, datastores and clusters a vCenter has (action
`inventory`). Read-only; it lists no restore points of its own: which VMs are protected is
judged by rule R3 from these assets and the restore points other probes list.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from drcheck.clients.vsphere import Endpoint
from drcheck.config_types import ConfigPath, Duration, SecretSpec
from drcheck.kinds import ActionConfig, ProbeTarget
from drcheck.results import ProbeResult, Status
from drcheck.vm_select import Exclusion

if TYPE_CHECKING:
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
    """Sweep the inventory: VMs, hosts, datastores and clusters as assets; risky states
    as findings. A vCenter drcheck cannot read is an ERROR result."""
    result = ProbeResult.begin(ctx, target, "inventory")
    result.status, result.reason = Status.ERROR, "not implemented yet"
    return result.conclude(ctx)


Target = VMwareProbe
ACTIONS = {"inventory": inventory}
LISTS_POINTS: frozenset[str] = frozenset()
ACTION_TIMEOUTS = {"inventory": timedelta(minutes=10)}
