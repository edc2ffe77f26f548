"""Run the project's Veeam Backup & Replication REST API replay (`tests/peers/veeam/server.py`)
as its own process, and build scenarios for it (small ones by hand, large ones for the bench).

Used by the e2e fixtures (`tests/e2e/veeam_fixtures.py`) and `bench/`. The server's API
version, endpoints, scenario format and control API are documented in
`tests/peers/veeam/README.md`. Nothing here speaks the REST API itself: callers test their
own client against `.url`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from drcheck.lab_vcsim import TestCA, project_root

SERVER = "tests/peers/veeam/server.py"
READY_PREFIX = "VEEAM_URL="
CONTROL_PREFIX = "CONTROL="
API_VERSION = "1.1-rev1"


class VeeamReplayError(RuntimeError):
    """The replay could not be started or reached."""


class VeeamControlError(VeeamReplayError):
    """The control API answered with an error status; `status` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(f"veeam replay control API: HTTP {status}: {message}")
        self.status = status
        self.message = message


class VeeamReplay:
    """One replay process: a context manager; `start()` returns when it is ready.

    The first start binds free ports (port 0) and reads them from the ready lines; `restart()`
    reuses them so a client's URL stays valid. `stop()` always ends the process (SIGTERM, then
    SIGKILL after 10 s) and is safe to call twice. `scenario` is the JSON scenario (a dict);
    `tls` a `drcheck.lab_vcsim.TestCA` (None: plain HTTP, for tests of a misconfigured client).
    """

    def __init__(self, workdir: Path, *, scenario: dict | None = None, tls: TestCA | None = None,
                 username: str = "drcheck", password: str = "lab-secret", token_lifetime: float = 900,
                 port: int = 0, vcsim_control_url: str | None = None, start_timeout: float = 30,
                 server_path: Path | None = None):
        self.workdir = Path(workdir)
        self.scenario = scenario if scenario is not None else {}
        self.tls = tls
        self.username = username
        self.password = password
        self.token_lifetime = token_lifetime
        self.vcsim_control_url = vcsim_control_url
        self.start_timeout = start_timeout
        self.server_path = Path(server_path) if server_path else project_root() / SERVER
        self._port = port
        self._control_port = 0
        self._proc: subprocess.Popen | None = None
        self._stderr_file = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        self.url = ""
        self.control_url = ""

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "veeam.stderr"

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        path = self.workdir / "veeam-scenario.json"
        path.write_text(json.dumps(self.scenario, indent=1))
        args = [sys.executable, str(self.server_path), "--listen", f"127.0.0.1:{self._port}",
                "--control", f"127.0.0.1:{self._control_port}", "--scenario", str(path),
                "--username", self.username, "--password", self.password,
                "--token-lifetime", str(self.token_lifetime)]
        if self.tls is not None:
            args += ["--cert", str(self.tls.cert), "--key", str(self.tls.key)]
        if self.vcsim_control_url:
            args += ["--vcsim-control", self.vcsim_control_url]
        return args

    def start(self) -> "VeeamReplay":
        """Start the process and wait for its ready line; raise VeeamReplayError (with the tail
        of its stderr) if it exits or is not ready within `start_timeout` seconds."""
        if self.running:
            return self
        if not self.server_path.is_file():
            raise VeeamReplayError(f"no replay server at {self.server_path} (it lives in the source tree)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = self.command()
        began = time.monotonic()
        self._stderr_file = open(self.stderr_path, "ab")
        self._lines = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                                      stderr=self._stderr_file, cwd=self.workdir, start_new_session=True)
        self._reader = threading.Thread(target=self._read_stdout, args=(self._proc,), daemon=True)
        self._reader.start()
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self._lines.append(raw.decode(errors="replace").rstrip("\n"))

    def _wait_ready(self, began: float) -> None:
        from urllib.parse import urlsplit

        while True:
            for line in list(self._lines):
                if line.startswith(CONTROL_PREFIX):
                    self.control_url = line[len(CONTROL_PREFIX):].strip()
                    self._control_port = urlsplit(self.control_url).port or 0
                if line.startswith(READY_PREFIX):
                    self.url = line[len(READY_PREFIX):].strip()
                    self._port = urlsplit(self.url).port or 0
                    return
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise VeeamReplayError(f"the Veeam replay exited with status {self._proc.returncode} before it was "
                                       f"ready:\n{self.stderr_tail()}")
            if time.monotonic() - began > self.start_timeout:
                raise VeeamReplayError(f"the Veeam replay was not ready after {self.start_timeout:.0f} s:\n"
                                       f"{self.stderr_tail()}")
            time.sleep(0.02)

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(stderr is empty)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def restart(self) -> "VeeamReplay":
        """A new process on the same ports (tokens and mounts are not kept)."""
        self.stop()
        return self.start()

    def __enter__(self) -> "VeeamReplay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- control API --------------------------------------------------------------------

    def control(self, path: str, payload: Any = None, timeout: float = 30) -> Any:
        """GET `path` (payload None) or POST it as JSON; the decoded answer. Raises
        VeeamControlError on an error status."""
        if not self.control_url:
            raise VeeamReplayError("the replay is not started")
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.control_url + path, data=data, method="GET" if data is None else "POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            try:
                message = json.loads(body).get("error", body)
            except (ValueError, AttributeError):
                message = body
            raise VeeamControlError(err.code, message) from None

    def outage(self, mode: str) -> None:
        """`refuse` (connections closed without a response), `hang` or `none`."""
        self.control("/outage", {"mode": mode})

    def set_scenario(self, scenario: dict) -> dict:
        """Replace the scenario (ages are counted from now); tokens and mounts are kept."""
        self.scenario = scenario
        return self.control("/scenario", scenario)

    def requests(self) -> list[dict]:
        return self.control("/requests")

    def mounts(self) -> list[dict]:
        return self.control("/mounts")


# -- scenarios ------------------------------------------------------------------------------


def large_scenario(vms: int = 1000, points: int = 30, *, copy: bool = True, every: str = "24h",
                   newest: str = "6h", infected_every: int = 0, failed_every: int = 0,
                   vm_prefix: str = "vm", vcenter: str = "vcenter01.lab.local") -> dict:
    """A benchmark-sized scenario: `vms` VMs (`vm0000`...) in jobs of 100, `points` restore
    points each (one every `every`, the newest `newest` old), optionally a backup copy job per
    backup job with the same points 2 h later. `infected_every=N` marks the newest point of
    every Nth VM Infected; `failed_every=N` makes every Nth job's last session Failed."""
    width = max(4, len(str(vms - 1)))
    names = [f"{vm_prefix}{i:0{width}d}" for i in range(vms)]
    scenario: dict[str, Any] = {
        "vcenter": {"host": vcenter},
        "repositories": [{"name": "Default Backup Repository"}, {"name": "Offsite Repository"}],
        "vms": [{"name": n, "moref": f"vm-{10000 + i}"} for i, n in enumerate(names)],
        "jobs": [],
    }
    for j, start in enumerate(range(0, vms, 100)):
        chunk = names[start:start + 100]
        objects = []
        for k, name in enumerate(chunk):
            spec: dict[str, Any] = {"count": points, "every": every, "newest": newest}
            if infected_every and (start + k) % infected_every == 0:
                spec["malware"] = {"0": "Infected"}
            objects.append({"vm": name, "points": spec})
        failed = bool(failed_every) and j % failed_every == 0
        last = {"age": newest, "result": "Failed" if failed else "Success",
                "message": "Error: Failed to create VM snapshot" if failed else ""}
        scenario["jobs"].append({"name": f"Backup Job {j:02d}", "objects": objects,
                                 "sessions": [{"age": "30h", "result": "Success"}, last]})
        if copy:
            scenario["jobs"].append({
                "name": f"Backup Copy Job {j:02d}", "type": "BackupCopy", "source_job": f"Backup Job {j:02d}",
                "repository": "Offsite Repository",
                "objects": [{"vm": n, "points": {"count": points, "every": every, "newest": _later(newest, 2)}}
                            for n in chunk],
                "sessions": [{"age": _later(newest, 2), "result": "Success"}]})
    return scenario


def _later(age: str, hours: int) -> str:
    """An age `hours` smaller (a copy made later), never below 1 h: '6h' -> '4h'."""
    if age.endswith("h") and age[:-1].isdigit():
        return f"{max(1, int(age[:-1]) - hours)}h"
    return age
