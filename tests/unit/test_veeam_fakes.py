"""A stand-in for Veeam B&R's REST API at the client boundary (an httpx.MockTransport
handler) holding a little state in the documented JSON shapes: jobs and their states,
sessions, backups, restore points with malware status, tokens, and instant-recovery
mounts that go Mounting -> Mounted (or Failed) and away on unmount. `install` routes every
client drcheck makes to it. Also a config with a veeam probe, loaded for real."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs

import httpx

from drcheck.clients import http as http_client
from drcheck.config_loader import load
from drcheck.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
PASSWORD = "veeam-secret"


def uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.1234567Z")  # Veeam writes 7 fraction digits


class FakeVeeam:
    """Build with `job(...)` and `points(...)`; the handler answers like the REST API."""

    def __init__(self):
        self.jobs: list[dict] = []
        self.states: list[dict] = []
        self.sessions: dict[str, dict] = {}
        self.backups: list[dict] = []
        self.points: list[dict] = []
        self.mounts: dict[str, dict] = {}
        self.requests: list[httpx.Request] = []
        self.tokens: set[str] = set()
        self.issued = 0
        self.down = False
        self.mount_polls = 1  # GETs of the mount list before a mount is Mounted
        self.mount_error: str | None = None  # the mount fails with this message
        self.unmount_error: tuple[int, str] | None = None
        self.started: list[dict] = []  # instant recovery request bodies
        self.on_start = None  # called with the body when instant recovery starts
        self.on_unmount = None  # called with the VM name when a mount is removed

    # -- building ---------------------------------------------------------------------

    def job(self, name: str, type: str = "Backup", result: str = "Success", message: str = "",
            ended: timedelta = timedelta(hours=6)) -> str:
        job_id = uid("job", name)
        session_id = uid("session", name)
        self.jobs.append({"id": job_id, "name": name, "type": type, "isDisabled": False})
        self.sessions[session_id] = {
            "id": session_id, "name": name, "jobId": job_id, "sessionType": "BackupJob",
            "creationTime": iso(NOW - ended - timedelta(minutes=20)), "endTime": iso(NOW - ended), "state": "Stopped",
            "result": {"result": result, "message": message, "isCanceled": False}, "usn": 1}
        self.states.append({"id": job_id, "name": name, "type": type, "description": "", "status": "inactive",
                            "lastResult": result, "lastRun": iso(NOW - ended), "workload": "vm", "objectsCount": 1,
                            "sessionId": session_id})
        self.backups.append({"id": uid("backup", name), "name": name, "jobId": job_id, "platformName": "VMware",
                             "platformId": "00000000-0000-0000-0000-000000000000", "creationTime": iso(NOW),
                             "repositoryId": uid("repo", name)})
        return job_id

    def point(self, job: str, vm: str, age: timedelta, malware: str = "Clean") -> str:
        point_id = uid("point", job, vm, str(age.total_seconds()))
        self.points.append({"id": point_id, "name": vm, "platformName": "VMware",
                            "platformId": "00000000-0000-0000-0000-000000000000", "creationTime": iso(NOW - age),
                            "backupId": uid("backup", job), "allowedOperations": ["StartViVMInstantRecovery"],
                            "malwareStatus": malware, "type": "Increment"})
        return point_id

    # -- the API ------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.headers.get("x-api-version") != "1.1-rev1":
            return error(400, "UnexpectedContent", "The x-api-version header is required.")
        path, method = request.url.path, request.method
        if path == "/api/oauth2/token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if form.get("grant_type") == "password" and form.get("password") != PASSWORD:
                return error(401, "AccessDenied", "Invalid username or password.")
            self.issued += 1
            token = f"token-{self.issued}"
            self.tokens.add(token)
            return httpx.Response(200, json={"access_token": token, "token_type": "bearer",
                                             "refresh_token": f"refresh-{self.issued}", "expires_in": 900})
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.tokens:
            return error(401, "InvalidToken", "The access token is invalid.")
        query = dict(request.url.params)
        if (method, path) == ("GET", "/api/v1/jobs"):
            return page(self.jobs, query)
        if (method, path) == ("GET", "/api/v1/jobs/states"):
            return page(self.states, query)
        if (method, path) == ("GET", "/api/v1/backups"):
            return page(self.backups, query)
        if (method, path) == ("GET", "/api/v1/restorePoints"):
            found = sorted(self.points, key=lambda p: p["creationTime"], reverse=True)
            if "nameFilter" in query:
                found = [p for p in found if p["name"].lower() == query["nameFilter"].lower()]
            return page(found, query)
        if method == "GET" and path.startswith("/api/v1/sessions/"):
            found = self.sessions.get(path.rsplit("/", 1)[1])
            return httpx.Response(200, json=found) if found else error(404, "NotFound", "Session was not found.")
        if path == "/api/v1/restore/instantRecovery/vSphere/vm":
            return self._start(request) if method == "POST" else self._list_mounts(query)
        if method == "POST" and path.endswith("/unmount"):
            return self._unmount(path.split("/")[-2])
        return error(404, "NotFound", f"The resource '{path}' was not found.")

    def _start(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.started.append(body)
        if self.on_start:
            self.on_start(body)
        mount_id = uid("mount", body["destination"]["restoredVmName"], str(len(self.started)))
        self.sessions[mount_id] = {"id": mount_id, "name": body["destination"]["restoredVmName"], "jobId": mount_id,
                                   "sessionType": "InstantRecovery", "creationTime": iso(NOW), "state": "Working",
                                   "result": {"result": "None", "message": ""}, "usn": 0}
        self.mounts[mount_id] = {"id": mount_id, "sessionId": mount_id, "state": "Mounting", "spec": body,
                                 "vmName": body["destination"]["restoredVmName"], "errorMessage": "",
                                 "polls": self.mount_polls}
        return httpx.Response(201, json=self.sessions[mount_id])

    def _list_mounts(self, query: dict) -> httpx.Response:
        for mount in self.mounts.values():
            if mount["state"] == "Mounting":
                mount["polls"] -= 1
                if mount["polls"] <= 0:
                    failed = self.mount_error is not None
                    mount["state"] = "Failed" if failed else "Mounted"
                    mount["errorMessage"] = self.mount_error or ""
                    self.sessions[mount["sessionId"]].update(state="Stopped", result={
                        "result": "Failed" if failed else "Success", "message": self.mount_error or "published"})
        shown = [{k: v for k, v in m.items() if k != "polls"} for m in self.mounts.values()]
        return page(shown, query)

    def _unmount(self, mount_id: str) -> httpx.Response:
        if mount_id not in self.mounts:
            return error(404, "NotFound", f"Mount with ID '{mount_id}' was not found.")
        if self.unmount_error:
            return error(*self.unmount_error)
        if self.mounts[mount_id]["state"] == "Mounting":
            return error(400, "UnexpectedContent", "The mount is Mounting; it can be unmounted once it is mounted.")
        gone = self.mounts.pop(mount_id)
        if self.on_unmount:
            self.on_unmount(gone["vmName"])
        session_id = uid("unmount", mount_id)
        self.sessions[session_id] = {"id": session_id, "name": "unmount", "jobId": mount_id,
                                     "sessionType": "InstantRecovery", "creationTime": iso(NOW), "state": "Stopped",
                                     "result": {"result": "Success", "message": "The VM has been unpublished."},
                                     "usn": 0}
        return httpx.Response(200, json=self.sessions[session_id])

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"errorCode": code, "message": message})


def page(items: list, query: dict) -> httpx.Response:
    skip, limit = int(query.get("skip", 0)), int(query.get("limit", 200))
    data = items[skip: skip + limit]
    return httpx.Response(200, json={"data": data, "pagination": {"total": len(items), "count": len(data),
                                                                   "skip": skip, "limit": limit}})


def install(monkeypatch, fake: FakeVeeam) -> FakeVeeam:
    """Route every httpx client drcheck builds to `fake`; no pauses between retries."""
    real = httpx.Client

    def client(*args, **kwargs):
        kwargs["transport"] = httpx.MockTransport(fake)
        return real(*args, **kwargs)

    monkeypatch.setattr(http_client.httpx, "Client", client)
    monkeypatch.setattr(http_client.time, "sleep", lambda s: None)
    monkeypatch.setenv("VEEAM_PASSWORD", PASSWORD)
    return fake


VEEAM_PROBE = {
    "kind": "veeam", "copy": "local", "url": "https://vbr.example:9419", "username": "svc-drcheck",
    "password": {"env": "VEEAM_PASSWORD"}, "copy_jobs": {"SIS offsite": "offsite"},
    "systems": [{"system": "sis", "vms": ["sis01", "sis-db*"]}, {"system": "fileserver", "vms": ["files01"],
                                                                  "copies": ["local"]}],
}


def veeam_config(builders, directory: Path, probe: dict | None = None, **extra) -> Path:
    """The builders' valid config plus a veeam probe `veeam`; return drcheck.toml's path."""
    config = builders.valid_config()
    config["agent"]["state_dir"] = str(directory / "state")
    config["agent"]["sandbox_root"] = str(directory / "state" / "sandbox")
    config["probes"]["veeam"] = copy.deepcopy(probe or VEEAM_PROBE)
    for key, value in extra.items():
        config.setdefault(key, {}).update(value)
    return builders.write_config(directory, config)


def loaded_and_store(builders, directory: Path, probe: dict | None = None, **extra):
    loaded = load(veeam_config(builders, directory, probe, **extra))
    return loaded, Store(loaded.database_path)


def test_the_fake_refuses_a_request_without_a_token():
    fake = FakeVeeam()
    response = fake(httpx.Request("GET", "https://vbr.example:9419/api/v1/jobs", headers={"x-api-version": "1.1-rev1"}))
    assert response.status_code == 401 and response.json()["errorCode"] == "InvalidToken"
