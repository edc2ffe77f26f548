"""A rule's identity and one judgement of it: what every view (status, reports, metrics,
the DR plan's compliance matrix) reads. The rules themselves fill `RULES` (drcheck.rules)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drcheck.results import Severity


@dataclass(frozen=True)
class Rule:
    """A rule's identity: what it checks and which controls its results evidence."""

    id: str
    title: str
    severity: Severity
    controls: tuple[str, ...]
    # "operations": is the system recoverable now (status, its exit code, "needs attention");
    # "compliance": is the programme what auditors ask for (`drcheck compliance`, the plan)
    scope: str = "operations"
    unit: str = ""  # of measured/threshold: "seconds", "km", "days", "" for counts and words


RULES: dict[str, Rule] = {}


@dataclass(frozen=True)
class RuleResult:
    """One rule judged for one system (or for the agent, system None)."""

    rule: str
    system: str | None
    passed: bool
    message: str
    measured: Any = None
    threshold: Any = None
    evidence: tuple[tuple[str, int], ...] = ()  # (table, row id) pairs
    subject: str | None = None  # the copy, probe or test the result is about, when several
    probe: str | None = None  # the probe whose reading is judged (P2, R2, R10.source_check)
    declared: bool = False  # passes on a fact the configuration declares and no probe has verified
    level: Severity | None = None  # this result's severity when it differs from the rule's

    @property
    def severity(self) -> Severity:
        return self.level or RULES[self.rule].severity

    @property
    def controls(self) -> tuple[str, ...]:
        return RULES[self.rule].controls

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "system": self.system, "subject": self.subject, "passed": self.passed,
                "severity": self.severity.value, "measured": self.measured, "threshold": self.threshold,
                "evidence": [{"table": t, "id": i} for t, i in self.evidence], "message": self.message,
                "controls": list(self.controls), "declared": self.declared}


def operational(results: list[RuleResult]) -> list[RuleResult]:
    """The results of the operations rules: what `drcheck status` judges a system by."""
    return [r for r in results if RULES[r.rule].scope == "operations"]


def format_measure(rule: str, value: Any) -> str:
    """A measured value or threshold of `rule` in words: durations as durations, km and
    days with their unit, None as a dash."""
    from drcheck.durations import format_duration

    if value is None:
        return "—"
    unit = RULES[rule].unit if rule in RULES else ""
    if unit == "seconds" and isinstance(value, (int, float)):
        return format_duration(value)
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value} {unit}" if unit in ("km", "days") else str(value)
