"""`drcheck demo` on a copy of the embedded configuration, and its refusal to touch a
configuration whose data lies outside the demo lab."""

from __future__ import annotations

import email
import email.policy
import json
import re
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
    for default in ("127.0.0.1:18443", "127.0.0.1:18444", "port = 18993", "port = 18587"):  # vCenter, Veeam, IMAP, SMTP
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
    # the weekly report went out by e-mail through the lab's SMTP server: both parts
    mailed = Path(re.search(r"e-mailed to the lab mailbox:\s+(\S+\.eml)", done.stdout).group(1))
    message = email.message_from_bytes(mailed.read_bytes(), policy=email.policy.default)
    assert message.get_body(("plain",)).get_content() and "<html" in message.get_body(("html",)).get_content()
    # compliance: what an auditor of this district would write down
    shown = drcheck(config, "compliance", "--json")
    assert shown.returncode == 1  # critical findings
    found = {(r["rule"], r["system"]) for r in json.loads(shown.stdout)["results"] if not r["passed"]}
    for system in ("sis", "fileserver", "payroll", "schools"):
        assert ("R5.immutable", system) in found  # no immutable or offline copy anywhere
    assert {("R11.exercise", None), ("R12.plan_review", None), ("R12.contacts", None)} <= found
    assert ("R14.recovery_order", "sis") in found  # the file server (RTO 8h) must be back before sis (4h)
    assert ("R15.facility", "schools") in found  # its only copy is in the district office
    assert "5. Compliance" in done.stdout and "open corrective actions" in done.stdout
    # the DR plan: HTML and PDF, the findings listed as open corrective actions
    html = Path(re.search(r"DR plan: (\S+\.html)", done.stdout).group(1))
    pdf = Path(re.search(r"DR plan \(PDF\): (\S+\.pdf)", done.stdout).group(1))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout
    assert "4. Recovery" in text and "10. Compliance matrix" in text
    assert re.search(r"newest restore point in barracuda is .* old", text)  # payroll's silent data source
    assert "R5.immutable" in text and "R15.facility" in text and "wet-pipe" in text
    page = html.read_text()
    assert 'id="system-payroll"' in page and "nutrition-center" in page
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
