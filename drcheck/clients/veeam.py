"""Veeam Backup & Replication over its REST API (`/api/v1`, `x-api-version` 1.1-rev1 by
default, as Veeam B&R 12 serves it): jobs and their states, sessions, backups, restore
points (with Veeam's malware status), and instant recovery of a vSphere VM (mount, find,
unmount).

Values handed back are plain dataclasses. Every failure is a `SourceError`: the HTTP
base's (`drcheck.clients.http`: unreachable, timeout, untrusted certificate, login
refused, HTTP status with Veeam's message) or a `VeeamError` naming what Veeam reported
(a mount that failed, a session that ended badly).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import httpx

from drcheck.clients import SourceError
from drcheck.clients.http import HttpSettings, OAuth2Password, RestClient, StatusError
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)

SERVICE = "Veeam B&R"
TOKEN_PATH = "/api/oauth2/token"
DEFAULT_API_VERSION = "1.1-rev1"
CLEAN, SUSPICIOUS, INFECTED = "Clean", "Suspicious", "Infected"
COPY_JOB_TYPES = frozenset({"BackupCopy", "LegacyBackupCopy", "VSphereBackupCopy"})
SESSION_POLL = (0.2, 2.0)  # first and longest pause between polls of a session or mount (seconds)


class VeeamError(SourceError):
    """Veeam answered, but what it reported is a failure (a mount that failed)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a Veeam B&R server's REST API is (`url`: "https://vbr.example:9419") and how
    to log in and trust it. `timeout` bounds each request (seconds)."""

    url: str
    username: str
    password: SecretRef
    ca_bundle: Path | None = None
    insecure: bool = False
    api_version: str = DEFAULT_API_VERSION
    timeout: float = 30.0
    retries: int = 2
    page_size: int = 200


@dataclass(frozen=True)
class Job:
    id: str
    name: str
    type: str
    disabled: bool = False
    source_job_id: str | None = None

    @property
    def is_copy(self) -> bool:
        """A backup copy job (its backups are a further copy, at its repository's site):
        typed so (revision 1.3 names the type; earlier ones document none) or naming the
        job it copies."""
        return self.type in COPY_JOB_TYPES or self.type.endswith("BackupCopy") or bool(self.source_job_id)


@dataclass(frozen=True)
class JobState:
    id: str
    name: str
    type: str
    status: str
    last_result: str  # Success, Warning, Failed, None
    last_run: datetime | None
    session_id: str | None


@dataclass(frozen=True)
class Session:
    id: str
    name: str
    job_id: str | None
    type: str
    state: str  # Starting, Working, Stopped, ...
    result: str  # Success, Warning, Failed, None
    message: str
    created: datetime | None
    ended: datetime | None


@dataclass(frozen=True)
class Backup:
    id: str
    name: str
    job_id: str | None
    platform: str
    repository_id: str | None


@dataclass(frozen=True, slots=True)
class Point:
    """One restore point of one backed-up object (a VM's, for vSphere backups)."""

    id: str
    name: str  # the object's (VM's) name
    platform: str
    backup_id: str
    created: datetime
    malware_status: str  # Clean, Suspicious, Infected ("" when Veeam reports none: clean)

    @property
    def clean(self) -> bool:
        return self.malware_status in ("", CLEAN)


@dataclass(frozen=True)
class Mount:
    id: str
    session_id: str
    state: str  # Mounting, Mounted, Dismounting, Failed
    vm_name: str
    error: str


@dataclass(frozen=True)
class VSphereObject:
    """A vSphere inventory object as Veeam names it: `type` is Veeam's (Folder, ResourcePool,
    Host, Datastore), `object_id` the managed object reference (group-v3, resgroup-8)."""

    type: str
    name: str
    object_id: str

    def model(self, host_name: str) -> dict[str, Any]:
        return {"platform": "VMware", "hostName": host_name, "name": self.name, "type": self.type,
                "objectId": self.object_id}


class Veeam:
    """The calls drcheck makes. Use as a context manager (closes the connection pool)."""

    def __init__(self, endpoint: Endpoint, who: str = "", transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.endpoint = endpoint
        settings = HttpSettings(endpoint.url, service=SERVICE, ca_bundle=endpoint.ca_bundle, insecure=endpoint.insecure,
                                timeout=endpoint.timeout, retries=endpoint.retries,
                                headers={"x-api-version": endpoint.api_version})
        self.rest = RestClient(settings, OAuth2Password(TOKEN_PATH, endpoint.username, endpoint.password), who=who,
                               transport=transport, sleep=sleep)
        self._sleep = sleep

    def __enter__(self) -> "Veeam":
        return self

    def __exit__(self, *exc) -> None:
        self.rest.close()

    def _pages(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        return self.rest.pages(path, params, self.endpoint.page_size)

    # -- reads ------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        return self._decode(_job, self._pages("/api/v1/jobs"), "jobs")

    def job_states(self) -> list[JobState]:
        return self._decode(_job_state, self._pages("/api/v1/jobs/states"), "job states")

    def session(self, session_id: str) -> Session:
        return self._decode(_session, [self.rest.get(f"/api/v1/sessions/{session_id}")], "a session")[0]

    def last_session(self, job_id: str) -> Session | None:
        """The newest session of job `job_id`, or None when it never ran."""
        body = self.rest.get("/api/v1/sessions", {"jobIdFilter": job_id, "orderColumn": "CreationTime",
                                                  "orderAsc": "false", "limit": 1})
        found = (body or {}).get("data") or [] if isinstance(body, dict) else []
        return self._decode(_session, found[:1], "sessions")[0] if found else None

    def backups(self) -> list[Backup]:
        return self._decode(_backup, self._pages("/api/v1/backups"), "backups")

    def restore_points(self, **filters: Any) -> list[Point]:
        """Every restore point (Veeam's `*Filter` query parameters narrow it: `nameFilter`,
        `backupIdFilter`...), as Veeam lists them."""
        return list(self.each_restore_point(**filters))

    def each_restore_point(self, **filters: Any) -> Iterator[Point]:
        """`restore_points`, decoded page by page as they arrive: a reader that keeps only
        what it needs holds one page, not every point of a large server."""
        return self._each(_point, self._pages("/api/v1/restorePoints", filters or None), "restore points")

    # -- instant recovery -------------------------------------------------------------------

    def start_instant_recovery(self, point_id: str, vm_name: str, *, vcenter: str, folder: VSphereObject,
                               pool: VSphereObject, host: VSphereObject | None, datastore: VSphereObject | None,
                               nics_enabled: bool, reason: str) -> Session:
        """Start instant recovery of restore point `point_id` to vCenter `vcenter` (its host
        name as Veeam knows it) as `vm_name` in `folder` on `pool` (and `host`), powered
        off (`powerUp` false: power-on is the caller's), redo logs on `datastore` when
        given. Return the restore session Veeam started (HTTP 201)."""
        destination: dict[str, Any] = {"restoredVmName": vm_name, "folder": folder.model(vcenter),
                                       "resourcePool": pool.model(vcenter), "biosUuidPolicy": "generateNew"}
        if host is not None:
            destination["destinationHost"] = host.model(vcenter)
        body = {
            "restorePointId": point_id, "type": "Customized", "vmTagsRestoreEnabled": False,
            "secureRestore": {"antivirusScanEnabled": False}, "nicsEnabled": nics_enabled, "powerUp": False,
            "reason": reason, "destination": destination, "overwrite": False,
            "datastore": {"redirectEnabled": datastore is not None,
                          **({"cacheDatastore": datastore.model(vcenter)} if datastore is not None else {})},
        }
        return self._decode(_session, [self.rest.post("/api/v1/restore/instantRecovery/vSphere/vm", body)],
                            "the instant recovery session")[0]

    def mounts(self, vm_name: str | None = None) -> list[Mount]:
        """Instant-recovery mounts of vSphere VMs (those of `vm_name` only, when given)."""
        params = {"vmNameFilter": vm_name} if vm_name else None
        found = self._decode(_mount, self._pages("/api/v1/restore/instantRecovery/vSphere/vm", params), "mounts")
        return [m for m in found if vm_name is None or m.vm_name == vm_name]

    def mount(self, mount_id: str) -> Mount:
        return self._decode(_mount, [self.rest.get(f"/api/v1/restore/instantRecovery/vSphere/vm/{mount_id}")],
                            "a mount")[0]

    def wait_mounted(self, session_id: str, vm_name: str, timeout: float) -> Mount:
        """Wait until the mount of restore session `session_id` is Mounted; return it.
        Raise VeeamError when it failed (with Veeam's message) or is not mounted within
        `timeout` seconds."""
        deadline, pause = time.monotonic() + timeout, SESSION_POLL[0]
        while True:
            found = [m for m in self.mounts(vm_name) if m.session_id == session_id]
            mount = found[0] if found else None
            if mount is not None and mount.state == "Mounted":
                return mount
            if mount is not None and mount.state == "Failed" or mount is None and self._session_failed(session_id):
                why = mount.error if mount is not None and mount.error else self._session_message(session_id)
                raise VeeamError(f"{SERVICE} {self.endpoint.url}: instant recovery of {vm_name} failed: "
                                 f"{why or 'no reason given'}")
            if time.monotonic() > deadline:
                state = mount.state if mount is not None else "not listed yet"
                raise VeeamError(f"{SERVICE} {self.endpoint.url}: instant recovery of {vm_name} not mounted "
                                 f"within {timeout:.0f}s (mount {state})")
            self._sleep(pause)
            pause = min(pause * 2, SESSION_POLL[1])

    def unmount(self, mount_id: str, timeout: float) -> None:
        """Stop the instant recovery `mount_id` (Veeam removes the VM) and wait until the
        mount is gone or its unmount session ended. A mount that is already gone is
        success. Raise VeeamError when the unmount session failed or outlived `timeout`."""
        try:
            body = self.rest.post(f"/api/v1/restore/instantRecovery/vSphere/vm/{mount_id}/unmount")
        except StatusError as exc:
            if exc.status == 404:
                return
            raise
        session_id = str(body["id"]) if isinstance(body, dict) and body.get("id") else None
        deadline, pause = time.monotonic() + timeout, SESSION_POLL[0]
        while True:
            if session_id:
                session = self.session(session_id)
                if session.state == "Stopped":
                    if session.result == "Failed":
                        raise VeeamError(f"{SERVICE} {self.endpoint.url}: unmount of {mount_id} failed: "
                                         f"{session.message or 'no reason given'}")
                    return
            else:
                try:
                    if self.mount(mount_id).state not in ("Mounted", "Dismounting"):
                        return
                except StatusError as exc:
                    if exc.status == 404:
                        return
                    raise
            if time.monotonic() > deadline:
                raise VeeamError(f"{SERVICE} {self.endpoint.url}: unmount of {mount_id} still running after "
                                 f"{timeout:.0f}s")
            self._sleep(pause)
            pause = min(pause * 2, SESSION_POLL[1])

    def _decode(self, decode: Callable[[Any], Any], items: Iterable[Any], what: str) -> list[Any]:
        """Every item decoded (see `_each`)."""
        return list(self._each(decode, items, what))

    def _each(self, decode: Callable[[Any], Any], items: Iterable[Any], what: str) -> Iterator[Any]:
        """Decode each item; raise VeeamError when the server's answer lacks what the API
        reference promises (drcheck reports it rather than guessing)."""
        for item in items:
            try:
                yield decode(item)
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise VeeamError(f"{SERVICE} {self.endpoint.url}: unexpected answer listing {what} "
                                 f"({type(exc).__name__}: {exc})") from None

    def _session_failed(self, session_id: str) -> bool:
        session = self.session(session_id)
        return session.state == "Stopped" and session.result == "Failed"

    def _session_message(self, session_id: str) -> str:
        return self.session(session_id).message


# -- decoding ---------------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    """Veeam's date-times (ISO 8601, 'Z' or an offset, up to 7 fraction digits)."""
    if not value:
        return None
    try:  # Python 3.11 reads 'Z' and 7 fraction digits itself: the fast path for 60,000 points
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is not None and parsed.tzinfo is not None:
        return parsed
    text = str(value).replace("Z", "+00:00")
    head, dot, tail = text.partition(".")
    if dot:
        digits = tail[:len(tail) - len(tail.lstrip("0123456789"))]
        zone = tail[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without a time zone: {value!r}")
    return parsed


def _job(j: dict[str, Any]) -> Job:
    return Job(str(j["id"]), j.get("name", ""), j.get("type", ""), bool(j.get("isDisabled")),
               str(j["sourceJobId"]) if j.get("sourceJobId") else None)


def _job_state(j: dict[str, Any]) -> JobState:
    return JobState(str(j["id"]), j.get("name", ""), j.get("type", ""), j.get("status", ""),
                    j.get("lastResult") or "None", _time(j.get("lastRun")),
                    str(j["sessionId"]) if j.get("sessionId") else None)


def _backup(b: dict[str, Any]) -> Backup:
    return Backup(str(b["id"]), b.get("name", ""), str(b["jobId"]) if b.get("jobId") else None,
                  b.get("platformName", ""), str(b["repositoryId"]) if b.get("repositoryId") else None)


def _session(s: dict[str, Any]) -> Session:
    result = s.get("result") or {}
    return Session(str(s["id"]), s.get("name", ""), str(s["jobId"]) if s.get("jobId") else None,
                   s.get("sessionType", ""), s.get("state", ""), result.get("result") or "None",
                   " ".join(str(result.get("message") or "").split()), _time(s.get("creationTime")),
                   _time(s.get("endTime")))


def _point(p: dict[str, Any]) -> Point:
    return Point(str(p["id"]), p.get("name", ""), p.get("platformName", ""), str(p.get("backupId") or ""),
                 _time(p["creationTime"]), p.get("malwareStatus") or "")


def _mount(m: dict[str, Any]) -> Mount:
    return Mount(str(m["id"]), str(m.get("sessionId") or ""), m.get("state", ""), m.get("vmName", ""),
                 " ".join(str(m.get("errorMessage") or "").split()))
