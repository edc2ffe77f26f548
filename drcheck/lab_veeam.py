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
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from drcheck.lab_process import LabControlError, LabError, LabProcess

from drcheck.lab_vcsim import TestCA, project_root

SERVER = "tests/peers/veeam/server.py"
READY_PREFIX = "VEEAM_URL="
API_VERSION = "1.1-rev1"


class VeeamReplayError(LabError):
    """The replay could not be started or reached."""


class VeeamControlError(LabControlError, VeeamReplayError):
    """The control API answered with an error status; `status` is the HTTP code."""

    service = "veeam replay"


class VeeamReplay(LabProcess):
    """One replay process: a context manager; `start()` returns when it is ready.

    The first start binds free ports (port 0) and reads them from the ready lines; `restart()`
    reuses them so a client's URL stays valid. `stop()` always ends the process (SIGTERM, then
    SIGKILL after 10 s) and is safe to call twice. `scenario` is the JSON scenario (a dict);
    `tls` a `drcheck.lab_vcsim.TestCA` (None: plain HTTP, for tests of a misconfigured client).
    """

    name, log_name, ready_prefix = "the Veeam replay", "veeam", READY_PREFIX
    error, control_error = VeeamReplayError, VeeamControlError

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
    def port(self) -> int:
        return self._port

    def command(self) -> list[str]:
        path = self.workdir / "veeam-scenario.json"
        path.write_text(json.dumps(self.scenario, indent=1))
        secret = self.workdir / "veeam-password"  # never an argument: process listings show those
        secret.touch(mode=0o600)
        secret.write_text(self.password + "\n")
        args = [sys.executable, str(self.server_path), "--listen", f"127.0.0.1:{self._port}",
                "--control", f"127.0.0.1:{self._control_port}", "--scenario", str(path),
                "--username", self.username, "--password-file", str(secret),
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
        self._spawn()
        return self

    def _environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def _ready(self, line: str) -> None:
        from urllib.parse import urlsplit

        self.url = line[len(READY_PREFIX):].strip()
        self._port = urlsplit(self.url).port or 0

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
