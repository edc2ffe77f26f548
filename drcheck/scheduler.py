"""`drcheck run`: the agent. Schedules probes, repository checks, canary plantings, restore
tests and the weekly report from the configuration (APScheduler 3.x), and serves metrics.

Each job runs as a child `drcheck` process in its own process group, so a job that hangs
past its timeout is killed (restic and all) and recorded as an error while the agent keeps
going; a child that crashes cannot take the scheduler with it. SIGHUP reloads the
configuration (an invalid one is reported and the old one kept); SIGTERM stops cleanly:
no new jobs, running children are asked to stop (they clean up their sandboxes), and the
agent exits 0.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from drcheck.clients.process import kill_group
from drcheck.config import Schedule
from drcheck.config_loader import ConfigError, LoadedConfig, load
from drcheck.engine import open_store, reap_orphans
from drcheck.results import ProbeResult, RestoreTestResult, Status, utcnow

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30  # how long a child gets to clean up after SIGTERM


class AgentError(RuntimeError):
    """The agent cannot start (e.g. its metrics address is taken); the message says why."""


@dataclass(frozen=True)
class JobSpec:
    """One scheduled job: `args` for the child `drcheck` command line."""

    id: str
    args: tuple[str, ...]
    schedule: Schedule
    timeout: float


def job_specs(loaded: LoadedConfig) -> list[JobSpec]:
    """Return every scheduled job the configuration describes."""
    cfg = loaded.config
    default = cfg.agent.job_timeout.total_seconds()
    specs: list[JobSpec] = []
    for name, probe in cfg.probes.items():
        timeout = min(default, probe.timeout.total_seconds() * 3)
        if probe.schedule:
            specs.append(JobSpec(f"probe:{name}", ("probe", name), probe.schedule, timeout))
        if probe.check.schedule:
            specs.append(JobSpec(f"check:{name}", ("probe", name, "--check"), probe.check.schedule, default))
    for name, test in cfg.restore_tests.items():
        timeout = (test.timeout or cfg.agent.job_timeout).total_seconds()
        if test.schedule:
            specs.append(JobSpec(f"restore:{name}", ("restore-test", name), test.schedule, timeout))
        if test.canary and test.canary.plant_schedule:
            specs.append(JobSpec(f"canary:{name}", ("canary", "plant", name), test.canary.plant_schedule, 120))
    if cfg.reports.weekly_schedule:
        specs.append(JobSpec("report:weekly", ("report", "weekly"), cfg.reports.weekly_schedule, default))
    return specs


def trigger(schedule: Schedule, timezone: str):
    """Return the APScheduler trigger for a Schedule."""
    jitter = int(schedule.jitter.total_seconds()) if schedule.jitter else None
    if schedule.cron:
        minute, hour, day, month, day_of_week = schedule.cron.split()
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                           timezone=timezone, jitter=jitter)
    return IntervalTrigger(seconds=schedule.interval.total_seconds(), timezone=timezone, jitter=jitter)


class Daemon:
    """The long-running agent for the configuration at `config_path`."""

    def __init__(self, config_path: Path):
        self.config_path = Path(config_path)
        self.loaded: LoadedConfig = load(self.config_path)
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.children: dict[str, subprocess.Popen] = {}
        self.children_lock = threading.Lock()
        self.scheduler: BackgroundScheduler | None = None
        self.metrics_server = None

    # -- lifecycle ----------------------------------------------------------------------

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit status."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        with open_store(self.loaded) as store:
            for lease in reap_orphans(self.loaded, store):
                log.warning("reaped leftover sandbox %s of %s", lease["path"], lease["test"])
        self._start_metrics()
        cfg = self.loaded.config
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(cfg.agent.max_parallel_jobs)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(cfg.agent.misfire_grace.total_seconds())},
            timezone=cfg.agent.timezone,
        )
        self._schedule_all()
        self.scheduler.start()
        log.info("drcheck agent %s started with %d job(s)", cfg.agent.name, len(self.scheduler.get_jobs()))
        while not self.stopping.wait(0.5):
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
        self._shutdown()
        return 0

    def reload(self) -> None:
        """Re-read the configuration; keep the current one if the new one is invalid."""
        try:
            loaded = load(self.config_path)
        except ConfigError as exc:
            for message in exc.errors:
                log.error("reload refused: %s", message)
            log.error("configuration not reloaded (%d problem(s)); still running the previous one", len(exc.errors))
            return
        if loaded.config.metrics != self.loaded.config.metrics:
            log.warning("metrics settings changed; they take effect at the next restart")
        self.loaded = loaded
        self.scheduler.remove_all_jobs()
        self._schedule_all()
        log.info("configuration reloaded: %d job(s)", len(self.scheduler.get_jobs()))

    def _schedule_all(self) -> None:
        zone = self.loaded.config.agent.timezone
        for spec in job_specs(self.loaded):
            self.scheduler.add_job(self._run_job, trigger(spec.schedule, zone), args=[spec],
                                   id=spec.id, name=spec.id, replace_existing=True,
                                   next_run_time=utcnow() if spec.schedule.interval else None)

    def _start_metrics(self) -> None:
        metrics = self.loaded.config.metrics
        if not metrics.enabled:
            return
        from prometheus_client import start_http_server

        from drcheck.metrics import registry_for

        host, port = metrics.listen.rsplit(":", 1)
        try:
            self.metrics_server, _ = start_http_server(int(port), addr=host or "127.0.0.1",
                                                       registry=registry_for(lambda: self.loaded))
        except OSError as exc:
            raise AgentError(f"cannot serve metrics on {metrics.listen} (metrics.listen): {exc.strerror}") from None
        log.info("metrics at http://%s/metrics", metrics.listen)

    def _shutdown(self) -> None:
        log.info("stopping: no new jobs; asking %d running job(s) to stop", len(self.children))
        self.scheduler.pause()
        with self.children_lock:
            running = list(self.children.values())
        for child in running:
            kill_group(child.pid, signal.SIGTERM)
        for child in running:
            try:
                child.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                kill_group(child.pid, signal.SIGKILL)
        self.scheduler.shutdown(wait=True)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        log.info("drcheck agent stopped")

    # -- one job ------------------------------------------------------------------------

    def _run_job(self, spec: JobSpec) -> None:
        """Run a job as a child process with a deadline; record an error if it produced
        no result (killed, crashed)."""
        if self.stopping.is_set():
            return
        argv = [sys.executable, "-m", "drcheck", "--config", str(self.config_path), *spec.args]
        if spec.args[0] in ("probe", "restore-test"):
            argv += ["--timeout", str(int(spec.timeout)), "--json"]
        marker = self._marker(spec)
        log.info("%s: starting", spec.id)
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        with self.children_lock:
            self.children[spec.id] = child
        try:
            code = child.wait(spec.timeout + STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            kill_group(child.pid, signal.SIGKILL)
            code = child.wait()
            log.error("%s: killed after %.0fs (timeout %.0fs)", spec.id, spec.timeout + STOP_GRACE_SECONDS, spec.timeout)
        finally:
            with self.children_lock:
                self.children.pop(spec.id, None)
        if self.stopping.is_set():
            return
        self._record_if_silent(spec, marker, code)
        log.info("%s: finished (exit %s)", spec.id, code)

    def _marker(self, spec: JobSpec) -> int:
        table = {"probe": "probe_runs", "restore-test": "restore_tests"}.get(spec.args[0])
        if table is None:
            return 0
        with open_store(self.loaded) as store:
            return store.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0]

    def _record_if_silent(self, spec: JobSpec, marker: int, code: int) -> None:
        kind = spec.args[0]
        if kind not in ("probe", "restore-test"):
            return
        with open_store(self.loaded) as store:
            if kind == "restore-test":
                if reap_orphans(self.loaded, store):
                    return  # reaping recorded the interrupted test
                recorded = store.db.execute("SELECT COUNT(*) FROM restore_tests WHERE id > ? AND test = ?",
                                            [marker, spec.args[1]]).fetchone()[0]
                if not recorded:
                    test = self.loaded.config.restore_tests.get(spec.args[1])
                    now = utcnow()
                    store.record_restore_test(RestoreTestResult(
                        test=spec.args[1], kind=test.kind if test else "unknown",
                        system=test.system if test else "unknown", status=Status.ERROR,
                        started_at=now, finished_at=now, probe=test.probe if test else None,
                        reason=f"job ended without a result (exit {code}); see the agent log"))
                return
            action = "check" if "--check" in spec.args else "snapshots"
            recorded = store.db.execute("SELECT COUNT(*) FROM probe_runs WHERE id > ? AND probe = ? AND action = ?",
                                        [marker, spec.args[1], action]).fetchone()[0]
            if not recorded:
                probe = self.loaded.config.probes.get(spec.args[1])
                now = utcnow()
                store.record_probe(ProbeResult(
                    probe=spec.args[1], kind=probe.kind if probe else "unknown", action=action,
                    status=Status.ERROR, started_at=now, finished_at=now, copy=probe.copy if probe else None,
                    reason=f"job ended without a result (exit {code}); see the agent log"))
