"""The guest of a sandbox VM: its state (power, tools, heartbeat, IP), a program run
through guest operations, and a console screenshot downloaded over the session. A mixin
of `drcheck.clients.vsphere_vm.VCenter` (uses its `props`, `wait`, `si`, `endpoint`)."""

from __future__ import annotations

import hashlib
import http.client
import re
import ssl
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

from drcheck.clients.vsphere import VSphereError

DATASTORE_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\] ?(?P<path>.*)$")
GUEST_POLL = (0.05, 1.0)  # first and longest pause between polls of a guest process (seconds)


class GuestLoginRefused(VSphereError):
    """The guest refused the credentials of a guest operation."""


class NotOffered(VSphereError):
    """The API does not offer this operation here (e.g. screenshots)."""


@dataclass(frozen=True)
class Guest:
    power_state: str
    tools_running: str | None
    heartbeat: str | None
    ip: str | None


class GuestOps:
    """Guest state, guest programs and screenshots (mixed into VCenter)."""

    def guest(self, vm: Any) -> Guest:
        p = self.props(vm, "runtime.powerState", "guest.toolsRunningStatus", "guestHeartbeatStatus",
                       "guest.ipAddress")
        return Guest(str(p.get("runtime.powerState")), p.get("guest.toolsRunningStatus"),
                     p.get("guestHeartbeatStatus"), p.get("guest.ipAddress"))

    def run_in_guest(self, vm: Any, user: str, password: str, program: str, arguments: str,
                     timeout: float) -> int | None:
        """Run `program` in the guest; return its exit code, None if still running after
        `timeout` seconds. Raise GuestLoginRefused for refused credentials."""
        from pyVmomi import vim

        manager = self.props(self.content.guestOperationsManager, "processManager")["processManager"]
        auth = vim.vm.guest.NamePasswordAuthentication(username=user, password=password, interactiveSession=False)
        spec = vim.vm.guest.ProcessManager.ProgramSpec(programPath=program, arguments=arguments)
        limit, pause = time.monotonic() + timeout, GUEST_POLL[0]
        with self._api(f"run {program} in the guest"):
            try:
                pid = manager.StartProgramInGuest(vm=vm, auth=auth, spec=spec)
                while time.monotonic() < limit:
                    ended = [p for p in manager.ListProcessesInGuest(vm=vm, auth=auth, pids=[pid]) or [] if p.endTime]
                    if ended:  # an exit code of 0 may be left out of the answer (optional int)
                        return ended[0].exitCode or 0
                    time.sleep(pause)
                    pause = min(pause * 2, GUEST_POLL[1])
            except vim.fault.InvalidGuestLogin:
                raise GuestLoginRefused(f"the guest refused the login of {user!r}") from None
        return None

    def screenshot(self, vm: Any, datacenter: str, dest: Path) -> Path:
        """Save a screenshot of `vm`'s console to `dest`; raise NotOffered when the API
        does not offer one for it."""
        from pyVmomi import vmodl

        with self._api("take a screenshot"):
            try:
                task = vm.CreateScreenshot_Task()
            except (vmodl.fault.NotSupported, vmodl.fault.MethodNotFound):
                raise NotOffered("this vCenter offers no console screenshots") from None
        try:
            where = self.wait(task, "take a screenshot")
        except VSphereError as exc:
            if "NotSupported" in str(exc):
                raise NotOffered(f"no console screenshot of this VM: {exc}") from None
            raise
        match = DATASTORE_PATH.match(str(where or ""))
        if not match:
            raise NotOffered(f"the screenshot is at {where!r}, not on a datastore")
        url = f"/folder/{quote(match['path'])}?dcPath={quote(datacenter)}&dsName={quote(match['ds'])}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._api("download the screenshot"):
            dest.write_bytes(self._download(url))
        return dest

    # -- helpers --------------------------------------------------------------------------

    def _download(self, url: str) -> bytes:
        """GET `url` from vCenter's HTTPS file service with this session's cookie,
        trusting the certificate the way the SOAP session does (CA, pin or insecure)."""
        cookie = SimpleCookie(getattr(self.si._stub, "cookie", "") or "")
        header = "; ".join(f"{k}={v.value}" for k, v in cookie.items())
        context = self.endpoint.ssl_context()
        if self.endpoint.thumbprint:  # a pinned certificate no CA vouches for: compare it below
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        scheme = "https" if self.endpoint.url.startswith("https") else "http"
        conn = (http.client.HTTPSConnection(self.endpoint.host, self.endpoint.port, context=context,
                                            timeout=self.endpoint.timeout) if scheme == "https" else
                http.client.HTTPConnection(self.endpoint.host, self.endpoint.port, timeout=self.endpoint.timeout))
        try:
            conn.connect()
            if self.endpoint.thumbprint:
                _check_pin(conn.sock.getpeercert(binary_form=True), self.endpoint.thumbprint)
            conn.request("GET", url, headers={"Cookie": header})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise VSphereError(f"vCenter {self.endpoint.url}: download {url}: HTTP {response.status}")
        return body


def _check_pin(der: bytes, pinned: str) -> None:
    wanted = pinned.replace(":", "").lower()
    algorithm = {40: "sha1", 64: "sha256", 128: "sha512"}.get(len(wanted), "sha256")
    if hashlib.new(algorithm, der).hexdigest() != wanted:
        raise VSphereError("certificate does not match the pinned thumbprint")
