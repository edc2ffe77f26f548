"""The configuration schema: `drcheck.toml` plus one `runbooks/<system>.toml` per system.

Every key is documented here with its default (the docstrings and `Field(description=…)`
become the published JSON schema). Each probe and restore-test kind's own keys live in its
module (`probes/<kind>.py`, `restore_tests/<kind>.py`) as its `Target` model; `probes` and
`restore_tests` are unions of the registered kinds, told apart by `kind`. Unknown keys are rejected. Secrets are `SecretRef`s,
never inline strings. Relative paths are resolved against the directory of the file that
names them. Loading and error reporting live in `drcheck.config_loader`.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, field_validator, model_validator

from drcheck.config_types import ConfigPath, Duration, Name, Schedule, SecretSpec, Strict
from drcheck.kinds import target_models
from drcheck.probes import REGISTRY as PROBE_KINDS
from drcheck.restore_tests import REGISTRY as RESTORE_TEST_KINDS
from drcheck.vm_select import VmSelector, asset_selectors


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
    database_timeout: Duration = Field(
        timedelta(seconds=30),
        description="how long a command waits for another process's lock on the database before giving up",
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

    @field_validator("listen")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        import ipaddress
        import re

        host, port = value.rsplit(":", 1)
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port {int(port)} is out of range (1-65535)")
        if re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{host!r} is not a valid IPv4 address") from None
        elif host and not re.fullmatch(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", host):
            raise ValueError(f"{host!r} is not a valid host name or IPv4 address")
        return value


def _weekly_monday_morning() -> Schedule:
    return Schedule(cron="0 7 * * 1")


class EmailConfig(Strict):
    """E-mail delivery of the weekly report (`[reports.email]`): an HTML and a plain-text
    part, the DR plan's PDF attached to the first delivery of each month if asked. A failed
    delivery is recorded and retried with back-off until it succeeds (`drcheck report deliver`,
    which the agent runs); the rendered report stays on disk either way."""

    host: str = Field(..., min_length=1, description="SMTP server (submission host)")
    port: int | None = Field(None, ge=1, le=65535,
                             description="SMTP port (default: 587 for starttls, 465 for tls, 25 for none)")
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls: plain connection upgraded with STARTTLS (refused if the server does not "
                                "offer it); tls: TLS from the first byte; none: clear text (needs insecure = true)")
    insecure: bool = Field(False, strict=True, description="allow security = 'none' or an unverified certificate "
                                                           "(warned at every delivery)")
    username: str | None = Field(None, min_length=1, description="AUTH user name (default: no authentication)")
    password: SecretSpec | None = Field(None, description="AUTH password (secret reference, never inline)")
    ca_bundle: ConfigPath | None = Field(None, description="PEM file of the CA that signed the server's certificate "
                                                           "(default: the system's trust store)")
    from_: str = Field(..., alias="from", min_length=3, pattern=r"^[^@\s]+@[^@\s]+$",
                       description="sender address")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        ..., min_length=1, description="recipient addresses")
    subject: str = Field("[drcheck] {agent}: weekly restore report {end:%Y-%m-%d} ({verdict})",
                         description="subject template: {agent}, {start}, {end} (datetimes in the agent's zone), "
                                     "{verdict} ('all good' or 'N need attention'), {attention} (a count)")
    schedule: Schedule = Field(default_factory=_weekly_monday_morning,
                               description="render and send the weekly report on this schedule (default Mondays 07:00)")
    attach_plan: Literal["never", "monthly"] = Field(
        "never", description="attach the DR plan (PDF) to the first delivery of each month")
    timeout: Duration = Field(timedelta(seconds=60), description="limit of connecting and of each SMTP reply")
    retry_first: Duration = Field(timedelta(minutes=5), description="a failed delivery is retried after this long, "
                                                                    "then twice as long each time")
    retry_max: Duration = Field(timedelta(hours=6), description="the longest wait between two attempts")

    model_config = {**Strict.model_config, "populate_by_name": True}

    @model_validator(mode="after")
    def _consistent(self) -> "EmailConfig":
        if self.security == "none" and not self.insecure:
            raise ValueError("security = 'none' sends the report (and any password) in clear text; "
                             "set insecure = true to allow it, or use starttls or tls")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password for SMTP AUTH, or neither")
        try:
            self.subject.format(agent="a", start=date.today(), end=date.today(), verdict="v", attention=0)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"subject: not a valid template ({type(exc).__name__}: {exc}); "
                             "fields: {agent} {start} {end} {verdict} {attention}") from None
        return self

    def smtp_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


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
    email: EmailConfig | None = Field(None, description="e-mail the weekly report (default: not sent)")


class RetentionConfig(Strict):
    """Compaction of old probe history (`drcheck store compact`). Every restore test,
    check, restore-point change and finding change is kept whatever the age; what goes is
    the middle of long streaks of identical probe runs older than `keep_days`."""

    keep_days: int = Field(90, strict=True, ge=7, description="probe history younger than this is never compacted")
    schedule: Schedule | None = Field(
        None, description="compact on this schedule (default: only `drcheck store compact`); it holds the "
                          "database's write lock while it runs, so pick a quiet hour"
    )


def _every_15_minutes() -> Schedule:
    return Schedule(interval=timedelta(minutes=15))


class StoreConfig(Strict):
    """Housekeeping of the evidence store (`agent.state_dir/drcheck.db`)."""

    reap_schedule: Schedule | None = Field(
        default_factory=_every_15_minutes,
        description="retry cleaning up what dead runs left (sandboxes, VMs, mounts) on this schedule, "
                    "besides at every start",
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="compaction of old probe runs")


FireSuppression = Literal["unknown", "none", "wet-pipe", "dry-pipe", "pre-action", "clean-agent", "inert-gas",
                          "water-mist", "vendor-managed"]


class SiteConfig(Strict):
    """A physical location holding systems or copies, with the facility facts the
    compliance rules (R4, R15) and the DR plan read. Facts are declared, not measured."""

    description: str = Field("", description="what and where it is")
    distance_km: float | None = Field(
        None, strict=True, ge=0, description="distance from the primary site, for the off-site rules"
    )
    address: str = Field("", description="street address or coordinates, printed in the plan")
    building: str | None = Field(
        None, description="building identifier: two sites in the same building are one place for the off-site rules")
    hazard_zone: str | None = Field(
        None, description="flood plain, fault or storm zone name: sites sharing one do not protect against it")
    fire_suppression: FireSuppression = Field(
        "unknown", description="fire suppression over the equipment (wet-pipe sprinklers soak what they protect)")
    power_backup: str = Field("", description="UPS, generator and their runtime, e.g. 'UPS 30 min, no generator'")
    key_holders: list[str] = Field(default_factory=list, description="who holds keys or badges to the site")
    access_notes: str = Field("", description="how to get in after hours; accessibility problems in a disaster")


class CopyConfig(Strict):
    """A copy of the data (a repository, an appliance, a bucket) at a site, with the
    protection facts the compliance rules (R5, R6) and the DR plan read. A fact given here
    is *declared*; a probe that checks it (restic always encrypts) makes it *proven*."""

    site: Name = Field(..., description="the site (from [sites]) holding this copy")
    media: str = Field("disk", description="storage media: disk, tape, object, appliance, cloud")
    description: str = Field("", description="free text shown in reports")
    immutable_days: int | None = Field(
        None, strict=True, ge=0, description="declared retention lock (object lock, hardened repository, WORM), days")
    offline: bool = Field(False, strict=True, description="declared offline / air-gapped (tape on a shelf)")
    encrypted_at_rest: bool | None = Field(None, strict=True, description="declared encryption at rest")
    encrypted_in_transit: bool | None = Field(None, strict=True, description="declared encryption in transit")
    key_offsite: bool | None = Field(
        None, strict=True, description="the encryption key (or its escrow) is held away from the primary site")
    separate_credentials: bool | None = Field(
        None, strict=True, description="its admin credentials are not in the production directory (AD)")


class PolicyConfig(Strict):
    """Thresholds of the compliance rules; each has a sensible default (NIST SP 800-34,
    CIS Controls v8, the 3-2-1-1-0 rule)."""

    min_copies: int = Field(3, strict=True, ge=1, description="R4: copies of each system's data, at least")
    min_media: int = Field(2, strict=True, ge=1, description="R4: different media among them, at least")
    offsite_km: float = Field(80, ge=0, description="R4: one copy at least this far from the primary site")
    near_km: float = Field(20, ge=0, description="R4: an off-site copy closer than this shares regional disasters")
    immutable_days: int = Field(30, strict=True, ge=1, description="R5: retention lock of the immutable copy, days")
    test_window: dict[int, Duration] = Field(
        default_factory=lambda: {1: timedelta(days=30), 2: timedelta(days=90), 3: timedelta(days=365),
                                 4: timedelta(days=365)},
        description="R8: a successful restore test within this window, by tier")
    exercise_days: int = Field(365, strict=True, ge=1, description="R11: a plan exercise within this many days")
    review_days: int = Field(365, strict=True, ge=1, description="R12: plan reviewed within this many days")
    contacts_days: int = Field(90, strict=True, ge=1, description="R12: contacts verified within this many days")
    training_days: int = Field(365, strict=True, ge=1, description="R13: DR roles trained within this many days")


class Contact(Strict):
    """A person or role to call."""

    name: str = Field(..., min_length=1, description="person or role")
    role: str = Field("", description="their part in recovery")
    phone: str = Field("", description="phone number(s)")
    email: str = Field("", description="e-mail address")
    alternate: str = Field("", description="who stands in for them")
    verified_on: date | None = Field(None, description="when these details were last confirmed (R12)")


class VendorContact(Strict):
    """A vendor a recovery relies on."""

    vendor: str = Field(..., min_length=1, description="company")
    product: str = Field("", description="what they supply")
    phone: str = Field("", description="support line")
    email: str = Field("", description="support address")
    contract: str = Field("", description="contract or customer number")
    sla: str = Field("", description="support SLA, e.g. '4h response, 24x7'")
    verified_on: date | None = Field(None, description="when these details were last confirmed (R12)")


class Exercise(Strict):
    """A plan exercise (tabletop, functional, full) and what came of it (R11)."""

    held_on: date = Field(..., description="date of the exercise")
    kind: Literal["tabletop", "functional", "full"] = Field("tabletop", description="type of exercise")
    scope: str = Field("", description="what was exercised")
    after_action_report: str = Field("", description="where the after-action report is (path, URL, ticket)")
    corrective_actions: list[str] = Field(default_factory=list, description="what it asked to fix")


class Training(Strict):
    """DR role training (R13)."""

    who: str = Field(..., min_length=1, description="person or role trained")
    held_on: date = Field(..., description="date of the training")
    topic: str = Field("", description="what it covered")


class Change(Strict):
    """One line of the plan's document-change record (R12)."""

    on: date = Field(..., description="date of the change")
    by: str = Field(..., min_length=1, description="who made it")
    description: str = Field(..., min_length=1, description="what changed")


class PlanConfig(Strict):
    """The DR / IT contingency plan's document facts (`drcheck report plan`)."""

    title: str = Field("Disaster Recovery / IT Contingency Plan", description="the plan's title")
    organization: str = Field("", description="who the plan belongs to")
    scope: str = Field("", description="what the plan covers (and does not)")
    assumptions: list[str] = Field(default_factory=list, description="planning assumptions")
    approved_by: str = Field("", description="who approves the plan")
    approved_on: date | None = Field(None, description="when it was last approved (R12)")
    reviewed_on: date | None = Field(None, description="when it was last reviewed (R12)")
    activation_criteria: list[str] = Field(default_factory=list, description="when the plan is activated")
    contacts: list[Contact] = Field(default_factory=list, description="personnel, in notification order")
    exercises: list[Exercise] = Field(default_factory=list, description="plan exercises held (R11)")
    training: list[Training] = Field(default_factory=list, description="DR role training held (R13)")
    changes: list[Change] = Field(default_factory=list, description="document change record (R12)")


def kind_union(models: list[type[BaseModel]]) -> Any:
    """One config type for every registered kind, told apart by its `kind` key."""
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="kind")]


ProbeTargets = kind_union(target_models(PROBE_KINDS))
RestoreTestTargets = kind_union(target_models(RESTORE_TEST_KINDS))


class Config(Strict):
    """drcheck.toml."""

    agent: AgentConfig = Field(default_factory=AgentConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    sites: dict[Name, SiteConfig] = Field(default_factory=dict)
    copies: dict[Name, CopyConfig] = Field(default_factory=dict)
    probes: dict[Name, ProbeTargets] = Field(default_factory=dict)
    restore_tests: dict[Name, RestoreTestTargets] = Field(default_factory=dict)
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="compliance rule thresholds")
    plan: PlanConfig = Field(default_factory=PlanConfig, description="the DR plan's document facts")


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
    alternate: str = Field("", description="who acts when the owner cannot (R1)")
    description: str = Field("", description="what it does and who depends on it")
    rto: Duration = Field(..., description="recovery time objective")
    rpo: Duration = Field(..., description="recovery point objective")
    mtd: Duration = Field(..., description="maximum tolerable downtime")
    wrt: Duration | None = Field(None, description="work recovery time after restore")
    depends_on: list[Name] = Field(default_factory=list, description="systems to recover first")
    assets: list[str] = Field(
        default_factory=list,
        description="servers, VMs, databases it runs on; 'vm:NAME' (or 'vm:/DC/vm/folder/NAME') names an "
                    "inventory VM, whose absence from vCenter is reported")
    vms: list[VmSelector] = Field(
        default_factory=list, description="further VMs of the system, by name pattern, folder, custom attribute or UUID")
    recovery_steps: list[RecoveryStep] = Field(default_factory=list, description="human runbook")
    vendors: list[VendorContact] = Field(default_factory=list, description="vendors its recovery relies on")
    validation: list[str] = Field(
        default_factory=list, description="how users confirm it works after recovery (reconstitution)")

    def vm_selectors(self) -> list[VmSelector]:
        """Every selector naming the system's VMs: the `vm:` assets, then `vms`."""
        return asset_selectors(self.assets) + list(self.vms)
