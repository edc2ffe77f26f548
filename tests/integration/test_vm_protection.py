"""Reconciliation (rule R3): inventory VMs joined with runbooks, exclusions and the
restore points backup probes list. Real store, real configuration, real rules; the
inventory and the listings are recorded as the vmware and restic probes report them."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from drcheck.config_loader import load
from drcheck.metrics import registry_for
from drcheck.protection import backed_up, reconcile
from drcheck.results import InventoryAsset, ProbeResult, Status
from drcheck.rules import evaluate, unprotected_vms
from drcheck.store import Store

NOW = datetime.now(timezone.utc).replace(microsecond=0)
H = timedelta(hours=1)
TODAY = NOW.date()

CONFIG = """
[agent]
state_dir = "state"
sandbox_root = "sandbox"
[sites.office]
[copies.local]
site = "office"
[probes.vcenter]
kind = "vmware"
url = "https://127.0.0.1:1/sdk"
username = "ro"
password = {{ env = "VC_PASS" }}
default_rpo = "48h"
[[probes.vcenter.exclusions]]
name = "lab-*"
reason = "throwaway lab machines"
owner = "Network Administrator"
expires = "{future}"
[[probes.vcenter.exclusions]]
name = "old-kiosk"
reason = "to be decommissioned"
owner = "IT Director"
expires = "{past}"
[probes.restic]
kind = "restic"
copy = "local"
repository = "repo"
password = {{ env = "RESTIC_PASS" }}
[[probes.restic.systems]]
system = "sis"
hosts = ["sis01"]
"""

SIS = """
name = "SIS"
tier = 1
owner = "Network Administrator"
rto = "4h"
rpo = "24h"
mtd = "24h"
assets = ["vm:sis01", "vm:sis-reports"]
[[vms]]
folder = "/District/vm/SIS"
"""


@pytest.fixture
def loaded(tmp_path):
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "sis.toml").write_text(SIS)
    (tmp_path / "drcheck.toml").write_text(CONFIG.format(future=TODAY + timedelta(days=30),
                                                         past=TODAY - timedelta(days=1)))
    return load(tmp_path / "drcheck.toml")


def vm(uuid: str, name: str, folder: str, **attributes) -> InventoryAsset:
    return InventoryAsset(source="vcenter", asset_id=uuid, name=name, protected=False, kind="vm",
                          attributes={"folder": folder, "path": f"{folder}/{name}", **attributes})


def record(store: Store, probe: str, kind: str, action: str, assets: list[InventoryAsset], at: datetime) -> None:
    store.record_probe(ProbeResult(probe=probe, kind=kind, action=action, status=Status.OK, started_at=at,
                                   finished_at=at, copy="local" if kind == "restic" else None, assets=assets))


@pytest.fixture
def store(loaded):
    with Store(loaded.database_path) as opened:
        record(opened, "vcenter", "vmware", "inventory", [
            vm("u-sis01", "sis01", "/District/vm/SIS"),
            vm("u-web", "web01", "/District/vm/Schools", guest_hostname="web01.district.local"),
            vm("u-web-b", "web01", "/District/vm/Labs"),  # same name elsewhere: distinct
            vm("u-sisdb", "sisdb", "/District/vm/SIS"),
            vm("u-lab", "lab-07", "/District/vm/Labs"),
            vm("u-kiosk", "old-kiosk", "/District/vm/Schools"),
            vm("u-tmpl", "win2022-template", "/District/vm/Templates", template=True),
            vm("u-mail", "mail01", "/District/vm/Schools", moref="vm-77"),
        ], NOW - H)
        record(opened, "restic", "restic", "snapshots", backed_up("restic", "local", [
            ("sis01", NOW - 2 * H, "a1", "sis"),
            ("sis01", NOW - 30 * H, "a0", "sis"),
            ("WEB01.district.local", NOW - 3 * H, "b1", None),
            ("sisdb", NOW - 30 * H, "c1", None),  # older than sis's 24h RPO
        ]) + [InventoryAsset(source="restic", asset_id="veeam:vm-77", name="mail01 (renamed in Veeam)", protected=True,
                             kind="backup", attributes={"copy": "local", "newest": (NOW - H).isoformat(),
                                                        "point_id": "rp-1", "match": {"vm_moref": "vm-77"}})], NOW - H)
        yield opened


def verdicts(loaded, store):
    return {r.subject: r for r in evaluate(loaded, store, NOW) if r.rule == "R3.vm_protected"}


def test_each_vm_is_judged_against_its_systems_rpo_and_every_copy(loaded, store):
    found = verdicts(loaded, store)
    assert found["/District/vm/SIS/sis01"].passed and found["/District/vm/SIS/sis01"].system == "sis"
    assert found["/District/vm/SIS/sis01"].measured == pytest.approx(2 * 3600)
    stale = found["/District/vm/SIS/sisdb"]  # claimed by the folder rule: sis's RPO (24h), not the default
    assert not stale.passed and stale.threshold == 24 * 3600 and "over its RPO" in stale.message
    assert found["/District/vm/Schools/web01"].passed  # guest host name matched, domain and case ignored
    assert found["/District/vm/Schools/web01"].threshold == 48 * 3600  # no runbook: the probe's default_rpo
    assert found["/District/vm/Schools/mail01"].passed  # a VM-level backup names it by its moref


def test_duplicate_names_in_other_folders_stay_distinct(loaded, store):
    found = verdicts(loaded, store)
    # both are named web01 and the backup host matches both names; each is judged on its own
    assert {"/District/vm/Schools/web01", "/District/vm/Labs/web01"} <= set(found)
    assert [v.uuid for v in reconcile(loaded, store.current_assets()) if v.name == "web01"] == ["u-web-b", "u-web"]


def test_exclusions_protect_until_they_expire_and_templates_are_not_vms_to_back_up(loaded, store):
    found = verdicts(loaded, store)
    assert found["/District/vm/Labs/lab-07"].passed and "excluded until" in found["/District/vm/Labs/lab-07"].message
    kiosk = found["/District/vm/Schools/old-kiosk"]
    assert not kiosk.passed and "exclusion expired on" in kiosk.message and "IT Director" in kiosk.message
    assert not any("template" in subject for subject in found)


def test_unprotected_vms_are_named_and_counted_per_inventory_probe(loaded, store):
    results = evaluate(loaded, store, NOW)
    assert sorted(r.subject for r in unprotected_vms(results)) == [
        "/District/vm/SIS/sisdb", "/District/vm/Schools/old-kiosk"]
    family = next(f for f in registry_for(loaded).collect() if f.name == "drcheck_unprotected_assets")
    assert {s.labels["source"]: s.value for s in family.samples}["vcenter"] == 2


def test_a_runbook_vm_the_inventory_lacks_is_reported(loaded, store):
    named = {r.subject: r for r in evaluate(loaded, store, NOW) if r.rule == "R3.runbook_vm"}
    assert named["name sis01"].passed
    assert not named["name sis-reports"].passed and "no vCenter inventory" in named["name sis-reports"].message


def test_a_renamed_vm_keeps_its_verdict_history_by_uuid(loaded, store):
    record(store, "vcenter", "vmware", "inventory", [vm("u-sis01", "sis01-new", "/District/vm/SIS")], NOW)
    rows = store.query("SELECT event, name FROM assets WHERE asset_id = 'u-sis01' ORDER BY id")
    assert [(r["event"], r["name"]) for r in rows] == [("appeared", "sis01"), ("changed", "sis01-new")]
    named = {r.subject: r for r in evaluate(loaded, store, NOW) if r.rule == "R3.runbook_vm"}
    assert not named["name sis01"].passed  # the runbook still names the old name: say so


def test_exclusion_expiry_is_a_date(loaded):
    exclusion = loaded.config.probes["vcenter"].exclusions[1]
    assert exclusion.expired(TODAY) and not exclusion.expired(date(2000, 1, 1))


def test_assets_and_status_name_the_unprotected_vms(loaded, store, monkeypatch):
    import json

    from click.testing import CliRunner

    from drcheck.cli import cli

    monkeypatch.setenv("COLUMNS", "200")
    run = CliRunner().invoke(cli, ["--config", str(loaded.path), "assets", "--json", "--unprotected"])
    assert run.exit_code == 1, run.output
    listed = json.loads(run.output)
    assert [(v["name"], v["state"]) for v in listed] == [("old-kiosk", "unprotected"), ("sisdb", "stale")]
    assert listed[1]["systems"] == ["sis"] and listed[1]["copies"][0]["copy"] == "local"

    table = CliRunner().invoke(cli, ["--config", str(loaded.path), "assets"])
    assert table.exit_code == 1 and "web01" in table.output and "2 unprotected VM(s)" in table.output

    status = CliRunner().invoke(cli, ["--config", str(loaded.path), "status"])
    assert status.exit_code == 1
    assert "old-kiosk (no runbook claims it): VM /District/vm/Schools/old-kiosk is unprotected" in status.output
    status_json = json.loads(CliRunner().invoke(cli, ["--config", str(loaded.path), "status", "--json"]).output)
    assert {v["name"] for v in status_json["unprotected_vms"]} == {"sisdb", "old-kiosk"}


def test_the_weekly_report_lists_unprotected_vms_and_unclaimed_failures(loaded, store):
    from drcheck.reporting import environment, weekly_context

    html = environment(loaded).get_template("weekly.html.j2").render(**weekly_context(loaded, store, NOW))
    assert "8 VMs in the vCenter inventory" not in html  # templates are not VMs to protect
    assert "7 VMs in the vCenter inventory" in html and "2 unprotected" in html
    assert 'data-vm="u-kiosk" data-state="unprotected"' in html and 'data-vm="u-sisdb" data-state="stale"' in html
    assert "Inventory</strong> (VMs no runbook claims)" in html  # old-kiosk fails R3 with no system


def test_vms_are_matched_to_runbooks_once_per_inventory_and_configuration(loaded, store, monkeypatch):
    from drcheck.vm_select import VmSelector

    calls = []
    original = VmSelector.matches
    def counted(self, vm):  # runbook claims only (a probe's few exclusions are judged at every evaluation)
        if type(self) is VmSelector:
            calls.append(vm.name)
        return original(self, vm)

    monkeypatch.setattr(VmSelector, "matches", counted)
    evaluate(loaded, store, NOW)
    first = len(calls)
    evaluate(loaded, store, NOW)  # a second scrape: same configuration, same inventory
    assert first > 0 and len(calls) == first
    record(store, "vcenter", "vmware", "inventory", [vm("u-new", "sis02", "/District/vm/SIS")], NOW)
    assert [r.system for r in evaluate(loaded, store, NOW) if r.subject == "/District/vm/SIS/sis02"] == ["sis"]
    again = len(calls)
    reloaded = load(loaded.path)  # SIGHUP: a new configuration object is matched afresh
    evaluate(reloaded, store, NOW)
    assert again > first and len(calls) > again


def test_tables_piped_into_a_log_keep_their_cells_whole(loaded, store):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    run = subprocess.run([sys.executable, "-m", "drcheck", "--config", str(loaded.path), "assets"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert "/District/vm/Schools" in run.stdout and "unprotected" in run.stdout and "…" not in run.stdout
