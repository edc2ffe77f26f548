"""Which inventory VMs are protected: every VM an inventory probe found, joined with the
runbooks that claim it and with the backups every other probe lists.

Backup probes report what they hold as assets of kind `backup` (`backed_up`): one per
backed-up object with its newest restore point and the keys it can be matched by
(`match`: `hostname` for file-level backups; `vm_uuid`, `vm_moref` or `vm_name` for
VM-level ones). A VM is covered by a copy when a backup object's key names it: its
instance UUID, its managed object id (one vCenter per agent: morefs are per vCenter), or
its name or guest host name compared as short host names without regard to case.

`reconcile` is pure: it reads stored asset rows and the configuration, and decides
nothing about what is good enough. Rule R3 (`drcheck.rules`) judges its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Iterable

from drcheck.results import InventoryAsset
from drcheck.store import parse_ts
from drcheck.vm_select import Exclusion, VmFacts, VmSelector

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig

BACKUP_KIND = "backup"
VM_KIND = "vm"


def host_key(name: str | None) -> str:
    """A host or VM name as matching compares it: lower case, without its domain."""
    return (name or "").strip().lower().split(".", 1)[0]


def backed_up(probe: str, copy: str | None, newest: Iterable[tuple[str, datetime, str, str | None]]
              ) -> list[InventoryAsset]:
    """Backup-object assets of a file-level backup probe, from its restore points as
    (host name, time, point id, system or None): the newest point per host."""
    by_host: dict[str, tuple[str, datetime, str, str | None]] = {}
    for host, when, point_id, system in newest:
        key = host_key(host)
        if key and (key not in by_host or when > by_host[key][1]):
            by_host[key] = (host, when, point_id, system)
    return [InventoryAsset(source=probe, asset_id=f"host:{key}", name=host, protected=True, system=system,
                           kind=BACKUP_KIND, attributes={"copy": copy, "newest": when.isoformat(),
                                                         "point_id": point_id, "match": {"hostname": key}})
            for key, (host, when, point_id, system) in sorted(by_host.items())]


@dataclass(frozen=True)
class Coverage:
    """The newest restore point of a VM in one copy."""

    copy: str
    probe: str
    newest: datetime
    point_id: str
    asset_row: int  # the backup asset's history row (evidence)


@dataclass
class VmProtection:
    """One inventory VM: who claims it, what covers it, and whether an exclusion applies."""

    row: dict[str, Any]  # the VM's current asset row (attributes parsed)
    systems: list[str]
    rpo_seconds: float
    coverage: list[Coverage] = field(default_factory=list)
    exclusion: Exclusion | None = None

    @property
    def name(self) -> str:
        return self.row["name"]

    @property
    def uuid(self) -> str:
        return self.row["asset_id"]

    @property
    def path(self) -> str:
        return self.row["attributes"].get("path") or self.name

    @property
    def probe(self) -> str:
        return self.row["probe"]

    def newest(self) -> Coverage | None:
        return max(self.coverage, key=lambda c: c.newest, default=None)

    def age_seconds(self, now: datetime) -> float | None:
        best = self.newest()
        return (now - best.newest).total_seconds() if best else None

    def within_rpo(self, now: datetime) -> bool:
        age = self.age_seconds(now)
        return age is not None and age <= self.rpo_seconds

    def excluded(self, today: date) -> bool:
        return self.exclusion is not None and not self.exclusion.expired(today)

    def protected(self, now: datetime) -> bool:
        return self.within_rpo(now) or self.excluded(now.date())

    def state(self, now: datetime) -> str:
        """protected, excluded, stale (covered, but not within the RPO) or unprotected."""
        if self.within_rpo(now):
            return "protected"
        if self.excluded(now.date()):
            return "excluded"
        return "stale" if self.coverage else "unprotected"


def _claims(loaded: "LoadedConfig") -> list[tuple[str, VmSelector]]:
    return [(system, selector) for system, rb in sorted(loaded.runbooks.items()) for selector in rb.vm_selectors()]


_CLAIMED: dict[tuple, tuple["LoadedConfig", dict[int, list[str]]]] = {}


def _claimed(loaded: "LoadedConfig", vms: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Asset row id -> the systems whose runbooks claim that VM. Every scrape judges every
    VM, but claims change only with the configuration or an inventory: the last answer is
    kept for the same configuration object and the same asset rows (a changed VM is a new
    row), so thousands of VMs are matched against the runbooks once per inventory."""
    key = (id(loaded), tuple(row["id"] for row in vms))
    if key not in _CLAIMED:
        claims = _claims(loaded)
        _CLAIMED.clear()
        # holding `loaded` keeps its id from being reused by another configuration
        _CLAIMED[key] = (loaded, {row["id"]: sorted({system for system, selector in claims
                                                      if selector.matches(VmFacts.of(row))}) for row in vms})
    return _CLAIMED[key][1]


def _covering(backups: list[dict[str, Any]], copies: dict[str, str]) -> dict[tuple[str, str], list[Coverage]]:
    """(match key, value) -> coverage, from backup asset rows of configured probes."""
    index: dict[tuple[str, str], list[Coverage]] = {}
    for row in backups:
        attributes = row["attributes"]
        copy = attributes.get("copy") or copies.get(row["probe"])
        if not copy or not attributes.get("newest"):
            continue
        coverage = Coverage(copy, row["probe"], parse_ts(attributes["newest"]), attributes.get("point_id", ""),
                            row["id"])
        for key, value in (attributes.get("match") or {}).items():
            normal = host_key(value) if key in ("hostname", "vm_name") else str(value).lower()
            index.setdefault((key, normal), []).append(coverage)
    return index


def _vm_keys(row: dict[str, Any]) -> list[tuple[str, str]]:
    attributes = row["attributes"]
    names = {host_key(row["name"]), host_key(attributes.get("guest_hostname"))} - {""}
    keys = [("vm_uuid", row["asset_id"].lower())]
    if attributes.get("moref"):  # what VM-level products name a VM by (Veeam's objectId)
        keys.append(("vm_moref", str(attributes["moref"]).lower()))
    for name in names:
        keys += [("hostname", name), ("vm_name", name)]
    return keys


def reconcile(loaded: "LoadedConfig", assets: list[dict[str, Any]]) -> list[VmProtection]:
    """Every non-template VM of a configured inventory probe, in path order, with the
    runbook systems that claim it, its RPO (the tightest of theirs, else the probe's
    `default_rpo`), the copies that hold a restore point of it (newest per copy) and the
    probe's first exclusion matching it (expired or not)."""
    probes = loaded.config.probes
    copies = {name: probe.copy for name, probe in probes.items() if probe.copy}
    backups = [r for r in assets if r["kind"] == BACKUP_KIND and r["probe"] in probes]
    index = _covering(backups, copies)
    vms = [row for row in assets
           if row["kind"] == VM_KIND and row["probe"] in probes and not row["attributes"].get("template")]
    claimed = _claimed(loaded, vms)
    found = []
    for row in vms:
        facts = VmFacts.of(row)
        systems = claimed[row["id"]]
        probe = probes[row["probe"]]
        rpos = [loaded.runbooks[s].rpo.total_seconds() for s in systems]
        rpo = min(rpos) if rpos else probe.default_rpo.total_seconds()  # every inventory kind has one
        newest: dict[str, Coverage] = {}
        for key in _vm_keys(row):
            for coverage in index.get(key, []):
                if coverage.copy not in newest or coverage.newest > newest[coverage.copy].newest:
                    newest[coverage.copy] = coverage
        exclusion = next((e for e in probe.exclusions if e.matches(facts)), None)
        found.append(VmProtection(row, systems, rpo, sorted(newest.values(), key=lambda c: c.copy), exclusion))
    return sorted(found, key=lambda v: (v.path.lower(), v.uuid))


def missing_claims(loaded: "LoadedConfig", assets: list[dict[str, Any]]) -> list[tuple[str, VmSelector, bool]]:
    """Each runbook selector naming one VM (exact name or UUID), with whether any
    inventory VM matches it: (system, selector, found). Empty when no inventory has been
    read (nothing to compare with)."""
    vms = [VmFacts.of(r) for r in assets if r["kind"] == VM_KIND and r["probe"] in loaded.config.probes]
    if not vms:
        return []
    names, uuids = {vm.name.lower() for vm in vms}, {vm.uuid.lower() for vm in vms}

    def found(selector: VmSelector) -> bool:
        if not (selector.folder or selector.attribute):  # the common case: a lookup, not a scan
            return (not selector.name or selector.name.lower() in names) and \
                (not selector.uuid or selector.uuid.lower() in uuids)
        return any(selector.matches(vm) for vm in vms)

    return [(system, selector, found(selector)) for system, selector in _claims(loaded) if selector.names_one_vm]
