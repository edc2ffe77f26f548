"""Reading Barracuda Backup e-mails: the parsing rules (configurable, with defaults written
from Barracuda's documented report and alert content; see tests/peers/barracuda/README.md)
and the parser that turns one message into a `Parsed` fact.

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

import binascii
import email
import email.policy
import fnmatch
import html
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime
from typing import Annotated, Literal, NamedTuple

from pydantic import AfterValidator, Field

from drcheck.config_types import Name, Strict


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


def _label_regex(value: str) -> str:
    _regex(value)
    if "(?P<" in value:
        raise ValueError("label patterns may not define named groups")
    return value


Regex = Annotated[str, AfterValidator(_regex)]
LabelRegex = Annotated[str, AfterValidator(_label_regex)]


class Labels(Strict):
    """Which line labels name which field (case-insensitive regexes, alternatives with |)."""

    appliance: LabelRegex = Field("Appliance|Barracuda Backup Server|Backup Server|Device",
                                  description="the appliance that sent the message")
    schedule: LabelRegex = Field("Schedule|Backup Schedule|Job", description="the backup schedule (job)")
    computer: LabelRegex = Field("Computer|Server|Host", description="the computer a data source belongs to")
    data_source: LabelRegex = Field("Data Source|Source", description="the data source (a VM, share, database…)")
    status: LabelRegex = Field("Status|Result", description="the data source's backup status")
    start: LabelRegex = Field("Start Time|Started|Start", description="when its backup started")
    end: LabelRegex = Field("End Time|Finished|End", description="when its backup ended")
    size: LabelRegex = Field("Size|Total Size|Backup Size", description="the size of the backup")
    offsite: LabelRegex = Field("Offsite Replication|Offsite|Replication|Cloud Replication",
                                description="replication state (report header: the appliance's; block: the source's)")
    alert: LabelRegex = Field("Alert|Alert Type|Event", description="what an alert is about")
    time: LabelRegex = Field("Time|Alert Time|Date", description="when an alert was raised")
    details: LabelRegex = Field("Details|Message|Description", description="an alert's explanation")
    error: LabelRegex = Field("Error|Errors|Reason", description="why a data source's backup failed")


FIELDS = tuple(Labels.model_fields)


class AlertRule(Strict):
    """One kind of alert e-mail and when it ends. An open alert is a finding (code `code`)
    about its data source (`about = "data_source"`, when the alert names one) or its
    appliance. It ends when a later message matches `resolved_by`, or when `cleared_by`
    happens later: `report` (any completed backup report of that data source / from that
    appliance), `clean_report` (one without warnings), `offsite_ok` (a report saying its
    replication is up to date), `never` (only `resolved_by` ends it)."""

    code: Name = Field(..., description="finding code")
    match: Regex = Field(..., description="regex searched in the subject, alert and details lines (case-insensitive)")
    severity: Literal["warning", "critical"] = Field("critical", description="finding severity")
    about: Literal["appliance", "data_source"] = Field("appliance", description="what the finding is about")
    cleared_by: Literal["report", "clean_report", "offsite_ok", "never"] = Field(
        "report", description="what later event ends it")
    resolved_by: Regex | None = Field(None, description="regex of the message that announces its end")


DEFAULT_ALERTS = (
    AlertRule(code="job_failed", match=r"backup (job )?failed|failed to back up", about="data_source"),
    AlertRule(code="appliance_offline", match=r"\boffline\b|not responding|has not contacted",
              resolved_by=r"back online|has come online|\bis online\b"),
    AlertRule(code="replication_behind", severity="warning", cleared_by="offsite_ok",
              match=r"replication (is )?(behind|delayed|queued)|offsite.*(behind|queue)|"
                    r"(communicate|connect) with barracuda cloud storage"),
    AlertRule(code="disk_error", cleared_by="never", match=r"\bdisk\b|\bdrive\b|\braid\b|hardware",
              resolved_by=r"(raid|volume|disk|drive).*(rebuilt|healthy|optimal|resolved|replaced)"),
)


class ParsingRules(Strict):
    """How report and alert e-mails are recognised and read. Defaults follow Barracuda
    Backup's documented report content in English; change them for another firmware's
    wording or language. Regexes are Python's, matched case-insensitively."""

    report_subject: Regex = Field(r"\bbackup report\b", description="subject of a backup job report")
    alert_subject: Regex = Field(r"\balert\b", description="subject of an alert")
    ignore_subject: Regex | None = Field(r"\bnotice\b", description="subject of mail to ignore (software notices)")
    sender: Regex | None = Field(None, description="only mail whose From matches is read; other mail is ignored")
    subject_appliance: Regex = Field(r"(?:report|alert|notice)\s*:\s*(?P<appliance>[^\s]+)",
                                     description="finds the appliance in a subject (group 'appliance') when "
                                                 "the body does not name it")
    labels: Labels = Field(default_factory=Labels, description="line labels of each field")
    computer_value: Regex = Field(r"^(?P<computer>.*?)\s*(?:\((?P<type>[^()]*)\))?$",
                                  description="splits a computer line into 'computer' and its 'type'")
    status_warning: Regex = Field(r"with (warnings?|errors?)|partial", description="a completed run with warnings")
    status_failed: Regex = Field(r"fail|error|abort|cancel|miss|incomplete", description="a failed run")
    status_ok: Regex = Field(r"^(completed?|success(ful)?|succeeded|ok|done)\b", description="a clean run")
    offsite_ok: Regex = Field(r"up to date|replicated|in sync|synced|\bcomplete",
                              description="an offsite state meaning the backup is replicated")
    vm_types: Regex = Field(r"vmware|vsphere|hyper-v",
                            description="computer types whose data sources are VMs (matched to vCenter VMs by name; "
                                        "others by the computer's host name)")
    time_formats: list[str] = Field(
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S",
         "%d.%m.%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%a, %d %b %Y %H:%M:%S"],
        description="strptime formats of body times after ISO 8601 (a time without a zone is in `timezone`, "
                    "else the zone of the message's Date header)")
    alerts: list[AlertRule] = Field(list(DEFAULT_ALERTS), description="alert kinds, first match wins")


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


_UTC = timezone.utc
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DATE = re.compile(r"(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([+-]\d{4})?")
_SIZE = re.compile(r"([\d][\d,]*(?:\.\d+)?)\s*([KMGTP]?)(i?)B\b", re.I)
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_CHARSET = re.compile(r'charset="?([\w.:-]+)', re.I)
_WANTED = {b"subject", b"date", b"from", b"content-type", b"content-transfer-encoding"}


def parse_size(text: str) -> int | None:
    """Bytes of '41.2 GB' (KB/MB/GB/TB taken as powers of 1024, as backup consoles show them)."""
    found = _SIZE.search(text)
    if not found:
        return None
    return int(float(found.group(1).replace(",", "")) * 1024 ** _UNITS[found.group(2).upper()])


def parse_date_header(value: str) -> datetime | None:
    """An RFC 5322 Date header as an aware datetime (in its own offset), or None."""
    found = _DATE.search(value)
    if found and found.group(2).lower() in _MONTHS:
        day, month, year, hour, minute, second, offset = found.groups()
        sign, off = (1 if not offset or offset[0] == "+" else -1), (offset or "+0000")[1:]
        zone = timezone(sign * timedelta(hours=int(off[:2]), minutes=int(off[2:])))
        try:
            return datetime(int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second or 0),
                            tzinfo=zone)
        except ValueError:
            return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def _decode_word(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def strip_html(markup: str) -> str:
    """Text of an HTML body with each table row as `cell: cell` and block ends as lines."""
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", "", markup)
    markup = re.sub(r"(?i)</t[dh]\s*>\s*<t[dh]\b[^>]*>", ": ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</(tr|p|div|h\d|li|table)\s*>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


def message_text(raw: bytes) -> tuple[dict[bytes, str], str]:
    """(selected headers by lower-case name, the body as text). A single-part text/plain
    or text/html body in 7bit, 8bit, quoted-printable or base64 is decoded directly (the
    common case, and cheap); anything else goes through the `email` package."""
    cut = raw.find(b"\r\n\r\n")
    head, body = (raw[:cut], raw[cut + 4:]) if cut >= 0 else (raw, b"")
    if cut < 0 and (lf := raw.find(b"\n\n")) >= 0:
        head, body = raw[:lf], raw[lf + 2:]
    headers: dict[bytes, str] = {}
    name = None
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the header above
            if name in headers:
                headers[name] += " " + line.strip().decode("utf-8", "replace")
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in _WANTED and name not in headers:
            headers[name] = value.strip().decode("utf-8", "replace")
        else:
            name = None
    ctype = headers.get(b"content-type", "text/plain").lower()
    cte = headers.get(b"content-transfer-encoding", "7bit").strip().lower()
    if ctype.startswith(("text/plain", "text/html")) and cte in ("7bit", "8bit", "binary", "quoted-printable",
                                                                  "base64"):
        try:
            data = binascii.a2b_qp(body) if cte == "quoted-printable" else \
                binascii.a2b_base64(body) if cte == "base64" else body
        except binascii.Error:
            data = body
        charset = _CHARSET.search(ctype)
        try:
            text = data.decode(charset.group(1) if charset else "utf-8", "replace")
        except LookupError:
            text = data.decode("utf-8", "replace")
        return headers, strip_html(text) if ctype.startswith("text/html") else text
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return headers, ""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        text = part.get_payload(decode=True).decode("utf-8", "replace") if part.get_payload(decode=True) else ""
    return headers, strip_html(text) if part.get_content_type() == "text/html" else text


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
        subject = _decode_word(headers.get(b"subject", "")).strip()
        sent = parse_date_header(headers.get(b"date", ""))
        zone = _zone(sent)  # of body times without one
        sent = sent.astimezone(_UTC) if sent else None
        if self.sender and not self.sender.search(_decode_word(headers.get(b"from", ""))):
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


def glob_match(value: str | None, patterns: list[str]) -> bool:
    """True when no patterns are given, or `value` matches one (shell patterns, any case)."""
    if not patterns:
        return True
    value = (value or "").lower()
    return any(fnmatch.fnmatchcase(value, p.lower()) for p in patterns)


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")

