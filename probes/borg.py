"""borg 1.x repositories: which systems have archives, how old, and is the repository
intact (`borg check --verify-data`).

Actions: `archives` (list archives, map them to systems; the default) and `check`.

borg 1.2 archives have a name, the host and user that made them and a time, but no tags
and no list of source paths. Rules map them by `hosts` and `name_glob`; a rule's `paths`
match the paths named on the archive's `borg create` command line when drcheck can tell
them for certain (plain path arguments and `--pattern R` roots), and are always where the
live source is and what a restore extracts.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from drcheck.clients import SourceError
from drcheck.clients.borg import Archive, BorgError, BorgRepository
from drcheck.config_types import (SECRET_HINT, ConfigPath, Duration, Environment, SecretSpec, environment_for_client,
                                  resolve_path)
from drcheck.coverage import PointFacts, WrongSourceConfig, wrong_source
from drcheck.kinds import ActionConfig, FileBackupTarget, integrity_check
from drcheck.mapping import SystemMapping, by_system
from drcheck.protection import backed_up
from drcheck.results import Finding, ProbeResult, RestorePoint, Severity, SnapshotFile, Status
from drcheck.sandbox import SandboxRefused, check_entry
from drcheck.secrets import write_secret_file

if TYPE_CHECKING:
    from drcheck.context import RunContext

log = logging.getLogger(__name__)


class ArchiveCheck(ActionConfig):
    """The repository integrity check (`borg check`)."""

    verify_data: bool = Field(True, description="decrypt and verify every chunk (--verify-data); slow, thorough")
    only: Literal["repository", "archives"] | None = Field(
        None, description="check only the repository (segments, index) or only the archives (default: both)")
    last: int | None = Field(None, ge=1, description="check only the last N archives (--last)")

    @model_validator(mode="after")
    def _consistent(self) -> "ArchiveCheck":
        if self.only == "repository" and (self.verify_data or self.last):
            raise ValueError("verify_data and last check archives; set verify_data = false and drop last "
                             "with only = 'repository'")
        return self


class BorgProbe(FileBackupTarget):
    """A borg 1.x repository (local path or ssh:// URL)."""

    kind: Literal["borg"]
    repository: str = Field(..., min_length=1, description="repository location as borg takes it (path or ssh://…)")
    passphrase: SecretSpec = Field(..., description="repository passphrase (secret reference)")
    borg_command: str = Field("borg", description="borg 1.x binary")
    environment: Environment = Field(
        default_factory=dict, description="extra environment for borg (e.g. BORG_RSH, BORG_REMOTE_PATH)")
    base_dir: ConfigPath | None = Field(
        None, description="borg's own cache and security records (BORG_BASE_DIR; default ~/.cache/drcheck/borg)")
    key_file: ConfigPath | None = Field(None, description="key of a keyfile-mode repository (BORG_KEY_FILE)")
    lock_wait: Duration = Field(timedelta(minutes=1), description="how long to wait for a repository lock")
    archives: ActionConfig = Field(
        default_factory=ActionConfig, description="list archives and map them to systems (default limit 10m)")
    check: ArchiveCheck = Field(default_factory=ArchiveCheck, description="repository integrity check")
    wrong_source: WrongSourceConfig = Field(
        default_factory=WrongSourceConfig,
        description="judge whether each system's newest archive still covers the system's paths")

    @field_validator("repository", mode="after")
    @classmethod
    def _repository(cls, value: str, info: ValidationInfo) -> str:
        if re.search(r"://[^/@\s]*:[^/@\s]+@", value):
            raise ValueError(f"credentials inside the repository URL are inline secrets; {SECRET_HINT}")
        if re.match(r"^[a-z]+://", value) or re.match(r"^[^/]+:", value):  # ssh://…, file://…, host:path
            return value
        return str(resolve_path(Path(value), info))

    @field_validator("systems", mode="after")
    @classmethod
    def _no_tags(cls, rules: list[SystemMapping]) -> list[SystemMapping]:
        if any(rule.tags for rule in rules):
            raise ValueError("borg archives carry no tags; map them with hosts, name_glob or paths")
        return rules

    def proven_facts(self) -> dict[str, set[str]]:
        """drcheck reads only encrypted borg repositories (borg refuses an unknown
        unencrypted one: BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no), so a repository this
        probe lists is encrypted at rest."""
        return {self.copy: {"encrypted_at_rest"}}



def repository(target: BorgProbe) -> BorgRepository:
    """Return the client for the repository a borg probe names."""
    return BorgRepository(
        target.repository, target.passphrase.ref(), command=target.borg_command,
        environment=environment_for_client(target.environment),
        base_dir=target.base_dir, key_file=target.key_file, lock_wait=target.lock_wait.total_seconds(),
        timeout=target.archives.timeout.total_seconds() if target.archives.timeout else LISTING_TIMEOUT_SECONDS,
    )


def newest_for(target: BorgProbe, system: str, repo: BorgRepository) -> Archive | None:
    """Return the newest archive of `system` in the repository, or None."""
    found = by_system(repo.archives(), [r for r in target.systems if r.system == system])
    return found[system][-1] if found.get(system) else None


def archives(target: BorgProbe, ctx: RunContext) -> ProbeResult:
    """List archives, map them to systems and flag systems without a point within RPO."""
    result = ProbeResult.begin(ctx, target, "archives")
    try:
        listed = repository(target).archives()
    except SourceError as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        return result.conclude(ctx)
    grouped = by_system(listed, target.systems)
    for system in sorted(target.systems_covered()):
        points = grouped.get(system, [])
        if not points:  # a fact for the rules (R2.backup_age), which judge it: no finding here
            continue
        newest = points[-1]
        result.newest.append(RestorePoint(system=system, copy=target.copy, point_time=newest.time,
                                          point_id=newest.name, host=newest.hostname, paths=newest.paths,
                                          count=len(points)))
        if newest.paths:  # borg records no paths; read from the archive's command line when certain
            finding = wrong_source(system, target.copy, [str(p) for p in target.source_paths(system)],
                                   PointFacts(newest.name, newest.paths), None, target.wrong_source)
            if finding:
                result.findings.append(finding)
    system_of = {id(a): system for system, points in grouped.items() for a in points}
    result.assets = backed_up(ctx.name, target.copy,
                              ((a.hostname, a.time, a.name, system_of.get(id(a))) for a in listed))
    unmapped = [a for a in listed if id(a) not in system_of]
    if unmapped:
        result.findings.append(Finding(Severity.WARNING, "unmapped_archives",
                                       f"{len(unmapped)} archive(s) match no system rule"))
    pathless = [a for a in unmapped if not a.paths]
    if pathless and any(rule.paths for rule in target.systems):
        result.findings.append(Finding(
            Severity.WARNING, "archive_paths_unknown",
            f"{len(pathless)} unmapped archive(s) name no source paths drcheck can read from their "
            f"`borg create` command line (e.g. {pathless[-1].name}); rules with paths cannot match them"))
    result.details = {"archives": len(listed), "unmapped": len(unmapped)}
    return result.conclude(ctx)


def check(target: BorgProbe, ctx: RunContext) -> ProbeResult:
    """Run `borg check` (by default with --verify-data); a damaged repository is a failed
    result keeping borg's own message, anything that kept borg from checking an error."""
    settings = target.check

    def run(limit: float) -> str:
        return repository(target).check(verify_data=settings.verify_data, only=settings.only,
                                        last=settings.last, timeout=limit)

    return integrity_check(target, ctx, run, {"verify_data": settings.verify_data, "only": settings.only or "all",
                                              "last": settings.last})


def _stored(path: str) -> str:
    """An absolute path as borg stores it (no leading '/'); '' for the root."""
    return str(PurePosixPath(path)).lstrip("/")


def absolute(stored: str) -> str:
    """The absolute path of an archive item; raise SandboxRefused for an item name borg
    never writes (absolute) or one that could escape a restore target."""
    if stored.startswith("/") or not stored:
        raise SandboxRefused(f"archive entry {stored!r} would escape the sandbox; restore refused")
    path = "/" + stored
    check_entry(path)
    return path


class FileSource:
    """Restore access to one system's archives, for file restore tests (the contract of
    `drcheck.kinds.FileSource`). A point's id is the archive's name: borg 1.x addresses
    archives by name."""

    def __init__(self, target: BorgProbe):
        self.target = target
        self.repo = repository(target)

    def newest(self, system: str) -> Archive | None:
        return newest_for(self.target, system, self.repo)

    def files(self, point_id: str, include: list[str]) -> list[SnapshotFile]:
        """Return the archive's regular files under `include` with absolute paths; raise
        SandboxRefused for an entry that would escape a restore target, BorgError (damaged)
        for a file whose data `borg check --repair` replaced with zeros."""
        listed = []
        for entry in self.repo.list(point_id, [p for p in map(_stored, include) if p]):
            path = absolute(entry.path)
            if not entry.healthy:
                raise BorgError(f"backup data is damaged: {path} lost chunks (borg marks it unhealthy)", damaged=True)
            if entry.type == "-":
                listed.append(SnapshotFile(path, entry.size, entry.mtime))
        return listed

    def restore(self, point: Archive, dest: Path, include: list[str], timeout: float | None) -> None:
        """Extract the archive (its `include` paths) into dest; borg writes relative to its
        working directory, which re-roots the absolute paths under dest."""
        self.repo.extract(point.name, dest, [p for p in map(_stored, include) if p], timeout=timeout)


def file_source(target: BorgProbe) -> FileSource:
    return FileSource(target)


class LabRepository:
    """Demo support: a local repository with a passphrase file, and dated archives.

    borg records the real machine's host name in an archive and has no tags, so the
    requested host and tags go into the archive's name: `HOST[-TAG…]-YYYY-MM-DDTHH:MM:SS`
    (map such archives with `name_glob = "HOST-*"`)."""

    def __init__(self, target: BorgProbe):
        self.target = target
        self.repo = repository(target)
        self.names: set[str] = set()

    def owned_paths(self) -> list[Path]:
        if re.match(r"^[^/]+:", self.target.repository) or self.target.passphrase.file is None:
            raise ValueError("not a local borg repository with a passphrase file")
        return [Path(self.target.repository), self.target.passphrase.file]

    def init(self) -> None:
        """Write a random passphrase file, then create the repository."""
        write_secret_file(self.target.passphrase.file)
        self.repo.init()

    def backup(self, paths: list[Path], host: str, tags: list[str], when) -> None:
        name = "-".join([host, *tags, when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")])
        base, n = name, 1
        while name in self.names:  # two rules of one host backed up at the same time
            n += 1
            name = f"{base}.{n}"
        self.names.add(name)
        self.repo.create(name, paths, when=when)


def lab_repository(target: BorgProbe) -> LabRepository:
    return LabRepository(target)


Target = BorgProbe
ACTIONS = {"archives": archives, "check": check}
LISTS_POINTS = frozenset({"archives"})
LISTING_TIMEOUT_SECONDS = 600
ACTION_TIMEOUTS = {"archives": timedelta(seconds=LISTING_TIMEOUT_SECONDS)}
