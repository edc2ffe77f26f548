"""The replay's control API (plain HTTP, its own port): what tests change behind a client's back
and what they read back. JSON in and out; 200 on success, `{"error": "..."}` with 400 (bad
request) or 404 (no such endpoint) otherwise. Endpoints are listed in README.md "Control API".
"""

from __future__ import annotations

import json
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any

from vbr_model import Model, ScenarioError

OUTAGE_MODES = ("none", "refuse", "hang")


class ControlError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class OutageGate:
    """`none`: serve; `refuse`: read the request and close the connection without a response;
    `hang`: hold the request until the mode changes (then serve it) or the server stops."""

    def __init__(self):
        self.mode = "none"
        self._cond = threading.Condition()
        self._stopping = False
        self._serve_first: int | None = None  # `hang` after serving this many more requests

    def set(self, mode: str, after: int | None = None) -> None:
        """Apply `mode` now, or (`hang` with `after`) once `after` more requests were served."""
        with self._cond:
            if after:
                self.mode, self._serve_first = "none", after
            else:
                self.mode, self._serve_first = mode, None
            self._cond.notify_all()

    def wait(self) -> str:
        """The mode to apply to a request that just arrived (never `hang`, unless stopping)."""
        with self._cond:
            if self._serve_first is not None:
                if self._serve_first == 0:
                    self.mode, self._serve_first = "hang", None
                else:
                    self._serve_first -= 1
            while self.mode == "hang" and not self._stopping:
                self._cond.wait()
            return self.mode

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()


class Faults:
    """Injected HTTP errors: the next `count` requests whose path starts with `path` get
    `status` with a Veeam error body (e.g. 503 `ServiceUnavailable`, 429, 500 `UnknownError`)."""

    CODES = {429: "ServiceUnavailable", 500: "UnknownError", 502: "ServiceUnavailable",
             503: "ServiceUnavailable", 504: "ServiceUnavailable"}

    def __init__(self):
        self._items: list[dict] = []
        self._lock = threading.Lock()

    def add(self, path: str, status: int, count: int) -> None:
        with self._lock:
            self._items.append({"path": path, "status": status, "count": count})

    def clear(self) -> None:
        with self._lock:
            self._items = []

    def take(self, path: str) -> int | None:
        with self._lock:
            for f in self._items:
                if path.startswith(f["path"]) and f["count"] > 0:
                    f["count"] -= 1
                    return f["status"]
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [dict(f) for f in self._items if f["count"] > 0]


class RequestLog:
    """The last `size` API requests: time, method, path, query, status (None: refused by an
    outage), x-api-version, whether an Authorization header was sent, duration (ms)."""

    def __init__(self, size: int = 20000):
        self._items: deque[dict] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, entry: dict) -> None:
        with self._lock:
            self._items.append(entry)

    def list(self) -> list[dict]:
        with self._lock:
            return list(self._items)

    def reset(self) -> None:
        with self._lock:
            self._items.clear()


class Control:
    def __init__(self, api, gate: OutageGate, faults: Faults, log: RequestLog):
        self.api = api
        self.gate = gate
        self.faults = faults
        self.log = log

    def handle(self, method: str, path: str, body: bytes) -> Any:
        routes = {
            ("GET", "/health"): self.health,
            ("POST", "/outage"): self.outage,
            ("POST", "/token-lifetime"): self.token_lifetime,
            ("POST", "/scenario"): self.scenario,
            ("GET", "/mounts"): lambda _: self.api.recovery.history(),
            ("GET", "/requests"): lambda _: self.log.list(),
            ("POST", "/requests/reset"): self.requests_reset,
            ("POST", "/faults"): self.add_fault,
            ("GET", "/faults"): lambda _: self.faults.pending(),
        }
        fn = routes.get((method, path.rstrip("/") or "/"))
        if fn is None:
            if any(p == path for _, p in routes):
                raise ControlError(400, f"{path} does not answer {method}")
            raise ControlError(404, f"no control endpoint {path}")
        payload = None
        if method == "POST":
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                raise ControlError(400, "the request body is not JSON") from None
        return fn(payload)

    @staticmethod
    def _fields(payload: Any, allowed: set[str]) -> dict:
        if not isinstance(payload, dict):
            raise ControlError(400, "expected a JSON object")
        unknown = set(payload) - allowed
        if unknown:
            raise ControlError(400, f"unknown key(s): {', '.join(sorted(unknown))}")
        return payload

    def health(self, _) -> dict:
        m = self.api.model
        return {"ok": True, "outage": self.gate.mode, "jobs": len(m.jobs), "vms": len(m.vms),
                "restore_points": len(m.points), "mounts": len(self.api.recovery.mounts()),
                "token_lifetime": self.api.tokens.lifetime}

    def outage(self, payload) -> dict:
        fields = self._fields(payload, {"mode", "after"})
        mode, after = fields.get("mode"), fields.get("after")
        if mode not in OUTAGE_MODES:
            raise ControlError(400, f"mode {mode!r}: use refuse, hang or none")
        if after is not None and (mode != "hang" or not isinstance(after, int) or after < 0):
            raise ControlError(400, "after: a count of requests to serve first, with mode hang only")
        self.gate.set(mode, after)
        return {"mode": mode, "after": after}

    def token_lifetime(self, payload) -> dict:
        p = self._fields(payload, {"seconds", "expire_now"})
        seconds = p.get("seconds")
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                raise ControlError(400, "seconds: a positive number")
            self.api.tokens.set_lifetime(seconds)
        expired = self.api.tokens.expire_all() if p.get("expire_now") else 0
        return {"seconds": self.api.tokens.lifetime, "expired": expired}

    def scenario(self, payload) -> dict:
        try:
            model = Model.load(payload, datetime.now(timezone.utc))
        except ScenarioError as err:
            raise ControlError(400, f"scenario: {err}") from None
        self.api.replace_model(model)
        return {"jobs": len(model.jobs), "vms": len(model.vms), "restore_points": len(model.points)}

    def requests_reset(self, payload) -> dict:
        self.log.reset()
        return {"reset": True}

    def add_fault(self, payload) -> dict:
        p = self._fields(payload, {"path", "status", "count", "clear"})
        if p.get("clear"):
            self.faults.clear()
            return {"faults": []}
        status, count = p.get("status"), p.get("count", 1)
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ControlError(400, "status: an HTTP error code (400-599)")
        if not isinstance(count, int) or count < 1:
            raise ControlError(400, "count: a positive integer")
        self.faults.add(p.get("path", "/api/"), status, count)
        return {"faults": self.faults.pending()}
