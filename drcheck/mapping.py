"""Which restore points belong to which system, for file-level backup kinds.

A `SystemMapping` rule names a system and the criteria its restore points meet; a point
matches a rule when it meets every criterion given. Shared by every file-backup probe kind
(restic snapshots, borg archives) so the same rule means the same thing in each.
"""

from __future__ import annotations

import fnmatch
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Protocol, Sequence, TypeVar

from pydantic import Field, model_validator

from drcheck.clients import SourceError
from drcheck.config_types import ConfigPath, Name, Strict


class SystemMapping(Strict):
    """Which backups belong to a system. A restore point matches when every given criterion
    matches: its host is one of `hosts`, it carries all `tags`, its name matches
    `name_glob`, and one of its paths is each of `paths` or an ancestor of it."""

    system: Name = Field(..., description="system name (a runbook file stem)")
    hosts: list[str] = Field(default_factory=list, description="host names that took the backup")
    tags: list[str] = Field(default_factory=list, description="tags a restore point must all carry")
    name_glob: str | None = Field(None, description="shell pattern on the restore point's name (borg archives)")
    paths: list[ConfigPath] = Field(default_factory=list, description="source paths of the system")

    @model_validator(mode="after")
    def _some_criterion(self) -> "SystemMapping":
        if not (self.hosts or self.tags or self.paths or self.name_glob):
            raise ValueError("give at least one of hosts, tags, name_glob, paths")
        return self


class Point(Protocol):
    """What mapping reads of a restore point."""

    hostname: str
    tags: Sequence[str]
    paths: Sequence[str]
    name: str


P = TypeVar("P", bound=Point)


def within(path: str | PurePosixPath, root: str | PurePosixPath) -> bool:
    """True when `path` is `root` or lies below it, lexically (no symlinks resolved, no
    filesystem access): for paths as a backup recorded them."""
    path, root = PurePosixPath(path), PurePosixPath(root)
    return path == root or root in path.parents


def resolved_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """True when `path` is `root` or lies below it on this machine, symlinks resolved (in
    both; parts that do not exist yet are taken as written): for paths drcheck writes to."""
    return within(Path(path).resolve(), Path(root).resolve())


def under_any(path: str, roots: Iterable[str]) -> bool:
    """True when `path` is within one of `roots` (no roots: everything is)."""
    roots = list(roots)
    return not roots or any(within(path, r) for r in roots)


def matches(point: Point, rule: SystemMapping) -> bool:
    """True when the restore point satisfies every criterion the rule gives."""
    if rule.hosts and point.hostname not in rule.hosts:
        return False
    if rule.tags and not set(rule.tags) <= set(point.tags):
        return False
    if rule.name_glob and not fnmatch.fnmatchcase(point.name, rule.name_glob):
        return False
    return all(any(within(wanted, p) for p in point.paths) for wanted in rule.paths)


def by_system(points: Iterable[P], rules: Iterable[SystemMapping]) -> dict[str, list[P]]:
    """Group points (kept in the given order) by the systems whose rules they match."""
    rules = list(rules)
    grouped: dict[str, list[P]] = defaultdict(list)
    for point in points:
        for system in {rule.system for rule in rules if matches(point, rule)}:
            grouped[system].append(point)
    return grouped


def identity_matches(point: Point, rule: SystemMapping) -> bool:
    """True when the point meets the rule's identity criteria (hosts, tags, name_glob),
    whatever paths it holds. A rule giving paths only has no identity apart from them."""
    if not (rule.hosts or rule.tags or rule.name_glob):
        return matches(point, rule)
    return matches(point, rule.model_copy(update={"paths": []}))


def by_identity(points: Iterable[P], rules: Iterable[SystemMapping]) -> dict[str, list[P]]:
    """Like `by_system`, but a point that fully matches no rule still belongs to each system
    whose rule's identity (hosts, tags, name_glob) it meets: the system's backup job took it,
    of other paths. Such a point can be a system's newest; `drcheck.coverage` judges whether
    it covers the system's paths. A point fully matching some rule belongs only there."""
    rules = list(rules)
    grouped: dict[str, list[P]] = defaultdict(list)
    for point in points:
        systems = {rule.system for rule in rules if matches(point, rule)}
        if not systems:
            systems = {rule.system for rule in rules if rule.paths and identity_matches(point, rule)}
        for system in systems:
            grouped[system].append(point)
    return grouped


# -- where a restore point stored its paths ----------------------------------------------


class LayoutError(SourceError):
    """drcheck cannot tell where a restore point stored the paths it recorded (ERROR: the
    data may well be there; drcheck will not call it missing)."""


@dataclass(frozen=True)
class Layout:
    """Where a restore point stored each path it recorded: pairs (stored root, live root).

    restic 0.14 records absolute `paths` but stores what it was given: `/srv/app` as
    `/srv/app/…`, `cd /srv && restic backup app` as `/app/…`, `cd /srv/app && restic
    backup .` as `/…`. `discover_layout` reads which from the point's own listing.
    """

    roots: tuple[tuple[str, str], ...]

    def to_live(self, stored: str) -> str | None:
        """The live path of a stored path, or None when it lies under no recorded path
        (e.g. the parent directories an absolute layout stores)."""
        for stored_root, live_root in sorted(self.roots, key=lambda r: -len(r[0])):
            if within(stored, stored_root):
                rel = PurePosixPath(stored).relative_to(stored_root)
                return str(PurePosixPath(live_root) / rel) if str(rel) != "." else live_root
        return None

    def to_stored(self, live: str) -> str | None:
        """Where the point stores a live path, or None when it recorded no path above it."""
        for stored_root, live_root in sorted(self.roots, key=lambda r: -len(r[1])):
            if within(live, live_root):
                rel = PurePosixPath(live).relative_to(live_root)
                return str(PurePosixPath(stored_root) / rel) if str(rel) != "." else stored_root
        return None

    @property
    def relocated(self) -> bool:
        return any(s != l for s, l in self.roots)

    def describe(self) -> str:
        return "; ".join(f"{live} stored as {stored}" if stored != live else f"{live} stored as is"
                         for stored, live in self.roots)


def discover_layout(recorded: Sequence[str], listed: Iterable[str],
                    live_children: Callable[[str], set[str] | None] = lambda _: None) -> Layout:
    """Read from a point's listing where it stored each of its `recorded` paths.

    Candidates per recorded path R, in order of precedence: R itself (absolute), `/name`
    (its last component: the backup was given a relative path), `/` (its contents: `.`;
    only for a point of one path). When the live directory R can be read
    (`live_children(R)` gives its entry names), the candidate whose stored children share
    the most names with it wins; ties and unreadable sources go by precedence. Raise
    LayoutError when no candidate is in the listing. An empty listing maps as stored.
    """
    present: set[str] = set()
    children: dict[str, set[str]] = defaultdict(set)
    for path in listed:
        node = PurePosixPath(path)
        while node not in (node.parent,) and str(node) not in present:
            present.add(str(node))
            children[str(node.parent)].add(node.name)
            node = node.parent
    if not present:
        return Layout(tuple((r, r) for r in recorded))
    roots = []
    for raw in recorded:
        path = PurePosixPath(raw)
        candidates = [str(path)] if str(path) in present else []
        if path.parent != PurePosixPath("/") and f"/{path.name}" in present:
            candidates.append(f"/{path.name}")
        if len(recorded) == 1:
            candidates.append("/")
        candidates = [c for c in candidates if c in present or c == "/"]
        if not candidates:
            raise LayoutError(f"cannot tell where the restore point stored {raw}: neither {raw} nor "
                              f"/{path.name} is in its listing; drcheck does not guess")
        live = live_children(str(path))
        if live:
            scores = [len(children.get(c, set()) & live) for c in candidates]
            chosen = candidates[scores.index(max(scores))]
        else:
            chosen = candidates[0]
        roots.append((chosen, str(path)))
    stored = [s for s, _ in roots]
    if len(set(stored)) != len(stored):
        raise LayoutError(f"the restore point stores several recorded paths at the same place "
                          f"({', '.join(recorded)}); drcheck cannot tell them apart")
    return Layout(tuple(roots))
