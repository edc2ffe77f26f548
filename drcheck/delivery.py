"""E-mail delivery of the weekly report (`[reports.email]`).

A delivery is a rendered report (the HTML file and a plain-text summary beside it, written
when the delivery is queued) plus, on the first delivery of a month with
`attach_plan = "monthly"`, the DR plan's PDF. It is queued in the store's append-only
`deliveries` table, then attempted: sent, or failed with a one-line reason (connection
refused, authentication refused, certificate not trusted, timeout…) and the time of the
next attempt (back-off from `retry_first`, doubling, capped at `retry_max`). A delivery is
pending until an attempt succeeds, whatever restarts happen in between, so a report is
never lost: `drcheck report deliver`, which the agent runs as its `report:deliver` job,
queues the scheduled report when `schedule` says so and retries whatever is due.

The password is read (`SecretRef.reveal`) only to log in; it never appears in a message,
a recorded reason or a log line.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from zoneinfo import ZoneInfo

from drcheck import locks
from drcheck.atomic import write_new
from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.secrets import SecretUnavailable
from drcheck.store import Store, parse_ts, ts

log = logging.getLogger(__name__)

SMTP_POLICY = policy.SMTP.clone(max_line_length=998)  # RFC 5322's limit: a subject is not folded at 78
MAX_LISTED = 25  # items of one kind listed in the plain-text part; the rest are counted


class DeliveryError(Exception):
    """One attempt failed; the message is one line, without secrets."""


class NotConfigured(Exception):
    """`[reports.email]` is missing."""


@dataclass(frozen=True)
class Delivery:
    """A queued delivery and where it stands (from its newest row)."""

    id: int
    report: Path
    text_part: Path | None
    plan: Path | None
    recipients: tuple[str, ...]
    subject: str
    slot: datetime | None
    queued_at: datetime
    status: str  # queued, failed, sent
    attempts: int
    reason: str
    next_attempt_at: datetime | None

    def to_json(self) -> dict:
        return {"delivery": self.id, "report": str(self.report), "text_part": str(self.text_part or ""),
                "plan": str(self.plan) if self.plan else None, "recipients": list(self.recipients),
                "subject": self.subject, "slot": self.slot.isoformat() if self.slot else None,
                "queued_at": self.queued_at.isoformat(), "status": self.status, "attempts": self.attempts,
                "reason": self.reason,
                "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None}


def email_config(loaded: LoadedConfig):
    cfg = loaded.config.reports.email
    if cfg is None:
        raise NotConfigured(f"{loaded.path}: [reports.email] is not configured (host, from, to); "
                            "see `drcheck config schema`")
    return cfg


# -- the message ------------------------------------------------------------------------


def text_summary(loaded: LoadedConfig, context: dict) -> str:
    """A readable plain-text version of the weekly report: the verdict, what needs
    attention (and why), the week's restore tests with RTO against target, unprotected VMs.
    Built from the same context the HTML template renders, not from the HTML."""
    zone = ZoneInfo(loaded.config.agent.timezone)

    def local(when: datetime | None) -> str:
        return when.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z") if when else "—"

    lines = [f"drcheck weekly restore report — {context['agent']}",
             f"Period: {local(context['period_start'])} to {local(context['period_end'])}", ""]
    attention = context["attention"]
    unclaimed = context.get("unclaimed_failing", [])
    unprotected = context.get("unprotected_vms", [])
    counts = context["counts"]
    systems = context["systems"]
    if attention or unclaimed:
        lines.append(f"VERDICT: {len(attention) + len(unclaimed)} item(s) need attention "
                     f"({len(systems) - len(attention)} of {len(systems)} systems fine).")
    else:
        lines.append(f"VERDICT: all {len(systems)} systems fine.")
    lines.append(f"Restore tests this week: {counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
                 f"{counts.get('error', 0)} error(s), {counts.get('skipped', 0)} skipped.")
    if attention:
        lines += ["", "NEEDS ATTENTION"]
        for s in attention[:MAX_LISTED]:
            lines.append(f"- {s.name} ({s.system}, tier {s.tier}, owner {s.owner})")
            lines += [f"    {problem}" for problem in s.problems]
        if len(attention) > MAX_LISTED:
            lines.append(f"  … and {len(attention) - MAX_LISTED} more system(s): see the HTML part")
    if unclaimed:
        lines += ["", "PROBLEMS OF NO SYSTEM"]
        lines += [f"- {r.message}" for r in unclaimed[:MAX_LISTED]]
        if len(unclaimed) > MAX_LISTED:
            lines.append(f"  … and {len(unclaimed) - MAX_LISTED} more")
    if unprotected:
        lines += ["", f"UNPROTECTED VMS ({len(unprotected)})"]
        lines += [f"- {vm.path or vm.name}: {vm.message}" for vm in unprotected[:MAX_LISTED]]
        if len(unprotected) > MAX_LISTED:
            lines.append(f"  … and {len(unprotected) - MAX_LISTED} more: see the HTML part")
    runs = context["runs"]
    if runs:
        lines += ["", "RESTORE TESTS (failures first)"]
        for item in runs[:MAX_LISTED]:
            run = item["run"]
            row = item["row"]
            target = format_duration(row.get("rto_target_seconds"))
            lines.append(f"- {run.status.upper():7} {run.test} ({row.get('system')}) {local(run.started_at)}: "
                         f"RTO {format_duration(run.rto_seconds)} (target {target}), "
                         f"RPO {format_duration(run.rpo_seconds)} [test id {run.id}]")
            if run.reason:
                lines.append(f"    {run.reason}")
        if len(runs) > MAX_LISTED:
            lines.append(f"  … and {len(runs) - MAX_LISTED} more: see the HTML part")
    lines += ["", "SYSTEMS"]
    for s in systems[:MAX_LISTED * 4]:
        last = s.last_test
        measured = f"last RTO {format_duration(last.rto_seconds)}" if last and last.rto_seconds is not None \
            else "no measured RTO"
        lines.append(f"- {'OK  ' if s.ok else 'FAIL'} {s.name} ({s.system}, tier {s.tier}): {measured}, "
                     f"target RTO {format_duration(s.rto_target_seconds)} / RPO {format_duration(s.rpo_target_seconds)}")
    if len(systems) > MAX_LISTED * 4:
        lines.append(f"  … and {len(systems) - MAX_LISTED * 4} more: see the HTML part")
    lines += ["", f"Generated {local(context['generated_at'])} by drcheck {context['version']} "
                  f"from {context['database']}. The HTML part is the full report."]
    return "\n".join(lines) + "\n"


def render_report(loaded: LoadedConfig, store: Store, output_dir: Path, now: datetime) -> tuple[Path, Path, str]:
    """Render the weekly report (HTML, drcheck.reporting) and its plain-text summary beside
    it (same name, .txt); return (html, text, subject)."""
    from drcheck.reporting import render_weekly, weekly_context

    cfg = email_config(loaded)
    html = render_weekly(loaded, store, output_dir, now)
    context = weekly_context(loaded, store, now)
    text = write_new(lambda n: html.with_suffix(".txt" if n == 0 else f".{n + 1}.txt"),
                     text_summary(loaded, context))
    zone = ZoneInfo(loaded.config.agent.timezone)
    attention = len(context["attention"]) + len(context.get("unclaimed_failing", []))
    subject = cfg.subject.format(agent=context["agent"], start=context["period_start"].astimezone(zone),
                                 end=context["period_end"].astimezone(zone), attention=attention,
                                 verdict=f"{attention} need attention" if attention else "all good")
    return html, text, " ".join(subject.split())


def build_message(cfg, delivery: Delivery, now: datetime) -> EmailMessage:
    """The message of `delivery`: multipart/alternative (text, then HTML), inside
    multipart/mixed with the plan as application/pdf when it has one. Raise DeliveryError
    when a file it needs is gone."""
    try:
        html = delivery.report.read_text(encoding="utf-8")
        text = delivery.text_part.read_text(encoding="utf-8") if delivery.text_part else \
            f"The weekly report is in the HTML part ({delivery.report.name}).\n"
        pdf = delivery.plan.read_bytes() if delivery.plan else None
    except OSError as exc:
        raise DeliveryError(f"cannot read {exc.filename}: {exc.strerror}") from None
    message = EmailMessage(policy=SMTP_POLICY)
    message["Subject"] = delivery.subject
    message["From"] = cfg.from_
    message["To"] = ", ".join(delivery.recipients)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("drcheck", domain=cfg.from_.rsplit("@", 1)[1])
    message["X-Drcheck-Report"] = delivery.report.name
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if pdf is not None:
        message.add_attachment(pdf, maintype="application", subtype="pdf", filename=delivery.plan.name)
    return message


# -- sending ----------------------------------------------------------------------------


def tls_context(cfg) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cfg.ca_bundle) if cfg.ca_bundle else None)
    if cfg.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def send_message(cfg, message: EmailMessage, recipients: tuple[str, ...] | list[str]) -> dict[str, tuple]:
    """Send `message` over SMTP as `cfg` says (STARTTLS or TLS with verification, AUTH when
    configured). Return the recipients the server refused while accepting others. Raise
    DeliveryError with a one-line reason (no secret in it) when nothing was sent."""
    host, port, timeout = cfg.host, cfg.smtp_port(), cfg.timeout.total_seconds()
    where = f"{host}:{port}"
    if cfg.insecure:
        log.warning("e-mail to %s: insecure = true: %s", where,
                    "sending in clear text" if cfg.security == "none" else "the certificate is not verified")
    password = None
    try:
        if cfg.password is not None:
            password = cfg.password.ref().reveal()
        try:
            context = tls_context(cfg) if cfg.security != "none" else None
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(f"ca_bundle {cfg.ca_bundle}: cannot load ({getattr(exc, 'strerror', None) or exc})") from None
        if cfg.security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if cfg.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"{where} does not offer STARTTLS; refusing to send the report in clear text "
                                        "(security = 'tls' for implicit TLS)")
                smtp.starttls(context=context)
                smtp.ehlo()
            if cfg.username is not None:
                smtp.login(cfg.username, password)
            return smtp.send_message(message, cfg.from_, list(recipients))
    except DeliveryError as exc:
        raise DeliveryError(_scrub(str(exc), password)) from None
    except SecretUnavailable as exc:
        raise DeliveryError(f"password {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"TLS: the certificate of {where} is not trusted ({exc.verify_message}); set ca_bundle "
                            "to the CA that signed it") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS handshake with {where} failed: {exc.reason or exc}") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(_scrub(f"authentication as {cfg.username} refused by {where}: "
                                   f"{exc.smtp_code} {_text(exc.smtp_error)}", password)) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"{where}: {exc}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(f"{addr}: {code} {_text(msg)}" for addr, (code, msg) in exc.recipients.items())
        raise DeliveryError(_scrub(f"{where} refused every recipient ({refused})", password)) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(_scrub(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}", password)) from None
    except smtplib.SMTPServerDisconnected:
        raise DeliveryError(f"{where} closed the connection") from None
    except smtplib.SMTPException as exc:
        raise DeliveryError(_scrub(f"{where}: {exc}", password)) from None
    except ConnectionRefusedError:
        raise DeliveryError(f"connection to {where} refused (is the SMTP server running?)") from None
    except (socket.timeout, TimeoutError):
        raise DeliveryError(f"no answer from {where} within {format_duration(timeout)}") from None
    except socket.gaierror as exc:
        raise DeliveryError(f"cannot resolve {host}: {exc.strerror}") from None
    except OSError as exc:
        raise DeliveryError(f"cannot reach {where}: {exc.strerror or exc}") from None


def _text(value) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())


def _scrub(text: str, secret: str | None) -> str:
    text = " ".join(text.split())
    return text.replace(secret, "***") if secret else text


# -- the queue --------------------------------------------------------------------------

_QUEUE = """SELECT q.id, q.report, q.text_part, q.plan, q.recipients, q.subject, q.slot, q.at AS queued_at,
    last.status, last.attempt, last.reason, last.next_attempt_at
    FROM deliveries q JOIN deliveries last ON last.id = (SELECT MAX(id) FROM deliveries WHERE delivery = q.id)
    WHERE q.id = q.delivery AND q.attempt = 0"""


def _delivery(row: dict) -> Delivery:
    return Delivery(id=row["id"], report=Path(row["report"]),
                    text_part=Path(row["text_part"]) if row["text_part"] else None,
                    plan=Path(row["plan"]) if row["plan"] else None, recipients=tuple(json.loads(row["recipients"])),
                    subject=row["subject"], slot=parse_ts(row["slot"]), queued_at=parse_ts(row["queued_at"]),
                    status=row["status"], attempts=row["attempt"], reason=row["reason"] or "",
                    next_attempt_at=parse_ts(row["next_attempt_at"]))


def deliveries(store: Store, pending_only: bool = False) -> list[Delivery]:
    """Every delivery (or only those not sent yet), oldest first."""
    sql = _QUEUE + (" AND last.status != 'sent'" if pending_only else "") + " ORDER BY q.id"
    return [_delivery(row) for row in store.query(sql)]


def delivery(store: Store, delivery_id: int) -> Delivery:
    return _delivery(store.query(_QUEUE + " AND q.id = ?", [delivery_id])[0])


def attempts(store: Store, delivery_id: int) -> list[dict]:
    """The rows of one delivery: queued, then each attempt."""
    return store.query("SELECT * FROM deliveries WHERE delivery = ? ORDER BY id", [delivery_id])


def enqueue(store: Store, report: Path, text_part: Path | None, recipients, subject: str, now: datetime,
            plan: Path | None = None, slot: datetime | None = None) -> Delivery:
    """Queue a delivery of files already rendered; return it (status `queued`)."""
    with store.write_lock():
        conn = store.db.conn
        (next_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM deliveries").fetchone()
        conn.execute(
            "INSERT INTO deliveries (id, delivery, report, text_part, plan, recipients, subject, slot, status, reason, "
            "at, attempt, next_attempt_at, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', '', ?, 0, NULL, ?)",
            [next_id, next_id, str(report), str(text_part) if text_part else None, str(plan) if plan else None,
             json.dumps(list(recipients)), subject, ts(slot) if slot else None, ts(now), store.agent])
    return delivery(store, next_id)


def backoff(cfg, attempt: int) -> timedelta:
    """The wait after failed attempt number `attempt` (1, 2, …)."""
    first, cap = cfg.retry_first.total_seconds(), cfg.retry_max.total_seconds()
    return timedelta(seconds=min(cap, first * 2 ** min(attempt - 1, 30)))


def attempt(loaded: LoadedConfig, store: Store, item: Delivery, now: datetime) -> Delivery:
    """Try to send `item` once; record the attempt (sent, or failed with its reason and the
    time of the next try) and return the delivery as it now stands."""
    cfg = email_config(loaded)
    number = item.attempts + 1
    try:
        refused = send_message(cfg, build_message(cfg, item, now), item.recipients)
    except DeliveryError as exc:
        status, reason, retry_at = "failed", str(exc), now + backoff(cfg, number)
        log.error("e-mail delivery %d of %s (attempt %d) failed: %s; next attempt %s", item.id, item.report.name,
                  number, reason, ts(retry_at))
    else:
        status, retry_at = "sent", None
        reason = "; ".join(f"{addr} refused: {code} {_text(msg)}" for addr, (code, msg) in refused.items())
        log.info("e-mail delivery %d of %s sent to %s", item.id, item.report.name, ", ".join(item.recipients))
    with store.write_lock():
        store.db.conn.execute(
            "INSERT INTO deliveries (delivery, report, text_part, plan, recipients, subject, slot, status, reason, at, "
            "attempt, next_attempt_at, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [item.id, str(item.report), str(item.text_part) if item.text_part else None,
             str(item.plan) if item.plan else None, json.dumps(list(item.recipients)), item.subject,
             ts(item.slot) if item.slot else None, status, reason, ts(now), number,
             ts(retry_at) if retry_at else None, store.agent])
    return delivery(store, item.id)


def due(store: Store, now: datetime) -> list[Delivery]:
    """Pending deliveries whose next attempt is due (queued ones at once)."""
    return [d for d in deliveries(store, pending_only=True) if d.next_attempt_at is None or d.next_attempt_at <= now]


# -- what the agent and the CLI run -----------------------------------------------------


def latest_slot(loaded: LoadedConfig, now: datetime) -> datetime | None:
    """The newest time at or before `now` the e-mail schedule names (cron schedules), or
    None for interval schedules (see `scheduled_due`)."""
    cfg = email_config(loaded)
    if not cfg.schedule.cron:
        return None
    from apscheduler.triggers.cron import CronTrigger

    from drcheck.config_types import cron_fields

    # without the schedule's jitter: a slot is the same instant at every tick
    trigger = CronTrigger(**cron_fields(cfg.schedule.cron), timezone=loaded.config.agent.timezone)
    zone = ZoneInfo(loaded.config.agent.timezone)
    for window in (timedelta(hours=1), timedelta(days=1), timedelta(days=8), timedelta(days=32),
                   timedelta(days=400)):  # the smallest window holding a slot: few steps for any cron
        found, previous, start = None, None, now.astimezone(zone) - window
        while True:
            nxt = trigger.get_next_fire_time(previous, start)
            if nxt is None or nxt > now:
                break
            found, previous, start = nxt, nxt, nxt + timedelta(seconds=1)
        if found is not None:
            return found
    return None


def scheduled_due(loaded: LoadedConfig, store: Store, now: datetime) -> datetime | None:
    """The slot the scheduled report should be queued for now, or None. A cron slot is due
    once; a slot missed while the agent was down is caught up (only the newest), except
    before the first scheduled delivery, when only a slot within `agent.misfire_grace` (at
    least an hour) counts. An interval schedule is due when the newest scheduled delivery
    is that old."""
    cfg = email_config(loaded)
    (last,) = store.db.execute("SELECT MAX(slot) FROM deliveries WHERE slot IS NOT NULL").fetchone()
    last = parse_ts(last)
    if cfg.schedule.interval:
        return now if last is None or now - last >= cfg.schedule.interval else None
    slot = latest_slot(loaded, now)
    if slot is None or (last is not None and slot <= last):
        return None
    grace = max(loaded.config.agent.misfire_grace, timedelta(hours=1))
    if last is None and now - slot > grace:
        return None
    return slot


def plan_attachment(loaded: LoadedConfig, store: Store, output_dir: Path, now: datetime) -> Path | None:
    """With attach_plan = "monthly", the PDF plan for the first delivery of this month (in
    the agent's zone): rendered now by drcheck.plan; None when not asked, already attached
    this month, or not renderable (logged; the report goes without it and the next delivery
    this month tries again)."""
    cfg = email_config(loaded)
    if cfg.attach_plan != "monthly":
        return None
    zone = ZoneInfo(loaded.config.agent.timezone)
    month_start = now.astimezone(zone).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    (attached,) = store.db.execute("SELECT COUNT(*) FROM deliveries WHERE attempt = 0 AND plan IS NOT NULL "
                                   "AND at >= ?", [ts(month_start)]).fetchone()
    if attached:
        return None
    from drcheck.plan import render_plan

    try:
        files = render_plan(loaded, store, output_dir, now, pdf=True)
    except NotImplementedError as exc:
        log.warning("the DR plan is not attached: %s", exc)
        return None
    except Exception as exc:  # the report must still go out
        log.error("the DR plan is not attached: rendering it failed: %s: %s", type(exc).__name__, exc)
        return None
    return files.pdf


def queue_report(loaded: LoadedConfig, store: Store, now: datetime, recipients=None,
                 slot: datetime | None = None) -> Delivery:
    """Render the weekly report (and the monthly plan, if due) and queue its delivery."""
    cfg = email_config(loaded)
    output = loaded.config.reports.output_dir
    html, text, subject = render_report(loaded, store, output, now)
    plan = plan_attachment(loaded, store, output, now)
    return enqueue(store, html, text, tuple(recipients or cfg.to), subject, now, plan=plan, slot=slot)


def delivery_lock(loaded: LoadedConfig) -> Path:
    return locks.lock_dir(loaded.config.agent.state_dir) / "deliveries.lock"


def run_due(loaded: LoadedConfig, store: Store, now: datetime) -> list[Delivery]:
    """The agent's `report:deliver` job: queue the scheduled report if it is due, then
    attempt every pending delivery that is due. Return the deliveries attempted. Raise
    locks.Busy when another process is delivering."""
    with locks.exclusive(delivery_lock(loaded), "e-mail delivery"):
        slot = scheduled_due(loaded, store, now)
        if slot is not None:
            queue_report(loaded, store, now, slot=slot)
        return [attempt(loaded, store, item, now) for item in due(store, now)]


def send_now(loaded: LoadedConfig, store: Store, now: datetime, recipients=None) -> Delivery:
    """`drcheck report send`: render the weekly report and send it now. A failure stays
    queued for the agent to retry; so does a delivery another process is busy sending."""
    queued = queue_report(loaded, store, now, recipients=recipients)
    try:
        with locks.exclusive(delivery_lock(loaded), "e-mail delivery"):
            return attempt(loaded, store, queued, now)
    except locks.Busy:
        return queued
