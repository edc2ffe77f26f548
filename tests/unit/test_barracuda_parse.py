"""The Barracuda parser on the project's sample messages (tests/peers/barracuda): every
kind of report and alert, what it cannot read, and rules for another firmware's wording."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from drcheck.probes.barracuda_mail import message_text, parse_date_header, parse_size, strip_html
from drcheck.probes.barracuda_parse import Parser
from drcheck.probes.barracuda_rules import ParsingRules
from tests.peers.barracuda import generator as g

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
NIGHT = datetime(2026, 11, 23, 4, 0, 5, tzinfo=timezone.utc)  # 22:00:05 Central on the 22nd
APPLIANCE = "bbs-district"


@pytest.fixture
def parser() -> Parser:
    return Parser(ParsingRules())


def nightly_report(**kwargs) -> bytes:
    runs = [g.SourceRun("sis-db01", NIGHT),
            g.SourceRun("finance-app01", NIGHT + timedelta(minutes=40), status=g.FAILED,
                        error="Could not connect to the VMware host"),
            g.SourceRun("files01", NIGHT + timedelta(minutes=80), computer="files01.district.local",
                        type="Barracuda Backup Agent", status=g.WARNINGS, offsite="Queued (2.1 GB)", size_gb=120)]
    return g.report(APPLIANCE, "Nightly VMs", runs, **kwargs)


def test_a_report_gives_each_data_source_run_in_utc(parser):
    parsed = parser.parse(7, nightly_report())
    assert (parsed.kind, parsed.uid, parsed.appliance, parsed.offsite_ok) == ("report", 7, APPLIANCE, True)
    assert parsed.subject == "Barracuda Backup Report: bbs-district - Nightly VMs - Failed"
    sis, finance, files = parsed.runs
    assert (sis.name, sis.computer, sis.type, sis.outcome, sis.status) == (
        "sis-db01", "vcenter.district.local", "VMware vSphere", "ok", "Completed")
    assert sis.start == NIGHT and sis.start.tzinfo is timezone.utc  # 22:00:05 at the Date header's -06:00
    assert sis.key == "bbs-district/vcenter.district.local/sis-db01"
    assert sis.size_bytes() == 40 * 1024 ** 3 and sis.offsite_ok is True
    assert (finance.outcome, finance.error, finance.end) == ("failed", "Could not connect to the VMware host", None)
    assert (files.outcome, files.computer, files.type) == ("warning", "files01.district.local", "Barracuda Backup Agent")
    assert files.offsite_ok is False  # its own line overrides the appliance's "up to date"


@pytest.mark.parametrize("variant", [{"html": True}, {"multipart": True}])
def test_html_and_multipart_reports_read_like_plain_text(parser, variant):
    assert parser.parse(1, nightly_report(**variant)).runs == parser.parse(1, nightly_report()).runs


def test_a_report_without_an_offsite_line_says_nothing_about_replication(parser):
    parsed = parser.parse(1, g.report(APPLIANCE, "S", [g.SourceRun("a", NIGHT)], offsite=None))
    assert parsed.offsite_ok is None and parsed.runs[0].offsite_ok is None


@pytest.mark.parametrize("kind, code, resolution", [
    ("job_failed", "job_failed", False), ("offline", "appliance_offline", False),
    ("online", "appliance_offline", True), ("replication_behind", "replication_behind", False),
    ("cloud_unreachable", "replication_behind", False), ("disk_error", "disk_error", False),
    ("disk_resolved", "disk_error", True)])
def test_every_alert_kind_is_classified(parser, kind, code, resolution):
    source = "finance-app01" if kind == "job_failed" else None
    parsed = parser.parse(3, g.alert(APPLIANCE, kind, NOW, source=source, details="RAID volume 1 degraded"
                                     if kind.startswith("disk") else "details"))
    assert parsed.kind == "alert", parsed.reason
    alert = parsed.alert
    assert (alert.code, alert.resolution, alert.appliance, alert.time) == (code, resolution, APPLIANCE, NOW)
    if source:
        assert alert.source == "bbs-district/vcenter.district.local/finance-app01" and alert.source_name == source
    else:
        assert alert.source is None


@pytest.mark.parametrize("message, kind, reason", [
    (g.notice(APPLIANCE, NOW), "ignored", "notice"),
    (g.mangled_report(APPLIANCE, NOW), "unparsed", "the report lists no data source"),
    (g.foreign(NOW), "unparsed", "neither a backup report nor an alert"),
    (g.report(APPLIANCE, "S", [g.SourceRun("a", NIGHT, status="Exploded")]), "unparsed", "unknown status 'Exploded'"),
    (b"Subject: Barracuda Backup Alert: bbs - Coffee machine empty\r\n\r\nAlert: Coffee\r\n", "unparsed",
     "an alert of no known kind"),
    (b"Subject: Barracuda Backup Report\r\n\r\nData Source: a\r\nStatus: Completed\r\n", "unparsed",
     "names no appliance"),
    (b"\xff\xfe\x00garbage", "unparsed", "neither a backup report nor an alert"),
    (b"", "unparsed", "neither a backup report nor an alert"),
])
def test_what_cannot_be_read_is_said_never_raised(parser, message, kind, reason):
    parsed = parser.parse(9, message)
    assert (parsed.kind, parsed.reason) == (kind, reason)


def test_an_unreadable_time_makes_the_whole_report_unparsed(parser):
    raw = g.report(APPLIANCE, "S", [g.SourceRun("a", NIGHT), g.SourceRun("b", NIGHT)]).replace(
        b"Start Time: 2026-11-22 22:00:05", b"Start Time: yesterday-ish", 1)
    parsed = parser.parse(1, raw)
    assert parsed.kind == "unparsed" and parsed.runs == () and "unreadable time 'yesterday-ish'" in parsed.reason


GERMAN = """Subject: Barracuda Backup Bericht: bbs-muc - Nacht - Erfolgreich
Date: Mon, 23 Nov 2026 06:00:00 +0100
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Ger=C3=A4t: bbs-muc
Zeitplan: Nacht
Offsite-Replikation: Aktuell

Computer: vc.muc.local (VMware vSphere)
Datenquelle: erp-db
Status: Erfolgreich
Startzeit: 22.11.2026 22:00:05
Endzeit: 22.11.2026 22:30:00
Gr=C3=B6=C3=9Fe: 12,5 GB
""".replace("\n", "\r\n").encode()


def test_another_language_is_a_configuration_change():
    rules = ParsingRules(
        report_subject=r"backup bericht", subject_appliance=r"bericht:\s*(?P<appliance>\S+)",
        labels={"appliance": "Gerät", "schedule": "Zeitplan", "data_source": "Datenquelle",
                "start": "Startzeit", "end": "Endzeit", "size": "Größe", "offsite": "Offsite-Replikation"},
        status_ok=r"^erfolgreich", offsite_ok=r"aktuell")
    parsed = Parser(rules).parse(1, GERMAN)
    assert parsed.kind == "report", parsed.reason
    (run,) = parsed.runs
    assert (run.appliance, run.name, run.outcome, run.offsite_ok) == ("bbs-muc", "erp-db", "ok", True)
    assert run.start == datetime(2026, 11, 22, 21, 0, 5, tzinfo=timezone.utc)  # +01:00 from the Date header
    assert Parser(ParsingRules()).parse(1, GERMAN).kind == "unparsed"  # the English defaults do not read it


def test_a_configured_zone_overrides_the_date_header():
    parser = Parser(ParsingRules(), ZoneInfo("America/New_York"))
    (run,) = parser.parse(1, g.report(APPLIANCE, "S", [g.SourceRun("a", NIGHT)])).runs
    assert run.start == datetime(2026, 11, 23, 3, 0, 5, tzinfo=timezone.utc)  # 22:00:05 Eastern


def test_only_the_configured_sender_is_read():
    parser = Parser(ParsingRules(sender=r"@bbs-district\.district\.local>?$"))
    assert parser.parse(1, nightly_report()).kind == "report"
    other = parser.parse(2, g.report("bbs-other", "S", [g.SourceRun("a", NIGHT)]))
    assert (other.kind, other.reason) == ("ignored", "other sender")


def test_encoded_and_folded_subjects_are_decoded(parser):
    raw = (b"Subject: =?utf-8?q?Barracuda_Backup_Report=3A_bbs_-_N?=\r\n =?utf-8?q?ight_-_Completed?=\r\n"
           b"Date: Mon, 23 Nov 2026 10:00:00 -0600\r\n\r\nAppliance: bbs\r\nData Source: a\r\nStatus: Completed\r\n"
           b"Start Time: 2026-11-23 09:00:00\r\n")
    parsed = parser.parse(1, raw)
    assert parsed.subject == "Barracuda Backup Report: bbs - Night - Completed"
    assert parsed.runs[0].start == datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)


def test_a_block_without_a_computer_line_keeps_the_one_above(parser):
    raw = (b"Subject: Barracuda Backup Report: bbs - S - Completed\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
           b"Computer: files01 (Agent)\r\nData Source: C:\\\r\nStatus: Completed\r\nStart Time: 2026-11-23 01:00:00\r\n"
           b"Data Source: D:\\\r\nStatus: Completed\r\nStart Time: 2026-11-23 02:00:00\r\n")
    runs = parser.parse(1, raw).runs
    assert [(r.computer, r.name) for r in runs] == [("files01", "C:\\"), ("files01", "D:\\")]


def test_helpers():
    assert parse_size("41.2 GB") == int(41.2 * 1024 ** 3)
    assert parse_size("1,024 KiB") == 1024 * 1024 and parse_size("n/a") is None
    assert parse_date_header("Mon, 23 Nov 2026 10:00:00 -0600") == datetime(2026, 11, 23, 16, 0, tzinfo=timezone.utc)
    assert parse_date_header("23 Nov 2026 10:00 +0000") == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    assert parse_date_header("not a date") is None
    assert strip_html("<tr><td>Status</td><td>Completed &amp; verified</td></tr>").strip() == \
        "Status: Completed & verified"
    headers, text = message_text(b"Subject: x\r\nContent-Type: text/plain; charset=latin-1\r\n"
                                 b"Content-Transfer-Encoding: base64\r\n\r\nR3L2/g==\r\n")
    assert headers[b"subject"] == "x" and text == "Grö\xfe"


def test_rules_are_checked_when_the_configuration_is_read():
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        ParsingRules(status_ok="(unclosed")
    with pytest.raises(ValidationError, match="may not define named groups"):
        ParsingRules(labels={"status": "(?P<x>Status)"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ParsingRules(labels={"colour": "Farbe"})
