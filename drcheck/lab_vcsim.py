"""Build and run the project's vCenter simulator (`tests/peers/vcsim`, Go, govmomi 0.24).

Used by the e2e fixtures, `drcheck demo` and `bench/`. Nothing here imports pyvmomi: callers
connect with whatever client they test. The simulator's flags, generated inventory names and
control API are documented in `tests/peers/vcsim/README.md`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from drcheck.lab_process import LabControlError, LabError, LabProcess

GO_PACKAGE = "tests/peers/vcsim"
SYSTEM_GOPATH = "/usr/share/gocode"  # Debian's golang-github-vmware-govmomi-dev lives here
READY_PREFIX = "export GOVC_URL="


class VcsimError(LabError):
    """The simulator could not be built, started or reached."""


class VcsimControlError(LabControlError, VcsimError):
    """The control API answered with an error status; `status` is the HTTP code."""

    service = "vcsim"


def project_root() -> Path:
    """The checkout this module belongs to (holds `tests/peers/vcsim` and `var/`)."""
    return Path(__file__).resolve().parent.parent


def _sources(root: Path) -> list[Path]:
    return sorted((root / GO_PACKAGE).glob("*.go"))


def _stale(target: Path, sources: list[Path]) -> bool:
    if not target.exists():
        return True
    built = target.stat().st_mtime
    return any(src.stat().st_mtime > built for src in sources)


def binary(root: Path | None = None) -> Path:
    """Path of the simulator binary: `$DRCHECK_VCSIM` if set, else `ROOT/var/bin/vcsim`, built
    (offline, GOPATH mode) when missing or older than its Go sources. Concurrent callers (xdist
    workers) build once: the build holds a lock and renames the result into place."""
    override = os.environ.get("DRCHECK_VCSIM")
    if override:
        path = Path(override)
        if not path.is_file():
            raise VcsimError(f"DRCHECK_VCSIM={override} is not a file")
        return path
    root = Path(root) if root is not None else project_root()
    target = root / "var" / "bin" / "vcsim"
    sources = _sources(root)
    if not sources:
        if target.exists():
            return target  # an installed drcheck without the test tree: use what was built
        raise VcsimError(f"no simulator sources in {root / GO_PACKAGE} and no binary at {target}")
    if not _stale(target, sources):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".vcsim.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stale(target, sources):  # another worker may have built it while we waited
            _build(root, target)
    return target


def _build(root: Path, target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise VcsimError("the Go toolchain is missing: apt-get install golang-go golang-github-vmware-govmomi-dev "
                         "(make test and make demo install them)")
    if not Path(SYSTEM_GOPATH, "src/github.com/vmware/govmomi/simulator").is_dir():
        raise VcsimError(f"govmomi sources are missing under {SYSTEM_GOPATH}: "
                         "apt-get install golang-github-vmware-govmomi-dev")
    var = root / "var"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{var / 'gopath'}:{SYSTEM_GOPATH}",
        "GOFLAGS": "",
        "GOPROXY": "off",  # offline: everything comes from the Debian packages
    }
    if not (os.environ.get("GOCACHE") or os.environ.get("XDG_CACHE_HOME") or os.environ.get("HOME")):
        env["GOCACHE"] = str(var / "gocache")  # go refuses to build without a cache directory
    partial = target.with_name(f".vcsim.{os.getpid()}.tmp")
    proc = subprocess.run([go, "build", "-o", str(partial), f"./{GO_PACKAGE}"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise VcsimError(f"building the simulator failed:\n{proc.stderr.strip()[-4000:]}")
    os.replace(partial, target)


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA (`ca`, PEM) and a server certificate it signed (`cert`, `key`) for
    127.0.0.1 and localhost."""

    __test__ = False  # not a pytest test class despite the name

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise VcsimError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def make_test_ca(directory: Path) -> TestCA:
    """Create a CA and a server certificate (SAN IP:127.0.0.1, DNS:localhost) in `directory`
    with the openssl CLI; files: ca.pem, ca.key, server.pem, server.key."""
    if shutil.which("openssl") is None:
        raise VcsimError("openssl is missing: apt-get install openssl")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "3650", "-subj", "/CN=drcheck test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "825", "-extfile", "server.ext", cwd=d)
    for name in ("ca.key", "server.key"):
        (d / name).chmod(0o600)
    return TestCA(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


def certificate_thumbprint(host: str, port: int, timeout: float = 10) -> str:
    """SHA-256 of the certificate served at host:port, as vSphere prints it (`AB:CD:…`)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _fast_tmp(fallback: Path) -> Path:
    """A RAM-backed directory for the simulated datastores when there is one: on a disk,
    creating the files of 5,000 VMs takes several times longer (system time)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return fallback


class Simulator(LabProcess):
    """One simulator process: a context manager; `start()` returns when it is ready.

    The first start lets the simulator pick free ports (no race with other processes) and
    reads them from its ready lines; `restart()` starts a new process (nothing kept) on the
    same ports, so a client's URL stays valid. `stop()` always ends the process."""

    name, log_name, ready_prefix = "vcsim", "vcsim", READY_PREFIX
    error, control_error = VcsimError, VcsimControlError

    def __init__(self, workdir: Path, *, scenario: dict | None = None, dc: int = 1, cluster: int = 1,
                 host: int = 2, ds: int = 1, vm: int = 0, delay_ms: int = 0, boot_delay: str = "1s",
                 username: str = "drcheck", password: str = "lab-secret", tls: TestCA | None = None,
                 extra_args: tuple[str, ...] | list[str] = (), standalone_host: int = 0, pg: int = 1,
                 autostart: bool = True, guest_user: str = "lab", guest_password: str = "lab",
                 start_timeout: float = 180, binary_path: Path | None = None, port: int = 0):
        self.workdir = Path(workdir)
        self.scenario = scenario
        self.username = username
        self.password = password
        self.tls = tls
        self.guest_user = guest_user
        self.guest_password = guest_password
        self.start_timeout = start_timeout
        self._binary = Path(binary_path) if binary_path else None
        self._args = [
            "-dc", str(dc), "-cluster", str(cluster), "-host", str(host), "-ds", str(ds), "-vm", str(vm),
            "-standalone-host", str(standalone_host), "-pg", str(pg), f"-autostart={str(autostart).lower()}",
            "-delay", str(delay_ms), "-boot-delay", boot_delay,
            "-username", username, "-password", password,
            "-guest-user", guest_user, "-guest-password", guest_password,
            *extra_args,
        ]
        self.datastore_root: Path | None = None  # where this process's datastores live
        self._port = port  # 0: the simulator picks a free one (a configuration naming a URL gives its port)
        self._control_port = 0
        self._proc: subprocess.Popen | None = None
        self._stderr_file = None
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        self.url = ""
        self.control_url = ""
        self.thumbprint = ""
        self.startup_seconds = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._port

    def command(self) -> list[str]:
        """The command line the next start runs."""
        exe = self._binary or binary()
        args = [str(exe), "-l", f"127.0.0.1:{self._port}", "-control", f"127.0.0.1:{self._control_port}",
                *self._args]
        if self.tls is not None:
            args += ["-cert", str(self.tls.cert), "-key", str(self.tls.key)]
        if self.scenario is not None:
            path = self.workdir / "scenario.json"
            path.write_text(json.dumps(self.scenario, indent=2))
            args += ["-scenario", str(path)]
        return args

    def start(self) -> "Simulator":
        """Start the process and wait for its ready line; raise VcsimError (with the tail of
        its stderr) if it exits or is not ready within `start_timeout` seconds."""
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.datastore_root = Path(tempfile.mkdtemp(prefix="drcheck-vcsim-", dir=_fast_tmp(self.workdir)))
        began = self._spawn()
        self.startup_seconds = time.monotonic() - began
        self.thumbprint = certificate_thumbprint(self.host, self._port) if self.url.startswith("https") else ""
        return self

    def _environment(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.datastore_root)}  # the library makes its datastores there

    def _ready(self, line: str) -> None:
        from urllib.parse import urlsplit

        govc = urlsplit(line[len(READY_PREFIX):].split()[0])
        self._port = govc.port or 0
        self.url = f"{govc.scheme}://127.0.0.1:{self._port}/sdk"
        if self.control_url:
            self._control_port = urlsplit(self.control_url).port or 0

    def _stopped(self) -> None:
        if self.datastore_root is not None:
            # The simulator removes its datastores on SIGTERM, not when killed: make sure.
            shutil.rmtree(self.datastore_root, ignore_errors=True)
            self.datastore_root = None

    def power_log(self) -> list[dict]:
        """Every power-on so far, with the NIC states at that moment."""
        return self.control("/power-log")

    def calls(self) -> dict:
        """SOAP method name -> count since start (or the last `reset_calls()`)."""
        return self.control("/calls")

    def reset_calls(self) -> None:
        self.control("/calls/reset", {})
