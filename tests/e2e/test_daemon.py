"""`drcheck run` as a real process: scheduling, failing and hanging jobs, SIGHUP, SIGTERM,
SIGKILL in the middle of a restore, and the metrics endpoint."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from drcheck.clients.process import kill_session, session_members

from .conftest import SLOW_RESTORE, utc, wait_for

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Agent:
    """A `drcheck run` process for a lab, logging to a file."""

    def __init__(self, lab):
        self.lab = lab
        self.log = lab.root / "agent.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Agent":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "drcheck", "--config", str(self.lab.config_path), "-v", "run"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.lab.root)
        return self

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 90) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None


@pytest.fixture
def agent(lab):
    agents: list[Agent] = []

    def make() -> Agent:
        agents.append(Agent(lab).start())
        return agents[-1]

    yield make
    for a in agents:
        if a.alive():
            a.proc.kill()
            a.proc.wait()


def count(lab, sql: str, params=()) -> int:
    if not lab.database.exists():
        return 0
    return lab.rows(sql, params)[0]["n"]


def schedule_everything(lab, **extra):
    """Probe every second, restore test every 2 s."""
    lab.configure(probes={"repo": {"snapshots": {"schedule": {"interval": "1s"}}}},
                  restore_tests={"app-files": {"schedule": {"interval": "2s"}}}, **extra)


def test_schedules_jobs_and_stops_cleanly_on_sigterm(lab, agent):
    lab.plant_canary(at=utc(minutes=5))
    lab.backup(at=utc(minutes=4))
    schedule_everything(lab)
    a = agent()

    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs") >= 3, what="three probe runs")
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM restore_tests WHERE status = 'passed'") >= 1,
             what="a passed restore test")

    assert a.stop() == 0
    assert "drcheck agent stopped" in a.text()
    assert lab.sandbox_entries() == []
    assert count(lab, "SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL") == 0


def test_failing_and_hanging_jobs_do_not_stop_the_agent(lab, agent):
    lab.plant_canary(at=utc(minutes=5))
    lab.backup(at=utc(minutes=4))
    hang = lab.wrapper("restic-hang", 'echo $$ >> "$0.pids"; exec sleep 600')
    wrong = lab.root / "wrong-password"
    wrong.write_text("nope\n")
    base = lab.base_config()["probes"]["repo"]
    lab.configure(
        probes={
            "repo": {"snapshots": {"schedule": {"interval": "1s"}}},
            # restic may take an hour per call here: only the job's own deadline can stop it
            "hangs": {**base, "restic_command": str(hang), "snapshots": {"timeout": "1h"}},
            "locked-out": {**base, "password": {"file": str(wrong)}, "snapshots": {"schedule": {"interval": "1s"}}},
        },
        restore_tests={"hung-files": {**lab.base_config()["restore_tests"]["app-files"], "probe": "hangs",
                                      "timeout": "3s", "schedule": {"interval": "1s"}}},
    )
    a = agent()

    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM restore_tests WHERE test = 'hung-files'") >= 1,
             timeout=90, what="the hanging restore test to be timed out")
    hung = lab.rows("SELECT * FROM restore_tests WHERE test = 'hung-files'")[0]
    assert hung["status"] == "error" and "timed out after 3s" in hung["reason"]
    locked = lab.rows("SELECT * FROM probe_runs WHERE probe = 'locked-out'")[0]
    assert locked["status"] == "error" and "wrong repository password" in locked["reason"]
    # the healthy probe kept running while the other two failed
    before = count(lab, "SELECT COUNT(*) AS n FROM probe_runs WHERE probe = 'repo'")
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs WHERE probe = 'repo'") > before + 1,
             what="more healthy probe runs")
    assert a.alive()
    hung_pids = [int(p) for p in Path(f"{hang}.pids").read_text().split()]
    wait_for(lambda: not any(_pid_alive(p) for p in hung_pids[:-1]), what="timed-out restic calls to be killed")
    assert not [p for p in hung_pids[:-1] if session_members(p)]
    assert a.stop() == 0


def test_sighup_reloads_config_and_refuses_a_broken_one(lab, agent):
    lab.backup()
    lab.configure(probes={"repo": {"snapshots": {"schedule": {"interval": "1s"}}}})
    a = agent()
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs") >= 1, what="the first probe run")

    base = lab.base_config()["probes"]["repo"]
    lab.configure(probes={"repo": {"snapshots": {"schedule": {"interval": "1s"}}},
                          "second": {**base, "snapshots": {"schedule": {"interval": "1s"}}}})
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs WHERE probe = 'second'") >= 1,
             what="the probe added by the reload")
    assert "configuration reloaded" in a.text()

    lab.config_path.write_text(lab.config_path.read_text() + "\n[agent_typo]\nx = 1\n")
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration not reloaded" in a.text(), what="the refused reload")
    assert "agent_typo: unknown key" in a.text()
    lab.configure(agent={"state_dir": "elsewhere"}, probes={"repo": {"snapshots": {"schedule": {"interval": "1s"}}}})
    a.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "agent.state_dir changed" in a.text(), what="the refused state_dir change")
    assert not (lab.root / "elsewhere").exists()
    runs = count(lab, "SELECT COUNT(*) AS n FROM probe_runs WHERE probe = 'second'")
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs WHERE probe = 'second'") > runs,
             what="the previous configuration to keep running")
    assert a.alive() and a.stop() == 0


def test_sigkill_mid_restore_loses_nothing_and_next_start_reaps(lab, agent):
    lab.plant_canary(at=utc(minutes=5))
    lab.backup(at=utc(minutes=4))
    slow = lab.wrapper("restic-slow", SLOW_RESTORE)
    lab.configure(probes={"repo": {"restic_command": str(slow), "snapshots": {"schedule": {"interval": "1s"}}}},
                  restore_tests={"app-files": {"schedule": {"interval": "1h"}}})
    a = agent()
    lease = wait_for(lambda: lab.rows("SELECT * FROM leases WHERE released_at IS NULL") if lab.database.exists() else None,
                     what="a restore test to take its sandbox lease")[0]
    sandbox = Path(lease["resource"])
    wait_for(lambda: (sandbox / str(lab.source).lstrip("/") / "data").exists(), what="restored data in the sandbox")
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs") >= 2, what="committed probe results")
    committed = lab.rows("SELECT * FROM probe_runs ORDER BY id")

    kill_session(lease["pid"])  # the job and every program it started, as systemd's kill would
    a.proc.kill()               # and the agent: nothing gets to clean up
    a.proc.wait()
    wait_for(lambda: not _pid_alive(lease["pid"]), what="the killed job to be gone")

    assert sandbox.exists(), "the sandbox should still be there after SIGKILL"
    assert lab.rows("SELECT * FROM probe_runs ORDER BY id")[: len(committed)] == committed

    lab.configure(probes={"repo": {"snapshots": {"schedule": {"interval": "1h"}}}})  # plain restic, quiet schedule
    b = agent()
    wait_for(lambda: "reaped leftover sandbox" in b.text(), what="the reaper at start")
    assert not sandbox.exists()
    (row,) = lab.rows("SELECT * FROM leases")
    assert row["released_at"] and row["release_note"].startswith("reaped")
    interrupted = lab.rows("SELECT * FROM restore_tests WHERE status = 'error'")
    assert interrupted and "interrupted" in interrupted[-1]["reason"]
    assert b.stop() == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")


def test_metrics_endpoint_serves_store_and_survives_restart(lab, agent):
    lab.plant_canary(at=utc(hours=1, minutes=1))
    lab.backup(at=utc(hours=1))
    port = free_port()
    schedule_everything(lab, metrics={"enabled": True, "listen": f"127.0.0.1:{port}"})
    a = agent()
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM restore_tests WHERE status = 'passed'") >= 1,
             what="a passed restore test")
    first = scrape(port)
    assert 'drcheck_restore_test_last_passed{system="app",test="app-files"} 1.0' in first
    assert 'drcheck_probe_up{action="snapshots",probe="repo"} 1.0' in first
    newest = metric_value(first, 'drcheck_restore_point_newest_timestamp_seconds{copy="local",system="app"}')
    assert abs(newest - utc(hours=1).timestamp()) < 120
    assert a.stop() == 0

    lab.configure(metrics={"enabled": True, "listen": f"127.0.0.1:{port}"})  # nothing scheduled now
    b = agent()
    after = wait_for(lambda: _try_scrape(port), what="the restarted metrics endpoint")
    assert metric_value(after, 'drcheck_restore_point_newest_timestamp_seconds{copy="local",system="app"}') == newest
    assert "drcheck_restore_test_last_success_timestamp_seconds" in after
    assert b.stop() == 0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def _try_scrape(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None


def metric_value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exposed")


def test_a_slow_job_never_overlaps_itself_and_sigterm_cleans_it_up(lab, agent):
    lab.plant_canary(at=utc(minutes=5))
    lab.backup(at=utc(minutes=4))
    slow = lab.wrapper("restic-slow", SLOW_RESTORE)
    lab.configure(probes={"repo": {"restic_command": str(slow)}},
                  restore_tests={"app-files": {"schedule": {"interval": "1s"}}})
    a = agent()
    lease = wait_for(lambda: lab.rows("SELECT * FROM leases") if lab.database.exists() else None,
                     what="the restore test to start")[0]
    wait_for(lambda: "maximum number of running instances reached" in a.text(), what="a skipped second run")
    assert len(lab.rows("SELECT * FROM leases")) == 1  # one instance, coalesced

    assert a.stop() == 0
    assert not Path(lease["resource"]).exists()
    (row,) = lab.rows("SELECT * FROM restore_tests")
    assert row["status"] == "error" and "SIGTERM" in row["reason"]
    assert lab.rows("SELECT released_at FROM leases")[0]["released_at"]


def test_metrics_address_in_use_is_a_clear_error(lab):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lab.configure(metrics={"enabled": True, "listen": f"127.0.0.1:{port}"})
        done = lab.cli("run", timeout=60)
    assert done.returncode == 1
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_faulty_database_is_backed_off_from_exported_and_recovered_from(lab, agent):
    import sqlite3

    lab.backup()
    port = free_port()
    lab.configure(probes={"repo": {"snapshots": {"schedule": {"interval": "1s"}}}},
                  metrics={"enabled": True, "listen": f"127.0.0.1:{port}"}, agent={"database_timeout": "1s"})
    a = agent()
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs") >= 2, what="probe runs")
    assert metric_value(wait_for(lambda: _try_scrape(port), what="metrics"), "drcheck_store_up") == 1

    saved = lab.root / "saved.db"
    with sqlite3.connect(lab.database) as source, sqlite3.connect(saved) as copy:
        source.backup(copy)  # a consistent copy, WAL included
    source.close()
    copy.close()
    lab.database.write_bytes(os.urandom(32 * 1024))  # damaged under the running agent

    down = wait_for(lambda: (t := _try_scrape(port)) and "drcheck_store_up 0.0" in t and t, what="store_up 0")
    assert 'drcheck_store_error_info{cause="damaged"} 1.0' in down
    wait_for(lambda: a.text().count("is damaged") >= 1, what="the fault in the log")
    before = a.text().count("is damaged: file is not a database (")
    assert a.alive()

    for suffix in ("-wal", "-shm"):
        Path(f"{lab.database}{suffix}").unlink(missing_ok=True)
    lab.database.write_bytes(saved.read_bytes())  # fixed
    runs = count(lab, "SELECT COUNT(*) AS n FROM probe_runs")
    wait_for(lambda: count(lab, "SELECT COUNT(*) AS n FROM probe_runs") > runs + 1, timeout=600,
             what="jobs to record again")
    wait_for(lambda: "drcheck_store_up 1.0" in (_try_scrape(port) or ""), what="store_up 1")
    assert "is usable again; jobs resume" in a.text()
    # logged once per change by the agent itself (children print their own line each)
    agent_lines = [line for line in a.text().splitlines() if "ERROR drcheck.scheduler" in line and "is damaged" in line]
    assert len(agent_lines) == 1, agent_lines
    assert before >= 1
    assert a.stop() == 0
