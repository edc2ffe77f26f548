"""Render reports from the store with Jinja2.

The weekly restore report is for the network administrator and the auditor: a summary
first (what needs attention, what changed since last week, each system's verdict), then
the details: measured RTO per system over the last weeks (inline SVG, `drcheck.charts`),
copies and their ages against the RPO, runbook facts, every restore test of the last seven
days with its row id, full restore point id and, when it failed, the phases it got
through, every probe run of the week, and canary and check coverage
(`drcheck.weekly` computes those sections, one query each).
Templates ship in the `drcheck.reports` package; `reports.templates_dir` overrides them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from drcheck import __version__, weekly
from drcheck.atomic import write_new
from drcheck.charts import rto_chart
from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.kinds import probe_module, rotation_coverage
from drcheck.rules import Facts, evaluate, failing
from drcheck.verdicts import operational
from drcheck.status import system_statuses, test_run, vm_statuses
from drcheck.store import Store, parse_ts

STATUS_ORDER = {"error": 0, "failed": 1, "passed": 2, "ok": 2, "skipped": 3}


def environment(loaded: LoadedConfig) -> jinja2.Environment:
    """Return the Jinja2 environment: the operator's templates first, then the shipped ones."""
    loaders: list[jinja2.BaseLoader] = []
    if loaded.config.reports.templates_dir:
        loaders.append(jinja2.FileSystemLoader(str(loaded.config.reports.templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(resources.files("drcheck.reports"))))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    zone = ZoneInfo(loaded.config.agent.timezone)

    def local(when: datetime | str | None, fmt: str = "%a %Y-%m-%d %H:%M %Z") -> str:
        if isinstance(when, str):
            when = parse_ts(when)
        return when.astimezone(zone).strftime(fmt) if when else "—"

    env.filters["local"] = local
    env.filters["duration"] = format_duration
    env.filters["bytes"] = _bytes
    return env


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def weekly_context(loaded: LoadedConfig, store: Store, now: datetime) -> dict:
    """Return everything the weekly template shows, computed from the store."""
    start = now - timedelta(days=7)
    rows = store.restore_tests_between(start, now + timedelta(seconds=1))
    checks = store.checks_for([r["id"] for r in rows])
    runs = []
    for row in rows:
        if row["status"] == "skipped":  # refused because another run held the test: no evidence either way
            continue
        run = test_run(row)
        details = weekly.details_of(row)
        runs.append({"run": run, "row": row, "checks": checks.get(row["id"], []), "details": details,
                     "phases": weekly.phases(details) if run.status != "passed" else []})
    runs.sort(key=lambda r: (STATUS_ORDER.get(r["run"].status, 0), -r["run"].started_at.timestamp()))
    facts = Facts.read(loaded, store)
    results = evaluate(loaded, store, now, facts)
    statuses = system_statuses(loaded, store, now, results, facts)
    vms = vm_statuses(loaded, store, now, facts)
    counts = {s: sum(1 for r in runs if r["run"].status == s) for s in ("passed", "failed", "error")}
    counts["skipped"] = sum(1 for row in rows if row["status"] == "skipped")
    chart_start = now - timedelta(weeks=weekly.CHART_WEEKS)
    history = weekly.rto_history(loaded, store, now)
    charts = [{"system": s.system, "name": s.name, "target": s.rto_target_seconds,
               "over": sum(v > s.rto_target_seconds for _, v in history[s.system]), "weeks": len(history[s.system]),
               "worst": max(v for _, v in history[s.system]), "latest": history[s.system][-1][1],
               "svg": rto_chart(s.name, history[s.system], s.rto_target_seconds, chart_start, now)}
              for s in statuses if s.system in history]
    charts.sort(key=lambda c: not c["over"])  # breaches first, then the systems table's order
    return {
        "agent": loaded.config.agent.name, "version": __version__, "generated_at": now,
        "period_start": start, "period_end": now, "systems": statuses,
        "attention": [s for s in statuses if not s.ok], "runs": runs, "counts": counts,
        "vms": vms, "unprotected_vms": [vm for vm in vms if not vm.protected],
        "rotations": rotation_coverage(loaded, store, now),
        "unclaimed_failing": [r for r in failing(operational(results)) if r.system is None],
        "probes": store.latest_probe_runs(), "findings": store.findings_of_latest_runs(),
        "timezone": loaded.config.agent.timezone, "database": str(loaded.database_path),
        "copies": weekly.system_copies(loaded, facts, statuses), "offsite_km": loaded.config.policy.offsite_km,
        "runbooks": weekly.runbook_facts(loaded, statuses),
        "probe_week": weekly.probe_runs_between(store, start, now + timedelta(seconds=1), [
            (name, action) for name, probe in loaded.config.probes.items() for action in probe_module(probe.kind).ACTIONS]),
        "coverage": weekly.coverage(loaded, store, runs, start, now + timedelta(seconds=1)),
        "changes": weekly.changes(loaded, store, facts, start, now),
        "charts": charts, "chart_weeks": weekly.CHART_WEEKS,
        "unmeasured": [s for s in statuses if s.system not in history],
    }


def render_weekly(loaded: LoadedConfig, store: Store, output_dir: Path, now: datetime) -> Path:
    """Render the report of the 7 days up to `now` to output_dir/weekly-<end, local
    time>.html and return its path. The name says which period it covers, and a report
    never overwrites another (evidence is kept, not replaced): a second report ending in
    the same minute is weekly-<end>-2.html, and so on. Written atomically and fsynced."""
    html = environment(loaded).get_template("weekly.html.j2").render(**weekly_context(loaded, store, now))
    end = now.astimezone(ZoneInfo(loaded.config.agent.timezone))
    stem = f"weekly-{end:%Y-%m-%d-%H%M}"
    return write_new(lambda n: Path(output_dir) / (f"{stem}.html" if n == 0 else f"{stem}-{n + 1}.html"), html)
