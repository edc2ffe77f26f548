"""Sample Barracuda Backup e-mails, written by the project (see README.md beside this file:
what Barracuda documents about its report and alert e-mails, and what is our own
construction). Used by the unit and end-to-end tests, `drcheck demo` (loaded by file path
from `drcheck.probes.barracuda_lab`) and the benchmark.

Every function returns one RFC 5322 message as bytes. Times in bodies are the appliance's
local wall-clock time without a zone (as its web interface shows them); the `Date:` header
carries the appliance's UTC offset, which is how a reader learns the zone.
"""

from __future__ import annotations

import html as html_escape
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Iterable, Sequence

CENTRAL = timezone(timedelta(hours=-6), "CST")  # the district's appliances run on local time
SENDER = "Barracuda Backup <noreply@{appliance}.district.local>"
RECIPIENT = "backup-reports@district.example"
RULE = "-" * 64

# report status texts, as the appliance's Reports > Backup page words them
COMPLETED, WARNINGS, FAILED = "Completed", "Completed with warnings", "Failed"
OFFSITE_OK = "Barracuda Cloud Storage - Up to date"
OFFSITE_BEHIND = "Barracuda Cloud Storage - Queued (52.4 GB, queue age 3 days)"


@dataclass
class SourceRun:
    """One data source's part of a backup job."""

    name: str
    start: datetime
    computer: str = "vcenter.district.local"
    type: str = "VMware vSphere"
    status: str = COMPLETED
    minutes: float = 35
    size_gb: float = 40.0
    new_gb: float = 1.2
    offsite: str | None = None  # a per-source replication line (else the report's)
    error: str | None = None


@dataclass
class Source:
    """A data source a nightly schedule backs up (for `nightly`)."""

    name: str
    computer: str = "vcenter.district.local"
    type: str = "VMware vSphere"
    size_gb: float = 40.0
    extra: dict = field(default_factory=dict)


def _local(when: datetime, tz: timezone) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


_COUNTER = itertools.count(1)


def _message(subject: str, text: str, sent: datetime, appliance: str, tz: timezone, *, html: bool = False,
             multipart: bool = False, message_id: str | None = None) -> bytes:
    if not (html or multipart):  # written out directly: the benchmark builds 10,000 of them
        headers = [f"From: {SENDER.format(appliance=appliance)}", f"To: {RECIPIENT}", f"Subject: {subject}",
                   f"Date: {format_datetime(sent.astimezone(tz))}",
                   f"Message-ID: {message_id or f'<{sent.timestamp():.0f}.{next(_COUNTER)}@{appliance}.district.local>'}",
                   "MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"',
                   "Content-Transfer-Encoding: 7bit"]
        return ("\r\n".join(headers) + "\r\n\r\n" + text.replace("\n", "\r\n")).encode()
    msg = EmailMessage()
    msg["From"] = SENDER.format(appliance=appliance)
    msg["To"] = RECIPIENT
    msg["Subject"] = subject
    msg["Date"] = format_datetime(sent.astimezone(tz))
    msg["Message-ID"] = message_id or make_msgid(domain=f"{appliance}.district.local")
    if html or multipart:
        markup = _html(text)
        if multipart:
            msg.set_content(text)
            msg.add_alternative(markup, subtype="html")
        else:
            msg.set_content(markup, subtype="html", cte="quoted-printable")
    else:
        msg.set_content(text, cte="7bit")
    return msg.as_bytes()


def _html(text: str) -> str:
    """The same report as an HTML table of label/value rows (how the web interface lays a
    report out); section rules become headings."""
    rows = []
    for line in text.splitlines():
        if ":" in line:
            label, value = line.split(":", 1)
            rows.append(f"<tr><td class=\"label\">{html_escape.escape(label)}</td>"
                        f"<td>{html_escape.escape(value.strip())}</td></tr>")
        elif line.strip() and line != RULE:
            rows.append(f"<tr><th colspan=\"2\">{html_escape.escape(line)}</th></tr>")
    return ("<html><body><table class=\"report\">\n" + "\n".join(rows) + "\n</table></body></html>\n")


def report(appliance: str, schedule: str, runs: Sequence[SourceRun], *, sent: datetime | None = None,
           offsite: str | None = OFFSITE_OK, tz: timezone = CENTRAL, html: bool = False, multipart: bool = False,
           message_id: str | None = None) -> bytes:
    """The report of one backup job (a schedule's run over its data sources), sent when its
    last data source finished. `offsite` is the appliance's replication state then (None:
    a firmware that does not say)."""
    ends = [r.start + timedelta(minutes=r.minutes) for r in runs]
    sent = sent or (max(ends) + timedelta(minutes=2))
    worst = FAILED if any(r.status == FAILED for r in runs) else \
        WARNINGS if any(r.status != COMPLETED for r in runs) else COMPLETED
    lines = ["Barracuda Backup Report", "", f"Appliance: {appliance}", f"Schedule: {schedule}",
             f"Report Time: {_local(sent, tz)}"]
    if offsite is not None:
        lines.append(f"Offsite Replication: {offsite}")
    for run, end in zip(runs, ends, strict=True):
        lines += ["", RULE, f"Computer: {run.computer} ({run.type})", f"Data Source: {run.name}",
                  f"Status: {run.status}", f"Start Time: {_local(run.start, tz)}"]
        if run.status != FAILED:
            lines += [f"End Time: {_local(end, tz)}", f"Size: {run.size_gb:.1f} GB", f"New Data: {run.new_gb:.1f} GB"]
        if run.offsite is not None:
            lines.append(f"Offsite: {run.offsite}")
        if run.error:
            lines.append(f"Error: {run.error}")
    lines += [RULE, "", "This report was sent by your Barracuda Backup appliance.", ""]
    return _message(f"Barracuda Backup Report: {appliance} - {schedule} - {worst}", "\n".join(lines), sent,
                    appliance, tz, html=html, multipart=multipart, message_id=message_id)


ALERTS = {
    # kind: (alert line, details template)
    "job_failed": ("Backup job failed", "The backup of {source} on {computer} failed: {details}"),
    "offline": ("Appliance offline", "{appliance} has not contacted Barracuda Cloud Control since {since}."),
    "online": ("Appliance back online", "{appliance} is communicating with Barracuda Cloud Control again."),
    "replication_behind": ("Offsite replication behind",
                           "Data waiting to be replicated offsite: {details}. Check the rate limit and the "
                           "Internet connection."),
    "cloud_unreachable": ("Cannot communicate with Barracuda Cloud Storage",
                          "{appliance} has not been able to communicate with Barracuda Cloud Storage."),
    "disk_error": ("Disk error", "{details}"),
    "disk_resolved": ("RAID volume rebuilt", "{details}"),
}


def alert(appliance: str, kind: str, at: datetime, *, source: str | None = None,
          computer: str = "vcenter.district.local", details: str = "", tz: timezone = CENTRAL,
          message_id: str | None = None) -> bytes:
    """An alert e-mail of one of `ALERTS`' kinds, raised at `at`."""
    title, template = ALERTS[kind]
    text = template.format(appliance=appliance, source=source, computer=computer, details=details,
                           since=_local(at - timedelta(minutes=15), tz))
    lines = ["Barracuda Backup Alert", "", f"Appliance: {appliance}", f"Alert: {title}", f"Time: {_local(at, tz)}"]
    if source:
        lines += [f"Computer: {computer}", f"Data Source: {source}"]
    lines += [f"Details: {text}", ""]
    return _message(f"Barracuda Backup Alert: {appliance} - {title}", "\n".join(lines), at + timedelta(seconds=30),
                    appliance, tz, message_id=message_id)


def notice(appliance: str, at: datetime, text: str = "Firmware updated to version 6.6.04.", *,
           tz: timezone = CENTRAL) -> bytes:
    """A notice (software updated): no report, no alert; a reader ignores it."""
    body = f"Barracuda Backup Notice\n\nAppliance: {appliance}\nTime: {_local(at, tz)}\nDetails: {text}\n"
    return _message(f"Barracuda Backup Notice: {appliance} - Software update", body, at, appliance, tz)


def mangled_report(appliance: str, at: datetime, *, tz: timezone = CENTRAL) -> bytes:
    """A report a reader cannot use: its data source lines were cut off (a truncated
    message, or a firmware whose layout the rules do not know)."""
    body = (f"Barracuda Backup Report\n\nAppliance: {appliance}\nSchedule: Nightly VMs\n"
            "The detailed report is available in Barracuda Cloud Control.\n")
    return _message(f"Barracuda Backup Report: {appliance} - Nightly VMs - Completed", body, at, appliance, tz)


def foreign(at: datetime, subject: str = "Lunch menu for next week") -> bytes:
    """Mail that is neither a report, an alert nor a notice (the mailbox is shared)."""
    return _message(subject, "Tacos on Tuesday.\n", at, "cafeteria", CENTRAL)


def nightly(appliance: str, schedule: str, sources: Sequence[Source], *, days: int, now: datetime,
            start_hour: int = 22, silent: Iterable[str] = (), silent_days: int = 2,
            failed: dict[str, str] | None = None, tz: timezone = CENTRAL, offsite: str | None = OFFSITE_OK
            ) -> list[bytes]:
    """`days` nights of a schedule's reports, oldest first, each job starting at
    `start_hour` local time (only jobs whose report would already have been sent by
    `now`). Data sources in `silent` stop appearing in the last `silent_days` reports (the
    appliance dropped them from the job: nothing reports them); `failed` maps a data
    source to the error of its failed run in the newest report."""
    silent, failed = set(silent), dict(failed or {})
    local_now = now.astimezone(tz)
    messages: list[bytes] = []
    nights = []
    for back in range(days + 1, -1, -1):
        day = (local_now - timedelta(days=back)).replace(hour=start_hour, minute=0, second=5, microsecond=0)
        if day + timedelta(hours=3) <= local_now:
            nights.append(day)
    nights = nights[-days:]
    for i, night in enumerate(nights):
        newest = i == len(nights) - 1
        runs, start = [], night
        for src in sources:
            if src.name in silent and i >= len(nights) - silent_days:
                continue
            status, error = (FAILED, failed[src.name]) if newest and src.name in failed else (COMPLETED, None)
            runs.append(SourceRun(src.name, start, computer=src.computer, type=src.type, status=status,
                                  size_gb=src.size_gb, error=error, minutes=12))
            start += timedelta(minutes=13)
        if runs:
            messages.append(report(appliance, schedule, runs, offsite=offsite, tz=tz))
    return messages


def bulk(count: int, now: datetime, *, appliance: str = "bbs-district", sources: int = 50,
         per_report: int = 5) -> list[bytes]:
    """`count` report messages (benchmark): `sources` VMs backed up hourly by jobs of
    `per_report` data sources each, ending just before `now`, oldest first."""
    names = [f"vm{n:03d}" for n in range(sources)]
    messages = []
    jobs_per_round = max(1, sources // per_report)
    for index in range(count):
        round_, job = divmod(index, jobs_per_round)
        start = now - timedelta(hours=(count // jobs_per_round) - round_ + 1)
        chosen = names[job * per_report:(job + 1) * per_report]
        runs = [SourceRun(name, start + timedelta(minutes=3 * k), minutes=2, size_gb=20 + k) for k, name in
                enumerate(chosen)]
        messages.append(report(appliance, f"Hourly {job:02d}", runs, sent=start + timedelta(minutes=20)))
    return messages
