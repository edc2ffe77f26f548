"""`locks.slot`: at most N holders of a named slot across processes (the `max_vm_tests`
of a vCenter); a waiter says who holds them and gets a slot as soon as one is freed, also
when its holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from drcheck import locks


def test_n_holders_at_most_and_a_waiter_reports_then_gets_a_freed_slot(tmp_path):
    seen, got = [], []
    with locks.slot(tmp_path, "vm-tests.vc", 2) as first, locks.slot(tmp_path, "vm-tests.vc", 2) as second:
        assert {first, second} == {0, 1}

        def third():
            with locks.slot(tmp_path, "vm-tests.vc", 2, waiting=seen.append, poll=0.02) as index:
                got.append(index)

        waiter = threading.Thread(target=third)
        waiter.start()
        time.sleep(0.2)
        assert got == [] and seen == [[os.getpid(), os.getpid()]]  # reported once, not at every poll
    waiter.join(5)
    assert got and got[0] in (0, 1)


def test_a_killed_holder_frees_its_slot(tmp_path):
    code = ("import sys, time; from drcheck import locks\n"
            "with locks.slot(sys.argv[1], 'vm-tests.vc', 1):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        seen = []
        done = threading.Event()

        def wait():
            with locks.slot(tmp_path, "vm-tests.vc", 1, waiting=seen.append, poll=0.02):
                done.set()

        threading.Thread(target=wait, daemon=True).start()
        time.sleep(0.2)
        assert not done.is_set() and seen == [[holder.pid]]
        holder.send_signal(signal.SIGKILL)
        assert done.wait(5)
    finally:
        holder.kill()
        holder.wait()


def test_slots_of_other_names_are_independent(tmp_path):
    with locks.slot(tmp_path, "vm-tests.a", 1), locks.slot(tmp_path, "vm-tests.b", 1) as index:
        assert index == 0
    assert locks.slot_lock(tmp_path, "vm-tests.a", 0).parent == locks.lock_dir(tmp_path)
