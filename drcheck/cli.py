"""The `drcheck` command line.

Exit status: 0 when everything checked is good, 1 when a probe or restore test failed or
errored, the configuration is invalid or the database is unusable, 2 for usage errors, 75
when a probe action or restore test was skipped because another run of it was in progress.
`--json` output is stable.
"""

from __future__ import annotations

import json
import logging
import pickle
import sqlite3
import sys
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from drcheck import __version__
from drcheck.config_loader import ConfigError, LoadedConfig, find_config, load
from drcheck.console import (ProgressView, err, local, out, print_leases_left, print_rotations, print_status_table,
                             print_unprotected, print_vm_table, styled)
from drcheck.durations import format_duration
from drcheck.results import utcnow

_database: Path | None = None  # the database the command opened, named by store fault messages

# exit status of a job refused because another run of it is in progress (EX_TEMPFAIL)
EXIT_SKIPPED = 75


def _exit_for(status) -> int:
    from drcheck.results import Status

    return 0 if status.good else EXIT_SKIPPED if status is Status.SKIPPED else 1


class State:
    def __init__(self, config_path: str | None, config_on_stdin: bool = False):
        self.config_path = config_path
        self._loaded: LoadedConfig | None = None
        if config_on_stdin:
            # A job started by the agent runs the agent's validated configuration, never
            # whatever the file on disk says now (edits apply on SIGHUP, not half-way).
            self._loaded = pickle.load(sys.stdin.buffer)

    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            try:
                self._loaded = load(find_config(self.config_path))
            except ConfigError as exc:
                for message in exc.errors:
                    err.print(message, markup=False, highlight=False)
                err.print(f"[red]{len(exc.errors)} configuration problem(s); nothing was run.[/]")
                sys.exit(1)
        global _database
        _database = self._loaded.database_path
        return self._loaded

    def store(self):
        from drcheck.engine import open_store

        return open_store(self.loaded())


pass_state = click.make_pass_decorator(State)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "-c", "config_path", metavar="PATH", envvar="DRCHECK_CONFIG",
              help="drcheck.toml (default: $DRCHECK_CONFIG, ./drcheck.toml, /etc/drcheck/drcheck.toml)")
@click.option("--verbose", "-v", count=True, help="more log output (-vv for debug)")
@click.option("--config-on-stdin", is_flag=True, hidden=True, help="read the agent's loaded configuration from stdin")
@click.version_option(__version__, prog_name="drcheck")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, config_on_stdin: bool) -> None:
    """drcheck proves your backups restore: it probes backup repositories, test-restores
    into a sandbox, verifies what came back and measures RTO and RPO."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = State(config_path, config_on_stdin)


@cli.group()
def config() -> None:
    """Check and describe the configuration."""


@config.command("validate")
@pass_state
def config_validate(state: State) -> None:
    """Validate drcheck.toml and the runbooks; print every problem with file and key.

    Beyond the schema and cross-references it catches what would surely fail when used:
    unreadable secret files, restore targets overlapping sources, repositories, the state
    or reports directory or a system directory, expected paths escaping the source,
    dependency cycles, RTO (+ WRT) above MTD. Doubtful settings are printed as warnings."""
    from drcheck.validation import surely_failing, warnings

    loaded = state.loaded()
    cfg = loaded.config
    problems = surely_failing(loaded)
    for message in problems:
        err.print(message, markup=False, highlight=False)
    if problems:
        err.print(f"[red]{len(problems)} configuration problem(s)[/]")
        sys.exit(1)
    for message in warnings(loaded):
        err.print(f"warning: {message}", markup=False, highlight=False, style="yellow")
    out.print(f"[green]{escape(str(loaded.path))}: valid[/] — {len(loaded.runbooks)} system(s), "
              f"{len(cfg.probes)} probe(s), {len(cfg.restore_tests)} restore test(s)")


@config.command("example")
def config_example() -> None:
    """Print the embedded default drcheck.toml (the demo lab's), a starting point for yours."""
    from importlib import resources

    click.echo(resources.files("drcheck").joinpath("default.toml").read_text(), nl=False)


@config.command("schema")
@click.option("--runbook", is_flag=True, help="the schema of runbooks/*.toml instead")
def config_schema(runbook: bool) -> None:
    """Print the JSON schema of drcheck.toml (for editors such as VS Code + Even Better TOML)."""
    from drcheck.schema import schema_json

    click.echo(schema_json(runbook), nl=False)


@cli.command()
@click.argument("name")
@click.argument("action", required=False)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--timeout", type=float, metavar="SECONDS", help="give up (and record an error) after this long")
@pass_state
def probe(state: State, name: str, action: str | None, as_json: bool, timeout: float | None) -> None:
    """Run one ACTION of probe NAME once (default: its kind's first, which lists restore
    points). Each kind declares its actions (restic: snapshots, check); an unknown ACTION
    is refused with the list."""
    from drcheck.engine import arm_timeout, probe_actions, raise_on_sigterm, run_probe

    loaded = state.loaded()
    _require(name, loaded.config.probes, "probe")
    actions = probe_actions(loaded, name)
    if action is not None:
        _require(action, dict.fromkeys(actions), f"action of probe {name}")
    raise_on_sigterm()
    arm_timeout(timeout)
    with state.store() as store, err.status(f"probing {name}…"):
        result = run_probe(loaded, store, name, action)
        judged = result.lists_points or any(a.kind == "vm" for a in result.assets)
        verdicts = _probe_verdicts(loaded, store, name) if judged and result.status.good else []
    if as_json:
        click.echo(json.dumps({**_probe_json(result), "rules": [v.to_json() for v in verdicts]}, indent=2))
    else:
        table = Table("system", "copy", "newest restore point", "age", "points", title=f"{name} ({result.action})")
        for p in result.newest:
            age = (result.started_at - p.point_time).total_seconds()
            table.add_row(p.system, p.copy, local(loaded, p.point_time), format_duration(age),
                          "" if p.count is None else str(p.count))
        if result.newest:
            out.print(table)
        for f in result.findings:
            out.print(f"[{'red' if f.severity.value == 'critical' else 'yellow'}]{f.severity.value}[/]: {escape(f.message)}")
        for v in verdicts:
            if not v.passed:
                out.print(f"[red]{v.severity.value}[/]: {escape(v.message)} [dim]{v.rule}[/]")
        out.print(f"{name}: {styled(result.status.value)} in {result.duration_seconds:.1f}s"
                  + (f" — {escape(result.reason)}" if result.reason else ""))
    code = _exit_for(result.status)
    sys.exit(1 if code == 0 and any(not v.passed for v in verdicts) else code)


def _probe_verdicts(loaded: LoadedConfig, store, name: str) -> list:
    """The rule results about what probe `name` just read (the rules judge; the probe only
    reports facts): each covered system's backup age in the probe's copy, or whether each
    VM of its inventory is protected."""
    from drcheck.rules import evaluate

    return [r for r in evaluate(loaded, store, utcnow())
            if r.probe == name and r.rule in ("R2.backup_age", "R3.vm_protected")]


@cli.command("restore-test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--timeout", type=float, metavar="SECONDS", help="give up (and record an error) after this long")
@pass_state
def restore_test(state: State, name: str, as_json: bool, timeout: float | None) -> None:
    """Run restore test NAME once: restore, verify, measure, clean up."""
    from drcheck.engine import arm_timeout, raise_on_sigterm, run_restore_tests, worst

    loaded = state.loaded()
    _require(name, loaded.config.restore_tests, "restore test")
    raise_on_sigterm()
    arm_timeout(timeout)
    with state.store() as store:
        if as_json or not err.is_terminal:
            results = run_restore_tests(loaded, store, name)
        else:
            with ProgressView() as view:
                results = run_restore_tests(loaded, store, name, progress=view)
    if as_json:
        payload = [_restore_json(r) for r in results]
        click.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for result in results:
            _print_restore(loaded, result)
    sys.exit(_exit_for(worst(results).status))


@cli.group()
def canary() -> None:
    """Canary files planted in live sources."""


@canary.command("plant")
@click.argument("tests", nargs=-1)
@pass_state
def canary_plant(state: State, tests: tuple[str, ...]) -> None:
    """Write fresh canaries for TESTS (default: every restore test with a canary)."""
    from drcheck.canary import CanaryRefused
    from drcheck.engine import plant_canary

    loaded = state.loaded()
    names = tests or tuple(n for n, t in loaded.config.restore_tests.items() if t.canary)
    with state.store() as store:
        for name in names:
            _require(name, loaded.config.restore_tests, "restore test")
            try:
                written = plant_canary(loaded, store, name)
            except CanaryRefused as exc:
                click.echo(f"{name}: {exc}", err=True)
                sys.exit(1)
            out.print(f"{name}: canary written to {escape(str(written))}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@pass_state
def status(state: State, as_json: bool) -> None:
    """Show each system: tier, targets, newest restore points, last test and verdict."""
    from drcheck.kinds import rotation_coverage
    from drcheck.rules import Facts, evaluate, failing
    from drcheck.status import system_statuses, vm_statuses
    from drcheck.verdicts import operational

    loaded = state.loaded()
    now = utcnow()
    with state.store() as store:
        facts = Facts.read(loaded, store)
        results = evaluate(loaded, store, now, facts)
        statuses = system_statuses(loaded, store, now, results, facts)
        vms = vm_statuses(loaded, store, now, facts)
        rotations = rotation_coverage(loaded, store, now)
        left = store.orphaned_leases()  # resources of dead runs the reaper could not remove yet
    # a problem of no system (a VM no runbook claims) fails the status as much as one of a system
    unclaimed = [r for r in failing(operational(results)) if r.system is None]
    if as_json:
        click.echo(json.dumps({"generated_at": now.isoformat(), "systems": [s.to_json() for s in statuses],
                               "unprotected_vms": [vm.to_json() for vm in vms if not vm.protected],
                               "failing_without_system": [r.to_json() for r in unclaimed],
                               "rotations": [c.as_dict() for c in rotations],
                               "leases_left_behind": [_lease_json(lease) for lease in left]}, indent=2))
    else:
        print_status_table(loaded, statuses)
        print_unprotected(vms)
        print_rotations(rotations)
        print_leases_left(left)
    sys.exit(0 if all(s.ok for s in statuses) and not unclaimed and not left else 1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.option("--unprotected", is_flag=True, help="only VMs with no restore point within their RPO")
@pass_state
def assets(state: State, as_json: bool, unprotected: bool) -> None:
    """List inventory VMs: folder, power, system, newest restore point, last proven
    restorable, protection. Exit 1 when any VM is unprotected."""
    from drcheck.status import vm_statuses

    loaded = state.loaded()
    with state.store() as store:
        vms = vm_statuses(loaded, store, utcnow())
    shown = [vm for vm in vms if not vm.protected] if unprotected else vms
    if as_json:
        click.echo(json.dumps([vm.to_json() for vm in shown], indent=2))
    elif not vms:
        out.print("no inventory yet: configure a vmware probe and run it (drcheck probe NAME)")
    else:
        print_vm_table(loaded, shown, "unprotected VMs" if unprotected else "inventory VMs")
        print_unprotected(vms)
    sys.exit(0 if all(vm.protected for vm in vms) else 1)


def _lease_json(lease: dict) -> dict:
    keys = ("id", "kind", "resource", "owner", "pid", "host", "created_at", "attempts", "last_error")
    return {k: lease.get(k) for k in keys}


@cli.group("store")
def store_group() -> None:
    """Housekeeping of the evidence store: leftovers of dead runs, old probe history."""


@store_group.command("reap")
@click.option("--json", "as_json", is_flag=True, help="print the leases released and those left as JSON")
@pass_state
def store_reap(state: State, as_json: bool) -> None:
    """Clean up now what dead runs left behind (sandboxes and every other leased resource,
    also of kinds no longer configured); the agent does this at start and on
    `store.reap_schedule`. Exit 1 when something could not be cleaned yet."""
    from drcheck.engine import reap_orphans

    loaded = state.loaded()
    with state.store() as store:
        reaped = reap_orphans(loaded, store)
        left = store.orphaned_leases()
    if as_json:
        click.echo(json.dumps({"released": [_lease_json(lease) for lease in reaped],
                               "left_behind": [_lease_json(lease) for lease in left]}, indent=2))
    else:
        for lease in reaped:
            out.print(f"removed {lease['kind']} {lease['resource']} (left by {lease['owner']}, pid {lease['pid']})",
                      markup=False, highlight=False)
        print_leases_left(left)
        if not reaped and not left:
            out.print("nothing left behind")
    sys.exit(1 if left else 0)


@store_group.command("compact")
@click.option("--keep-days", type=click.IntRange(min=7), metavar="DAYS",
              help="compact only probe history older than this (default: store.retention.keep_days)")
@click.option("--json", "as_json", is_flag=True, help="print what was removed as JSON")
@pass_state
def store_compact(state: State, keep_days: int | None, as_json: bool) -> None:
    """Remove probe history that adds no evidence (the middle of long streaks of identical
    probe runs), older than the retention. Restore tests, checks, restore-point and finding
    changes are always kept; each compaction is itself recorded."""
    loaded = state.loaded()
    days = keep_days or loaded.config.store.retention.keep_days
    with state.store() as store:
        summary = store.compact(days)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        removed = ", ".join(f"{n} {table}" for table, n in summary["removed"].items() if n) or "nothing"
        out.print(f"compacted probe history before {summary['cutoff']}: removed {removed}", markup=False)


@cli.group()
def report() -> None:
    """Render reports from the store."""


@report.command("weekly")
@click.option("--output", "-o", type=click.Path(file_okay=False, path_type=Path),
              help="directory to write into (default: reports.output_dir)")
@pass_state
def report_weekly(state: State, output: Path | None) -> None:
    """Render the weekly restore report (HTML) for the 7 days up to now."""
    from drcheck.reporting import render_weekly

    loaded = state.loaded()
    with state.store() as store:
        path = render_weekly(loaded, store, output or loaded.config.reports.output_dir, utcnow())
    out.print(f"weekly report: {escape(str(path))}")


@report.command("plan")
@click.option("--output", "-o", type=click.Path(path_type=Path),
              help="directory to write into (default: reports.output_dir)")
@click.option("--no-pdf", is_flag=True, help="write the HTML only")
@click.option("--json", "as_json", is_flag=True, help='print {"html": PATH, "pdf": PATH or null}')
@pass_state
def report_plan(state: State, output: Path | None, no_pdf: bool, as_json: bool) -> None:
    """Render the DR / IT contingency plan (NIST SP 800-34 structure) from the measured
    evidence: HTML and PDF, never overwriting an earlier plan. A directory that cannot be
    written, or a PDF that cannot be made, is one line on stderr and exit status 1."""
    from drcheck.pdf import PdfError
    from drcheck.plan import render_plan

    loaded = state.loaded()
    directory = output or loaded.config.reports.output_dir
    with state.store() as store:
        try:
            files = render_plan(loaded, store, directory, utcnow(), pdf=not no_pdf)
        except PdfError as exc:
            err.print(f"drcheck report plan: {exc}", markup=False)
            sys.exit(1)
        except OSError as exc:
            err.print(f"drcheck report plan: cannot write the plan into {directory}: "
                      f"{exc.strerror or exc}", markup=False)
            sys.exit(1)
    if as_json:
        click.echo(json.dumps({"html": str(files.html), "pdf": str(files.pdf) if files.pdf else None}))
        return
    out.print(f"DR plan: {escape(str(files.html))}")
    if files.pdf:
        out.print(f"DR plan (PDF): {escape(str(files.pdf))}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
@click.option("--all", "show_all", is_flag=True, help="every rule of every scope, not only the compliance rules")
@pass_state
def compliance(state: State, as_json: bool, show_all: bool) -> None:
    """Show the compliance matrix (rule, system, measured vs threshold, declared or proven,
    controls) and the open corrective actions; exit 1 while a critical rule fails."""
    from drcheck import corrective
    from drcheck.rules import evaluate
    from drcheck.verdicts import RULES

    loaded = state.loaded()
    now = utcnow()
    with state.store() as store:
        results = evaluate(loaded, store, now)
        corrective.sync(store, results, now)
        actions = corrective.actions(store)
    shown = [r for r in results if show_all or RULES[r.rule].scope == "compliance"]
    if as_json:
        click.echo(json.dumps({"generated_at": now.isoformat(), "results": [r.to_json() for r in shown],
                               "corrective_actions": [_action_json(a) for a in actions]}, indent=2))
    else:
        from drcheck.console import print_compliance

        print_compliance(shown, actions)
    sys.exit(1 if any(not r.passed and r.severity.value == "critical" for r in shown) else 0)


def _action_json(action) -> dict:
    return {"id": action.id, "rule": action.rule, "system": action.system, "subject": action.subject,
            "severity": action.severity, "message": action.message, "opened_at": action.opened_at.isoformat(),
            "closed_at": action.closed_at.isoformat() if action.closed_at else None}


@report.command("send")
@click.option("--to", "to", multiple=True, metavar="ADDR",
              help="send to this address instead of reports.email.to (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the delivery as JSON")
@pass_state
def report_send(state: State, to: tuple[str, ...], as_json: bool) -> None:
    """Render the weekly report and e-mail it now ([reports.email]). A failed delivery is
    recorded and stays queued: the agent retries it (exit 1)."""
    from drcheck.delivery import NotConfigured, send_now

    loaded = state.loaded()
    try:
        with state.store() as store:
            sent = send_now(loaded, store, utcnow(), recipients=list(to) or None)
    except NotConfigured as exc:
        err.print(str(exc), markup=False, highlight=False, style="red")
        sys.exit(1)
    _print_delivery(sent, as_json)
    sys.exit(0 if sent.status == "sent" else 1)


@report.command("deliver")
@click.option("--json", "as_json", is_flag=True, help="print the deliveries attempted as JSON")
@pass_state
def report_deliver(state: State, as_json: bool) -> None:
    """Queue the weekly report when reports.email.schedule says it is due, and send every
    pending delivery whose retry time has come (the agent's report:deliver job). Exit 1 if
    an attempt failed (it stays queued), 75 if another process is delivering."""
    from drcheck import locks
    from drcheck.delivery import NotConfigured, run_due

    loaded = state.loaded()
    try:
        with state.store() as store:
            attempted = run_due(loaded, store, utcnow())
    except NotConfigured as exc:
        err.print(str(exc), markup=False, highlight=False, style="red")
        sys.exit(1)
    except locks.Busy as busy:
        err.print(f"skipped: {busy}", markup=False, highlight=False, style="yellow")
        sys.exit(EXIT_SKIPPED)
    if as_json:
        click.echo(json.dumps([d.to_json() for d in attempted], indent=2))
    else:
        for item in attempted:
            _print_delivery(item, False)
        if not attempted:
            out.print("nothing to deliver")
    sys.exit(0 if all(d.status == "sent" for d in attempted) else 1)


def _print_delivery(item, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(item.to_json(), indent=2))
        return
    to = ", ".join(item.recipients)
    if item.status == "sent":
        out.print(f"sent {item.report} to {to}" + (f" with {item.plan.name}" if item.plan else "")
                  + (f" ({item.reason})" if item.reason else ""), markup=False, highlight=False)
    elif item.status == "queued":
        out.print(f"queued {item.report} for {to}: another process is delivering; it sends it",
                  markup=False, highlight=False)
    else:
        err.print(f"e-mail of {item.report} to {to} failed (attempt {item.attempts}): {item.reason}; "
                  f"queued, the agent retries at {item.next_attempt_at:%Y-%m-%d %H:%M} UTC",
                  markup=False, highlight=False)


@cli.command()
@pass_state
def run(state: State) -> None:
    """Run the agent: scheduled probes and tests, and the metrics endpoint (SIGHUP
    reloads the configuration, SIGTERM stops cleanly)."""
    from drcheck.scheduler import AgentError, Daemon

    state.loaded()
    try:
        sys.exit(Daemon(find_config(state.config_path)).serve())
    except AgentError as exc:
        err.print(f"drcheck: {exc}", markup=False, style="red")
        sys.exit(1)


@cli.group()
def evidence() -> None:
    """Tamper-evident evidence: verify the hash chain sealing every stored result, export
    a bundle an auditor keeps."""


def _anchor(path: Path | None) -> tuple[int, str] | None:
    from drcheck.evidence_bundle import read_head

    if path is None:
        return None
    head = read_head(path)
    return int(head["count"]), str(head["digest"])


@evidence.command("verify")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path),
              help="verify this exported bundle on its own, without the database")
@click.option("--against", type=click.Path(path_type=Path), metavar="HEAD",
              help="also require the chain to still hold this earlier head (a bundle's HEAD file or directory)")
@click.option("--json", "as_json", is_flag=True, help="print the verification as JSON")
@pass_state
def evidence_verify(state: State, bundle: Path | None, against: Path | None, as_json: bool) -> None:
    """Walk the evidence chain, recompute every row's digest and every link; exit 1 naming
    the first row changed, deleted, reordered, inserted unsealed, or the broken link."""
    from drcheck.evidence_bundle import BundleError, verify_bundle
    from drcheck.evidence_verify import verify

    try:
        anchor = _anchor(against)
        if bundle is not None:
            result = verify_bundle(bundle, anchor)
        else:
            with state.store() as store:
                result = verify(store, anchor)
    except BundleError as exc:
        err.print(f"drcheck: {exc}", markup=False)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    elif result.ok:
        removed = f", {result.removed} removed by compaction as recorded" if result.removed else ""
        out.print(f"evidence chain intact: {result.checked} rows sealed{removed}; head {result.head.digest}",
                  markup=False, highlight=False)
    else:
        err.print(f"evidence chain broken: {result.first_broken.line()}"
                  + (f" ({result.problems} problems in all)" if result.problems > 1 else ""),
                  markup=False, highlight=False)
    sys.exit(0 if result.ok else 1)


@evidence.command("export")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="a new (or empty) directory to write the bundle into")
@click.option("--json", "as_json", is_flag=True, help="print the bundle's HEAD as JSON")
@pass_state
def evidence_export(state: State, output: Path, as_json: bool) -> None:
    """Write the evidence bundle: per table CSV (for people) and JSON Lines (for
    verification), the chain, and HEAD (count, head digest, generation time, agent)."""
    from drcheck.evidence_bundle import BundleError, export, read_head

    try:
        with state.store() as store:
            path = export(store, output)
    except BundleError as exc:
        err.print(f"drcheck: {exc}", markup=False)
        sys.exit(1)
    head = read_head(path)
    if as_json:
        click.echo(json.dumps({"bundle": str(path), **head}, indent=2))
    else:
        out.print(f"evidence bundle: {path} ({head['count']} rows sealed, head {head['digest']})",
                  markup=False, highlight=False)


@cli.command()
@pass_state
def demo(state: State) -> None:
    """Build the demo lab (var/lab beside the embedded drcheck.toml) and run one full
    verification cycle on it. Refuses any configuration whose data lies elsewhere."""
    from drcheck.demo import run_demo

    sys.exit(run_demo(state))


def _require(name: str, known: dict, what: str) -> None:
    if name not in known:
        choices = ", ".join(sorted(known)) or "none configured"
        err.print(f"unknown {what} {name!r} (configured: {choices})", markup=False, style="red")
        sys.exit(1)


def _probe_json(result) -> dict:
    return {
        "probe": result.probe, "action": result.action, "status": result.status.value, "reason": result.reason,
        "copy": result.copy, "started_at": result.started_at.isoformat(),
        "duration_seconds": round(result.duration_seconds, 3),
        "restore_points": [{"system": p.system, "copy": p.copy, "point_time": p.point_time.isoformat(),
                            "point_id": p.point_id, "count": p.count}
                           for p in result.newest],
        "findings": [{"severity": f.severity.value, "code": f.code, "system": f.system, "message": f.message}
                     for f in result.findings],
    }


def _restore_json(result) -> dict:
    keys = ("test", "kind", "system", "probe", "copy", "reason", "point_id", "restore_seconds", "verify_seconds",
            "rto_seconds", "rpo_seconds", "rpo_source", "rto_target_seconds", "rpo_target_seconds",
            "files_restored", "bytes_restored")
    data = {k: getattr(result, k) for k in keys}
    data.update(status=result.status.value, started_at=result.started_at.isoformat(),
                point_time=result.point_time.isoformat() if result.point_time else None,
                checks=[{"name": c.name, "status": c.status.value, "evidence": c.evidence,
                         "duration_seconds": round(c.duration_seconds, 3)} for c in result.checks],
                details=result.details)
    return data


def _print_restore(loaded: LoadedConfig, result) -> None:
    table = Table("check", "result", "evidence", "time", title=f"restore test {result.test} ({result.system})")
    for c in result.checks:
        table.add_row(escape(c.name), styled(c.status.value), escape(c.evidence), f"{c.duration_seconds:.2f}s")
    if result.checks:
        out.print(table)
    if result.point_time:
        size = f": {result.files_restored} files, {(result.bytes_restored or 0) / 1e6:.1f} MB" \
            if result.files_restored is not None else ""
        out.print(f"restore point {result.point_id[:8] if result.point_id else ''} of "
                  f"{local(loaded, result.point_time)}{size}", markup=False)
    details = result.details
    if details.get("restore"):  # what a kind restored, in words (a VM: which, from what, as what)
        made = f" as {details['sandbox_vm']}" if details.get("sandbox_vm") else ""
        ip = f", guest IP {details['guest_ip']}" if details.get("guest_ip") else ""
        out.print(f"restored {details['restore']}{made}{ip}", markup=False, highlight=False)
    if isinstance(details.get("phases"), dict):  # name -> [start, end] seconds from the test's start
        phases = sorted(details["phases"].items(), key=lambda item: item[1][0])
        out.print("phases: " + ", ".join(f"{name} {format_duration(end - start)}" for name, (start, end) in phases),
                  markup=False, highlight=False)
    out.print(f"restore {format_duration(result.restore_seconds)}, verify {format_duration(result.verify_seconds)}; "
              f"RTO {format_duration(result.rto_seconds)} (target {format_duration(result.rto_target_seconds)}), "
              f"RPO {format_duration(result.rpo_seconds)} via {result.rpo_source or '—'} "
              f"(target {format_duration(result.rpo_target_seconds)})")
    out.print(f"{result.test}: {styled(result.status.value)}" + (f" — {escape(result.reason)}" if result.reason else ""))


def main() -> None:
    from drcheck.engine import Interrupted
    from drcheck.storefaults import StoreUnavailable, describe

    try:
        cli(prog_name="drcheck")
    except StoreUnavailable as exc:
        err.print(f"drcheck: {exc.line()}", markup=False)
        sys.exit(1)
    except sqlite3.Error as exc:  # raised after the database opened: damaged pages, disk full…
        line = describe(_database, exc).line() if _database else f"database error: {exc}"
        err.print(f"drcheck: {line}", markup=False)
        sys.exit(1)
    except OSError as exc:  # an unwritable state_dir or output directory, a full disk
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"drcheck: {where}{exc.strerror or exc}", markup=False)
        sys.exit(1)
    except Interrupted as exc:
        err.print(f"{exc}; the result was recorded and the sandbox removed", markup=False, style="yellow")
        sys.exit(124 if "timed out" in str(exc) else 143)
