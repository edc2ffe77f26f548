"""Checks: verifications of a restored file tree. Each returns a CheckResult with its
evidence and duration, and can fail for real reasons. None follows a path out of the
sandbox: a restored symlink pointing outside is refused, not read."""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Sequence

from drcheck import canary as canaries
from drcheck.clients import process
from drcheck.config import CommandCheck, SpotCheck
from drcheck.durations import format_duration
from drcheck.results import CheckResult, SnapshotFile, Status
from drcheck.sandbox import SandboxRefused, contained
from drcheck.store import Store


def timed(name: str, body: Callable[[], tuple[Status, str, dict]]) -> CheckResult:
    """Run a check body and wrap its (status, evidence, details) with the time it took."""
    start = time.perf_counter()
    try:
        status, evidence, details = body()
    except SandboxRefused as exc:
        status, evidence, details = Status.FAILED, f"refused: {exc}", {}
    return CheckResult(name, status, evidence, time.perf_counter() - start, details)


def expected_paths(sandbox: Path, paths: Sequence[str]) -> CheckResult:
    """Every path must exist in the restore (inside the sandbox) and be non-empty."""

    def body():
        problems = []
        for wanted in paths:
            restored = contained(sandbox, wanted)
            if not restored.exists() and not restored.is_symlink():
                problems.append(f"{wanted}: missing")
            elif restored.is_file() and restored.stat().st_size == 0:
                problems.append(f"{wanted}: empty file")
            elif restored.is_dir() and not any(restored.iterdir()):
                problems.append(f"{wanted}: empty directory")
        if problems:
            return Status.FAILED, "; ".join(problems), {"problems": problems}
        return Status.PASSED, f"{len(paths)} path(s) present and non-empty", {}

    return timed("expected_paths", body)


def canary(sandbox: Path, snapshot_path: str, store: Store, started_at: datetime,
           max_age: timedelta) -> tuple[CheckResult, datetime | None]:
    """The canary must be in the restore, planted by drcheck, and at most `max_age` old at
    test start. Return the result and the canary's time (None when not usable)."""
    found: list[datetime] = []

    def body():
        restored = contained(sandbox, snapshot_path)
        if not restored.is_file() or restored.is_symlink():
            return Status.FAILED, f"no canary at {snapshot_path} in the restore", {}
        try:
            planted = canaries.read(restored)
        except ValueError as exc:
            return Status.FAILED, f"{snapshot_path}: {exc}", {}
        if store.canary_planted_at(planted.token) is None:
            return Status.FAILED, "canary token was not planted by this agent", {}
        found.append(planted.written_at)
        age = (started_at - planted.written_at).total_seconds()
        details = {"written_at": planted.written_at.isoformat(), "age_seconds": age}
        verdict = f"canary written {format_duration(age)} before the test (limit {format_duration(max_age.total_seconds())})"
        if age > max_age.total_seconds():
            return Status.FAILED, f"stale {verdict}", details
        return Status.PASSED, verdict, details

    result = timed("canary", body)
    return result, (found[0] if found else None)


def _digest(path: Path) -> str:
    with open(path, "rb", buffering=0) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _unchanged(live: Path, entry: SnapshotFile) -> bool:
    try:
        st = live.lstat()
    except OSError:
        return False
    if not live.is_file() or live.is_symlink() or st.st_size != entry.size or entry.mtime is None:
        return False
    return abs(st.st_mtime - entry.mtime.timestamp()) < 0.001


def spot_check(sandbox: Path, files: Sequence[SnapshotFile], config: SpotCheck,
               rng: random.Random | None = None, workers: int = 4) -> CheckResult:
    """Hash a sample of restored files that are unchanged at the live source and compare.

    Eligible: regular files whose live copy (under `config.source_root`) has the snapshot's
    size and mtime. Sample size: max(`files`, `percent` of eligible), capped at eligible.
    """

    def body():
        source_root = Path(config.source_root)
        eligible = [f for f in files if _unchanged(source_root.joinpath(f.path.lstrip("/")), f)]
        if not eligible:
            return (Status.FAILED,
                    f"none of {len(files)} snapshot file(s) is unchanged at the live source under "
                    f"{source_root}; nothing to compare", {"eligible": 0})
        wanted = max(config.files, math.ceil(len(eligible) * config.percent / 100))
        sample = (rng or random.SystemRandom()).sample(eligible, min(wanted, len(eligible)))

        def compare(entry: SnapshotFile) -> str | None:
            restored = contained(sandbox, entry.path)
            if not restored.is_file():
                return f"{entry.path}: missing from the restore"
            if restored.stat().st_size != entry.size:
                return f"{entry.path}: restored size {restored.stat().st_size} != {entry.size}"
            if _digest(restored) != _digest(source_root.joinpath(entry.path.lstrip("/"))):
                return f"{entry.path}: sha256 differs from the live source"
            return None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            mismatches = [m for m in pool.map(compare, sample) if m]
        details = {"eligible": len(eligible), "sampled": len(sample), "mismatches": mismatches[:50]}
        if mismatches:
            return Status.FAILED, f"{len(mismatches)} of {len(sample)} sampled file(s) differ: " + "; ".join(mismatches[:5]), details
        return Status.PASSED, f"{len(sample)} of {len(eligible)} unchanged file(s) hashed, all match the live source", details

    return timed("spot_check", body)


def command(sandbox: Path, data_root: Path, check: CommandCheck) -> CheckResult:
    """Run a configured command against the restore; compare exit status and output."""
    argv = [arg.replace("{restore}", str(sandbox)).replace("{data}", str(data_root)) for arg in check.run]
    name = check.name or f"command: {' '.join(check.run)[:80]}"

    def body():
        try:
            done = process.run(argv, timeout=check.timeout.total_seconds(), cwd=data_root if data_root.is_dir() else sandbox)
        except (process.CommandTimeout, process.CommandNotFound) as exc:
            return Status.FAILED, str(exc), {}
        output = (done.stdout.strip() or done.stderr.strip())[-300:]
        details = {"exit": done.returncode, "output": output}
        if done.returncode != check.expect_exit:
            return Status.FAILED, f"exit {done.returncode} (expected {check.expect_exit}): {output}", details
        if check.expect_output is not None and not re.search(check.expect_output, done.stdout):
            return Status.FAILED, f"output does not match /{check.expect_output}/: {output}", details
        return Status.PASSED, f"exit {done.returncode}: {output[:120]}", details

    return timed(name, body)
