"""Terminal output shared by the CLI and the demo: consoles, status colours, local times,
the status table and the progress view. Data (paths, reasons, evidence) is printed
literally, never interpreted as rich markup."""

from __future__ import annotations

import os
import sys

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from drcheck.config_loader import LoadedConfig
from drcheck.durations import format_duration
from drcheck.results import utcnow

def _width(stream) -> int | None:
    """A terminal's own width; piped into a log or a file, wide enough that tables keep
    their cells whole (rich assumes 80 columns), unless $COLUMNS says otherwise."""
    return None if os.environ.get("COLUMNS") or stream.isatty() else PIPED_WIDTH


PIPED_WIDTH = 160
out = Console(soft_wrap=True, width=_width(sys.stdout))  # paths and reasons stay on one line for scripts
err = Console(stderr=True, soft_wrap=True, width=_width(sys.stderr))

STATUS_STYLE = {"ok": "green", "passed": "green", "failed": "bold red", "error": "bold yellow"}


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def print_status_table(loaded: LoadedConfig, statuses) -> None:
    """Print one row per system (worst first), then each system's problems in words
    (unprotected VMs aside: `print_unprotected` names them all)."""
    zone = local(loaded, utcnow(), "%Z")
    table = Table("system", "tier", "RTO/RPO\ntarget", "point\nage", f"last test\n({zone})", "RTO", "RPO",
                  "result", title="drcheck status", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for column in table.columns:
        column.no_wrap = True
    several_copies = len(loaded.config.copies) > 1
    for s in statuses:
        points = "\n".join((f"{p.copy} " if several_copies else "") + format_duration(p.age_seconds)
                           + ("" if p.within_rpo else " [red]✗[/]") for p in s.points) or "[red]none[/]"
        t = s.last_test
        last = f"{styled(t.status)}\n[dim]{local(loaded, t.started_at, '%m-%d %H:%M')}[/]" if t else "[red]never[/]"
        table.add_row(s.system, str(s.tier),
                      f"{format_duration(s.rto_target_seconds)} / {format_duration(s.rpo_target_seconds)}",
                      points, last, versus(t.rto_seconds, s.rto_target_seconds) if t else "—",
                      versus(t.rpo_seconds, s.rpo_target_seconds) if t else "—",
                      "[green]OK[/]" if s.ok else "[bold red]FAIL[/]")
    out.print(table)
    for s in statuses:
        if s.problems:
            out.print(f"[bold red]{s.system}[/] ({escape(s.name)}, tier {s.tier}, owner {escape(s.owner)}):")
            for rule in s.failing:
                if rule.rule != "R3.vm_protected":  # every unprotected VM is named in its own list
                    out.print(f"  • {rule.message}  [{rule.rule}]", markup=False, highlight=False)


VM_STATE_STYLE = {"protected": "green", "excluded": "cyan", "stale": "bold red", "unprotected": "bold red"}


def print_vm_table(loaded: LoadedConfig, vms, title: str = "inventory VMs") -> None:
    """One row per VM (unprotected first): where it is, whose it is, each copy's newest
    restore point of it (✗: older than its RPO) and when a restore test last proved it."""
    table = Table("VM", "folder", "power", "system", "RPO", "newest point per copy", "last proven", "protection",
                  title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for vm in vms:
        point = "\n".join(f"{escape(c['copy'])} {format_duration(c['age_seconds'])}"
                          + ("" if c["age_seconds"] <= vm.rpo_seconds else " [red]✗[/]")
                          for c in sorted(vm.copies, key=lambda c: c["age_seconds"])) or "[red]none[/]"
        folder = vm.path.rpartition("/")[0] or "/"
        table.add_row(escape(vm.name), escape(folder), (vm.power_state or "").replace("powered", "").lower() or "—",
                      escape(", ".join(vm.systems)) or "[dim]no runbook[/]", format_duration(vm.rpo_seconds), point,
                      local(loaded, vm.last_proven_at, "%Y-%m-%d") if vm.last_proven_at else "[dim]never[/]",
                      f"[{VM_STATE_STYLE.get(vm.state, 'white')}]{vm.state}[/]")
    out.print(table)


def print_unprotected(vms) -> None:
    """Name every unprotected VM and why (the R3.vm_protected message)."""
    bad = [vm for vm in vms if not vm.protected]
    if bad:
        out.print(f"[bold red]{len(bad)} unprotected VM(s)[/] (no restore point within RPO, no exclusion):")
        for vm in bad:
            owner = f" ({', '.join(vm.systems)})" if vm.systems else " (no runbook claims it)"
            out.print(f"  • {vm.name}{owner}: {vm.message}  [R3.vm_protected]", markup=False, highlight=False)


def print_rotations(coverages) -> None:
    """Per rotation: how many of its VMs a restore test has proven, which never, and when
    every VM will have been proven at the current rate."""
    for c in coverages:
        proven = len(c.vms) - len(c.untested)
        never = ", ".join(m.name for m in c.untested[:8]) + (" …" if len(c.untested) > 8 else "")
        if c.days_to_cover == 0:
            when = "every VM proven at least once"
        elif c.days_to_cover is None:
            when = "no rate yet to project from"
        else:
            when = f"all covered in {c.runs_to_cover} more run(s), ~{c.days_to_cover:.1f} day(s)"
        rate = f"{c.vms_per_day:g} VMs/day ({c.rate_source})" if c.vms_per_day else "rate unknown"
        out.print(f"rotation {c.test}: {proven} of {len(c.vms)} VMs proven restorable"
                  + (f" (never: {never})" if never else "") + f"; {rate}; {when}", markup=False, highlight=False)


def print_leases_left(leases: list[dict]) -> None:
    """Print the resources dead runs left that could not be cleaned up yet (retried)."""
    if not leases:
        return
    out.print(f"[bold red]{len(leases)} resource(s) left behind by dead runs[/] (cleanup is retried):")
    for lease in leases:
        error = f" — {lease['last_error']}" if lease.get("last_error") else ""
        out.print(f"  • {lease['kind']} {lease['resource']} of {lease['owner']} (pid {lease['pid']}, "
                  f"{lease.get('attempts') or 0} attempt(s)){error}", markup=False, highlight=False)


def local(loaded: LoadedConfig, when, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    from zoneinfo import ZoneInfo

    return when.astimezone(ZoneInfo(loaded.config.agent.timezone)).strftime(fmt) if when else "—"


def versus(measured: float | None, target: float) -> str:
    if measured is None:
        return "—"
    colour = "green" if measured <= target else "red"
    return f"[{colour}]{format_duration(measured)}[/]"


class ProgressView:
    """A rich progress display fed by restore-test phase updates."""

    watching = True

    def __enter__(self):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TimeElapsedColumn(), console=err, transient=True)
        self.progress.__enter__()
        self.task = self.progress.add_task("starting", total=None)
        return self

    def __call__(self, phase: str, done: float | None = None, total: float | None = None) -> None:
        self.progress.update(self.task, description=phase, completed=done or 0, total=total)

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)




def print_compliance(results, actions) -> None:
    """The compliance matrix (failing first, critical before warning), then the open
    corrective actions and since when."""
    from drcheck.verdicts import RULES, format_measure

    order = {"critical": 0, "warning": 1, "info": 2}
    rows = sorted(results, key=lambda r: (r.passed, order.get(r.severity.value, 3), r.rule, r.system or "",
                                          r.subject or ""))
    table = Table("rule", "system", "status", "measured / threshold", "basis", "controls", "finding",
                  title="drcheck compliance", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    for r in rows:
        status = "[green]pass[/]" if r.passed else ("[bold red]FAIL[/]" if r.severity.value == "critical"
                                                    else "[yellow]warn[/]")
        measured = "" if r.measured is None and r.threshold is None else \
            f"{format_measure(r.rule, r.measured)} / {format_measure(r.rule, r.threshold)}"
        basis = "declared" if r.declared else ("measured" if r.evidence else "configured")
        table.add_row(escape(r.rule), escape(r.system or "—"), status, escape(measured), basis,
                      escape(", ".join(RULES[r.rule].controls[:3])), escape(r.message))
    out.print(table)
    if actions:
        out.print(f"[bold]{len(actions)} open corrective action{'s' if len(actions) != 1 else ''}[/]")
        for a in actions:
            out.print(f"  • {a.rule} {a.system or '(plan)'}: {a.message} (open since {a.opened_at:%Y-%m-%d})",
                      markup=False, highlight=False)

