"""The Barracuda probe with the IMAP client replaced (the clients/ boundary only): its
configuration, how data sources become system points, assets and findings, and how the
state carries from run to run through the store."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import tomli_w
from pydantic import ValidationError

from drcheck.clients import imap
from drcheck.config_loader import ConfigError, load
from drcheck.engine import run_probe
from drcheck.probes.barracuda import BarracudaProbe, DataSourceRule
from drcheck.results import Status
from drcheck.store import Store
from tests.peers.barracuda import generator as g

NIGHT = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=10)
APPLIANCE = "bbs-district"
RUNBOOK = {"name": "x", "tier": 1, "owner": "IT", "rto": "1h", "rpo": "1d", "mtd": "1d"}


class FakeMailbox:
    """Stands in for an open folder: `messages` maps UID -> raw message."""

    folders: dict[str, dict[int, bytes]] = {}
    uidvalidity = 7
    moves: list[tuple[list[int], str]] = []
    fail: imap.ImapError | None = None
    readonly_seen: list[bool] = []

    def __init__(self, folder: str, readonly: bool):
        self.folder, self.readonly = folder, readonly
        self.messages = self.folders.setdefault(folder, {})

    def uids_after(self, cursor):
        return sorted(uid for uid in self.messages if uid > cursor)

    def fetch(self, uids, batch=1000):
        for i in range(0, len(uids), batch):
            yield [imap.Message(uid, self.messages[uid]) for uid in uids[i:i + batch] if uid in self.messages]

    def present(self, uids):
        return set(uids) & set(self.messages)

    def move(self, uids, folder):
        FakeMailbox.moves.append((sorted(uids), folder))
        for uid in uids:
            self.folders.setdefault(folder, {})[uid] = self.messages.pop(uid)
        return len(uids)


@contextlib.contextmanager
def fake_open(endpoint, folder, *, readonly=True):
    if FakeMailbox.fail:
        raise FakeMailbox.fail
    box = FakeMailbox(folder, readonly)
    box.uidvalidity = FakeMailbox.uidvalidity
    FakeMailbox.readonly_seen.append(readonly)
    yield box


@pytest.fixture(autouse=True)
def boundary(monkeypatch):
    FakeMailbox.folders, FakeMailbox.moves, FakeMailbox.fail, FakeMailbox.uidvalidity = {}, [], None, 7
    FakeMailbox.readonly_seen = []
    monkeypatch.setattr(imap, "open_mailbox", fake_open)


def deliver(*messages: bytes) -> None:
    box = FakeMailbox.folders.setdefault("INBOX", {})
    start = max([0, *box, *(u for f in FakeMailbox.folders.values() for u in f)])
    for uid, raw in enumerate(messages, start + 1):
        box[uid] = raw


PROBE = {"kind": "barracuda", "copy": "appliance", "offsite_copy": "cloud", "host": "imap.example",
         "username": "reports", "password": {"env": "IMAP_PASSWORD"},
         "systems": [{"system": "sis", "data_sources": ["sis-db01", "sis-app01"]},
                     {"system": "finance", "data_sources": ["finance-*"], "offsite": False}]}


def write_config(tmp_path: Path, **probe) -> Path:
    (tmp_path / "runbooks").mkdir(exist_ok=True)
    for system in ("sis", "finance"):
        (tmp_path / "runbooks" / f"{system}.toml").write_text(tomli_w.dumps(RUNBOOK))
    path = tmp_path / "drcheck.toml"
    path.write_text(tomli_w.dumps({
        "agent": {"state_dir": "state", "sandbox_root": "sandbox"},
        "sites": {"s": {}, "c": {}}, "copies": {"appliance": {"site": "s"}, "cloud": {"site": "c"}},
        "probes": {"mail": {**PROBE, **probe}}}))
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    return write_config(tmp_path)


def probe(path: Path):
    loaded = load(path)
    with Store(loaded.database_path) as store:
        return run_probe(loaded, store, "mail", "mailbox")


def runs(*names: str, at: datetime = NIGHT, **kwargs) -> list[g.SourceRun]:
    return [g.SourceRun(name, at + timedelta(minutes=10 * i), **kwargs) for i, name in enumerate(names)]


def test_a_system_is_as_recent_as_its_stalest_data_source(config):
    deliver(g.report(APPLIANCE, "N", runs("sis-db01", "sis-app01", "finance-app01", "finance-db01", "library01",
                                          at=NIGHT - timedelta(days=1))),
            g.report(APPLIANCE, "N", runs("sis-db01", "finance-app01")))
    result = probe(config)
    assert result.status is Status.OK, result.reason
    got = {(p.system, p.copy): (p.point_time, p.point_id, p.host) for p in result.newest}
    sis_app = NIGHT - timedelta(days=1) + timedelta(minutes=10)
    assert got[("sis", "appliance")][0] == sis_app  # sis-app01 did not run last night
    assert got[("sis", "appliance")][1] == \
        f"{APPLIANCE}/vcenter.district.local/sis-app01@{sis_app:%Y-%m-%dT%H:%M:%SZ}"
    assert got[("finance", "appliance")][0] == NIGHT - timedelta(days=1) + timedelta(minutes=30)
    assert set(got) == {("sis", "appliance"), ("sis", "cloud"), ("finance", "appliance")}
    assert result.point_counts == {"sis": 3, "finance": 3}
    assert [(f.code, f.severity.value) for f in result.findings] == [("unmapped_data_sources", "info")]
    assert "library01" in result.findings[0].message
    assert len(result.assets) == 10 and all(a.kind == "backup" for a in result.assets)


def test_an_expected_data_source_that_never_reported_leaves_no_point(config):
    deliver(g.report(APPLIANCE, "N", runs("sis-db01", "finance-app01")))
    result = probe(config)
    assert {(p.system, p.copy) for p in result.newest} == {("finance", "appliance")}


def test_the_next_run_reads_only_new_messages_and_keeps_the_rest(config):
    deliver(*(g.report(APPLIANCE, "N", runs("sis-db01", "sis-app01", at=NIGHT - timedelta(days=d))) for d in (3, 2)))
    first = probe(config)
    assert first.details["run"]["read"] == 2 and first.details["last_uid"] == 2
    deliver(g.report(APPLIANCE, "N", runs("sis-db01", "sis-app01")))
    second = probe(config)
    assert second.details["run"]["read"] == 1 and second.details["messages"] == 3
    assert {p.point_time for p in second.newest if p.system == "sis"} == {NIGHT}  # sis-db01, the stalest
    assert second.point_counts == {"sis": 6}


def test_an_unreachable_mailbox_is_an_error_that_records_no_state(config):
    deliver(g.report(APPLIANCE, "N", runs("sis-db01", "sis-app01")))
    assert probe(config).status is Status.OK
    FakeMailbox.fail = imap.ImapUnreachable("cannot reach IMAP server imap.example:993: Connection refused")
    result = probe(config)
    assert (result.status, result.reason) == (Status.ERROR, FakeMailbox.fail.reason)
    assert result.details == {} and result.newest == []
    FakeMailbox.fail = None
    assert probe(config).details["last_uid"] == 1  # the error run's missing state is no state


def test_a_changed_uidvalidity_reads_everything_again(config):
    deliver(g.report(APPLIANCE, "N", runs("sis-db01", "sis-app01")))
    probe(config)
    FakeMailbox.uidvalidity = 8
    result = probe(config)
    assert [f.code for f in result.findings] == ["uidvalidity_changed"]
    assert result.details["run"]["read"] == 1 and result.point_counts == {"sis": 2}


def test_many_unreadable_messages_are_named_up_to_a_limit(tmp_path):
    path = write_config(tmp_path, max_unparsed_findings=3)
    deliver(*(g.foreign(NIGHT, subject=f"menu {i}") for i in range(5)))
    found = [(f.code, f.subject) for f in probe(path).findings]
    assert found == [("unparsed_message", "message:1"), ("unparsed_message", "message:2"),
                     ("unparsed_message", "message:3"), ("unparsed_messages", None)]


def test_move_to_moves_what_a_recorded_run_read(tmp_path):
    path = write_config(tmp_path, move_to="Processed")
    deliver(g.report(APPLIANCE, "N", runs("sis-db01", "sis-app01")), g.notice(APPLIANCE, NIGHT),
            g.foreign(NIGHT), g.alert(APPLIANCE, "offline", NIGHT))
    first = probe(path)
    assert FakeMailbox.moves == [] and first.details["pending_move"] == "1:2,4"
    assert FakeMailbox.readonly_seen == [False]  # SELECT: it will move
    second = probe(path)
    assert FakeMailbox.moves == [([1, 2, 4], "Processed")] and second.details["pending_move"] == ""
    assert sorted(FakeMailbox.folders["INBOX"]) == [3]  # the lunch menu stays, and stays a finding
    assert {(p.system, p.copy) for p in second.newest} == {("sis", "appliance"), ("sis", "cloud")}


def test_read_only_by_default(config):
    deliver(g.report(APPLIANCE, "N", runs("sis-db01")))
    probe(config)
    assert FakeMailbox.readonly_seen == [True] and FakeMailbox.moves == []


def test_configuration_rules(tmp_path):
    target = BarracudaProbe.model_validate(PROBE)
    assert target.copies_of("sis") == ["appliance", "cloud"] and target.copies_of("finance") == ["appliance"]
    assert target.systems_covered() == {"sis", "finance"}
    assert target.origin() == "reports@imap.example/INBOX"
    with pytest.raises(ValidationError, match="give at least one of data_sources, computers, appliances"):
        DataSourceRule(system="sis")
    with pytest.raises(ValidationError, match="unknown time zone"):
        BarracudaProbe.model_validate({**PROBE, "timezone": "Mars/Olympus"})
    with pytest.raises(ValidationError, match="inline secrets are not allowed"):
        BarracudaProbe.model_validate({**PROBE, "password": "hunter2"})
    with pytest.raises(ConfigError) as bad:
        load(write_config(tmp_path, offsite_copy="tape", systems=[{"system": "payroll", "appliances": ["bbs*"]}]))
    assert "probes.mail.offsite_copy: unknown copy 'tape'" in str(bad.value)
    assert "probes.mail.systems[0].system: unknown system 'payroll'" in str(bad.value)
    with pytest.raises(ConfigError, match="must be another copy than `copy`"):
        load(write_config(tmp_path, offsite_copy="appliance"))
