"""A database that is read-only, locked beyond agent.database_timeout, damaged (garbage,
truncated) or on a full disk: every command that uses the store says so in one line naming
the file and the cause, exits 1, and prints no traceback. The file systems are real: a
tmpfs (remounted read-only, or filled up) holds the state directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drcheck.store import Store

from .conftest import RESTIC

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

CAUSE_WORDS = {
    "read_only": "is read-only: read-only file system",
    "locked": "is locked: gave up after 1s",
    "garbage": "is damaged: file is not a database",
    "truncated": "is damaged: truncated",
    "full": "cannot be written: disk full",
}
COMMANDS = {
    "status": ["status"],
    "probe": ["probe", "repo"],
    "restore-test": ["restore-test", "app-files"],
    "report": ["report", "weekly"],
    "canary": ["canary", "plant"],
    "run": ["run"],
}

HOLD_LOCK = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
             "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(3600)")


def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


class Fault:
    """Puts a state directory on its own tmpfs, creates a real database in it, and breaks it."""

    def __init__(self, state_dir: Path):
        _root()
        self.state_dir = state_dir
        self.db = state_dir / "drcheck.db"
        self.holder: subprocess.Popen | None = None
        state_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state_dir)], check=True)

    def create_database(self) -> None:
        with Store(self.db) as store:  # a real, migrated database with some pages of results
            store.db.execute("CREATE TABLE filler (x TEXT)")
            store.db.conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 200,)] * 500)
            store.db.conn.commit()

    def apply(self, fault: str) -> None:
        self.create_database()
        if fault == "read_only":
            subprocess.run(["mount", "-o", "remount,ro", str(self.state_dir)], check=True)
        elif fault == "full":
            with open(self.state_dir / "ballast", "wb") as ballast:
                try:
                    while True:
                        ballast.write(b"\0" * 65536)
                        ballast.flush()
                except OSError:
                    pass
        elif fault == "garbage":
            self.db.write_bytes(os.urandom(64 * 1024))
        elif fault == "truncated":
            with open(self.db, "r+b") as handle:
                handle.truncate(3 * 4096)
        elif fault == "locked":
            self.holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(self.db)], stdout=subprocess.PIPE,
                                           text=True)
            assert self.holder.stdout.readline().strip() == "locked"

    def close(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
        subprocess.run(["umount", "-l", str(self.state_dir)], check=False)


@pytest.fixture
def faulty(lab):
    faults: list[Fault] = []

    def make(fault: str) -> Fault:
        faults.append(Fault(lab.database.parent))
        lab.configure(agent={"database_timeout": "1s"}, metrics={"enabled": False})
        faults[-1].apply(fault)
        return faults[-1]

    yield make
    for f in faults:
        f.close()


def assert_one_clear_line(done: subprocess.CompletedProcess, db: Path, fault: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("drcheck: ")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"drcheck: database {db} {CAUSE_WORDS[fault]}"), done.stderr


@pytest.mark.parametrize("fault", list(CAUSE_WORDS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_names_the_fault(lab, faulty, fault, command):
    lab.backup()
    fault_state = faulty(fault)
    done = lab.cli(*COMMANDS[command], timeout=120)
    assert_one_clear_line(done, fault_state.db, fault)


@pytest.mark.parametrize("fault", list(CAUSE_WORDS))
def test_demo_names_the_fault(tmp_path, fault):
    if RESTIC is None:
        pytest.skip("restic is not installed")
    shutil.copy(REPO / "drcheck.toml", tmp_path / "drcheck.toml")
    shutil.copytree(REPO / "runbooks", tmp_path / "runbooks")
    text = (tmp_path / "drcheck.toml").read_text().replace('job_timeout = "1h"',
                                                          'job_timeout = "1h"\ndatabase_timeout = "1s"')
    (tmp_path / "drcheck.toml").write_text(text)
    state = Fault(tmp_path / "var" / "drcheck")
    try:
        state.apply(fault)
        done = subprocess.run([sys.executable, "-m", "drcheck", "--config", "drcheck.toml", "demo"],
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert_one_clear_line(done, state.db, fault)
    finally:
        state.close()


def test_config_validate_does_not_open_the_store(lab, faulty):
    faulty("garbage")
    done = lab.cli("config", "validate")
    assert done.returncode == 0, done.stderr
