"""The DR plan's HTML from a real store: every NIST SP 800-34 section, figures traced to
stored rows, recovery in dependency order, autoescaping, files never overwritten."""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import pytest

from drcheck.rules import evaluate
from drcheck.plan import plan_context, render_html, render_plan
from drcheck.plan_facts import format_value, recovery_order
from drcheck.store import Store
from tests.plan_fixtures import NOW, district, fill_district

SECTIONS = ["Plan approval and document control", "Executive summary", "1. Introduction",
            "2. Concept of operations", "3. Activation and notification", "4. Recovery",
            "5. Reconstitution and validation", "6. Test and exercise history", "7. Copies and alternate storage",
            "8. Facility risks", "9. Contacts", "10. Compliance matrix", "11. Open corrective actions"]


@pytest.fixture
def planned(tmp_path):
    loaded = district(tmp_path)
    with Store(loaded.database_path, agent=loaded.config.agent.name) as store:
        fill_district(loaded, store)
        yield loaded, store


def h2s(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<h2[^>]*>(.*?)</h2>", html, re.S)]


def test_plan_has_every_section_in_order_and_summary_first(planned, tmp_path):
    loaded, store = planned
    files = render_plan(loaded, store, tmp_path / "out", NOW, pdf=False)
    assert files.pdf is None and files.html.name == "plan-2026-03-13-0800.html"  # agent's zone: Los Angeles
    html = files.html.read_text()
    assert h2s(html) == SECTIONS


def test_plan_shows_measured_evidence(planned):
    loaded, store = planned
    context = plan_context(loaded, store, NOW)
    html = render_html(loaded, context)
    sis_pass = store.query("SELECT id FROM restore_tests WHERE system = 'sis' AND status = 'passed'")[0]["id"]
    # the last measured restore (80% of the 2h run), with the test id an auditor can cite
    sis = next(s for s in context["systems"] if s["system"] == "sis")
    assert sis["last_restore"]["id"] == sis_pass and sis["last_restore"]["restore_seconds"] == 5760
    assert f"restore_tests#{sis_pass}" in html
    # the last successful test date and the document facts
    assert context["last_test_at"] == NOW - 2 * timedelta(hours=1)
    assert "Superintendent" in html and "2026-01-15" in html and "Annual review" in html
    # payroll's failed check in reconstitution, its stale copy in the copies table
    assert "database disk image is malformed" in html
    payroll = next(s for s in context["systems"] if s["system"] == "payroll")
    (local,) = [c for c in payroll["copies"] if c["copy"] == "lab-restic"]
    assert not local["within_rpo"] and local["age"] == 50 * 3600
    assert re.search(r'data-copy="lab-restic"><td>payroll</td><td>lab-restic</td><td>district-office</td>', html)
    assert "payroll-files" in html and "built-in method" not in html
    # its verdicts ride along: the stale point, and no encryption in transit or key off-site recorded
    assert [(r.rule, r.passed) for r in local["results"]] == [("R2.backup_age", False), ("R6.encryption", False)]
    # the wet-pipe site is a facility risk; the vendor contact is listed with its systems
    cnc = next(f for f in context["sites"] if f["name"] == "nutrition-center")
    assert any("wet-pipe" in r for r in cnc["risks"]) and any("15 km" in r for r in cnc["risks"])
    assert [(v["contact"].vendor, v["systems"]) for v in context["vendors"]] == [("PowerSchool", ["sis"])]
    # notification order follows [plan] contacts
    assert html.index("IT Director</td>") < html.index("Network Administrator</td><td>Leads recovery")


def test_compliance_matrix_lists_every_result_failing_first_with_evidence(planned):
    loaded, store = planned
    context = plan_context(loaded, store, NOW)
    results = context["matrix"]["results"]
    passed = [r.passed for r in results]
    assert passed == sorted(passed) and not passed[0] and passed[-1]
    assert all(r.declared for r in results if r.passed)  # one row each: failures and declared passes
    html = render_html(loaded, context)
    rows = re.findall(r'<tr data-rule="([^"]+)" data-passed="(yes|no)">', html)
    assert len(rows) == len(results)
    # every proven pass is listed too, compactly per rule, with its evidence
    everything = evaluate(loaded, store, NOW)
    proven = [r for r in everything if r.passed and not r.declared]
    assert sum(len(p["results"]) for p in context["matrix"]["proven"]) == len(proven)
    rto = next(r for r in proven if r.rule == "R9.rto" and r.evidence)
    listed = re.search(r'<p class="proven" data-rule="R9.rto">(.*?)</p>', html).group(1)
    assert f"{rto.evidence[0][0]}#{rto.evidence[0][1]}" in listed
    r9 = next(r for r in results if r.rule == "R9.rpo" and r.system == "payroll")
    assert not r9.passed and format_value(r9.measured, r9.rule) == "1d 6h"
    assert f"{r9.evidence[0][0]}#{r9.evidence[0][1]}" in html
    assert "NIST CP-4b-c" in html


def test_recovery_order_puts_dependencies_first_then_tier():
    books = {name: SimpleNamespace(tier=tier, depends_on=deps) for name, tier, deps in (
        ("web", 1, ["db", "dns"]), ("db", 2, ["dns"]), ("dns", 3, []), ("mail", 1, []),
        ("a", 2, ["b"]), ("b", 2, ["a"]))}
    order, cyclic = recovery_order(books)
    assert order == ["mail", "dns", "db", "web", "a", "b"]
    assert cyclic == {"a", "b"}


def test_demo_runbooks_recover_fileserver_before_sis(planned):
    loaded, store = planned
    systems = [s["system"] for s in plan_context(loaded, store, NOW)["systems"]]
    assert systems.index("fileserver") < systems.index("sis")


def test_markup_in_facts_is_escaped(planned):
    loaded, store = planned
    context = plan_context(loaded, store, NOW)
    context["plan"] = loaded.config.plan.model_copy(update={"scope": "<script>alert('x')</script> & more"})
    html = render_html(loaded, context)
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html


def test_a_plan_never_overwrites_an_earlier_one(planned, tmp_path):
    loaded, store = planned
    first = render_plan(loaded, store, tmp_path / "out", NOW, pdf=False)
    before = first.html.read_bytes()
    second = render_plan(loaded, store, tmp_path / "out", NOW, pdf=False)
    assert second.html.name == "plan-2026-03-13-0800-2.html" and first.html.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([first.html.name, second.html.name])
