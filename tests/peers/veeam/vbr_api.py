"""The REST API's routes: version header, authorization, collections with skip/limit paging,
filters and sorting, single resources, and instant recovery (delegated to vbr_recovery).

`Api.handle(method, path, query, headers, body)` returns `(status, json_body)` or raises
`ApiError` (status + Veeam error body `{"errorCode", "message", "resourceId"?}`). It does no
socket I/O, so the HTTP layer (server.py) stays a thin shell. Contracts in README.md.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from datetime import datetime
from typing import Any, Callable
from urllib.parse import parse_qsl

from vbr_auth import AuthError, TokenStore
from vbr_model import MALWARE_STATUSES, SESSION_RESULTS, Model, parse_time
from vbr_recovery import RecoveryError

API_VERSION = "1.1-rev1"
# Revisions whose paths and shapes this replay serves (later v12 revisions only add optional
# fields and endpoints it does not have). 1.0-* and 1.1-rev0 use the old objectRestorePoints and
# instantRecovery/vmware paths: refused with 400 rather than answered with the wrong shapes.
SUPPORTED_VERSIONS = ("1.1-rev1", "1.1-rev2", "1.2-rev0", "1.2-rev1")
DEFAULT_LIMIT = 200  # what the reference's examples show for a request without `limit`


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, resource_id: str | None = None):
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"errorCode": code, "message": message}
        if resource_id is not None:
            self.body["resourceId"] = resource_id


def not_found(kind: str, rid: str) -> ApiError:
    return ApiError(404, "NotFound", f"{kind} with ID '{rid}' was not found.", rid)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "UnexpectedContent", message)


# -- query helpers ------------------------------------------------------------------------


def _int(query: dict[str, str], name: str) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        raise bad_request(f"The value '{query[name]}' is not valid for {name}.") from None
    if value < 0:
        raise bad_request(f"{name} must not be negative.")
    return value


def _bool(query: dict[str, str], name: str, default: bool) -> bool:
    if name not in query:
        return default
    value = query[name].lower()
    if value not in ("true", "false"):
        raise bad_request(f"The value '{query[name]}' is not valid for {name}.")
    return value == "true"


def _time(query: dict[str, str], name: str) -> datetime | None:
    if name not in query:
        return None
    try:
        return parse_time(query[name], name)
    except ValueError:
        raise bad_request(f"The value '{query[name]}' is not valid for {name}.") from None


def _enum(query: dict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is not None and value not in allowed:
        raise bad_request(f"The value '{value}' is not valid for {name}: use one of {', '.join(allowed)}.")
    return value


def name_matches(pattern: str, name: str) -> bool:
    """`nameFilter`: `*` stands for any characters; case-insensitive; without `*`, exact."""
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def page(items: list, query: dict[str, str]) -> dict:
    """`{"data": items[skip:skip+limit], "pagination": {total, count, skip, limit}}`; skip is
    applied before limit, both after filters and sorting (as documented)."""
    skip = _int(query, "skip") or 0
    limit = _int(query, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    data = items[skip:skip + limit]
    return {"data": data, "pagination": {"total": len(items), "count": len(data), "skip": skip, "limit": limit}}


def _sorted(items: list[dict], query: dict[str, str], columns: dict[str, Callable[[dict], Any]],
            default: str | None, default_asc: bool) -> list[dict]:
    column = query.get("orderColumn", default)
    if column is None:
        return items
    if column not in columns:
        raise bad_request(f"The value '{column}' is not valid for orderColumn: use one of {', '.join(columns)}.")
    asc = _bool(query, "orderAsc", default_asc if "orderColumn" not in query else True)
    key = columns[column]
    return sorted(items, key=lambda x: (key(x) is None, key(x) or ""), reverse=not asc)


class Api:
    """Answers REST requests from the current model, tokens and instant-recovery mounts."""

    def __init__(self, model: Model, tokens: TokenStore, recovery):
        self._model = model
        self.tokens = tokens
        self.recovery = recovery
        self._cache: dict[tuple, list] = {}
        self._lock = threading.Lock()
        self.routes: list[tuple[str, re.Pattern, Callable]] = [
            ("GET", re.compile(r"/api/v1/serverInfo"), self.server_info),
            ("GET", re.compile(r"/api/v1/jobs"), self.jobs),
            ("GET", re.compile(r"/api/v1/jobs/states"), self.job_states),
            ("GET", re.compile(r"/api/v1/jobs/(?P<id>[^/]+)"), self.one("job")),
            ("GET", re.compile(r"/api/v1/sessions"), self.sessions),
            ("GET", re.compile(r"/api/v1/sessions/(?P<id>[^/]+)"), self.session),
            ("GET", re.compile(r"/api/v1/backups"), self.backups),
            ("GET", re.compile(r"/api/v1/backups/(?P<id>[^/]+)"), self.one("backup")),
            ("GET", re.compile(r"/api/v1/backups/(?P<id>[^/]+)/objects"), self.backup_objects_of),
            ("GET", re.compile(r"/api/v1/backupObjects"), self.backup_objects),
            ("GET", re.compile(r"/api/v1/backupObjects/(?P<id>[^/]+)"), self.one("object")),
            ("GET", re.compile(r"/api/v1/backupObjects/(?P<id>[^/]+)/restorePoints"), self.object_points),
            ("GET", re.compile(r"/api/v1/restorePoints"), self.restore_points),
            ("GET", re.compile(r"/api/v1/restorePoints/(?P<id>[^/]+)"), self.one("point")),
            ("GET", re.compile(r"/api/v1/restore/instantRecovery/vSphere/vm"), self.mounts),
            ("POST", re.compile(r"/api/v1/restore/instantRecovery/vSphere/vm"), self.mount),
            ("GET", re.compile(r"/api/v1/restore/instantRecovery/vSphere/vm/(?P<id>[^/]+)"), self.get_mount),
            ("POST", re.compile(r"/api/v1/restore/instantRecovery/vSphere/vm/(?P<id>[^/]+)/unmount"), self.unmount),
        ]

    # -- model replacement --------------------------------------------------------------

    @property
    def model(self) -> Model:
        return self._model

    def replace_model(self, model: Model) -> None:
        with self._lock:
            self._model = model
            self._cache = {}

    # -- entry point --------------------------------------------------------------------

    def handle(self, method: str, path: str, query_string: str, headers, body: bytes) -> tuple[int, Any]:
        """Route one request. `headers` is a case-insensitive mapping (email.message.Message)."""
        path = path.rstrip("/") or "/"
        if not path.startswith("/api/"):
            raise ApiError(404, "NotFound", f"The resource '{path}' was not found.")
        version = headers.get("x-api-version")
        if not version:
            raise ApiError(400, "UnexpectedContent", "The x-api-version header is required; "
                                                     f"this server serves {', '.join(SUPPORTED_VERSIONS)}.")
        if version not in SUPPORTED_VERSIONS:
            raise ApiError(400, "UnexpectedContent", f"The x-api-version '{version}' is not supported; "
                                                     f"use one of {', '.join(SUPPORTED_VERSIONS)}.")
        if path == "/api/oauth2/token":
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")
            return 200, self._token(headers, body)
        try:
            self.tokens.check(headers.get("Authorization"))
        except AuthError as err:
            raise ApiError(err.status, err.code, err.message) from None
        if path == "/api/oauth2/logout" and method == "POST":
            self.tokens.logout(headers.get("Authorization"))
            return 200, {}
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        allowed = []
        for verb, pattern, fn in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if verb != method:
                allowed.append(verb)
                continue
            try:
                return fn(query=query, body=body, **m.groupdict())
            except RecoveryError as err:
                raise ApiError(err.status, err.code, err.message, err.resource_id) from None
        if allowed:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")
        raise ApiError(404, "NotFound", f"The resource '{path}' was not found.")

    def _token(self, headers, body: bytes) -> dict:
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise bad_request("The token request must be application/x-www-form-urlencoded.")
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            return self.tokens.grant(form)
        except AuthError as err:
            raise ApiError(err.status, err.code, err.message) from None

    # -- handlers -----------------------------------------------------------------------

    def server_info(self, query, body) -> tuple[int, dict]:
        m = self.model
        return 200, {"vbrId": m.server.get("id", "6745a759-2205-4cd2-b172-8ec8f7e60ef8"), "name": m.server["name"],
                     "buildVersion": m.server["build"], "patches": [], "databaseVendor": "PostgreSql",
                     "sqlServerVersion": "15.3", "sqlServerEdition": ""}

    def one(self, kind: str) -> Callable:
        label = {"job": "Job", "backup": "Backup", "object": "Backup object", "point": "Restore point"}[kind]

        def get(query, body, id: str) -> tuple[int, dict]:
            item = self.model.by_id.get(kind, {}).get(id)
            if item is None:
                raise not_found(label, id)
            return 200, item

        return get

    def jobs(self, query, body) -> tuple[int, dict]:
        items = self._cached(("jobs", *sorted(query.items())), lambda: self._filter_jobs(self.model.jobs, query))
        return 200, page(items, query)

    def job_states(self, query, body) -> tuple[int, dict]:
        def build():
            items = self._filter_jobs(self.model.job_states, query)
            if "idFilter" in query:
                items = [j for j in items if j["id"] == query["idFilter"]]
            result = _enum(query, "lastResultFilter", SESSION_RESULTS)
            if result:
                items = [j for j in items if j["lastResult"] == result]
            status = _enum(query, "statusFilter", ("running", "inactive", "disabled"))
            if status:
                items = [j for j in items if j["status"] == status]
            return _sorted(items, query, {"Name": lambda j: j["name"].lower(), "LastRun": lambda j: j["lastRun"],
                                          "LastResult": lambda j: j["lastResult"], "Type": lambda j: j["type"],
                                          "Status": lambda j: j["status"]}, None, True)

        return 200, page(self._cached(("states", *sorted(query.items())), build), query)

    def _filter_jobs(self, items: list[dict], query) -> list[dict]:
        if "nameFilter" in query:
            items = [j for j in items if name_matches(query["nameFilter"], j["name"])]
        if "typeFilter" in query:
            items = [j for j in items if j["type"] == query["typeFilter"]]
        return _sorted(items, query, {"Name": lambda j: j["name"].lower(), "Type": lambda j: j["type"]}, None, True)

    def _all_sessions(self) -> list[dict]:
        mine = self.recovery.sessions()
        if not mine:
            return self.model.sessions
        return sorted(self.model.sessions + mine, key=lambda s: s["creationTime"], reverse=True)

    def sessions(self, query, body) -> tuple[int, dict]:
        items = self._all_sessions()
        if "nameFilter" in query:
            items = [s for s in items if name_matches(query["nameFilter"], s["name"])]
        if "jobIdFilter" in query:
            items = [s for s in items if s["jobId"] == query["jobIdFilter"]]
        if "typeFilter" in query:
            items = [s for s in items if s["sessionType"] == query["typeFilter"]]
        if "stateFilter" in query:
            items = [s for s in items if s["state"] == query["stateFilter"]]
        result = _enum(query, "resultFilter", SESSION_RESULTS)
        if result:
            items = [s for s in items if s["result"]["result"] == result]
        for name, op in (("createdAfterFilter", "gt"), ("createdBeforeFilter", "lt")):
            t = _time(query, name)
            if t is not None:
                items = [s for s in items if _cmp(s["creationTime"], t, op)]
        for name, op in (("endedAfterFilter", "gt"), ("endedBeforeFilter", "lt")):
            t = _time(query, name)
            if t is not None:
                items = [s for s in items if s["endTime"] and _cmp(s["endTime"], t, op)]
        items = _sorted(items, query, {"Name": lambda s: s["name"].lower(),
                                       "CreationTime": lambda s: s["creationTime"],
                                       "EndTime": lambda s: s["endTime"], "SessionType": lambda s: s["sessionType"],
                                       "State": lambda s: s["state"]}, None, False)
        return 200, page(items, query)

    def session(self, query, body, id: str) -> tuple[int, dict]:
        found = self.recovery.session(id) or self.model.by_id["session"].get(id)
        if found is None:
            raise not_found("Session", id)
        return 200, found

    def backups(self, query, body) -> tuple[int, dict]:
        def build():
            items = self.model.backups
            if "nameFilter" in query:
                items = [b for b in items if name_matches(query["nameFilter"], b["name"])]
            if "jobIdFilter" in query:
                items = [b for b in items if b["jobId"] == query["jobIdFilter"]]
            if "platformIdFilter" in query:
                items = [b for b in items if b["platformId"] == query["platformIdFilter"]]
            return _sorted(items, query, {"Name": lambda b: b["name"].lower(),
                                          "CreationTime": lambda b: b["creationTime"]}, None, True)

        return 200, page(self._cached(("backups", *sorted(query.items())), build), query)

    def _filter_objects(self, items: list[dict], query) -> list[dict]:
        if "nameFilter" in query:
            items = [o for o in items if name_matches(query["nameFilter"], o["name"])]
        if "typeFilter" in query:
            items = [o for o in items if o["type"] == query["typeFilter"]]
        if "platformNameFilter" in query:
            items = [o for o in items if o["platformName"] == query["platformNameFilter"]]
        if "viTypeFilter" in query:
            items = [o for o in items if o.get("viType") == query["viTypeFilter"]]
        return _sorted(items, query, {"Name": lambda o: o["name"].lower(), "ObjectId": lambda o: o["objectId"]},
                       None, True)

    def backup_objects(self, query, body) -> tuple[int, dict]:
        items = self._cached(("objects", *sorted(query.items())), lambda: self._filter_objects(self.model.objects, query))
        return 200, page(items, query)

    def backup_objects_of(self, query, body, id: str) -> tuple[int, dict]:
        if id not in self.model.by_id["backup"]:
            raise not_found("Backup", id)
        items = self._cached(("objects-of", id, *sorted(query.items())),
                             lambda: self._filter_objects(self.model.objects_by_backup.get(id, []), query))
        return 200, page(items, query)

    def object_points(self, query, body, id: str) -> tuple[int, dict]:
        if id not in self.model.by_id["object"]:
            raise not_found("Backup object", id)
        return self.restore_points({**query, "backupObjectIdFilter": id}, body)

    def restore_points(self, query, body) -> tuple[int, dict]:
        key = ("points", *sorted((k, v) for k, v in query.items() if k not in ("skip", "limit")))
        return 200, page(self._cached(key, lambda: self._filter_points(query)), query)

    def _filter_points(self, query) -> list[dict]:
        m = self.model
        if "backupObjectIdFilter" in query:
            items = m.points_by_object.get(query["backupObjectIdFilter"], [])
        elif "backupIdFilter" in query:
            items = m.points_by_backup.get(query["backupIdFilter"], [])
        else:
            items = m.points
        if "backupIdFilter" in query:
            items = [p for p in items if p["backupId"] == query["backupIdFilter"]]
        if "nameFilter" in query:
            items = [p for p in items if name_matches(query["nameFilter"], p["name"])]
        status = _enum(query, "malwareStatusFilter", MALWARE_STATUSES)
        if status:
            items = [p for p in items if p["malwareStatus"] == status]
        if "platformNameFilter" in query:
            items = [p for p in items if p["platformName"] == query["platformNameFilter"]]
        if "platformIdFilter" in query:
            items = [p for p in items if p["platformId"] == query["platformIdFilter"]]
        for name, op in (("createdAfterFilter", "gt"), ("createdBeforeFilter", "lt")):
            t = _time(query, name)
            if t is not None:
                items = [p for p in items if _cmp(p["creationTime"], t, op)]
        return _sorted(items, query, {"CreationTime": lambda p: p["creationTime"], "Name": lambda p: p["name"].lower(),
                                      "PlatformId": lambda p: p["platformId"], "BackupId": lambda p: p["backupId"]},
                       "CreationTime", False)

    def _cached(self, key: tuple, build: Callable[[], list]) -> list:
        """Filtered, sorted lists are kept per query (without skip/limit) until the scenario is
        replaced, so paging through 60,000 restore points costs one filter, not one per page."""
        model = self._model  # a list built from a model replaced meanwhile is never served for the new one
        key = (id(model), *(kv for kv in key if not (isinstance(kv, tuple) and kv[0] in ("skip", "limit"))))
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        items = list(build())
        with self._lock:
            if model is self._model:
                if len(self._cache) > 2000:
                    self._cache.clear()
                self._cache[key] = items
        return items

    # -- instant recovery ---------------------------------------------------------------

    def mounts(self, query, body) -> tuple[int, dict]:
        items = self.recovery.mounts()
        state = _enum(query, "stateFilter", ("Failed", "Mounting", "Mounted", "Dismounting"))
        if state:
            items = [m for m in items if m["state"] == state]
        items = _sorted(items, query, {"Name": lambda m: m["vmName"].lower(), "State": lambda m: m["state"]},
                        None, True)
        return 200, page(items, query)

    def mount(self, query, body) -> tuple[int, dict]:
        try:
            spec = json.loads(body or b"null")
        except ValueError:
            raise bad_request("The request body is not valid JSON.") from None
        return 201, self.recovery.start(spec, self.model)

    def get_mount(self, query, body, id: str) -> tuple[int, dict]:
        found = self.recovery.mount(id)
        if found is None:
            raise not_found("Mount", id)
        return 200, found

    def unmount(self, query, body, id: str) -> tuple[int, dict]:
        return 200, self.recovery.unmount(id)


def _cmp(value: str, t: datetime, op: str) -> bool:
    v = datetime.fromisoformat(value)
    return v > t if op == "gt" else v < t
