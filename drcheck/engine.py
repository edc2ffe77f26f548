"""The job boundary: run a probe, a repository check, a restore test or a canary planting
by name, turn every failure into a recorded result, and return it.

The CLI, the scheduler's child processes and the demo all call these; nothing else runs
probes or restore tests.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
from pathlib import Path
from typing import Callable

from drcheck import canary, diskspace, leases, locks, placement, sandbox, storefaults
from drcheck.clients import process
from drcheck.config_loader import LoadedConfig
from drcheck.context import Progress, RunContext, no_progress
from drcheck.interrupts import Interrupted, interrupt
from drcheck.kinds import probe_module, restore_test_module
from drcheck.results import ProbeResult, RestoreTestResult, Status, utcnow
from drcheck.store import Store, parse_ts

log = logging.getLogger(__name__)


def raise_on_sigterm() -> None:
    """Make SIGTERM raise Interrupted in the main thread, so sandboxes get removed (after
    any cleanup in progress: `drcheck.interrupts.shielded`)."""

    def handler(signum, frame):
        process.kill_running()  # worker threads' restic calls too, so nothing waits on them
        interrupt(f"interrupted by signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def arm_timeout(seconds: float | None) -> None:
    """Raise Interrupted in the main thread after `seconds` (None: no limit), so a job that
    overruns cleans up and records why it stopped."""
    if not seconds:
        return

    def handler(signum, frame):
        process.kill_running()
        interrupt(f"timed out after {seconds:.0f}s")

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


# Errors of the database itself: never a probe's or a test's result (they could not even
# be recorded); the CLI and the agent report them as store faults.
STORE_ERRORS = (sqlite3.Error, storefaults.StoreUnavailable)


def open_store(loaded: LoadedConfig) -> Store:
    """Open (create, migrate) the database. Raise StoreUnavailable, naming the file and the
    cause, when it is read-only, locked beyond agent.database_timeout, damaged, or on a
    full file system."""
    path = loaded.database_path
    timeout = loaded.config.agent.database_timeout.total_seconds()
    storefaults.preflight(path, timeout)
    try:
        return Store(path, agent=loaded.config.agent.name)
    except (sqlite3.Error, OSError) as exc:
        raise storefaults.describe(path, exc, timeout) from None


def probe_error(loaded: LoadedConfig, name: str, action: str, started, reason: str) -> ProbeResult:
    """An ERROR result for probe `name`, ending now (the probe may no longer be configured)."""
    probe = loaded.config.probes.get(name)
    return ProbeResult(probe=name, kind=probe.kind if probe else "unknown", action=action, status=Status.ERROR,
                       started_at=started, finished_at=utcnow(), copy=probe.copy if probe else None, reason=reason)


def restore_test_error(loaded: LoadedConfig, name: str, started, reason: str,
                       sandbox: str | None = None) -> RestoreTestResult:
    """An ERROR result for restore test `name`, ending now (it may no longer be configured)."""
    test = loaded.config.restore_tests.get(name)
    probe = loaded.config.probes.get(test.probe) if test else None
    return RestoreTestResult(test=name, kind=test.kind if test else "unknown",
                             system=test.system if test else "unknown", status=Status.ERROR,
                             started_at=started, finished_at=utcnow(), probe=test.probe if test else None,
                             copy=probe.copy if probe else None, sandbox=sandbox, reason=reason)


def probe_actions(loaded: LoadedConfig, name: str) -> list[str]:
    """The actions probe `name`'s kind declares, the default first."""
    return list(probe_module(loaded.config.probes[name].kind).ACTIONS)


def run_probe(loaded: LoadedConfig, store: Store, name: str, action: str | None = None,
              progress: Progress = no_progress) -> ProbeResult:
    """Run one action of probe `name` (default: its kind's first), record and return the
    result. Raise KeyError for an action the kind does not declare."""
    target = loaded.config.probes[name]
    actions = probe_module(target.kind).ACTIONS
    action = action or next(iter(actions))
    lock = locks.probe_lock(loaded.config.agent.state_dir, name, action)
    try:
        with locks.exclusive(lock, f"probe {name} {action}"):
            return _run_probe(loaded, store, name, action, target, actions[action], progress)
    except locks.Busy as busy:
        # Recorded as history only: the store never lets a skipped run become the latest one.
        log.warning("probe %s %s skipped: %s", name, action, busy)
        started = utcnow()
        result = ProbeResult(probe=name, kind=target.kind, action=action, status=Status.SKIPPED,
                             started_at=started, finished_at=started, copy=target.copy,
                             reason=f"skipped: {busy}; runs of one probe action never overlap")
        store.record_probe(result)
        return result


def _run_probe(loaded, store, name, action, target, func, progress) -> ProbeResult:
    ctx = RunContext(name=name, loaded=loaded, store=store, progress=progress)
    started = utcnow()
    try:
        result = func(target, ctx)
    except (Interrupted, KeyboardInterrupt) as exc:
        store.record_probe(probe_error(loaded, name, action, started, str(exc) or "interrupted"))
        raise
    except STORE_ERRORS:
        raise
    except Exception as exc:  # a bug in a probe must not take the agent down
        log.exception("probe %s (%s) crashed", name, action)
        result = probe_error(loaded, name, action, started, f"internal error: {type(exc).__name__}: {exc}")
    store.record_probe(result)
    log.info("probe %s %s: %s %s", name, action, result.status.value, result.reason)
    track_corrective_actions(loaded, store)
    return result


def run_restore_test(loaded: LoadedConfig, store: Store, name: str,
                     progress: Progress = no_progress) -> RestoreTestResult:
    """Run restore test `name` (see `run_restore_tests`); return its result, or for a run
    that tested several things (a rotation over VMs), the worst of them."""
    return worst(run_restore_tests(loaded, store, name, progress))


def run_restore_tests(loaded: LoadedConfig, store: Store, name: str,
                      progress: Progress = no_progress) -> list[RestoreTestResult]:
    """Run restore test `name`, record and return its results: one, or one per thing a
    rotation tested. Leftover resources of dead runs are reaped first. An interruption
    (SIGTERM) is recorded, then re-raised.

    Only one run of a test happens at a time across every process sharing the state
    directory: a run that finds another one in progress records a SKIPPED result (never a
    pass or a failure) and returns it without touching anything."""
    lock = locks.restore_test_lock(loaded.config.agent.state_dir, name)
    try:
        with locks.exclusive(lock, f"restore test {name}"):
            return _run_restore_test(loaded, store, name, progress)
    except locks.Busy as busy:
        log.warning("restore test %s skipped: %s", name, busy)
        result = restore_test_error(loaded, name, utcnow(),
                                    f"skipped: {busy}; runs of one restore test never overlap")
        result.status = Status.SKIPPED
        store.record_restore_test(result)
        return [result]


_BADNESS = {Status.ERROR: 3, Status.FAILED: 2, Status.SKIPPED: 1}


def worst(results: list[RestoreTestResult]) -> RestoreTestResult:
    """The result that matters most: an error, else a failure, else the last one."""
    return max(reversed(results), key=lambda r: _BADNESS.get(r.status, 0))


def _run_restore_test(loaded: LoadedConfig, store: Store, name: str, progress: Progress) -> list[RestoreTestResult]:
    reap_orphans(loaded, store)
    target = loaded.config.restore_tests[name]
    ctx = RunContext(name=name, loaded=loaded, store=store, progress=progress)
    started = utcnow()
    try:
        placement.check_at_run_time(loaded, name)
        outcome = restore_test_module(target.kind).run(target, ctx)
    except (Interrupted, KeyboardInterrupt) as exc:
        store.record_restore_test(restore_test_error(loaded, name, started, str(exc) or "interrupted"))
        raise
    except STORE_ERRORS:
        raise
    except placement.PlacementRefused as exc:
        outcome = restore_test_error(loaded, name, started, str(exc))
    except Exception as exc:
        log.exception("restore test %s crashed", name)
        outcome = restore_test_error(loaded, name, started, f"internal error: {type(exc).__name__}: {exc}")
    results = outcome if isinstance(outcome, list) else [outcome]
    for result in results:
        if not result.status.good and diskspace.is_full(result.reason) and "disk full" not in result.reason:
            # restic's "no space left on device" (or ENOSPC) names neither the disk nor the sizes;
            # and a full sandbox says nothing about the backup: drcheck could not test (ERROR)
            result.status = Status.ERROR
            result.reason = f"{diskspace.explain_full(loaded.config.agent.sandbox_root, result.bytes_restored)}: " \
                            f"{result.reason}"
        store.record_restore_test(result)
        log.info("restore test %s: %s %s", name, result.status.value, result.reason)
    track_corrective_actions(loaded, store)
    return results


def track_corrective_actions(loaded: LoadedConfig, store: Store) -> None:
    """Open and close corrective actions from the rules as they stand after a new result
    (drcheck.corrective). A failure here never fails the job that produced the result."""
    from drcheck import corrective
    from drcheck.rules import evaluate

    try:
        now = utcnow()
        changes = corrective.sync(store, evaluate(loaded, store, now), now)
    except STORE_ERRORS:
        raise
    except Exception:  # a rule bug must not lose the job's recorded result
        log.exception("corrective actions could not be updated")
        return
    if changes.opened or changes.closed:
        log.info("corrective actions: %d opened, %d closed", changes.opened, changes.closed)


def plant_canary(loaded: LoadedConfig, store: Store, name: str, now: Callable = utcnow) -> Path:
    """Write a fresh canary for restore test `name` into its system's live source; raise
    canary.CanaryRefused when that source looks empty or unmounted."""
    target = loaded.config.restore_tests[name]
    path = Path(loaded.source_path(target.probe, target.system, target.canary.path))
    guard = target.canary
    source = path.parent if guard.path.is_absolute() else Path(loaded.config.probes[target.probe].source_paths(target.system)[0])
    canary.plant(store, name, target.system, path, now(), source=source, require=guard.require,
                 min_entries=guard.min_entries, mount_point=guard.mount_point)
    log.info("planted canary for %s at %s", name, path)
    return path


def reap_orphans(loaded: LoadedConfig, store: Store) -> list[dict]:
    """Clean up the resources (of any kind, configured or not) that dead runs leased, and
    record each interrupted run once, as an error of its owner, when first found. A
    resource that cannot be cleaned now keeps its lease (attempts, last_error) for the next
    call: at every start and periodically. Return the leases released now (each with
    owner/test, resource/path, pid, created_at)."""
    orphans = store.orphaned_leases()
    first_found: dict[tuple, list[dict]] = {}
    for lease in orphans:
        if not lease["attempts"]:
            first_found.setdefault((lease["owner"], lease["pid"], lease["pid_started"]), []).append(lease)
    reaped = leases.reap(store, leases.clean_with_handler(loaded), orphans=orphans)
    cleaned = {lease["id"] for lease in reaped}
    for (owner, pid, _), run_leases in first_found.items():
        what = ", ".join(f"{lease['kind']} {lease['resource']}" for lease in run_leases)
        left = [lease for lease in run_leases if lease["id"] not in cleaned]
        fate = "was removed at next start" if not left else "could not be removed yet (retried)"
        store.record_restore_test(restore_test_error(
            loaded, owner, parse_ts(run_leases[0]["created_at"]),
            f"interrupted: the run (pid {pid}) died; its {what} {fate}",
            sandbox=next((lease["resource"] for lease in run_leases if lease["kind"] == sandbox.LEASE_KIND), None)))
    return reaped
