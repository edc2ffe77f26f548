"""`drcheck store reap|compact` and leftovers in `drcheck status`: resources of dead runs
that cannot be cleaned yet are visible (status exits 1) until a later reap removes them;
the agent schedules the reap by default."""

from __future__ import annotations

import json
import sys
import types

import pytest
from click.testing import CliRunner

from drcheck.cli import cli
from drcheck.scheduler import job_specs

DEAD_PID = 2**22 + 7  # above pid_max: never a live process


@pytest.fixture
def flaky_handler(monkeypatch):
    module = types.ModuleType("drcheck.flaky_leases")
    module.down = True

    def cleanup(lease, loaded):
        if module.down:
            raise ConnectionError("peer unreachable")

    module.cleanup = cleanup
    monkeypatch.setitem(sys.modules, "drcheck.flaky_leases", module)
    return module


def invoke(loaded, *args):
    return CliRunner().invoke(cli, ["--config", str(loaded.path), *args])


def test_leftovers_show_in_status_until_a_reap_removes_them(loaded, store, record, flaky_handler):
    lease = store.take_lease("vm", "clone-of-sis01", "sis-vm", "drcheck.flaky_leases")
    store.db.conn.execute("UPDATE leases SET pid = ? WHERE id = ?", [DEAD_PID, lease])
    store.db.conn.commit()

    reaped = invoke(loaded, "store", "reap", "--json")
    assert reaped.exit_code == 1
    (left,) = json.loads(reaped.output)["left_behind"]
    assert left["resource"] == "clone-of-sis01" and left["attempts"] == 1 and "peer unreachable" in left["last_error"]

    status = invoke(loaded, "status", "--json")
    assert status.exit_code == 1
    assert [x["resource"] for x in json.loads(status.output)["leases_left_behind"]] == ["clone-of-sis01"]
    assert "resource(s) left behind by dead runs" in invoke(loaded, "status").output

    flaky_handler.down = False
    again = invoke(loaded, "store", "reap", "--json")
    assert again.exit_code == 0 and [x["resource"] for x in json.loads(again.output)["released"]] == ["clone-of-sis01"]
    assert json.loads(invoke(loaded, "status", "--json").output)["leases_left_behind"] == []


def test_compact_reports_what_it_removed_and_keeps_recent_history(loaded, store, record):
    done = invoke(loaded, "store", "compact", "--keep-days", "30", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.output)
    assert set(summary) >= {"cutoff", "removed"}
    assert invoke(loaded, "store", "compact", "--keep-days", "1").exit_code == 2  # under the 7-day floor


def test_the_agent_reaps_periodically_and_compacts_only_when_asked(loaded):
    ids = {spec.id: spec for spec in job_specs(loaded)}
    assert ids["store:reap"].args == ("store", "reap")
    assert "store:compact" not in ids
