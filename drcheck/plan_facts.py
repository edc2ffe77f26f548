"""The facts the DR plan arranges, each read once for every system (one query per kind of
fact, never one per system): the recovery order, copies with their protection facts and
newest point age, last measured restores, test history, verification checks, facility
risks, vendor contacts, the compliance matrix and the executive summary. Pure reads."""

from __future__ import annotations

import heapq
import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, Iterable

from drcheck.verdicts import format_measure
from drcheck.config_loader import LoadedConfig
from drcheck.results import Severity
from drcheck.rules import RULES, Facts, RuleResult
from drcheck.store import Store, parse_ts, ts

# rules whose measured value and threshold are seconds (the rest print as they are)
SEVERITY_ORDER = {Severity.CRITICAL.value: 0, Severity.WARNING.value: 1}
WORST_PROBLEMS = 15
# rules about a probe's reachability, whose subject is the probe (which may share its copy's name)
PROBE_RULES = {"P1.watched", "P2.probe_up"}


def format_value(value: Any, rule: str = "") -> str:
    """A rule's measured value or threshold as the plan prints it (`verdicts.format_measure`)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format_measure(rule, value)


def recovery_order(runbooks: dict) -> tuple[list[str], set[str]]:
    """Systems in recovery order: every system after the systems it depends on, ties by
    tier then name. Systems on a dependency cycle cannot be ordered: they come last (tier,
    name) and are returned as the second value."""
    deps = {s: {d for d in rb.depends_on if d in runbooks and d != s} for s, rb in runbooks.items()}
    waiting = {s: len(d) for s, d in deps.items()}
    needed_by: dict[str, list[str]] = {s: [] for s in runbooks}
    for system, ds in deps.items():
        for d in ds:
            needed_by[d].append(system)
    ready = [(runbooks[s].tier, s) for s, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, system = heapq.heappop(ready)
        order.append(system)
        for other in needed_by[system]:
            waiting[other] -= 1
            if waiting[other] == 0:
                heapq.heappush(ready, (runbooks[other].tier, other))
    cyclic = set(runbooks) - set(order)
    return order + sorted(cyclic, key=lambda s: (runbooks[s].tier, s)), cyclic


_TEST_COLUMNS = ("id, system, test, status, started_at, rto_seconds, rpo_seconds, restore_seconds, verify_seconds, "
                 "rto_target_seconds, rpo_target_seconds, reason")


def recent_tests(store: Store, now: datetime, per_system: int, days: int = 14) -> dict[str, list[dict]]:
    """system -> its latest `per_system` restore test runs (skipped ones aside), newest
    first. Read from the last `days` through the time index (a year of daily tests of a
    thousand systems is never scanned); a system with fewer runs there is read on its own."""
    rows = store.query(f"SELECT {_TEST_COLUMNS} FROM restore_tests WHERE started_at >= ? AND status != 'skipped' "
                       "ORDER BY started_at DESC, id DESC", [ts(now - timedelta(days=days))])
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        found = grouped.setdefault(row["system"], [])
        if len(found) < per_system:
            found.append(row)
    for (system,) in store.db.execute("SELECT DISTINCT system FROM restore_tests").fetchall():
        if len(grouped.get(system, [])) < per_system:
            grouped[system] = store.query(f"SELECT {_TEST_COLUMNS} FROM restore_tests WHERE system = ? "
                                          "AND status != 'skipped' ORDER BY started_at DESC, id DESC LIMIT ?",
                                          [system, per_system])
    return grouped


def last_restores(store: Store, recent: dict[str, list[dict]]) -> dict[str, dict]:
    """system -> its latest restore test that measured a restore duration (from `recent`
    when one of those did, else read on its own)."""
    found = {}
    for system, rows in recent.items():
        row = next((r for r in rows if r["restore_seconds"] is not None), None)
        if row is None:
            row = next(iter(store.query(f"SELECT {_TEST_COLUMNS} FROM restore_tests WHERE system = ? "
                                        "AND restore_seconds IS NOT NULL ORDER BY started_at DESC, id DESC LIMIT 1",
                                        [system])), None)
        if row is not None:
            found[system] = row
    return found


def test_history(store: Store, now: datetime, days: int = 365) -> list[dict]:
    """Per (system, test) over the last `days`: runs, outcomes, last run, worst measured
    RTO and RPO, and the latest measured values with their test ids."""
    rows = store.query(
        "SELECT system, test, COUNT(*) AS runs, SUM(status = 'passed') AS passed, SUM(status = 'failed') AS failed, "
        "SUM(status = 'error') AS errors, MIN(started_at) AS first_at, MAX(started_at) AS last_at, "
        "MAX(rto_seconds) AS worst_rto, MAX(rpo_seconds) AS worst_rpo, MAX(rto_target_seconds) AS rto_target, "
        "MAX(rpo_target_seconds) AS rpo_target FROM restore_tests WHERE started_at >= ? AND status != 'skipped' "
        "GROUP BY system, test ORDER BY system, test", [ts(now - timedelta(days=days))])
    latest = {(r["system"], r["test"]): r for r in store.latest_restore_tests()}
    for row in rows:
        last = latest.get((row["system"], row["test"]), {})
        row.update(last_id=last.get("id"), last_status=last.get("status"), last_rto=last.get("rto_seconds"),
                   last_rpo=last.get("rpo_seconds"))
    return rows


def verification_checks(store: Store, facts: Facts) -> dict[str, list[dict]]:
    """system -> the checks of each of its tests' latest run (test id and name on each)."""
    latest = list(facts.tests.values())
    checks = store.checks_for([row["id"] for row in latest])
    grouped: dict[str, list[dict]] = {}
    for row in sorted(latest, key=lambda r: (r["system"], r["test"])):
        for check in checks.get(row["id"], []):
            grouped.setdefault(row["system"], []).append({**check, "test": row["test"], "test_id": row["id"],
                                                          "started_at": row["started_at"]})
    return grouped


def copy_rows(loaded: LoadedConfig, facts: Facts, results: list[RuleResult], now: datetime) -> dict[str, list[dict]]:
    """system -> one row per copy of its data: the copies its probes list it in, then any
    other copy holding a point of it; with site, distance, media, the declared protection
    facts, the newest point and its age against the RPO, and the rule results whose subject
    is that copy (probe reachability aside)."""
    cfg = loaded.config
    about: dict[tuple[str | None, str | None], list[RuleResult]] = {}
    for r in results:
        if r.rule not in PROBE_RULES:
            about.setdefault((r.system, r.subject), []).append(r)
    rows: dict[str, list[dict]] = {}
    for system, runbook in sorted(loaded.runbooks.items()):
        names = [c for p in facts.probes_of.get(system, []) for c in cfg.probes[p].copies_of(system)]
        points = {}
        for row in facts.points.get(system, []):
            if row["copy"] not in points or row["point_time"] > points[row["copy"]]["point_time"]:
                points[row["copy"]] = row
        for name in dict.fromkeys(names + sorted(points)):
            copy, point = cfg.copies.get(name), points.get(name)
            site = cfg.sites.get(copy.site) if copy else None
            newest = parse_ts(point["point_time"]) if point else None
            age = (now - newest).total_seconds() if newest else None
            rows.setdefault(system, []).append({
                "system": system, "copy": name, "config": copy, "site_name": copy.site if copy else None,
                "site": site, "distance_km": site.distance_km if site else None, "newest": newest, "age": age,
                "within_rpo": age is not None and age <= runbook.rpo.total_seconds(),
                "point_id": point["point_id"] if point else None, "results": about.get((system, name), []),
            })
    return rows


def facility_risks(loaded: LoadedConfig, copies: dict[str, list[dict]]) -> list[dict]:
    """Every site with its facility facts, the copies it holds and the risks those facts
    show (wet-pipe sprinklers, unknown suppression, no power backup recorded, too near)."""
    cfg = loaded.config
    held: dict[str, list[str]] = {}
    for name, copy in cfg.copies.items():
        held.setdefault(copy.site, []).append(name)
    sites = []
    for name, site in sorted(cfg.sites.items(), key=lambda kv: (kv[1].distance_km or 0, kv[0])):
        risks = []
        if site.fire_suppression == "wet-pipe":
            risks.append("wet-pipe sprinklers: a fire or a leak soaks the equipment they protect")
        elif site.fire_suppression in ("unknown", "none"):
            risks.append(f"fire suppression {site.fire_suppression}")
        if not site.power_backup:
            risks.append("no power backup recorded")
        primary = name == cfg.agent.site or not site.distance_km
        if not primary and site.distance_km < cfg.policy.near_km:
            risks.append(f"{site.distance_km:g} km from the primary site: shares its regional disasters "
                         f"(under {cfg.policy.near_km:g} km)")
        if not site.key_holders:
            risks.append("no key holders recorded")
        sites.append({"name": name, "site": site, "primary": primary, "copies": sorted(held.get(name, [])),
                      "risks": risks})
    return sites


def vendor_contacts(loaded: LoadedConfig) -> list[dict]:
    """Each vendor contact (by vendor, product and contract) with the systems relying on it."""
    merged: dict[tuple, dict] = {}
    for system, runbook in sorted(loaded.runbooks.items()):
        for v in runbook.vendors:
            key = (v.vendor, v.product, v.contract, v.phone, v.email, v.sla)
            merged.setdefault(key, {"contact": v, "systems": []})["systems"].append(system)
    return sorted(merged.values(), key=lambda m: (m["contact"].vendor.lower(), m["contact"].product))


def rule_key(rule: str) -> tuple:
    """Rule ids in their natural order: R2 before R10, R rules before P rules."""
    letter, number, rest = re.fullmatch(r"([A-Z]+)(\d*)(.*)", rule).groups()
    return (letter != "R", letter, int(number or 0), rest)


def _order(r: RuleResult) -> tuple:
    return (r.passed, SEVERITY_ORDER.get(r.severity.value, 2), rule_key(r.rule), r.system or "", r.subject or "")


def compliance_matrix(results: list[RuleResult]) -> dict:
    """The matrix: per rule (title, controls, passed / failed / declared counts); every
    failing result and every pass resting on a declared fact, failing first (critical, then
    warnings), then by rule, system and subject, one row each; the proven passes per rule,
    each with its evidence, in a compact list (a thousand systems make 26,000 of them)."""
    per_rule: dict[str, Counter] = {}
    for r in results:
        counts = per_rule.setdefault(r.rule, Counter())
        counts["failed" if not r.passed else "declared" if r.declared else "proven"] += 1
    rules = [{"id": rid, "rule": RULES[rid], "counts": per_rule.get(rid, Counter())} for rid in sorted(RULES, key=rule_key)]
    proven: dict[str, list[RuleResult]] = {}
    for r in results:
        if r.passed and not r.declared:
            proven.setdefault(r.rule, []).append(r)
    return {"rules": rules, "results": sorted((r for r in results if not r.passed or r.declared), key=_order),
            "proven": [{"id": m["id"], "results": sorted(proven[m["id"]], key=lambda r: (r.system or "", r.subject or ""))}
                       for m in rules if m["id"] in proven]}


def summary(statuses: Iterable, results: list[RuleResult], actions: list, vms: list) -> dict:
    """The executive summary: counts, the worst problems and the systems out of target."""
    statuses = sorted(statuses, key=lambda s: (s.ok, s.tier, s.system))
    failing = sorted((r for r in results if not r.passed), key=_order)
    tiers = Counter(s.tier for s in statuses)
    return {
        "systems": len(statuses), "in_target": sum(1 for s in statuses if s.ok),
        "out_of_target": [s for s in statuses if not s.ok], "tiers": sorted(tiers.items()),
        "failing": len(failing), "critical": sum(1 for r in failing if r.severity is Severity.CRITICAL),
        "declared": sum(1 for r in results if r.passed and r.declared),
        "passing": sum(1 for r in results if r.passed), "worst": failing[:WORST_PROBLEMS],
        "open_actions": len(actions), "vms": len(vms), "unprotected_vms": sum(1 for v in vms if not v.protected),
        "never_tested": [s for s in statuses if s.last_test is None],
    }

