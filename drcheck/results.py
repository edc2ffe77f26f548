"""Result dataclasses: what probes and restore tests return, and what the store records.

Probes and restore tests never talk to metrics or reports; they return these. Every
timestamp is timezone-aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


class Status(str, enum.Enum):
    """Outcome of a probe, restore test or check.

    ok/passed: everything verified. failed: the thing under test is wrong (stale backup,
    checksum mismatch, failed repository check). error: drcheck could not find out
    (unreachable, wrong password, timeout); an error is never counted as a pass.
    skipped: not run because another run of the same job was in progress; neither a pass
    nor a failure, never the run a verdict or a measured time comes from.
    """

    OK = "ok"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"

    @property
    def good(self) -> bool:
        return self in (Status.OK, Status.PASSED)


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class RestorePoint:
    """One restorable point in time of one system in one copy; `count` is how many points
    the system has in that copy, when the kind knows."""

    system: str
    copy: str
    point_time: datetime
    point_id: str
    size_bytes: int | None = None
    status: str = "ok"
    host: str | None = None
    paths: tuple[str, ...] = ()
    count: int | None = None


@dataclass(frozen=True)
class SnapshotFile:
    """An entry as a restore point recorded it (absolute path, size, mtime, and its type:
    "file", "dir", "symlink", … as the kind names them; kinds listing only regular files
    may leave the default)."""

    path: str
    size: int
    mtime: datetime | None
    type: str = "file"


@dataclass(frozen=True)
class Finding:
    """Something a probe noticed: a point of the wrong source, unmapped snapshots, an old
    VM snapshot. `subject` names the object it is about when a code can apply to several
    (`vm:<uuid>`, `datastore:<moref>`), so each object's finding keeps its own history."""

    severity: Severity
    code: str
    message: str
    system: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class InventoryAsset:
    """An asset a source knows about (a VM in vCenter); protected or not.

    `asset_id` is the source's stable key (a VM's instance UUID), so a rename is a change of
    the same asset; `kind` says what it is ("vm", "database", ...); `attributes` holds
    kind-specific facts (JSON-serialisable: power state, guest OS, datastore, ...).
    """

    source: str
    asset_id: str
    name: str
    protected: bool
    system: str | None = None
    kind: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class ProbeResult:
    """What one probe run found. `newest` holds the newest point per system and copy (the
    probe's own `copy`, and further copies for kinds that see several), each with its count."""

    probe: str
    kind: str
    action: str
    status: Status
    started_at: datetime
    finished_at: datetime
    reason: str = ""
    copy: str | None = None
    newest: list[RestorePoint] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    assets: list[InventoryAsset] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def point_counts(self) -> dict[str, int]:
        """System -> how many points it has in the probe's own copy (in another copy when
        the system is not in its own)."""
        counts: dict[str, int] = {}
        for p in self.newest:
            if p.count is not None and (p.copy == self.copy or p.system not in counts):
                counts[p.system] = p.count
        return counts

    @classmethod
    def begin(cls, ctx, target, action: str) -> "ProbeResult":
        """An OK result of `action` of the probe `ctx` runs, starting now."""
        started = ctx.now()
        return cls(probe=ctx.name, kind=target.kind, action=action, status=Status.OK,
                   started_at=started, finished_at=started, copy=target.copy)

    def conclude(self, ctx, fail_on_critical: bool = True) -> "ProbeResult":
        """End the result now: FAILED (reason: their messages) when a CRITICAL finding was
        made and it is not already an error, unless `fail_on_critical` is False (an
        inventory that read everything is OK whatever it found). Return it."""
        critical = [f.message for f in self.findings if f.severity is Severity.CRITICAL]
        if critical and fail_on_critical and self.status is Status.OK:
            self.status, self.reason = Status.FAILED, "; ".join(critical)
        self.finished_at = ctx.now()
        return self

    @property
    def lists_points(self) -> bool:
        """True when this run's action lists the copy's restore points (its kind declares
        it in `LISTS_POINTS`), so a successful run replaces the copy's current points."""
        from drcheck.kinds import lists_points

        return lists_points(self.kind, self.action)


@dataclass
class CheckResult:
    """One verification of a restored thing: passed or failed, with evidence."""

    name: str
    status: Status
    evidence: str
    duration_seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RestoreTestResult:
    """One restore test: the point restored, the checks, and the measured times.

    rto_seconds = restore start -> last check passed (only set when every check passed);
    rpo_seconds = test start - restore point time (or newest canary time, see rpo_source).
    """

    test: str
    kind: str
    system: str
    status: Status
    started_at: datetime
    finished_at: datetime
    reason: str = ""
    probe: str | None = None
    copy: str | None = None
    point_id: str | None = None
    point_time: datetime | None = None
    restore_seconds: float | None = None
    verify_seconds: float | None = None
    rto_seconds: float | None = None
    rpo_seconds: float | None = None
    rpo_source: str | None = None
    rto_target_seconds: float | None = None
    rpo_target_seconds: float | None = None
    files_restored: int | None = None
    bytes_restored: int | None = None
    sandbox: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific (VM: clone name, guest IP, ...)

    def judge(self, verdicts: list[CheckResult], rto_seconds: float) -> None:
        """Set status and reason from `verdicts`: FAILED when a check failed or a target was
        missed, ERROR when a check could not run (and none failed), PASSED otherwise. The
        measured RTO (`rto_seconds`: restore start to the last passing check) is recorded
        only when every check passed; the achieved RPO is judged whatever happened."""
        from drcheck.durations import format_duration

        failed = [f"{c.name}: {c.evidence}" for c in verdicts if c.status is Status.FAILED]
        errored = [f"{c.name}: {c.evidence}" for c in verdicts if c.status is Status.ERROR]
        if not failed and not errored:
            self.rto_seconds = rto_seconds
            if self.rto_target_seconds is not None and rto_seconds > self.rto_target_seconds:
                failed.append(f"measured RTO {format_duration(rto_seconds)} exceeds target "
                              f"{format_duration(self.rto_target_seconds)}")
        if self.rpo_seconds is not None and self.rpo_target_seconds is not None \
                and self.rpo_seconds > self.rpo_target_seconds:
            source = f" ({self.rpo_source})" if self.rpo_source else ""
            failed.append(f"achieved RPO {format_duration(self.rpo_seconds)}{source} exceeds "
                          f"target {format_duration(self.rpo_target_seconds)}")
        self.status = Status.FAILED if failed else Status.ERROR if errored else Status.PASSED
        self.reason = "; ".join(failed + errored)
