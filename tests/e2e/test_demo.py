"""`drcheck demo` on a copy of the embedded configuration, and its refusal to touch a
configuration whose data lies outside the demo lab."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from .conftest import RESTIC

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(RESTIC is None, reason="restic is not installed")]
REPO = Path(__file__).resolve().parents[2]


def copy_demo(tmp_path: Path) -> Path:
    """The embedded configuration and runbooks in tmp_path, its simulated vCenter on a free
    port (a `make demo` elsewhere on this machine holds the default one)."""
    text = (REPO / "drcheck.toml").read_text()
    for default in ("127.0.0.1:18443", "127.0.0.1:18444", "port = 18993"):  # vCenter, Veeam, IMAP
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            text = text.replace(default, default.replace(default.split(":")[-1].split(" ")[-1],
                                                         str(s.getsockname()[1])))
    (tmp_path / "drcheck.toml").write_text(text)
    shutil.copytree(REPO / "runbooks", tmp_path / "runbooks")
    return tmp_path / "drcheck.toml"


def drcheck(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drcheck", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=600, cwd=config.parent)


def test_demo_runs_a_full_cycle_and_says_where_things_are(tmp_path):
    config = copy_demo(tmp_path)

    done = drcheck(config, "demo")

    assert done.returncode == 0, done.stderr + done.stdout
    reports = list((tmp_path / "var" / "drcheck" / "reports").glob("weekly-*.html"))
    assert len(reports) == 1 and str(reports[0]) in done.stdout
    metrics = (tmp_path / "var" / "drcheck" / "metrics.prom").read_text()
    assert 'drcheck_restore_test_last_passed{system="sis",test="sis-files"} 1.0' in metrics
    assert 'drcheck_restore_test_last_passed{system="payroll",test="payroll-files"} 0.0' in metrics
    status = json.loads(drcheck(config, "status", "--json").stdout)
    verdicts = {s["system"]: s["ok"] for s in status["systems"]}
    assert verdicts == {"sis": True, "fileserver": True, "schools": True, "payroll": False}
    # the simulated vCenter: its inventory, the VMs nobody backs up, fenced VM restores
    assert {vm["name"] for vm in status["unprotected_vms"]} == {"library-kiosk", "payroll01"}
    assert 'drcheck_restore_test_last_passed{system="sis",test="sis-vm"} 1.0' in metrics
    assert 'drcheck_unprotected_assets{source="vcenter"} 2.0' in metrics
    assert "sis-vm sis01-replica: passed" in done.stdout and "rotation schools-rotation: 2 of 3 VMs" in done.stdout
    html = reports[0].read_text()
    assert 'data-vm="' in html and "library-kiosk" in html and "Rotation schools-rotation" in html
    assert "vcenter inventory: ok" in done.stdout
    # Veeam: both copies listed per system, a passing instant-recovery test
    assert "veeam points: ok" in done.stdout and "sis-veeam-instant sis01: passed" in done.stdout
    sis = next(s for s in status["systems"] if s["system"] == "sis")
    assert {"lab-restic", "nutrition-borg", "veeam-local", "veeam-copy", "barracuda", "barracuda-cloud"} <= \
        {p["copy"] for p in sis["points"]}
    # Barracuda: reports read from a real IMAP mailbox; payroll's data source went silent (missed)
    assert "barracuda mailbox: ok" in done.stdout
    payroll = next(s for s in status["systems"] if s["system"] == "payroll")
    assert {r["subject"] for r in payroll["failing"] if r["rule"] == "R2.backup_age"} >= {"barracuda",
                                                                                          "barracuda-cloud"}
    assert list((tmp_path / "var" / "drcheck" / "sandbox").iterdir()) == []
    # a second run rebuilds the lab in place
    assert drcheck(config, "demo").returncode == 0


def test_demo_refuses_a_config_whose_data_lies_outside_the_lab(tmp_path):
    config = copy_demo(tmp_path)
    precious = tmp_path / "srv" / "sis"
    precious.mkdir(parents=True)
    (precious / "grades.db").write_text("real data")
    data = tomllib.loads(config.read_text())
    data["probes"]["lab-restic"]["systems"][0]["paths"] = [str(precious)]
    config.write_text(tomli_w.dumps(data))

    done = drcheck(config, "demo")

    assert done.returncode != 0
    assert "refusing" in done.stderr and str(precious) in done.stderr
    assert (precious / "grades.db").read_text() == "real data"
    assert not (tmp_path / "var" / "lab").exists()


def test_demo_will_not_replace_a_directory_it_did_not_build(tmp_path):
    config = copy_demo(tmp_path)
    lab = tmp_path / "var" / "lab"
    lab.mkdir(parents=True)
    (lab / "notes.txt").write_text("mine")

    done = drcheck(config, "demo")

    assert done.returncode != 0 and "not a demo lab" in done.stderr
    assert (lab / "notes.txt").read_text() == "mine"
