"""Reading Barracuda Backup e-mails: the parser that turns one message into a `Parsed`
fact, following the configured rules (`drcheck.probes.barracuda_rules`).

A message is, by its subject (and optionally its sender):
- a **report** of one backup job: a header (appliance, schedule, offsite replication state)
  and one block per data source (computer, data source, status, start and end times,
  size, optional per-source offsite state and error). Every field is a labelled line
  `Label: value` (an HTML body's table rows of label and value cells read the same);
  which labels name which field are regexes (`labels`), so other firmware wording or
  languages are a configuration change;
- an **alert**, classified by the first `alerts` rule whose `match` finds its subject or
  text (`resolved_by` recognises the message that ends such an alert);
- **ignored** (a notice, or mail from another sender);
- or **unparsed**, with the reason: never guessed at, never dropped silently.
The parser never raises on message content; a report with one unreadable block is
unparsed as a whole (nothing from it counts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Literal, NamedTuple

from drcheck.probes.barracuda_mail import decode_word, message_text, parse_date_header, parse_size
from drcheck.probes.barracuda_rules import FIELDS, ParsingRules

_UTC = timezone.utc


Outcome = Literal["ok", "warning", "failed"]


class Run(NamedTuple):
    """One data source's part of a backup job report. `end` and `size` stay as written
    (`end_time()`, `size_bytes()` read them): only the newest points need them."""

    appliance: str
    computer: str | None
    name: str
    type: str | None
    outcome: Outcome
    status: str
    start: datetime
    end: str | None
    size: str | None
    offsite_ok: bool | None
    error: str | None

    @property
    def key(self) -> str:
        return source_key(self.appliance, self.computer, self.name)

    def size_bytes(self) -> int | None:
        return parse_size(self.size) if self.size else None


def source_key(appliance: str, computer: str | None, name: str) -> str:
    """A data source's identity: appliance, computer and name (a VM name is unique per vCenter)."""
    return f"{appliance}/{computer or '-'}/{name}"


@dataclass(frozen=True)
class Alert:
    """An alert (or, `resolution`, the end of one) of rule `code`."""

    code: str
    resolution: bool
    appliance: str
    time: datetime
    title: str
    details: str
    source: str | None = None  # data source key
    source_name: str | None = None


Kind = Literal["report", "alert", "ignored", "unparsed"]


class Parsed(NamedTuple):
    """What one message says (`kind`), or why it cannot be read (`reason`)."""

    uid: int
    kind: Kind
    subject: str
    sent: datetime | None
    reason: str = ""
    appliance: str | None = None
    runs: tuple[Run, ...] = ()
    offsite_ok: bool | None = None
    alert: Alert | None = None


class Unparsable(Exception):
    """Why a message cannot be read (one line)."""


class Parser:
    """Compiled `ParsingRules`; `parse(uid, raw)` reads one message. `zone`: the zone of
    body times that carry none (None: the message's Date header offset)."""

    def __init__(self, rules: ParsingRules, zone: tzinfo | None = None):
        self.rules = rules
        self.zone = zone
        flags = re.I
        self.report_subject = re.compile(rules.report_subject, flags)
        self.alert_subject = re.compile(rules.alert_subject, flags)
        self.ignore_subject = re.compile(rules.ignore_subject, flags) if rules.ignore_subject else None
        self.sender = re.compile(rules.sender, flags) if rules.sender else None
        self.subject_appliance = re.compile(rules.subject_appliance, flags)
        self.computer_value = re.compile(rules.computer_value, flags)
        self.status = [(o, re.compile(p, flags)) for o, p in (("warning", rules.status_warning),
                                                               ("failed", rules.status_failed),
                                                               ("ok", rules.status_ok))]
        self.offsite_ok = re.compile(rules.offsite_ok, flags)
        self.vm_types = re.compile(rules.vm_types, flags)
        self.alerts = [(r, re.compile(r.match, flags), re.compile(r.resolved_by, flags) if r.resolved_by else None)
                       for r in rules.alerts]
        # one alternation of every field's labels; the field's group is the match's lastgroup
        self.label = re.compile("|".join(f"(?P<{name}>{getattr(rules.labels, name)})" for name in FIELDS), flags)
        self._labels: dict[str, str] = {}
        self._outcomes: dict[str, str] = {}
        self._offsite: dict[str, bool] = {}
        self._computers: dict[str, tuple[str | None, str | None]] = {}

    # -- fields ---------------------------------------------------------------------------

    def sections(self, text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
        """The labelled lines of a body: the fields before the first block (the header),
        and one dict per block. A block starts at a `computer` line, or at a `data_source`
        line when the current block already has one (it then keeps the computer above).
        The first value of a field in a section counts. Labels seen before are looked up,
        not matched again (reports repeat a dozen labels thousands of times)."""
        header: dict[str, str] = {}
        blocks: list[dict[str, str]] = []
        section, cache = header, self._labels
        for line in text.splitlines():
            label, sep, value = line.partition(":")
            if not sep:
                continue
            field = cache.get(label)
            if field is None:
                if len(cache) > 4096:  # free text before a colon: keep the cache small
                    cache.clear()
                match = self.label.fullmatch(label.strip())
                field = cache[label] = match.lastgroup if match else ""
            if not field:
                continue
            if (field == "computer" or field == "data_source") and (section is header or field in section):
                computer = section.get("computer") if field == "data_source" and section is not header else None
                section = {"computer": computer} if computer else {}
                blocks.append(section)
            if field not in section:
                section[field] = value.strip()
        return header, blocks

    def time(self, text: str, default_zone: tzinfo | None, suffix: str = "") -> datetime:
        """A body time in UTC (a time without a zone is in `zone`, else `default_zone`
        whose ISO offset is `suffix`, else UTC); raise Unparsable."""
        text = text.strip()
        try:
            if suffix and self.zone is None:
                try:
                    # the common case: 4x faster than replace(); one UTC tzinfo makes comparisons 10x faster
                    return datetime.fromisoformat(text + suffix).astimezone(_UTC)
                except ValueError:
                    pass
            when = datetime.fromisoformat(text)
        except ValueError:
            for fmt in self.rules.time_formats:
                try:
                    when = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
            else:
                raise Unparsable(f"unreadable time {text!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.zone or default_zone or _UTC)
        return when.astimezone(_UTC)

    def outcome(self, status: str) -> Outcome:
        outcome = self._outcomes.get(status)
        if outcome is None:
            outcome = next((o for o, pattern in self.status if pattern.search(status)), None)
            if outcome is None:
                raise Unparsable(f"unknown status {status!r}")
            self._outcomes[status] = outcome
        return outcome  # type: ignore[return-value]

    def offsite(self, value: str) -> bool:
        ok = self._offsite.get(value)
        if ok is None:
            ok = self._offsite[value] = self.offsite_ok.search(value) is not None
        return ok

    # -- messages -------------------------------------------------------------------------

    def parse(self, uid: int, raw: bytes) -> Parsed:
        """What message `uid` says; never raises on content."""
        try:
            headers, text = message_text(raw)
        except Exception as exc:  # a message the email package itself cannot take apart
            return Parsed(uid, "unparsed", "", None, reason=f"cannot decode the message: {type(exc).__name__}")
        subject = decode_word(headers.get(b"subject", "")).strip()
        sent = parse_date_header(headers.get(b"date", ""))
        zone = _zone(sent)  # of body times without one
        sent = sent.astimezone(_UTC) if sent else None
        if self.sender and not self.sender.search(decode_word(headers.get(b"from", ""))):
            return Parsed(uid, "ignored", subject, sent, reason="other sender")
        try:
            if self.report_subject.search(subject):
                return self._report(uid, subject, sent, zone, text)
            if self.alert_subject.search(subject):
                return self._alert(uid, subject, sent, zone, text)
        except Unparsable as exc:
            return Parsed(uid, "unparsed", subject, sent, reason=str(exc))
        if self.ignore_subject and self.ignore_subject.search(subject):
            return Parsed(uid, "ignored", subject, sent, reason="notice")
        return Parsed(uid, "unparsed", subject, sent, reason="neither a backup report nor an alert")

    def _appliance(self, found: dict[str, str], subject: str) -> str:
        appliance = found.get("appliance") or ""
        if not appliance:
            match = self.subject_appliance.search(subject)
            appliance = (match.group("appliance") if match and "appliance" in match.groupdict() else None) or ""
        appliance = appliance.strip().split()[0] if appliance.strip() else ""
        if not appliance:
            raise Unparsable("names no appliance")
        return appliance

    def _computer(self, value: str | None) -> tuple[str | None, str | None]:
        if not value:
            return None, None
        known = self._computers.get(value)
        if known is None:
            match = self.computer_value.search(value)
            groups = match.groupdict() if match else {}
            known = ((groups.get("computer") or value).strip() or None, (groups.get("type") or "").strip() or None)
            if len(self._computers) < 65536:
                self._computers[value] = known
        return known

    def _report(self, uid: int, subject: str, sent: datetime | None, zone: tuple[tzinfo | None, str],
                text: str) -> Parsed:
        header, blocks = self.sections(text)
        appliance = self._appliance(header, subject)
        if not blocks:
            raise Unparsable("the report lists no data source")
        zone, suffix = zone
        offsite = self.offsite(header["offsite"]) if "offsite" in header else None
        runs = []
        for i, b in enumerate(blocks, 1):
            name = b.get("data_source")
            if not name:
                raise Unparsable(f"data source {i} has no name")
            status = b.get("status")
            if not status:
                raise Unparsable(f"data source {name!r} has no status")
            when = b.get("start") or b.get("end")
            start = self.time(when, zone, suffix) if when else sent
            if start is None:
                raise Unparsable(f"data source {name!r} has no start time")
            computer, kind = self._computer(b.get("computer"))
            runs.append(Run(appliance, computer, name, kind, self.outcome(status), status, start, b.get("end"),
                            b.get("size"), self.offsite(b["offsite"]) if "offsite" in b else offsite,
                            b.get("error") or None))
        return Parsed(uid, "report", subject, sent, appliance=appliance, runs=tuple(runs), offsite_ok=offsite)

    def _alert(self, uid: int, subject: str, sent: datetime | None, zone: tuple[tzinfo | None, str],
               text: str) -> Parsed:
        header, blocks = self.sections(text)
        found = {**blocks[0], **header} if blocks else header
        appliance = self._appliance(found, subject)
        title = found.get("alert") or subject
        words = "\n".join((subject, title, found.get("details", "")))
        rule = resolution = None
        for candidate, _, resolved in self.alerts:
            if resolved is not None and resolved.search(words):
                rule, resolution = candidate, True
                break
        if rule is None:
            rule = next((candidate for candidate, match, _ in self.alerts if match.search(words)), None)
            resolution = False
        if rule is None:
            raise Unparsable("an alert of no known kind")
        zone, suffix = zone
        when = self.time(found["time"], zone, suffix) if found.get("time") else sent
        if when is None:
            raise Unparsable("the alert has no time")
        computer, _ = self._computer(found.get("computer"))
        name = found.get("data_source")
        key = source_key(appliance, computer, name) if name and rule.about == "data_source" else None
        alert = Alert(rule.code, bool(resolution), appliance, when, title, found.get("details", ""), key, name)
        return Parsed(uid, "alert", subject, sent, appliance=appliance, alert=alert)

    def is_vm(self, kind: str | None) -> bool:
        return bool(kind and self.vm_types.search(kind))


def _zone(sent: datetime | None) -> tuple[tzinfo | None, str]:
    """The zone of a message's Date header and its ISO suffix ('-06:00')."""
    if sent is None:
        return None, ""
    offset = sent.utcoffset()
    if offset is None or offset.seconds % 60:
        return sent.tzinfo, ""
    minutes = int(offset.total_seconds()) // 60
    sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
    return sent.tzinfo, f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
