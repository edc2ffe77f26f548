"""Completeness check: does the restore point hold everything the live source held at the
point's time? Metadata only (one walk of the live source against the point's own listing,
no hashing), so it covers every file, not a sample.

Every live regular file is one of:
- excluded: matches a configured pattern (counted and reported, never silently skipped);
- changed since the point: its mtime is newer than the point and the point holds another
  version or none (not a failure: the point cannot have it);
- comparable: the point holds it with the same mtime (its size must match: a different
  size at an unchanged mtime is a failure), or the file is older than the point (it must
  be present: absent is a failure, reported by its topmost missing directory).
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from pydantic import Field

from drcheck.config_types import Strict
from drcheck.results import CheckResult, SnapshotFile, Status
from drcheck.store import Store

MTIME_TOLERANCE = 0.001  # seconds: backup tools round mtimes differently (ns vs µs)


class Completeness(Strict):
    """Compare the live source's listing with the restore point's (metadata only)."""

    enabled: bool = Field(True, description="run the completeness check")
    excludes: list[str] = Field(
        default_factory=list,
        description="glob patterns of live files the backup knowingly leaves out (caches, temp), matched "
                    "against the path below the source path; a pattern without '/' also matches any name. "
                    "Excluded files are counted in the evidence",
    )
    max_listed: int = Field(20, strict=True, ge=1, description="name at most this many problems, then a count")
    share_drop: float = Field(
        0.5, strict=False, ge=0, le=1,
        description="warn (in the evidence; the check still passes) when the share of the source that "
                    "could be compared falls below this fraction of the previous run's share",
    )


def same_mtime(a: datetime | None, b: float) -> bool:
    return a is not None and abs(a.timestamp() - b) < MTIME_TOLERANCE


@dataclass
class Tally:
    total: int = 0
    comparable: int = 0
    changed_since: int = 0
    excluded_files: int = 0
    excluded_dirs: int = 0
    other_version: int = 0
    missing: list[str] = field(default_factory=list)
    size_mismatches: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _excluded(relative: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative, p) or ("/" not in p and fnmatch.fnmatchcase(name, p))
               for p in patterns)


def _walk(root: PurePosixPath, disk: Path, listing: Mapping[str, SnapshotFile], point_ts: float,
          patterns: Sequence[str], tally: Tally) -> None:
    """One walk of the live tree (no symlinks followed), judging each regular file."""
    stack = [("", disk)]
    while stack:
        relative_dir, directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            tally.unreadable.append(f"{root / relative_dir}: {exc.strerror}")
            continue
        for entry in entries:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished during the walk
            is_dir = stat.S_ISDIR(st.st_mode)
            if patterns and _excluded(relative, entry.name, patterns):
                if is_dir:
                    tally.excluded_dirs += 1
                else:
                    tally.excluded_files += 1
                continue
            if is_dir:
                stack.append((relative, Path(entry.path)))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            tally.total += 1
            live = str(root / relative)
            stored = listing.get(live)
            if stored is not None and stored.type == "file" and same_mtime(stored.mtime, st.st_mtime):
                tally.comparable += 1
                if stored.size != st.st_size:
                    tally.size_mismatches.append(f"{live} (stored {stored.size} bytes, live {st.st_size}, same mtime)")
            elif st.st_mtime > point_ts:
                tally.changed_since += 1
            elif stored is not None and stored.type == "file":
                tally.comparable += 1
                tally.other_version += 1  # present; its mtime was set back since: size may differ
            else:
                tally.comparable += 1
                tally.missing.append(live)


def _group_missing(missing: list[str], present: set[str], roots: Sequence[PurePosixPath]) -> list[str]:
    """Name each missing file by its topmost directory absent from the point (with a count),
    or by itself when its directory is there."""
    groups: Counter[str] = Counter()
    for path in missing:
        node = PurePosixPath(path)
        top = node
        for parent in node.parents:
            if parent in roots or any(parent in r.parents for r in roots) or str(parent) in present:
                break
            top = parent
        groups[str(top) + ("/" if top != node else "")] += 1
    return [f"{name} ({n} files)" if name.endswith("/") else name for name, n in sorted(groups.items())]


def previous_share(store: Store, test: str, system: str) -> float | None:
    """The comparable share the previous completeness check of this test reported."""
    rows = store.query(
        "SELECT c.details FROM check_results c JOIN restore_tests t ON c.restore_test_id = t.id "
        "WHERE t.test = ? AND t.system = ? AND c.name = 'completeness' AND c.status = 'passed' "
        "ORDER BY c.id DESC LIMIT 1", [test, system])
    try:
        share = json.loads(rows[0]["details"]).get("share") if rows else None
    except (json.JSONDecodeError, AttributeError):
        return None
    return float(share) if isinstance(share, (int, float)) else None


def completeness(live_roots: Sequence[str], source_root: Path, listing: Mapping[str, SnapshotFile],
                 point_time: datetime, config: Completeness, previous: float | None = None) -> CheckResult:
    """Judge the point's listing (keyed by live path, see drcheck.mapping.Layout) against the
    live source under `live_roots` (found below `source_root`). FAILED naming missing files
    and directories and size mismatches; ERROR when the live source cannot be read at all."""
    start = time.perf_counter()
    tally = Tally()
    roots = [PurePosixPath(r) for r in live_roots]
    absent_roots = []
    for root in roots:
        disk = Path(source_root) / str(root).lstrip("/")
        if not disk.is_dir() or disk.is_symlink():
            absent_roots.append(str(disk))
            continue
        _walk(root, disk, listing, point_time.timestamp(), config.excludes, tally)
    present = {str(p) for path in listing for p in (PurePosixPath(path), *PurePosixPath(path).parents)}
    missing = _group_missing(tally.missing, present, roots)
    share = tally.comparable / tally.total if tally.total else None
    details = {
        "source_files": tally.total, "comparable": tally.comparable, "share": share,
        "changed_since_point": tally.changed_since, "present_other_version": tally.other_version,
        "excluded_files": tally.excluded_files, "excluded_dirs": tally.excluded_dirs,
        "missing_files": len(tally.missing), "size_mismatches": len(tally.size_mismatches),
        "missing": missing[: config.max_listed], "mismatched": tally.size_mismatches[: config.max_listed],
        "unreadable": tally.unreadable[: config.max_listed], "warnings": [],
    }
    excluded = (f"; excluded by pattern: {tally.excluded_files} file(s), {tally.excluded_dirs} dir(s)"
                if tally.excluded_files or tally.excluded_dirs else "")
    problems = []
    if tally.missing:
        problems.append(f"{len(tally.missing)} source file(s) older than the point are missing from it: "
                        + _listed(missing, config.max_listed))
    if tally.size_mismatches:
        problems.append(f"{len(tally.size_mismatches)} file(s) stored with another size at an unchanged mtime: "
                        + _listed(tally.size_mismatches, config.max_listed))
    if problems:
        status, evidence = Status.FAILED, "; ".join(problems) + excluded
    elif absent_roots or tally.unreadable:
        status = Status.ERROR
        evidence = "cannot read the live source: " + _listed(absent_roots + tally.unreadable, config.max_listed)
    else:
        status = Status.PASSED
        evidence = (f"{tally.comparable} of {tally.total} source file(s) comparable "
                    f"({share:.0%}) and all present" if share is not None else "the live source holds no files")
        if tally.comparable:
            evidence += " with matching sizes"
        evidence += f"; {tally.changed_since} changed since the point" + excluded
        if share is not None and previous and share < previous * config.share_drop:
            warning = (f"WARNING: comparable share fell to {share:.0%} from {previous:.0%} in the previous run "
                       "(is the live source still the one backed up?)")
            details["warnings"].append(warning)
            evidence += f"; {warning}"
    return CheckResult("completeness", status, evidence, time.perf_counter() - start, details)


def _listed(items: Sequence[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
