"""`drcheck run`: the agent. Schedules probes, repository checks, canary plantings, restore
tests, the weekly report and its e-mail delivery (`report:deliver`) from the configuration
(APScheduler 3.x), and serves metrics.

Each job runs as a child `drcheck` process in its own process group, so a job that hangs
past its timeout is killed (restic and all) and recorded as an error while the agent keeps
going; a child that crashes cannot take the scheduler with it. SIGHUP reloads the
configuration (an invalid one is reported and the old one kept); SIGTERM stops cleanly:
no new jobs, running children are asked to stop (they clean up their sandboxes), and the
agent exits 0.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from drcheck.clients.process import die_with_parent, kill_session, session_members
from drcheck.config_types import Schedule
from drcheck.config_loader import ConfigError, LoadedConfig, load
from drcheck import locks
from drcheck.engine import STORE_ERRORS, open_store, probe_error, reap_orphans, restore_test_error
from drcheck.storefaults import StoreUnavailable, describe
from drcheck.kinds import action_timeout, probe_module
from drcheck.results import utcnow

log = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 30  # how long a child gets to clean up after SIGTERM
EXIT_SKIPPED = 75  # a job child that found another run of its job in progress (cli.EXIT_SKIPPED)
BACKOFF_FIRST, BACKOFF_CAP = 1.0, 300.0  # seconds between database retries while it is faulty
START_MARGIN_SECONDS = 60  # interpreter start, config and database on top of a job's own limit


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
        # each action's deadline is the limit of the work it does, plus start-up
        for action in probe_module(probe.kind).ACTIONS:
            schedule = getattr(probe, action).schedule
            if schedule:
                timeout = action_timeout(probe, action, cfg.agent.job_timeout).total_seconds() + START_MARGIN_SECONDS
                specs.append(JobSpec(f"probe:{name}:{action}", ("probe", name, action), schedule, timeout))
    for name, test in cfg.restore_tests.items():
        timeout = (test.timeout or cfg.agent.job_timeout).total_seconds()
        if test.schedule:
            specs.append(JobSpec(f"restore:{name}", ("restore-test", name), test.schedule, timeout))
        if test.canary and test.canary.plant_schedule:
            specs.append(JobSpec(f"canary:{name}", ("canary", "plant", name), test.canary.plant_schedule, 120))
    if cfg.reports.weekly_schedule:
        specs.append(JobSpec("report:weekly", ("report", "weekly"), cfg.reports.weekly_schedule, default))
    if cfg.reports.email is not None:
        # one tick both queues the scheduled report (when reports.email.schedule says so) and
        # retries failed deliveries whose back-off has passed
        tick = Schedule(interval=min(cfg.reports.email.retry_first, timedelta(minutes=5)))
        specs.append(JobSpec("report:deliver", ("report", "deliver"), tick, default))
    if cfg.store.reap_schedule:
        specs.append(JobSpec("store:reap", ("store", "reap"), cfg.store.reap_schedule, default))
    if cfg.store.retention.schedule:
        specs.append(JobSpec("store:compact", ("store", "compact"), cfg.store.retention.schedule, default))
    return specs


class StoreHealth:
    """The agent's view of its database: while it is faulty, jobs are not started and the
    database is retried with exponential back-off (capped), and the fault is logged once
    per change of cause, not once per job."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.fault: StoreUnavailable | None = None
        self.failures = 0
        self.retry_at = 0.0
        self.lock = threading.Lock()

    def usable(self) -> bool:
        """False while backing off after a fault (no job should start)."""
        with self.lock:
            return self.fault is None or self.clock() >= self.retry_at

    def failed(self, fault: StoreUnavailable) -> None:
        with self.lock:
            if self.fault is None or (fault.cause, fault.path) != (self.fault.cause, self.fault.path):
                log.error("%s; jobs wait until it is usable again", fault.line())
            self.fault = fault
            self.failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + delay

    def ok(self) -> None:
        with self.lock:
            if self.fault is not None:
                log.warning("database %s is usable again; jobs resume", self.fault.path)
            self.fault, self.failures = None, 0


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
        self.store_health = StoreHealth()

    # -- lifecycle ----------------------------------------------------------------------

    def serve(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit status. Raise AgentError when
        another agent holds this state directory or the database is unusable at start."""
        state_dir = self.loaded.config.agent.state_dir
        with ExitStack() as held:
            try:
                held.enter_context(locks.exclusive(locks.agent_lock(state_dir), "agent"))
            except locks.Busy as busy:
                holder = f"pid {busy.pid}" if busy.pid else "another process"
                raise AgentError(f"another drcheck agent ({holder}) is already running with state directory "
                                 f"{state_dir} (lock {busy.path}); one agent per state directory") from None
            except OSError as exc:  # the state directory is on a read-only or full file system
                raise AgentError(describe(self.loaded.database_path, exc).line()) from None
            try:
                return self._serve()
            except STORE_ERRORS as exc:  # only at start: later faults are backed off from
                raise AgentError(describe(self.loaded.database_path, exc).line()) from None

    def _serve(self) -> int:
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
        old, new = self.loaded.config, loaded.config
        if new.agent.state_dir != old.agent.state_dir:
            log.error("configuration not reloaded: agent.state_dir changed (the database would move under "
                      "running jobs and metrics); restart the agent instead")
            return
        if new.metrics != old.metrics or new.agent.max_parallel_jobs != old.agent.max_parallel_jobs:
            log.warning("metrics and agent.max_parallel_jobs changes take effect at the next restart")
        self.loaded = loaded
        self.scheduler.remove_all_jobs()
        self._schedule_all()
        log.info("configuration reloaded: %d job(s)", len(self.scheduler.get_jobs()))

    def _schedule_all(self) -> None:
        zone = self.loaded.config.agent.timezone
        for spec in job_specs(self.loaded):
            self.scheduler.add_job(self._run_job, spec.schedule.trigger(zone), args=[spec],
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
            _signal(child.pid, signal.SIGTERM)  # the job removes its sandbox and records why it stopped
        for child in running:
            try:
                child.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                kill_session(child.pid)
        self.scheduler.shutdown(wait=True)
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        log.info("drcheck agent stopped")

    # -- one job ------------------------------------------------------------------------

    def _run_job(self, spec: JobSpec) -> None:
        """Run a job as a child process with a deadline; record an error if it produced
        no result (killed, crashed, or could not even start)."""
        if self.stopping.is_set():
            return
        if not self.store_health.usable():
            log.debug("%s: not started: the database is still faulty (backing off)", spec.id)
            return
        started = utcnow()
        try:
            code = self._run_child(spec)
        except STORE_ERRORS as exc:  # the job could not be recorded: back off, do not spin
            self.store_health.failed(describe(self.loaded.database_path, exc))
            return
        except Exception as exc:  # the scheduler thread must survive whatever happened
            log.exception("%s: could not run", spec.id)
            try:
                with open_store(self.loaded) as store:
                    self._record_error(store, spec, started, f"job could not run: {type(exc).__name__}: {exc}")
            except Exception:
                log.exception("%s: could not record that it could not run", spec.id)
            return
        if code is not None:
            log.info("%s: finished (exit %s)", spec.id, code)

    def _run_child(self, spec: JobSpec) -> int | None:
        argv = [sys.executable, "-m", "drcheck", "--config", str(self.config_path), "--config-on-stdin", *spec.args]
        if spec.args[0] in ("probe", "restore-test"):
            argv += ["--timeout", str(int(spec.timeout)), "--json"]
        marker = self._marker(spec)
        log.info("%s: starting", spec.id)
        # Its own session: on a hard timeout every process the job started (restic, ssh)
        # is found by session id and killed. It dies with the agent (SIGKILL included), and
        # so, in turn, do the programs it started.
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                                 preexec_fn=die_with_parent())
        try:
            child.stdin.write(pickle.dumps(self.loaded))  # the config this agent runs, not the file
            child.stdin.close()
        except BrokenPipeError:
            pass  # the child died at once; its exit status says so below
        with self.children_lock:
            self.children[spec.id] = child
            if self.stopping.is_set():  # SIGTERM arrived while we were starting it
                _signal(child.pid, signal.SIGTERM)
        try:
            code = child.wait(spec.timeout + STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            kill_session(child.pid)
            code = child.wait()
            _wait_session_gone(child.pid)
            log.error("%s: killed after %.0fs (timeout %.0fs)", spec.id, spec.timeout + STOP_GRACE_SECONDS, spec.timeout)
        finally:
            with self.children_lock:
                self.children.pop(spec.id, None)
        if self.stopping.is_set():
            return None
        self._record_if_silent(spec, marker, code)
        return code

    def _marker(self, spec: JobSpec) -> int:
        table = {"probe": "probe_runs", "restore-test": "restore_tests"}.get(spec.args[0])
        with open_store(self.loaded) as store:  # also the check that the database is usable
            marker = store.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0] if table else 0
        self.store_health.ok()
        return marker

    def _record_if_silent(self, spec: JobSpec, marker: int, code: int) -> None:
        """Record an error for a probe or restore test that ended without recording a result."""
        kind, name = spec.args[0], spec.args[1] if len(spec.args) > 1 else ""
        if kind not in ("probe", "restore-test"):
            return
        if code == EXIT_SKIPPED:
            log.warning("%s: skipped: another run of it is in progress (see its lock in %s)", spec.id,
                        locks.lock_dir(self.loaded.config.agent.state_dir))
            if kind == "probe":
                return  # a skipped run recorded itself
        with open_store(self.loaded) as store:
            if kind == "restore-test":
                reap_orphans(self.loaded, store)  # a run that died is recorded as interrupted here
                sql, params = "SELECT COUNT(*) FROM restore_tests WHERE id > ? AND test = ?", [marker, name]
            else:
                sql = "SELECT COUNT(*) FROM probe_runs WHERE id > ? AND probe = ? AND action = ?"
                params = [marker, name, _probe_action(spec)]
            if not store.db.execute(sql, params).fetchone()[0]:
                self._record_error(store, spec, utcnow(),
                                   f"job ended without a result (exit {code}); see the agent log")

    def _record_error(self, store, spec: JobSpec, started, reason: str) -> None:
        """Record an error result for the probe or restore test a job was running."""
        kind, name = spec.args[0], spec.args[1] if len(spec.args) > 1 else ""
        if kind == "restore-test":
            store.record_restore_test(restore_test_error(self.loaded, name, started, reason))
        elif kind == "probe":
            store.record_probe(probe_error(self.loaded, name, _probe_action(spec), started, reason))


def _probe_action(spec: JobSpec) -> str:
    return spec.args[2]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_session_gone(sid: int, limit: float = 10.0) -> None:
    """Wait briefly until no process of a killed session remains, so nothing still writes
    into a sandbox that is about to be reaped."""
    deadline = time.monotonic() + limit
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
