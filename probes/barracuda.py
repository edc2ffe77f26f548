"""Barracuda Backup appliances, read through the report and alert e-mails they send (the
appliance has no public API). Action `mailbox` (lists points).

Each run opens the configured IMAP folder (read-only unless `move_to` is set), reads the
messages above the cursor the previous successful run recorded, folds them into the
state that run left (`drcheck.probes.barracuda_state`) and reports the whole current
state: per system and copy its newest successful backup (the appliance is `copy`, its
offsite replication `offsite_copy`, each with its own age), one `backup` asset per data
source and copy (rule R3 counts them for vCenter VMs), and open alerts, failed and
warning jobs and unreadable messages as findings. The state lives in the run's details,
recorded with the run: a run that dies changes nothing, the next one reads again from the
last recorded cursor; a changed UIDVALIDITY means reading the folder again.

Silence is a missed backup without anything special here: a data source that stops
reporting keeps an ageing point (R2.backup_age judges it), and one that never reported
leaves its system without a point ("no restore point in <copy>").
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from drcheck.clients import SourceError
from drcheck.config_types import ConfigPath, Duration, Name, SecretSpec, Strict
from drcheck.kinds import ActionConfig, ProbeTarget
from drcheck.probes.barracuda_lab import LabMailbox
from drcheck.probes.barracuda_parse import Parser
from drcheck.probes.barracuda_rules import ParsingRules, glob_match, is_glob
from drcheck.probes.barracuda_state import LOCAL, OFFSITE, Source, State, point_id, size_of
from drcheck.results import Finding, InventoryAsset, ProbeResult, RestorePoint, Severity, Status

if TYPE_CHECKING:
    from drcheck.clients.imap import Endpoint
    from drcheck.context import RunContext

log = logging.getLogger(__name__)


class DataSourceRule(Strict):
    """Which data sources belong to a system. A data source matches when every criterion
    given matches (shell patterns, any case). A `data_sources` entry without wildcards is
    a data source the system expects: until it has reported a backup in a copy, the system
    has no point in that copy. A system is as recent as its stalest data source."""

    system: Name = Field(..., description="system name (a runbook file stem)")
    data_sources: list[str] = Field(default_factory=list, description="data source names or patterns")
    computers: list[str] = Field(default_factory=list, description="computer names or patterns")
    appliances: list[str] = Field(default_factory=list, description="appliance names or patterns")
    offsite: bool = Field(True, strict=True, description="judge the system in `offsite_copy` too")

    @model_validator(mode="after")
    def _some_criterion(self) -> "DataSourceRule":
        if not (self.data_sources or self.computers or self.appliances):
            raise ValueError("give at least one of data_sources, computers, appliances")
        return self

    # what code written for file-backup rules reads of every probe's `systems` (drcheck demo)
    @property
    def paths(self) -> list:
        return []

    @property
    def hosts(self) -> list[str]:
        return []

    def matches(self, source: Source) -> bool:
        return glob_match(source.name, self.data_sources) and glob_match(source.computer, self.computers) \
            and glob_match(source.appliance, self.appliances)

    def expected(self) -> set[str]:
        return {name.lower() for name in self.data_sources if not is_glob(name)}


class BarracudaProbe(ProbeTarget):
    """A mailbox receiving a Barracuda Backup appliance's report and alert e-mails."""

    kind: Literal["barracuda"]
    copy: Name = Field(..., description="the copy (from [copies]) the appliance is")
    offsite_copy: Name | None = Field(None, description="the copy its offsite replication is (Barracuda Cloud "
                                                        "Storage or a second appliance), judged with its own age")
    host: str = Field(..., min_length=1, description="IMAP server")
    port: int = Field(993, ge=1, le=65535, description="IMAP port (993: TLS; with starttls usually 143)")
    starttls: bool = Field(False, strict=True, description="connect in plain text and STARTTLS before logging in")
    username: str = Field(..., min_length=1, description="mailbox account")
    password: SecretSpec = Field(..., description="its password (secret reference)")
    ca_bundle: ConfigPath | None = Field(None, description="PEM file of the CA that signed the server's certificate "
                                                           "(default: the system's trust store)")
    insecure: bool = Field(False, strict=True, description="turn TLS verification off (warned at every run)")
    folder: str = Field("INBOX", min_length=1, description="folder the appliance's mail arrives in")
    move_to: str | None = Field(None, min_length=1,
                                description="move read reports, alerts and notices to this existing folder (by the "
                                            "next run, once the run that read them is recorded); default: read-only")
    timezone: str | None = Field(None, description="IANA zone of times in message bodies (default: the zone of "
                                                   "each message's Date header)")
    call_timeout: Duration = Field(timedelta(seconds=60), description="limit of connecting and of every IMAP reply")
    batch_size: int = Field(1000, ge=1, le=20000, description="messages per UID FETCH (two are pipelined)")
    max_unparsed_findings: int = Field(20, ge=1, description="unreadable messages named one finding each; more are "
                                                             "counted in one finding")
    systems: list[DataSourceRule] = Field(default_factory=list, description="data-source-to-system rules")
    parsing: ParsingRules = Field(default_factory=ParsingRules, description="how messages are recognised and read")
    mailbox: ActionConfig = Field(default_factory=ActionConfig, description="read new messages (default limit 10m)")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError(f"unknown time zone {value!r} (expected e.g. 'America/Chicago')") from None
        return value

    def systems_covered(self) -> set[str]:
        return {rule.system for rule in self.systems}

    def copies_of(self, system: str) -> list[str]:
        rules = [r for r in self.systems if r.system == system]
        return [self.copy] + ([self.offsite_copy] if self.offsite_copy and any(r.offsite for r in rules) else [])

    def references(self, loaded: Any) -> list[tuple[str, str]]:
        problems = [(f"systems[{i}].system", problem) for i, rule in enumerate(self.systems)
                    if (problem := loaded.unknown_system(rule.system))]
        copies = loaded.config.copies
        if self.offsite_copy is not None:
            if self.offsite_copy not in copies:
                problems.append(("offsite_copy", f"unknown copy {self.offsite_copy!r} "
                                                 f"(known: {', '.join(sorted(copies)) or 'none defined'})"))
            elif self.offsite_copy == self.copy:
                problems.append(("offsite_copy", "must be another copy than `copy`"))
        return problems

    def endpoint(self) -> "Endpoint":
        from drcheck.clients.imap import Endpoint

        return Endpoint(host=self.host, port=self.port, username=self.username, password=self.password.ref(),
                        ca_bundle=self.ca_bundle, insecure=self.insecure, starttls=self.starttls,
                        timeout=self.call_timeout.total_seconds())

    def origin(self) -> str:
        """What the state was read from: a state of another mailbox or folder is not reused."""
        return f"{self.username}@{self.host}/{self.folder}"

    def parser(self) -> Parser:
        from zoneinfo import ZoneInfo

        return Parser(self.parsing, ZoneInfo(self.timezone) if self.timezone else None)


def previous_state(ctx: "RunContext", target: BarracudaProbe) -> State:
    """The state the probe's latest run that read the mailbox left (ok or failed: a
    failed run read everything and found a failed backup), else a fresh one."""
    rows = ctx.store.query("SELECT details FROM probe_runs WHERE probe = ? AND action = 'mailbox' "
                           "AND status IN ('ok', 'failed') ORDER BY id DESC LIMIT 1", [ctx.name])
    try:
        details = json.loads(rows[0]["details"] or "{}") if rows else {}
    except json.JSONDecodeError:
        details = {"version": "unreadable JSON"}
    return State.load(details, target.origin())


def mailbox(target: BarracudaProbe, ctx: "RunContext") -> ProbeResult:
    """Read the messages that arrived since the last recorded run and report the current
    state (see the module docstring). An unreachable server, refused login, untrusted
    certificate, timeout or missing folder is an ERROR result that records no state."""
    from drcheck.clients.imap import open_mailbox

    result = ProbeResult.begin(ctx, target, "mailbox")
    state = previous_state(ctx, target)
    state.rules = {r.code: (r.severity, r.about, r.cleared_by) for r in target.parsing.alerts}
    parser = target.parser()
    counts = {"report": 0, "alert": 0, "ignored": 0, "unparsed": 0}
    run: dict[str, Any] = {"read": 0, "moved": 0}
    if target.insecure:
        log.warning("probe %s: IMAP %s: TLS certificate verification is OFF (insecure = true)", ctx.name, target.host)
        result.findings.append(Finding(Severity.WARNING, "tls_unverified",
                                       f"TLS certificate of {target.host} is not verified (insecure = true)"))
    if state.fresh_reason:
        result.findings.append(Finding(Severity.WARNING, "state_reset",
                                       f"reading {target.folder} from the start: {state.fresh_reason}"))
    began = time.monotonic()
    try:
        with open_mailbox(target.endpoint(), target.folder, readonly=target.move_to is None) as box:
            if state.uidvalidity != box.uidvalidity:
                if state.uidvalidity is not None:
                    result.findings.append(Finding(Severity.INFO, "uidvalidity_changed",
                                                   f"{target.folder} was re-created (UIDVALIDITY {state.uidvalidity} "
                                                   f"-> {box.uidvalidity}): every message is read again"))
                state.restart(box.uidvalidity)
                state.pending_move = ""
            elif target.move_to and state.pending_move:
                run["moved"] = _move(box, state, target, result)
            _read_new(box, state, parser, target, ctx, counts, run)
            if state.unparsed:  # shown while they stay in the folder
                present = box.present(state.unparsed)
                state.unparsed = {uid: info for uid, info in state.unparsed.items() if uid in present}
    except SourceError as exc:
        result.status, result.reason = Status.ERROR, str(exc)
        return result.conclude(ctx)
    run["seconds"] = round(time.monotonic() - began, 3)
    _report_state(target, ctx, state, parser, result)
    result.details = {**state.dump(), "run": {**run, **counts}}
    result.reason = _summary(run, counts, state)
    result.conclude(ctx)
    if result.status is Status.FAILED:  # an appliance's alert is a finding for each of its systems: say it once
        result.reason = "; ".join(dict.fromkeys(f.message for f in result.findings if f.severity is Severity.CRITICAL))
    return result


def _read_new(box, state: State, parser: Parser, target: BarracudaProbe, ctx: "RunContext",
              counts: dict[str, int], run: dict[str, Any]) -> None:
    """Fold every message above the cursor into `state`, in UID order; with `move_to`,
    note the reports, alerts and notices read, for the next run to move."""
    from drcheck.clients.imap import uid_set

    uids = box.uids_after(state.last_uid)
    read: list[int] = []
    for batch in box.fetch(uids, batch=target.batch_size):
        for message in batch:
            parsed = parser.parse(message.uid, message.raw)
            state.apply(parsed)
            counts[parsed.kind] += 1
            if parsed.kind in ("report", "alert") or parsed.reason == "notice":
                read.append(message.uid)
        run["read"] += len(batch)
        ctx.progress("reading messages", run["read"], len(uids))
    if target.move_to:
        state.pending_move = uid_set(read + _uids(state.pending_move))


def _uids(text: str) -> list[int]:
    found: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition(":")
        found += range(int(low), int(high or low) + 1)
    return found


def _move(box, state: State, target: BarracudaProbe, result: ProbeResult) -> int:
    """Move what earlier recorded runs read (their state holds it: nothing is lost if this
    run dies); a refusal is a finding, and they are tried again next time."""
    try:
        moved = box.move(_uids(state.pending_move), target.move_to)
    except SourceError as exc:
        result.findings.append(Finding(Severity.WARNING, "move_failed", f"cannot move read messages: {exc}"))
        return 0
    state.pending_move = ""
    return moved


def systems_of(target: BarracudaProbe, source: Source) -> list[str]:
    """The systems whose rules a data source matches (rule order, no repeats)."""
    return list(dict.fromkeys(rule.system for rule in target.systems if rule.matches(source)))


def _report_state(target: BarracudaProbe, ctx: "RunContext", state: State, parser: Parser,
                  result: ProbeResult) -> None:
    copies = [(LOCAL, target.copy)] + ([(OFFSITE, target.offsite_copy)] if target.offsite_copy else [])
    mapped = {key: systems_of(target, source) for key, source in state.sources.items()}
    for system in sorted(target.systems_covered()):
        rules = [r for r in target.systems if r.system == system]
        matched = [(k, s) for k, s in sorted(state.sources.items()) if system in mapped[k]]
        for role, copy in copies:
            if role == OFFSITE and not any(r.offsite for r in rules):
                continue
            point = _system_point(system, role, copy, rules, matched)
            if point is not None:
                result.newest.append(point)
    for key, source in sorted(state.sources.items()):
        for role, copy in copies:
            if role in source.points:
                result.assets.append(_asset(ctx.name, copy, key, source, role, mapped[key], parser))
    result.findings += _alert_findings(target, state, mapped)
    result.findings += _unparsed_findings(target, state)
    unmapped = sorted(source.name for key, source in state.sources.items() if not mapped[key])
    if unmapped and target.systems:
        shown = ", ".join(unmapped[:10]) + (f" and {len(unmapped) - 10} more" if len(unmapped) > 10 else "")
        result.findings.append(Finding(Severity.INFO, "unmapped_data_sources",
                                       f"{len(unmapped)} data source(s) match no system rule: {shown}"))


def _system_point(system: str, role: str, copy: str, rules: list[DataSourceRule],
                  matched: list[tuple[str, Source]]) -> RestorePoint | None:
    """The system's point in a copy: its stalest data source's newest backup there, with
    the backups its data sources have there; none while an expected data source has none."""
    rules = [r for r in rules if role == LOCAL or r.offsite]
    candidates = [(k, s) for k, s in matched if any(r.matches(s) for r in rules)]
    have = [(k, s) for k, s in candidates if role in s.points]
    expected = set().union(*(r.expected() for r in rules)) if rules else set()
    if not have or expected - {s.name.lower() for _, s in have}:
        return None
    key, source = min(have, key=lambda item: item[1].points[role].time)
    point = source.points[role]
    return RestorePoint(system=system, copy=copy, point_time=point.time.astimezone(timezone.utc),
                        point_id=point_id(key, point), size_bytes=size_of(point),
                        host=source.computer or source.appliance,
                        count=sum(s.points[role].count for _, s in have))


def _asset(probe: str, copy: str, key: str, source: Source, role: str, systems: list[str],
           parser: Parser) -> InventoryAsset:
    point = source.points[role]
    if parser.is_vm(source.type) or not source.computer:
        match = {"vm_name": source.name}
    else:
        match = {"hostname": source.computer}
    return InventoryAsset(
        source=probe, asset_id=f"{copy}:{key}", name=source.name, protected=True,
        system=systems[0] if systems else None, kind="backup",
        attributes={"copy": copy, "newest": point.time.astimezone(timezone.utc).isoformat(),
                    "point_id": point_id(key, point), "match": match, "appliance": source.appliance,
                    "computer": source.computer, "type": source.type, "data_source": source.name})


def _when(value) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _alert_findings(target: BarracudaProbe, state: State, mapped: dict[str, list[str]]) -> list[Finding]:
    """One finding per open alert and system it concerns (all the systems with data
    sources on its appliance, for an appliance's alert), or about no system."""
    on_appliance: dict[str, set[str]] = {}
    for key, source in state.sources.items():
        on_appliance.setdefault(source.appliance, set()).update(mapped[key])
    findings = []
    for alert in state.open_alerts():
        systems = mapped.get(alert.source, []) if alert.source else sorted(on_appliance.get(alert.appliance, ()))
        about = f"{alert.source_name} on {alert.appliance}" if alert.source else alert.appliance
        message = f"{alert.title} ({about}, {_when(alert.time)})" + (f": {alert.details}" if alert.details else "")
        severity = Severity.CRITICAL if alert.severity == "critical" else Severity.WARNING
        for system in systems or [None]:
            findings.append(Finding(severity, alert.code, message, system, subject=alert.subject))
    return findings


def _unparsed_findings(target: BarracudaProbe, state: State) -> list[Finding]:
    findings, limit = [], target.max_unparsed_findings
    for uid, info in sorted(state.unparsed.items())[:limit]:
        date = f" of {info['date'][:16].replace('T', ' ')} UTC" if info.get("date") else ""
        findings.append(Finding(Severity.WARNING, "unparsed_message",
                                f"cannot read message UID {uid} {info.get('subject', '')!r}{date} in "
                                f"{target.folder}: {info.get('reason')} (shown until it leaves the folder)",
                                subject=f"message:{uid}"))
    if len(state.unparsed) > limit:
        findings.append(Finding(Severity.WARNING, "unparsed_messages",
                                f"{len(state.unparsed) - limit} more unreadable messages in {target.folder}"))
    return findings


def _summary(run: dict, counts: dict, state: State) -> str:
    text = (f"{run['read']} new message(s) read in {run['seconds']:.1f}s ({counts['report']} reports, "
            f"{counts['alert']} alerts, {counts['unparsed']} unreadable); {len(state.sources)} data sources")
    if run["moved"]:
        text += f"; {run['moved']} moved"
    return text


def lab_peer(target: BarracudaProbe, loaded: Any) -> LabMailbox:
    """Demo support: a Dovecot serving this probe's mailbox with a few days of reports
    for its systems' data sources, one of which went silent (drcheck demo)."""
    return LabMailbox(target, loaded)


Target = BarracudaProbe
ACTIONS = {"mailbox": mailbox}
LISTS_POINTS = frozenset({"mailbox"})
ACTION_TIMEOUTS = {"mailbox": timedelta(minutes=10)}
