"""Status, the weekly report and the metrics show the same rule results, with rule ids:
one store fed to all three, compared."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from drcheck.metrics import registry_for
from drcheck.reporting import weekly_context, environment
from drcheck.rules import RULES, evaluate, failing
from drcheck.verdicts import operational
from drcheck.status import system_statuses

NOW = datetime.now(timezone.utc).replace(microsecond=0)
H = timedelta(hours=1)


def a_troubled_store(record):
    record.probe({"sis": NOW - 3 * H, "fileserver": NOW - 3 * H, "payroll": NOW - 80 * H}, at=NOW - H)
    record.probe({}, at=NOW - 2 * H, action="check", status="failed", reason="repository check failed: damaged")
    record.test("sis", "passed", NOW - 6 * H, rto=H, rpo=4 * H)
    record.test("payroll", "failed", NOW - 5 * H, rpo=80 * H, reason="achieved RPO exceeds target")
    record.test("fileserver", "passed", NOW - 30 * 24 * H, rto=H, rpo=4 * H)  # weekly: long overdue


def test_status_report_and_metrics_show_the_same_failing_rules(loaded, store, record):
    a_troubled_store(record)
    expected = {(r.rule, r.system) for r in failing(evaluate(loaded, store, NOW))}
    assert {"R2.backup_age", "R10.source_check", "R9.rpo", "R10.restore_test", "R8.test_cadence"} <= \
        {rule for rule, _ in expected}

    from_status = {(r.rule, s.system) for s in system_statuses(loaded, store, NOW) for r in s.failing}

    context = weekly_context(loaded, store, NOW)
    html = environment(loaded).get_template("weekly.html.j2").render(**context)
    from_report = set()
    for match in re.finditer(r'\((?P<system>[\w.-]+), tier \d.*?<ul class="problems">(?P<items>.*?)</ul>', html, re.S):
        for rule in re.findall(r'data-rule="([^"]+)"', match["items"]):
            from_report.add((rule, match["system"]))

    registry = registry_for(loaded)
    from_metrics = set()
    for family in registry.collect():
        if family.name == "drcheck_compliance_rule_passing":
            from_metrics = {(s.labels["rule"], s.labels["system"]) for s in family.samples if s.value == 0}

    operations = {(r.rule, r.system) for r in failing(operational(evaluate(loaded, store, NOW)))}
    # status and the weekly report judge recoverability; the metric exports every rule,
    # the compliance ones too (`drcheck compliance` and the plan show those)
    assert from_status == from_report == {(rule, system) for rule, system in operations if system}
    assert from_metrics == {(rule, system or "") for rule, system in expected}
    assert {RULES[rule].scope for rule, _ in expected - operations} == {"compliance"}


def test_rule_results_carry_ids_thresholds_evidence_and_controls(loaded, store, record):
    a_troubled_store(record)
    age = next(r for r in evaluate(loaded, store, NOW) if r.rule == "R2.backup_age" and r.system == "payroll")
    assert not age.passed and age.measured > age.threshold == loaded.runbooks["payroll"].rpo.total_seconds()
    (table, row_id), = age.evidence
    assert table == "restore_points" and store.query("SELECT system FROM restore_points WHERE id = ?",
                                                     [row_id])[0]["system"] == "payroll"
    assert "ISO 27001 A.8.13" in age.controls and age.to_json()["severity"] == "critical"
