"""Run external programs with a timeout, killing their whole process group on expiry.

Programs get a process group of their own (so a timeout kills restic and the ssh it may
have started) but stay in the caller's session, so whoever supervises the caller (the
agent, systemd) can kill everything it started with `kill_session`. Each program also
dies with drcheck: it gets SIGKILL from the kernel when the drcheck thread that started it
dies (PR_SET_PDEATHSIG), even when drcheck itself was SIGKILLed and ran no cleanup, so
nothing keeps writing into a sandbox after its run is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from drcheck import procfs
from drcheck.clients import SourceError


_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (OSError, AttributeError):  # not Linux: children are still killed by process group/session
    _prctl = None


def die_with_parent(nice: int = 0):
    """Return a `preexec_fn` making the child SIGKILLed when its parent thread dies (Linux
    PR_SET_PDEATHSIG; None elsewhere), and niced by `nice`. Compatible with
    `process_group=0` and `start_new_session=True`. A parent that died between fork and
    prctl is caught by comparing the parent pid, so the child then kills itself at once."""
    if _prctl is None and not nice:
        return None
    parent = os.getpid()

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
        if nice:
            os.nice(nice)

    return preexec


_priority = threading.local()


@contextmanager
def lowered_priority(increment: int = 10) -> Iterator[None]:
    """Programs `run()` starts from this thread meanwhile run niced by `increment`: for work
    off the critical path of a program running beside it (a listing checked while a restore
    runs), so that, on a busy machine, the CPU goes to the program everyone waits for."""
    previous = getattr(_priority, "nice", 0)
    _priority.nice = previous + increment
    try:
        yield
    finally:
        _priority.nice = previous


_running: set[int] = set()  # process groups started by run() and not yet reaped, any thread
_running_lock = threading.Lock()


class CommandTimeout(SourceError):
    """The program was still running after its timeout and was killed."""


class CommandNotFound(SourceError):
    """The program does not exist or is not executable."""


class CommandCancelled(SourceError):
    """The program was killed because its caller cancelled it (see `Cancel`)."""


class Cancel:
    """Lets one thread stop `run()` calls another thread made with `cancel=` this object.

    `cancel()` kills the process group of every such call still running (`kill_group`)
    and, at once, any started afterwards; each of those calls then raises
    CommandCancelled. A call that had already finished is not affected.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or `timeout` seconds passed (False)."""
        return self._event.wait(timeout)

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            for pid in self._groups:
                kill_group(pid)

    def _started(self, pid: int) -> None:
        with self._lock:
            self._groups.add(pid)
            if self._event.is_set():
                kill_group(pid)

    def _finished(self, pid: int) -> None:
        with self._lock:
            self._groups.discard(pid)


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout_path: Path | None = None,
    cancel: Cancel | None = None,
) -> Completed:
    """Run argv (no shell) and return its exit status and output.

    `env` is added to a minimal environment (PATH, HOME, LANG, TMPDIR), so the agent's own
    variables, secrets included, do not leak into children. When `stdout_path` is given,
    stdout streams to that file instead of memory. Raise CommandTimeout (after killing the
    process group), CommandNotFound, or CommandCancelled when `cancel` was cancelled while
    the program ran.
    """
    full_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
    full_env.update(env or {})
    out = open(stdout_path, "wb") if stdout_path else subprocess.PIPE
    try:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env=full_env, cwd=cwd, process_group=0, preexec_fn=die_with_parent(getattr(_priority, "nice", 0)),
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise CommandNotFound(f"{argv[0]}: {exc.strerror}") from None
    finally:
        if stdout_path:
            out.close()
    with _running_lock:
        _running.add(proc.pid)
    if cancel is not None:
        cancel._started(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        raise CommandTimeout(f"{Path(argv[0]).name} killed after {timeout:.0f}s") from None
    except BaseException:
        kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        if cancel is not None:
            cancel._finished(proc.pid)
        with _running_lock:
            _running.discard(proc.pid)
    if cancel is not None and cancel.cancelled and proc.returncode != 0:
        raise CommandCancelled(f"{Path(argv[0]).name} cancelled")
    return Completed(
        list(argv), proc.returncode,
        stdout.decode(errors="replace") if stdout is not None else "",
        stderr.decode(errors="replace"),
    )


def kill_running(sig: int = signal.SIGKILL) -> None:
    """Kill every program run() started that is still running, in whichever thread: a job
    being interrupted must not wait for a worker thread's hour-long restic call."""
    with _running_lock:
        groups = list(_running)
    for pid in groups:
        kill_group(pid, sig)


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process group led by `pid`; ignore a group that is already gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def session_members(sid: int) -> list[int]:
    """Return the pids of every live process in session `sid` (Linux /proc)."""
    members = []
    for pid in procfs.pids():
        found = procfs.stat(pid)
        if found is not None and found.session == sid and not found.exited:
            members.append(pid)
    return members


def kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to every process of session `sid`: a job and every program it started,
    whatever process groups they formed."""
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
