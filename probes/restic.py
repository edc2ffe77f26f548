"""restic repositories: which systems have restore points, how old, and is the repository
intact (`restic check --read-data-subset`)."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import PurePosixPath

from drcheck.clients.restic import ResticError, ResticRepository, Snapshot
from drcheck.config import ResticProbe, SystemMapping
from drcheck.context import RunContext
from drcheck.durations import format_duration
from drcheck.results import Finding, ProbeResult, RestorePoint, Severity, SnapshotFile, Status
from drcheck.sandbox import check_entry
from drcheck.secrets import SecretUnavailable

log = logging.getLogger(__name__)


def repository(target: ResticProbe) -> ResticRepository:
    """Return the client for the repository a restic probe names."""
    return ResticRepository(
        target.repository,
        target.password.ref(),
        command=target.restic_command,
        environment={k: (v.ref() if hasattr(v, "ref") else v) for k, v in target.environment.items()},
        timeout=target.timeout.total_seconds(),
    )


def matches(snapshot: Snapshot, rule: SystemMapping) -> bool:
    """True when the snapshot satisfies every criterion the rule gives."""
    if rule.hosts and snapshot.hostname not in rule.hosts:
        return False
    if rule.tags and not set(rule.tags) <= set(snapshot.tags):
        return False
    if rule.paths:
        snap_paths = [PurePosixPath(p) for p in snapshot.paths]
        for wanted in rule.paths:
            wanted = PurePosixPath(wanted)
            if not any(wanted == p or p in wanted.parents for p in snap_paths):
                return False
    return True


def snapshots_by_system(snapshots: list[Snapshot], rules: list[SystemMapping]) -> dict[str, list[Snapshot]]:
    """Group snapshots (oldest first) by the systems whose rules they match."""
    grouped: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in snapshots:
        for system in {rule.system for rule in rules if matches(snap, rule)}:
            grouped[system].append(snap)
    return grouped


def newest_for(target: ResticProbe, system: str, repo: ResticRepository) -> Snapshot | None:
    """Return the newest snapshot of `system` in the repository, or None."""
    snaps = snapshots_by_system(repo.snapshots(), [r for r in target.systems if r.system == system])
    return snaps[system][-1] if snaps.get(system) else None


def probe(target: ResticProbe, ctx: RunContext) -> ProbeResult:
    """List snapshots, map them to systems and flag systems without a point within RPO."""
    started = ctx.now()
    result = ProbeResult(probe=ctx.name, kind="restic", action="snapshots", status=Status.OK,
                         started_at=started, finished_at=started, copy=target.copy)
    try:
        snapshots = repository(target).snapshots()
    except (ResticError, SecretUnavailable) as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        result.finished_at = ctx.now()
        return result
    grouped = snapshots_by_system(snapshots, target.systems)
    runbooks = ctx.loaded.runbooks
    for system in sorted({rule.system for rule in target.systems}):
        snaps = grouped.get(system, [])
        if not snaps:
            result.findings.append(Finding(Severity.CRITICAL, "no_restore_point",
                                           f"no snapshot in {target.copy} matches {system}", system))
            continue
        newest = snaps[-1]
        result.point_counts[system] = len(snaps)
        result.newest.append(RestorePoint(system=system, copy=target.copy, point_time=newest.time,
                                          point_id=newest.id, host=newest.hostname, paths=newest.paths))
        age = (started - newest.time).total_seconds()
        rpo = runbooks[system].rpo.total_seconds() if system in runbooks else None
        if rpo is not None and age > rpo:
            result.findings.append(Finding(
                Severity.CRITICAL, "rpo_breach",
                f"newest snapshot of {system} in {target.copy} is {format_duration(age)} old, "
                f"RPO target {format_duration(rpo)}", system))
    unmapped = [s for s in snapshots if not any(matches(s, r) for r in target.systems)]
    if unmapped:
        result.findings.append(Finding(Severity.WARNING, "unmapped_snapshots",
                                       f"{len(unmapped)} snapshot(s) match no system rule"))
    result.details = {"snapshots": len(snapshots), "unmapped": len(unmapped)}
    critical = [f for f in result.findings if f.severity is Severity.CRITICAL]
    if critical:
        result.status = Status.FAILED
        result.reason = "; ".join(f.message for f in critical)
    result.finished_at = ctx.now()
    return result


def check(target: ResticProbe, ctx: RunContext) -> ProbeResult:
    """Run `restic check --read-data-subset`; a damaged repository is a failed result."""
    started = ctx.now()
    result = ProbeResult(probe=ctx.name, kind="restic", action="check", status=Status.OK,
                         started_at=started, finished_at=started, copy=target.copy)
    subset = target.check.read_data_subset
    try:
        limit = target.check.timeout or ctx.loaded.config.agent.job_timeout
        summary = repository(target).check(subset, timeout=limit.total_seconds())
        result.reason = f"read {subset} of data: {summary}"
    except SecretUnavailable as exc:
        result.status, result.reason = Status.ERROR, str(exc)
    except ResticError as exc:
        result.status = Status.FAILED if exc.damaged else Status.ERROR
        result.reason = f"repository check failed: {exc}" if exc.damaged else str(exc)
    result.details = {"read_data_subset": subset}
    result.finished_at = ctx.now()
    return result



class FileSource:
    """Restore access to one system's snapshots, for file restore tests.

    The contract every file-backup probe kind offers: `newest(system)`, `files(point,
    include)` (regular files as recorded, after refusing any entry that would escape a
    restore target) and `restore(point, dest, include, timeout)`.
    """

    def __init__(self, target: ResticProbe):
        self.target = target
        self.repo = repository(target)

    def newest(self, system: str) -> Snapshot | None:
        return newest_for(self.target, system, self.repo)

    def files(self, point_id: str, include: list[str]) -> list[SnapshotFile]:
        """Return the snapshot's regular files under `include`; raise SandboxRefused for an
        entry that would escape a restore target."""
        listed = []
        for entry in self.repo.ls(point_id, include):
            check_entry(entry.path)
            if entry.type == "file":
                listed.append(SnapshotFile(entry.path, entry.size, entry.mtime))
        return listed

    def restore(self, point: Snapshot, dest, include: list[str], timeout: float | None) -> None:
        """Restore the point into dest; only `include` when the snapshot holds more."""
        whole = not include or all(_under_any(p, include) for p in point.paths)
        self.repo.restore(point.id, dest, [] if whole else include, timeout=timeout)


def _under_any(path: str, roots: list[str]) -> bool:
    """True when `path` is one of `roots` or below one (no roots: everything is)."""
    if not roots:
        return True
    candidate = PurePosixPath(path)
    return any(candidate == PurePosixPath(r) or PurePosixPath(r) in candidate.parents for r in roots)


def file_source(target: ResticProbe) -> FileSource:
    return FileSource(target)
