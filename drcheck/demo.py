"""`drcheck demo`: build a small local lab from the configuration and run one full cycle.

The lab is whatever the configuration describes: sample data at every system's source
path, a repository for every probe (each kind builds its own through `lab_repository`),
and four backups over the last three days (planting canaries before each); then every
probe action, a test restore of every test, the status table, the weekly report (e-mailed
through a lab SMTP server when `[reports.email]` is set), the compliance findings, the DR
plan (HTML and PDF) and the metrics.
One system (payroll) stops being backed up after the first snapshot, so the demo shows
how drcheck reports a missed backup.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

from rich.markup import escape

from drcheck.clients import SourceError
from drcheck.config_loader import LoadedConfig
from drcheck.kinds import FileBackupTarget, LabPeer, LabRepository, probe_module
from drcheck.durations import format_duration
from drcheck.results import Status, utcnow

log = logging.getLogger(__name__)

SNAPSHOT_AGES = (timedelta(days=3), timedelta(days=2), timedelta(days=1), timedelta(minutes=50))
STALE_SYSTEMS = {"payroll"}  # backed up only by the first snapshot: a missed backup to find
WORDS = "enrollment attendance grade roster schedule budget invoice lunch bus library staff".split()


def make_sample_data(root: Path, system: str, generation: int, rng: random.Random) -> None:
    """Create or extend a system's sample data: a SQLite database, documents, a blob."""
    (root / "db").mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(root / "db" / f"{system}.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, day INT, item TEXT, amount REAL)")
        db.executemany("INSERT INTO records (day, item, amount) VALUES (?, ?, ?)",
                       [(generation, rng.choice(WORDS), rng.uniform(1, 500)) for _ in range(400)])
    db.close()
    for folder in ("exports", "staff", "shared"):
        directory = root / folder / f"day{generation}"
        directory.mkdir(parents=True, exist_ok=True)
        for n in range(12):
            lines = (" ".join(rng.choices(WORDS, k=12)) for _ in range(rng.randint(20, 200)))
            (directory / f"{folder}-{n:02d}.txt").write_text("\n".join(lines) + "\n")
    (root / "shared" / f"scan-{generation}.bin").write_bytes(rng.randbytes(256 * 1024))


LAB_MARKER = ".drcheck-demo-lab"


def lab_root(loaded: LoadedConfig) -> Path:
    """The only directory the demo may create or delete anything in: var/lab beside the config."""
    return loaded.base_dir / "var" / "lab"


def lab_repositories(loaded: LoadedConfig) -> dict[str, LabRepository]:
    """The demo side of every file-backup probe (its kind's `lab_repository`)."""
    return {name: probe_module(probe.kind).lab_repository(probe) for name, probe in loaded.config.probes.items()
            if hasattr(probe_module(probe.kind), "lab_repository")}


def lab_peers(loaded: LoadedConfig) -> dict[str, LabPeer]:
    """The demo side of every probe whose source is a service (its kind's `lab_peer`);
    SystemExit for a kind that offers neither a lab repository nor a lab peer."""
    peers = {}
    for name, probe in loaded.config.probes.items():
        module = probe_module(probe.kind)
        if hasattr(module, "lab_peer"):
            peers[name] = module.lab_peer(probe, loaded)
        elif not hasattr(module, "lab_repository"):
            raise SystemExit(f"drcheck demo: probes.{name}: the {probe.kind} kind cannot build a demo lab")
    return peers


def check_demo_config(loaded: LoadedConfig) -> Path:
    """Refuse (SystemExit) unless every repository, password file and source path the demo
    would (re)create lies inside the lab directory, and that directory is a demo lab or
    new. `drcheck demo` must never touch real data, whatever config it was pointed at."""
    root = lab_root(loaded)
    outside = []
    for name, lab in {**lab_repositories(loaded), **lab_peers(loaded)}.items():
        try:
            owned = lab.owned_paths()
        except ValueError as exc:
            outside.append(f"probes.{name}: {exc}")
            continue
        probe = loaded.config.probes[name]
        owned += [p for rule in probe.systems for p in rule.paths] if isinstance(probe, FileBackupTarget) else []
        outside += [f"probes.{name}: {p}" for p in owned if root not in Path(p).parents]
    if outside:
        raise SystemExit("drcheck demo builds its lab only under " + str(root) + " and only from the demo "
                         "configuration; refusing because of:\n  " + "\n  ".join(outside))
    if root.exists() and any(root.iterdir()) and not (root / LAB_MARKER).exists():
        raise SystemExit(f"drcheck demo: {root} exists and is not a demo lab; refusing to replace it")
    return root


def build_lab(loaded: LoadedConfig, say=print) -> None:
    """Create sample sources, repositories (every probe's) and dated backups for the demo
    config inside `lab_root` (checked first by check_demo_config): each generation changes
    every system's data once, plants its canaries, then every repository backs it up."""
    from drcheck.engine import open_store, plant_canary

    root = check_demo_config(loaded)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / LAB_MARKER).write_text("built by `drcheck demo`; safe to delete\n")
    rng = random.Random(7)
    now = utcnow()
    cfg = loaded.config
    repos = lab_repositories(loaded)
    for name, repo in repos.items():
        try:
            repo.init()
        except SourceError as exc:
            raise SystemExit(f"demo: cannot create the repository of probes.{name}: {exc}") from None
        say(f"  {cfg.probes[name].kind} repository for {name} ({cfg.probes[name].copy})")
    for name, peer in lab_peers(loaded).items():
        peer.init()
        say(f"  simulated {cfg.probes[name].kind} service for {name}")
    systems = {rule.system: rule.paths for name in repos for rule in cfg.probes[name].systems}
    with open_store(loaded) as store:
        for generation, age in enumerate(SNAPSHOT_AGES):
            taken = now - age
            current = [s for s in sorted(systems) if not (generation and s in STALE_SYSTEMS)]
            for system in current:
                for path in systems[system]:
                    make_sample_data(Path(path), system, generation, rng)
                for test_name, test in cfg.restore_tests.items():
                    if test.system == system and getattr(test, "canary", None):
                        plant_canary(loaded, store, test_name, now=lambda t=taken: t - timedelta(minutes=1))
            for name, repo in repos.items():
                for rule in cfg.probes[name].systems:
                    if rule.system not in current:
                        continue
                    for host in rule.hosts or [rule.system]:  # a system on several servers: each backs up
                        try:
                            repo.backup(list(rule.paths), host, rule.tags, taken)
                        except SourceError as exc:
                            raise SystemExit(f"demo: backup of {rule.system} ({host}) into {name} failed: "
                                             f"{exc}") from None
            say(f"  backups taken {format_duration(age.total_seconds())} ago")


def start_peers(loaded: LoadedConfig, running: contextlib.ExitStack, say=print) -> None:
    """Start every lab peer for the cycle (stopped when `running` closes); SystemExit
    saying why when one cannot start (its program missing, its port taken)."""
    from drcheck.lab_vcsim import VcsimError

    for name, peer in lab_peers(loaded).items():
        try:
            peer.start()
        except (VcsimError, OSError) as exc:
            raise SystemExit(f"drcheck demo: cannot start the simulated service of probes.{name}: {exc}") from None
        running.callback(peer.stop)
        say(f"  probes.{name}: simulated service started (it stops when the demo ends)")


def _mail_report(loaded: LoadedConfig, store, now, unexpected: list[str]):
    """Render the weekly report and e-mail it through the lab's SMTP server; return
    (report, the received message's file or None)."""
    from drcheck.lab_smtp import SmtpLabError, demo_delivery

    try:
        sent, received = demo_delivery(loaded, store, now)
    except SmtpLabError as exc:
        unexpected.append(f"e-mail: the lab SMTP server could not start: {exc}")
        from drcheck.reporting import render_weekly

        return render_weekly(loaded, store, loaded.config.reports.output_dir, now), None
    if received is None:
        unexpected.append(f"e-mail: the weekly report was not delivered: {sent.reason}")
    return sent.report, received


def run_demo(state) -> int:
    """Build the lab and run one cycle; return the exit status for the CLI: 0 when every
    result is what the lab was built to produce (all good but the stale systems)."""
    from drcheck import console
    from drcheck.engine import open_store, probe_actions, run_probe, run_restore_tests
    from drcheck.metrics import write_textfile
    from drcheck import corrective
    from drcheck.plan import render_plan
    from drcheck.rules import RULES, evaluate
    from drcheck.reporting import render_weekly
    from drcheck.kinds import rotation_coverage
    from drcheck.status import system_statuses, vm_statuses

    loaded: LoadedConfig = state.loaded()
    say = console.out.print
    say("[bold]1. Building the demo lab[/]")
    build_lab(loaded, say)
    with contextlib.ExitStack() as running, open_store(loaded) as store:
        start_peers(loaded, running, say)
        unexpected: list[str] = []
        say("[bold]2. Probing repositories[/]")
        for name in loaded.config.probes:
            for action in probe_actions(loaded, name):
                result = run_probe(loaded, store, name, action)
                say(f"  {name} {action}: {console.styled(result.status.value)} {escape(result.reason)}")
                if result.status is Status.ERROR or (result.status is Status.FAILED and
                                                     {f.system for f in result.findings if f.system} - STALE_SYSTEMS):
                    unexpected.append(f"{name} {action}: {result.reason}")
        say("[bold]3. Test restores[/]")
        for name in loaded.config.restore_tests:
            if console.err.is_terminal:
                with console.ProgressView() as view:
                    results = run_restore_tests(loaded, store, name, progress=view)
            else:
                results = run_restore_tests(loaded, store, name)
            for result in results:
                subject = f" {result.details['vm']}" if "vm" in result.details else ""
                say(f"  {name}{escape(subject)}: {console.styled(result.status.value)} "
                    f"(RTO {format_duration(result.rto_seconds)}, RPO {format_duration(result.rpo_seconds)})"
                    + (f" — {escape(result.reason)}" if result.reason else ""))
                if not result.status.good and result.system not in STALE_SYSTEMS:
                    unexpected.append(f"{name}: {result.reason}")
        say("[bold]4. Status[/]")
        now = utcnow()
        console.print_status_table(loaded, system_statuses(loaded, store, now))
        vms = vm_statuses(loaded, store, now)
        if vms:
            console.print_vm_table(loaded, vms)
            console.print_unprotected(vms)
        console.print_rotations(rotation_coverage(loaded, store, now))
        mailed = None
        if loaded.config.reports.email is not None:  # the report goes out by e-mail, as the agent sends it
            report, mailed = _mail_report(loaded, store, now, unexpected)
        else:
            report = render_weekly(loaded, store, loaded.config.reports.output_dir, now)
        plan = render_plan(loaded, store, loaded.config.reports.output_dir, now)
        say("[bold]5. Compliance[/]")
        results = evaluate(loaded, store, now)
        corrective.sync(store, results, now)
        failing = [r for r in results if not r.passed and RULES[r.rule].scope == "compliance"]
        say(f"  {len(failing)} compliance findings, {len(corrective.actions(store))} open corrective actions "
            "(`drcheck compliance` lists them; the plan too), e.g.:")
        for rule in ("R15.facility", "R4.offsite", "R5.immutable", "R12.plan_review"):
            example = next((r for r in failing if r.rule == rule), None)
            if example:
                say(f"  • {rule} {example.system or '(plan)'}: {escape(example.message)}")
        metrics = write_textfile(loaded, store, loaded.config.agent.state_dir / "metrics.prom")
    say(f"\n[bold]Weekly report:[/] {report}")
    if mailed is not None:
        say(f"[bold]Weekly report e-mailed to the lab mailbox:[/] {mailed}")
    say(f"[bold]DR plan:[/] {plan.html}")
    say(f"[bold]DR plan (PDF):[/] {plan.pdf}")
    say(f"[bold]Metrics:[/] {metrics} (a snapshot); `drcheck run` serves them live at "
        f"http://{loaded.config.metrics.listen}/metrics")
    say(f"[bold]Database:[/] {loaded.database_path}")
    say("The payroll failure is on purpose: its backups stopped three days ago, and drcheck "
        "reports the missed RPO exactly as it would in production.")
    if unexpected:
        console.err.print("[red]The demo did not go as built; unexpected results:[/]")
        for line in unexpected:
            console.err.print(f"  {line}", markup=False)
        return 1
    return 0
