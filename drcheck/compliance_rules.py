"""The compliance rules beyond backup age and restore tests: copies and where they are
(R4, R7, R15), immutability and credentials (R5), encryption (R6), the test window by
tier (R8), recovery order (R14), complete targets (R1), and the plan's own upkeep:
exercises (R11), review and contacts (R12), training (R13).

Each check yields `RuleResult`s like every rule in drcheck.rules; thresholds come from
`[policy]`. Facts about sites and copies are *declared* in the configuration: a result that
passes only on a declared fact no probe verified says so (`declared=True`). A probe proves
a fact through its target's `proven_facts()` (restic always encrypts its repository).

Where things are: the *primary* site is `agent.site`, else the one site without a
`distance_km`. A copy is *away* from it when it sits at another site, in another building,
at a distance over 0; *far* when also at least `policy.offsite_km` away and outside the
primary's hazard zone. A copy counts for R4/R5/R7/R15 only when it holds a restore point
of the system (a configured copy that holds nothing protects nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Iterator

from drcheck.config import CopyConfig, SiteConfig
from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.results import Severity
from drcheck.store import parse_ts
from drcheck import verdicts as _rules


@dataclass(frozen=True)
class HeldCopy:
    """A copy of one system that holds a restore point: its config, its site and newest point row."""

    name: str
    config: CopyConfig
    site_name: str
    site: SiteConfig | None
    point: dict


def primary_site(loaded: LoadedConfig) -> str | None:
    """`agent.site`, else the only site without a distance, else None (not recorded)."""
    cfg = loaded.config
    if cfg.agent.site:
        return cfg.agent.site
    home = [name for name, site in cfg.sites.items() if not site.distance_km]
    return home[0] if len(home) == 1 else None


def held_copies(loaded: LoadedConfig, facts, system: str) -> list[HeldCopy]:
    """The copies holding a restore point of `system`, newest point each, by name."""
    cfg = loaded.config
    newest: dict[str, dict] = {}
    for row in facts.points.get(system, []):
        if row["copy"] in cfg.copies and (row["copy"] not in newest
                                          or row["point_time"] > newest[row["copy"]]["point_time"]):
            newest[row["copy"]] = row
    held = []
    for name, row in sorted(newest.items()):
        copy = cfg.copies[name]
        held.append(HeldCopy(name, copy, copy.site, cfg.sites.get(copy.site), row))
    return held


def is_away(loaded: LoadedConfig, copy: HeldCopy) -> bool:
    """At another site, in another building, some distance from the primary site."""
    primary = primary_site(loaded)
    if copy.site is None or copy.site_name == primary:
        return False
    home = loaded.config.sites.get(primary) if primary else None
    if home is not None and home.building and copy.site.building == home.building:
        return False
    return bool(copy.site.distance_km)


def is_far(loaded: LoadedConfig, copy: HeldCopy) -> bool:
    """Away, at least `policy.offsite_km` off and outside the primary's hazard zone."""
    primary = primary_site(loaded)
    home = loaded.config.sites.get(primary) if primary else None
    zone = home.hazard_zone if home else None
    return (is_away(loaded, copy) and copy.site.distance_km >= loaded.config.policy.offsite_km
            and not (zone and copy.site.hazard_zone == zone))


def proven(loaded: LoadedConfig, copy: str) -> set[str]:
    """Facts about `copy` some configured probe verifies (e.g. {"encrypted_at_rest"})."""
    found: set[str] = set()
    for probe in loaded.config.probes.values():
        found |= probe.proven_facts().get(copy, set())
    return found


def _evidence(copies: list[HeldCopy]) -> tuple[tuple[str, int], ...]:
    return tuple(("restore_points", c.point["id"]) for c in copies)


def _km(copy: HeldCopy) -> str:
    return f"{copy.name} ({copy.site_name}, {copy.site.distance_km:g} km)" if copy.site and copy.site.distance_km \
        else f"{copy.name} ({copy.site_name})"


# -- per system ------------------------------------------------------------------------


def complete(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R1.complete: an alternate to the owner and human recovery steps (the targets
    themselves are required by the runbook schema)."""
    rb = loaded.runbooks[system]
    missing = [what for what, present in (("an alternate owner", rb.alternate), ("recovery steps", rb.recovery_steps),
                                          ("validation steps", rb.validation)) if not present]
    yield _rules.RuleResult("R1.complete", system, not missing,
                            "runbook names owner, alternate, recovery and validation steps" if not missing
                            else f"runbook lacks {', '.join(missing)}", measured=len(missing), threshold=0)


def copies(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R4.copies: production plus copies holding a point ≥ min_copies, on ≥ min_media
    media (production counts as one disk copy). R4.offsite: one of them far away; only
    nearer off-site copies is a warning, none away at all is critical."""
    policy = loaded.config.policy
    held = held_copies(loaded, facts, system)
    count = 1 + len(held)
    media = {"disk"} | {c.config.media for c in held}
    ok = count >= policy.min_copies and len(media) >= policy.min_media
    yield _rules.RuleResult(
        "R4.copies", system, ok,
        f"{count} cop{'y' if count == 1 else 'ies'} (production + {', '.join(c.name for c in held) or 'none'}) on {len(media)} media "
        f"({', '.join(sorted(media))}); policy: {policy.min_copies} copies, {policy.min_media} media",
        measured=count, threshold=policy.min_copies, evidence=_evidence(held))
    away = [c for c in held if is_away(loaded, c)]
    far = [c for c in away if is_far(loaded, c)]
    if far:
        yield _rules.RuleResult("R4.offsite", system, True, f"off-site copy {_km(far[0])}",
                                measured=max(c.site.distance_km for c in far), threshold=policy.offsite_km,
                                evidence=_evidence(far), declared=True)
    elif away:
        nearest = max(away, key=lambda c: c.site.distance_km)
        yield _rules.RuleResult("R4.offsite", system, False,
                                f"the farthest copy, {_km(nearest)}, is nearer than {policy.offsite_km:g} km or in the "
                                "primary site's hazard zone: a regional disaster takes both",
                                measured=nearest.site.distance_km, threshold=policy.offsite_km,
                                evidence=_evidence(away), level=Severity.WARNING)
    else:
        yield _rules.RuleResult("R4.offsite", system, False, "no copy away from the primary site holds a point",
                                measured=0, threshold=policy.offsite_km, evidence=_evidence(held))


def immutable(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R5.immutable: a copy locked ≥ policy.immutable_days, or offline. R5.credentials:
    a copy whose credentials are not in the production directory."""
    days = loaded.config.policy.immutable_days
    held = held_copies(loaded, facts, system)
    locked = [c for c in held if c.config.offline or (c.config.immutable_days or 0) >= days]
    if locked:
        c = locked[0]
        how = "offline" if c.config.offline else f"locked {c.config.immutable_days} days"
        yield _rules.RuleResult("R5.immutable", system, True, f"{c.name} is {how} (declared)",
                                measured=c.config.immutable_days, threshold=days, evidence=_evidence([c]),
                                declared="immutable" not in proven(loaded, c.name))
    else:
        yield _rules.RuleResult("R5.immutable", system, False,
                                f"no immutable or offline copy (policy: locked ≥ {days} days): ransomware that "
                                "reaches the backup credentials can delete every copy",
                                measured=max((c.config.immutable_days or 0 for c in held), default=0), threshold=days,
                                evidence=_evidence(held))
    separate = [c for c in held if c.config.separate_credentials]
    yield _rules.RuleResult("R5.credentials", system, bool(separate),
                            f"{separate[0].name}'s credentials are separate from production's directory (declared)"
                            if separate else "every copy is administered with production's directory credentials "
                                             "(or it is not recorded)",
                            measured=len(separate), threshold=1, evidence=_evidence(separate or held),
                            declared=bool(separate))


ENCRYPTION = (("encrypted_at_rest", "at rest"), ("encrypted_in_transit", "in transit"), ("key_offsite", "key off-site"))


def encryption(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R6.encryption, per copy holding a point: encrypted at rest and in transit, the key
    held away from the primary site. A fact a probe proves is not "declared"."""
    for c in held_copies(loaded, facts, system):
        shown = proven(loaded, c.name)
        missing = [label for key, label in ENCRYPTION if key not in shown and not getattr(c.config, key)]
        declared = any(key not in shown for key, _ in ENCRYPTION)
        yield _rules.RuleResult("R6.encryption", system, not missing,
                                f"{c.name}: " + ("encrypted at rest and in transit, key off-site" if not missing
                                                 else f"not recorded or not true: {', '.join(missing)}"),
                                measured=len(ENCRYPTION) - len(missing), threshold=len(ENCRYPTION),
                                evidence=_evidence([c]), subject=c.name, declared=declared and not missing)


def offsite_lag(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R7.offsite_lag: the freshest copy away from the primary site is within the RPO."""
    away = [c for c in held_copies(loaded, facts, system) if is_away(loaded, c)]
    if not away:
        return  # R4.offsite says there is none
    rpo = loaded.runbooks[system].rpo.total_seconds()
    best = max(away, key=lambda c: c.point["point_time"])
    age = (now - parse_ts(best.point["point_time"])).total_seconds()
    yield _rules.RuleResult("R7.offsite_lag", system, age <= rpo,
                            f"newest off-site point ({best.name}) is {format_duration(age)} old "
                            f"(RPO {format_duration(rpo)})", measured=age, threshold=rpo, evidence=_evidence([best]))


def facility(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R15.facility: a copy in the primary's site or building never counts as off-site;
    when every copy away from it sits under wet-pipe sprinklers (or in the primary's
    hazard zone), one fire or flood away from losing the system: critical."""
    held = held_copies(loaded, facts, system)
    away = [c for c in held if is_away(loaded, c)]
    primary = primary_site(loaded)
    home = loaded.config.sites.get(primary) if primary else None

    def exposed(c: HeldCopy) -> str | None:
        if c.site.fire_suppression == "wet-pipe":
            return f"{c.name} at {c.site_name} is under wet-pipe sprinklers"
        if home and home.hazard_zone and c.site.hazard_zone == home.hazard_zone:
            return f"{c.name} at {c.site_name} shares the primary site's hazard zone {home.hazard_zone}"
        return None

    if not away:
        yield _rules.RuleResult("R15.facility", system, False,
                                f"every copy is at the primary site ({primary or 'not recorded'}) or its building",
                                evidence=_evidence(held))
        return
    risks = [exposed(c) for c in away]
    safe = [c for c, risk in zip(away, risks, strict=True) if risk is None]
    yield _rules.RuleResult("R15.facility", system, bool(safe),
                            f"{_km(safe[0])} has no recorded facility risk (declared)" if safe
                            else "; ".join(r for r in risks if r) + ": the only copies away from the primary site",
                            measured=len(safe), threshold=1, evidence=_evidence(away), declared=bool(safe))


def test_window(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R8.test_window: a restore test of the system passed within its tier's window."""
    rb = loaded.runbooks[system]
    window = loaded.config.policy.test_window.get(rb.tier, timedelta(days=365))
    last = facts.last_passed.get(system)
    age = (now - last).total_seconds() if last else None
    yield _rules.RuleResult("R8.test_window", system, age is not None and age <= window.total_seconds(),
                            (f"last successful restore test {format_duration(age)} ago" if age is not None
                             else "never successfully test-restored")
                            + f" (tier {rb.tier}: within {format_duration(window.total_seconds())})",
                            measured=age, threshold=window.total_seconds())


def recovery_order(loaded: LoadedConfig, facts, system: str, now: datetime) -> Iterator[_rules.RuleResult]:
    """R14.recovery_order: dependencies are known systems, form no cycle, and each can be
    back (its RTO) no later than this system must be."""
    rb = loaded.runbooks[system]
    problems = [f"depends on unknown system {d!r}" for d in rb.depends_on if d not in loaded.runbooks]
    problems += [f"{d} (RTO {format_duration(loaded.runbooks[d].rto.total_seconds())}) cannot be back before it "
                 f"(RTO {format_duration(rb.rto.total_seconds())})"
                 for d in rb.depends_on if d in loaded.runbooks and loaded.runbooks[d].rto > rb.rto]
    if (cycle := _cycle_through(loaded, system)):
        problems.append("dependency cycle " + " → ".join(cycle))
    yield _rules.RuleResult("R14.recovery_order", system, not problems,
                            "; ".join(problems) or (f"recovers after {', '.join(rb.depends_on)}" if rb.depends_on
                                                    else "depends on no other system"),
                            measured=len(problems), threshold=0)


def _cycle_through(loaded: LoadedConfig, start: str) -> list[str] | None:
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node] if node == start else None
        if node not in loaded.runbooks:
            return None
        path.append(node)
        for dep in loaded.runbooks[node].depends_on:
            if (found := walk(dep)):
                return found
        path.pop()
        return None

    return walk(start)


SYSTEM_CHECKS = (complete, copies, immutable, encryption, offsite_lag, facility, test_window, recovery_order)


# -- the plan's upkeep (system None) -----------------------------------------------------


def _days_since(when: date | None, now: datetime) -> float | None:
    return (now.date() - when).days if when else None


def exercise(loaded: LoadedConfig, facts, now: datetime) -> Iterator[_rules.RuleResult]:
    """R11.exercise: a plan exercise within policy.exercise_days, with its after-action
    report recorded."""
    limit = loaded.config.policy.exercise_days
    held = sorted(loaded.config.plan.exercises, key=lambda e: e.held_on)
    last = held[-1] if held else None
    days = _days_since(last.held_on if last else None, now)
    ok = days is not None and days <= limit and bool(last.after_action_report)
    yield _rules.RuleResult("R11.exercise", None, ok,
                            "the plan was never exercised" if last is None else
                            f"last exercise ({last.kind}) {last.held_on}, {days} days ago"
                            + ("" if last.after_action_report else ", no after-action report recorded"),
                            measured=days, threshold=limit, subject="plan", declared=ok)


def review(loaded: LoadedConfig, facts, now: datetime) -> Iterator[_rules.RuleResult]:
    """R12.plan_review: approved or reviewed within policy.review_days, with a change record.
    R12.contacts: every plan contact and runbook vendor verified within policy.contacts_days."""
    policy, plan = loaded.config.policy, loaded.config.plan
    last = max(filter(None, (plan.approved_on, plan.reviewed_on)), default=None)
    days = _days_since(last, now)
    ok = days is not None and days <= policy.review_days and bool(plan.changes)
    yield _rules.RuleResult("R12.plan_review", None, ok,
                            ("the plan was never approved or reviewed" if last is None else
                             f"last approved or reviewed {last}, {days} days ago")
                            + ("" if plan.changes else "; no change record"),
                            measured=days, threshold=policy.review_days, subject="plan", declared=ok)
    people = [(c.name, c.verified_on) for c in plan.contacts]
    people += [(f"{v.vendor} ({system})", v.verified_on) for system, rb in sorted(loaded.runbooks.items())
               for v in rb.vendors]
    stale = [name for name, when in people if when is None or (now.date() - when).days > policy.contacts_days]
    yield _rules.RuleResult("R12.contacts", None, bool(people) and not stale,
                            "no contacts recorded in [plan] contacts" if not people else
                            f"{len(people) - len(stale)} of {len(people)} contacts verified within "
                            f"{policy.contacts_days} days" + (f"; not: {', '.join(stale)}" if stale else ""),
                            measured=len(stale), threshold=0, subject="contacts", declared=bool(people) and not stale)


def training(loaded: LoadedConfig, facts, now: datetime) -> Iterator[_rules.RuleResult]:
    """R13.training: every DR role (runbook owners and alternates, recovery-step owners)
    trained within policy.training_days."""
    limit = loaded.config.policy.training_days
    roles = sorted({rb.owner for rb in loaded.runbooks.values()}
                   | {rb.alternate for rb in loaded.runbooks.values() if rb.alternate}
                   | {s.owner for rb in loaded.runbooks.values() for s in rb.recovery_steps if s.owner})
    trained: dict[str, date] = {}
    for t in loaded.config.plan.training:
        trained[t.who] = max(t.held_on, trained.get(t.who, t.held_on))
    for role in roles:
        days = _days_since(trained.get(role), now)
        ok = days is not None and days <= limit
        yield _rules.RuleResult("R13.training", None, ok,
                                f"{role}: " + (f"trained {trained[role]}, {days} days ago" if days is not None
                                               else "no DR training recorded"),
                                measured=days, threshold=limit, subject=f"role:{role}", declared=ok)


PLAN_CHECKS = (exercise, review, training)
