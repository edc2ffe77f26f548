"""A SIGTERM that arrives while a job cleans up waits for the cleanup
(`drcheck.interrupts.shielded`): the sandbox is gone and its lease released before the job
stops. Real signals, a real store, real directories."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from drcheck import interrupts, sandbox
from drcheck.engine import raise_on_sigterm
from drcheck.interrupts import Interrupted
from drcheck.store import Store


@pytest.fixture
def sigterm_raises():
    previous = signal.getsignal(signal.SIGTERM)
    raise_on_sigterm()
    yield
    signal.signal(signal.SIGTERM, previous)


def test_an_interruption_inside_a_shield_is_raised_when_the_outermost_shield_ends():
    steps = []
    with pytest.raises(Interrupted, match="stop now"):
        with interrupts.shielded():
            with interrupts.shielded():
                interrupts.interrupt("stop now")
                steps.append("inner went on")
            steps.append("outer went on")
            assert interrupts.pending() == "stop now"
    assert steps == ["inner went on", "outer went on"] and interrupts.pending() is None
    with pytest.raises(Interrupted, match="at once"):
        interrupts.interrupt("at once")


def test_a_worker_threads_shield_does_not_hold_back_an_interruption():
    caught = []

    def worker():
        with interrupts.shielded():
            try:
                interrupts.interrupt("from a worker")
            except Interrupted as exc:
                caught.append(str(exc))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert caught == ["from a worker"]


def test_sigterm_during_sandbox_removal_waits_until_the_sandbox_is_gone(tmp_path, monkeypatch, sigterm_raises):
    root = tmp_path / "sandbox"
    real_remove = sandbox.remove_tree
    seen = {}

    def remove_and_get_signalled(path, root_):
        os.kill(os.getpid(), signal.SIGTERM)  # the agent stops us halfway through the cleanup
        seen["still there when signalled"] = path.exists()
        real_remove(path, root_)

    monkeypatch.setattr(sandbox, "remove_tree", remove_and_get_signalled)
    with Store(tmp_path / "db") as store:
        with pytest.raises(Interrupted, match="SIGTERM"):
            with sandbox.sandbox(store, root, "t") as box:
                for n in range(200):
                    (box / f"f{n}").write_text("x")
        assert seen == {"still there when signalled": True}
        assert list(root.iterdir()) == []
        assert store.query("SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL")[0]["n"] == 0


def test_sigterm_while_the_sandbox_is_being_made_leaves_no_lease(tmp_path, monkeypatch, sigterm_raises):
    root = tmp_path / "sandbox"
    with Store(tmp_path / "db") as store:
        real_take = store.take_lease

        def take_and_get_signalled(*args, **kwargs):
            lease = real_take(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGTERM)  # right after the lease is committed
            return lease

        monkeypatch.setattr(store, "take_lease", take_and_get_signalled)
        body = []
        with pytest.raises(Interrupted):
            with sandbox.sandbox(store, root, "t"):
                body.append("ran")
        assert body == []  # the interruption lands before the test body starts
        assert list(root.iterdir()) == []
        assert store.query("SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL")[0]["n"] == 0
