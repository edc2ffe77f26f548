"""Run a throwaway, unprivileged Dovecot (Debian's `dovecot-imapd`) on 127.0.0.1: the IMAP
server the Barracuda tests, the demo and the benchmark read report e-mails from.

Everything lives in one work directory: the configuration, a passwd-file of users, the
maildirs (`mail/<user>/`, folders as Maildir++ `.Name/`), the log, and a fresh state
directory for every start. The sockets live in a fresh short-named base directory under
the system's temp directory, removed at stop (a socket path must fit 108 bytes, and a
directory a previous instance left behind can hold sockets a new start cannot reuse).
TLS uses a certificate from a test CA (`drcheck.lab_vcsim.make_test_ca`); the IMAPS port
speaks TLS at once, the IMAP port offers STARTTLS (and refuses plain-text logins before it).

Run as root (the test machines), Dovecot refuses to run its login and mail processes as
root: they run as Debian's `dovenull` and `dovecot` accounts, which then own the maildirs,
and the work directory's ancestors get the search bit (x, never read) for others.

Messages are delivered the way an MTA does it: written to `tmp/`, renamed into `new/`.
Dovecot gives them UIDs, in file-name order, when a client next opens the folder.

Nothing here imports an IMAP client library: callers connect with whatever they test.
"""

from __future__ import annotations

import email.message
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

from drcheck.lab_vcsim import TestCA


class DovecotError(OSError):
    """Dovecot is missing, could not start, or a `doveadm` command failed (an OSError, as
    a service that cannot start is for the demo)."""


def dovecot_binary() -> str:
    """The `dovecot` program: on PATH, else Debian's /usr/sbin/dovecot."""
    found = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None)
    if found is None:
        raise DovecotError("dovecot is missing: apt-get install --no-install-recommends dovecot-imapd "
                           "(make test and make demo install it)")
    return found


def doveadm_binary() -> str:
    found = shutil.which("doveadm") or ("/usr/bin/doveadm" if os.access("/usr/bin/doveadm", os.X_OK) else None)
    if found is None:
        raise DovecotError("doveadm is missing: apt-get install dovecot-core")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_accounts() -> tuple[str, str, int, int]:
    """(user, group) Dovecot's internal processes run as, and (uid, gid) owning the mail:
    the running user, or for root (which Dovecot refuses for both) Debian's `dovecot`
    account."""
    if os.geteuid() != 0:
        return (pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name, os.getuid(), os.getgid())
    try:
        account, _ = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
    except KeyError:
        raise DovecotError("running as root needs the dovecot and dovenull accounts dovecot-core creates") from None
    return "dovecot", grp.getgrgid(account.pw_gid).gr_name, account.pw_uid, account.pw_gid


# As root the work directory is root's; auth reads the passwd-file there, so it stays root.
_AS_ROOT = ["service auth {", "  user = root", "}", "service auth-worker {", "  user = root", "}"]


def _traversable(path: Path) -> None:
    """As root, let the mail owner (an unprivileged account) reach `path`: add the
    search bit (x, never read) for others to each ancestor that lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod((mode & 0o7777) | 0o001)


MessageLike = bytes | str | email.message.Message


def _as_bytes(message: MessageLike) -> bytes:
    if isinstance(message, email.message.Message):
        message = message.as_bytes()
    elif isinstance(message, str):
        message = message.encode()
    return message.replace(b"\r\n", b"\n")  # maildir files use LF; Dovecot sends CRLF


class Dovecot:
    """One Dovecot instance: a context manager; `start()` returns once the IMAPS port
    accepts connections. `users` maps user names to passwords. Ports given as 0 are picked
    free on the first start and kept, so `restart()` serves the same addresses.

    `port` is IMAPS (TLS from the first byte), `starttls_port` plain IMAP with STARTTLS."""

    def __init__(self, workdir: Path, *, tls: TestCA, users: dict[str, str], port: int = 0,
                 starttls_port: int = 0, start_timeout: float = 30):
        self.workdir = Path(workdir)
        self.tls = tls
        self.users = dict(users)
        self.port = port
        self.starttls_port = starttls_port
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None
        self._base: Path | None = None
        self._starts = 0
        self._delivered = 0

    host = "127.0.0.1"

    # -- layout ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "dovecot.log"

    def mail_root(self, user: str) -> Path:
        return self.workdir / "mail" / user

    def folder_path(self, user: str, folder: str = "INBOX") -> Path:
        """The maildir of `folder` (INBOX is the user's root; others are `.Name`, Maildir++)."""
        root = self.mail_root(user)
        return root if folder.upper() == "INBOX" else root / ("." + folder.replace("/", "."))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _config(self, run: Path, base: Path) -> str:
        user, group, uid, gid = _service_accounts()
        login_user = "dovenull" if os.geteuid() == 0 else user
        w = self.workdir
        return "\n".join([
            f"base_dir = {base}",
            f"state_dir = {run}/state",
            f"log_path = {self.log_path}",
            "protocols = imap",
            "listen = 127.0.0.1",
            f"default_internal_user = {user}",
            f"default_internal_group = {group}",
            f"default_login_user = {login_user}",
            f"first_valid_uid = {uid}",
            f"first_valid_gid = {gid}",
            "ssl = yes",
            f"ssl_cert = <{self.tls.cert}",
            f"ssl_key = <{self.tls.key}",
            "disable_plaintext_auth = yes",
            f"mail_location = maildir:{w}/mail/%u",
            "mail_fsync = never",
            "maildir_very_dirty_syncs = yes",  # only Dovecot changes cur/ (deliveries go to new/)
            "auth_failure_delay = 0",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {w}/users",
            "}",
            "userdb {",
            "  driver = static",
            f"  args = uid={uid} gid={gid} home={w}/home/%u",
            "}",
            "service imap-login {",
            "  chroot =",
            # Dovecot's high-performance login mode, as busy production servers run it: one
            # login process serves every connection instead of a fresh one (~15 ms) per session
            "  service_count = 0",
            "  process_min_avail = 1",
            f"  inet_listener imap {{\n    address = 127.0.0.1\n    port = {self.starttls_port}\n  }}",
            f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.port}\n    ssl = yes\n  }}",
            "}",
            "service anvil {",
            "  chroot =",
            "}",
            *(_AS_ROOT if os.geteuid() == 0 else []),
            "",
        ])

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> "Dovecot":
        """Write the configuration (a fresh base/state directory) and start Dovecot in the
        foreground as a child; return when the IMAPS port accepts. Raise DovecotError with
        the log's tail when it exits or is not ready within `start_timeout` seconds."""
        if self.running:
            return self
        binary = dovecot_binary()
        self.port = self.port or free_port()
        self.starttls_port = self.starttls_port or free_port()
        self._starts += 1
        run = self.workdir / f"run{self._starts}"
        shutil.rmtree(run, ignore_errors=True)
        (run / "state").mkdir(parents=True)
        # sockets live in base_dir, whose paths must fit a socket address (108 bytes)
        self._base = Path(tempfile.mkdtemp(prefix="drcheck-imap-"))
        self._own(self.workdir / "home")
        if os.geteuid() == 0:
            _traversable(self.workdir)
        users = self.workdir / "users"
        users.write_text("".join(f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()))
        users.chmod(0o600)
        for name in self.users:
            self.create_folder(name, "INBOX")
        self.config_path.write_text(self._config(run, self._base))
        began = time.monotonic()
        with open(self.workdir / "dovecot.stderr", "ab") as stderr:
            self._proc = subprocess.Popen([binary, "-F", "-c", str(self.config_path)], stdin=subprocess.DEVNULL,
                                          stdout=stderr, stderr=stderr, start_new_session=True)
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise DovecotError(f"dovecot exited with status {code} before it was ready:\n{self.log_tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return self
            except OSError:
                pass
            if time.monotonic() - began > self.start_timeout:
                self.stop()
                raise DovecotError(f"dovecot did not accept on port {self.port} after {self.start_timeout:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (SIGKILL to its process group after 10 s); safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def restart(self) -> "Dovecot":
        self.stop()
        return self.start()

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.log_path, self.workdir / "dovecot.stderr"):
            try:
                texts += path.read_text(errors="replace").splitlines()
            except OSError:
                continue
        return "\n".join(texts[-lines:]) or "(no log)"

    # -- mailboxes ------------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        """Create directory `path` (and parents up to the work directory), owned by the
        mail owner."""
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            *_, uid, gid = _service_accounts()
            for p in [path, *path.parents]:
                if p == self.workdir or self.workdir not in p.parents:
                    break
                os.chown(p, uid, gid)

    def create_folder(self, user: str, folder: str) -> Path:
        """Create a maildir folder (no server needed); return its path."""
        path = self.folder_path(user, folder)
        for sub in ("cur", "new", "tmp"):
            self._own(path / sub)
        if path != self.mail_root(user):
            (path / "maildirfolder").touch()
        return path

    def deliver(self, user: str, messages: Iterable[MessageLike], folder: str = "INBOX") -> int:
        """Deliver messages (RFC 5322 bytes, text or `email.message.Message`) into a folder
        in the given order, as an MTA does (tmp/, then a rename into new/); return how many.
        Works whether or not the server runs."""
        path = self.create_folder(user, folder)
        tmp, new = path / "tmp", path / "new"
        stamp, pid, count = int(time.time()), os.getpid(), 0
        for message in messages:
            self._delivered += 1
            name = f"{stamp}.M{self._delivered:09d}P{pid}.drcheck-lab"
            (tmp / name).write_bytes(_as_bytes(message))
            os.rename(tmp / name, new / name)
            count += 1
        return count

    def message_files(self, user: str, folder: str = "INBOX") -> list[Path]:
        """The message files of a folder (new/ and cur/): what is in it, server or not."""
        path = self.folder_path(user, folder)
        return sorted(p for sub in ("new", "cur") if (path / sub).is_dir() for p in (path / sub).iterdir())

    def doveadm(self, *args: str, timeout: float = 60) -> str:
        """Run `doveadm -c CONFIG ARGS…` (the server must be running); return its stdout."""
        proc = subprocess.run([doveadm_binary(), "-c", str(self.config_path), *args], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise DovecotError(f"doveadm {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def pin_uidvalidity(self, user: str, value: int, folder: str = "INBOX") -> None:
        """Set the folder's UIDVALIDITY (default: its creation time): tests pin it to
        see a change, or to keep it across re-created mailboxes."""
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        out = self.doveadm("-f", "flow", "mailbox", "status", "-u", user, "uidvalidity", folder)
        return int(out.split("uidvalidity=")[1].split()[0])
