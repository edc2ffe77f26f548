"""The Barracuda probe's state: facts are maxima (order does not matter, nothing counts
twice), alerts end when what their rule names happens later, and the state survives a
round trip through a run's details."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from drcheck.probes.barracuda_parse import Parser
from drcheck.probes.barracuda_rules import ParsingRules
from drcheck.probes.barracuda_state import LOCAL, OFFSITE, State
from tests.peers.barracuda import generator as g

T0 = datetime(2026, 11, 20, 4, 0, 5, tzinfo=timezone.utc)
APPLIANCE = "bbs-district"
SIS = "bbs-district/vcenter.district.local/sis-db01"
RULES = {r.code: (r.severity, r.about, r.cleared_by) for r in ParsingRules().alerts}


def state_of(*messages: bytes, origin: str = "reports@imap/INBOX") -> State:
    parser, state = Parser(ParsingRules()), State(origin, rules=dict(RULES))
    for uid, raw in enumerate(messages, 1):
        state.apply(parser.parse(uid, raw))
    return state


def night(day: int, status: str = g.COMPLETED, offsite: str | None = g.OFFSITE_OK, **run) -> bytes:
    return g.report(APPLIANCE, "Nightly", [g.SourceRun("sis-db01", T0 + timedelta(days=day), status=status, **run)],
                    offsite=offsite)


def alert(kind: str, day: float, **kwargs) -> bytes:
    return g.alert(APPLIANCE, kind, T0 + timedelta(days=day), **kwargs)


def open_codes(state: State) -> list[str]:
    return [a.code for a in state.open_alerts()]


def test_the_newest_backup_per_copy_whatever_the_order_and_each_counted_once():
    messages = [night(d) for d in range(6)] + [night(6, offsite=g.OFFSITE_BEHIND)]
    ordered = state_of(*messages)
    shuffled = list(messages)
    random.Random(3).shuffle(shuffled)
    source = ordered.sources[SIS]
    assert source.points[LOCAL].time == T0 + timedelta(days=6) and source.points[LOCAL].count == 7
    assert source.points[OFFSITE].time == T0 + timedelta(days=5) and source.points[OFFSITE].count == 6
    assert {k: v for k, v in state_of(*shuffled).dump().items() if k not in ("last_uid", "sources")} == \
        {k: v for k, v in ordered.dump().items() if k not in ("last_uid", "sources")}
    again = state_of(*messages, night(6))  # the same job reported twice
    assert again.sources[SIS].points[LOCAL].count == 7


def test_a_failed_job_stays_open_until_a_later_backup_succeeds():
    state = state_of(night(0), night(1, status=g.FAILED, error="no route to host"))
    (failed,) = state.open_alerts()
    assert (failed.code, failed.severity, failed.subject) == ("job_failed", "critical", f"source:{SIS}")
    assert failed.details == "no route to host" and state.sources[SIS].points[LOCAL].time == T0
    assert open_codes(state_of(night(1, status=g.FAILED), night(0))) == ["job_failed"]  # an older success
    assert open_codes(state_of(night(1, status=g.FAILED), night(2))) == []


def test_warnings_end_only_with_a_clean_backup():
    state = state_of(night(0, status=g.WARNINGS))
    assert open_codes(state) == ["job_warning"] and state.sources[SIS].points[LOCAL].time == T0  # it completed
    assert open_codes(state_of(night(0, status=g.WARNINGS), night(1, status=g.WARNINGS))) == ["job_warning"]
    assert open_codes(state_of(night(0, status=g.WARNINGS), night(1))) == []


def test_an_offline_appliance_ends_with_its_online_alert_or_a_later_report():
    assert open_codes(state_of(night(0), alert("offline", 0.5))) == ["appliance_offline"]
    assert open_codes(state_of(alert("offline", 0.5), alert("online", 0.6))) == []
    assert open_codes(state_of(alert("offline", 0.5), night(1))) == []
    assert open_codes(state_of(alert("online", 0.4), alert("offline", 0.5))) == ["appliance_offline"]


def test_replication_behind_ends_with_a_report_that_is_up_to_date():
    behind = alert("replication_behind", 0.5, details="52 GB queued")
    assert open_codes(state_of(behind, night(1, offsite=g.OFFSITE_BEHIND))) == ["replication_behind"]
    assert open_codes(state_of(behind, night(1))) == []


def test_a_disk_error_ends_only_when_the_appliance_says_so():
    error = alert("disk_error", 0.5, details="RAID volume 1 degraded: drive 3 failed")
    assert open_codes(state_of(error, night(1), night(2))) == ["disk_error"]
    assert open_codes(state_of(error, alert("disk_resolved", 0.7, details="RAID volume 1 rebuilt"))) == []


def test_a_job_failed_alert_and_the_failed_report_are_one_finding():
    state = state_of(night(1, status=g.FAILED), alert("job_failed", 1.02, source="sis-db01", details="x"))
    (failed,) = state.open_alerts()
    assert failed.uid == 2 and failed.subject == f"source:{SIS}"


def test_the_state_survives_a_round_trip_through_a_runs_details():
    state = state_of(night(0), night(1, status=g.WARNINGS), alert("disk_error", 1.5, details="drive 2 failed"),
                     g.mangled_report(APPLIANCE, T0), alert("offline", 0.2), alert("online", 0.3))
    state.pending_move = "1:3,5"
    details = json.loads(json.dumps(state.dump()))
    loaded = State.load(details, "reports@imap/INBOX")
    assert loaded.fresh_reason == "" and loaded.dump() == details
    assert loaded.unparsed[4]["reason"] == "the report lists no data source"
    assert sorted(open_codes(loaded)) == ["disk_error", "job_warning"]
    assert [a["code"] for a in details["alerts"]] == ["job_warning", "disk_error"]  # ended ones are dropped
    assert details["sources"][SIS]["points"]["local"]["size"] == 40 * 1024 ** 3


@pytest.mark.parametrize("details, reason", [
    ({"version": 99}, "state version 99 is not 1"),
    ({"version": 1, "origin": "other@imap/INBOX"}, "the previous state was read from 'other@imap/INBOX'"),
    ({"version": 1, "origin": "reports@imap/INBOX", "sources": {"x": {"name": "x"}}}, "unreadable (KeyError"),
    ([1, 2], "unreadable (AttributeError"),
])
def test_an_unusable_previous_state_starts_afresh_saying_why(details, reason):
    state = State.load(details, "reports@imap/INBOX")
    assert reason in state.fresh_reason and state.last_uid == 0 and state.sources == {}


def test_a_new_uidvalidity_keeps_what_was_learnt_and_counts_again():
    parser, messages = Parser(ParsingRules()), [night(0), night(1), g.foreign(T0)]
    state = state_of(*messages)
    state.uidvalidity = 1
    state.restart(2)
    assert (state.uidvalidity, state.last_uid, state.unparsed) == (2, 0, {})
    assert state.sources[SIS].points[LOCAL].count == 0 and state.sources[SIS].points[LOCAL].time == T0 + timedelta(1)
    for uid, raw in enumerate(messages, 1):
        state.apply(parser.parse(uid, raw))
    assert state.sources[SIS].points[LOCAL].count == 2 and list(state.unparsed) == [3]
