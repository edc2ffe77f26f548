"""The files restore test with real restic: the restore of the point the probe recorded
starts while `snapshots` confirms it and `ls` lists it (restic confined to the sandbox by
Landlock), a wrong guess is discarded, and a confined restic cannot write elsewhere."""

from __future__ import annotations

import json
import os

import pytest

from drcheck import confine
from drcheck.results import Status

from .conftest import utc

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not confine.available() and not os.environ.get("CI"),
                       reason="this kernel has no Landlock (CI requires it)"),
]

# restic, but `ls` takes two seconds longer: the restore surely starts before it ends
SLOW_LS = 'for a in "$@"; do [ "$a" = ls ] && sleep 2; done\nexec "$RESTIC" "$@"'


def healthy(lab, hours: float = 1.0) -> str:
    lab.plant_canary(at=utc(hours=hours, minutes=1))
    return lab.backup(at=utc(hours=hours))


def stored_details(lab) -> dict:
    return json.loads(lab.rows("SELECT details FROM restore_tests ORDER BY id")[-1]["details"])


def test_the_restore_starts_while_the_point_is_confirmed_and_listed(lab):
    snapshot = healthy(lab)
    lab.configure(probes={"repo": {"restic_command": str(lab.wrapper("restic-slow-ls", SLOW_LS))}})
    assert lab.probe().status is Status.OK

    result = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.point_id == snapshot or result.point_id.startswith(snapshot[:8])
    assert all(c.status is Status.PASSED for c in result.checks)
    details = stored_details(lab)  # the evidence, as the store keeps it
    assert details["overlap"] == "used"
    timeline = details["timeline"]
    assert timeline["restore"][0] < timeline["listing"][1]  # restic restore began before ls ended
    assert timeline["restore"][0] < timeline["snapshots"][1]
    assert lab.sandbox_entries() == []
    assert lab.rows("SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL")[0]["n"] == 0
    assert list((lab.repo / "locks").iterdir()) == []  # restic took and removed its lock


def test_a_snapshot_taken_after_the_probe_is_the_one_restored(lab):
    older = healthy(lab, hours=2)
    assert lab.probe().status is Status.OK
    lab.write("docs/after-the-probe.txt", "written after the probe ran\n")
    lab.plant_canary(at=utc(minutes=5))
    newer = lab.backup(at=utc(minutes=4))

    result = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert result.point_id.startswith(newer[:8]) and not result.point_id.startswith(older[:8])
    assert result.rpo_source == "canary" and result.rpo_seconds < 3600
    assert stored_details(lab)["overlap"] == "discarded: a newer restore point exists"
    complete = next(c for c in result.checks if c.name == "completeness")
    assert complete.status is Status.PASSED, complete.evidence
    assert lab.sandbox_entries() == []
    assert lab.rows("SELECT COUNT(*) AS n FROM leases WHERE released_at IS NULL")[0]["n"] == 0


@pytest.mark.parametrize("probed", [True, False], ids=["overlapped", "sequential"])
def test_a_confined_restic_cannot_write_outside_the_sandbox(lab, probed):
    healthy(lab)
    escaped, planted = lab.root / "escaped", lab.source / "planted-by-restore"
    # a restic (or a backup) trying to write outside its target while restoring
    evil = lab.wrapper("restic-evil", f"""for a in "$@"; do
  if [ "$a" = restore ]; then echo evil > {escaped}; echo evil > {planted}; rm -f {lab.source}/blob.bin; fi
done
exec "$RESTIC" "$@"
""")
    lab.configure(probes={"repo": {"restic_command": str(evil)}})
    if probed:
        assert lab.probe().status is Status.OK

    result = lab.restore_test()

    assert not escaped.exists() and not planted.exists()  # refused by the kernel
    assert (lab.source / "blob.bin").exists()
    assert result.status is Status.PASSED, result.reason
    assert stored_details(lab)["overlap"] == ("used" if probed else "not used: no probe recorded a restore point yet")
    assert lab.sandbox_entries() == []
