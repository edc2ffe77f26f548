"""Which restore points belong to which system, for file-level backup kinds.

A `SystemMapping` rule names a system and the criteria its restore points meet; a point
matches a rule when it meets every criterion given. Shared by every file-backup probe kind
(restic snapshots, borg archives) so the same rule means the same thing in each.
"""

from __future__ import annotations

import fnmatch
import os
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Iterable, Protocol, Sequence, TypeVar

from pydantic import Field, model_validator

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
