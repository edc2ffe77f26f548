"""Veeam Backup & Replication over its REST API: which VMs have restore points in which
copy, how old, whether Veeam itself marks any as suspicious or infected (action
`points`, the default), and how each job's last session ended (action `sessions`).

Copies: the backups of backup jobs are the probe's `copy` (the primary repository); the
backups of each backup-copy job named in `copy_jobs` are that copy (at its own site). A
backup-copy job not named there (known by its type `BackupCopy` or its `sourceJobId`) is
reported (`copy_job_unmapped`) and not counted. Name every copy job in `copy_jobs`: a
server that reports neither would have its points counted in the primary copy.

Systems: `systems` rules map VM name patterns to runbook systems. A system of several VMs
is as fresh as its stalest VM: in each copy, the system's point is the newest clean point
of the VM whose newest clean point is oldest, and a copy missing one of the system's VMs
holds no point of the system (rule R2 then says "no restore point in <copy>").

Clean points only: a point Veeam marks Suspicious or Infected is a CRITICAL finding
(`point_suspicious`, `point_infected`, subject `point:<id>`) and is never a system's
point nor counted.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from pydantic import Field, model_validator

from drcheck.clients import SourceError
from drcheck.config_types import ConfigPath, Duration, Name, SecretSpec, Strict
from drcheck.kinds import ActionConfig, ProbeTarget
from drcheck.protection import BACKUP_KIND, host_key
from drcheck.results import Finding, InventoryAsset, ProbeResult, RestorePoint, Severity, Status

if TYPE_CHECKING:
    from drcheck.clients.veeam import Backup, Endpoint, Job, Point
    from drcheck.config_loader import LoadedConfig
    from drcheck.context import RunContext

log = logging.getLogger(__name__)


class VeeamSystem(Strict):
    """The VMs of one runbook system, by name as Veeam's backups name them."""

    system: Name = Field(..., description="system name (a runbook file stem)")
    vms: list[str] = Field(..., min_length=1, description="VM names or shell patterns (case-insensitive)")
    copies: list[Name] | None = Field(None, description="the copies the system is expected in "
                                                        "(default: every copy of the probe)")

    def matches(self, vm: str) -> bool:
        return any(fnmatch.fnmatchcase(vm.lower(), pattern.lower()) for pattern in self.vms)


class VeeamProbe(ProbeTarget):
    """A Veeam Backup & Replication server's REST API."""

    kind: Literal["veeam"]
    copy: Name = Field(..., description="the copy (from [copies]) the backup jobs' backups are")
    url: str = Field(..., pattern=r"^https?://[^/]+/?$", description="REST API root, e.g. 'https://vbr.example:9419'")
    username: str = Field(..., min_length=1, description="an account with the Veeam Restore Operator role "
                                                         "(Backup Viewer is enough without veeam-instant tests)")
    password: SecretSpec = Field(..., description="its password (secret reference)")
    ca_bundle: ConfigPath | None = Field(None, description="PEM file of the CA that signed the server's certificate "
                                                           "(default: the system's trust store)")
    insecure: bool = Field(False, strict=True, description="turn TLS verification off (logged at every run)")
    api_version: str = Field("1.1-rev1", pattern=r"^\d+\.\d+-rev\d+$",
                             description="x-api-version sent with every request (1.1-rev1: Veeam B&R 12)")
    page_size: int = Field(200, ge=1, le=1000, description="items per page of a listing (skip/limit)")
    call_timeout: Duration = Field(timedelta(seconds=30), description="limit of every single request")
    retries: int = Field(2, ge=0, le=10, description="retries of a request after a connection failure, 429 or 5xx")
    copy_jobs: dict[str, Name] = Field(default_factory=dict,
                                       description="backup-copy job name -> the copy (from [copies]) its backups are")
    systems: list[VeeamSystem] = Field(default_factory=list, description="VM-name-to-system rules")
    points: ActionConfig = Field(default_factory=ActionConfig,
                                 description="list restore points per VM and copy (default limit 10m)")
    sessions: ActionConfig = Field(default_factory=ActionConfig,
                                   description="the last session of every job (default limit 5m)")

    @model_validator(mode="after")
    def _copies_differ(self) -> "VeeamProbe":
        same = [job for job, copy in self.copy_jobs.items() if copy == self.copy]
        if same:
            raise ValueError(f"copy_jobs: {', '.join(same)} would be the probe's own copy {self.copy!r}; "
                             "a backup-copy job is a further copy")
        return self

    def all_copies(self) -> list[str]:
        return [self.copy, *sorted(set(self.copy_jobs.values()))]

    def systems_covered(self) -> set[str]:
        return {rule.system for rule in self.systems}

    def copies_of(self, system: str) -> list[str]:
        rules = [rule for rule in self.systems if rule.system == system]
        if not rules or any(rule.copies is None for rule in rules):
            return self.all_copies()
        wanted = {copy for rule in rules for copy in rule.copies or []}
        return [copy for copy in self.all_copies() if copy in wanted]

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        copies = loaded.config.copies
        problems = [(f"copy_jobs.{job}", f"unknown copy {copy!r} (known: {', '.join(sorted(copies)) or 'none'})")
                    for job, copy in self.copy_jobs.items() if copy not in copies]
        for i, rule in enumerate(self.systems):
            if (problem := loaded.unknown_system(rule.system)):
                problems.append((f"systems[{i}].system", problem))
            for copy in rule.copies or []:
                if copy not in self.all_copies():
                    problems.append((f"systems[{i}].copies", f"{copy!r} is not a copy of this probe "
                                                             f"(its copies: {', '.join(self.all_copies())})"))
        return problems

    def endpoint(self) -> "Endpoint":
        from drcheck.clients.veeam import Endpoint

        return Endpoint(url=self.url, username=self.username, password=self.password.ref(), ca_bundle=self.ca_bundle,
                        insecure=self.insecure, api_version=self.api_version,
                        timeout=self.call_timeout.total_seconds(), retries=self.retries, page_size=self.page_size)

    def system_of(self, vm: str) -> str | None:
        """The system of the first rule matching VM `vm`, or None."""
        return next((rule.system for rule in self.systems if rule.matches(vm)), None)


def copy_of(target: VeeamProbe, backup: "Backup", jobs: dict[str, "Job"]) -> str | None:
    """The copy a backup is: a backup-copy job's mapped copy, the probe's `copy` for every
    other job's, None for an unmapped backup-copy job's. A backup whose job is gone is
    judged by its name (Veeam names a backup after its job)."""
    job = jobs.get(backup.job_id or "")
    name = job.name if job else backup.name
    if name in target.copy_jobs:
        return target.copy_jobs[name]
    return None if job is not None and job.is_copy else target.copy


# -- action: points ----------------------------------------------------------------------


@dataclass
class _Held:
    """What `points` keeps of one VM in one copy: its newest clean point and how many
    clean points it has there (memory per VM, not per point)."""

    newest: "Point"
    count: int = 1


def points(target: VeeamProbe, ctx: "RunContext") -> ProbeResult:
    """List every restore point: per system and copy the newest clean point (of its
    stalest VM) and its count of clean points; a CRITICAL finding per point Veeam marks
    Suspicious or Infected; a `backup` asset per VM and copy (matched to inventory VMs by
    name, rule R3). Points are folded in page by page as they arrive. An unreadable
    server is an ERROR result with the client's reason."""
    from drcheck.clients.veeam import Veeam

    result = ProbeResult.begin(ctx, target, "points")
    held: dict[tuple[str, str], _Held] = {}  # (copy, vm name) ->
    platform: dict[str, str] = {}  # vm name -> Veeam's platform, for VMs in a known copy
    job_systems: dict[str, set[str]] = defaultdict(set)
    not_clean: list["Point"] = []
    system_of = functools.lru_cache(maxsize=None)(target.system_of)  # 30 points a VM: match each name once
    listed = 0
    try:
        with Veeam(target.endpoint(), who=f"probe {ctx.name}") as veeam:
            jobs = {job.id: job for job in veeam.jobs()}
            backups = veeam.backups()
            copies = {b.id: copy_of(target, b, jobs) for b in backups}
            job_of = {b.id: b.job_id for b in backups}
            for point in veeam.each_restore_point():
                listed += 1
                copy = copies.get(point.backup_id, target.copy)
                if not point.clean:
                    not_clean.append(point)
                if copy is None:
                    continue
                platform.setdefault(point.name, point.platform)
                if (job := job_of.get(point.backup_id)) and (system := system_of(point.name)):
                    job_systems[job].add(system)
                if point.clean:
                    _hold(held, (copy, point.name), point)
            requests = veeam.rest.requests
    except SourceError as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        return result.conclude(ctx)
    result.findings += [_malware_finding(p, copies.get(p.backup_id, target.copy), system_of(p.name))
                        for p in sorted(not_clean, key=lambda p: p.created, reverse=True)]
    _system_points(target, held, platform, system_of, result)
    result.assets = _assets(ctx.name, held, system_of, platform)
    result.findings += [Finding(Severity.WARNING, "copy_job_unmapped",
                                f"backup copy job {job.name!r} is no copy drcheck knows: add it to copy_jobs",
                                subject=f"job:{job.id}")
                        for job in sorted(jobs.values(), key=lambda j: j.name)
                        if job.is_copy and job.name not in target.copy_jobs]
    result.details = {"jobs": len(jobs), "backups": len(backups), "restore_points": listed, "vms": len(platform),
                      "unmapped_vms": sorted(vm for vm in platform if system_of(vm) is None)[:50],
                      "not_clean": len(not_clean), "requests": requests,
                      "job_systems": {job: sorted(s) for job, s in sorted(job_systems.items())}}
    result.reason = (f"{listed} restore points of {len(platform)} VMs in {len(target.all_copies())} "
                     f"cop{'y' if len(target.all_copies()) == 1 else 'ies'}")
    return result.conclude(ctx)


def _hold(held: dict[tuple[str, str], _Held], key: tuple[str, str], point: "Point") -> None:
    known = held.get(key)
    if known is None:
        held[key] = _Held(point)
        return
    known.count += 1
    if point.created > known.newest.created:
        known.newest = point


def _malware_finding(point: "Point", copy: str | None, system: str | None) -> Finding:
    status = point.malware_status
    where = f"in {copy}" if copy else "in an unmapped backup copy"
    return Finding(Severity.CRITICAL, f"point_{status.lower()}",
                   f"Veeam marks the restore point of VM {point.name} taken {point.created:%Y-%m-%d %H:%M} UTC "
                   f"{where} as {status}: it is never counted as a clean point", system, subject=f"point:{point.id}")


def _system_points(target: VeeamProbe, held: dict[tuple[str, str], _Held], seen: Iterable[str],
                   system_of: Callable[[str], str | None], result: ProbeResult) -> None:
    """Per system and copy: the newest clean point of its stalest VM, when every VM of the
    system seen in any copy (`seen`, even with no clean point) has one there, counted as
    the clean points of its VM with the fewest there."""
    vms_of: dict[str, set[str]] = defaultdict(set)
    for vm in seen:
        if (system := system_of(vm)):
            vms_of[system].add(vm)
    for system in sorted(target.systems_covered()):
        vms = vms_of.get(system)
        if not vms:
            continue
        for copy in target.copies_of(system):
            found = {vm: held.get((copy, vm)) for vm in vms}
            if not all(found.values()):
                missing = sorted(vm for vm, known in found.items() if known is None)
                if len(missing) < len(vms):  # part of the system is not in this copy
                    result.findings.append(Finding(
                        Severity.WARNING, "vm_missing_in_copy",
                        f"VM {', '.join(missing)} of {system} has no clean restore point in {copy}: "
                        f"the system has none there", system, subject=f"copy:{copy}"))
                continue
            stalest = min(vms, key=lambda vm: found[vm].newest.created)
            newest = found[stalest].newest
            result.newest.append(RestorePoint(system=system, copy=copy, point_time=newest.created, point_id=newest.id,
                                              host=stalest, count=min(known.count for known in found.values())))


def _assets(probe: str, held: dict[tuple[str, str], _Held], system_of: Callable[[str], str | None],
            platform: dict[str, str]) -> list[InventoryAsset]:
    """One `backup` asset per VM and copy with a clean point (drcheck.protection)."""
    assets = []
    for (copy, vm), known in sorted(held.items()):
        key = "vm_name" if platform.get(vm, "VMware") == "VMware" else "hostname"
        assets.append(InventoryAsset(source=probe, asset_id=f"{copy}:{host_key(vm) if key == 'hostname' else vm}",
                                     name=vm, protected=True, system=system_of(vm), kind=BACKUP_KIND,
                                     attributes={"copy": copy, "newest": known.newest.created.isoformat(),
                                                 "point_id": known.newest.id, "points": known.count,
                                                 "match": {key: vm}}))
    return assets


# -- action: sessions --------------------------------------------------------------------


def sessions(target: VeeamProbe, ctx: "RunContext") -> ProbeResult:
    """The last session of every job: Failed is a CRITICAL finding, Warning a WARNING one,
    each with Veeam's own message (subject `job:<id>`; the systems whose VMs the job's
    backups hold, from the last `points` run, when known). A server drcheck cannot read
    is an ERROR result."""
    from drcheck.clients.veeam import Veeam

    result = ProbeResult.begin(ctx, target, "sessions")
    job_systems = _job_systems(ctx)
    counts: dict[str, int] = defaultdict(int)
    try:
        with Veeam(target.endpoint(), who=f"probe {ctx.name}") as veeam:
            states = veeam.job_states()
            for state in sorted(states, key=lambda s: s.name):
                counts[state.last_result] += 1
                if state.last_result not in ("Failed", "Warning"):
                    continue
                session = veeam.session(state.session_id) if state.session_id else veeam.last_session(state.id)
                result.findings += _session_findings(state, session, job_systems.get(state.id, []))
    except SourceError as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        return result.conclude(ctx)
    result.details = {"jobs": len(states), "last_results": dict(sorted(counts.items()))}
    result.reason = ", ".join(f"{n} {what.lower()}" for what, n in sorted(counts.items())) or "no jobs"
    # a failed job is judged per system it backs up (its CRITICAL finding, R10.source_findings),
    # not as a failed read of the server, which would fail every system this probe covers
    return result.conclude(ctx, fail_on_critical=False)


def _session_findings(state, session, systems: Iterable[str]) -> list[Finding]:
    severity = Severity.CRITICAL if state.last_result == "Failed" else Severity.WARNING
    when = session.ended or session.created if session else state.last_run
    said = session.message if session and session.message else "Veeam gives no message"
    text = (f"last session {state.last_result.lower()}" + (f" ({when:%Y-%m-%d %H:%M} UTC)" if when else "")
            + f": {said}")
    code = "session_failed" if severity is Severity.CRITICAL else "session_warning"
    # one finding per system the job backs up, so each system's verdict (R10.source_findings) has it
    return [Finding(severity, code, f"job {state.name!r}" + (f" (backs up {system})" if system else "") + f": {text}",
                    system, subject=f"job:{state.id}") for system in (sorted(systems) or [None])]


def _job_systems(ctx: "RunContext") -> dict[str, list[str]]:
    """Job id -> the systems whose VMs its backups hold, as the last successful `points`
    run of this probe recorded them (empty before the first)."""
    rows = ctx.store.query("SELECT details FROM probe_runs WHERE probe = ? AND action = 'points' "
                           "AND status != 'error' ORDER BY id DESC LIMIT 1", [ctx.name])
    try:
        found = json.loads(rows[0]["details"] or "{}").get("job_systems", {}) if rows else {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


Target = VeeamProbe
ACTIONS = {"points": points, "sessions": sessions}
LISTS_POINTS = frozenset({"points"})
ACTION_TIMEOUTS = {"points": timedelta(minutes=10), "sessions": timedelta(minutes=5)}


class LabVeeam:
    """Demo support: the project's Veeam REST replay (`drcheck.lab_veeam`) at this probe's
    URL, trusted through its `ca_bundle`, logged into with its username and password file."""

    def __init__(self, target: VeeamProbe, loaded: Any):
        self.target, self.loaded = target, loaded
        self._replay = None

    def owned_paths(self) -> list[Any]:
        password = self.target.password.ref().file_path()
        if password is None or self.target.ca_bundle is None:
            raise ValueError("the demo's Veeam server needs password = { file = … } and ca_bundle")
        return [password, self.target.ca_bundle.parent]

    def init(self) -> None:
        from drcheck import demo_veeam

        demo_veeam.init(self.target, self.loaded)

    def start(self) -> None:
        from drcheck import demo_veeam

        self._replay = demo_veeam.start(self.target, self.loaded)

    def stop(self) -> None:
        if self._replay is not None:
            self._replay.stop()
            self._replay = None


def lab_peer(target: VeeamProbe, loaded: Any) -> LabVeeam:
    """Demo support: the Veeam replay server holding what `loaded` names (drcheck demo)."""
    return LabVeeam(target, loaded)
