"""The contracts every probe kind and restore-test kind meets, stated once.

A kind is one module (`probes/<kind>.py` or `restore_tests/<kind>.py`), its client in
`drcheck/clients/`, its config model (a `ProbeTarget` / `RestoreTestTarget` subclass named
by the module's `Target`), one registry line and its tests. Nothing else in the engine,
CLI, scheduler, status, store or demo names a kind or an action: they read the declarations
below. `tests/unit/test_registries.py` checks every registered module against its protocol.

Config models of a kind live in the kind's module, so building the configuration schema
imports every registered kind module. A kind module therefore imports its heavy client
library (pyvmomi, boto3, paramiko…) only inside the functions that talk to the system.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from datetime import timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, Field

from drcheck.config_types import Duration, Name, Schedule, Strict
from drcheck.mapping import SystemMapping

if TYPE_CHECKING:
    from pathlib import Path

    from drcheck.config_loader import LoadedConfig
    from drcheck.context import RunContext
    from drcheck.results import ProbeResult, RestoreTestResult, SnapshotFile


# -- configuration ---------------------------------------------------------------------


class ActionConfig(Strict):
    """When and how long one probe action runs. Each action of a kind is a table of its
    own, named after the action (`[probes.NAME.check]`), holding at least these keys."""

    schedule: Schedule | None = Field(None, description="when to run it (default: only on demand)")
    timeout: Duration | None = Field(
        None, description="limit of this action (default: the kind's own, else agent.job_timeout)"
    )


class ProbeTarget(Strict):
    """Keys every probe has, whatever its kind."""

    kind: str
    copy: Name | None = Field(None, description="the copy (from [copies]) this source is, if it is one")

    def systems_covered(self) -> set[str]:
        """The systems (runbook names) whose restore points this probe reports."""
        return set()

    def copies_of(self, system: str) -> list[str]:
        """The copies this probe lists restore points of `system` in, each judged by
        R2.backup_age: its `copy`; a kind that reads several copies (an appliance and its
        off-site replica) names each, so a copy gone missing shows. A kind with extra copy
        keys checks them in `references`."""
        return [self.copy] if self.copy else []

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        """Cross-reference problems as (key path below this probe, message); checked after
        every file validated. The generic ones (copy, systems) are the loader's."""
        return []

    def proven_facts(self) -> dict[str, set[str]]:
        """Copy -> the protection facts (CopyConfig keys: encrypted_at_rest, immutable…)
        this kind verifies by reading the copy at all, so the compliance rules show them
        as proven rather than declared. Default: none."""
        return {}


class FileBackupTarget(ProbeTarget):
    """Keys of every file-level backup kind (restic, borg): rules mapping its restore
    points to systems, whose `paths` are also where the live source is."""

    copy: Name = Field(..., description="the copy (from [copies]) this source is")
    systems: list[SystemMapping] = Field(..., min_length=1, description="restore-point-to-system rules")

    def systems_covered(self) -> set[str]:
        return {rule.system for rule in self.systems}

    def source_paths(self, system: str) -> list["Path"]:
        """The live source paths the rules give for `system` (in rule order)."""
        return [p for rule in self.systems if rule.system == system for p in rule.paths]

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        return [(f"systems[{i}].system", problem) for i, rule in enumerate(self.systems)
                if (problem := loaded.unknown_system(rule.system))]


class RestoreTestTarget(Strict):
    """Keys every restore test has, whatever its kind."""

    kind: str
    system: Name = Field(..., description="the system to restore")
    probe: Name = Field(..., description="the probe (from [probes]) whose copy to restore from")
    schedule: Schedule | None = Field(None, description="when to run (default: only on demand)")
    timeout: Duration | None = Field(None, description="overall limit (default: agent.job_timeout)")

    # Kinds that plant canaries in a live source (files) override this with a `canary`
    # field; the CLI and the scheduler look at every test's.
    canary: ClassVar[Any] = None

    def references(self, loaded: "LoadedConfig") -> list[tuple[str, str]]:
        """Kind-specific cross-reference problems as (key path below this test, message)."""
        return []


warnings.filterwarnings("ignore", message='Field name "canary" in ".*" shadows an attribute', category=UserWarning)


def action_timeout(target: ProbeTarget, action: str, job_timeout: timedelta) -> timedelta:
    """The limit of one probe action: its configured timeout, else the kind's default for
    that action (`ACTION_TIMEOUTS` of the module), else the agent's job timeout."""
    settings: ActionConfig = getattr(target, action)
    if settings.timeout is not None:
        return settings.timeout
    return probe_module(target.kind).ACTION_TIMEOUTS.get(action, job_timeout)


def integrity_check(target: ProbeTarget, ctx: "RunContext", run: "Callable[[float], str]",
                    details: dict[str, Any]) -> "ProbeResult":
    """The shared shape of every kind's `check` action: `run(limit_seconds)` calls the
    client's integrity check and returns its summary. Damaged data (a `SourceError` with
    `damaged`) is FAILED keeping the tool's own words; anything that kept the tool from
    checking is ERROR."""
    from drcheck.clients import SourceError
    from drcheck.results import ProbeResult, Status

    result = ProbeResult.begin(ctx, target, "check")
    try:
        result.reason = run(action_timeout(target, "check", ctx.loaded.config.agent.job_timeout).total_seconds())
    except SourceError as exc:
        result.status = Status.FAILED if exc.damaged else Status.ERROR
        result.reason = f"repository check failed: {exc}" if exc.damaged else str(exc)
    result.details = details
    return result.conclude(ctx)


# -- module protocols ------------------------------------------------------------------


class ProbeAction(Protocol):
    def __call__(self, target: Any, ctx: "RunContext") -> "ProbeResult": ...


@runtime_checkable
class ProbeModule(Protocol):
    """`probes/<kind>.py`. `ACTIONS` maps each action name to its function, the first being
    the default (`drcheck probe NAME` runs it); `LISTS_POINTS` names the actions whose
    successful run reports the copy's current restore points. `Target` is the config model;
    it has one `ActionConfig` field per action. `ACTION_TIMEOUTS` gives per-action default
    limits (missing: agent.job_timeout). Actions are read-only."""

    Target: type[ProbeTarget]
    ACTIONS: Mapping[str, ProbeAction]
    LISTS_POINTS: frozenset[str]
    ACTION_TIMEOUTS: Mapping[str, timedelta]


class RestorePointRef(Protocol):
    """What a file source's `newest` returns."""

    id: str
    time: Any
    paths: Sequence[str]


@runtime_checkable
class FileSource(Protocol):
    """Restore access to one copy's file-level restore points, offered by file-backup probe
    kinds through `file_source(target)`. The `files` restore test works on any of them.

    - `newest(system)`: the system's newest restore point, or None.
    - `files(point_id, include)`: every entry of the point under `include` (absolute
      paths as the point recorded them, all types), after refusing any entry that could
      escape a restore target (raise `SandboxRefused`).
    - `restore(point, dest, include, timeout)`: write the point (or its `include` paths)
      into `dest`, absolute paths re-rooted there.
    Client failures raise `SourceError` subclasses (`damaged=True`: the backup is bad).
    """

    def newest(self, system: str) -> RestorePointRef | None: ...

    def files(self, point_id: str, include: list[str]) -> "list[SnapshotFile]": ...

    def restore(self, point: Any, dest: "Path", include: list[str], timeout: float | None) -> None: ...


class ConfiningFileSource(FileSource, Protocol):
    """Optional extension of `FileSource` for kinds whose restore tool can be confined by
    the kernel to writing into the restore target (restic, with Linux Landlock).

    - `confines_writes`: True when `restore(..., confined=True)` will work now. A source
      without the attribute (borg) counts as False.
    - `restore(point, dest, include, timeout, confined=True, cancel=None)`: the tool can
      write nowhere but below `dest` (and its own cache, private temporary files and a
      local repository's locks), whatever the point holds; raise `SourceError` rather than
      run unconfined. `cancel` (`drcheck.clients.process.Cancel`) may kill the restore from
      another thread; it then raises `process.CommandCancelled`.

    Only such a restore may start before `files` has checked the point's listing for
    escaping entries (the `files` restore test overlaps them); an unconfined restore
    always waits for that check.
    """

    confines_writes: bool

    def restore(self, point: Any, dest: "Path", include: list[str], timeout: float | None,
                confined: bool = False, cancel: Any = None) -> None: ...


@runtime_checkable
class FileBackupModule(ProbeModule, Protocol):
    """A probe kind over file-level backups (restic, borg): also `file_source(target)`."""

    def file_source(self, target: Any) -> FileSource: ...


@runtime_checkable
class LabRepository(Protocol):
    """Demo support of a file-backup kind: create the repository and take dated backups.
    `owned_paths()` lists every path it would create (the demo refuses any outside its lab)."""

    def owned_paths(self) -> list["Path"]: ...

    def init(self) -> None: ...

    def backup(self, paths: list["Path"], host: str, tags: list[str], when: Any) -> None: ...


@runtime_checkable
class LabPeer(Protocol):
    """Demo support of a kind whose source is a service (a vCenter), offered through the
    module's `lab_peer(target, loaded)`: `init()` writes its secrets and certificates,
    `start()` serves what the configuration expects until `stop()`. `owned_paths()` lists
    every path it would create (the demo refuses any outside its lab)."""

    def owned_paths(self) -> list["Path"]: ...

    def init(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@runtime_checkable
class RestoreTestModule(Protocol):
    """`restore_tests/<kind>.py`: `run(target, ctx)` restores into a leased sandbox,
    verifies, measures and always cleans up; `Target` is its config model. A run that
    tests several things (a rotation over VMs) returns one result per thing tested, in
    the order tested; the engine records each."""

    Target: type[RestoreTestTarget]

    def run(self, target: Any, ctx: "RunContext") -> "RestoreTestResult | list[RestoreTestResult]": ...


def rotation_coverage(loaded: "LoadedConfig", store: Any, now: Any) -> list[Any]:
    """Where every rotating restore test stands: the `coverage(loaded, store, name, now)`
    of each test whose kind offers one (a rotation over VMs), for status and reports.
    A kind's coverage raises KeyError for a test of its kind that does not rotate."""
    found = []
    for name, test in loaded.config.restore_tests.items():
        module = restore_test_module(test.kind)
        if hasattr(module, "coverage"):
            try:
                found.append(module.coverage(loaded, store, name, now))
            except KeyError:
                continue
    return found


# -- registries ------------------------------------------------------------------------


def load_module(registry: Mapping[str, str], kind: str) -> ModuleType:
    """Import the module registered for `kind`; raise KeyError for an unknown kind."""
    return importlib.import_module(registry[kind])


def probe_module(kind: str) -> ModuleType:
    from drcheck.probes import REGISTRY

    return load_module(REGISTRY, kind)


def restore_test_module(kind: str) -> ModuleType:
    from drcheck.restore_tests import REGISTRY

    return load_module(REGISTRY, kind)


def lists_points(kind: str, action: str) -> bool:
    """True when `action` of probe kind `kind` lists its copy's restore points; False for
    a kind no longer registered (its history stays, it decides nothing)."""
    try:
        return action in probe_module(kind).LISTS_POINTS
    except KeyError:
        return False


def target_models(registry: Mapping[str, str]) -> list[type[BaseModel]]:
    """The config models of every registered kind, in registry order."""
    return [load_module(registry, kind).Target for kind in registry]


def conformance_problems(module: ModuleType | type, protocol: type) -> list[str]:
    """Return what `module` lacks to meet `protocol` (names, callables, parameter names),
    empty when it conforms. Used by the registry test for every registered module."""
    problems = []
    hints = [c for c in protocol.__mro__ if c not in (Protocol, object, Any) and hasattr(c, "__annotations__")]
    wanted: dict[str, Any] = {}
    for cls in reversed(hints):
        wanted.update({name: None for name in getattr(cls, "__annotations__", {})})
        wanted.update({name: value for name, value in vars(cls).items()
                       if callable(value) and not name.startswith("_")})
    for name, spec in wanted.items():
        if not hasattr(module, name):
            problems.append(f"{module.__name__} has no {name}")
            continue
        if spec is not None and callable(spec):
            expected = [p for p in inspect.signature(spec).parameters if p != "self"]
            actual = [p for p in inspect.signature(getattr(module, name)).parameters if p != "self"]
            if actual[: len(expected)] != expected:
                problems.append(f"{module.__name__}.{name}{tuple(actual)} does not take {tuple(expected)}")
    return problems


def action_problems(module: ModuleType) -> list[str]:
    """Return what is inconsistent between a probe module's ACTIONS and its Target model."""
    problems = []
    fields = {name for name, info in module.Target.model_fields.items()
              if isinstance(info.annotation, type) and issubclass(info.annotation, ActionConfig)}
    if set(module.ACTIONS) != fields:
        problems.append(f"{module.__name__}: ACTIONS {sorted(module.ACTIONS)} != ActionConfig fields {sorted(fields)}")
    if not set(module.LISTS_POINTS) <= set(module.ACTIONS):
        problems.append(f"{module.__name__}: LISTS_POINTS names unknown actions")
    for name, func in module.ACTIONS.items():
        if list(inspect.signature(func).parameters)[:2] != ["target", "ctx"]:
            problems.append(f"{module.__name__}: action {name} does not take (target, ctx)")
    return problems


def kinds_of(models: Iterable[type[BaseModel]]) -> list[str]:
    """The `kind` literal of each model."""
    import typing

    return [typing.get_args(m.model_fields["kind"].annotation)[0] for m in models]
