"""Reading Linux /proc: the one place drcheck parses `/proc/<pid>/stat`.

Used by lease ownership (is the process that took a lease still the same, alive process?)
and by the agent's job supervision (which processes belong to a job's session?).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat drcheck uses."""

    state: str        # R, S, D, Z (zombie), X (dead), ...
    session: int
    start_time: str   # clock ticks after boot, as text: with the pid, identifies a process

    @property
    def exited(self) -> bool:
        """A zombie or dead process holds its pid but will never run again."""
        return self.state in ("Z", "X")


def stat(pid: int | str) -> ProcStat | None:
    """Return the parsed /proc/<pid>/stat, or None when it cannot be read (no such
    process, or hidden by hidepid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'
    fields = raw.rsplit(b")", 1)[1].split()
    return ProcStat(state=fields[0].decode(), session=int(fields[3]), start_time=fields[19].decode())


def pids() -> Iterator[int]:
    """Every pid currently listed in /proc."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def start_time(pid: int) -> str | None:
    """Return an identifier of when process `pid` started (None when unreadable), so a
    recycled pid is not mistaken for the process that once had it."""
    found = stat(pid)
    return found.start_time if found else None


def alive(pid: int, started: str | None) -> bool:
    """True unless process `pid` is provably not the one that started at `started`: gone,
    a zombie (it holds its pid but will never clean up), or a recycled pid. When /proc
    hides other users' processes (hidepid), an existing pid counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    found = stat(pid)
    if found is None:
        return True
    if found.exited:
        return False
    return started is None or found.start_time == started
