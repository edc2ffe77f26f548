"""The configuration schema: `drcheck.toml` plus one `runbooks/<system>.toml` per system.

Every key is documented here with its default (the docstrings and `Field(description=…)`
become the published JSON schema). Unknown keys are rejected. Secrets are `SecretRef`s,
never inline strings. Relative paths are resolved against the directory of the file that
names them. Loading and error reporting live in `drcheck.config_loader`.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


from drcheck.config_types import (
    Name,
    Duration,
    resolve_path,
    ConfigPath,
    SECRET_HINT,
    SECRETISH_NAME,
    Strict,
    SecretSpec,
    EnvValue,
    Schedule,
)


class AgentConfig(Strict):
    """Settings of this agent."""

    name: Name = Field("drcheck", description="this agent's name, shown in reports and metrics")
    site: Name | None = Field(None, description="the site (from [sites]) this agent runs at")
    state_dir: ConfigPath = Field(
        Path("/var/lib/drcheck"), description="directory of the SQLite database"
    )
    sandbox_root: ConfigPath = Field(
        Path("/var/lib/drcheck/sandbox"),
        description="every test restore happens in a fresh directory under this one",
    )
    runbooks_dir: ConfigPath = Field(
        Path("runbooks"), description="directory of runbooks/<system>.toml (relative to this file)"
    )
    timezone: str = Field("UTC", description="IANA time zone used for cron schedules and reports")
    max_parallel_jobs: int = Field(2, strict=True, ge=1, le=32, description="jobs that may run at once")
    job_timeout: Duration = Field(
        timedelta(hours=2), description="a job still running after this is killed and recorded as error"
    )
    misfire_grace: Duration = Field(
        timedelta(minutes=10), description="a job that missed its time by less than this still runs"
    )

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r} (expected e.g. 'America/Los_Angeles')") from None
        return value


class MetricsConfig(Strict):
    """The Prometheus endpoint served by `drcheck run`."""

    enabled: bool = Field(True, strict=True, description="serve /metrics")
    listen: str = Field(
        "127.0.0.1:9847", pattern=r"^[^\s:]*:\d{1,5}$", description="host:port to listen on"
    )


class ReportsConfig(Strict):
    """Report rendering."""

    output_dir: ConfigPath = Field(
        Path("/var/lib/drcheck/reports"), description="where rendered reports are written"
    )
    templates_dir: ConfigPath | None = Field(
        None, description="your own copies of the Jinja2 templates (default: the shipped ones)"
    )
    weekly_schedule: Schedule | None = Field(
        None, description="render the weekly report on this schedule (e.g. Mondays 07:00)"
    )


class SiteConfig(Strict):
    """A physical location holding systems or copies."""

    description: str = Field("", description="what and where it is")
    distance_km: float | None = Field(
        None, strict=True, ge=0, description="distance from the primary site, for the off-site rules"
    )


class CopyConfig(Strict):
    """A copy of the data (a repository, an appliance, a bucket) at a site."""

    site: Name = Field(..., description="the site (from [sites]) holding this copy")
    media: str = Field("disk", description="storage media: disk, tape, object, appliance, cloud")
    description: str = Field("", description="free text shown in reports")


class SystemMapping(Strict):
    """Which backups belong to a system. A snapshot matches when every given criterion
    matches: its host is one of `hosts`, it carries all `tags`, and one of its paths is
    each of `paths` or an ancestor of it."""

    system: Name = Field(..., description="system name (a runbook file stem)")
    hosts: list[str] = Field(default_factory=list, description="snapshot host names")
    tags: list[str] = Field(default_factory=list, description="tags a snapshot must all carry")
    paths: list[ConfigPath] = Field(default_factory=list, description="source paths of the system")

    @model_validator(mode="after")
    def _some_criterion(self) -> "SystemMapping":
        if not (self.hosts or self.tags or self.paths):
            raise ValueError("give at least one of hosts, tags, paths")
        return self


class RepositoryCheck(Strict):
    """A repository integrity check (`restic check --read-data-subset`)."""

    schedule: Schedule | None = Field(None, description="when to run it (default: only on demand)")
    read_data_subset: str = Field(
        "5%",
        pattern=r"^(\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$",
        description="share of pack data to read and verify each run: '5%', '1/7', '2G'",
    )
    timeout: Duration | None = Field(
        None, description="limit for the check, which reads pack data (default: agent.job_timeout)"
    )


class ResticProbe(Strict):
    """A restic repository (local path, sftp:, s3:, rest:, …)."""

    kind: Literal["restic"]
    copy: Name = Field(..., description="the copy (from [copies]) this repository is")
    repository: str = Field(..., min_length=1, description="repository location as restic takes it")
    password: SecretSpec = Field(..., description="repository password (secret reference)")
    restic_command: str = Field("restic", description="restic binary")
    environment: dict[str, EnvValue] = Field(
        default_factory=dict,
        description="extra environment for restic (e.g. AWS_ACCESS_KEY_ID = { env = '…' })",
    )
    schedule: Schedule | None = Field(None, description="when to list snapshots")
    timeout: Duration = Field(timedelta(minutes=10), description="timeout of each restic call")
    check: RepositoryCheck = Field(default_factory=RepositoryCheck, description="integrity check")
    systems: list[SystemMapping] = Field(..., min_length=1, description="snapshot-to-system rules")

    @field_validator("repository", mode="after")
    @classmethod
    def _repository(cls, value: str, info: ValidationInfo) -> str:
        if re.search(r"://[^/@\s]*:[^/@\s]+@", value):
            raise ValueError(f"credentials inside the repository URL are inline secrets; {SECRET_HINT}")
        if re.match(r"^[a-z0-9]+:", value) and not re.match(r"^[A-Za-z]:\\", value):
            return value
        return str(resolve_path(Path(value), info))

    @field_validator("environment", mode="wrap")
    @classmethod
    def _secretish_env(cls, value: Any, handler) -> dict[str, Any]:
        # one error per inline secret, at environment.<NAME>, reported together with the
        # other errors of the table; the value itself is never included
        inline = [
            name for name, item in (value.items() if isinstance(value, dict) else ())
            if isinstance(item, (str, int, float)) and not isinstance(item, bool)
            and isinstance(name, str) and SECRETISH_NAME.search(name)
        ]
        try:
            result, other = handler(value), []
        except ValidationError as exc:
            if not inline:
                raise
            other = [{k: e[k] for k in ("type", "loc", "input", "ctx") if k in e} for e in exc.errors()]
        if inline:
            problem = ValueError(f"inline secrets are not allowed; {SECRET_HINT}")
            raise ValidationError.from_exception_data(
                "environment",
                other + [{"type": "value_error", "loc": (name,), "input": "<hidden>", "ctx": {"error": problem}}
                         for name in inline],
            )
        return result


class CanaryConfig(Strict):
    """A canary file drcheck plants in the live source and expects in the restore."""

    path: Path = Field(
        Path(".drcheck-canary"),
        description="canary location; relative paths are under the system's source path",
    )
    plant_schedule: Schedule | None = Field(None, description="when to (re)write the canary")
    max_age: Duration | None = Field(
        None, description="oldest acceptable canary in a restore (default: the runbook's RPO)"
    )


class SpotCheck(Strict):
    """Hash a random sample of restored files that are unchanged at the live source
    (same size and mtime as in the snapshot) and compare with the live file."""

    files: int = Field(20, strict=True, ge=0, description="at least this many files")
    percent: float = Field(0.0, strict=True, ge=0, le=100, description="at least this share of eligible files")
    source_root: ConfigPath = Field(
        Path("/"), description="where the snapshot's absolute paths live now"
    )


class CommandCheck(Strict):
    """A command run against the restored tree. `{restore}` is the sandbox, `{data}` the
    restored copy of the system's source path."""

    name: str | None = Field(None, description="label in results (default: the command)")
    run: list[str] = Field(..., min_length=1, description="argv; no shell")
    expect_exit: int = Field(0, strict=True, description="expected exit status")
    expect_output: str | None = Field(None, description="regular expression stdout must match")
    timeout: Duration = Field(timedelta(minutes=5), description="kill the command after this")

    @field_validator("expect_output")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except (re.error, OverflowError, RecursionError) as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class FilesRestoreTest(Strict):
    """Restore a system's newest restore point into a sandbox directory and verify it."""

    kind: Literal["files"]
    probe: Name = Field(..., description="the probe (from [probes]) whose repository to restore from")
    system: Name = Field(..., description="the system to restore")
    schedule: Schedule | None = Field(None, description="when to run (default: only on demand)")
    timeout: Duration | None = Field(None, description="overall limit (default: agent.job_timeout)")
    target_dir: ConfigPath | None = Field(
        None, description="restore here instead of a fresh directory; must be inside agent.sandbox_root"
    )
    expected_paths: list[Path] = Field(
        default_factory=list,
        description="must exist and be non-empty; relative paths are under the system's source path",
    )
    canary: CanaryConfig | None = Field(None, description="canary planting and freshness check")
    spot_check: SpotCheck | None = Field(default_factory=SpotCheck, description="hash comparison")
    commands: list[CommandCheck] = Field(default_factory=list, description="application checks")


class Config(Strict):
    """drcheck.toml."""

    agent: AgentConfig = Field(default_factory=AgentConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    sites: dict[Name, SiteConfig] = Field(default_factory=dict)
    copies: dict[Name, CopyConfig] = Field(default_factory=dict)
    probes: dict[Name, ResticProbe] = Field(default_factory=dict)
    restore_tests: dict[Name, FilesRestoreTest] = Field(default_factory=dict)


class RecoveryStep(Strict):
    """One human recovery step."""

    action: str = Field(..., description="what to do")
    owner: str | None = Field(None, description="who does it")
    expected_duration: Duration | None = Field(None, description="how long it usually takes")


class Runbook(Strict):
    """runbooks/<system>.toml: one protected system. The file stem is the system name."""

    name: str = Field(..., description="display name, e.g. 'Student Information System'")
    tier: int = Field(..., strict=True, ge=1, le=4, description="1 = most critical")
    owner: str = Field(..., min_length=1, description="accountable person or role")
    description: str = Field("", description="what it does and who depends on it")
    rto: Duration = Field(..., description="recovery time objective")
    rpo: Duration = Field(..., description="recovery point objective")
    mtd: Duration = Field(..., description="maximum tolerable downtime")
    wrt: Duration | None = Field(None, description="work recovery time after restore")
    depends_on: list[Name] = Field(default_factory=list, description="systems to recover first")
    assets: list[str] = Field(default_factory=list, description="servers, VMs, databases it runs on")
    recovery_steps: list[RecoveryStep] = Field(default_factory=list, description="human runbook")

