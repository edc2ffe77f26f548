"""Third pass of `load`: settings that validate one by one but would surely fail when used.

Unreadable secret files, expected paths that escape the restored source, runbook
dependency cycles, recovery targets that contradict each other (RTO or RTO + WRT above
MTD). `warnings(loaded)` lists what is merely doubtful (a job that may run longer than
its interval); `config validate` prints those without failing.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from pydantic import BaseModel

from drcheck.config_types import SecretSpec
from drcheck.durations import format_duration
from drcheck.kinds import FileBackupTarget, action_timeout, probe_module
from drcheck.mapping import within

if TYPE_CHECKING:
    from drcheck.config_loader import LoadedConfig


def _display(path: Path) -> str:
    from drcheck.config_loader import _display as display

    return display(path)


def secrets_in(node: Any, key: str = "") -> Iterator[tuple[str, SecretSpec]]:
    """Every secret reference in a configuration (sub)tree, with its key path."""
    if isinstance(node, SecretSpec):
        yield key, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from secrets_in(getattr(node, name), f"{key}.{name}" if key else name)
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from secrets_in(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from secrets_in(value, f"{key}[{i}]")


def secret_problem(spec: SecretSpec) -> str | None:
    """Why the file behind a secret reference cannot be read now, else None. Credentials
    are checked only where $CREDENTIALS_DIRECTORY is set (i.e. under systemd)."""
    if spec.file is not None:
        path = Path(spec.file)
    elif spec.credential is not None and os.environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(os.environ["CREDENTIALS_DIRECTORY"]) / spec.credential
    else:
        return None
    if not path.exists():
        return f"secret file {path} does not exist"
    if not path.is_file():
        return f"secret file {path} is not a regular file"
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"secret file {path} cannot be read ({exc.strerror})"
    return None


def dependency_cycles(depends: dict[str, list[str]]) -> list[list[str]]:
    """Each dependency cycle once, as [a, b, …, a], starting at its smallest name."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in depends.get(node, []):
            if dep not in depends:
                continue  # unknown systems are reported elsewhere
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep):] + [dep] if dep in trail else [node, dep]
                start = cycle.index(min(cycle[:-1]))
                canonical = tuple(cycle[start:-1] + cycle[:start])
                if canonical not in seen:
                    seen.add(canonical)
                    cycles.append(list(canonical) + [canonical[0]])
            elif state.get(dep) is None:
                visit(dep, trail + [dep])
        state[node] = 2

    for node in sorted(depends):
        if node not in state:
            visit(node, [node])
    return cycles


def surely_failing(loaded: "LoadedConfig") -> list[str]:
    """One "<file>: <key>: <message>" line per setting that cannot work."""
    cfg = loaded.config
    where = _display(loaded.path)
    errors: list[str] = []
    for key, spec in secrets_in(cfg):
        if (problem := secret_problem(spec)):
            errors.append(f"{where}: {key}: {problem}")
    for name, test in cfg.restore_tests.items():
        probe = cfg.probes.get(test.probe)
        sources = probe.source_paths(test.system) if isinstance(probe, FileBackupTarget) else []
        for i, path in enumerate(getattr(test, "expected_paths", None) or []):
            key = f"restore_tests.{name}.expected_paths[{i}]"
            if ".." in Path(path).parts:
                errors.append(f"{where}: {key}: {path} contains '..'; expected paths name files inside the "
                              "restored source and may not escape it")
            elif Path(path).is_absolute() and sources and not any(within(path, s) for s in sources):
                errors.append(f"{where}: {key}: {path} is outside every source path of {test.system} "
                              f"({', '.join(map(str, sources))}); it can never be restored")
        canary = getattr(test, "canary", None)
        if canary is not None and ".." in Path(canary.path).parts:
            errors.append(f"{where}: restore_tests.{name}.canary.path: {canary.path} contains '..'")
    runbooks_dir = cfg.agent.runbooks_dir
    for system, runbook in sorted(loaded.runbooks.items()):
        file = _display(runbooks_dir / f"{system}.toml")
        if runbook.rto > runbook.mtd:
            errors.append(f"{file}: rto: RTO {format_duration(runbook.rto.total_seconds())} is longer than the "
                          f"maximum tolerable downtime (mtd {format_duration(runbook.mtd.total_seconds())})")
        elif runbook.wrt is not None and runbook.rto + runbook.wrt > runbook.mtd:
            total = (runbook.rto + runbook.wrt).total_seconds()
            errors.append(f"{file}: wrt: RTO + WRT = {format_duration(total)} is longer than the maximum "
                          f"tolerable downtime (mtd {format_duration(runbook.mtd.total_seconds())})")
    for cycle in dependency_cycles({s: list(rb.depends_on) for s, rb in loaded.runbooks.items()}):
        file = _display(runbooks_dir / f"{cycle[0]}.toml")
        errors.append(f"{file}: depends_on: dependency cycle {' -> '.join(cycle)}; no recovery order exists")
    return errors


def _shortest_gap(schedule, zone: str) -> timedelta | None:
    if schedule.interval is not None:
        return schedule.interval
    from datetime import datetime, timezone

    trigger = schedule.trigger(zone)
    first = trigger.get_next_fire_time(None, datetime.now(timezone.utc))
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    return (second - first) if first and second else None


def warnings(loaded: "LoadedConfig") -> list[str]:
    """Doubtful but workable settings: a job whose timeout is longer than the time between
    its runs (the next run is skipped while it still runs)."""
    cfg = loaded.config
    where = _display(loaded.path)
    found: list[str] = []
    zone = cfg.agent.timezone

    def check(key: str, schedule, limit: timedelta) -> None:
        gap = _shortest_gap(schedule, zone) if schedule else None
        if gap is not None and limit > gap:
            found.append(f"{where}: {key}: the job may run for up to {format_duration(limit.total_seconds())} "
                         f"but is scheduled every {format_duration(gap.total_seconds())}; runs that find the "
                         "previous one still running are skipped")

    for name, probe in cfg.probes.items():
        for action in probe_module(probe.kind).ACTIONS:
            check(f"probes.{name}.{action}.schedule", getattr(probe, action).schedule,
                  action_timeout(probe, action, cfg.agent.job_timeout))
    for name, test in cfg.restore_tests.items():
        check(f"restore_tests.{name}.schedule", test.schedule, test.timeout or cfg.agent.job_timeout)
    return found
