"""Reconciliation end to end: a real restic repository whose hosts are backed up at
different ages, the simulated vCenter's inventory, runbook claims and exclusions (one
expired) — both probes run for real, then status and `drcheck assets` name the VMs that
have no restore point within their RPO."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from drcheck.engine import run_probe
from drcheck.results import Status
from drcheck.rules import evaluate, unprotected_vms
from drcheck.store import Store

from .conftest import RESTIC, ResticLab, utc

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(RESTIC is None, reason="restic is not installed")]

TODAY = date.today()


def vm(name: str, folder: str, **extra) -> dict:
    return {"name": name, "folder": folder, "cluster": "DC0_C0", "datastore": "LocalDS_0", "power": "on", **extra}


SCENARIO = {
    "folders": ["DC0/vm/Apps", "DC0/vm/Labs", "DC0/vm/Library"],
    "vms": [
        vm("app01", "DC0/vm/Apps"),                                        # backed up an hour ago
        vm("APP-DB", "DC0/vm/Apps", hostname="appdb.district.local"),      # its guest's host name is backed up
        vm("reports01", "DC0/vm/Apps"),                                    # backed up 3 days ago: over 24h
        vm("kiosk", "DC0/vm/Library"),                                     # nobody backs it up
        vm("lab-1", "DC0/vm/Labs"),                                        # excluded, but the exclusion expired
        vm("lab-2", "DC0/vm/Labs"),                                        # excluded until next month
    ],
}


@pytest.fixture
def district(tmp_path, make_vcenter, vcsim_ca):
    lab = ResticLab(tmp_path)
    sim = make_vcenter(scenario=SCENARIO, tls=vcsim_ca)
    (tmp_path / "vc-password").write_text(sim.password + "\n")
    lab.backup(at=utc(hours=1), host="app01")
    lab.backup(at=utc(hours=2), host="appdb")
    lab.backup(at=utc(days=3), host="reports01")
    runbook = (tmp_path / "runbooks" / "app.toml")
    runbook.write_text(runbook.read_text() + '\n[[vms]]\nfolder = "/DC0/vm/Apps"\n')
    lab.configure(probes={"vc": {
        "kind": "vmware", "url": sim.url, "username": sim.username, "password": {"file": str(tmp_path / "vc-password")},
        "ca_bundle": str(vcsim_ca.ca), "call_timeout": "10s", "default_rpo": "7d",
        "exclusions": [
            {"name": "lab-1", "reason": "lab image", "owner": "Technician", "expires": str(TODAY - timedelta(days=3))},
            {"name": "lab-2", "reason": "lab image", "owner": "Technician", "expires": str(TODAY + timedelta(days=30))},
        ]}})
    return lab


def test_unprotected_vms_are_named_from_real_backups_and_a_real_inventory(district):
    loaded = district.loaded()
    with Store(loaded.database_path) as store:
        assert run_probe(loaded, store, "repo").status is Status.OK
        assert run_probe(loaded, store, "vc").status is Status.OK
        results = evaluate(loaded, store, utc())
    verdicts = {r.subject: r for r in results if r.rule == "R3.vm_protected"}
    assert verdicts["/DC0/vm/Apps/app01"].passed and verdicts["/DC0/vm/Apps/app01"].system == "app"
    assert verdicts["/DC0/vm/Apps/APP-DB"].passed  # matched through its guest host name
    assert verdicts["/DC0/vm/Labs/lab-2"].passed and "excluded until" in verdicts["/DC0/vm/Labs/lab-2"].message
    assert sorted(r.subject for r in unprotected_vms(results)) == [
        "/DC0/vm/Apps/reports01", "/DC0/vm/Labs/lab-1", "/DC0/vm/Library/kiosk"]
    assert "over its RPO 1d" in verdicts["/DC0/vm/Apps/reports01"].message  # the runbook's RPO, not default_rpo
    assert "exclusion expired on" in verdicts["/DC0/vm/Labs/lab-1"].message

    assets = district.cli("assets", "--unprotected", "--json")
    assert assets.returncode == 1
    assert {v["name"]: v["state"] for v in json.loads(assets.stdout)} == {
        "reports01": "stale", "lab-1": "unprotected", "kiosk": "unprotected"}
    status = district.cli("status")
    assert status.returncode == 1 and "3 unprotected VM(s)" in status.stdout
    for name in ("reports01", "lab-1", "kiosk"):
        assert f"  • {name} (" in status.stdout


def test_probing_the_vcenter_from_the_cli_names_its_unprotected_vms(district):
    assert district.cli("probe", "repo").returncode == 0  # the app system's newest point is fresh
    probed = district.cli("probe", "vc")
    assert probed.returncode == 1, probed.stdout + probed.stderr
    assert "VM /DC0/vm/Library/kiosk is unprotected: no restore point in any copy" in probed.stdout
    assert "R3.vm_protected" in probed.stdout and "vc: ok" in probed.stdout
