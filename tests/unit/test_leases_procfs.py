"""The one /proc reader serves lease ownership and job supervision alike."""

from __future__ import annotations

import os
import subprocess

from drcheck import procfs
from drcheck.clients.process import session_members


def test_stat_of_this_process():
    me = procfs.stat(os.getpid())
    assert me.session == os.getsid(0) and not me.exited and me.start_time.isdigit()
    assert procfs.stat(2**22 + 7) is None


def test_alive_tells_a_dead_or_recycled_pid():
    pid = os.getpid()
    assert procfs.alive(pid, procfs.start_time(pid))
    assert procfs.alive(pid, None)
    assert not procfs.alive(pid, "1")  # same pid, another start: recycled
    assert not procfs.alive(2**22 + 7, None)


def test_a_zombie_is_not_alive_and_not_a_session_member():
    child = subprocess.Popen(["true"])
    while procfs.stat(child.pid) is not None and not procfs.stat(child.pid).exited:
        os.sched_yield()
    assert not procfs.alive(child.pid, None)
    assert child.pid not in session_members(os.getsid(0))
    assert os.getpid() in session_members(os.getsid(0))
    child.wait()
