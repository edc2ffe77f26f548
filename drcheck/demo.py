"""`drcheck demo`: build a small local lab from the configuration and run one full cycle.

The lab is whatever the configuration describes: for each local restic repository it
creates sample data at every system's source path, a repository, and four snapshots over
the last three days (planting canaries before each), then probes, checks, test-restores
every system, prints the status table, renders the weekly report and writes the metrics.
One system (payroll) stops being backed up after the first snapshot, so the demo shows
how drcheck reports a missed backup.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

from rich.markup import escape

from drcheck.clients import process
from drcheck.config_loader import LoadedConfig
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


def check_demo_config(loaded: LoadedConfig) -> Path:
    """Refuse (SystemExit) unless every repository, password file and source path the demo
    would (re)create lies inside the lab directory, and that directory is a demo lab or
    new. `drcheck demo` must never touch real data, whatever config it was pointed at."""
    root = lab_root(loaded)
    outside = []
    for name, probe in loaded.config.probes.items():
        owned = [Path(probe.repository)] if ":" not in probe.repository else []
        owned += [probe.password.file] if probe.password.file else []
        owned += [p for rule in probe.systems for p in rule.paths]
        outside += [f"probes.{name}: {p}" for p in owned if root not in Path(p).parents]
        if ":" in probe.repository or probe.password.file is None:
            outside.append(f"probes.{name}: not a local restic repository with a password file")
    if outside:
        raise SystemExit("drcheck demo builds its lab only under " + str(root) + " and only from the demo "
                         "configuration; refusing because of:\n  " + "\n  ".join(outside))
    if root.exists() and any(root.iterdir()) and not (root / LAB_MARKER).exists():
        raise SystemExit(f"drcheck demo: {root} exists and is not a demo lab; refusing to replace it")
    return root


def build_lab(loaded: LoadedConfig, say=print) -> None:
    """Create sample sources, restic repositories and dated snapshots for the demo config
    inside `lab_root` (checked first by check_demo_config)."""
    from drcheck.engine import open_store, plant_canary

    root = check_demo_config(loaded)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / LAB_MARKER).write_text("built by `drcheck demo`; safe to delete\n")
    rng = random.Random(7)
    now = utcnow()
    with open_store(loaded) as store:
        for probe_name, probe in loaded.config.probes.items():
            repo = Path(probe.repository)
            password_file = probe.password.file
            password_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(24) + "\n")
            env = {"RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD_FILE": str(password_file)}
            _restic(probe.restic_command, ["init"], env)
            say(f"  restic repository {repo}")
            for generation, age in enumerate(SNAPSHOT_AGES):
                taken = now - age
                for rule in probe.systems:
                    if generation and rule.system in STALE_SYSTEMS:
                        continue
                    for path in rule.paths:
                        make_sample_data(Path(path), rule.system, generation, rng)
                    for test_name, test in loaded.config.restore_tests.items():
                        if test.system == rule.system and test.probe == probe_name and test.canary:
                            plant_canary(loaded, store, test_name, now=lambda t=taken: t - timedelta(minutes=1))
                    args = ["backup", "--quiet", "--time", taken.strftime("%Y-%m-%d %H:%M:%S"),
                            "--host", (rule.hosts or [rule.system])[0], *[str(p) for p in rule.paths]]
                    for tag in rule.tags:
                        args += ["--tag", tag]
                    _restic(probe.restic_command, args, env)
                say(f"  snapshot taken {format_duration(age.total_seconds())} ago")


def _restic(command: str, args: list[str], env: dict[str, str]) -> None:
    # restic --time takes local wall-clock time; run it in UTC so our UTC stamps are exact.
    done = process.run([command, *args], timeout=600, env={**env, "TZ": "UTC"})
    if done.returncode != 0:
        raise SystemExit(f"demo: restic {args[0]} failed: {done.stderr.strip()[-400:]}")


def run_demo(state) -> int:
    """Build the lab and run one cycle; return the exit status for the CLI: 0 when every
    result is what the lab was built to produce (all good but the stale systems)."""
    from drcheck import cli
    from drcheck.engine import open_store, run_probe, run_restore_test
    from drcheck.metrics import write_textfile
    from drcheck.reporting import render_weekly
    from drcheck.status import system_statuses

    loaded: LoadedConfig = state.loaded()
    say = cli.out.print
    say("[bold]1. Building the demo lab[/]")
    build_lab(loaded, say)
    with open_store(loaded) as store:
        unexpected: list[str] = []
        say("[bold]2. Probing repositories[/]")
        for name in loaded.config.probes:
            for action in ("snapshots", "check"):
                result = run_probe(loaded, store, name, action)
                say(f"  {name} {action}: {cli.styled(result.status.value)} {escape(result.reason)}")
                if result.status is Status.ERROR or (result.status is Status.FAILED and
                                                     {f.system for f in result.findings if f.system} - STALE_SYSTEMS):
                    unexpected.append(f"{name} {action}: {result.reason}")
        say("[bold]3. Test restores[/]")
        for name in loaded.config.restore_tests:
            if cli.err.is_terminal:
                with cli._ProgressView() as view:
                    result = run_restore_test(loaded, store, name, progress=view)
            else:
                result = run_restore_test(loaded, store, name)
            say(f"  {name}: {cli.styled(result.status.value)} "
                f"(RTO {cli.format_duration(result.rto_seconds)}, RPO {cli.format_duration(result.rpo_seconds)})"
                + (f" — {escape(result.reason)}" if result.reason else ""))
            if not result.status.good and result.system not in STALE_SYSTEMS:
                unexpected.append(f"{name}: {result.reason}")
        say("[bold]4. Status[/]")
        now = utcnow()
        cli.print_status_table(loaded, system_statuses(loaded, store, now))
        report = render_weekly(loaded, store, loaded.config.reports.output_dir, now)
        metrics = write_textfile(loaded, store, loaded.config.agent.state_dir / "metrics.prom")
    say(f"\n[bold]Weekly report:[/] {report}")
    say(f"[bold]Metrics:[/] {metrics} (a snapshot); `drcheck run` serves them live at "
        f"http://{loaded.config.metrics.listen}/metrics")
    say(f"[bold]Database:[/] {loaded.database_path}")
    say("The payroll failure is on purpose: its backups stopped three days ago, and drcheck "
        "reports the missed RPO exactly as it would in production.")
    if unexpected:
        cli.err.print("[red]The demo did not go as built; unexpected results:[/]")
        for line in unexpected:
            cli.err.print(f"  {line}", markup=False)
        return 1
    return 0
