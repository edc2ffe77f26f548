"""File restore test: restore a system's newest restore point into a sandbox directory,
verify it (expected paths, completeness and spot check against the live source, canary
freshness, application commands), measure RTO and achieved RPO, and always remove the
sandbox.

Where the point stored the system's paths (absolute, or relative to the directory the
backup ran in) is read from the point's own listing (`drcheck.mapping.discover_layout`),
never assumed; every check names live paths and looks in the restore where the point put
them.

Nothing the point holds may be written outside the sandbox: its listing is checked for
escaping entries (`FileSource.files`). A source whose tool the kernel confines to the
sandbox (`ConfiningFileSource`: restic with Landlock) starts restoring the point the last
probe recorded while `newest` confirms it and `files` lists and checks it, saving one
repository open; a wrong guess (a newer point, a failed listing, another layout) kills
that restore, removes its sandbox and continues sequentially, and an escaping entry
refuses the test the same way. Other sources restore only after the checked listing.
`details` keep the run's timeline (seconds from its start) and whether it overlapped.

RTO = restore start -> last check passed (restore and verify recorded separately).
Achieved RPO = test start - newest canary found in the restore, or - the restore point's
time when no canary is configured.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from drcheck.clients import SourceError, process
from drcheck.config_types import ConfigPath
from drcheck.diskspace import require_space
from drcheck.kinds import FileBackupTarget, RestoreTestTarget, probe_module
from drcheck.mapping import Layout, discover_layout, under_any, within
from drcheck.results import CheckResult, RestoreTestResult, SnapshotFile, Status
from drcheck.restore_tests import checks
from drcheck.restore_tests import completeness as completeness_check
from drcheck.sandbox import SandboxRefused, contained, sandbox
from drcheck.sqltime import parse_ts
from drcheck.timeline import Timeline, watch_progress

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
    timeline = Timeline()
    result.details["timeline"] = timeline.spans
    guess, why_not = _overlap_guess(ctx, source, target, probe_cfg)
    if guess is None:
        result.details["overlap"] = f"not used: {why_not}"
        _sequential(target, ctx, probe_cfg, source, result, timeline)
        return
    try:
        _overlapped(target, ctx, probe_cfg, source, guess, result, timeline)
        result.details["overlap"] = "used"
    except _Fallback as fallback:  # its restore was killed and its sandbox removed
        log.info("%s: restore of %s discarded (%s); restoring sequentially", ctx.name, guess.id[:8], fallback.why)
        result.details["overlap"] = f"discarded: {fallback.why}"
        _sequential(target, ctx, probe_cfg, source, result, timeline, fallback.found)


def _sequential(target, ctx: RunContext, probe_cfg, source, result: RestoreTestResult, timeline: Timeline,
                found: "tuple[object, list | None] | None" = None) -> None:
    """List the newest point (or use `found`: the point, its listing when known), check the
    listing, then restore and verify: nothing is written before the listing is checked."""
    ctx.progress("finding and listing the newest restore point")
    if found is None:
        point, entries = _newest_with_listing(ctx, source, target.system, probe_cfg.copy, timeline)
    else:
        point, entries = found
        if point is not None and entries is None:
            entries = timeline.timed("listing", source.files)(point.id, [])
    if point is None:
        result.status, result.reason = Status.FAILED, f"no restore point of {target.system} in {probe_cfg.copy}"
        return
    prep = _prepare(target, probe_cfg, point, entries, result)
    timeout = (target.timeout or ctx.loaded.config.agent.job_timeout).total_seconds()
    # refuse before the spot check starts hashing the live source: nothing must be left running
    require_space(ctx.loaded.config.agent.sandbox_root, result.bytes_restored, len(prep.files), f"{target.system}")
    spot_run = _spot_run(target, prep)
    with sandbox(ctx.store, ctx.loaded.config.agent.sandbox_root, ctx.name, target.target_dir) as dest, \
            (spot_run or nullcontext()), ThreadPoolExecutor(max_workers=1) as background:
        complete = _start_completeness(target, ctx, background, prep, point)  # metadata only: runs while restoring
        result.sandbox = str(dest)
        t0 = time.perf_counter()
        with watch_progress(ctx, dest, result.bytes_restored), timeline.span("restore"):
            source.restore(point, dest, prep.include, timeout)
        verdicts = _verify_restored(target, ctx, dest, spot_run, complete, prep, result, timeline, t0)
        cleanup = timeline.start("cleanup")
    cleanup()
    _judge(result, verdicts)


def _overlapped(target, ctx: RunContext, probe_cfg, source, guess: "_RecordedPoint", result: RestoreTestResult,
                timeline: Timeline) -> None:
    """Restore the point the probe last recorded while `newest` confirms it is still the
    newest and `files` lists (and checks) it; then verify. The source confines its tool's
    writes to the sandbox, so nothing the point holds can land outside it meanwhile.

    Raise _Fallback (after killing the restore and removing its sandbox) when the guess
    was wrong: a newer point, a listing that failed, or a layout needing another restore.
    An escaping entry raises SandboxRefused the same way (restore killed, sandbox removed).
    """
    root = ctx.loaded.config.agent.sandbox_root
    timeout = (target.timeout or ctx.loaded.config.agent.job_timeout).total_seconds()
    include = [str(p) for p in probe_cfg.source_paths(target.system)]
    require_space(root, guess.size, guess.files, f"{target.system}")
    ctx.progress("restoring the last recorded point while confirming and listing it")
    cancel = process.Cancel()
    with sandbox(ctx.store, root, ctx.name, target.target_dir) as dest, ExitStack() as stack:
        calls = stack.enter_context(ThreadPoolExecutor(max_workers=3))
        stack.push(lambda failed, *_: cancel.cancel() if failed else None)  # before the pool waits for it
        result.sandbox = str(dest)
        t0 = time.perf_counter()
        restoring = calls.submit(timeline.timed("restore", source.restore), guess, dest, include, timeout,
                                 confined=True, cancel=cancel)
        # off the critical path while the restore runs: on a busy machine the CPU goes to the restore
        newest = calls.submit(_niced(timeline.timed("snapshots", source.newest)), target.system)
        listed = calls.submit(_niced(timeline.timed("listing", source.files)), guess.id, [])
        watcher = stack.enter_context(watch_progress(ctx, dest, guess.size or 0))
        point = newest.result()
        if point is None or point.id != guess.id:
            raise _Fallback((point, None), "a newer restore point exists" if point else "no restore point now")
        try:
            entries = listed.result()  # SandboxRefused (an escaping entry) propagates
        except SourceError as exc:  # e.g. pruned since the probe ran
            raise _Fallback((point, None), f"listing failed: {exc}") from None
        prep = _prepare(target, probe_cfg, point, entries, result)
        if not _same_restore(point, include, prep.include):
            raise _Fallback((point, entries), f"the point's layout needs --include {prep.include}")
        spot_run = _spot_run(target, prep)
        if spot_run is not None:
            stack.enter_context(spot_run)
        background = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        complete = _start_completeness(target, ctx, background, prep, point)
        restoring.result()
        watcher.finish()
        verdicts = _verify_restored(target, ctx, dest, spot_run, complete, prep, result, timeline, t0)
        cleanup = timeline.start("cleanup")
    cleanup()
    _judge(result, verdicts)


def _verify_restored(target, ctx: RunContext, dest: Path, spot_run, complete, prep, result: RestoreTestResult,
                     timeline: Timeline, t0: float):
    """The restore (started at perf-counter `t0`) has ended: record its time, run every
    check against the sandbox, record the verify time; return the check results."""
    result.restore_seconds = time.perf_counter() - t0
    ctx.progress("verifying")
    with timeline.span("verify"):
        verdicts = _verify(target, ctx, dest, spot_run, complete, prep.layout, prep.live_roots, result)
    result.verify_seconds = time.perf_counter() - t0 - result.restore_seconds
    return verdicts


def _niced(func):
    """`func`, its programs run at a lower CPU priority (process.lowered_priority)."""
    def call(*args, **kwargs):
        with process.lowered_priority():
            return func(*args, **kwargs)

    return call


class _Fallback(Exception):
    """The overlapped restore guessed wrong; `found` is (point, listing or None) so far."""

    def __init__(self, found: tuple, why: str):
        super().__init__(why)
        self.found, self.why = found, why


@dataclass(frozen=True)
class _RecordedPoint:
    """The restore point a probe last recorded for the system (what `restore` reads)."""

    id: str
    time: object
    paths: tuple[str, ...]
    size: int
    files: int


_EXPLAINED: set[str] = set()  # kinds whose sequential restores were explained in the log


def _overlap_guess(ctx: RunContext, source, target, probe_cfg) -> tuple[_RecordedPoint | None, str]:
    """The recorded point to restore while it is confirmed and listed, or (None, why not)
    for the sequential path: the source cannot confine its writes (logged once per kind),
    no probe recorded a point, or its size is unknown (the capacity guard needs it)."""
    if not getattr(source, "confines_writes", False):
        why = ("Linux Landlock is not available" if hasattr(source, "confines_writes")
               else f"{probe_cfg.kind} restores are not confined to the sandbox")
        if probe_cfg.kind not in _EXPLAINED:
            _EXPLAINED.add(probe_cfg.kind)
            log.info("%s: %s, so %s restores start only after the point's listing was checked",
                     ctx.name, why, probe_cfg.kind)
        return None, why
    rows = ctx.store.query(
        "SELECT rp.point_id, rp.point_time, rp.size_bytes, rp.paths, run.details FROM current_points cp "
        "JOIN restore_points rp ON rp.id = cp.restore_point_id JOIN probe_runs run ON run.id = rp.probe_run_id "
        "WHERE cp.system = ? AND cp.copy = ? AND cp.probe = ? ORDER BY cp.confirmed_at DESC LIMIT 1",
        [target.system, probe_cfg.copy, target.probe])
    if not rows:
        return None, "no probe recorded a restore point yet"
    row = rows[0]
    if row["size_bytes"] is None:
        return None, f"the size of {row['point_id'][:8]} is unknown (the capacity guard needs it)"
    try:
        paths = tuple(json.loads(row["paths"] or "[]"))
    except ValueError:
        return None, "unreadable recorded paths"
    try:  # the file count, when the probe measured it too (a small file still takes a block)
        files = int(json.loads(row["details"] or "{}")["point_sizes"][row["point_id"]][1] or 0)
    except (ValueError, TypeError, KeyError, IndexError):
        files = 0
    return _RecordedPoint(row["point_id"], parse_ts(row["point_time"]), paths, int(row["size_bytes"]), files), ""


def _same_restore(point, started: list[str], wanted: list[str]) -> bool:
    """True when restoring `started` writes what restoring `wanted` would (the whole point
    for both, or the same paths)."""
    def whole(include):
        return not include or all(under_any(p, include) for p in point.paths)

    return whole(wanted) if whole(started) else sorted(started) == sorted(wanted)


@dataclass
class _Prepared:
    """What the point's listing tells before its restore is verified."""

    layout: Layout
    live_roots: list[str]
    listing: dict[str, SnapshotFile]
    files: list[SnapshotFile]
    include: list[str]
    source_root: Path


def _prepare(target, probe_cfg, point, entries, result: RestoreTestResult) -> _Prepared:
    result.point_id, result.point_time = point.id, point.time
    source_root = Path(target.spot_check.source_root) if target.spot_check else Path("/")
    layout = discover_layout(point.paths, (e.path for e in entries), lambda p: _children(source_root, p))
    live_roots = [str(p) for p in probe_cfg.source_paths(target.system)] or [live for _, live in layout.roots]
    listing = _live_listing(entries, layout, live_roots)
    files = [e for e in listing.values() if e.type == "file"]
    result.files_restored = len(files)
    result.bytes_restored = sum(f.size for f in files)
    include = [stored for stored in map(layout.to_stored, live_roots) if stored is not None]
    return _Prepared(layout, live_roots, listing, files, include, source_root)


def _spot_run(target, prep: _Prepared):
    """The spot check, its live side already hashing (None when not configured)."""
    spot = target.spot_check
    if spot is None or not (spot.files or spot.percent):
        return None
    layout = prep.layout
    return checks.SpotCheckRun(prep.files, spot, stored=lambda p: layout.to_stored(p) or p)


def _start_completeness(target, ctx: RunContext, background: ThreadPoolExecutor, prep: _Prepared, point):
    if not target.completeness.enabled:
        return None
    previous = completeness_check.previous_share(ctx.store, ctx.name, target.system)
    return background.submit(completeness_check.completeness, prep.live_roots, prep.source_root, prep.listing,
                             point.time, target.completeness, previous)


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


def _newest_with_listing(ctx: RunContext, source, system: str, copy: str, timeline: Timeline):
    """Return the newest restore point and its whole listing (the layout is read from it).

    Each restic call pays the repository's key derivation, so the listing of the point the
    last probe reported is fetched while `snapshots` confirms it is still the newest; it is
    used only if so.
    """
    known = ctx.store.latest_point_id(system, copy)
    newest, files = timeline.timed("snapshots", source.newest), timeline.timed("listing", source.files)
    if known is None:
        point = newest(system)
        return point, (files(point.id, []) if point else [])
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.submit(newest, system)
        guess = pool.submit(files, known, [])
        point = found.result()
        if point is not None and point.id == known:
            try:
                return point, guess.result()
            except SourceError:
                pass  # e.g. pruned since the probe ran: list the real newest below
    return point, (files(point.id, []) if point else [])


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
    """The verdict (`RestoreTestResult.judge`): RTO is the restore plus the verification."""
    result.judge(verdicts, (result.restore_seconds or 0) + (result.verify_seconds or 0))
