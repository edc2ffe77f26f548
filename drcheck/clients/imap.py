"""IMAP mailboxes (imapclient): read the messages of one folder above a UID cursor, and
optionally move processed ones to another folder.

Contract:
- TLS is verified by default (the system's trust store, or `ca_bundle`); `insecure` turns
  verification off (the caller warns). Port 993 speaks TLS at once; `starttls=True` logs in
  on a plain port only after STARTTLS.
- A folder is opened read-only (EXAMINE) unless the caller moves messages; messages are
  read with BODY.PEEK[], which never sets \\Seen.
- `uids_after(cursor)` lists the UIDs above a cursor (UID SEARCH); `fetch(uids)` yields
  them in UID order in batches (UID FETCH of UID ranges, pipelined: the server prepares
  the next batch while the caller works on the current one). The folder's UIDVALIDITY is `Mailbox.uidvalidity`:
  a cursor is only meaningful for the UIDVALIDITY it was taken under.
- Every failure raises an `ImapError` subclass with a one-line reason (never the password):
  `ImapAuthError`, `ImapUnreachable`, `ImapTLSError`, `ImapTimeout`, `ImapFolderError`.
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import logging
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from drcheck.clients import SourceError
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)

BATCH = 1000  # messages per UID FETCH: ~2 MB of report mail
AHEAD = 2  # UID FETCH commands sent before their responses are read (pipelining)


class ImapError(SourceError):
    """The mailbox could not be read."""


class ImapAuthError(ImapError):
    """The server refused the credentials."""


class ImapUnreachable(ImapError):
    """No connection (refused, unknown host, dropped)."""


class ImapTLSError(ImapError):
    """The TLS handshake failed or the certificate is not trusted."""


class ImapTimeout(ImapError):
    """The server did not answer in time."""


class ImapFolderError(ImapError):
    """A folder does not exist or cannot be opened, or a move was refused."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to log in. `timeout` limits connecting and every single read."""

    host: str
    username: str
    password: SecretRef
    port: int = 993
    ca_bundle: Path | None = None
    insecure: bool = False
    starttls: bool = False
    timeout: float = 60.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Message:
    """One message as the server stores it (RFC 5322 bytes, CRLF line ends)."""

    uid: int
    raw: bytes


def uid_set(uids: Iterable[int]) -> str:
    """An IMAP sequence set of UIDs, runs collapsed ("1:5,9,12:14"); empty for none."""
    parts: list[str] = []
    start = prev = None
    for uid in sorted(set(uids)):
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The TLS context of `endpoint`: verified against `ca_bundle` or the system's store."""
    if endpoint.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=str(endpoint.ca_bundle) if endpoint.ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise ImapTLSError(f"cannot load CA bundle {endpoint.ca_bundle}: {getattr(exc, 'strerror', None) or exc}") \
            from None


def describe(exc: BaseException, endpoint: Endpoint, doing: str) -> ImapError:
    """The ImapError subclass (one line) for a low-level failure while `doing` something."""
    where = endpoint.address
    if isinstance(exc, ImapError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapTLSError(f"TLS certificate of {where} is not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return ImapTLSError(f"TLS with {where} failed: {exc.reason or exc}")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ImapTimeout(f"IMAP server {where} did not answer within {endpoint.timeout:g}s ({doing})")
    if isinstance(exc, socket.gaierror):
        return ImapUnreachable(f"cannot resolve IMAP host {endpoint.host}: {exc.strerror}")
    if isinstance(exc, imaplib.IMAP4.abort):
        return ImapUnreachable(f"connection to {where} lost ({doing}): {_text(exc)}")
    if isinstance(exc, OSError):
        return ImapUnreachable(f"cannot reach IMAP server {where}: {exc.strerror or exc}")
    return ImapError(f"IMAP {doing} on {where} failed: {_text(exc)}")


def _text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class Mailbox:
    """One open folder of a logged-in connection (see `open_mailbox`)."""

    def __init__(self, client, endpoint: Endpoint, folder: str, readonly: bool, status: dict):
        self.client = client
        self.endpoint = endpoint
        self.folder = folder
        self.readonly = readonly
        self.uidvalidity = int(status.get(b"UIDVALIDITY", 0))
        self.exists = int(status.get(b"EXISTS", 0))

    def _call(self, doing: str, func, *args):
        from imapclient.exceptions import IMAPClientError

        try:
            return func(*args)
        except (IMAPClientError, imaplib.IMAP4.error, OSError) as exc:
            if isinstance(exc, imaplib.IMAP4.error) and not isinstance(exc, imaplib.IMAP4.abort):
                raise ImapFolderError(f"{doing} in {self.folder!r} on {self.endpoint.address} refused: "
                                      f"{_text(exc)}") from None
            raise describe(exc, self.endpoint, doing) from None

    def uids_after(self, cursor: int) -> list[int]:
        """Every UID above `cursor`, ascending (UID SEARCH)."""
        found = self._call("UID SEARCH", self.client.search, ["UID", f"{cursor + 1}:*"])
        return sorted(uid for uid in found if uid > cursor)  # n:* always names the last message

    def present(self, uids: Iterable[int]) -> set[int]:
        """Which of `uids` are still in the folder."""
        wanted = uid_set(uids)
        return set(self._call("UID SEARCH", self.client.search, ["UID", wanted])) if wanted else set()

    def fetch(self, uids: Sequence[int], batch: int = BATCH) -> Iterator[list[Message]]:
        """Yield the messages of `uids` (ascending) in batches, in UID order; a message
        expunged meanwhile is simply missing. The next batch's UID FETCH is sent before
        this one is handed over (pipelined), so the server prepares it while the caller
        works; closing the iterator early reads and drops what is still coming."""
        batches = [list(uids[i:i + batch]) for i in range(0, len(uids), batch)]
        pending: list[bytes] = []
        try:
            for part in batches[:AHEAD]:
                pending.append(self._send_fetch(part))
            for index in range(len(batches)):
                found = self._read_fetch(pending.pop(0))
                if index + AHEAD < len(batches):
                    pending.append(self._send_fetch(batches[index + AHEAD]))
                yield found
        except (imaplib.IMAP4.error, OSError) as exc:
            pending.clear()  # the connection is gone or confused: nothing to drain
            raise describe(exc, self.endpoint, "UID FETCH") from None
        finally:
            for tag in pending:  # closed early: keep the connection usable for what follows
                with contextlib.suppress(Exception):
                    self._read_fetch(tag)

    def _send_fetch(self, uids: list[int]) -> bytes:
        tag = b"drc%d" % next(_TAGS)
        self.client._imap.send(b"%s UID FETCH %s (UID BODY.PEEK[])\r\n" % (tag, uid_set(uids).encode()))
        return tag

    def _read_fetch(self, tag: bytes) -> list[Message]:
        # imapclient's response parser, and even imaplib's, spend more client time on
        # 10,000 report e-mails than the server needs to send them: the bulk bodies are
        # read from the connection imapclient wraps, by a reader that only splits out the
        # literals (a UID FETCH response is a series of `* n FETCH (... {size}` lines, each
        # followed by its literal and the rest of its line, then the tagged completion).
        imap = self.client._imap
        done, found = tag + b" ", []
        read, readline = imap.read, imap.readline
        while True:
            line = readline()
            if not line:
                raise imaplib.IMAP4.abort("the server closed the connection")
            if line.startswith(done):
                status, _, text = line[len(done):].partition(b" ")
                if status != b"OK":
                    raise ImapError(f"UID FETCH in {self.folder!r} on {self.endpoint.address} answered "
                                    f"{status.decode(errors='replace')}: {text.decode(errors='replace').strip()}")
                return found
            uid = body = None
            while line.endswith(b"}\r\n"):  # a literal follows, then the rest of the response
                literal = read(int(line[line.rindex(b"{") + 1:-3]))
                if body is None:
                    body = literal
                if uid is None and (match := _UID.search(line)):
                    uid = int(match.group(1))
                line = readline()
            if uid is None and (match := _UID.search(line)):  # UID after the body (some servers)
                uid = int(match.group(1))
            if body is not None and uid is not None:
                found.append(Message(uid, body))

    def move(self, uids: Iterable[int], folder: str) -> int:
        """Move `uids` to `folder` (MOVE; else COPY, flag and UID EXPUNGE of only these);
        return how many were asked to move. The folder must have been opened read-write."""
        uids = set(uids)
        wanted = uid_set(uids)
        if not wanted:
            return 0
        if self.readonly:
            raise ImapFolderError(f"{self.folder!r} was opened read-only; cannot move messages")
        if self._call("CAPABILITY", self.client.has_capability, "MOVE"):
            self._call(f"UID MOVE to {folder!r}", self.client.move, wanted, folder)
        elif self._call("CAPABILITY", self.client.has_capability, "UIDPLUS"):
            self._call(f"UID COPY to {folder!r}", self.client.copy, wanted, folder)
            self._call("UID STORE", self.client.delete_messages, wanted, True)
            self._call("UID EXPUNGE", self.client.uid_expunge, wanted)
        else:
            raise ImapFolderError(f"{self.endpoint.address} offers neither MOVE nor UIDPLUS: cannot move "
                                  "messages without expunging others")
        return len(uids)


_UID = re.compile(rb"\bUID (\d+)")
_TAGS = itertools.count(1)


@contextlib.contextmanager
def open_mailbox(endpoint: Endpoint, folder: str, *, readonly: bool = True) -> Iterator[Mailbox]:
    """Connect, log in and open `folder` (EXAMINE when `readonly`, else SELECT); log out
    when done. Raise ImapError subclasses as the module says."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError, LoginError

    context = tls_context(endpoint)
    password = endpoint.password.reveal()
    try:
        client = IMAPClient(endpoint.host, endpoint.port, ssl=not endpoint.starttls, ssl_context=context,
                            timeout=endpoint.timeout)
    except (IMAPClientError, imaplib.IMAP4.error, OSError) as exc:
        raise describe(exc, endpoint, "connect") from None
    try:
        try:
            if endpoint.starttls:
                client.starttls(context)
            client.login(endpoint.username, password)
        except LoginError as exc:
            raise ImapAuthError(f"IMAP login as {endpoint.username!r} on {endpoint.address} refused: "
                                f"{_server_words(exc)}") from None
        except (IMAPClientError, imaplib.IMAP4.error, OSError) as exc:
            raise describe(exc, endpoint, "login") from None
        try:
            status = client.select_folder(folder, readonly=readonly)
        except imaplib.IMAP4.abort as exc:
            raise describe(exc, endpoint, "EXAMINE" if readonly else "SELECT") from None
        except (IMAPClientError, imaplib.IMAP4.error) as exc:
            raise ImapFolderError(f"cannot open folder {folder!r} on {endpoint.address}: {_server_words(exc)}") \
                from None
        except OSError as exc:
            raise describe(exc, endpoint, "EXAMINE" if readonly else "SELECT") from None
        yield Mailbox(client, endpoint, folder, readonly, status)
    finally:
        with contextlib.suppress(Exception):
            client.logout()
        with contextlib.suppress(Exception):
            client.shutdown()


def _server_words(exc: BaseException) -> str:
    """The server's own reason, without imaplib's wrapping (b'[AUTHENTICATIONFAILED] …')."""
    text = _text(exc)
    found = re.search(r"b['\"](.*)['\"]", text)
    return found.group(1) if found else text
