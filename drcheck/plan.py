"""The DR / IT contingency plan (NIST SP 800-34 structure), generated from what drcheck
measured: HTML, and PDF through WeasyPrint (`drcheck.pdf`).

CONTRACT:
- `render_plan(loaded, store, output_dir, now, pdf=True) -> PlanFiles`: first brings the
  corrective actions up to date (`corrective.sync(store, results, now)`), then writes
  output_dir/plan-<now, local time>.html (and the .pdf of the same stem when `pdf`). A plan
  never overwrites an earlier one: a second plan in the same minute is plan-<time>-2.*.
  Both files are written atomically and fsynced.
- `plan_context(loaded, store, now) -> dict`: everything reports/plan.html.j2 shows, read
  from the configuration and the store (`drcheck.plan_facts` gathers the per-system facts).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from markupsafe import Markup

from drcheck import __version__, corrective, evidence
from drcheck.atomic import MAX_NAME_ATTEMPTS, fsync_directory
from drcheck.config_loader import LoadedConfig
from drcheck.plan_facts import (compliance_matrix, copy_rows, facility_risks, last_restores, recent_tests,
                                recovery_order, summary, test_history, vendor_contacts, verification_checks)
from drcheck.reporting import environment as reporting_environment
from drcheck.rules import RULES, Facts, evaluate
from drcheck.status import system_statuses, vm_statuses
from drcheck.store import Store, parse_ts


@dataclass(frozen=True)
class PlanFiles:
    html: Path
    pdf: Path | None


def plan_context(loaded: LoadedConfig, store: Store, now: datetime, results=None, facts=None) -> dict:
    """Everything the plan template shows, in the order of the plan's sections."""
    cfg = loaded.config
    facts = facts or Facts.read(loaded, store)
    results = evaluate(loaded, store, now, facts) if results is None else results
    statuses = {s.system: s for s in system_statuses(loaded, store, now, results, facts)}
    order, cyclic = recovery_order(loaded.runbooks)
    recent = recent_tests(store, now, per_system=5)
    restores = last_restores(store, recent)
    checks = verification_checks(store, facts)
    copies = copy_rows(loaded, facts, results, now)
    results_of: dict[str | None, list] = {}
    for r in results:
        results_of.setdefault(r.system, []).append(r)
    systems = []
    for position, system in enumerate(order, 1):
        systems.append({
            "system": system, "position": position, "runbook": loaded.runbooks[system],
            "status": statuses[system], "last_restore": restores.get(system), "recent": recent.get(system, []),
            "checks": checks.get(system, []), "copies": copies.get(system, []), "in_cycle": system in cyclic,
            "results": results_of.get(system, []),
        })
    tested = store.query("SELECT MAX(started_at) AS at FROM restore_tests WHERE status = 'passed'")[0]["at"]
    vms = vm_statuses(loaded, store, now, facts)
    actions = corrective.actions(store)
    return {
        "plan": cfg.plan, "policy": cfg.policy, "agent": cfg.agent.name, "version": __version__,
        "generated_at": now, "timezone": cfg.agent.timezone, "database": str(loaded.database_path),
        "chain": evidence.head(store), "last_test_at": parse_ts(tested) if tested else None,
        "last_exercise": max((e.held_on for e in cfg.plan.exercises), default=None),
        "summary": summary(statuses.values(), results, actions, vms),
        "systems": systems, "cyclic": sorted(cyclic), "sites": facility_risks(loaded, copies),
        "copies": [row for s in systems for row in s["copies"]],
        "history": test_history(store, now), "vendors": vendor_contacts(loaded),
        "matrix": compliance_matrix(results), "rules": RULES, "actions": actions,
        "inventory_failing": [r for r in results if r.system is None and not r.passed],
    }


def environment(loaded: LoadedConfig):
    """The reports' Jinja2 environment (`drcheck.reporting.environment`) with the plan's filters."""
    from drcheck.plan_facts import format_value

    env = reporting_environment(loaded)
    env.filters["value"] = format_value
    # called once per row of tables tens of thousands of rows long: Python, not Jinja macros
    env.globals.update(badge=badge, verdict=verdict, evidence_refs=evidence_refs, proven_refs=proven_refs)
    return env


def badge(value) -> Markup:
    """`<span class="badge VALUE">VALUE</span>`, escaped."""
    return Markup('<span class="badge {0}">{0}</span>').format(value)


def verdict(result) -> Markup:
    """A rule result's badge: failed, declared (passes on an unverified fact) or proven."""
    return badge("failed" if not result.passed else "declared" if result.declared else "proven")


def proven_refs(results) -> Markup:
    """Proven passes of one rule, compactly: `system (subject) table#id, …; next system …`."""
    parts = []
    for r in results:
        who = r.system or "inventory"
        if r.subject and r.subject != r.system:
            who = f"{who} ({r.subject})"
        parts.append(Markup("{} ").format(who) + evidence_refs(r))
    return Markup("; ").join(parts)


def evidence_refs(result) -> Markup:
    """The result's evidence rows as `table#id` references, or a dash."""
    if not result.evidence:
        return Markup('<span class="muted">—</span>')
    return Markup(", ").join(Markup('<span class="ref">{}#{}</span>').format(t, i) for t, i in result.evidence)


def render_html(loaded: LoadedConfig, context: dict) -> str:
    """The plan's HTML (autoescaped Jinja2, reports/plan.html.j2 with plan.css inlined)."""
    return environment(loaded).get_template("plan.html.j2").render(**context)


def render_plan(loaded: LoadedConfig, store: Store, output_dir: Path, now: datetime, pdf: bool = True) -> PlanFiles:
    """Sync the corrective actions, render the plan and write it (see the module docstring)."""
    facts = Facts.read(loaded, store)
    results = evaluate(loaded, store, now, facts)
    corrective.sync(store, results, now)
    html = render_html(loaded, plan_context(loaded, store, now, results, facts))
    end = now.astimezone(ZoneInfo(loaded.config.agent.timezone))
    stem = f"plan-{end:%Y-%m-%d-%H%M}"

    def name(n: int, suffix: str) -> Path:
        return Path(output_dir) / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n + 1}{suffix}")

    document = None
    if pdf:  # converted before anything is written: a failed conversion leaves no half a plan
        from drcheck.pdf import html_to_pdf

        document = html_to_pdf(html)
    for n in range(MAX_NAME_ATTEMPTS):  # a stem free for both files
        try:
            html_path = _write_new_bytes(name(n, ".html"), html.encode("utf-8"))
        except FileExistsError:
            continue
        if document is None:
            return PlanFiles(html_path, None)
        try:
            return PlanFiles(html_path, _write_new_bytes(name(n, ".pdf"), document))
        except FileExistsError:
            html_path.unlink()
        except BaseException:
            html_path.unlink()
            raise
    raise FileExistsError(f"{name(0, '.html')}: {MAX_NAME_ATTEMPTS} plans of that name exist already")


def _write_new_bytes(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write `data` to `path`, which must not exist (claimed with link(2)), atomically and
    durably; FileExistsError if it does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.link(tmp, path)
        fsync_directory(path.parent)
    finally:
        os.unlink(tmp)
    return path

