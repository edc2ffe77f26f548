"""E-mail delivery of the weekly report against a real SMTP server on 127.0.0.1 (aiosmtpd,
drcheck.lab_smtp): the message is parsed back (text and HTML parts, the PDF attachment);
STARTTLS and implicit TLS with certificate verification; failures (wrong password, server
down, untrusted certificate) are recorded, retried with back-off and delivered once the
server accepts; secrets appear nowhere."""

from __future__ import annotations

import json
import logging
import re
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tomli_w
from click.testing import CliRunner

from drcheck import delivery as dl
from drcheck.cli import cli
from drcheck.config_loader import ConfigError, load
from drcheck.lab_smtp import SmtpLab
from drcheck.lab_vcsim import make_test_ca
from drcheck.plan import PlanFiles
from drcheck.results import utcnow
from drcheck.scheduler import job_specs
from drcheck.store import Store

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-Smtp-pw-7731"
ENV = "DRCHECK_TEST_SMTP_PASSWORD"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return make_test_ca(tmp_path_factory.mktemp("smtp-ca"))


@pytest.fixture
def smtp(tmp_path, ca):
    with SmtpLab(tmp_path / "smtp", users={"drcheck": PASSWORD}, tls=ca) as lab:
        yield lab


@pytest.fixture
def configure(make_config, tmp_path, monkeypatch, ca, smtp):
    """configure(**email) -> LoadedConfig: the example configuration with [reports.email]
    pointing at the lab server (STARTTLS, AUTH, the test CA); keywords override keys."""
    monkeypatch.setenv(ENV, PASSWORD)
    make_config()

    def make(**email):
        path = tmp_path / "drcheck.toml"
        data = tomllib.loads(path.read_text())
        settings = {"host": "127.0.0.1", "port": smtp.port, "security": "starttls", "username": "drcheck",
                    "password": {"env": ENV}, "ca_bundle": str(ca.ca), "from": "drcheck@district.example",
                    "to": ["it@district.example", "auditor@district.example"], "retry_first": "5m",
                    "schedule": {"cron": "0 7 29 2 *"}}  # scheduled reports only where a test asks
        settings.update(email)
        data["reports"]["email"] = {k: v for k, v in settings.items() if v is not None}
        path.write_text(tomli_w.dumps(data))
        return load(path)

    return make


def small_pdf(path: Path) -> Path:
    """A real one-page PDF (hand-written objects, computed cross-reference table)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               None, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    stream = b"BT /F1 12 Tf 20 50 Td (DR plan) Tj ET"
    objects[3] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def week_of_results(record, now: datetime) -> None:
    record.test("sis", "passed", now - timedelta(days=2), rto=timedelta(minutes=42), rpo=timedelta(hours=5))
    record.test("payroll", "failed", now - timedelta(days=1), reason="spot check: 3 of 20 files differ",
                checks=[("spot check", "failed", "3 of 20 files differ")])


def parts(message):
    return [(p.get_content_type(), p) for p in message.walk() if not p.is_multipart()]


def test_the_report_arrives_over_starttls_with_both_parts_and_the_plan_attached(configure, record, smtp,
                                                                               tmp_path):
    loaded = configure()
    now = utcnow()
    week_of_results(record, now)
    with Store(loaded.database_path) as store:
        html, text, subject = dl.render_report(loaded, store, loaded.config.reports.output_dir, now)
        pdf = small_pdf(tmp_path / "plan-2026-11.pdf")
        queued = dl.enqueue(store, html, text, loaded.config.reports.email.to, subject, now, plan=pdf)
        sent = dl.attempt(loaded, store, queued, now)
    assert sent.status == "sent" and sent.attempts == 1 and sent.reason == ""
    [raw_file] = smtp.received()
    envelope = smtp.envelope(raw_file)
    assert envelope == {"mail_from": "drcheck@district.example", "authenticated": True,
                        "rcpt_tos": ["it@district.example", "auditor@district.example"]}
    message = smtp.parse(raw_file)
    assert message["Subject"] == subject and subject.endswith("need attention)")  # payroll failed
    assert message.get_content_type() == "multipart/mixed"
    kinds = [kind for kind, _ in parts(message)]
    assert kinds == ["text/plain", "text/html", "application/pdf"]
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert re.search(r"^VERDICT: \d+ item\(s\) need attention", body, re.M)
    assert re.search(r"^- FAILED  payroll-files \(payroll\) .*\[test id \d+\]$", body, re.M)
    assert "    spot check: 3 of 20 files differ" in body
    assert not re.search(r"</?(html|td|tr|table|div|p|span|h\d)\b", body)  # a summary, not stripped HTML
    assert message.get_body(preferencelist=("html",)).get_content().rstrip() == html.read_text().rstrip()
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "plan-2026-11.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == pdf.read_bytes()
    assert html.exists() and text.exists()  # the rendered files stay


def test_implicit_tls_delivers_and_the_cli_sends_to_an_address_given(configure, record, smtp):
    loaded = configure(port=smtp.tls_port, security="tls")
    week_of_results(record, utcnow())
    result = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "send", "--to",
                                      "principal@district.example", "--json"])
    assert result.exit_code == 0, result.output
    sent = json.loads(result.output)
    assert sent["status"] == "sent" and sent["recipients"] == ["principal@district.example"]
    [raw_file] = smtp.received()
    assert smtp.envelope(raw_file)["rcpt_tos"] == ["principal@district.example"]
    message = smtp.parse(raw_file)
    assert [kind for kind, _ in parts(message)] == ["text/plain", "text/html"]
    assert Path(sent["report"]).read_text().rstrip() == message.get_body(preferencelist=("html",)).get_content().rstrip()


def test_a_wrong_password_is_recorded_and_retried_with_backoff_until_the_server_accepts(configure, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    loaded = configure()
    smtp.users["drcheck"] = "the-server-has-another-one"
    t0 = utcnow()
    with Store(loaded.database_path) as store:
        queued = dl.queue_report(loaded, store, t0)
        first = dl.attempt(loaded, store, queued, t0)
        assert first.status == "failed" and first.attempts == 1
        assert first.reason.startswith("authentication as drcheck refused by 127.0.0.1:")
        assert "\n" not in first.reason
        assert first.next_attempt_at == t0 + timedelta(minutes=5)
        assert dl.due(store, t0 + timedelta(minutes=4)) == []
        second = dl.attempt(loaded, store, dl.due(store, t0 + timedelta(minutes=5))[0], t0 + timedelta(minutes=5))
        assert second.status == "failed" and second.next_attempt_at == t0 + timedelta(minutes=15)  # doubled
        smtp.users["drcheck"] = PASSWORD  # the operator fixed the account
        assert dl.due(store, t0 + timedelta(minutes=14)) == []
        [third] = [dl.attempt(loaded, store, d, t0 + timedelta(minutes=15))
                   for d in dl.due(store, t0 + timedelta(minutes=15))]
        assert third.status == "sent" and third.attempts == 3
        assert dl.deliveries(store, pending_only=True) == []
        rows = dl.attempts(store, queued.id)
        dump = json.dumps(store.query("SELECT * FROM deliveries"))
    assert [(r["status"], r["attempt"]) for r in rows] == [("queued", 0), ("failed", 1), ("failed", 2), ("sent", 3)]
    assert len(smtp.received()) == 1
    # smtplib tries each mechanism the server offers before giving up: every try but the last failed
    assert [ok for _, ok in smtp.auth_attempts][-1] is True and sum(ok for _, ok in smtp.auth_attempts) == 1
    assert PASSWORD not in dump and PASSWORD not in caplog.text
    assert PASSWORD.encode() not in smtp.received()[0].read_bytes()


def test_backoff_doubles_up_to_its_cap(configure):
    cfg = configure(retry_first="1m", retry_max="10m").config.reports.email
    assert [dl.backoff(cfg, n).total_seconds() / 60 for n in (1, 2, 3, 4, 5, 40)] == [1, 2, 4, 8, 10, 10]


def test_a_server_that_is_down_loses_nothing_and_the_queue_survives_a_restart(configure, smtp, tmp_path):
    port = smtp.port
    smtp.stop()  # nothing listens on the configured port now
    loaded = configure(port=port)
    result = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "send"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"connection to 127.0.0.1:{port} refused" in lines[0], result.output
    assert "queued, the agent retries" in lines[0] and "Traceback" not in result.output
    with Store(loaded.database_path) as store:  # a new process: the queue is in the store
        [pending] = dl.deliveries(store, pending_only=True)
        assert pending.status == "failed" and pending.report.exists() and pending.text_part.exists()
    smtp.port = port
    smtp.start()
    with Store(loaded.database_path) as store:
        done = dl.attempt(loaded, store, pending, pending.next_attempt_at)
    assert done.status == "sent"
    message = smtp.messages()[0]
    assert message.get_body(preferencelist=("html",)).get_content().rstrip() == pending.report.read_text().rstrip()


def test_an_untrusted_certificate_is_a_one_line_error(configure, smtp):
    loaded = configure(ca_bundle=None)  # the system's trust store does not know the test CA
    result = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "send"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert f"TLS: the certificate of 127.0.0.1:{smtp.port} is not trusted" in lines[0]
    assert "set ca_bundle" in lines[0] and PASSWORD not in result.output
    assert smtp.received() == [] and smtp.auth_attempts == []  # nothing, not even the password, was sent


def test_clear_text_needs_insecure_and_then_works(configure, smtp, caplog):
    with pytest.raises(ConfigError) as refused:
        configure(port=smtp.plain_port, security="none")
    assert any("reports.email" in line and "insecure = true" in line for line in refused.value.errors)
    loaded = configure(port=smtp.plain_port, security="none", insecure=True, ca_bundle=None)
    with Store(loaded.database_path) as store:
        sent = dl.send_now(loaded, store, utcnow())
    assert sent.status == "sent" and len(smtp.received()) == 1
    assert "insecure = true: sending in clear text" in caplog.text


def test_starttls_is_required_when_configured(configure, smtp):
    loaded = configure(port=smtp.plain_port)  # this listener does not offer STARTTLS
    with Store(loaded.database_path) as store:
        failed = dl.send_now(loaded, store, utcnow())
    assert failed.status == "failed" and "does not offer STARTTLS" in failed.reason
    assert smtp.received() == [] and smtp.auth_attempts == []


def test_inline_passwords_are_refused(configure):
    with pytest.raises(ConfigError) as refused:
        configure(password=PASSWORD)
    assert PASSWORD not in "\n".join(refused.value.errors)
    assert any("reports.email.password" in line and "inline secrets" in line for line in refused.value.errors)


def test_the_agent_schedules_delivery_and_sends_the_scheduled_report_once(configure, smtp):
    loaded = configure(schedule={"cron": "0 7 * * 1"})
    [spec] = [s for s in job_specs(loaded) if s.id == "report:deliver"]
    assert spec.args == ("report", "deliver") and spec.schedule.interval == timedelta(minutes=5)
    monday = datetime(2026, 11, 23, 7, 0, tzinfo=ZoneInfo(loaded.config.agent.timezone))
    with Store(loaded.database_path) as store:
        assert dl.run_due(loaded, store, monday - timedelta(minutes=1)) == []  # not yet
        [sent] = dl.run_due(loaded, store, monday + timedelta(minutes=2))
        assert sent.status == "sent" and sent.slot == monday
        assert dl.run_due(loaded, store, monday + timedelta(minutes=7)) == []  # once per slot
        # the agent was down the next Monday morning: the missed slot is caught up
        [late] = dl.run_due(loaded, store, monday + timedelta(days=7, hours=5))
        assert late.slot == monday + timedelta(days=7)
    assert len(smtp.received()) == 2


def test_the_first_scheduled_slot_is_not_caught_up_days_later(configure, smtp):
    loaded = configure(schedule={"cron": "0 7 * * 1"})
    wednesday = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    with Store(loaded.database_path) as store:
        assert dl.run_due(loaded, store, wednesday) == []
    assert smtp.received() == []


def test_the_plan_is_attached_to_the_first_delivery_of_each_month(configure, smtp, monkeypatch, tmp_path):
    rendered = []

    def render_plan(loaded, store, output_dir, now, pdf=True):
        rendered.append(now)
        path = small_pdf(Path(output_dir) / f"plan-{now:%Y-%m-%d-%H%M}.pdf")
        return PlanFiles(html=path.with_suffix(".html"), pdf=path)

    monkeypatch.setattr("drcheck.plan.render_plan", render_plan)
    loaded = configure(attach_plan="monthly")
    nov, nov_later, dec = (datetime(2026, 11, 2, 7, tzinfo=timezone.utc), datetime(2026, 11, 9, 7, tzinfo=timezone.utc),
                           datetime(2026, 12, 7, 7, tzinfo=timezone.utc))
    with Store(loaded.database_path) as store:
        first = dl.send_now(loaded, store, nov)
        second = dl.send_now(loaded, store, nov_later)
        third = dl.send_now(loaded, store, dec)
    assert [d.plan is not None for d in (first, second, third)] == [True, False, True]
    assert rendered == [nov, dec]
    attached = [[a.get_filename() for a in m.iter_attachments()] for m in smtp.messages()]
    assert attached == [["plan-2026-11-02-0700.pdf"], [], ["plan-2026-12-07-0700.pdf"]]


def test_a_plan_that_cannot_be_rendered_does_not_hold_the_report_back(configure, smtp, caplog):
    loaded = configure(attach_plan="monthly")
    with Store(loaded.database_path) as store:
        sent = dl.send_now(loaded, store, utcnow())  # the real drcheck.plan (a stub until it lands) or the plan
    assert sent.status == "sent" and len(smtp.received()) == 1


def test_report_send_without_email_configuration_is_one_line(loaded):
    data = tomllib.loads(loaded.path.read_text())
    del data["reports"]["email"]
    loaded.path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "send"])
    assert result.exit_code == 1
    assert result.output.strip().endswith("[reports.email] is not configured (host, from, to); see `drcheck "
                                          "config schema`") and len(result.output.strip().splitlines()) == 1


def test_the_demo_step_starts_the_lab_server_where_the_config_points_and_delivers(make_config, tmp_path):
    from drcheck.lab_imap import free_port
    from drcheck.lab_smtp import demo_delivery

    make_config()
    path = tmp_path / "drcheck.toml"
    data = tomllib.loads(path.read_text())
    port = free_port()
    data["reports"]["email"] = {**tomllib.loads((REPO / "drcheck.toml").read_text())["reports"]["email"],
                                "port": port, "password": {"file": str(tmp_path / "lab/smtp/password")},
                                "ca_bundle": str(tmp_path / "lab/smtp/ca.pem")}
    path.write_text(tomli_w.dumps(data))
    loaded = load(path)
    with Store(loaded.database_path) as store:
        sent, received = demo_delivery(loaded, store, utcnow())
    assert sent.status == "sent", sent.reason
    message = SmtpLab.parse(received)
    assert message["To"] == "it-director@district.example, auditor@district.example"
    assert received.parent == tmp_path / "lab/smtp/maildir"


def test_an_unreadable_password_file_is_a_recorded_one_line_error(loaded):
    result = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "send"])  # the lab is not built
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert "var/lab/smtp/password: cannot read (No such file or directory); queued, the agent retries" in line


def test_report_deliver_sends_what_an_earlier_process_queued_and_skips_while_another_delivers(configure, smtp):
    from drcheck import locks

    loaded = configure()
    with Store(loaded.database_path) as store:  # queued by an earlier process (e.g. the agent before a restart)
        queued = dl.queue_report(loaded, store, utcnow())
    with locks.exclusive(dl.delivery_lock(loaded), "test"):
        busy = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "deliver"])
    assert busy.exit_code == 75 and "skipped: e-mail delivery is already running" in busy.output
    done = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "deliver", "--json"])
    assert done.exit_code == 0, done.output
    [item] = json.loads(done.output)
    assert item["delivery"] == queued.id and item["status"] == "sent" and item["attempts"] == 1
    again = CliRunner().invoke(cli, ["--config", str(loaded.path), "report", "deliver"])
    assert again.exit_code == 0 and "nothing to deliver" in again.output
    assert len(smtp.received()) == 1
