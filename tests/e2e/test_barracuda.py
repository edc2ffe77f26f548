"""Barracuda Backup through its e-mails, end to end: a real Dovecot (started unprivileged by
the fixtures) holds the project's sample reports and alerts; drcheck's probe reads them
over IMAPS and the rules judge what it recorded. Nothing is mocked."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from drcheck.config_loader import load
from drcheck.engine import run_probe
from drcheck.results import Status
from drcheck.rules import evaluate
from drcheck.store import Store
from tests.peers.barracuda import generator as g

from .conftest import RUNBOOK, deep_merge, utc, wait_for

pytestmark = pytest.mark.e2e

APPLIANCE = "bbs-district"
SOURCES = [g.Source("sis-db01"), g.Source("finance-app01"),
           g.Source("files01", computer="files01.district.local", type="Barracuda Backup Agent")]
SYSTEM_RULES = [{"system": "sis", "data_sources": ["sis-db01"]},
                {"system": "finance", "data_sources": ["finance-*"]},
                {"system": "files", "computers": ["files01.*"], "offsite": False}]


class BarracudaLab:
    """A mailbox `reports` on a real Dovecot, three runbook systems and a drcheck config
    whose probe `mail` reads the mailbox (appliance copy `appliance`, offsite `cloud`)."""

    def __init__(self, root: Path, server, ca):
        self.root, self.server, self.ca = root, server, ca
        self.config_path = root / "drcheck.toml"
        (root / "runbooks").mkdir()
        for system in ("sis", "finance", "files"):
            (root / "runbooks" / f"{system}.toml").write_text(tomli_w.dumps({**RUNBOOK, "name": system}))
        (root / "imap-password").write_text(server.users["reports"] + "\n")
        self.configure()

    def base_config(self) -> dict[str, Any]:
        return {
            "agent": {"name": "e2e", "state_dir": "state", "sandbox_root": "sandbox", "runbooks_dir": "runbooks",
                      "timezone": "UTC", "job_timeout": "5m"},
            "metrics": {"enabled": False},
            "reports": {"output_dir": "reports"},
            "sites": {"office": {"description": "server room"}, "cloud": {"description": "Barracuda Cloud"}},
            "copies": {"appliance": {"site": "office", "media": "appliance"}, "cloud": {"site": "cloud", "media": "cloud"}},
            "probes": {"mail": {
                "kind": "barracuda", "copy": "appliance", "offsite_copy": "cloud", "host": "127.0.0.1",
                "port": self.server.port, "username": "reports", "password": {"file": str(self.root / "imap-password")},
                "ca_bundle": str(self.ca.ca), "call_timeout": "10s", "systems": SYSTEM_RULES}},
        }

    def configure(self, **overrides: Any) -> None:
        self.config_path.write_text(tomli_w.dumps(deep_merge(self.base_config(), overrides)))

    def deliver(self, *messages: bytes, folder: str = "INBOX") -> None:
        self.server.deliver("reports", messages, folder)

    def nights(self, days: int = 3, **kwargs) -> None:
        self.deliver(*g.nightly(APPLIANCE, "Nightly", SOURCES, days=days, now=utc(), **kwargs))

    def probe(self):
        loaded = load(self.config_path)
        with Store(loaded.database_path) as store:
            return run_probe(loaded, store, "mail", "mailbox")

    def verdicts(self, rule: str = "R2.backup_age") -> dict[tuple[str, str], Any]:
        loaded = load(self.config_path)
        with Store(loaded.database_path) as store:
            return {(r.system, r.subject): r for r in evaluate(loaded, store, utc()) if r.rule == rule}

    def rows(self, sql: str) -> list[dict]:
        with Store(load(self.config_path).database_path) as store:
            return store.query(sql)

    def details(self) -> dict:
        with Store(load(self.config_path).database_path) as store:
            rows = store.query("SELECT details FROM probe_runs WHERE probe = 'mail' AND status != 'error' "
                               "ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0]["details"])

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "drcheck", "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.root)


@pytest.fixture
def lab(tmp_path, make_imap, imap_ca) -> BarracudaLab:
    return BarracudaLab(tmp_path, make_imap(users={"reports": "mail-secret"}), imap_ca)


def points(result) -> dict[tuple[str, str], datetime]:
    return {(p.system, p.copy): p.point_time for p in result.newest}


def newest_start(days_back: int = 0, offset_minutes: int = 0) -> datetime:
    """The start of a nightly job's run (22:00:05 Central, as `g.nightly` schedules it)."""
    local = utc().astimezone(g.CENTRAL)
    night = local.replace(hour=22, minute=0, second=5, microsecond=0)
    while night + timedelta(hours=3) > local:
        night -= timedelta(days=1)
    return (night - timedelta(days=days_back) + timedelta(minutes=offset_minutes)).astimezone(timezone.utc)


def test_healthy_reports_give_every_system_a_point_in_the_appliance_and_offsite(lab):
    lab.nights(3)
    lab.deliver(g.notice(APPLIANCE, utc(hours=5)))
    result = lab.probe()
    assert result.status is Status.OK, result.reason
    assert points(result) == {
        ("sis", "appliance"): newest_start(), ("sis", "cloud"): newest_start(),
        ("finance", "appliance"): newest_start(offset_minutes=13), ("finance", "cloud"): newest_start(offset_minutes=13),
        ("files", "appliance"): newest_start(offset_minutes=26)}  # files is not judged offsite (offsite = false)
    assert result.point_counts == {"sis": 3, "finance": 3, "files": 3}
    assert [f.code for f in result.findings] == []
    assets = {a.asset_id: a for a in result.assets}
    sis = assets[f"appliance:{APPLIANCE}/vcenter.district.local/sis-db01"]
    assert sis.kind == "backup" and sis.system == "sis" and sis.attributes["match"] == {"vm_name": "sis-db01"}
    files = assets[f"cloud:{APPLIANCE}/files01.district.local/files01"]
    assert files.attributes["match"] == {"hostname": "files01.district.local"}  # an agent backup: its host
    assert len(assets) == 6
    verdicts = lab.verdicts()
    assert all(v.passed for v in verdicts.values()), [v.message for v in verdicts.values()]
    assert set(verdicts) == {("sis", "appliance"), ("sis", "cloud"), ("finance", "appliance"), ("finance", "cloud"),
                             ("files", "appliance")}
    details = lab.details()
    assert details["last_uid"] == 4 and details["run"] == {"read": 4, "moved": 0, "report": 3, "alert": 0,
                                                           "ignored": 1, "unparsed": 0, "seconds": pytest.approx(
                                                               details["run"]["seconds"])}
    again = lab.probe()  # nothing new: the same state, read from the store
    assert points(again) == points(result) and again.details["run"]["read"] == 0


def test_a_failed_job_is_a_critical_finding_and_its_point_stays_the_last_good_one(lab):
    lab.nights(3, failed={"finance-app01": "Could not connect to the VMware host"})
    result = lab.probe()
    assert result.status is Status.FAILED
    (finding,) = result.findings
    assert (finding.code, finding.system, finding.severity.value) == ("job_failed", "finance", "critical")
    assert finding.subject == f"source:{APPLIANCE}/vcenter.district.local/finance-app01"
    assert "Could not connect to the VMware host" in finding.message
    assert points(result)[("finance", "appliance")] == newest_start(days_back=1, offset_minutes=13)
    assert points(result)[("sis", "appliance")] == newest_start()
    # the next night's backup succeeds: the finding ends
    tomorrow = newest_start() + timedelta(days=1)
    lab.deliver(g.report(APPLIANCE, "Nightly", [g.SourceRun("finance-app01", tomorrow - timedelta(days=1, hours=-1))]))
    later = lab.probe()
    assert later.status is Status.OK and later.findings == []


def test_a_silent_data_source_misses_its_rpo_and_one_that_never_reported_has_no_point(lab):
    lab.configure(probes={"mail": {"systems": [*SYSTEM_RULES, {"system": "sis", "data_sources": ["sis-app01"]}]}})
    lab.nights(4, silent={"sis-db01"}, silent_days=2)
    result = lab.probe()
    assert result.status is Status.OK
    assert ("sis", "appliance") not in points(result)  # sis-app01, expected, never reported
    verdicts = lab.verdicts()
    assert not verdicts[("sis", "appliance")].passed
    assert verdicts[("sis", "appliance")].message == "no restore point in appliance"
    lab.configure()  # only sis-db01 now: it went silent two nights ago
    result = lab.probe()
    assert points(result)[("sis", "appliance")] == newest_start(days_back=2)
    verdicts = lab.verdicts()
    for copy in ("appliance", "cloud"):
        assert not verdicts[("sis", copy)].passed and "old (RPO 1d)" in verdicts[("sis", copy)].message
    assert verdicts[("finance", "appliance")].passed and verdicts[("files", "appliance")].passed


def test_alerts_are_findings_until_what_ends_them_arrives(lab):
    lab.nights(2)
    lab.deliver(g.alert(APPLIANCE, "disk_error", utc(hours=2), details="RAID volume 1 degraded: drive 3 failed."),
                g.alert(APPLIANCE, "replication_behind", utc(hours=1), details="52.4 GB, queue age 3 days"))
    result = lab.probe()
    assert result.status is Status.FAILED  # a disk error is critical
    found = {(f.code, f.system): f for f in result.findings}
    assert set(found) == {(code, system) for code in ("disk_error", "replication_behind")
                          for system in ("files", "finance", "sis")}
    assert found[("disk_error", "sis")].subject == f"appliance:{APPLIANCE}"
    assert "drive 3 failed" in found[("disk_error", "sis")].message
    assert found[("replication_behind", "sis")].severity.value == "warning"
    # a report with replication up to date ends the replication alert; the RAID rebuild the disk error
    lab.deliver(g.report(APPLIANCE, "Hourly", [g.SourceRun("sis-db01", utc(minutes=50), minutes=5)]))
    assert {f.code for f in lab.probe().findings} == {"disk_error"}
    lab.deliver(g.alert(APPLIANCE, "disk_resolved", utc(minutes=10), details="RAID volume 1 rebuilt: healthy."))
    ended = lab.probe()
    assert ended.status is Status.OK and ended.findings == []


def test_an_unparseable_message_is_a_finding_naming_it_while_it_stays_in_the_mailbox(lab):
    lab.nights(1)
    lab.deliver(g.mangled_report(APPLIANCE, utc(hours=3)), g.foreign(utc(hours=2)))
    result = lab.probe()
    assert result.status is Status.OK  # a warning: the backups it may describe are judged by their age
    unparsed = sorted((f for f in result.findings if f.code == "unparsed_message"), key=lambda f: f.subject)
    assert [f.subject for f in unparsed] == ["message:2", "message:3"]
    assert "UID 2 'Barracuda Backup Report: bbs-district - Nightly VMs - Completed'" in unparsed[0].message
    assert "the report lists no data source" in unparsed[0].message
    assert "neither a backup report nor an alert" in unparsed[1].message
    assert {f.code for f in lab.probe().findings} == {"unparsed_message"}  # kept on the next run
    for path in lab.server.message_files("reports"):  # someone deletes the lunch menu
        if b"Lunch menu" in path.read_bytes():
            path.unlink()
    left = lab.probe()
    assert [f.subject for f in left.findings] == ["message:2"]


def test_a_run_that_dies_mid_mailbox_counts_nothing_twice_and_loses_nothing(lab, monkeypatch):
    from drcheck.probes import barracuda_parse

    lab.nights(3)
    assert lab.probe().point_counts == {"sis": 3, "finance": 3, "files": 3}
    runs = [g.SourceRun(s.name, utc(hours=30 - i), computer=s.computer, type=s.type, minutes=5)
            for i in range(20) for s in SOURCES]
    lab.deliver(*(g.report(APPLIANCE, "Hourly", [run]) for run in runs))
    real_parse, seen = barracuda_parse.Parser.parse, []

    def dying(self, uid, raw):
        seen.append(uid)
        if len(seen) == 25:
            raise KeyboardInterrupt  # the agent is killed while it reads
        return real_parse(self, uid, raw)

    monkeypatch.setattr(barracuda_parse.Parser, "parse", dying)
    with pytest.raises(KeyboardInterrupt):
        lab.probe()
    monkeypatch.setattr(barracuda_parse.Parser, "parse", real_parse)
    assert lab.details()["last_uid"] == 3  # the dead run recorded nothing but its error
    result = lab.probe()
    assert result.details["run"]["read"] == 60
    assert result.point_counts == {"sis": 23, "finance": 23, "files": 23}
    assert lab.details()["messages"] == 63


def test_a_killed_probe_process_is_read_again_from_the_recorded_cursor(lab):
    lab.deliver(*g.bulk(5000, utc(), sources=3, per_report=3))
    proc = subprocess.Popen([sys.executable, "-m", "drcheck", "--config", str(lab.config_path), "probe", "mail"],
                            cwd=lab.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: "Login: user=<reports>" in lab.server.log_path.read_text(), timeout=60, interval=0.01,
             what="the probe to log in")
    proc.send_signal(signal.SIGKILL)  # while it reads: no chance to record anything
    proc.wait(timeout=30)
    assert lab.rows("SELECT id FROM probe_runs") == []
    result = lab.probe()
    details = lab.details()
    assert details["messages"] == 5000 and details["last_uid"] == 5000
    assert result.point_counts == {}  # vm000..vm002 belong to no system; their backups are assets
    counts = {s["name"]: s["points"]["local"]["count"] for s in details["sources"].values()}
    assert counts == {"vm000": 5000, "vm001": 5000, "vm002": 5000}


def test_bad_credentials_are_an_error_and_the_points_stay(lab):
    lab.nights(1)
    assert lab.probe().status is Status.OK
    (lab.root / "imap-password").write_text("wrong\n")
    result = lab.probe()
    assert result.status is Status.ERROR
    assert "IMAP login as 'reports'" in result.reason and "refused" in result.reason
    assert "mail-secret" not in result.reason and "wrong" not in result.reason
    verdicts = lab.verdicts("P2.probe_up")
    assert not verdicts[("sis", "mail")].passed
    assert lab.verdicts()[("sis", "appliance")].passed  # the last listing's points stand, ageing


def test_imap_down_is_an_error_and_the_next_run_catches_up(lab):
    lab.nights(1)
    assert lab.probe().status is Status.OK
    lab.server.stop()
    down = lab.probe()
    assert down.status is Status.ERROR and "cannot reach IMAP server 127.0.0.1" in down.reason
    lab.nights(2)  # delivered while the server is down: the MTA keeps writing
    lab.server.start()
    result = lab.probe()
    assert result.status is Status.OK and result.details["run"]["read"] >= 1
    assert points(result)[("sis", "appliance")] == newest_start()


def test_an_untrusted_certificate_is_refused_unless_insecure(lab):
    lab.nights(1)
    lab.configure(probes={"mail": {"ca_bundle": None}})
    refused = lab.probe()
    assert refused.status is Status.ERROR and "TLS certificate of 127.0.0.1" in refused.reason
    lab.configure(probes={"mail": {"ca_bundle": None, "insecure": True}})
    accepted = lab.probe()
    assert accepted.status is Status.OK
    assert [f.code for f in accepted.findings] == ["tls_unverified"]


def test_move_to_moves_what_recorded_runs_read_and_leaves_unreadable_mail(lab):
    lab.server.create_folder("reports", "Processed")
    lab.configure(probes={"mail": {"move_to": "Processed"}})
    lab.nights(2)
    lab.deliver(g.mangled_report(APPLIANCE, utc(hours=1)))
    first = lab.probe()
    assert first.status is Status.OK and len(lab.server.message_files("reports")) == 3  # read, not moved yet
    second = lab.probe()
    assert second.details["run"]["moved"] == 2
    assert len(lab.server.message_files("reports", "Processed")) == 2
    assert len(lab.server.message_files("reports")) == 1  # the unreadable report stays for a human
    assert points(second) == points(first)  # what moved out is remembered
    assert {f.code for f in second.findings} == {"unparsed_message"}


def test_a_recreated_folder_is_read_again_without_counting_twice(lab):
    lab.nights(2)
    first = lab.probe()
    lab.server.pin_uidvalidity("reports", 12345)
    again = lab.probe()
    assert [f.code for f in again.findings] == ["uidvalidity_changed"]
    assert again.details["run"]["read"] == 2 and again.details["uidvalidity"] == 12345
    assert again.point_counts == first.point_counts and points(again) == points(first)


def test_starttls_on_the_plain_port(lab):
    lab.nights(1)
    lab.configure(probes={"mail": {"port": lab.server.starttls_port, "starttls": True}})
    assert lab.probe().status is Status.OK


def test_the_cli_probe_shows_a_missed_backup(lab):
    lab.nights(4, silent={"finance-app01"})
    probed = lab.cli("probe", "mail")
    assert probed.returncode == 1, probed.stdout + probed.stderr
    assert "R2.backup_age" in probed.stdout and "finance" in probed.stdout


def test_barracuda_backups_protect_the_vcenters_vms(lab, make_vcenter, vcsim_ca):
    """Rule R3 counts the mailbox's backup assets for the simulated vCenter's VMs: by VM
    name for VMware data sources, by host name for agent backups."""
    vm = {"folder": "DC0/vm/Servers", "cluster": "DC0_C0", "datastore": "LocalDS_0", "power": "on"}
    sim = make_vcenter(tls=vcsim_ca, scenario={"folders": ["DC0/vm/Servers"], "vms": [
        {**vm, "name": "sis-db01"}, {**vm, "name": "finance-app01"},
        {**vm, "name": "FILES01", "hostname": "files01.district.local"}, {**vm, "name": "kiosk"}]})
    (lab.root / "vc-password").write_text(sim.password + "\n")
    lab.configure(probes={"vc": {"kind": "vmware", "url": sim.url, "username": sim.username,
                                 "password": {"file": str(lab.root / "vc-password")}, "ca_bundle": str(vcsim_ca.ca),
                                 "call_timeout": "10s", "default_rpo": "1d"}})
    lab.nights(4, silent={"finance-app01"}, silent_days=3)  # finance-app01: last backed up 4 nights ago
    loaded = load(lab.config_path)
    with Store(loaded.database_path) as store:
        assert run_probe(loaded, store, "mail", "mailbox").status is Status.OK
        assert run_probe(loaded, store, "vc", "inventory").status is Status.OK
        verdicts = {r.subject.rsplit("/", 1)[-1]: r for r in evaluate(loaded, store, utc())
                    if r.rule == "R3.vm_protected"}
    assert verdicts["sis-db01"].passed and verdicts["FILES01"].passed
    assert not verdicts["finance-app01"].passed and "over its RPO 1d" in verdicts["finance-app01"].message
    assert not verdicts["kiosk"].passed and "no restore point in any copy" in verdicts["kiosk"].message


def test_the_demo_peer_serves_a_mailbox_with_one_silent_data_source(tmp_path):
    from drcheck.kinds import LabPeer, probe_module
    from drcheck.lab_imap import free_port

    (tmp_path / "runbooks").mkdir()
    for system in ("sis", "finance"):
        (tmp_path / "runbooks" / f"{system}.toml").write_text(tomli_w.dumps({**RUNBOOK, "name": system}))
    lab_dir = tmp_path / "var" / "lab" / "mail"
    config = tmp_path / "drcheck.toml"
    config.write_text(tomli_w.dumps({
        "agent": {"state_dir": "state", "sandbox_root": "sandbox"}, "metrics": {"enabled": False},
        "sites": {"office": {}, "cloud": {}}, "copies": {"appliance": {"site": "office"}, "cloud": {"site": "cloud"}},
        "probes": {"mail": {"kind": "barracuda", "copy": "appliance", "offsite_copy": "cloud", "host": "127.0.0.1",
                            "port": free_port(), "username": "reports", "password": {"file": str(lab_dir / "password")},
                            "ca_bundle": str(lab_dir / "ca.pem"), "move_to": "Processed",
                            "systems": [{"system": "sis", "data_sources": ["sis-db*"]},
                                        {"system": "finance", "data_sources": ["finance-app01"]}]}}}))
    loaded = load(config)
    peer = probe_module("barracuda").lab_peer(loaded.config.probes["mail"], loaded)
    assert isinstance(peer, LabPeer)
    assert all(lab_dir in [p, *p.parents] for p in peer.owned_paths())
    peer.init()
    peer.start()
    try:
        with Store(loaded.database_path) as store:
            result = run_probe(loaded, store, "mail", "mailbox")
            assert result.status is Status.OK, result.reason
            verdicts = {(r.system, r.subject): r for r in evaluate(loaded, store, utc()) if r.rule == "R2.backup_age"}
    finally:
        peer.stop()
    assert {(p.system, p.copy) for p in result.newest} == {(s, c) for s in ("sis", "finance")
                                                           for c in ("appliance", "cloud")}
    assert verdicts[("sis", "appliance")].passed and verdicts[("sis", "cloud")].passed
    assert not verdicts[("finance", "appliance")].passed  # the last data source named went silent
    assert result.details["run"]["report"] == 4 and result.details["run"]["alert"] == 2
    assert result.findings == []  # the offline alert was ended by the online one
