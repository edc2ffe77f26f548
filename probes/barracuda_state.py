"""The Barracuda mailbox probe's memory: what every message read so far established, kept
in the `details` of the probe's latest successful run and carried forward by each run.

Contract:
- `State.load(details, origin)` reads a previous run's details (anything unreadable, or of
  another mailbox, folder or version is a fresh state, `fresh_reason` saying why); `dump()` writes
  the whole state back as JSON-able details. The store records it atomically with the
  run, so a run that dies leaves the previous state (and its cursor) in force.
- `apply(parsed)` folds one message in. Every fact is kept as a maximum (newest backup per
  data source and copy, newest alert per code and subject, newest report/resolution
  times), so the order of messages does not matter and a message applied twice changes
  nothing but a point count; the cursor (`last_uid` under `uidvalidity`) keeps a message
  from being applied twice.
- An alert is open while nothing later ended it (`open_alerts`): a resolution message of
  its code and subject, or the event its rule's `cleared_by` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from drcheck.probes.barracuda_mail import parse_size
from drcheck.probes.barracuda_parse import Parsed

VERSION = 1
LOCAL, OFFSITE = "local", "offsite"  # the appliance copy and its replication


@dataclass(slots=True)
class Point:
    """The newest successful backup of a data source in one copy; `count` backups read."""

    time: datetime
    size: str | int | None
    count: int
    uid: int
    seen: bool = True  # its report was read under the current UIDVALIDITY (see `restart`)


@dataclass(slots=True)
class Source:
    appliance: str
    computer: str | None
    name: str
    type: str | None
    points: dict[str, Point] = field(default_factory=dict)
    last_ok: datetime | None = None  # newest completed run (with or without warnings)
    last_clean: datetime | None = None  # newest run without warnings
    last_seen: datetime | None = None  # newest run of any outcome
    last_status: str = ""


@dataclass(slots=True)
class AlertState:
    code: str
    severity: str
    about: str  # "data_source" | "appliance"
    cleared_by: str
    appliance: str
    source: str | None  # data source key
    source_name: str | None
    time: datetime
    title: str
    details: str
    uid: int

    @property
    def subject(self) -> str:
        return f"source:{self.source}" if self.source else f"appliance:{self.appliance}"

    @property
    def key(self) -> str:
        return f"{self.code}|{self.subject}"


# Findings a report itself raises (its failed and warning runs)
REPORT_ALERTS = {"job_failed": ("critical", "report"), "job_warning": ("warning", "clean_report")}


def _max(current: datetime | None, new: datetime | None) -> datetime | None:
    if new is None:
        return current
    return new if current is None or new > current else current


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(timezone.utc).isoformat() if when is not None else None


def _time(text: Any) -> datetime | None:
    # one shared UTC tzinfo: comparing datetimes whose tzinfo objects differ is 10x slower
    return datetime.fromisoformat(text).astimezone(timezone.utc) if text else None


@dataclass
class State:
    origin: str  # the mailbox and folder it was read from
    uidvalidity: int | None = None
    last_uid: int = 0
    messages: int = 0  # messages read under this UIDVALIDITY
    sources: dict[str, Source] = field(default_factory=dict)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    resolved: dict[str, datetime] = field(default_factory=dict)
    appliances: dict[str, dict[str, datetime]] = field(default_factory=dict)  # name -> report / offsite_ok
    unparsed: dict[int, dict[str, Any]] = field(default_factory=dict)  # uid -> subject, date, reason
    pending_move: str = ""  # UIDs (a UID set) read by recorded runs, to move to move_to
    fresh_reason: str = ""  # why a previous state was not used ("" when it was, or there was none)
    rules: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # alert code -> severity, about, cleared_by

    # -- reading and writing ----------------------------------------------------------------

    @classmethod
    def load(cls, details: Any, origin: str) -> "State":
        """The state a previous run's details hold, or a fresh one (saying why)."""
        if not details:
            return cls(origin)
        try:
            if details.get("version") != VERSION:
                return cls(origin, fresh_reason=f"state version {details.get('version')!r} is not {VERSION}")
            if details.get("origin") != origin:
                return cls(origin, fresh_reason=f"the previous state was read from {details.get('origin')!r}")
            state = cls(origin, uidvalidity=details.get("uidvalidity"), last_uid=int(details.get("last_uid", 0)),
                        messages=int(details.get("messages", 0)), pending_move=str(details.get("pending_move", "")))
            for key, s in details.get("sources", {}).items():
                state.sources[key] = Source(
                    s["appliance"], s.get("computer"), s["name"], s.get("type"),
                    {role: Point(_time(p["time"]), p.get("size"), int(p.get("count", 1)), int(p.get("uid", 0)),
                                 bool(p.get("seen", True)))
                     for role, p in s.get("points", {}).items()},
                    _time(s.get("last_ok")), _time(s.get("last_clean")), _time(s.get("last_seen")),
                    s.get("last_status", ""))
            for a in details.get("alerts", []):
                alert = AlertState(a["code"], a["severity"], a["about"], a["cleared_by"], a["appliance"],
                                   a.get("source"), a.get("source_name"), _time(a["time"]), a.get("title", ""),
                                   a.get("details", ""), int(a.get("uid", 0)))
                state.alerts[alert.key] = alert
            state.resolved = {k: _time(v) for k, v in details.get("resolved", {}).items()}
            state.appliances = {name: {k: _time(v) for k, v in times.items()}
                                for name, times in details.get("appliances", {}).items()}
            state.unparsed = {int(uid): dict(info) for uid, info in details.get("unparsed", {}).items()}
            return state
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            return cls(origin, fresh_reason=f"the previous state is unreadable ({type(exc).__name__}: {exc})")

    def dump(self) -> dict[str, Any]:
        """The whole state as JSON-able details (alerts that have ended are dropped)."""
        return {
            "version": VERSION, "origin": self.origin, "uidvalidity": self.uidvalidity, "last_uid": self.last_uid,
            "messages": self.messages, "pending_move": self.pending_move,
            "sources": {key: {
                "appliance": s.appliance, "computer": s.computer, "name": s.name, "type": s.type,
                "last_ok": _iso(s.last_ok), "last_clean": _iso(s.last_clean), "last_seen": _iso(s.last_seen),
                "last_status": s.last_status,
                "points": {role: {"time": _iso(p.time), "size": size_of(p), "count": p.count, "uid": p.uid,
                                  "seen": p.seen}
                           for role, p in sorted(s.points.items())}} for key, s in sorted(self.sources.items())},
            "alerts": [{"code": a.code, "severity": a.severity, "about": a.about, "cleared_by": a.cleared_by,
                        "appliance": a.appliance, "source": a.source, "source_name": a.source_name,
                        "time": _iso(a.time), "title": a.title, "details": a.details, "uid": a.uid}
                       for a in self.open_alerts()],
            "resolved": {k: _iso(v) for k, v in sorted(self.resolved.items())},
            "appliances": {name: {k: _iso(v) for k, v in sorted(times.items())}
                           for name, times in sorted(self.appliances.items())},
            "unparsed": {str(uid): info for uid, info in sorted(self.unparsed.items())},
        }

    def restart(self, uidvalidity: int) -> None:
        """The folder's UIDVALIDITY changed (or was never seen): its UIDs mean nothing any
        more, so every message is read again. What was learnt stays (facts are maxima:
        reading a message again changes nothing), but point counts start again from zero
        and unparsed messages are looked for anew."""
        self.uidvalidity, self.last_uid, self.messages = uidvalidity, 0, 0
        self.unparsed.clear()
        for source in self.sources.values():
            for point in source.points.values():
                point.count, point.seen = 0, False

    # -- folding messages in ----------------------------------------------------------------

    def apply(self, parsed: Parsed) -> None:
        """Fold one parsed message in (see the module's contract)."""
        self.messages += 1
        if parsed.kind == "report":
            self._report(parsed)
        elif parsed.kind == "alert":
            self._alert(parsed)
        elif parsed.kind == "unparsed":
            self.unparsed[parsed.uid] = {"subject": parsed.subject, "date": _iso(parsed.sent),
                                         "reason": parsed.reason}
        if parsed.uid > self.last_uid:
            self.last_uid = parsed.uid

    def _report(self, parsed: Parsed) -> None:
        uid, runs = parsed.uid, parsed.runs
        times = self.appliances.setdefault(parsed.appliance, {})
        sent = parsed.sent or max(run.start for run in runs)
        times["report"] = _max(times.get("report"), sent)
        if parsed.offsite_ok:
            times["offsite_ok"] = _max(times.get("offsite_ok"), sent)
        sources = self.sources
        for run in runs:  # the hot loop of a first run over thousands of reports
            appliance, computer, name, kind, outcome, status, start, _end, _size, offsite_ok, error = run
            key = f"{appliance}/{computer or '-'}/{name}"
            source = sources.get(key)
            if source is None:
                source = sources[key] = Source(appliance, computer, name, kind)
            if source.last_seen is None or start >= source.last_seen:
                source.last_seen, source.last_status = start, status
                if kind:
                    source.type = kind
            if outcome == "failed":
                self._raise("job_failed", parsed, appliance, key, name, start, f"backup {status.lower()}",
                            error or "")
                continue
            _point(source, LOCAL, run, uid)
            if source.last_ok is None or start > source.last_ok:
                source.last_ok = start
            if outcome == "ok":
                if source.last_clean is None or start > source.last_clean:
                    source.last_clean = start
            else:
                self._raise("job_warning", parsed, appliance, key, name, start, f"backup {status.lower()}",
                            error or "")
            if offsite_ok:
                _point(source, OFFSITE, run, uid)

    def _raise(self, code: str, parsed: Parsed, appliance: str, source: str | None, name: str | None,
               when: datetime, title: str, details: str) -> None:
        rule = self.rules.get(code)
        if rule is None:
            (severity, cleared_by), about = REPORT_ALERTS.get(code, ("warning", "report")), "data_source"
        else:
            severity, about, cleared_by = rule
        alert = AlertState(code, severity, about, cleared_by, appliance, source if about == "data_source" else None,
                           name, when, title, details, parsed.uid)
        known = self.alerts.get(alert.key)
        if known is None or when >= known.time:
            self.alerts[alert.key] = alert

    def _alert(self, parsed: Parsed) -> None:
        a = parsed.alert
        if a.resolution:
            subject = f"source:{a.source}" if a.source else f"appliance:{a.appliance}"
            key = f"{a.code}|{subject}"
            self.resolved[key] = _max(self.resolved.get(key), a.time)
            return
        self._raise(a.code, parsed, a.appliance, a.source, a.source_name, a.time, a.title, a.details)

    # -- what is true now -------------------------------------------------------------------

    def ended_at(self, alert: AlertState) -> datetime | None:
        """When the newest event that ends `alert` happened (None: nothing yet)."""
        ended = self.resolved.get(alert.key)
        rule = alert.cleared_by
        if rule == "never":
            return ended
        source = self.sources.get(alert.source) if alert.source else None
        if source is not None:
            event = source.last_ok if rule == "report" else source.last_clean if rule == "clean_report" else \
                (source.points[OFFSITE].time if OFFSITE in source.points else None)
        else:
            times = self.appliances.get(alert.appliance, {})
            event = times.get("offsite_ok") if rule == "offsite_ok" else times.get("report")
        return _max(ended, event)

    def open_alerts(self) -> Iterator[AlertState]:
        """Alerts nothing later has ended, oldest first."""
        for alert in sorted(self.alerts.values(), key=lambda a: (a.time, a.key)):
            ended = self.ended_at(alert)
            if ended is None or alert.time > ended:
                yield alert


def _point(source: Source, role: str, run, uid: int) -> None:
    known = source.points.get(role)
    if known is None:
        source.points[role] = Point(run.start, run.size, 1, uid)
    elif run.start > known.time:
        known.time, known.size, known.uid, known.seen = run.start, run.size, uid, True
        known.count += 1
    elif run.start < known.time:  # an older backup, read late
        known.count += 1
    elif not known.seen:  # the newest backup, read again after the folder was re-created
        known.seen = True
        known.count += 1
    # the same backup reported twice counts once


def size_of(point: Point) -> int | None:
    """A point's size in bytes (kept as written until needed)."""
    return parse_size(point.size) if isinstance(point.size, str) else point.size


def point_id(key: str, point: Point) -> str:
    """A stable id of a data source's backup: its key and start time (UTC)."""
    return f"{key}@{point.time.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
