"""restic repositories: which systems have restore points, how old, and is the repository
intact (`restic check --read-data-subset`).

Actions: `snapshots` (list snapshots, map them to systems; the default) and `check`.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator

from drcheck.clients import SourceError, process
from drcheck.clients.restic import ResticRepository, Snapshot
from drcheck.config_types import SECRET_HINT, Environment, SecretSpec, environment_for_client, resolve_path
from drcheck.coverage import PointFacts, WrongSourceConfig, wrong_source
from drcheck.kinds import ActionConfig, FileBackupTarget, integrity_check
from drcheck.mapping import by_identity, under_any
from drcheck.protection import backed_up
from drcheck.results import Finding, ProbeResult, RestorePoint, Severity, SnapshotFile, Status
from drcheck.sandbox import check_entry
from drcheck.secrets import write_secret_file

if TYPE_CHECKING:
    from drcheck.context import RunContext

log = logging.getLogger(__name__)


class RepositoryCheck(ActionConfig):
    """The repository integrity check (`restic check --read-data-subset`)."""

    read_data_subset: str = Field(
        "5%",
        pattern=r"^(\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$",
        description="share of pack data to read and verify each run: '5%', '1/7', '2G'",
    )


class ResticProbe(FileBackupTarget):
    """A restic repository (local path, sftp:, s3:, rest:, …)."""

    kind: Literal["restic"]
    repository: str = Field(..., min_length=1, description="repository location as restic takes it")
    password: SecretSpec = Field(..., description="repository password (secret reference)")
    restic_command: str = Field("restic", description="restic binary")
    environment: Environment = Field(
        default_factory=dict,
        description="extra environment for restic (e.g. AWS_ACCESS_KEY_ID = { env = '…' })",
    )
    snapshots: ActionConfig = Field(
        default_factory=ActionConfig, description="list snapshots and map them to systems (default limit 10m)"
    )
    check: RepositoryCheck = Field(default_factory=RepositoryCheck, description="repository integrity check")
    confine_restores: bool = Field(
        True, strict=True,
        description="run restores confined by Landlock to the sandbox, restic's cache and a private temp dir "
                    "(when the kernel offers it); turn off only for backends whose helper must write elsewhere "
                    "(an sftp: repository whose ssh keeps a ControlMaster socket under ~/.ssh)",
    )
    wrong_source: WrongSourceConfig = Field(
        default_factory=WrongSourceConfig,
        description="flag a newest snapshot that misses a system's paths or shrank (measured once per snapshot "
                    "with `restic stats --mode restore-size`)",
    )

    @field_validator("repository", mode="after")
    @classmethod
    def _repository(cls, value: str, info: ValidationInfo) -> str:
        if re.search(r"://[^/@\s]*:[^/@\s]+@", value):
            raise ValueError(f"credentials inside the repository URL are inline secrets; {SECRET_HINT}")
        if re.match(r"^[a-z0-9]+:", value) and not re.match(r"^[A-Za-z]:\\", value):
            return value
        return str(resolve_path(Path(value), info))

    def proven_facts(self) -> dict[str, set[str]]:
        """restic encrypts every repository (AES-256, a key only the password opens): a
        repository this probe can list is encrypted at rest."""
        return {self.copy: {"encrypted_at_rest"}}


def repository(target: ResticProbe) -> ResticRepository:
    """Return the client for the repository a restic probe names."""
    return ResticRepository(
        target.repository,
        target.password.ref(),
        command=target.restic_command,
        environment=environment_for_client(target.environment),
        timeout=target.snapshots.timeout.total_seconds() if target.snapshots.timeout else LISTING_TIMEOUT_SECONDS,
    )


def newest_for(target: ResticProbe, system: str, repo: ResticRepository) -> Snapshot | None:
    """Return the newest snapshot of `system` in the repository (see `by_identity`: it may
    be one taken of the wrong paths, which the restore then shows), or None."""
    snaps = by_identity(repo.snapshots(), target.systems).get(system, [])
    return snaps[-1] if snaps else None


def _cached_sizes(ctx: RunContext) -> dict[str, list[int]]:
    """Snapshot sizes [bytes, files] this probe measured before (its last listing's details)."""
    rows = ctx.store.query("SELECT details FROM probe_runs WHERE probe = ? AND action = 'snapshots' "
                           "AND status != 'error' ORDER BY id DESC LIMIT 1", [ctx.name])
    try:
        sizes = json.loads(rows[0]["details"] or "{}").get("point_sizes", {}) if rows else {}
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {k: v for k, v in sizes.items() if isinstance(v, list) and len(v) == 2} if isinstance(sizes, dict) else {}


def _sizes(target: ResticProbe, ctx: RunContext, repo: ResticRepository, wanted: list[Snapshot],
           result: ProbeResult) -> dict[str, list[int]]:
    """[bytes, files] of each wanted snapshot: from the cache, else measured once (a point
    is measured when it first becomes a system's newest, or its predecessor)."""
    cached = _cached_sizes(ctx)
    sizes = {}
    for snap in wanted:
        if snap.id in sizes:
            continue
        if snap.id not in cached:
            try:
                cached[snap.id] = list(repo.stats(snap.id))
            except SourceError as exc:
                result.findings.append(Finding(Severity.WARNING, "point_size_unknown",
                                               f"cannot measure snapshot {snap.id[:8]}: {exc}"))
                continue
        sizes[snap.id] = cached[snap.id]
    return sizes


def snapshots(target: ResticProbe, ctx: RunContext) -> ProbeResult:
    """List snapshots and map them to systems: each system's newest point and count. Facts
    only: how old is too old is the rules' judgement (R2.backup_age), made once. A newest
    point taken of the wrong source is a CRITICAL finding (it is about the point itself)."""
    result = ProbeResult.begin(ctx, target, "snapshots")
    repo = repository(target)
    try:
        snapshots = repo.snapshots()
    except SourceError as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        return result.conclude(ctx)
    grouped = by_identity(snapshots, target.systems)
    judged = target.wrong_source
    wanted = [s for snaps in grouped.values() for s in snaps[-2:]] if judged.enabled and judged.min_fraction else []
    sizes = _sizes(target, ctx, repo, wanted, result)
    for system in sorted({rule.system for rule in target.systems}):
        snaps = grouped.get(system, [])
        if not snaps:  # a fact for the rules (R2.backup_age), which judge it: no finding here
            continue
        newest = snaps[-1]
        size = sizes.get(newest.id, [None, None])
        result.newest.append(RestorePoint(system=system, copy=target.copy, point_time=newest.time,
                                          point_id=newest.id, host=newest.hostname, paths=newest.paths,
                                          size_bytes=size[0], count=len(snaps)))
        facts = [PointFacts(s.id, s.paths, *sizes.get(s.id, [None, None])) for s in snaps[-2:]]
        finding = wrong_source(system, target.copy, [str(p) for p in target.source_paths(system)],
                               facts[-1], facts[0] if len(facts) == 2 else None, judged)
        if finding:
            result.findings.append(finding)
    system_of = {id(s): system for system, points in grouped.items() for s in points}
    result.assets = backed_up(ctx.name, target.copy,
                              ((s.hostname, s.time, s.id, system_of.get(id(s))) for s in snapshots))
    unmapped = [s for s in snapshots if id(s) not in system_of]
    if unmapped:
        result.findings.append(Finding(Severity.WARNING, "unmapped_snapshots",
                                       f"{len(unmapped)} snapshot(s) match no system rule"))
    result.details = {"snapshots": len(snapshots), "unmapped": len(unmapped), "point_sizes": sizes}
    return result.conclude(ctx)


def check(target: ResticProbe, ctx: RunContext) -> ProbeResult:
    """Run `restic check --read-data-subset`; a damaged repository is a failed result."""
    subset = target.check.read_data_subset

    def run(limit: float) -> str:
        return f"read {subset} of data: {repository(target).check(subset, timeout=limit)}"

    return integrity_check(target, ctx, run, {"read_data_subset": subset})



class FileSource:
    """Restore access to one system's snapshots, for file restore tests.

    The contract every file-backup probe kind offers (drcheck.kinds.FileSource):
    `newest(system)`, `files(point, include)` (entries as recorded, after refusing any
    entry that would escape a restore target) and `restore(point, dest, include, timeout)`;
    plus the confining extension (drcheck.kinds.ConfiningFileSource): restic restores run
    confined to writing into `dest` whenever the kernel offers Landlock
    (`confines_writes`), so a restore may start before its listing was checked.
    """

    def __init__(self, target: ResticProbe):
        self.target = target
        self.repo = repository(target)

    @property
    def confines_writes(self) -> bool:
        return self.target.confine_restores and self.repo.confines_restores()

    def newest(self, system: str) -> Snapshot | None:
        return newest_for(self.target, system, self.repo)

    def files(self, point_id: str, include: list[str]) -> list[SnapshotFile]:
        """Return every entry of the snapshot under `include` (all of it when empty), with its
        type; raise SandboxRefused for an entry that would escape a restore target."""
        listed = []
        for entry in self.repo.ls(point_id, include):
            check_entry(entry.path)
            listed.append(SnapshotFile(entry.path, entry.size if entry.type == "file" else 0, entry.mtime,
                                       entry.type or "file"))
        return listed

    def restore(self, point: Snapshot, dest, include: list[str], timeout: float | None,
                confined: bool = False, cancel: process.Cancel | None = None) -> None:
        """Restore the point into dest; only `include` when the snapshot holds more.

        restic is confined to writing into dest whenever Landlock is available; with
        `confined=True` confinement is required (ResticError when it is unavailable), and
        `cancel` (process.Cancel) may kill the restore (process.CommandCancelled)."""
        whole = not include or all(under_any(p, include) for p in point.paths)
        extra: dict = {"confine_writes": True} if confined else {}
        if not self.target.confine_restores:
            extra["confine_writes"] = False
        if cancel is not None:
            extra["cancel"] = cancel
        self.repo.restore(point.id, dest, [] if whole else include, timeout=timeout, **extra)


def file_source(target: ResticProbe) -> FileSource:
    return FileSource(target)


class LabRepository:
    """Demo support: a local repository with a password file, and dated backups."""

    def __init__(self, target: ResticProbe):
        self.target = target
        self.repo = repository(target)

    def owned_paths(self) -> list[Path]:
        if ":" in self.target.repository or self.target.password.file is None:
            raise ValueError("not a local restic repository with a password file")
        return [Path(self.target.repository), self.target.password.file]

    def init(self) -> None:
        """Write a random password file, then create the repository."""
        write_secret_file(self.target.password.file)
        self.repo.init()

    def backup(self, paths: list[Path], host: str, tags: list[str], when) -> None:
        self.repo.backup(paths, host=host, tags=tags, when=when)


def lab_repository(target: ResticProbe) -> LabRepository:
    return LabRepository(target)


Target = ResticProbe
ACTIONS = {"snapshots": snapshots, "check": check}
LISTS_POINTS = frozenset({"snapshots"})
LISTING_TIMEOUT_SECONDS = 600
ACTION_TIMEOUTS = {"snapshots": timedelta(seconds=LISTING_TIMEOUT_SECONDS)}
