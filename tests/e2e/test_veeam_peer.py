"""The project's Veeam Backup & Replication REST API replay (tests/peers/veeam) does what its
README promises.

These tests speak HTTP with httpx directly, no drcheck client or probe code: they prove the
peer, so that drcheck's Veeam tests can trust it.
"""

from __future__ import annotations

import ssl
import threading
import time
from pathlib import Path

import httpx
import pytest

from drcheck.lab_veeam import API_VERSION, VeeamControlError, VeeamReplay, VeeamReplayError, large_scenario

pytestmark = pytest.mark.e2e

HEADERS = {"x-api-version": API_VERSION}

SCENARIO = {
    "vcenter": {"host": "vcenter01.district.local", "folders": {"group-v9": "DC0/vm/drcheck-sandbox"}},
    "repositories": [{"name": "Default Backup Repository"}, {"name": "Offsite Repository"}],
    "vms": [{"name": "sis01", "moref": "vm-42", "source": "DC0/vm/Schools/sis01"},
            {"name": "mail01", "moref": "vm-43", "source": "DC0/vm/Schools/mail01"}],
    "jobs": [
        {"name": "Nightly Servers", "objects": [
            {"vm": "sis01", "points": [{"age": "6h", "malware": "Infected"}, {"age": "30h", "malware": "Suspicious"},
                                       {"age": "54h"}, {"age": "78h", "type": "Full"}]},
            {"vm": "mail01", "points": {"count": 5, "every": "24h", "newest": "7h"}}],
         "sessions": [{"age": "31h", "result": "Success"},
                      {"age": "7h", "duration": "42m", "result": "Failed",
                       "message": "Error: Failed to create VM snapshot: the datastore is full"}]},
        {"name": "Offsite Copy", "type": "BackupCopy", "source_job": "Nightly Servers",
         "repository": "Offsite Repository", "objects": ["sis01", "mail01"],
         "points": {"count": 3, "every": "24h", "newest": "4h"},
         "sessions": [{"age": "4h", "result": "Warning", "message": "Restore point is 1 day behind"}]},
        {"name": "Old Job", "disabled": True, "objects": []},
    ],
}


def client(replay: VeeamReplay, **kwargs) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(replay.tls.ca)) if replay.tls else False
    return httpx.Client(base_url=replay.url, verify=verify,
                        timeout=kwargs.pop("timeout", 10), **kwargs)


def login(http: httpx.Client, replay: VeeamReplay) -> dict:
    r = http.post("/api/oauth2/token", headers=HEADERS,
                  data={"grant_type": "password", "username": replay.username, "password": replay.password})
    assert r.status_code == 200, r.text
    return r.json()


def get(http: httpx.Client, token: str, path: str, **params) -> httpx.Response:
    return http.get(path, params=params, headers={**HEADERS, "Authorization": f"Bearer {token}"})


def all_pages(http: httpx.Client, token: str, path: str, limit: int, **params) -> tuple[list, int]:
    items, skip, pages = [], 0, 0
    while True:
        r = get(http, token, path, skip=skip, limit=limit, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["pagination"]["skip"] == skip and body["pagination"]["limit"] == limit
        assert body["pagination"]["count"] == len(body["data"]) <= limit
        items += body["data"]
        pages += 1
        skip += limit
        if skip >= body["pagination"]["total"]:
            return items, pages


# -- authorization -------------------------------------------------------------------------


def test_token_refresh_and_expiry(make_veeam):
    replay = make_veeam(scenario=SCENARIO, token_lifetime=1.5)
    with client(replay) as http:
        tokens = login(http, replay)
        assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 2  # rounded seconds
        assert {".issued", ".expires", "refresh_token"} <= set(tokens)
        assert get(http, tokens["access_token"], "/api/v1/jobs").status_code == 200
        time.sleep(1.7)
        r = get(http, tokens["access_token"], "/api/v1/jobs")
        assert r.status_code == 401 and r.json()["errorCode"] == "ExpiredToken", r.text

        refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        r = http.post("/api/oauth2/token", headers=HEADERS, data=refresh)
        assert r.status_code == 200, r.text
        fresh = r.json()
        assert get(http, fresh["access_token"], "/api/v1/jobs").status_code == 200
        # a refresh token works once
        r = http.post("/api/oauth2/token", headers=HEADERS, data=refresh)
        assert r.status_code == 401 and r.json()["errorCode"] == "InvalidToken"

        # the control API: a longer lifetime for new tokens, and every token expired now
        assert replay.control("/token-lifetime", {"seconds": 600})["seconds"] == 600
        assert login(http, replay)["expires_in"] == 600
        assert replay.control("/token-lifetime", {"expire_now": True})["expired"] >= 2
        r = get(http, fresh["access_token"], "/api/v1/jobs")
        assert r.json()["errorCode"] == "ExpiredToken"


def test_bad_credentials_and_missing_token(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay) as http:
        r = http.post("/api/oauth2/token", headers=HEADERS,
                      data={"grant_type": "password", "username": replay.username, "password": "wrong"})
        assert r.status_code == 401
        assert r.json() == {"errorCode": "AccessDenied", "message": "Invalid username or password."}
        r = http.post("/api/oauth2/token", headers=HEADERS, data={"grant_type": "password"})
        assert r.status_code == 400 and r.json()["errorCode"] == "UnexpectedContent"
        r = http.post("/api/oauth2/token", headers=HEADERS, data={"grant_type": "client_credentials"})
        assert r.status_code == 400
        r = http.get("/api/v1/jobs", headers=HEADERS)
        assert r.status_code == 401 and r.json()["errorCode"] == "AccessDenied"
        r = get(http, "not-a-token", "/api/v1/jobs")
        assert r.status_code == 401 and r.json()["errorCode"] == "InvalidToken"


def test_the_password_is_read_from_a_file_and_may_start_with_a_dash(make_veeam):
    replay = make_veeam(scenario=SCENARIO, password="-Kx9_dash-first")
    with client(replay) as http:
        assert login(http, replay)["access_token"]
    argv = Path(f"/proc/{replay._proc.pid}/cmdline").read_bytes().decode()
    assert "-Kx9_dash-first" not in argv  # never in a process listing


def test_version_header_required(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay) as http:
        r = http.post("/api/oauth2/token", data={"grant_type": "password", "username": replay.username,
                                                 "password": replay.password})
        assert r.status_code == 400 and "x-api-version" in r.json()["message"]
        token = login(http, replay)["access_token"]
        r = http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 400 and r.json()["errorCode"] == "UnexpectedContent"
        r = http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}", "x-api-version": "1.0-rev2"})
        assert r.status_code == 400 and "1.1-rev1" in r.json()["message"]
        for version in ("1.1-rev1", "1.2-rev1"):
            r = http.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}", "x-api-version": version})
            assert r.status_code == 200
    log = replay.requests()
    assert [e["api_version"] for e in log[:2]] == [None, "1.1-rev1"]
    assert {e["status"] for e in log} == {200, 400}


def test_tls_is_verified_with_the_test_ca(make_veeam, tmp_path):
    replay = make_veeam(scenario=SCENARIO)
    assert replay.url.startswith("https://127.0.0.1:")
    with httpx.Client(base_url=replay.url, timeout=5) as http:  # the system CAs do not know it
        with pytest.raises(httpx.ConnectError):
            http.get("/api/v1/jobs", headers=HEADERS)


# -- resources -----------------------------------------------------------------------------


def test_jobs_states_and_failed_sessions(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        jobs = get(http, token, "/api/v1/jobs").json()["data"]
        by_name = {j["name"]: j for j in jobs}
        assert by_name["Nightly Servers"]["type"] == "Backup"
        assert by_name["Offsite Copy"]["type"] == "BackupCopy"
        assert by_name["Offsite Copy"]["sourceJobId"] == by_name["Nightly Servers"]["id"]
        assert by_name["Old Job"]["isDisabled"] is True
        includes = by_name["Nightly Servers"]["virtualMachines"]["includes"]
        assert [i["inventoryObject"]["objectId"] for i in includes] == ["vm-42", "vm-43"]

        states = {s["name"]: s for s in get(http, token, "/api/v1/jobs/states").json()["data"]}
        nightly = states["Nightly Servers"]
        assert (nightly["lastResult"], nightly["status"], nightly["objectsCount"]) == ("Failed", "inactive", 2)
        assert states["Old Job"]["status"] == "disabled"
        assert states["Offsite Copy"]["repositoryName"] == "Offsite Repository"

        session = get(http, token, f"/api/v1/sessions/{nightly['sessionId']}").json()
        assert session["result"] == {"result": "Failed", "isCanceled": False,
                                     "message": "Error: Failed to create VM snapshot: the datastore is full"}
        assert session["sessionType"] == "BackupJob" and session["state"] == "Stopped"
        failed = get(http, token, "/api/v1/sessions", resultFilter="Failed").json()
        assert [s["id"] for s in failed["data"]] == [session["id"]]
        mine = get(http, token, "/api/v1/sessions", jobIdFilter=nightly["id"]).json()["data"]
        assert [s["result"]["result"] for s in mine] == ["Failed", "Success"]  # newest first
        warning = get(http, token, "/api/v1/sessions", resultFilter="Warning").json()["data"]
        assert warning[0]["result"]["message"] == "Restore point is 1 day behind"

        r = get(http, token, "/api/v1/jobs/00000000-0000-0000-0000-00000000abcd")
        assert r.status_code == 404 and r.json()["errorCode"] == "NotFound"


def test_backups_objects_and_malware_statuses(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        backups = {b["name"]: b for b in get(http, token, "/api/v1/backups").json()["data"]}
        assert set(backups) == {"Nightly Servers", "Offsite Copy"}  # a job without objects has no backup
        objects = get(http, token, f"/api/v1/backups/{backups['Nightly Servers']['id']}/objects").json()["data"]
        sis = next(o for o in objects if o["name"] == "sis01")
        assert (sis["objectId"], sis["platformName"], sis["type"], sis["restorePointsCount"]) == \
            ("vm-42", "VMware", "VM", 4)
        assert len(get(http, token, "/api/v1/backupObjects", nameFilter="sis*").json()["data"]) == 2  # two backups

        points = get(http, token, f"/api/v1/backupObjects/{sis['id']}/restorePoints").json()["data"]
        assert [p["malwareStatus"] for p in points] == ["Infected", "Suspicious", "Clean", "Clean"]
        assert [p["type"] for p in points] == ["Increment", "Increment", "Increment", "Full"]
        assert points == sorted(points, key=lambda p: p["creationTime"], reverse=True)
        assert all(p["backupId"] == backups["Nightly Servers"]["id"] and p["name"] == "sis01" for p in points)
        assert "StartViVMInstantRecovery" in points[0]["allowedOperations"]

        infected = get(http, token, "/api/v1/restorePoints", malwareStatusFilter="Infected").json()["data"]
        assert [p["id"] for p in infected] == [points[0]["id"]]
        r = get(http, token, "/api/v1/restorePoints", malwareStatusFilter="Dirty")
        assert r.status_code == 400
        copies = get(http, token, "/api/v1/restorePoints", backupIdFilter=backups["Offsite Copy"]["id"]).json()
        assert copies["pagination"]["total"] == 6 and {p["name"] for p in copies["data"]} == {"sis01", "mail01"}
        one = get(http, token, f"/api/v1/restorePoints/{points[1]['id']}").json()
        assert one == points[1]


def test_paging_over_several_pages(make_veeam):
    replay = make_veeam(scenario=large_scenario(vms=120, points=10, infected_every=7))
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        points, pages = all_pages(http, token, "/api/v1/restorePoints", limit=250)
        assert len(points) == 2 * 120 * 10 and pages == 10  # two copies
        assert len({p["id"] for p in points}) == len(points)
        assert [p["creationTime"] for p in points] == sorted((p["creationTime"] for p in points), reverse=True)
        objects, pages = all_pages(http, token, "/api/v1/backupObjects", limit=50)
        assert len(objects) == 240 and pages == 5
        infected, _ = all_pages(http, token, "/api/v1/restorePoints", limit=5, malwareStatusFilter="Infected")
        assert len(infected) == len(range(0, 120, 7))
        body = get(http, token, "/api/v1/restorePoints", skip=2395).json()
        assert body["pagination"] == {"total": 2400, "count": 5, "skip": 2395, "limit": 200}
        body = get(http, token, "/api/v1/jobs").json()
        assert body["pagination"] == {"total": 4, "count": 4, "skip": 0, "limit": 200}
        assert get(http, token, "/api/v1/jobs", limit="x").status_code == 400


def test_scenario_replacement_keeps_ids(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        before = {j["name"]: j["id"] for j in get(http, token, "/api/v1/jobs").json()["data"]}
        replay.set_scenario({**SCENARIO, "jobs": SCENARIO["jobs"][:1]})
        after = {j["name"]: j["id"] for j in get(http, token, "/api/v1/jobs").json()["data"]}
        assert after == {"Nightly Servers": before["Nightly Servers"]}  # the token survived too
    with pytest.raises(VeeamControlError) as err:
        replay.set_scenario({"jobs": [{"name": "x", "colour": "red"}]})
    assert err.value.status == 400 and "colour" in err.value.message


# -- outages ---------------------------------------------------------------------------------


def test_a_hang_can_start_after_a_number_of_served_requests(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay, timeout=1.5) as http:
        token = login(http, replay)["access_token"]
        replay.outage("hang", after=2)
        assert get(http, token, "/api/v1/jobs").status_code == 200
        assert get(http, token, "/api/v1/jobs").status_code == 200
        with pytest.raises(httpx.ReadTimeout):  # the third is held
            get(http, token, "/api/v1/jobs")
        replay.outage("none")
        assert get(http, token, "/api/v1/jobs").status_code == 200
    with pytest.raises(VeeamControlError):
        replay.control("/outage", {"mode": "refuse", "after": 2})


def test_outage_refuse_hang_and_none(make_veeam):
    replay = make_veeam(scenario=SCENARIO)
    with client(replay, timeout=1.5) as http:
        token = login(http, replay)["access_token"]
        replay.outage("refuse")
        with pytest.raises(httpx.RemoteProtocolError):
            get(http, token, "/api/v1/jobs")
        replay.outage("hang")
        with pytest.raises(httpx.ReadTimeout):
            get(http, token, "/api/v1/jobs")
        # a held request is served once the outage ends
        result = {}
        with client(replay, timeout=20) as slow:
            t = threading.Thread(target=lambda: result.update(r=get(slow, token, "/api/v1/jobs")))
            t.start()
            time.sleep(0.3)
            assert "r" not in result
            replay.outage("none")
            t.join(20)
        assert result["r"].status_code == 200
        assert get(http, token, "/api/v1/jobs").status_code == 200
    assert any(e.get("outage") == "refuse" for e in replay.requests())
    assert replay.control("/health")["outage"] == "none"


def test_injected_faults_and_start_failure(make_veeam, tmp_path):
    replay = make_veeam(scenario=SCENARIO)
    replay.control("/faults", {"path": "/api/v1/backups", "status": 503, "count": 2})
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        codes = [get(http, token, "/api/v1/backups").status_code for _ in range(3)]
        assert codes == [503, 503, 200]
    broken = VeeamReplay(tmp_path / "broken", scenario={"jobs": [{"name": "x", "type": "Tape"}]})
    with pytest.raises(VeeamReplayError, match="Tape"):
        broken.start()
    assert not broken.running


# -- instant recovery ------------------------------------------------------------------------

VCENTER = {
    "folders": ["DC0/vm/Schools", "DC0/vm/drcheck-sandbox"],
    "vms": [{"name": "sis01", "folder": "DC0/vm/Schools", "power": "on", "hostname": "sis01.district.local"}],
}


def recovery_spec(point_id: str, folder: dict | None, name: str = "sis01-drcheck", **extra) -> dict:
    destination = {"restoredVmName": name}
    if folder is not None:
        destination["folder"] = folder
    return {"restorePointId": point_id, "type": "Customized", "vmTagsRestoreEnabled": False,
            "secureRestore": {"antivirusScanEnabled": False}, "nicsEnabled": False, "powerUp": False,
            "reason": "drcheck restore test", "destination": destination,
            "datastore": {"redirectEnabled": False}, **extra}


def test_instant_recovery_creates_and_removes_the_vm(make_vcenter, make_veeam):
    from tests.e2e.conftest import wait_for
    from tests.e2e.vcsim_fixtures import vsphere_connect

    sim = make_vcenter(scenario=VCENTER)
    si = vsphere_connect(sim)
    index = si.RetrieveContent().searchIndex
    sandbox = index.FindByInventoryPath("DC0/vm/drcheck-sandbox")
    scenario = {"vcenter": {"host": "vcenter01.district.local", "folders": {sandbox._moId: "DC0/vm/drcheck-sandbox"}},
                "vms": [{"name": "sis01", "moref": index.FindByInventoryPath("DC0/vm/Schools/sis01")._moId,
                         "source": "DC0/vm/Schools/sis01"}],
                "jobs": [{"name": "Nightly", "objects": ["sis01"]}], "mount_delay": "500ms"}
    replay = make_veeam(scenario=scenario, vcsim_control_url=sim.control_url)
    folder = {"type": "Folder", "hostName": "vcenter01.district.local", "name": "drcheck-sandbox",
              "objectId": sandbox._moId, "platform": "VMware"}
    base = "/api/v1/restore/instantRecovery/vSphere/vm"
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        auth = {**HEADERS, "Authorization": f"Bearer {token}"}
        point = get(http, token, "/api/v1/restorePoints", nameFilter="sis01").json()["data"][0]

        r = http.post(base, headers=auth, json=recovery_spec(point["id"], folder))
        assert r.status_code == 201, r.text
        session = r.json()
        assert session["sessionType"] == "InstantRecovery" and session["state"] == "Working"
        mount_id = session["resourceId"]
        assert session["resourceReference"] == f"{base}/{mount_id}"
        assert get(http, token, f"{base}/{mount_id}").json()["state"] == "Mounting"
        r = http.post(f"{base}/{mount_id}/unmount", headers=auth)
        assert r.status_code == 400 and "Mounting" in r.json()["message"]
        mount = wait_for(lambda: (m := get(http, token, f"{base}/{mount_id}").json())["state"] == "Mounted" and m,
                         timeout=30, what="the mount to be Mounted")
        assert mount["vmName"] == "sis01-drcheck" and mount["sessionId"] == session["id"]
        assert mount["spec"]["restorePointId"] == point["id"] and mount["errorMessage"] == ""
        done = get(http, token, f"/api/v1/sessions/{session['id']}").json()
        assert done["state"] == "Stopped" and done["result"]["result"] == "Success"
        listed = get(http, token, base, stateFilter="Mounted").json()
        assert [m["id"] for m in listed["data"]] == [mount_id] and listed["pagination"]["total"] == 1

        vm = index.FindByInventoryPath("DC0/vm/drcheck-sandbox/sis01-drcheck")
        assert vm is not None and vm.runtime.powerState == "poweredOff"
        facts = replay.mounts()[0]
        assert facts["moref"] == vm._moId and facts["state"] == "Mounted"
        assert facts["folder"] == "DC0/vm/drcheck-sandbox" and facts["source"] == "DC0/vm/Schools/sis01"

        # the same name again while it is published: the mount fails, as a name clash does
        r = http.post(base, headers=auth, json=recovery_spec(point["id"], folder))
        clash = wait_for(lambda: (m := get(http, token, f"{base}/{r.json()['resourceId']}").json())["state"]
                         == "Failed" and m, timeout=10, what="the clashing mount to fail")
        assert "already published" in clash["errorMessage"]
        assert http.post(f"{base}/{clash['id']}/unmount", headers=auth).status_code == 200  # removes it

        r = http.post(f"{base}/{mount_id}/unmount", headers=auth)
        assert r.status_code == 200 and r.json()["sessionType"] == "InstantRecovery"
        wait_for(lambda: get(http, token, f"{base}/{mount_id}").status_code == 404, timeout=30,
                 what="the mount to leave the list")
        assert index.FindByInventoryPath("DC0/vm/drcheck-sandbox/sis01-drcheck") is None
        assert get(http, token, f"/api/v1/sessions/{r.json()['id']}").json()["result"]["result"] == "Success"
        assert index.FindByInventoryPath("DC0/vm/Schools/sis01") is not None  # the source is untouched
        assert get(http, token, base).json()["pagination"]["total"] == 0
        assert replay.mounts()[0]["state"] == "Unmounted"


def test_instant_recovery_refusals_and_failures(make_vcenter, make_veeam):
    from tests.e2e.conftest import wait_for

    sim = make_vcenter(scenario=VCENTER)
    scenario = {"vms": [{"name": "sis01", "source": "DC0/vm/Schools/sis01"}],
                "jobs": [{"name": "Nightly", "objects": ["sis01"]}]}
    replay = make_veeam(scenario=scenario, vcsim_control_url=sim.control_url)
    base = "/api/v1/restore/instantRecovery/vSphere/vm"
    with client(replay) as http:
        token = login(http, replay)["access_token"]
        auth = {**HEADERS, "Authorization": f"Bearer {token}"}
        point = get(http, token, "/api/v1/restorePoints").json()["data"][0]
        path_folder = {"type": "Folder", "hostName": "vc", "name": "DC0/vm/drcheck-sandbox"}
        cases = [
            (recovery_spec(point["id"], path_folder, powerUp=True), 400, "powerUp"),
            ({**recovery_spec(point["id"], path_folder), "type": "OriginalLocation"}, 400, "OriginalLocation"),
            ({k: v for k, v in recovery_spec(point["id"], path_folder).items() if k != "secureRestore"}, 400,
             "secureRestore"),
            ({k: v for k, v in recovery_spec(point["id"], path_folder).items() if k != "datastore"}, 400, "datastore"),
            (recovery_spec("3f1c0e0a-0000-0000-0000-000000000000", path_folder), 404, "was not found"),
        ]
        for spec, status, words in cases:
            r = http.post(base, headers=auth, json=spec)
            assert r.status_code == status and words in r.json()["message"], r.text

        # a folder Veeam does not know: the session fails, the mount says why
        unknown = {"type": "Folder", "hostName": "vc", "name": "Elsewhere", "objectId": "group-v999"}
        r = http.post(base, headers=auth, json=recovery_spec(point["id"], unknown))
        assert r.status_code == 201
        mount = get(http, token, f"{base}/{r.json()['resourceId']}").json()
        assert mount["state"] == "Failed" and "Elsewhere" in mount["errorMessage"]
        assert get(http, token, f"/api/v1/sessions/{r.json()['id']}").json()["result"]["result"] == "Failed"

        # a folder given as an inventory path (a replay extension) works; vCenter down fails the mount
        r = http.post(base, headers=auth, json=recovery_spec(point["id"], path_folder, name="sis01-a"))
        wait_for(lambda: get(http, token, f"{base}/{r.json()['resourceId']}").json()["state"] == "Mounted",
                 timeout=30, what="mounted")
        sim.stop()
        r = http.post(base, headers=auth, json=recovery_spec(point["id"], path_folder, name="sis01-b"))
        failed = wait_for(lambda: (m := get(http, token, f"{base}/{r.json()['resourceId']}").json())["state"]
                          == "Failed" and m, timeout=30, what="failed")
        assert "unreachable" in failed["errorMessage"]
