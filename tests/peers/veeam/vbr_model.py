"""The replay's world: a scenario (JSON, see README.md "Scenario") turned into the resources
Veeam Backup & Replication's REST API returns, already in the API's JSON shapes.

`Model.load(scenario, now)` validates the scenario (unknown keys are errors) and builds every
resource once: jobs, job states, sessions, backups, backup objects and restore points, with
indexes for the filters a client uses. Ids are UUIDv5 of names, so replacing the scenario with
an edited copy keeps the ids of what did not change (a client's cached state stays valid).
Times are ISO 8601 with an offset (`2026-01-10T06:00:00+00:00`), as the API writes them.
Nothing here does I/O; the model is read-only once built (a replacement builds a new one).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

NAMESPACE = uuid.UUID("5b1f2d4e-7a7c-4d0b-9a51-0c1e9d7f3a10")
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
MALWARE_STATUSES = ("Clean", "Suspicious", "Infected")
SESSION_RESULTS = ("Success", "Warning", "Failed", "None")
JOB_TYPES = ("Backup", "BackupCopy")
POINT_TYPES = ("Full", "Increment")
VM_OPERATIONS = ["StartViVMInstantRecovery", "StartEntireVmRestore", "StartFCDInstantRecovery", "StartFlrRestore"]


class ScenarioError(ValueError):
    """The scenario is malformed; the message names the offending key."""


def make_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat()


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float, where: str) -> timedelta:
    """'36h', '1d12h', '90m', '500ms' or a number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return timedelta(seconds=text)
    if not isinstance(text, str) or not text.strip():
        raise ScenarioError(f"{where}: {text!r} is not a duration such as '36h' or '1d12h'")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text.strip()):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text.strip()):
        raise ScenarioError(f"{where}: {text!r} is not a duration such as '36h' or '1d12h'")
    return timedelta(seconds=total)


def parse_time(text: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}: {text!r} is not an ISO 8601 time") from None
    if t.tzinfo is None:
        raise ScenarioError(f"{where}: {text!r} has no time zone offset")
    return t


def _check_keys(obj: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> dict:
    if not isinstance(obj, dict):
        raise ScenarioError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = set(obj) - allowed
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    missing = required - set(obj)
    if missing:
        raise ScenarioError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    return obj


@dataclass
class VM:
    name: str
    moref: str
    source: str  # the vCenter simulator's name/path of the VM instant recovery clones
    path: str  # ViBackupObjectModel.path


@dataclass
class Model:
    """Every resource of one scenario, in API shape, plus the indexes the handlers use."""

    now: datetime
    vcenter: str
    folders: dict[str, str]  # folder moref -> inventory path in the simulator
    server: dict
    vms: dict[str, VM] = field(default_factory=dict)
    repositories: list[dict] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    job_states: list[dict] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)
    backups: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    points: list[dict] = field(default_factory=list)
    points_by_backup: dict[str, list[dict]] = field(default_factory=dict)
    points_by_object: dict[str, list[dict]] = field(default_factory=dict)
    objects_by_backup: dict[str, list[dict]] = field(default_factory=dict)
    by_id: dict[str, dict[str, dict]] = field(default_factory=dict)  # kind -> id -> resource
    point_object: dict[str, str] = field(default_factory=dict)  # restore point id -> VM name
    mount_delay: timedelta = timedelta(0)

    # -- loading -----------------------------------------------------------------------

    @classmethod
    def load(cls, scenario: dict, now: datetime | None = None) -> "Model":
        """Build the model; raise ScenarioError on anything malformed."""
        _check_keys(scenario, {"now", "server", "vcenter", "repositories", "vms", "jobs", "mount_delay"},
                    "scenario")
        if "now" in scenario:
            now = parse_time(scenario["now"], "now")
        now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        vc = _check_keys(scenario.get("vcenter", {}), {"host", "folders"}, "vcenter")
        folders = vc.get("folders", {})
        if not isinstance(folders, dict) or not all(isinstance(v, str) for v in folders.values()):
            raise ScenarioError("vcenter.folders: expected {moref: inventory path}")
        server = _check_keys(scenario.get("server", {}), {"name", "build"}, "server")
        model = cls(now=now, vcenter=vc.get("host", "vcenter01.lab.local"), folders=dict(folders),
                    server={"name": server.get("name", "vbr01.lab.local"),
                            "build": server.get("build", "12.1.2.172")})
        if "mount_delay" in scenario:
            model.mount_delay = parse_duration(scenario["mount_delay"], "mount_delay")
        for i, raw in enumerate(scenario.get("vms", [])):
            model._add_vm(raw, f"vms[{i}]")
        for i, raw in enumerate(scenario.get("repositories", [{"name": "Default Backup Repository"}])):
            r = _check_keys(raw, {"name", "id"}, f"repositories[{i}]", {"name"})
            model.repositories.append({"id": r.get("id") or make_id("repo", r["name"]), "name": r["name"]})
        jobs = scenario.get("jobs", [])
        if not isinstance(jobs, list):
            raise ScenarioError("jobs: expected a list")
        names = [j.get("name") if isinstance(j, dict) else None for j in jobs]
        for i, raw in enumerate(jobs):
            model._add_job(raw, f"jobs[{i}]", names)
        model._finish()
        return model

    def _add_vm(self, raw: Any, where: str) -> VM:
        if isinstance(raw, str):
            raw = {"name": raw}
        r = _check_keys(raw, {"name", "moref", "source", "path"}, where, {"name"})
        name = r["name"]
        if name in self.vms:
            raise ScenarioError(f"{where}: VM {name!r} is listed twice")
        vm = VM(name=name, moref=r.get("moref") or f"vm-{1000 + len(self.vms)}", source=r.get("source") or name,
                path=r.get("path") or f"{self.vcenter}\\DC0\\{name}")
        self.vms[name] = vm
        return vm

    def _repository(self, name: str | None, where: str) -> dict:
        if name is None:
            return self.repositories[0]
        for r in self.repositories:
            if r["name"] == name:
                return r
        raise ScenarioError(f"{where}.repository: no repository named {name!r}")

    def _add_job(self, raw: Any, where: str, job_names: list) -> None:
        j = _check_keys(raw, {"name", "type", "description", "disabled", "repository", "objects", "points",
                              "sessions", "running", "source_job", "high_priority", "next_run", "id"},
                        where, {"name"})
        name, jtype = j["name"], j.get("type", "Backup")
        if jtype not in JOB_TYPES:
            raise ScenarioError(f"{where}.type: {jtype!r}: use one of {', '.join(JOB_TYPES)}")
        if jtype == "BackupCopy" and j.get("source_job") not in job_names:
            raise ScenarioError(f"{where}.source_job: a BackupCopy job names the job it copies (one of the jobs)")
        repo = self._repository(j.get("repository"), where)
        job_id = j.get("id") or make_id("job", name)
        disabled = bool(j.get("disabled", False))
        default_points = j.get("points", {"count": 7, "every": "24h", "newest": "6h"})

        # sessions: newest first in the list is not required; they are sorted by time
        raw_sessions = j.get("sessions")
        if raw_sessions is None:
            newest = _points_spec_newest(default_points, f"{where}.points")
            raw_sessions = [{"age": newest, "result": "Success"}]
        sessions = [self._session(job_id, name, s, f"{where}.sessions[{k}]") for k, s in enumerate(raw_sessions)]
        if j.get("running"):
            sessions.append(self._running_session(job_id, name))
        sessions.sort(key=lambda s: s["creationTime"])
        self.sessions.extend(sessions)

        backup_id = make_id("backup", name)
        includes, object_count = [], 0
        objects = j.get("objects", [])
        if not isinstance(objects, list):
            raise ScenarioError(f"{where}.objects: expected a list")
        first_time: datetime | None = None
        for k, o in enumerate(objects):
            ow = f"{where}.objects[{k}]"
            if isinstance(o, str):
                o = {"vm": o}
            o = _check_keys(o, {"vm", "points"}, ow, {"vm"})
            vm = self.vms.get(o["vm"]) or self._add_vm({"name": o["vm"]}, ow)
            pts = self._points(o.get("points", default_points), ow)
            obj_id = make_id("object", name, vm.name)
            obj = {"id": obj_id, "name": vm.name, "type": "VM", "platformName": "VMware", "platformId": ZERO_UUID,
                   "restorePointsCount": len(pts), "objectId": vm.moref, "viType": "VirtualMachine", "path": vm.path}
            self.objects.append(obj)
            self.objects_by_backup.setdefault(backup_id, []).append(obj)
            for t, malware, ptype, pid in pts:
                point = {"id": pid or make_id("point", name, vm.name, iso(t)), "name": vm.name,
                         "platformName": "VMware", "platformId": ZERO_UUID, "creationTime": iso(t),
                         "backupId": backup_id, "type": ptype, "sessionId": None,
                         "allowedOperations": list(VM_OPERATIONS), "malwareStatus": malware,
                         "backupFileId": make_id("file", name, vm.name, iso(t))}
                self.points.append(point)
                self.points_by_backup.setdefault(backup_id, []).append(point)
                self.points_by_object.setdefault(obj_id, []).append(point)
                self.point_object[point["id"]] = vm.name
                first_time = t if first_time is None or t < first_time else first_time
            includes.append({"inventoryObject": {"type": "VirtualMachine", "hostName": self.vcenter, "name": vm.name,
                                                 "objectId": vm.moref}, "size": "40 GB"})
            object_count += 1
        if objects:
            self.backups.append({"id": backup_id, "jobId": job_id, "policyUniqueId": "", "name": name,
                                 "platformName": "VMware", "platformId": ZERO_UUID,
                                 "creationTime": iso(first_time or self.now), "repositoryId": repo["id"]})

        job = {"id": job_id, "name": name, "type": jtype, "isDisabled": disabled,
               "description": j.get("description", f"Created by {self.server['name']}\\Administrator"),
               "isHighPriority": bool(j.get("high_priority", False)),
               "virtualMachines": {"includes": includes, "excludes": {"vms": [], "disks": []}},
               "storage": {"backupRepositoryId": repo["id"],
                           "retentionPolicy": {"type": "RestorePoints", "quantity": 30}},
               "schedule": {"runAutomatically": not disabled,
                            "daily": {"isEnabled": True, "localTime": "22:00", "dailyKind": "Everyday"}}}
        if jtype == "BackupCopy":
            job["sourceJobId"] = make_id("job", j["source_job"])
            job.pop("schedule")
        self.jobs.append(job)
        last = sessions[-1] if sessions else None
        status = "disabled" if disabled else ("running" if j.get("running") else "inactive")
        state = {"id": job_id, "name": name, "type": jtype, "description": job["description"], "status": status,
                 "lastRun": last["creationTime"] if last else None,
                 "lastResult": last["result"]["result"] if last else "None",
                 "nextRun": None if disabled else iso(self.now + parse_duration(j.get("next_run", "16h"),
                                                                                 f"{where}.next_run")),
                 "workload": "vm", "repositoryId": repo["id"], "repositoryName": repo["name"],
                 "objectsCount": object_count, "sessionId": last["id"] if last else None}
        self.job_states.append(state)

    def _session(self, job_id: str, job_name: str, raw: Any, where: str) -> dict:
        s = _check_keys(raw, {"age", "time", "duration", "result", "message", "id"}, where)
        start = self._when(s, where)
        result = s.get("result", "Success")
        if result not in SESSION_RESULTS:
            raise ScenarioError(f"{where}.result: {result!r}: use one of {', '.join(SESSION_RESULTS)}")
        end = start + parse_duration(s.get("duration", "20m"), f"{where}.duration")
        sid = s.get("id") or make_id("session", job_name, iso(start))
        return {"id": sid, "name": job_name, "jobId": job_id, "sessionType": "BackupJob",
                "creationTime": iso(start), "endTime": iso(end), "state": "Stopped", "progressPercent": 100,
                "result": {"result": result, "message": s.get("message", ""), "isCanceled": False},
                "resourceId": make_id("backup", job_name), "resourceReference": f"/api/v1/backups/{make_id('backup', job_name)}",
                "parentSessionId": None, "usn": 0, "platformName": "VMware", "platformId": ZERO_UUID}

    def _running_session(self, job_id: str, job_name: str) -> dict:
        start = self.now - timedelta(minutes=5)
        return {"id": make_id("session", job_name, "running"), "name": job_name, "jobId": job_id,
                "sessionType": "BackupJob", "creationTime": iso(start), "endTime": None, "state": "Working",
                "progressPercent": 40, "result": {"result": "None", "message": "", "isCanceled": False},
                "resourceId": make_id("backup", job_name),
                "resourceReference": f"/api/v1/backups/{make_id('backup', job_name)}",
                "parentSessionId": None, "usn": 0, "platformName": "VMware", "platformId": ZERO_UUID}

    def _when(self, raw: dict, where: str) -> datetime:
        if "time" in raw and "age" in raw:
            raise ScenarioError(f"{where}: give either age or time, not both")
        if "time" in raw:
            return parse_time(raw["time"], f"{where}.time").astimezone(timezone.utc)
        return self.now - parse_duration(raw.get("age", "6h"), f"{where}.age")

    def _points(self, spec: Any, where: str) -> list[tuple[datetime, str, str, str | None]]:
        """A list of explicit points, or {"count", "every", "newest", "malware"?: {index: status}}."""
        out = []
        if isinstance(spec, dict):
            s = _check_keys(spec, {"count", "every", "newest", "malware"}, f"{where}.points")
            count = s.get("count", 7)
            if not isinstance(count, int) or count < 0:
                raise ScenarioError(f"{where}.points.count: expected a non-negative integer")
            every = parse_duration(s.get("every", "24h"), f"{where}.points.every")
            newest = self.now - parse_duration(s.get("newest", "6h"), f"{where}.points.newest")
            statuses = s.get("malware", {})
            if not isinstance(statuses, dict):
                raise ScenarioError(f"{where}.points.malware: expected {{index from newest: status}}")
            for k in range(count):
                status = statuses.get(str(k), "Clean")
                _check_status(status, f"{where}.points.malware.{k}")
                out.append((newest - k * every, status, "Full" if k == count - 1 else "Increment", None))
        elif isinstance(spec, list):
            for k, raw in enumerate(spec):
                pw = f"{where}.points[{k}]"
                p = _check_keys(raw, {"age", "time", "malware", "type", "id"}, pw)
                status = p.get("malware", "Clean")
                _check_status(status, f"{pw}.malware")
                ptype = p.get("type")
                if ptype is not None and ptype not in POINT_TYPES:
                    raise ScenarioError(f"{pw}.type: {ptype!r}: use one of {', '.join(POINT_TYPES)}")
                out.append((self._when(p, pw), status, ptype, p.get("id")))
            out.sort(key=lambda x: x[0], reverse=True)
            out = [(t, st, pt or ("Full" if k == len(out) - 1 else "Increment"), pid)
                   for k, (t, st, pt, pid) in enumerate(out)]
        else:
            raise ScenarioError(f"{where}.points: expected a list of points or {{count, every, newest}}")
        return out

    def _finish(self) -> None:
        ids: dict[str, dict[str, dict]] = {}
        for kind, items in (("job", self.jobs), ("session", self.sessions), ("backup", self.backups),
                            ("object", self.objects), ("point", self.points)):
            table = ids.setdefault(kind, {})
            for item in items:
                if item["id"] in table:
                    raise ScenarioError(f"two {kind}s have the id {item['id']} (duplicate names or points?)")
                table[item["id"]] = item
        self.by_id = ids
        newest_first = lambda p: p["creationTime"]  # noqa: E731
        self.points.sort(key=newest_first, reverse=True)
        for lst in (*self.points_by_backup.values(), *self.points_by_object.values()):
            lst.sort(key=newest_first, reverse=True)
        self.sessions.sort(key=lambda s: s["creationTime"], reverse=True)


def _check_status(status: Any, where: str) -> None:
    if status not in MALWARE_STATUSES:
        raise ScenarioError(f"{where}: {status!r}: use one of {', '.join(MALWARE_STATUSES)}")


def _points_spec_newest(spec: Any, where: str) -> str | float:
    """The age of the newest point of a points spec (for the default session)."""
    if isinstance(spec, dict):
        return spec.get("newest", "6h")
    return "6h"
