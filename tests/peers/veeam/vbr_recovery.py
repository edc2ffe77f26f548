"""Instant recovery to VMware vSphere (`/api/v1/restore/instantRecovery/vSphere/vm`), made real
through the project's vCenter simulator.

Mount model (as the reference describes it): POST starts an `InstantRecovery` session and a
mount point (`InstantViVMRecoveryMount`: id, sessionId, state, spec, vmName, errorMessage);
the mount is `Mounting` until the VM exists, then `Mounted` (session `Stopped`/`Success`), or
`Failed` (session `Failed`, `errorMessage` says why). Unmount ("Stop VM Publishing") starts a
second session, the mount is `Dismounting`, then it leaves the list. The mount id equals the id
of its starting session (as in the reference's example).

The VM: `POST {vcsim}/restore {"source", "name", "folder"}` clones the scenario VM's `source`
powered off into the folder; unmount calls `POST {vcsim}/destroy {"vm": moref}`. The replay
never powers a VM on (`powerUp: true` is refused: drcheck fences the copy first).
Thread-safe; the vCenter calls run in background threads.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any

from vbr_model import ZERO_UUID, Model, make_id

RESOURCE = "/api/v1/restore/instantRecovery/vSphere/vm"


class RecoveryError(Exception):
    def __init__(self, status: int, code: str, message: str, resource_id: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.resource_id = status, code, message, resource_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _bad(message: str) -> RecoveryError:
    return RecoveryError(400, "UnexpectedContent", message)


class Recovery:
    def __init__(self, vcsim_control: str | None, timeout: float = 120):
        self.vcsim = vcsim_control.rstrip("/") if vcsim_control else None
        self.timeout = timeout
        self._mounts: dict[str, dict] = {}  # API shape, current mounts only
        self._extra: dict[str, dict] = {}  # replay-only facts per mount id (VM moref, path...), kept after unmount
        self._sessions: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._seq = 0

    # -- reads ----------------------------------------------------------------------------

    def mounts(self) -> list[dict]:
        with self._lock:
            return [json.loads(json.dumps(m)) for m in self._mounts.values()]

    def mount(self, mount_id: str) -> dict | None:
        with self._lock:
            m = self._mounts.get(mount_id)
            return json.loads(json.dumps(m)) if m else None

    def sessions(self) -> list[dict]:
        with self._lock:
            return [dict(s, result=dict(s["result"])) for s in self._sessions.values()]

    def session(self, session_id: str) -> dict | None:
        with self._lock:
            s = self._sessions.get(session_id)
            return dict(s, result=dict(s["result"])) if s else None

    def history(self) -> list[dict]:
        """Every mount ever started with the replay's own facts (control API `/mounts`)."""
        with self._lock:
            out = []
            for mid, extra in self._extra.items():
                current = self._mounts.get(mid)
                out.append({**extra, "state": current["state"] if current else "Unmounted",
                            "errorMessage": current.get("errorMessage", "") if current else extra.get("error", "")})
            return out

    # -- start --------------------------------------------------------------------------

    def start(self, spec: Any, model: Model) -> dict:
        """Validate an InstantViVMRecoverySpec, create the mount and its session, and clone the VM
        in the background; return the session (HTTP 201). Raise RecoveryError."""
        if not isinstance(spec, dict):
            raise _bad("The request body must be an InstantViVMRecoverySpec object.")
        for key in ("restorePointId", "type", "secureRestore"):
            if key not in spec:
                raise _bad(f"The {key} property is required.")
        if not isinstance(spec["secureRestore"], dict) or "antivirusScanEnabled" not in spec["secureRestore"]:
            raise _bad("The secureRestore.antivirusScanEnabled property is required.")
        mode = spec["type"]
        if mode not in ("OriginalLocation", "Customized"):
            raise _bad(f"The value '{mode}' is not valid for type: use OriginalLocation or Customized.")
        if mode == "OriginalLocation":
            raise _bad("replay: OriginalLocation instant recovery is not simulated (it would replace the "
                       "production VM); use Customized with a destination folder.")
        datastore = spec.get("datastore")
        if not isinstance(datastore, dict) or "redirectEnabled" not in datastore:
            raise _bad("The datastore.redirectEnabled property is required for Customized instant recovery.")
        if spec.get("powerUp"):
            raise _bad("replay: powerUp=true is not simulated; the restored VM stays powered off.")
        point_id = spec["restorePointId"]
        point = model.by_id["point"].get(point_id)
        if point is None:
            raise RecoveryError(404, "NotFound", f"Restore point with ID '{point_id}' was not found.", point_id)
        vm = model.vms[model.point_object[point_id]]
        destination = spec.get("destination") or {}
        if not isinstance(destination, dict):
            raise _bad("destination must be an object.")
        name = destination.get("restoredVmName") or vm.name
        folder, folder_error = self._folder(destination.get("folder"), model)

        with self._lock:
            self._seq += 1
            mount_id = make_id("mount", point_id, name, str(self._seq), _now())
            busy = [m for m in self._mounts.values() if m["vmName"] == name and m["state"] != "Failed"]
            session = self._new_session(mount_id, name, mount_id)
            mount = {"id": mount_id, "sessionId": mount_id, "state": "Mounting", "spec": spec, "vmName": name,
                     "errorMessage": ""}
            self._mounts[mount_id] = mount
            self._extra[mount_id] = {"id": mount_id, "vmName": name, "restorePointId": point_id, "source": vm.source,
                                     "folder": folder, "started": _now(), "moref": None, "uuid": None, "path": None}
        if busy and not spec.get("overwrite"):
            self._fail(mount_id, mount_id, f"A VM named {name} is already published by instant recovery.")
        elif folder_error:
            self._fail(mount_id, mount_id, folder_error)
        elif self.vcsim is None:
            self._fail(mount_id, mount_id, "replay: no vCenter simulator (--vcsim-control) to restore into.")
        else:
            self._run(self._mount_vm, mount_id, vm.source, name, folder, model.mount_delay.total_seconds())
        return session

    def _folder(self, folder: Any, model: Model) -> tuple[str | None, str | None]:
        """The simulator path of a requested folder (InventoryObjectModel): its `objectId` as the
        scenario's vcenter.folders map names it, or a `name` that is an inventory path."""
        if folder is None:
            return None, None
        if not isinstance(folder, dict):
            return None, "destination.folder must be an inventory object."
        moref, name = folder.get("objectId"), folder.get("name") or ""
        if moref and moref in model.folders:
            return model.folders[moref], None
        if "/" in name:
            return name, None
        known = [p for p in model.folders.values() if p.rstrip("/").rsplit("/", 1)[-1] == name]
        if len(known) == 1:
            return known[0], None
        return None, f"Folder {name or moref!r} ({moref}) was not found on {model.vcenter}."

    def _new_session(self, session_id: str, name: str, mount_id: str) -> dict:
        session = {"id": session_id, "name": name, "jobId": make_id("instant-recovery", name),
                   "sessionType": "InstantRecovery", "creationTime": _now(), "endTime": None, "state": "Working",
                   "progressPercent": 0, "result": {"result": "None", "message": "", "isCanceled": False},
                   "resourceId": mount_id, "resourceReference": f"{RESOURCE}/{mount_id}", "parentSessionId": None,
                   "usn": 0, "platformName": "VMware", "platformId": ZERO_UUID}
        self._sessions[session_id] = session
        return dict(session, result=dict(session["result"]))

    def _finish_session(self, session_id: str, result: str, message: str) -> None:
        s = self._sessions[session_id]
        s.update(state="Stopped", endTime=_now(), progressPercent=100,
                 result={"result": result, "message": message, "isCanceled": False}, usn=s["usn"] + 1)

    def _fail(self, mount_id: str, session_id: str, message: str) -> None:
        with self._lock:
            m = self._mounts.get(mount_id)
            if m is not None:
                m.update(state="Failed", errorMessage=message)
            self._extra[mount_id]["error"] = message
            self._finish_session(session_id, "Failed", message)

    def _mount_vm(self, mount_id: str, source: str, name: str, folder: str | None, delay: float) -> None:
        if delay:
            time.sleep(delay)
        payload = {"source": source, "name": name}
        if folder:
            payload["folder"] = folder
        try:
            vm = self._vcsim("/restore", payload)
        except RecoveryError as err:
            self._fail(mount_id, mount_id, f"Failed to publish VM {name}: {err.message}")
            return
        with self._lock:
            self._extra[mount_id].update(moref=vm.get("moref"), uuid=vm.get("uuid"), path=vm.get("path"),
                                         mounted=_now())
            m = self._mounts.get(mount_id)
            if m is not None:
                m["state"] = "Mounted"
            self._finish_session(mount_id, "Success", f"VM {name} has been published.")

    # -- unmount ------------------------------------------------------------------------

    def unmount(self, mount_id: str) -> dict:
        """Stop publishing: a new session (returned, HTTP 200); the VM is destroyed in the
        background and the mount leaves the list. A mount still `Mounting` or already
        `Dismounting` → 400; a `Failed` mount is just removed."""
        with self._lock:
            m = self._mounts.get(mount_id)
            if m is None:
                raise RecoveryError(404, "NotFound", f"Mount with ID '{mount_id}' was not found.", mount_id)
            if m["state"] in ("Mounting", "Dismounting"):
                raise _bad(f"The mount {mount_id} is {m['state']}; it can be unmounted once it is mounted.")
            self._seq += 1
            session_id = make_id("unmount", mount_id, str(self._seq))
            session = self._new_session(session_id, m["vmName"], mount_id)
            if m["state"] == "Failed":
                del self._mounts[mount_id]
                self._finish_session(session_id, "Success", "The failed mount has been removed.")
                return session
            m["state"] = "Dismounting"
            moref = self._extra[mount_id]["moref"]
        self._run(self._unmount_vm, mount_id, session_id, moref)
        return session

    def _unmount_vm(self, mount_id: str, session_id: str, moref: str) -> None:
        message = "The VM has been unpublished."
        try:
            self._vcsim("/destroy", {"vm": moref})
        except RecoveryError as err:
            if err.status != 404:  # a VM someone already removed is gone either way
                with self._lock:
                    self._mounts[mount_id].update(state="Mounted", errorMessage=f"Unmount failed: {err.message}")
                    self._finish_session(session_id, "Failed", f"Failed to unpublish the VM: {err.message}")
                return
            message = f"The VM was already removed from vCenter ({err.message})."
        with self._lock:
            self._mounts.pop(mount_id, None)
            self._extra[mount_id]["unmounted"] = _now()
            self._finish_session(session_id, "Success", message)

    # -- plumbing -----------------------------------------------------------------------

    def _run(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _vcsim(self, path: str, payload: dict) -> dict:
        req = urllib.request.Request(f"{self.vcsim}{path}", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            try:
                message = json.loads(body).get("error", body)
            except (ValueError, AttributeError):
                message = body
            raise RecoveryError(err.code, "UnknownError", f"vCenter: {message}") from None
        except (OSError, ValueError) as err:
            raise RecoveryError(503, "UnknownError", f"vCenter is unreachable: {err}") from None

    def wait_idle(self, timeout: float = 30) -> None:
        """Join the background vCenter calls (used at shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
