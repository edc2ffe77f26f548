"""The Veeam client at its boundary (the fake REST API behind httpx.MockTransport): what
it decodes, the instant-recovery request it sends, and how it waits for mounts and
unmounts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from drcheck.clients import SourceError
from drcheck.clients import veeam as client
from drcheck.clients.veeam import Endpoint, Veeam, VeeamError, VSphereObject
from drcheck.secrets import SecretRef
from tests.unit.test_veeam_fakes import PASSWORD, FakeVeeam


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("VEEAM_PASSWORD", PASSWORD)
    monkeypatch.setattr(client, "SESSION_POLL", (0.0, 0.0))


def connect(fake: FakeVeeam, **settings) -> Veeam:
    endpoint = Endpoint("https://vbr.example:9419", "svc", SecretRef(env="VEEAM_PASSWORD"), **settings)
    return Veeam(endpoint, transport=httpx.MockTransport(fake), sleep=lambda s: None)


def test_reads_decode_veeams_shapes_and_times():
    fake = FakeVeeam()
    fake.job("SIS nightly", result="Warning", message="  slow\n storage ")
    fake.job("SIS offsite", type="BackupCopy")
    point = fake.point("SIS nightly", "sis01", timedelta(hours=6), malware="Suspicious")
    with connect(fake) as veeam:
        jobs = veeam.jobs()
        (state, _) = veeam.job_states()
        (listed,) = veeam.restore_points()
        session = veeam.session(state.session_id)
        backups = veeam.backups()
    assert [(j.name, j.is_copy) for j in jobs] == [("SIS nightly", False), ("SIS offsite", True)]
    assert state.last_result == "Warning" and state.last_run == datetime(2026, 11, 23, 6, 0, 0, 123456,
                                                                          tzinfo=timezone.utc)
    assert session.message == "slow storage" and session.result == "Warning" and session.state == "Stopped"
    assert listed.id == point and listed.malware_status == "Suspicious" and not listed.clean
    assert listed.created.tzinfo is not None and backups[0].job_id == jobs[0].id


@pytest.mark.parametrize("text, expected", [
    ("2026-11-23T06:00:00Z", datetime(2026, 11, 23, 6, tzinfo=timezone.utc)),
    ("2026-11-23T08:00:00.5+02:00", datetime(2026, 11, 23, 6, 0, 0, 500000, tzinfo=timezone.utc)),
    ("2026-11-23T06:00:00.1234567-00:00", datetime(2026, 11, 23, 6, 0, 0, 123456, tzinfo=timezone.utc)),
])
def test_times_with_zones_and_seven_fraction_digits(text, expected):
    assert client._time(text) == expected


def test_the_instant_recovery_request_is_customized_powered_off_into_the_sandbox():
    fake = FakeVeeam()
    folder, pool = VSphereObject("Folder", "drcheck-sandbox", "group-v9"), VSphereObject("ResourcePool", "RP", "rp-1")
    host, ds = VSphereObject("Host", "esx01", "host-12"), VSphereObject("Datastore", "scratch", "datastore-3")
    with connect(fake) as veeam:
        session = veeam.start_instant_recovery("p-1", "drcheck-t-1", vcenter="vc.example", folder=folder, pool=pool,
                                               host=host, datastore=ds, nics_enabled=False, reason="why")
    (body,) = fake.started
    assert session.id and body == {
        "restorePointId": "p-1", "type": "Customized", "vmTagsRestoreEnabled": False,
        "secureRestore": {"antivirusScanEnabled": False}, "nicsEnabled": False, "powerUp": False, "reason": "why",
        "overwrite": False,
        "destination": {"restoredVmName": "drcheck-t-1", "biosUuidPolicy": "generateNew",
                        "folder": {"platform": "VMware", "hostName": "vc.example", "name": "drcheck-sandbox",
                                   "type": "Folder", "objectId": "group-v9"},
                        "resourcePool": {"platform": "VMware", "hostName": "vc.example", "name": "RP",
                                         "type": "ResourcePool", "objectId": "rp-1"},
                        "destinationHost": {"platform": "VMware", "hostName": "vc.example", "name": "esx01",
                                            "type": "Host", "objectId": "host-12"}},
        "datastore": {"redirectEnabled": True, "cacheDatastore": {"platform": "VMware", "hostName": "vc.example",
                                                                  "name": "scratch", "type": "Datastore",
                                                                  "objectId": "datastore-3"}}}


def start(veeam: Veeam) -> str:
    obj = VSphereObject("Folder", "f", "group-v1")
    return veeam.start_instant_recovery("p-1", "drcheck-t-1", vcenter="vc", folder=obj, pool=obj, host=None,
                                        datastore=None, nics_enabled=True, reason="r").id


def test_waiting_for_a_mount_returns_it_once_mounted():
    fake = FakeVeeam()
    fake.mount_polls = 3
    with connect(fake) as veeam:
        mount = veeam.wait_mounted(start(veeam), "drcheck-t-1", timeout=60)
    assert mount.state == "Mounted" and mount.vm_name == "drcheck-t-1"
    assert sum(1 for r in fake.requests if r.url.path.endswith("/vSphere/vm") and r.method == "GET") == 3


def test_a_failed_mount_is_an_error_with_veeams_message():
    fake = FakeVeeam()
    fake.mount_error = "Datastore LocalDS_0 is full"
    with connect(fake) as veeam, pytest.raises(VeeamError) as caught:
        veeam.wait_mounted(start(veeam), "drcheck-t-1", timeout=60)
    assert str(caught.value) == ("Veeam B&R https://vbr.example:9419: instant recovery of drcheck-t-1 failed: "
                                 "Datastore LocalDS_0 is full")


def test_a_mount_that_takes_too_long_is_an_error(monkeypatch):
    fake = FakeVeeam()
    fake.mount_polls = 10**6
    with connect(fake) as veeam, pytest.raises(VeeamError, match="not mounted within 0s \\(mount Mounting\\)"):
        veeam.wait_mounted(start(veeam), "drcheck-t-1", timeout=0)


def test_unmount_waits_for_its_session_and_a_gone_mount_is_success():
    fake = FakeVeeam()
    with connect(fake) as veeam:
        mount = veeam.wait_mounted(start(veeam), "drcheck-t-1", timeout=60)
        veeam.unmount(mount.id, timeout=60)
        assert veeam.mounts() == []
        veeam.unmount(mount.id, timeout=60)  # 404: already gone


def test_an_unmount_session_that_fails_is_an_error(monkeypatch):
    fake = FakeVeeam()
    original = fake._unmount

    def failing(mount_id):
        response = original(mount_id)
        session = response.json()
        fake.sessions[session["id"]]["result"] = {"result": "Failed", "message": "VM is locked by another task"}
        return response

    fake._unmount = failing
    with connect(fake) as veeam:
        mount = veeam.wait_mounted(start(veeam), "drcheck-t-1", timeout=60)
        with pytest.raises(VeeamError, match="unmount of .* failed: VM is locked by another task"):
            veeam.unmount(mount.id, timeout=60)


def test_an_unexpected_answer_is_reported_not_guessed():
    def handler(request):
        if request.url.path == "/api/oauth2/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 900})
        return httpx.Response(200, json={"data": [{"id": "x", "name": "sis01", "creationTime": "yesterday"}]})

    with connect(handler) as veeam, pytest.raises(VeeamError, match="unexpected answer listing restore points"):
        veeam.restore_points()


def test_the_version_header_is_configurable():
    fake = FakeVeeam()
    with connect(fake, api_version="1.2-rev1") as veeam, pytest.raises(SourceError) as caught:
        veeam.jobs()
    assert "HTTP 400" in str(caught.value) and "x-api-version" in str(caught.value)
    assert fake.requests[0].headers["x-api-version"] == "1.2-rev1"

