"""The weekly report's sections for readers and auditors, each with stored data and
without: copies (off-site row), runbook facts, failed tests' phases, references (test ids,
full point ids), every probe run of the week, canary and check coverage, changes since
last week, and the measured-RTO chart. Real store, real configuration, real templates;
the HTML is parsed, the SVG with xml.etree."""

from __future__ import annotations

import hashlib
import re
import tomllib
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone

import pytest
import tomli_w

from drcheck.config_loader import load
from drcheck.protection import backed_up
from drcheck.reporting import render_weekly, weekly_context
from drcheck.results import (CheckResult, Finding, InventoryAsset, ProbeResult, RestorePoint, RestoreTestResult,
                             Severity, Status)
from drcheck.store import Store
from tests.integration.conftest import Recorder
from tests.integration.test_weekly_report import NOW, parse

H = timedelta(hours=1)
D = timedelta(days=1)
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<img src=x onerror=alert(1)> & \"Payroll\" 'x'"


def report(loaded, store, tmp_path, now=NOW):
    return parse(render_weekly(loaded, store, tmp_path / "out", now))


def rows(doc, cls):
    return [tr for tr in doc.find("table", cls).find_all("tr") if tr.find_all("td")]


def record_test(loaded, store, system, status, started, *, rto=None, rpo=4 * H, details=None, checks=None,
                reason=""):
    """A restore test as the files kind records it, with `details` (its timeline)."""
    rb = loaded.runbooks[system]
    status = Status(status)
    point_time = started - rpo if rpo else None
    return store.record_restore_test(RestoreTestResult(
        test=f"{system}-files", kind="files", system=system, status=status, started_at=started,
        finished_at=started + (rto or 10 * timedelta(minutes=1)), reason=reason, probe="lab-restic",
        copy="lab-restic", point_id=hashlib.sha256(f"{system}{started}".encode()).hexdigest() if rpo else None,
        point_time=point_time, rto_seconds=rto.total_seconds() if rto else None,
        rpo_seconds=rpo.total_seconds() if rpo else None, rpo_source="canary" if rpo else None,
        rto_target_seconds=rb.rto.total_seconds(), rpo_target_seconds=rb.rpo.total_seconds(),
        details=details or {},
        checks=[CheckResult(n, Status(s), e, 1.0) for n, s, e in (
            [("expected paths", "passed", "ok")] if checks is None else checks)]))


# -- copies --------------------------------------------------------------------------------


def test_each_copy_shows_site_media_full_point_id_and_age_and_a_missing_offsite_copy_is_red(loaded, store, record,
                                                                                            tmp_path):
    record.probe({"sis": NOW - 3 * H, "payroll": NOW - 50 * H}, at=NOW - H)  # fileserver: no point
    doc = report(loaded, store, tmp_path).doc
    by = {(tr.attrs["data-system"], tr.attrs["data-copy"]): tr for tr in rows(doc, "copies")}
    sis = by[("sis", "lab-restic")].find_all("td")
    assert sis[2].text() == "district-office" and sis[3].text() == "disk"
    full = hashlib.sha256(f"sis{NOW - 3 * H}".encode()).hexdigest()
    assert sis[4].find("code", "point-id").text() == full  # the full id, not a prefix
    assert sis[5].text() == "3h" and "within" in sis[5].all_classes()
    assert by[("sis", "lab-restic")].attrs["data-ok"] == "yes"
    payroll = by[("payroll", "lab-restic")]
    assert payroll.attrs["data-ok"] == "no" and "over" in payroll.find_all("td")[5].all_classes()
    fileserver = by[("fileserver", "lab-restic")]
    assert fileserver.attrs["data-ok"] == "no" and "no restore point in lab-restic" in fileserver.text()
    # the only copy is on site: every system has a red "no off-site copy" row
    for system in ("sis", "payroll", "fileserver"):
        row = by[(system, "")]
        assert "offsite-missing" in row.classes and row.attrs["data-ok"] == "no"
        assert "no off-site copy" in row.text() and "over" in row.all_classes()
        assert "80 km" in row.text()


def test_a_copy_far_enough_away_counts_as_offsite_once_it_holds_a_point(tmp_path, make_config):
    loaded = make_config()
    data = tomllib.loads(loaded.path.read_text())
    data["copies"]["lab-restic"]["site"] = "barracuda-cloud"  # 1200 km away
    loaded.path.write_text(tomli_w.dumps(data))
    loaded = load(loaded.path)
    with Store(loaded.database_path) as store:
        empty = report(loaded, store, tmp_path).doc  # configured, but holding nothing yet
        missing = {tr.attrs["data-system"] for tr in rows(empty, "copies") if "offsite-missing" in tr.classes}
        assert missing == set(loaded.runbooks)
        Recorder(loaded, store).probe({"sis": NOW - 3 * H}, at=NOW - H)
        doc = report(loaded, store, tmp_path).doc
    missing = {tr.attrs["data-system"] for tr in rows(doc, "copies") if "offsite-missing" in tr.classes}
    assert missing == set(loaded.runbooks) - {"sis"}
    sis = doc.find("table", "copies").find("tr", data_system="sis", data_copy="lab-restic").find_all("td")
    assert sis[2].text() == "barracuda-cloud 1200 km"


def test_a_copy_too_near_is_named_as_the_farthest_in_the_no_offsite_row(tmp_path, make_config):
    loaded = make_config()
    data = tomllib.loads(loaded.path.read_text())
    data["copies"]["lab-restic"]["site"] = "nutrition-center"  # 15 km: shares regional disasters
    loaded.path.write_text(tomli_w.dumps(data))
    loaded = load(loaded.path)
    with Store(loaded.database_path) as store:
        Recorder(loaded, store).probe({"sis": NOW - 3 * H}, at=NOW - H)
        doc = report(loaded, store, tmp_path).doc
    row = doc.find("table", "copies").find("tr", "offsite-missing", data_system="sis")
    assert row.text().endswith("at a site 80 km or more away (farthest holding one: lab-restic, 15 km)")
    payroll = doc.find("table", "copies").find("tr", "offsite-missing", data_system="payroll")
    assert payroll.text().endswith("at a site 80 km or more away")  # holds nothing anywhere


def test_a_file_copy_whose_newest_point_misses_a_source_path_is_red(loaded, store, tmp_path):
    sis_paths = [str(p) for p in loaded.config.probes["lab-restic"].source_paths("sis")]
    points = [RestorePoint("sis", "lab-restic", NOW - 3 * H, "a" * 64, paths=tuple(sis_paths), count=3),
              RestorePoint("payroll", "lab-restic", NOW - 3 * H, "b" * 64, paths=("/tmp/elsewhere",), count=3)]
    store.record_probe(ProbeResult(probe="lab-restic", kind="restic", action="snapshots", status=Status.OK,
                                   started_at=NOW - H, finished_at=NOW - H, copy="lab-restic", newest=points))
    doc = report(loaded, store, tmp_path).doc
    table = doc.find("table", "copies")
    sis = table.find("tr", data_system="sis", data_copy="lab-restic")
    assert sis.attrs["data-ok"] == "yes" and sis.find("span", "paths").text() == f"holds {', '.join(sis_paths)}"
    payroll = table.find("tr", data_system="payroll", data_copy="lab-restic")
    payroll_paths = [str(p) for p in loaded.config.probes["lab-restic"].source_paths("payroll")]
    assert payroll.attrs["data-ok"] == "no"
    assert payroll.find("span", "paths").text() == f"does not hold {', '.join(payroll_paths)}"
    assert "over" in payroll.find("span", "paths").classes


# -- runbook facts -----------------------------------------------------------------------


def test_runbook_facts_are_listed_per_system(loaded, store, tmp_path):
    doc = report(loaded, store, tmp_path).doc
    cells = {tr.attrs["data-system"]: [td.text() for td in tr.find_all("td")] for tr in rows(doc, "runbooks")}
    assert cells["sis"] == ["Student Information System sis", "1", "Network Administrator",
                            loaded.runbooks["sis"].alternate or "—", "4h", "1d", "1d", "2h", "fileserver"]
    assert cells["fileserver"][7:] == ["—", "—"]  # no WRT, no dependency
    assert set(cells) == set(loaded.runbooks)


# -- failed tests' phases and references ---------------------------------------------------


def test_a_failed_test_shows_the_phases_it_got_through_and_its_ids(loaded, store, tmp_path):
    timeline = {"restore": [3.0, 63.0], "snapshots": [0.0, 1.5], "listing": [1.5, 3.0]}
    failed = record_test(loaded, store, "payroll", "failed", NOW - 5 * H, details={"timeline": timeline},
                         reason="payroll.db integrity: malformed")
    passed = record_test(loaded, store, "sis", "passed", NOW - 4 * H, rto=H, details={"timeline": timeline})
    doc = report(loaded, store, tmp_path).doc
    cells = doc.find("table", "tests").find("tr", data_test_id=str(failed)).find_all("td")
    phases = [li.text() for li in cells[9].find("div", "phases").find_all("li")]
    assert phases == ["snapshots 1.5s (0.00s–1.5s)", "listing 1.5s (1.5s–3.0s)", "restore 1m (3.0s–1m 3s)"]
    assert cells[1].find("span", "ref").text() == f"#{failed}"  # the row id an auditor cites
    full = hashlib.sha256(f"payroll{NOW - 5 * H}".encode()).hexdigest()
    assert cells[9].find("code", "point-id").text() == full  # the full restore point id
    assert cells[4].text().endswith(full[:8])  # the point cell keeps the short form
    ok = doc.find("table", "tests").find("tr", data_test_id=str(passed)).find_all("td")
    assert not ok[9].find_all("div", "phases") and ok[1].find("span", "ref").text() == f"#{passed}"


def test_a_vm_test_s_phases_come_from_its_details_phases(loaded, store, tmp_path):
    test_id = record_test(loaded, store, "sis", "error", NOW - H, rpo=None, reason="guest did not boot",
                          details={"phases": {"instant_recovery": [0.0, 40.0], "boot": [40.0, 640.0]}})
    doc = report(loaded, store, tmp_path).doc
    cells = doc.find("table", "tests").find("tr", data_test_id=str(test_id)).find_all("td")
    assert [li.attrs["data-phase"] for li in cells[9].find("div", "phases").find_all("li")] == ["instant_recovery", "boot"]
    assert not cells[9].find_all("code", "point-id")  # no restore point: none cited


# -- every probe run of the week ---------------------------------------------------------


def test_every_probe_run_of_the_week_is_counted_and_errors_are_listed_with_reasons(loaded, store, record, tmp_path):
    record.probe({"sis": NOW - 10 * D}, at=NOW - 9 * D, status="error", reason="last week's error")  # outside
    for hours in (150, 100, 50):
        record.probe({"sis": NOW - hours * H}, at=NOW - hours * H)
    first_lock = record.probe({}, at=NOW - 40 * H, status="error", reason="Fatal: unable to open <repo> & lock")
    record.probe({}, at=NOW - 30 * H, status="error", reason="Fatal: unable to open <repo> & lock")
    record.probe({}, at=NOW - 20 * H, status="error", reason="connection refused")
    record.probe({}, at=NOW - 10 * H, action="check")
    rep = report(loaded, store, tmp_path)
    table = rep.doc.find("table", "probe-week")
    counts = {(tr.attrs["data-probe"], tr.attrs["data-action"]): [td.text() for td in tr.find_all("td")]
              for tr in table.find_all("tr") if "data-probe" in tr.attrs and "probe-errors" not in tr.classes}
    assert counts[("lab-restic", "snapshots")][2:8] == ["6", "3", "0", "0", "3", "0"]
    # first and last run of the week, local time (NOW - 150h, NOW - 20h)
    assert counts[("lab-restic", "snapshots")][8:] == ["Thu 03-07 01:00", "Tue 03-12 12:00"]
    assert counts[("lab-restic", "check")][2:4] == ["1", "1"]
    items = table.find("tr", "probe-errors").find_all("li")
    errors = [li.text() for li in items]
    assert len(errors) == 2
    assert errors[0] == (f"2 × Fatal: unable to open <repo> & lock (Mon 03-11 16:00 to Tue 03-12 02:00; "
                         f"first run #{first_lock})")
    assert items[0].attrs["data-first-run"] == str(first_lock)
    assert errors[1].startswith("1 × connection refused")
    assert "last week's error" not in rep.doc.find("table", "probe-week").text()
    assert "<repo>" not in rep.html  # escaped


def test_no_probe_run_this_week_is_said(loaded, store, tmp_path):
    doc = report(loaded, store, tmp_path).doc
    assert not doc.find_all("table", "probe-week")
    assert "No probe ran this week" in doc.find("p", id="no-probe-runs").text()


# -- canary and check coverage -----------------------------------------------------------


def test_coverage_shows_canaries_planted_and_found_and_the_checks_that_ran(loaded, store, tmp_path):
    for i in range(3):
        store.record_canary("sis-files", "sis", "/srv/sis/.drcheck-canary", f"tok{i}", NOW - (i + 1) * 20 * H)
    store.record_canary("sis-files", "sis", "/srv/sis/.drcheck-canary", "old", NOW - 9 * D)  # outside
    canary_ok = [("expected paths", "passed", "ok"), ("canary", "passed", "canary written 1h before the test")]
    record_test(loaded, store, "sis", "passed", NOW - 30 * H, rto=H, checks=canary_ok)
    record_test(loaded, store, "sis", "failed", NOW - 5 * H, reason="canary stale",
                checks=[("expected paths", "passed", "ok"), ("canary", "failed", "canary written 3d ago")])
    record_test(loaded, store, "sis", "error", NOW - 2 * H, rpo=None, checks=[], reason="restic: locked")
    doc = report(loaded, store, tmp_path).doc
    sis = doc.find("table", "coverage").find("tr", data_test="sis-files")
    cells = sis.find_all("td")
    assert cells[2].text() == "3"
    assert cells[3].text() == "3 planted; found in 1 of 3 run(s) (1 without a canary check)"
    checks = {span.attrs["data-check"]: span.text() for span in cells[4].find_all("span", "check")}
    assert checks == {"canary": "canary 1/2", "expected paths": "expected paths 2/2"}
    assert "over" in cells[4].find("span", "check", data_check="canary").all_classes()
    payroll = doc.find("table", "coverage").find("tr", data_test="payroll-files").find_all("td")
    assert payroll[2].text() == "0" and "over" in payroll[2].all_classes()  # not run this week
    assert payroll[3].text() == "0 planted; found in 0 of 0 run(s)" and payroll[4].text() == "none"


# -- changes since last week ---------------------------------------------------------------


def changes(doc, kind):
    return [li for li in doc.find("ul", "changes").find_all("li") if li.attrs.get("data-change") == kind]


def test_new_failures_and_recoveries_are_measured_against_each_test_s_run_before_the_week(loaded, store, record,
                                                                                        tmp_path):
    record_test(loaded, store, "sis", "passed", NOW - 9 * D, rto=H)
    new_failure = record_test(loaded, store, "sis", "failed", NOW - 2 * D, reason="spot check: 3 files differ")
    record_test(loaded, store, "payroll", "failed", NOW - 8 * D, reason="integrity")
    record_test(loaded, store, "payroll", "failed", NOW - 3 * D, reason="integrity")
    recovered = record_test(loaded, store, "payroll", "passed", NOW - D, rto=H)
    first_ever = record_test(loaded, store, "fileserver", "error", NOW - H, rpo=None, reason="no such repo")
    doc = report(loaded, store, tmp_path).doc
    failures = changes(doc, "new-failure")
    assert [li.attrs["data-test-id"] for li in failures] == [str(first_ever), str(new_failure)]
    assert "before: never ran" in failures[0].text()
    assert "spot check: 3 files differ" in failures[1].text() and "before: passed" in failures[1].text()
    [back] = changes(doc, "recovered")
    assert back.attrs["data-test-id"] == str(recovered) and "before: failed" in back.text()


def test_a_test_failing_before_and_still_failing_is_no_change(loaded, store, tmp_path):
    record_test(loaded, store, "sis", "failed", NOW - 8 * D, reason="x")
    record_test(loaded, store, "sis", "failed", NOW - D, reason="x")
    doc = report(loaded, store, tmp_path).doc
    assert doc.find("p", id="no-changes")


def test_a_copy_going_over_its_rpo_this_week_and_findings_opened_and_cleared(loaded, store, record, tmp_path):
    record.probe({"sis": NOW - 30 * H, "payroll": NOW - 20 * D}, at=NOW - H)  # sis crossed 1d RPO 6h ago
    run = dict(probe="lab-restic", kind="restic", action="check", copy="lab-restic")
    store.record_probe(ProbeResult(**run, status=Status.FAILED, started_at=NOW - 9 * D, finished_at=NOW - 9 * D,
                                   findings=[Finding(Severity.CRITICAL, "old_damage", "pack damaged", "sis")]))
    store.record_probe(ProbeResult(**run, status=Status.FAILED, started_at=NOW - 2 * D, finished_at=NOW - 2 * D,
                                   findings=[Finding(Severity.CRITICAL, "pack_damage", f"pack {HOSTILE}", "sis")]))
    doc = report(loaded, store, tmp_path).doc
    [stale] = changes(doc, "stale-copy")
    assert stale.attrs["data-system"] == "sis" and "lab-restic" in stale.text()
    [opened] = changes(doc, "finding-opened")
    assert "pack_damage" in opened.text() and HOSTILE in opened.text()
    [cleared] = changes(doc, "finding-cleared")
    assert "old_damage" in cleared.text()


VM_CONFIG = """
[agent]
state_dir = "state"
sandbox_root = "sandbox"
[sites.office]
[copies.local]
site = "office"
[probes.vcenter]
kind = "vmware"
url = "https://127.0.0.1:1/sdk"
username = "ro"
password = {{ env = "VC_PASS" }}
default_rpo = "24h"
[[probes.vcenter.exclusions]]
name = "old-kiosk"
reason = "to be decommissioned"
owner = "IT Director"
expires = "{past}"
[probes.restic]
kind = "restic"
copy = "local"
repository = "repo"
password = {{ env = "RESTIC_PASS" }}
[[probes.restic.systems]]
system = "sis"
hosts = ["sis01"]
"""

SIS = """
name = "SIS"
tier = 1
owner = "Network Administrator"
rto = "4h"
rpo = "24h"
mtd = "24h"
"""


def vm(uuid: str, name: str) -> InventoryAsset:
    folder = "/District/vm/Schools"
    return InventoryAsset(source="vcenter", asset_id=uuid, name=name, protected=False, kind="vm",
                          attributes={"folder": folder, "path": f"{folder}/{name}"})


def test_newly_unprotected_vms_are_those_that_became_so_this_week(tmp_path, monkeypatch):
    monkeypatch.setenv("VC_PASS", "x")
    monkeypatch.setenv("RESTIC_PASS", "x")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "sis.toml").write_text(SIS)
    (tmp_path / "drcheck.toml").write_text(VM_CONFIG.format(past=date.today() - timedelta(days=2)))
    loaded = load(tmp_path / "drcheck.toml")

    def inventory(store, vms, at):
        store.record_probe(ProbeResult(probe="vcenter", kind="vmware", action="inventory", status=Status.OK,
                                       started_at=at, finished_at=at, assets=vms))

    old = [vm("u-old", "old-nobackup"), vm("u-long", "long-stale"), vm("u-stale", "stale01"),
           vm("u-kiosk", "old-kiosk"), vm("u-fine", "fine01")]
    with Store(loaded.database_path) as store:
        inventory(store, old, now - 10 * D)
        inventory(store, old + [vm("u-new", "new01")], now - D)
        store.record_probe(ProbeResult(
            probe="restic", kind="restic", action="snapshots", status=Status.OK, started_at=now - H,
            finished_at=now - H, copy="local", assets=backed_up("restic", "local", [
                ("long-stale", now - 20 * D, "p1", None), ("stale01", now - 2 * D, "p2", None),
                ("fine01", now - 2 * H, "p3", None)])))
        ctx = weekly_context(loaded, store, now)
        doc = report(loaded, store, tmp_path, now).doc
    new = {v["name"]: v["why"] for v in ctx["changes"].new_unprotected_vms}
    assert set(new) == {"new01", "stale01", "old-kiosk"}  # not old-nobackup nor long-stale: unprotected before
    assert "new in the inventory" in new["new01"]
    assert "went over its RPO" in new["stale01"]
    assert "exclusion expired" in new["old-kiosk"]
    shown = {li.attrs["data-vm"] for li in changes(doc, "new-unprotected-vm")}
    assert shown == {"u-new", "u-stale", "u-kiosk"}
    # the unprotected VMs table names the copy of each stale point (a dict key, not dict.copy)
    stale = doc.find("table", "vms").find("tr", data_vm="u-stale").find_all("td")
    assert stale[4].text() == "local: 2d old"


def test_an_empty_store_reports_no_change(loaded, store, tmp_path):
    doc = report(loaded, store, tmp_path).doc
    assert "Nothing changed" in doc.find("p", id="no-changes").text()
    assert not doc.find_all("ul", "changes")


# -- the measured-RTO chart ----------------------------------------------------------------


def svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]


def test_the_rto_chart_plots_each_week_s_worst_measured_rto_against_the_target(loaded, store, tmp_path):
    # sis (target 4h): two runs in the last week (worst 5h, over), one 3 weeks ago (2h);
    # one 9 weeks ago is outside the chart; fileserver (8h): one run
    record_test(loaded, store, "sis", "passed", NOW - 9 * 7 * D, rto=1 * H)
    record_test(loaded, store, "sis", "passed", NOW - 20 * D, rto=2 * H)
    record_test(loaded, store, "sis", "passed", NOW - 2 * D, rto=3 * H)
    record_test(loaded, store, "sis", "passed", NOW - D, rto=5 * H)
    record_test(loaded, store, "fileserver", "passed", NOW - D, rto=H)
    rep = report(loaded, store, tmp_path)
    charts = rep.doc.find("div", "charts").find_all("div", "chart")
    assert [c.attrs["data-system"] for c in charts] == ["sis", "fileserver"]  # the breach first
    assert charts[0].attrs["data-over"] == "yes" and charts[1].attrs["data-over"] == "no"
    assert "Payroll" in rep.doc.find("p", id="unmeasured").text()
    # the same figures as text, for a mail client that drops inline SVG
    assert charts[0].find("div", "chart-note").text() == "newest week 5h, worst 5h, target 4h: over in 1 of 2 week(s)"
    assert charts[1].find("div", "chart-note").text() == "newest week 1h, worst 1h, target 8h"
    sis, fileserver = svgs(rep.html)
    assert sis.get("width") == "260" and sis.get("height") == "120"
    dots = sis.findall(f"{SVG}circle")
    assert [float(d.get("data-seconds")) for d in dots] == [2 * 3600, 5 * 3600]
    # the frame: 8 weeks from NOW - 56d to NOW across x 46..250; 0..(5h * 1.15) across y 102..20
    start, span = NOW - 56 * D, 56 * 86400
    top = 5 * 3600 * 1.15

    def x(when):
        return 46 + (when - start).total_seconds() / span * 204

    def y(seconds):
        return 102 - seconds / top * 82

    week_of = {2 * 3600: NOW - 20 * D, 5 * 3600: NOW - D}
    for dot in dots:
        seconds = float(dot.get("data-seconds"))
        week = int((week_of[seconds] - start) / timedelta(weeks=1))
        assert float(dot.get("cx")) == pytest.approx(x(start + timedelta(weeks=week + 0.5)), abs=0.01)
        assert float(dot.get("cy")) == pytest.approx(y(seconds), abs=0.01)
        assert dot.get("fill") == ("#b42318" if seconds > 4 * 3600 else "#1b7f3b")
    target = sis.find(f"{SVG}line[@class='target']")
    assert float(target.get("y1")) == float(target.get("y2")) == pytest.approx(y(4 * 3600), abs=0.01)
    assert any(t.text == "target 4h" for t in sis.iter(f"{SVG}text"))
    assert len(fileserver.findall(f"{SVG}circle")) == 1


def test_without_measured_rto_there_is_no_chart(loaded, store, tmp_path):
    rep = report(loaded, store, tmp_path)
    assert not rep.doc.find_all("div", "charts") and not svgs(rep.html)
    assert rep.doc.find("p", id="no-rto")


# -- hostile names ---------------------------------------------------------------------------


def test_hostile_names_are_escaped_in_html_and_svg(tmp_path, make_config):
    loaded = make_config()
    runbook = loaded.path.parent / "runbooks" / "payroll.toml"
    runbook.write_text(runbook.read_text().replace('name = "Payroll"', f"name = {tomli_w.dumps({'n': HOSTILE})[4:]}"))
    loaded = load(loaded.path)
    assert loaded.runbooks["payroll"].name == HOSTILE
    with Store(loaded.database_path) as store:
        record_test(loaded, store, "payroll", "passed", NOW - D, rto=H)
        rep = report(loaded, store, tmp_path)
    assert "img" not in rep.start_tags
    [chart] = svgs(rep.html)  # still well-formed XML
    assert chart.find(f"{SVG}title").text == HOSTILE
    assert HOSTILE in rep.doc.find("table", "runbooks").find("tr", data_system="payroll").text()
