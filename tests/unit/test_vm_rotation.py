"""Rotation of a `vm` restore test over inventory assets: the set, the order (never tested
first, then least recently proven), N per run within the window, and the coverage
projection, with the vCenter boundary replaced."""

from __future__ import annotations

import copy
import time
from datetime import timedelta

import pytest

from drcheck.context import RunContext
from drcheck.results import InventoryAsset, ProbeResult, RestoreTestResult, Status, utcnow
from drcheck.restore_tests import vm, vm_rotation, vm_verify
from tests.unit.test_vm_fakes import VM_TEST, World, install, loaded_and_store

ROTATION = {**copy.deepcopy(VM_TEST), "source": {"type": "clone"},
            "rotation": {"vms": [{"folder": "/DC0/vm/Schools"}], "per_run": 4}}


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(vm_verify, "BOOT_POLL", (0.01, 0.05))


def asset(name: str, folder: str = "/DC0/vm/Schools", **attributes) -> InventoryAsset:
    return InventoryAsset(source="vc", asset_id=f"uuid-{name}", name=name, kind="vm", protected=False,
                          attributes={"folder": folder, "path": f"{folder}/{name}", **attributes})


def record_inventory(store, assets) -> None:
    now = utcnow()
    store.record_probe(ProbeResult(probe="vc", kind="vmware", action="inventory", status=Status.OK, started_at=now,
                                   finished_at=now, assets=list(assets)))


def twelve_schools() -> list[InventoryAsset]:
    return [asset(f"school{i:02d}") for i in range(12)] + [
        asset("golden", template=True),
        asset("drcheck-vm-sis-20261120T020000Z-1"),
        asset("restored", folder="/DC0/vm/drcheck-sandbox"),
        asset("mail01", folder="/DC0/vm/Servers"),
    ]


def test_the_set_excludes_templates_sandbox_vms_and_other_folders(builders, tmp_path):
    loaded, store = loaded_and_store(builders, tmp_path, ROTATION)
    record_inventory(store, twelve_schools())
    found = vm_rotation.members(loaded, store, "vm-sis")
    assert [m.name for m in found] == [f"school{i:02d}" for i in range(12)]
    assert found[0].path == "/DC0/vm/Schools/school00" and found[0].last_proven is None


def test_twelve_vms_are_covered_in_the_projected_number_of_runs(builders, tmp_path, monkeypatch):
    test = {**ROTATION, "schedule": {"cron": "0 2 * * *"}}
    loaded, store = loaded_and_store(builders, tmp_path, test)
    record_inventory(store, twelve_schools())
    install(monkeypatch, World())
    before = vm.coverage(loaded, store, "vm-sis", utcnow())
    assert (before.runs_to_cover, before.days_to_cover, before.vms_per_day) == (3, 3.0, 4.0)
    assert before.rate_source == "schedule" and before.cycle_days == 3.0
    tested = []
    for _ in range(before.runs_to_cover):
        results = vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store))
        assert [r.status for r in results] == [Status.PASSED] * 4
        for result in results:
            store.record_restore_test(result)
        tested += [r.details["vm"] for r in results]
    assert sorted(tested) == [f"school{i:02d}" for i in range(12)]
    after = vm.coverage(loaded, store, "vm-sis", utcnow())
    assert after.untested == [] and (after.runs_to_cover, after.days_to_cover) == (0, 0.0)
    assert after.as_dict()["vms"][0]["last_proven"] is not None
    # the next run starts over with the least recently proven
    again = vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store))
    assert [r.details["vm"] for r in again] == tested[:4]


def test_results_name_the_vm_by_uuid_and_a_renamed_vm_keeps_its_history(builders, tmp_path, monkeypatch):
    loaded, store = loaded_and_store(builders, tmp_path, ROTATION)
    record_inventory(store, [asset("school00"), asset("school01")])
    install(monkeypatch, World())
    for result in vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store)):
        assert result.details["vm_uuid"] == f"uuid-{result.details['vm']}"
        assert result.details["rotation"]["of"] == 2
        store.record_restore_test(result)
    record_inventory(store, [asset("school00"), InventoryAsset(
        source="vc", asset_id="uuid-school01", name="school01-renamed", kind="vm", protected=False,
        attributes={"folder": "/DC0/vm/Schools", "path": "/DC0/vm/Schools/school01-renamed"})])
    found = {m.name: m.last_proven for m in vm_rotation.members(loaded, store, "vm-sis")}
    assert found["school01-renamed"] is not None


def test_the_window_stops_the_rotation_before_it_is_overrun(builders, tmp_path):
    test = copy.deepcopy(ROTATION)
    test["rotation"]["window"] = "0.3s"
    loaded, store = loaded_and_store(builders, tmp_path, test)
    record_inventory(store, twelve_schools())

    def slow_test(target, ctx, source, label, suffix):
        time.sleep(0.2)
        return passed(ctx)

    results = vm_rotation.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store), slow_test)
    assert len(results) == 1  # 0.1 s were left for a test that takes 0.2 s


def test_an_error_stops_the_rotation(builders, tmp_path):
    loaded, store = loaded_and_store(builders, tmp_path, ROTATION)
    record_inventory(store, twelve_schools())

    def failing(target, ctx, source, label, suffix):
        result = passed(ctx)
        result.status = Status.ERROR
        return result

    results = vm_rotation.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store), failing)
    assert len(results) == 1


def test_an_empty_set_is_one_error(builders, tmp_path, monkeypatch):
    loaded, store = loaded_and_store(builders, tmp_path, ROTATION)
    results = vm.run(loaded.config.restore_tests["vm-sis"], RunContext("vm-sis", loaded, store))
    assert len(results) == 1 and results[0].status is Status.ERROR
    assert "matches no VM in probe vc's inventory" in results[0].reason


def test_without_a_schedule_the_measured_rate_projects(builders, tmp_path):
    loaded, store = loaded_and_store(builders, tmp_path, ROTATION)
    record_inventory(store, twelve_schools())
    now = utcnow()
    for name in ("school00", "school01"):
        result = passed(RunContext("vm-sis", loaded, store))
        result.details.update(vm=name, vm_uuid=f"uuid-{name}")
        store.record_restore_test(result)
    cover = vm.coverage(loaded, store, "vm-sis", now + timedelta(seconds=1))
    assert cover.rate_source == "measured" and cover.vms_per_day == pytest.approx(2 / 14)
    assert len(cover.untested) == 10 and cover.days_to_cover == pytest.approx(10 / (2 / 14))
    assert [m.name for m in cover.vms[-2:]] == ["school00", "school01"]


def test_coverage_of_a_test_without_rotation_is_a_key_error(builders, tmp_path):
    loaded, store = loaded_and_store(builders, tmp_path)
    with pytest.raises(KeyError):
        vm.coverage(loaded, store, "vm-sis", utcnow())


def passed(ctx) -> RestoreTestResult:
    now = utcnow()
    return RestoreTestResult(test=ctx.name, kind="vm", system="sis", status=Status.PASSED, started_at=now,
                             finished_at=now, details={})
