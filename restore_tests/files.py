"""File restore test: restore a system's newest restore point into a sandbox directory,
verify it (expected paths, completeness and spot check against the live source, canary
freshness, application commands), measure RTO and achieved RPO, and always remove the
sandbox.

Where the point stored the system's paths (absolute, or relative to the directory the
backup ran in) is read from the point's own listing (`drcheck.mapping.discover_layout`),
never assumed; every check names live paths and looks in the restore where the point put
them.

RTO = restore start -> last check passed (restore and verify recorded separately).
Achieved RPO = test start - newest canary found in the restore, or - the restore point's
time when no canary is configured.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from drcheck.clients import SourceError
from drcheck.config_types import ConfigPath
from drcheck.diskspace import require_space
from drcheck.durations import format_duration
from drcheck.kinds import FileBackupTarget, RestoreTestTarget, probe_module
from drcheck.mapping import Layout, discover_layout, under_any, within
from drcheck.results import CheckResult, RestoreTestResult, SnapshotFile, Status
from drcheck.restore_tests import checks
from drcheck.restore_tests import completeness as completeness_check
from drcheck.sandbox import SandboxRefused, contained, sandbox

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig
    from drcheck.context import RunContext

log = logging.getLogger(__name__)


class FilesRestoreTest(RestoreTestTarget):
    """Restore a system's newest restore point into a sandbox directory and verify it."""

    kind: Literal["files"]
    target_dir: ConfigPath | None = Field(
        None, description="restore here instead of a fresh directory; must be inside agent.sandbox_root"
    )
    expected_paths: list[Path] = Field(
        default_factory=list,
        description="must exist and be non-empty; relative paths are under the system's source path",
    )
    canary: checks.CanaryConfig | None = Field(None, description="canary planting and freshness check")
    spot_check: checks.SpotCheck | None = Field(default_factory=checks.SpotCheck, description="hash comparison")
    completeness: completeness_check.Completeness = Field(
        default_factory=completeness_check.Completeness,
        description="every live file older than the point must be in it, with its size (metadata only)",
    )
    commands: list[checks.CommandCheck] = Field(default_factory=list, description="application checks")

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        probe = loaded.config.probes.get(self.probe)
        if probe is None:
            return []
        if not isinstance(probe, FileBackupTarget) or not hasattr(probe_module(probe.kind), "file_source"):
            return [("probe", f"probe {self.probe!r} is a {probe.kind} probe, which offers no file restores")]
        problems = []
        if self.system not in probe.systems_covered():
            problems.append(("system", f"probe {self.probe!r} maps no restore points to {self.system!r}"))
        relative = (self.canary is not None and not self.canary.path.is_absolute()) or any(
            not p.is_absolute() for p in self.expected_paths)
        sources = probe.source_paths(self.system)
        if relative and len(sources) != 1:
            problems.append(("", f"canary and relative expected_paths need exactly one source path for "
                                 f"{self.system!r} in probes.{self.probe}.systems (found {len(sources)})"))
        root = loaded.config.agent.sandbox_root
        if self.target_dir is not None and not within(self.target_dir, root):
            problems.append(("target_dir", f"{self.target_dir} is outside agent.sandbox_root ({root}); "
                                           "restores only happen inside the sandbox"))
        return problems


Target = FilesRestoreTest


# What a restore can fail with that is the backup's or the environment's fault, not ours.
EXPECTED_FAILURES = (SourceError, SandboxRefused, OSError)


def run(target: FilesRestoreTest, ctx: RunContext) -> RestoreTestResult:
    """Run the test; return its result (failed/error results carry the reason)."""
    runbook = ctx.loaded.runbooks[target.system]
    probe_cfg = ctx.loaded.config.probes[target.probe]
    started = ctx.now()
    result = RestoreTestResult(
        test=ctx.name, kind="files", system=target.system, status=Status.ERROR,
        started_at=started, finished_at=started, probe=target.probe, copy=probe_cfg.copy,
        rto_target_seconds=runbook.rto.total_seconds(), rpo_target_seconds=runbook.rpo.total_seconds(),
    )
    try:
        _restore_and_verify(target, ctx, probe_cfg, result)
    except EXPECTED_FAILURES as exc:
        # corrupt backup data is the backup failing its test; anything else means we could not test
        result.status = Status.FAILED if getattr(exc, "damaged", False) else Status.ERROR
        result.reason = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror}: {exc.filename}"
        log.warning("%s: %s", ctx.name, result.reason)
    result.finished_at = ctx.now()
    return result


def _restore_and_verify(target, ctx: RunContext, probe_cfg, result: RestoreTestResult) -> None:
    source = probe_module(probe_cfg.kind).file_source(probe_cfg)
    ctx.progress("finding and listing the newest restore point")
    point, entries = _newest_with_listing(ctx, source, target.system, probe_cfg.copy)
    if point is None:
        result.status, result.reason = Status.FAILED, f"no restore point of {target.system} in {probe_cfg.copy}"
        return
    result.point_id, result.point_time = point.id, point.time
    source_root = Path(target.spot_check.source_root) if target.spot_check else Path("/")
    layout = discover_layout(point.paths, (e.path for e in entries), lambda p: _children(source_root, p))
    live_roots = [str(p) for p in probe_cfg.source_paths(target.system)] or [live for _, live in layout.roots]
    listing = _live_listing(entries, layout, live_roots)
    files = [e for e in listing.values() if e.type == "file"]
    result.files_restored = len(files)
    result.bytes_restored = sum(f.size for f in files)
    include = [stored for stored in map(layout.to_stored, live_roots) if stored is not None]
    timeout = (target.timeout or ctx.loaded.config.agent.job_timeout).total_seconds()
    spot = target.spot_check
    spot_run = (checks.SpotCheckRun(files, spot, stored=lambda p: layout.to_stored(p) or p)
                if spot is not None and (spot.files or spot.percent) else None)

    require_space(ctx.loaded.config.agent.sandbox_root, result.bytes_restored, len(files), f"{target.system}")
    with sandbox(ctx.store, ctx.loaded.config.agent.sandbox_root, ctx.name, target.target_dir) as dest, \
            (spot_run or nullcontext()), ThreadPoolExecutor(max_workers=1) as background:
        complete = None
        if target.completeness.enabled:  # metadata only: runs while restic restores
            previous = completeness_check.previous_share(ctx.store, ctx.name, target.system)
            complete = background.submit(completeness_check.completeness, live_roots, source_root, listing,
                                         point.time, target.completeness, previous)
        result.sandbox = str(dest)
        t0 = time.perf_counter()
        with _watch_progress(ctx, dest, result.bytes_restored):
            source.restore(point, dest, include, timeout)
        result.restore_seconds = time.perf_counter() - t0
        ctx.progress("verifying")
        verdicts = _verify(target, ctx, dest, spot_run, complete, layout, live_roots, result)
        result.verify_seconds = time.perf_counter() - t0 - result.restore_seconds
    _judge(result, verdicts)


def _children(source_root: Path, path: str) -> set[str] | None:
    """Entry names of a live directory (None when unreadable): evidence for the layout."""
    try:
        return set(os.listdir(source_root / path.lstrip("/")))
    except OSError:
        return None


def _live_listing(entries, layout: Layout, live_roots: list[str]) -> dict[str, SnapshotFile]:
    """The point's entries under the system's live roots, keyed by (and renamed to) the live
    path they restore."""
    listing = {}
    for entry in entries:
        live = layout.to_live(entry.path)
        if live is not None and under_any(live, live_roots):
            listing[live] = replace(entry, path=live)
    return listing


def _newest_with_listing(ctx: RunContext, source, system: str, copy: str):
    """Return the newest restore point and its whole listing (the layout is read from it).

    Each restic call pays the repository's key derivation, so the listing of the point the
    last probe reported is fetched while `snapshots` confirms it is still the newest; it is
    used only if so.
    """
    known = ctx.store.latest_point_id(system, copy)
    if known is None:
        point = source.newest(system)
        return point, (source.files(point.id, []) if point else [])
    with ThreadPoolExecutor(max_workers=2) as pool:
        newest = pool.submit(source.newest, system)
        guess = pool.submit(source.files, known, [])
        point = newest.result()
        if point is not None and point.id == known:
            try:
                return point, guess.result()
            except SourceError:
                pass  # e.g. pruned since the probe ran: list the real newest below
    return point, (source.files(point.id, []) if point else [])


def _verify(target: FilesRestoreTest, ctx: RunContext, dest: Path, spot_run, complete, layout: Layout,
            live_roots: list[str], result: RestoreTestResult):
    runbook = ctx.loaded.runbooks[target.system]

    def stored(live) -> str:
        return layout.to_stored(str(live)) or str(live)

    try:  # the restored source path may itself be a symlink leading out of the sandbox
        data_root, data_refused = (contained(dest, stored(live_roots[0])) if len(live_roots) == 1 else dest), None
    except SandboxRefused as exc:
        data_root, data_refused = dest, exc
    result.rpo_seconds = (result.started_at - result.point_time).total_seconds()
    result.rpo_source = "restore_point"
    if target.expected_paths:
        wanted = [str(ctx.loaded.source_path(target.probe, target.system, p)) for p in target.expected_paths]
        result.checks.append(checks.expected_paths(dest, wanted, stored=stored))
    if complete is not None:
        check = complete.result()
        check.details["layout"] = layout.describe()
        if layout.relocated:  # say where the files were found, so the evidence can be checked
            check.evidence += f"; layout read from the point: {layout.describe()}"
        result.checks.append(check)
    if target.canary is not None:
        max_age = target.canary.max_age or runbook.rpo
        canary_path = str(ctx.loaded.source_path(target.probe, target.system, target.canary.path))
        check, canary_time = checks.canary(dest, canary_path, ctx.store, target.system, result.started_at, max_age,
                                           stored=stored)
        result.checks.append(check)
        if canary_time is not None:
            result.rpo_seconds = (result.started_at - canary_time).total_seconds()
            result.rpo_source = "canary"
    if spot_run is not None:
        result.checks.append(spot_run.result(dest))
    for command in target.commands:
        if data_refused is not None:
            result.checks.append(CheckResult(checks.command_name(command), Status.FAILED, f"refused: {data_refused}", 0.0))
        else:
            result.checks.append(checks.command(dest, data_root, command))
    return result.checks


def _judge(result: RestoreTestResult, verdicts) -> None:
    """FAILED when a check failed or a target was missed; ERROR when a check could not
    run (and none failed); PASSED otherwise. RTO is measured only when every check passed."""
    failed = [f"{c.name}: {c.evidence}" for c in verdicts if c.status is Status.FAILED]
    errored = [f"{c.name}: {c.evidence}" for c in verdicts if c.status is Status.ERROR]
    if not failed and not errored:
        result.rto_seconds = (result.restore_seconds or 0) + (result.verify_seconds or 0)
        if result.rto_target_seconds is not None and result.rto_seconds > result.rto_target_seconds:
            failed.append(f"measured RTO {format_duration(result.rto_seconds)} exceeds target "
                          f"{format_duration(result.rto_target_seconds)}")
    if result.rpo_seconds is not None and result.rpo_target_seconds is not None \
            and result.rpo_seconds > result.rpo_target_seconds:
        failed.append(f"achieved RPO {format_duration(result.rpo_seconds)} ({result.rpo_source}) exceeds "
                      f"target {format_duration(result.rpo_target_seconds)}")
    result.status = Status.FAILED if failed else Status.ERROR if errored else Status.PASSED
    result.reason = "; ".join(failed + errored)


class _watch_progress:
    """While restoring, report bytes written into the sandbox (only when someone watches)."""

    def __init__(self, ctx: RunContext, dest: Path, total: int):
        self.ctx, self.dest, self.total = ctx, dest, total
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self):
        self.ctx.progress("restoring", 0, self.total)
        if getattr(self.ctx.progress, "watching", False):
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            try:
                done = sum(checks.regular_files(self.dest).values())
            except OSError:  # restic is creating and renaming files under our feet
                continue
            self.ctx.progress("restoring", done, self.total)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()
        self.ctx.progress("restoring", self.total, self.total)
