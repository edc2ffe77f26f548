"""A throwaway SMTP server on 127.0.0.1 (aiosmtpd, in-process): where the tests and the demo
deliver report e-mails, stored as files.

Three listeners, each on a free port picked first (aiosmtpd cannot bind port 0):
- `port`: plain SMTP that offers STARTTLS and requires it before AUTH and mail;
- `tls_port`: TLS from the first byte (implicit TLS, "SMTPS");
- `plain_port`: clear text, AUTH allowed without TLS (only for `security = "none"` tests).
The certificate comes from a test CA (`drcheck.lab_vcsim.make_test_ca`; SAN IP:127.0.0.1,
DNS:localhost). AUTH (PLAIN, LOGIN) checks `users`, which may be changed while running
(a password change on the server). Every accepted message is written to
`maildir/<n>.eml` (written to a temporary name, then renamed) with the envelope in
`<n>.json`.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from drcheck.lab_imap import free_port
from drcheck.lab_vcsim import TestCA, make_test_ca


class SmtpLabError(OSError):
    """aiosmtpd is missing or a listener could not start."""


class _Handler:
    def __init__(self, lab: "SmtpLab"):
        self.lab = lab

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.lab._store(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content,
                        getattr(session, "authenticated", False))
        return "250 Message accepted for delivery"


class SmtpLab:
    """The server: a context manager. `start()` returns once every listener accepts."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, tls: TestCA | None = None,
                 auth_required: bool = True, port: int = 0, tls_port: int = 0, plain_port: int = 0):
        self.workdir = Path(workdir)
        self.maildir = self.workdir / "maildir"
        self.users = dict(users if users is not None else {"drcheck": "lab-password"})
        self.tls = tls
        self.auth_required = auth_required
        self.port, self.tls_port, self.plain_port = port, tls_port, plain_port  # 0: a free one, picked at start
        self.auth_attempts: list[tuple[str, bool]] = []  # (user, success); never the password
        self._controllers: list = []
        self._lock = threading.Lock()
        self._count = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> "SmtpLab":
        try:
            from aiosmtpd.controller import Controller
            from aiosmtpd.smtp import AuthResult
        except ImportError:
            raise SmtpLabError("aiosmtpd is missing: pip install -e '.[test]' (or make demo)") from None
        self.maildir.mkdir(parents=True, exist_ok=True)
        if self.tls is None:
            self.tls = make_test_ca(self.workdir / "tls")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(str(self.tls.cert), str(self.tls.key))

        def authenticate(server, session, envelope, mechanism, auth_data):
            user = auth_data.login.decode() if isinstance(auth_data.login, bytes) else str(auth_data.login)
            password = auth_data.password.decode() if isinstance(auth_data.password, bytes) else str(auth_data.password)
            ok = self.users.get(user) is not None and self.users.get(user) == password
            self.auth_attempts.append((user, ok))
            return AuthResult(success=ok, handled=False)

        handler = _Handler(self)
        common = dict(hostname="127.0.0.1", server_hostname="localhost", authenticator=authenticate,
                      auth_required=self.auth_required, ready_timeout=30)
        self.port = self.port or free_port()
        self.tls_port = self.tls_port or free_port()
        self.plain_port = self.plain_port or free_port()
        class _Controller(Controller):
            """AUTH without STARTTLS on the implicit-TLS and clear-text listeners, set after
            construction: aiosmtpd's constructor warns about it on every connection."""

            def __init__(self, *args, auth_without_starttls: bool = False, **kwargs):
                super().__init__(*args, **kwargs)
                self.auth_without_starttls = auth_without_starttls

            def factory(self):
                smtpd = super().factory()
                if self.auth_without_starttls:
                    smtpd._auth_require_tls = False
                return smtpd

        specs = [
            dict(port=self.port, tls_context=server_ctx, require_starttls=True),
            dict(port=self.tls_port, ssl_context=server_ctx, auth_without_starttls=True),  # TLS from the first byte
            dict(port=self.plain_port, auth_without_starttls=True),
        ]
        try:
            for spec in specs:
                controller = _Controller(handler, **common, **spec)
                controller.start()
                self._controllers.append(controller)
        except Exception as exc:
            self.stop()
            raise SmtpLabError(f"the lab SMTP server could not start: {type(exc).__name__}: {exc}") from None
        return self

    def stop(self) -> None:
        for controller in self._controllers:
            try:
                controller.stop()
            except Exception:  # noqa: BLE001 (stopping what half-started)
                pass
        self._controllers = []

    def __enter__(self) -> "SmtpLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- messages ---------------------------------------------------------------------------

    def _store(self, mail_from: str, rcpt_tos: list[str], raw: bytes, authenticated: bool) -> None:
        with self._lock:
            self._count += 1
            n = self._count
        tmp = self.maildir / f".{n}.eml.tmp"
        tmp.write_bytes(raw)
        os.replace(tmp, self.maildir / f"{n:06d}.eml")
        (self.maildir / f"{n:06d}.json").write_text(json.dumps(
            {"mail_from": mail_from, "rcpt_tos": rcpt_tos, "authenticated": bool(authenticated)}))

    def received(self) -> list[Path]:
        """The stored messages, oldest first."""
        return sorted(self.maildir.glob("*.eml"))

    def messages(self) -> list[EmailMessage]:
        """The stored messages, parsed (see `parse`)."""
        return [self.parse(path) for path in self.received()]

    @staticmethod
    def parse(path: Path) -> EmailMessage:
        """A stored message parsed with `email.policy.default`, its line ends as Python's
        (the file keeps the CRLF of the wire)."""
        return message_from_bytes(Path(path).read_bytes().replace(b"\r\n", b"\n"), policy=policy.default)

    def envelope(self, message_file: Path) -> dict:
        return json.loads(message_file.with_suffix(".json").read_text())


def demo_delivery(loaded, store, now) -> tuple[object, Path | None]:
    """The demo's e-mail step: start the lab server where `[reports.email]` points (its
    STARTTLS port; the password file and the CA the configuration names are created in the
    lab), send the weekly report with `drcheck.delivery.send_now`, stop the server. Return
    the delivery and the file of the message as received (None if it was not sent: the
    delivery stays queued, as in production)."""
    from drcheck.delivery import email_config, send_now
    from drcheck.secrets import write_secret_file

    cfg = email_config(loaded)
    if cfg.password is None or cfg.password.file is None or cfg.ca_bundle is None:
        raise SmtpLabError("the demo's [reports.email] names a password file and a ca_bundle in the lab")
    lab = cfg.ca_bundle.parent
    if not cfg.password.file.exists():
        write_secret_file(cfg.password.file)
    if not (cfg.ca_bundle.exists() and (lab / "server.pem").exists()):
        make_test_ca(lab)
    tls = TestCA(ca=lab / "ca.pem", cert=lab / "server.pem", key=lab / "server.key")
    listener = {"starttls": "port", "tls": "tls_port", "none": "plain_port"}[cfg.security]
    server = SmtpLab(lab, users={cfg.username: cfg.password.ref().reveal()}, tls=tls,
                     **{listener: cfg.smtp_port()})
    with server:
        before = set(server.received())
        sent = send_now(loaded, store, now)
        arrived = [path for path in server.received() if path not in before]
    return sent, (arrived[-1] if arrived else None)
