"""Misuse and accidents: a second agent on one state directory, overlapping runs of one
restore test or probe action, SIGKILL of the CLI in the middle of a restore, a sandbox
too small for the restore point, a disk filling up during a restore."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drcheck.results import Status

from .conftest import utc, wait_for
from .test_daemon import Agent, count

pytestmark = pytest.mark.e2e

# restic, but reading the repository at 64 KiB/s: a restore that keeps writing for a while.
# `exec` keeps restic itself the child of drcheck (and the holder of PR_SET_PDEATHSIG).
THROTTLED = 'for a in "$@"; do [ "$a" = restore ] && exec "$RESTIC" --limit-download 64 "$@"; done\nexec "$RESTIC" "$@"'
SLOW_SNAPSHOTS = 'for a in "$@"; do [ "$a" = snapshots ] && sleep 600; done\nexec "$RESTIC" "$@"'


def big_backup(lab) -> None:
    for i in range(64):  # small files: restored (and visible) one by one while the rest streams in
        lab.write(f"bulk/part{i:02d}.bin", os.urandom(48 * 1024))
    lab.plant_canary(at=utc(minutes=5))
    lab.backup(at=utc(minutes=4))


def restic_of(path: Path) -> list[int]:
    """Pids of live restic processes whose command line names `path`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X") and any(str(path).encode() in part for part in cmdline) \
                and any(part.endswith(b"restic") for part in cmdline[:2]):
            pids.append(int(entry))
    return pids


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def start_cli(lab, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=lab.root)


def open_lease(lab):
    rows = lab.rows("SELECT * FROM leases WHERE released_at IS NULL") if lab.database.exists() else []
    return rows[0] if rows else None


def assert_restore_stops(lab, sandbox: Path) -> None:
    wait_for(lambda: not restic_of(sandbox), what="the run's restic to die with it")
    size = tree_size(sandbox)
    wait_for(lambda: not restic_of(lab.repo), timeout=5, what="no restic left on the repository")
    assert tree_size(sandbox) == size, "something still writes into the sandbox"


def test_sigkill_of_the_cli_mid_restore_kills_restic(lab):
    big_backup(lab)
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-throttled", THROTTLED))}})
    cli = start_cli(lab, "restore-test", "app-files")
    lease = wait_for(lambda: open_lease(lab), what="the restore to take its sandbox")
    sandbox = Path(lease["resource"])
    wait_for(lambda: restic_of(sandbox), what="restic restoring into the sandbox")
    assert restic_of(sandbox), "restic should be restoring now"

    cli.send_signal(signal.SIGKILL)
    cli.wait()

    assert_restore_stops(lab, sandbox)
    assert lab.restore_test().status is Status.PASSED  # next run reaps the leftover and works (no throttle)
    assert not sandbox.exists()


def test_sigkill_of_the_agent_mid_restore_kills_job_and_restic(lab):
    big_backup(lab)
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-throttled", THROTTLED))}},
                  restore_tests={"app-files": {"schedule": {"interval": "1h"}}})
    agent = Agent(lab).start()
    try:
        lease = wait_for(lambda: open_lease(lab), what="the job to take its sandbox")
        sandbox = Path(lease["resource"])
        wait_for(lambda: restic_of(sandbox), what="restic restoring into the sandbox")
        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait()
        wait_for(lambda: not _alive(lease["pid"]), what="the job child to die with the agent")
        assert_restore_stops(lab, sandbox)
    finally:
        if agent.alive():
            agent.proc.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_one_agent_per_state_directory(lab):
    lab.backup()
    first = Agent(lab).start()
    try:
        wait_for(lambda: "started with" in first.text(), what="the first agent")
        second = lab.cli("run", timeout=120)
        assert second.returncode == 1
        assert f"another drcheck agent (pid {first.proc.pid}) is already running with state directory" \
               in second.stderr
        assert "Traceback" not in second.stderr
        assert first.alive()
    finally:
        assert first.stop() == 0


def test_a_second_run_of_a_restore_test_is_skipped_not_run(lab):
    big_backup(lab)
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-throttled", THROTTLED))}})
    first = start_cli(lab, "restore-test", "app-files")
    try:
        lease = wait_for(lambda: open_lease(lab), what="the first run's sandbox")
        second = lab.cli("restore-test", "app-files", "--json")
        assert second.returncode == 75, second.stderr
        assert f"restore test app-files is already running (pid {first.pid}" in second.stdout
        (skipped,) = lab.rows("SELECT * FROM restore_tests WHERE status = 'skipped'")
        assert skipped["rto_seconds"] is None and skipped["sandbox"] is None
        assert len(lab.rows("SELECT * FROM leases")) == 1  # the second never touched a sandbox
        assert open_lease(lab)["id"] == lease["id"]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait()
    # the interrupted first run is the latest that ran: status shows its error, not "skipped"
    status = lab.cli("status", "--json")
    assert status.returncode == 1
    assert "restore test app-files error" in status.stdout and "skipped" not in status.stdout.split('"problems"')[1]


def test_an_orphaned_job_child_cannot_overlap_the_next_agents_run(lab):
    big_backup(lab)
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-throttled", THROTTLED))}},
                  restore_tests={"app-files": {"schedule": {"interval": "1s"}}})
    # a job child left over by a killed agent: same command, own session, no agent parent
    orphan = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path), "restore-test",
                               "app-files", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=lab.root, start_new_session=True)
    agent = None
    try:
        lease = wait_for(lambda: open_lease(lab), what="the orphan's sandbox")
        agent = Agent(lab).start()
        wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM restore_tests WHERE status = 'skipped'") >= 2,
                 what="the agent's runs to be skipped")
        assert len(lab.rows("SELECT * FROM leases")) == 1
        assert open_lease(lab)["pid"] == lease["pid"] == orphan.pid
        assert "skipped" in agent.text() and "job ended without a result" not in agent.text()
    finally:
        if agent is not None:
            assert agent.stop() == 0
        orphan.kill()
        orphan.wait()


def test_a_second_run_of_a_probe_action_is_skipped(lab):
    lab.backup()
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-slow-list", SLOW_SNAPSHOTS))}})
    first = start_cli(lab, "probe", "repo", "snapshots")
    try:
        wait_for(lambda: (lab.root / "state" / "locks" / "probe.repo.snapshots.lock").exists()
                 and restic_of(lab.root / "restic-slow-list") == [] and _children(first.pid),
                 what="the first listing to be running")
        second = lab.cli("probe", "repo", "snapshots")
        assert second.returncode == 75, second.stdout + second.stderr
        assert f"probe repo snapshots is already running (pid {first.pid}" in second.stdout
        assert lab.cli("probe", "repo", "check").returncode == 0  # another action is not blocked
    finally:
        first.kill()
        first.wait()
    (skipped,) = lab.rows("SELECT * FROM probe_runs WHERE status = 'skipped'")  # history, never the latest run
    latest = lab.rows("SELECT r.status FROM probe_latest l JOIN probe_runs r ON r.id = l.probe_run_id "
                      "WHERE l.action = 'snapshots'")
    assert all(row["status"] != "skipped" for row in latest)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def test_a_restore_that_cannot_fit_is_refused_before_any_sandbox(lab):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    big_backup(lab)
    lab.sandbox_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(lab.sandbox_root)], check=True)
    try:
        result = lab.restore_test()
    finally:
        subprocess.run(["umount", "-l", str(lab.sandbox_root)], check=False)
    assert result.status is Status.ERROR
    assert result.reason.startswith("not enough space to restore app: ")
    assert f"free on {lab.sandbox_root} (sandbox {lab.sandbox_root}); nothing was restored" in result.reason
    assert lab.rows("SELECT COUNT(*) AS n FROM leases")[0]["n"] == 0


def test_a_disk_filling_up_during_the_restore_is_named(lab):
    lab.backup()
    full = 'for a in "$@"; do if [ "$a" = restore ]; then echo "Fatal: write /x/big.bin: no space left on device" >&2; exit 1; fi; done\nexec "$RESTIC" "$@"'  # noqa: E501
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-full", full))}})
    result = lab.restore_test()
    assert result.status is Status.ERROR
    assert result.reason.startswith("disk full in the sandbox: ")
    assert " free of " in result.reason and "no space left on device" in result.reason
