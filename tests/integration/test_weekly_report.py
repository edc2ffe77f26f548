"""The weekly report rendered from a real store with the real templates, checked by parsing
the HTML: what appears, in which order, and how measured RTO/RPO compare with targets."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest

from drcheck.durations import format_duration
from drcheck.reporting import render_weekly
from drcheck.results import utcnow

# Wednesday 08:00 in Los Angeles, three days after the switch to daylight saving time, so
# the reported week starts in PST and ends in PDT.
NOW = datetime(2024, 3, 13, 15, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
D = timedelta(days=1)
PAYROLL_EVIDENCE = "output <script>alert('pwned')</script> does not match ^ok$"

# columns of table.tests and table.systems
T_STARTED, T_TEST, T_SYSTEM, T_RESULT, T_RTO, T_RPO, T_REASON = 0, 1, 2, 3, 7, 8, 9
S_NAME, S_TIER, S_OWNER, S_RTO_TARGET, S_RPO_TARGET, S_POINTS, S_LAST, S_RTO, S_RPO = range(9)


# -- a tiny DOM built with the standard library's html.parser ---------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list = field(default_factory=list)  # Node or str

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all_classes(self) -> set[str]:
        """Classes of this element and of every element inside it."""
        found = set(self.classes)
        for child in self.children:
            if isinstance(child, Node):
                found |= child.all_classes()
        return found

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return re.sub(r"\s+", " ", " ".join(parts)).strip()

    def find_all(self, tag: str, cls: str | None = None, **attrs) -> list["Node"]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and (cls is None or cls in child.classes) and all(
                    child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items()
                ):
                    found.append(child)
                found.extend(child.find_all(tag, cls, **attrs))
        return found

    def find(self, tag: str, cls: str | None = None, **attrs) -> "Node":
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}> in the report"
        return found[0]


class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.start_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.start_tags.append(tag)
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.start_tags.append(tag)
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


@dataclass
class Report:
    path: Path
    html: str
    doc: Node
    start_tags: list[str]

    def test_rows(self) -> list[Node]:
        return [tr for tr in self.doc.find("table", "tests").find_all("tr") if "data-test-id" in tr.attrs]

    def test_row(self, test_id: int) -> list[Node]:
        return self.doc.find("table", "tests").find("tr", data_test_id=str(test_id)).find_all("td")

    def system_rows(self) -> list[Node]:
        return [tr for tr in self.doc.find("table", "systems").find_all("tr") if "data-system" in tr.attrs]

    def system_row(self, system: str) -> list[Node]:
        return self.doc.find("table", "systems").find("tr", data_system=system).find_all("td")

    def cards(self) -> dict[str, str]:
        """Summary cards as {label: number}."""
        cards = {}
        for card in self.doc.find("section", id="summary").find_all("div", "card"):
            number = card.find("div", "n").text()
            cards[card.text().removeprefix(number).strip()] = number
        return cards


def parse(path: Path) -> Report:
    html = path.read_text(encoding="utf-8")
    parser = ReportParser()
    parser.feed(html)
    parser.close()
    return Report(path, html, parser.root, parser.start_tags)


def verdict(cell: Node) -> str | None:
    """'over', 'within' or None (nothing measured) for a measured RTO/RPO cell."""
    marks = cell.all_classes() & {"over", "within"}
    assert len(marks) <= 1, f"cell {cell.text()!r} is both over and within"
    return marks.pop() if marks else None


def expected_verdict(measured: timedelta | None, target: timedelta) -> str | None:
    if measured is None:
        return None
    return "over" if measured > target else "within"


# -- a realistic week ------------------------------------------------------------------


@dataclass
class Week:
    ids: dict[str, int]
    measured: dict[str, tuple[timedelta | None, timedelta | None]]  # key -> (rto, rpo)
    report: Report


@pytest.fixture
def week(loaded, store, record, tmp_path) -> Week:
    """Record a week with a pass, two failures, an error and a run from 9 days ago, plus
    probe runs where payroll's newest restore point is stale; render the report at NOW."""
    measured = {
        "old": (1 * H, 5 * H),
        "fileserver_failed": (9 * H, 20 * H),     # RTO over its 8h target
        "sis_error": (None, None),
        "payroll_failed": (None, 30 * H),         # a check failed, so no RTO; RPO over 24h
        "sis_passed": (4 * H, 6 * H),             # RTO exactly at its 4h target
        "fileserver_passed": (1.5 * H, 14 * H),
    }
    ids = {}
    # recorded in the order they finished, as the agent does
    ids["old"] = record.test("sis", "passed", NOW - 9 * D, rto=1 * H, rpo=5 * H)
    record.probe({"sis": NOW - 2 * D - 3 * H, "fileserver": NOW - 2 * D - 5 * H, "payroll": NOW - 50 * H},
                 at=NOW - 2 * D)
    ids["fileserver_failed"] = record.test(
        "fileserver", "failed", NOW - 6 * D - 23 * H, rto=9 * H, rpo=20 * H,
        reason="measured RTO 9h exceeds target 8h",
        checks=[("expected paths", "passed", "staff, shared present"),
                ("spot check", "passed", "20 of 20 files match size and mtime")])
    ids["sis_error"] = record.test(
        "sis", "error", NOW - 3 * D, took=timedelta(seconds=3), checks=[],
        reason="restic: Fatal: wrong password or no key found")
    ids["payroll_failed"] = record.test(
        "payroll", "failed", NOW - 6 * H, rpo=30 * H, took=40 * timedelta(minutes=1),
        reason=f"payroll.db integrity: {PAYROLL_EVIDENCE}; achieved RPO 1d 6h (restore_point) exceeds target 1d",
        checks=[("expected paths", "passed", "db/payroll.db present"),
                ("payroll.db integrity", "failed", PAYROLL_EVIDENCE)])
    record.probe({}, at=NOW - 12 * H, action="check")
    # at the daily 01:30 of sis-files, so neither test is overdue at NOW
    ids["sis_passed"] = record.test("sis", "passed", NOW - 6.5 * H, rto=4 * H, rpo=6 * H)
    ids["fileserver_passed"] = record.test("fileserver", "passed", NOW - 2 * H, rto=1.5 * H, rpo=14 * H)
    record.probe({"sis": NOW - 3 * H, "fileserver": NOW - 16 * H, "payroll": NOW - 50 * H},
                 at=NOW - 10 * timedelta(minutes=1))

    path = render_weekly(loaded, store, tmp_path / "out", NOW)
    return Week(ids, measured, parse(path))


def test_report_file_is_named_after_the_local_iso_week(week):
    assert week.report.path.name == "weekly-2024-03-13-0800.html"  # the period's end, local time
    assert week.report.html.lstrip().startswith("<!doctype html>")


def test_only_this_weeks_tests_appear(week):
    shown = {int(tr.attrs["data-test-id"]) for tr in week.report.test_rows()}
    assert shown == {i for key, i in week.ids.items() if key != "old"}
    assert str(week.ids["old"]) not in {tr.attrs["data-test-id"] for tr in week.report.test_rows()}


def test_failures_and_errors_come_before_passes(week):
    rows = week.report.test_rows()
    statuses = [tr.attrs["data-status"] for tr in rows]
    assert statuses == ["error", "failed", "failed", "passed", "passed"]
    # within a status, newest first
    assert [int(tr.attrs["data-test-id"]) for tr in rows] == [
        week.ids[k] for k in ("sis_error", "payroll_failed", "fileserver_failed",
                              "fileserver_passed", "sis_passed")
    ]
    for tr in rows:
        result = tr.find_all("td")[T_RESULT]
        assert result.text().lower() == tr.attrs["data-status"]
        assert tr.attrs["data-status"] in result.find("span", "status").classes


def test_measured_rto_rpo_are_marked_over_exactly_when_above_the_target(week, loaded):
    for key, (rto, rpo) in week.measured.items():
        if key == "old":
            continue
        cells = week.report.test_row(week.ids[key])
        runbook = loaded.runbooks[cells[T_SYSTEM].text()]
        for cell, value, target in ((cells[T_RTO], rto, runbook.rto), (cells[T_RPO], rpo, runbook.rpo)):
            assert verdict(cell) == expected_verdict(value, target), (key, cell.text())
            if value is None:
                assert cell.text() == "—"
            else:
                assert cell.text().startswith(format_duration(value.total_seconds()))
    # the cases the fixture was built for, spelled out
    assert verdict(week.report.test_row(week.ids["fileserver_failed"])[T_RTO]) == "over"
    assert verdict(week.report.test_row(week.ids["payroll_failed"])[T_RPO]) == "over"
    assert verdict(week.report.test_row(week.ids["sis_passed"])[T_RTO]) == "within"  # equal to target


def test_each_system_appears_with_tier_targets_and_latest_measurements(week):
    rows = week.report.system_rows()
    assert [tr.attrs["data-system"] for tr in rows] == ["payroll", "sis", "fileserver"]  # problems first
    assert {tr.attrs["data-system"]: tr.attrs["data-ok"] for tr in rows} == {
        "payroll": "no", "sis": "yes", "fileserver": "yes"}

    expected = {  # system: (name, tier, owner, RTO target, RPO target)
        "sis": ("Student Information System", "1", "Network Administrator", "4h", "1d"),
        "payroll": ("Payroll", "1", "Business Services Director", "8h", "1d"),
        "fileserver": ("Staff file server", "2", "Computer Technician III", "8h", "1d"),
    }
    for system, (name, tier, owner, rto, rpo) in expected.items():
        cells = week.report.system_row(system)
        assert cells[S_NAME].text() == f"{name} {system}"
        assert (cells[S_TIER].text(), cells[S_OWNER].text()) == (tier, owner)
        assert (cells[S_RTO_TARGET].text(), cells[S_RPO_TARGET].text()) == (rto, rpo)

    payroll = week.report.system_row("payroll")
    assert payroll[S_POINTS].text() == "lab-restic: 2d 2h old" and verdict(payroll[S_POINTS]) == "over"
    # which copy it proved, and the test's row id an auditor can cite
    assert payroll[S_LAST].text() == f"failed Wed 03-13 02:00 payroll-files · from lab-restic · #{week.ids['payroll_failed']}"
    assert (payroll[S_RTO].text(), verdict(payroll[S_RTO])) == ("—", None)
    assert (payroll[S_RPO].text(), verdict(payroll[S_RPO])) == ("1d 6h", "over")

    sis = week.report.system_row("sis")
    assert sis[S_POINTS].text() == "lab-restic: 3h old" and verdict(sis[S_POINTS]) == "within"
    # the error earlier in the week was superseded
    assert sis[S_LAST].text() == f"passed Wed 03-13 01:30 sis-files · from lab-restic · #{week.ids['sis_passed']}"
    assert (sis[S_RTO].text(), verdict(sis[S_RTO])) == ("4h", "within")
    assert (sis[S_RPO].text(), verdict(sis[S_RPO])) == ("6h", "within")


def test_needs_attention_lists_payrolls_problems_only(week):
    attention = week.report.doc.find("div", "attention")
    text = attention.text()
    assert "Payroll (payroll, tier 1, owner Business Services Director)" in text
    problems = [li.text() for li in attention.find("ul", "problems").find_all("li")]
    assert "newest restore point in lab-restic is 2d 2h old (RPO 1d) R2.backup_age" in problems
    assert any(p.startswith("restore test payroll-files failed: payroll.db integrity:") for p in problems)
    assert "Student Information System" not in text and "Staff file server" not in text
    assert not week.report.doc.find_all("p", "allgood")


def test_summary_counts_match_the_store(week):
    assert week.report.cards() == {
        "systems verified OK": "2 / 3",
        "restore tests this week": "5",
        "passed": "2",
        "failed": "2",
        "could not run": "1",
    }


def test_text_from_the_store_is_html_escaped(week):
    assert "<script>" not in week.report.html
    assert "&lt;script&gt;" in week.report.html
    assert "script" not in week.report.start_tags
    reason = week.report.test_row(week.ids["payroll_failed"])[T_REASON]
    assert "<script>alert('pwned')</script>" in reason.find("strong").text()
    checks = [li.text() for li in reason.find("ul", "checks").find_all("li")]
    assert "1200 files, 734.0 MB" in reason.text()
    assert checks == ["passed expected paths: db/payroll.db present",
                      f"failed payroll.db integrity: {PAYROLL_EVIDENCE}"]


def test_a_run_that_could_not_restore_shows_only_its_reason(week):
    cells = week.report.test_row(week.ids["sis_error"])
    assert cells[T_REASON].text() == "restic: Fatal: wrong password or no key found"  # no "0 files"
    assert all(cells[i].text() == "—" for i in (4, 5, 6, T_RTO, T_RPO))


def test_times_are_shown_in_the_configured_time_zone(week):
    sub = week.report.doc.find("p", "sub").text()
    assert "Wed 2024-03-06 07:00 PST to Wed 2024-03-13 08:00 PDT" in sub
    assert "times in America/Los_Angeles" in sub
    started = {key: week.report.test_row(i)[T_STARTED].text() for key, i in week.ids.items() if key != "old"}
    assert started == {
        "fileserver_failed": "Wed 03-06 08:00",   # 16:00 UTC, PST (UTC-8)
        "sis_error": "Sun 03-10 08:00",           # 15:00 UTC, PDT (UTC-7) since that morning
        "payroll_failed": "Wed 03-13 02:00",
        "sis_passed": "Wed 03-13 01:30",
        "fileserver_passed": "Wed 03-13 06:00",
    }
    assert "Generated Wed 2024-03-13 08:00 PDT" in week.report.doc.find("footer").text()


def test_backup_sources_show_the_latest_run_of_each_probe_action(week):
    rows = [[td.text() for td in tr.find_all("td")] for tr in week.report.doc.find("table", "probes").find_all("tr")
            if tr.find_all("td")]
    assert [(r[0], r[1], r[2]) for r in rows] == [("lab-restic", "check", "ok"), ("lab-restic", "snapshots", "ok")]
    assert rows[1][3] == "Wed 2024-03-13 07:50 PDT"


def test_an_empty_store_says_nothing_was_tested(loaded, store, tmp_path):
    report = parse(render_weekly(loaded, store, tmp_path / "out", NOW))
    assert not report.doc.find_all("table", "tests")
    assert "No restore test ran this week" in report.doc.text()
    assert [tr.attrs["data-ok"] for tr in report.system_rows()] == ["no", "no", "no"]
    assert report.cards()["systems verified OK"] == "0 / 3"


def test_templates_dir_overrides_a_template(make_config, store, record, tmp_path):
    test_id = record.test("sis", "failed", NOW - 1 * H, reason="spot check: 3 files differ")
    templates = tmp_path / "my-templates"
    templates.mkdir()
    # the operator overrides weekly.html.j2 only; macros.html.j2 still comes from drcheck
    (templates / "weekly.html.j2").write_text(
        '{% from "macros.html.j2" import status %}'
        '<html><body><h1 id="custom">{{ agent }}: district weekly</h1>'
        '{% for item in runs %}<p class="run" data-test-id="{{ item.run.id }}">{{ status(item.run.status) }}</p>'
        '{% endfor %}</body></html>'
    )
    loaded = make_config(templates_dir=templates)
    assert loaded.config.reports.templates_dir == templates

    report = parse(render_weekly(loaded, store, tmp_path / "out", NOW))
    assert report.doc.find("h1", id="custom").text() == "demo-lab: district weekly"
    run = report.doc.find("p", "run")
    assert run.attrs["data-test-id"] == str(test_id)
    assert "failed" in run.find("span", "status").classes
    assert not report.doc.find_all("table", "systems")  # the shipped template was not used


def test_cli_report_weekly_writes_the_report(loaded, record, tmp_path):
    test_id = record.test("payroll", "failed", utcnow() - 2 * H, rpo=30 * H,
                          reason="achieved RPO 1d 6h (restore_point) exceeds target 1d")
    record.probe({"payroll": utcnow() - 32 * H}, at=utcnow() - H)
    out = tmp_path / "cli-out"
    proc = subprocess.run(
        [sys.executable, "-m", "drcheck", "--config", str(loaded.path), "report", "weekly", "--output", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    files = list(out.glob("weekly-*.html"))
    assert len(files) == 1, proc.stdout
    assert "weekly report:" in proc.stdout
    report = parse(files[0])
    assert [tr.attrs["data-test-id"] for tr in report.test_rows()] == [str(test_id)]
    assert report.doc.find("table", "systems").find("tr", data_system="payroll").attrs["data-ok"] == "no"
    assert not loaded.config.reports.output_dir.exists()  # --output wins over reports.output_dir
