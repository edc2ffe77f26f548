"""A lab peer program run as a child process (the vCenter simulator, the Veeam replay):
started, read until it says it is ready, driven through its JSON control API, and always
stopped. Subclasses say how to start it (`command()`, `_environment()`) and what its
ready line means (`_ready(line)`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CONTROL_PREFIX = "CONTROL="


class LabError(RuntimeError):
    """A lab peer could not be built, started or reached."""


class LabControlError(LabError):
    """A lab peer's control API answered with an error status; `status` is the HTTP code."""

    service = "lab peer"

    def __init__(self, status: int, message: str):
        super().__init__(f"{self.service} control API: HTTP {status}: {message}")
        self.status = status
        self.message = message


class LabProcess:
    """One process of a lab peer. It prints `CONTROL=<url>` (its control API) and then a
    line starting with `ready_prefix` when it serves; `_ready(line)` reads that line.
    `error` is raised (with the tail of its stderr) when it exits or is not ready within
    `start_timeout` seconds; `control_error(status, message)` on a control API error."""

    name = "lab process"
    ready_prefix = ""
    error: type[Exception] = LabError
    control_error: type[LabControlError] = LabControlError

    workdir: Path
    start_timeout: float
    control_url: str = ""
    _control_port: int = 0
    _proc: subprocess.Popen | None = None
    _reader: threading.Thread | None = None
    _stderr_file: Any = None

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.log_name}.stderr"

    log_name = "process"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _ready(self, line: str) -> None:
        raise NotImplementedError

    def _spawn(self) -> float:
        """Start the process and wait until it is ready; return the start's monotonic time.
        Stops it again on any failure."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = self.command()
        began = time.monotonic()
        self._stderr_file = open(self.stderr_path, "ab")
        self._lines: list[str] = []
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      env=self._environment(), stderr=self._stderr_file, cwd=self.workdir,
                                      start_new_session=True)
        self._reader = threading.Thread(target=self._read_stdout, args=(self._proc,), daemon=True)
        self._reader.start()
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        return began

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
                if line.startswith(self.ready_prefix):
                    self._ready(line)
                    return
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise self.error(f"{self.name} exited with status {self._proc.returncode} before it was ready:\n"
                                 f"{self.stderr_tail()}")
            if time.monotonic() - began > self.start_timeout:
                raise self.error(f"{self.name} was not ready after {self.start_timeout:.0f} s:\n"
                                 f"{self.stderr_tail()}")
            time.sleep(0.02)

    def stderr_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote to stderr (its log)."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return "\n".join(text.splitlines()[-lines:]) or "(stderr is empty)"

    def stop(self) -> None:
        """End the process (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
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
        self._stopped()

    def _stopped(self) -> None:
        """Remove what the process leaves behind when it cannot (it was killed)."""

    def restart(self):
        """A new process on the same ports (nothing of the old one's state is kept)."""
        self.stop()
        return self.start()

    def start(self):
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def control(self, path: str, payload: Any = None, timeout: float = 30) -> Any:
        """Call the control API: GET without payload, POST with it as JSON. Return the
        decoded answer; raise `control_error(status, message)` on an error status."""
        if not self.control_url:
            raise self.error(f"{self.name} is not running")
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.control_url + "/" + path.lstrip("/"), data=data,
                                         method="GET" if payload is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            try:
                message = json.loads(body).get("error", body)
            except (ValueError, AttributeError):
                message = body
            raise self.control_error(err.code, message) from None

    def outage(self, mode: str, after: int | None = None) -> None:
        """`refuse` (connections closed without a response), `hang` or `none`; `hang` with
        `after` starts holding requests once `after` more were served (the Veeam replay)."""
        self.control("/outage", {"mode": mode} if after is None else {"mode": mode, "after": after})
