"""Verdicts as rules: one evaluation over the store and the configuration.

Every problem that `drcheck status`, the weekly report and the metrics show comes from
`evaluate()`: a list of `RuleResult`s `{rule id, system, severity, passed, measured,
threshold, evidence row ids, message}`, each rule mapped to the controls it evidences.
Nothing else judges; the views only select and format. This is the seed of the compliance
engine (the DR plan's matrix reads the same results).

Rule ids are stable (alerts and auditors' evidence depend on them); they carry the number
of the requirement they serve in the DR-plan reference (R1 targets, R2 backup age, R8 test
cadence, R9 measured RTO/RPO, R10 verification errors) or P for drcheck's own ability to
watch (a probe that cannot read its source proves nothing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Callable, Iterator

from drcheck import compliance_rules
from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.kinds import probe_module
from drcheck.results import Severity
from drcheck.store import Store, parse_ts
from drcheck.verdicts import RULES, Rule, RuleResult  # noqa: F401 (re-exported)


RULES.update({r.id: r for r in (
    Rule("R1.targets", "recovery targets are consistent (RTO ≤ MTD, RTO + WRT ≤ MTD)", Severity.WARNING,
         ("NIST CP-2a.2", "SP 800-34 §3.2.1", "ISO 27001 A.5.30")),
    Rule("R2.backup_age", "newest restore point in each copy is within the RPO", Severity.CRITICAL,
         ("NIST CP-9a-c", "CIS 11.2", "ISO 27001 A.8.13")),
    Rule("R3.vm_protected", "every inventory VM has a restore point within its RPO or a documented exclusion",
         Severity.CRITICAL, ("NIST CP-9a", "CIS 11.2", "ISO 27001 A.8.13")),
    Rule("R3.runbook_vm", "every VM a runbook names is in the inventory", Severity.WARNING,
         ("NIST CP-2a", "NIST CM-8")),
    Rule("R8.test_configured", "the system has a restore test", Severity.CRITICAL,
         ("NIST CP-4", "NIST CP-9(1)", "CIS 11.5")),
    Rule("R8.test_cadence", "restore tests run on schedule", Severity.WARNING,
         ("NIST CP-4", "NIST CP-9(1)", "CIS 11.5")),
    Rule("R9.rto", "last measured RTO is within target", Severity.CRITICAL, ("NIST CP-4b-c", "NIST CP-10")),
    Rule("R9.rpo", "last achieved RPO is within target", Severity.CRITICAL, ("NIST CP-4b-c", "NIST CP-10")),
    Rule("R10.restore_test", "the latest restore test passed every check", Severity.CRITICAL,
         ("NIST CP-9(1)", "NIST CP-4(4)", "CIS 11.5")),
    Rule("R10.source_check", "integrity checks of the copies found no damage", Severity.CRITICAL,
         ("NIST CP-9(1)", "ISO 27001 A.8.13")),
    Rule("R10.source_findings", "probes found nothing critical about the system's backups", Severity.CRITICAL,
         ("NIST CP-9a-c", "ISO 27001 A.8.13")),
    Rule("P1.watched", "a probe watches the system's backups", Severity.CRITICAL, ("NIST CP-9a-c",)),
    Rule("P2.probe_up", "every probe of the system can read its source", Severity.CRITICAL, ("NIST CP-9a-c",)),
    # the compliance rules (drcheck.compliance_rules)
    Rule("R1.complete", "the runbook names an alternate owner, recovery and validation steps", Severity.WARNING,
         ("NIST CP-2a.2", "NIST CP-2a.3", "ISO 27001 A.5.30"), "compliance"),
    Rule("R4.copies", "enough copies on enough media (3-2-1: production + copies, two media)", Severity.CRITICAL,
         ("NIST CP-9", "NIST CP-6", "CIS 11.2", "ISO 27001 A.8.13"), "compliance"),
    Rule("R4.offsite", "one copy far away, outside the primary site's hazard zone", Severity.CRITICAL,
         ("NIST CP-6", "NIST CP-6(1)", "NIST CP-9(3)", "CIS 11.4", "ISO 27001 A.8.13"), "compliance"),
    Rule("R5.immutable", "one immutable (locked) or offline copy", Severity.CRITICAL,
         ("NIST CP-9d", "CIS 11.4", "ISO 27001 A.8.13"), "compliance"),
    Rule("R5.credentials", "one copy administered with credentials outside production's directory",
         Severity.WARNING, ("NIST CP-9d", "NIST AC-6", "CIS 11.4"), "compliance"),
    Rule("R6.encryption", "every copy is encrypted at rest and in transit, its key held off-site", Severity.WARNING,
         ("NIST CP-9(8)", "CIS 11.3", "ISO 27001 A.8.13"), "compliance"),
    Rule("R7.offsite_lag", "the off-site copy is within the RPO", Severity.CRITICAL,
         ("NIST CP-9(5)", "NIST CP-6(2)", "ISO 27001 A.8.13"), "compliance"),
    Rule("R8.test_window", "a restore test passed within the tier's window", Severity.CRITICAL,
         ("NIST CP-4", "NIST CP-9(1)", "CIS 11.5", "ISO 27001 A.5.30"), "compliance"),
    Rule("R11.exercise", "the plan was exercised within the policy's window, with an after-action report",
         Severity.WARNING, ("NIST CP-4", "ISO 22301 §8.5", "ISO 27001 A.5.30"), "compliance"),
    Rule("R12.plan_review", "the plan was approved or reviewed within the policy's window, changes recorded",
         Severity.WARNING, ("NIST CP-2d", "NIST CP-2e", "ISO 27001 A.5.30"), "compliance"),
    Rule("R12.contacts", "contacts and vendors were verified within the policy's window", Severity.WARNING,
         ("NIST CP-2a.6", "NIST CP-2d"), "compliance"),
    Rule("R13.training", "every DR role was trained within the policy's window", Severity.WARNING,
         ("NIST CP-3", "ISO 27001 A.5.30"), "compliance"),
    Rule("R14.recovery_order", "dependencies are known, acyclic and can be back first", Severity.WARNING,
         ("NIST CP-2a.2", "SP 800-34 §3.2.3", "NIST CP-10"), "compliance"),
    Rule("R15.facility", "a copy away from the primary site is not exposed to the same facility risk",
         Severity.CRITICAL, ("NIST CP-9(3)", "NIST CP-6(1)", "NIST PE-13", "ISO 27001 A.8.13"), "compliance"),
)})
# the unit each rule measures in (how every view prints measured and threshold)
for _id, _unit in {"R1.targets": "seconds", "R2.backup_age": "seconds", "R3.vm_protected": "seconds",
                   "R7.offsite_lag": "seconds", "R8.test_cadence": "seconds", "R8.test_window": "seconds",
                   "R9.rto": "seconds", "R9.rpo": "seconds", "R4.offsite": "km", "R5.immutable": "days",
                   "R11.exercise": "days", "R12.plan_review": "days", "R13.training": "days"}.items():
    RULES[_id] = dataclasses.replace(RULES[_id], unit=_unit)

@dataclass
class Facts:
    """What the rules read, fetched once from the store (every read is a current-state or
    newest-per-group query, never a scan of history)."""

    points: dict[str, list[dict]] = field(default_factory=dict)  # system -> current points rows
    runs: dict[tuple[str, str], dict] = field(default_factory=dict)  # (probe, action) -> latest run
    tests: dict[tuple[str, str], dict] = field(default_factory=dict)  # (system, test) -> latest run
    measured: dict[str, dict[tuple[str, str], dict]] = field(default_factory=dict)  # column -> latest measuring run
    passed: dict[tuple[str, str], datetime] = field(default_factory=dict)  # last passed start
    last_passed: dict[str, datetime] = field(default_factory=dict)  # system -> its newest passed start
    findings: dict[str, list[dict]] = field(default_factory=dict)  # system -> current findings
    assets: list[dict] = field(default_factory=list)  # current inventory and backup-object assets
    # the configuration's maps, built once rather than searched per system
    probes_of: dict[str, list[str]] = field(default_factory=dict)  # system -> probes covering it
    tests_of: dict[str, list[str]] = field(default_factory=dict)  # system -> its restore tests

    @classmethod
    def read(cls, loaded: LoadedConfig, store: Store) -> "Facts":
        cfg = loaded.config
        facts = cls()
        for name, probe in cfg.probes.items():
            for system in probe.systems_covered():
                facts.probes_of.setdefault(system, []).append(name)
        for name, test in cfg.restore_tests.items():
            facts.tests_of.setdefault(test.system, []).append(name)
        for row in store.current_restore_points():
            if row["probe"] in cfg.probes:
                facts.points.setdefault(row["system"], []).append(row)
        facts.runs = {(r["probe"], r["action"]): r for r in store.latest_probe_runs() if r["probe"] in cfg.probes}
        facts.tests = {(r["system"], r["test"]): r for r in store.latest_restore_tests()}
        facts.passed = {(r["system"], r["test"]): parse_ts(r["started_at"]) for r in store.last_successful_tests()}
        for (system, _), when in facts.passed.items():
            facts.last_passed[system] = max(when, facts.last_passed.get(system, when))
        facts.measured = {column: {(r["system"], r["test"]): r for r in store.latest_measuring(column)}
                          for column in ("rto_seconds", "rpo_seconds")}
        facts.assets = store.current_assets()
        for row in store.findings_of_latest_runs():
            if row["probe"] in cfg.probes and row["system"] and row["severity"] == Severity.CRITICAL.value:
                facts.findings.setdefault(row["system"], []).append(row)
        return facts


Check = Callable[[LoadedConfig, Facts, str, datetime], Iterator[RuleResult]]


def evaluate(loaded: LoadedConfig, store: Store, now: datetime, facts: Facts | None = None) -> list[RuleResult]:
    """Judge every rule for every runbook system, then the rules about the inventory as a
    whole (R3: one result per VM and per runbook-named VM); return passing and failing
    results, in that order."""
    facts = facts or Facts.read(loaded, store)
    results: list[RuleResult] = []
    for system in sorted(loaded.runbooks):
        for check in CHECKS:
            results.extend(check(loaded, facts, system, now))
    for inventory_check in INVENTORY_CHECKS:
        results.extend(inventory_check(loaded, facts, now))
    return results


def failing(results: list[RuleResult]) -> list[RuleResult]:
    return [r for r in results if not r.passed]


# -- the rules ---------------------------------------------------------------------------


def _targets(loaded: LoadedConfig, facts: Facts, system: str, now: datetime) -> Iterator[RuleResult]:
    rb = loaded.runbooks[system]
    total = rb.rto + (rb.wrt or timedelta(0))
    ok = rb.rto <= rb.mtd and total <= rb.mtd
    what = "RTO + WRT" if rb.wrt else "RTO"
    yield RuleResult("R1.targets", system, ok,
                     f"{what} {format_duration(total.total_seconds())} "
                     f"{'is within' if ok else 'exceeds'} the MTD {format_duration(rb.mtd.total_seconds())}",
                     measured=total.total_seconds(), threshold=rb.mtd.total_seconds())


def _watched(loaded: LoadedConfig, facts: Facts, system: str, now: datetime) -> Iterator[RuleResult]:
    probes = facts.probes_of.get(system, [])
    yield RuleResult("P1.watched", system, bool(probes),
                     f"watched by {', '.join(probes)}" if probes else "no probe watches its backups",
                     measured=len(probes), threshold=1)


def _probe_health(loaded: LoadedConfig, facts: Facts, system: str, now: datetime) -> Iterator[RuleResult]:
    cfg = loaded.config
    rpo = loaded.runbooks[system].rpo.total_seconds()
    points = {row["copy"]: row for row in facts.points.get(system, [])}
    for name in facts.probes_of.get(system, []):
        probe = cfg.probes[name]
        module = probe_module(probe.kind)
        for action in module.ACTIONS:
            run = facts.runs.get((name, action))
            evidence = (("probe_runs", run["id"]),) if run else ()
            if action in module.LISTS_POINTS:
                if run is None:
                    yield RuleResult("P2.probe_up", system, False, f"probe {name} has not run yet ({action})",
                                     subject=name, probe=name)
                    continue
                up = run["status"] != "error"
                yield RuleResult("P2.probe_up", system, up,
                                 f"probe {name} {'lists' if up else 'could not list'} restore points"
                                 + ("" if up else f": {run['reason']}"), evidence=evidence, subject=name, probe=name)
                for copy in probe.copies_of(system):
                    yield _backup_age(system, name, copy, points.get(copy), rpo, now, run)
            elif run is not None:
                good = run["status"] == "ok"
                yield RuleResult("R10.source_check", system, good,
                                 f"{action} of {name} {run['status']}" + (f": {run['reason']}" if run["reason"] else ""),
                                 evidence=evidence, subject=name, probe=name)
    for row in facts.findings.get(system, []):
        yield RuleResult("R10.source_findings", system, False, f"{row['code']}: {row['message']}",
                         measured=row["code"], evidence=(("findings", row["id"]),), subject=row["probe"])


def _backup_age(system: str, probe: str, copy: str, point: dict | None, rpo: float, now: datetime,
                run: dict) -> RuleResult:
    if point is None:  # measured stays None: see has_no_restore_point
        return RuleResult("R2.backup_age", system, False, f"no restore point in {copy}", threshold=rpo,
                          evidence=(("probe_runs", run["id"]),), subject=copy, probe=probe)
    age = (now - parse_ts(point["point_time"])).total_seconds()
    ok = age <= rpo
    return RuleResult("R2.backup_age", system, ok,
                      f"newest restore point in {copy} is {format_duration(age)} old (RPO {format_duration(rpo)})",
                      measured=age, threshold=rpo, evidence=(("restore_points", point["id"]),), subject=copy,
                      probe=probe)


def has_no_restore_point(result: RuleResult) -> bool:
    """True when `result` is an R2.backup_age failure because the probe's latest listing
    holds no restore point of the system at all (not merely an old one): the system is
    unprotected in that copy (drcheck_unprotected_assets counts these per probe)."""
    return result.rule == "R2.backup_age" and not result.passed and result.measured is None


def _tests(loaded: LoadedConfig, facts: Facts, system: str, now: datetime) -> Iterator[RuleResult]:
    rb = loaded.runbooks[system]
    names = facts.tests_of.get(system, [])
    yield RuleResult("R8.test_configured", system, bool(names),
                     f"restore tests: {', '.join(names)}" if names else "no restore test configured",
                     measured=len(names), threshold=1)
    for name in names:
        run = facts.tests.get((system, name))
        if run is None:
            yield RuleResult("R10.restore_test", system, False, f"restore test {name} has never run", subject=name)
            continue
        evidence = (("restore_tests", run["id"]),)
        good = run["status"] == "passed"
        yield RuleResult("R10.restore_test", system, good,
                         f"restore test {name} {run['status']}" + (f": {run['reason']}" if run["reason"] else ""),
                         measured=run["status"], evidence=evidence, subject=name)
        yield from _cadence(loaded, system, name, parse_ts(run["started_at"]), now, evidence)
        yield from _measured(rb, system, name, facts)


def _cadence(loaded: LoadedConfig, system: str, name: str, started: datetime, now: datetime,
             evidence) -> Iterator[RuleResult]:
    cfg = loaded.config
    test = cfg.restore_tests[name]
    schedule = test.schedule
    if schedule is None:
        return
    expected = _next_run(schedule.cron, schedule.interval, cfg.agent.timezone, started)
    # jitter may delay a start by up to its length
    allowance = (test.timeout or cfg.agent.job_timeout) + cfg.agent.misfire_grace + (schedule.jitter or timedelta(0))
    since = (now - started).total_seconds()
    late = expected is not None and now > expected + allowance
    yield RuleResult("R8.test_cadence", system, not late,
                     f"restore test {name} {'is overdue: last ran' if late else 'last ran'} "
                     f"{format_duration(since)} ago", measured=since, evidence=evidence, subject=name)


@lru_cache(maxsize=65_536)
def _next_run(cron: str | None, interval: timedelta | None, timezone: str, started: datetime) -> datetime | None:
    """When the run after one started at `started` is due: the schedule's next fire time
    without jitter. Cached: it changes only when the test runs again, and a scrape judges
    every test (one APScheduler computation per test and run, not per scrape)."""
    if interval is not None:  # the agent's interval trigger fires every `interval` from its start
        return started + interval
    from drcheck.config_types import Schedule

    # fire times are inclusive, so step past the start
    trigger = Schedule(cron=cron).trigger(timezone)
    return trigger.get_next_fire_time(None, started + timedelta(seconds=1))


def _measured(rb, system: str, name: str, facts: Facts) -> Iterator[RuleResult]:
    """The latest run that measured each figure (RTO only when every check passed, RPO
    also on a failed run), so a breach stays visible until a later run measures better."""
    for rule, column, target, what in (("R9.rto", "rto_seconds", rb.rto, "measured RTO"),
                                       ("R9.rpo", "rpo_seconds", rb.rpo, "achieved RPO")):
        row = facts.measured.get(column, {}).get((system, name))
        if row is None:
            continue
        value, evidence = row[column], (("restore_tests", row["id"]),)
        ok = value <= target.total_seconds()
        yield RuleResult(rule, system, ok,
                         f"{what} of {name} {format_duration(value)} {'within' if ok else 'exceeds'} "
                         f"target {format_duration(target.total_seconds())}",
                         measured=value, threshold=target.total_seconds(), evidence=evidence, subject=name)


CHECKS: tuple[Check, ...] = (_targets, _watched, _probe_health, _tests, *compliance_rules.SYSTEM_CHECKS)


# -- rules over the inventory as a whole ---------------------------------------------------


def _vm_protected(loaded: LoadedConfig, facts: Facts, now: datetime) -> Iterator[RuleResult]:
    from drcheck.protection import reconcile

    for vm in reconcile(loaded, facts.assets):
        yield vm_verdict(vm, now)


def vm_verdict(vm, now: datetime) -> RuleResult:
    """R3.vm_protected for one reconciled VM (`drcheck.protection.VmProtection`)."""
    age, best, state = vm.age_seconds(now), vm.newest(), vm.state(now)
    rpo = format_duration(vm.rpo_seconds)
    if state == "protected":
        message = f"VM {vm.path}: newest restore point in {best.copy} is {format_duration(age)} old (RPO {rpo})"
    elif state == "excluded":
        e = vm.exclusion
        message = f"VM {vm.path} is excluded until {e.expires} by {e.owner}: {e.reason}"
    else:
        expired = f"; its exclusion expired on {vm.exclusion.expires} ({vm.exclusion.owner})" if vm.exclusion else ""
        if best is None:
            message = f"VM {vm.path} is unprotected: no restore point in any copy{expired}"
        else:
            message = (f"VM {vm.path} is unprotected: newest restore point ({best.copy}) is "
                       f"{format_duration(age)} old, over its RPO {rpo}{expired}")
    evidence = (("assets", vm.row["id"]),) + tuple(("assets", c.asset_row) for c in vm.coverage)
    return RuleResult("R3.vm_protected", vm.systems[0] if vm.systems else None, state in ("protected", "excluded"),
                      message, measured=age, threshold=vm.rpo_seconds, evidence=evidence, subject=vm.path,
                      probe=vm.probe)


def _runbook_vms(loaded: LoadedConfig, facts: Facts, now: datetime) -> Iterator[RuleResult]:
    from drcheck.protection import missing_claims

    for system, selector, found in missing_claims(loaded, facts.assets):
        yield RuleResult("R3.runbook_vm", system, found,
                         f"runbook names VM {selector.describe()}, "
                         + ("found in the inventory" if found else "which no vCenter inventory has"),
                         subject=selector.describe())


InventoryCheck = Callable[[LoadedConfig, Facts, datetime], Iterator[RuleResult]]
INVENTORY_CHECKS: tuple[InventoryCheck, ...] = (_vm_protected, _runbook_vms, *compliance_rules.PLAN_CHECKS)


def unprotected_vms(results: list[RuleResult]) -> list[RuleResult]:
    """The failing R3.vm_protected results: VMs unprotected (no restore point within RPO,
    no unexpired exclusion)."""
    return [r for r in results if r.rule == "R3.vm_protected" and not r.passed]
