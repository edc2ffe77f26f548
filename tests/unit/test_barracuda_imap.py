"""The IMAP client's own logic, without a server: UID sets, the bulk FETCH reader (on a
scripted response), pipelining and draining, moves, and one-line error reasons."""

from __future__ import annotations

import imaplib
import io
import socket
import ssl

import pytest

from drcheck.clients import imap
from drcheck.secrets import SecretRef

ENDPOINT = imap.Endpoint("imap.example", "reports", SecretRef(env="X"), timeout=5)


class ScriptedConnection:
    """imaplib's transport (send/read/readline) over a scripted server output."""

    def __init__(self, responses: dict[int, bytes]):
        self.responses = responses  # n-th command -> what the server answers (tag written as TAG)
        self.sent: list[bytes] = []
        self.out = io.BytesIO()

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        tag = data.split(b" ", 1)[0]
        position = self.out.tell()
        self.out.seek(0, io.SEEK_END)
        self.out.write(self.responses[len(self.sent)].replace(b"TAG", tag))
        self.out.seek(position)

    def read(self, size: int) -> bytes:
        return self.out.read(size)

    def readline(self) -> bytes:
        return self.out.readline()


class Client:
    def __init__(self, connection, capabilities=("MOVE",)):
        self._imap = connection
        self.capabilities = set(capabilities)
        self.calls: list[tuple] = []

    def has_capability(self, name):
        return name in self.capabilities

    def __getattr__(self, name):
        def record(*args):
            self.calls.append((name, *args))
            return []
        return record


def fetch_response(*messages: tuple[int, bytes], uid_after: bool = False) -> bytes:
    out = b""
    for n, (uid, body) in enumerate(messages, 1):
        if uid_after:
            out += b"* %d FETCH (BODY[] {%d}\r\n%s UID %d)\r\n" % (n, len(body), body, uid)
        else:
            out += b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (n, uid, len(body), body)
    return out + b"TAG OK Fetch completed.\r\n"


def mailbox(responses: dict[int, bytes], **kwargs) -> tuple[imap.Mailbox, ScriptedConnection, Client]:
    connection = ScriptedConnection(responses)
    client = Client(connection, **kwargs)
    return imap.Mailbox(client, ENDPOINT, "INBOX", False, {b"UIDVALIDITY": 42, b"EXISTS": 3}), connection, client


def test_uid_sets_collapse_runs():
    assert imap.uid_set([5, 1, 2, 3, 9, 12, 13, 14, 3]) == "1:3,5,9,12:14"
    assert imap.uid_set([]) == "" and imap.uid_set([7]) == "7"


def test_the_reader_splits_out_every_literal_whatever_comes_with_it():
    body = b"Subject: x\r\n\r\n{not a literal}\r\n"
    response = (b"* 1 FETCH (UID 10 BODY[] {%d}\r\n%s)\r\n" % (len(body), body)
                + b"* 2 FETCH (FLAGS (\\Seen))\r\n* 3 EXISTS\r\n"
                + b"* 3 FETCH (BODY[] {3}\r\nabc UID 12)\r\nTAG OK done\r\n")
    box, connection, _ = mailbox({1: response})
    (batch,) = list(box.fetch([10, 11, 12]))
    assert batch == [imap.Message(10, body), imap.Message(12, b"abc")]
    assert connection.sent == [b"drc%s UID FETCH 10:12 (UID BODY.PEEK[])\r\n" % connection.sent[0][3:].split(b" ")[0]]
    assert box.uidvalidity == 42


def test_batches_are_pipelined_and_come_in_uid_order():
    responses = {n: fetch_response(*((uid, b"m%d" % uid) for uid in range(2 * n - 1, 2 * n + 1)), uid_after=n == 2)
                 for n in (1, 2, 3)}
    box, connection, _ = mailbox(responses)
    batches = box.fetch([1, 2, 3, 4, 5, 6], batch=2)
    first = next(batches)
    assert len(connection.sent) == 3  # the next two FETCHes went out before the first batch was handed over
    assert [m.uid for m in first] == [1, 2]
    assert [[m.uid for m in b] for b in batches] == [[3, 4], [5, 6]]


def test_closing_early_drains_what_was_asked_for():
    responses = {n: fetch_response((n, b"x")) for n in (1, 2, 3)}
    box, connection, _ = mailbox(responses)
    batches = box.fetch([1, 2, 3], batch=1)
    next(batches)
    batches.close()
    assert len(connection.sent) == 3 and connection.readline() == b""  # nothing left unread


def test_a_refused_fetch_is_an_error_with_the_servers_words():
    box, _, _ = mailbox({1: b"TAG NO [SERVERBUG] Internal error\r\n"})
    with pytest.raises(imap.ImapError, match="answered NO: \\[SERVERBUG\\] Internal error"):
        list(box.fetch([1]))


def test_a_connection_closed_mid_fetch_is_unreachable():
    box, _, _ = mailbox({1: b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n"})
    with pytest.raises(imap.ImapUnreachable, match="connection to imap.example:993 lost"):
        list(box.fetch([1]))


def test_moves_use_move_or_copy_and_expunge_of_just_those():
    box, _, client = mailbox({})
    assert box.move([3, 1, 2], "Processed") == 3 and client.calls == [("move", "1:3", "Processed")]
    box, _, client = mailbox({}, capabilities=("UIDPLUS",))
    box.move([5], "Processed")
    assert [c[0] for c in client.calls] == ["copy", "delete_messages", "uid_expunge"]
    box, _, _ = mailbox({}, capabilities=())
    with pytest.raises(imap.ImapFolderError, match="neither MOVE nor UIDPLUS"):
        box.move([5], "Processed")
    readonly = imap.Mailbox(Client(None), ENDPOINT, "INBOX", True, {})
    with pytest.raises(imap.ImapFolderError, match="read-only"):
        readonly.move([1], "Processed")


@pytest.mark.parametrize("exc, kind, words", [
    (ConnectionRefusedError(111, "Connection refused"), imap.ImapUnreachable,
     "cannot reach IMAP server imap.example:993: Connection refused"),
    (socket.gaierror(-2, "Name or service not known"), imap.ImapUnreachable,
     "cannot resolve IMAP host imap.example: Name or service not known"),
    (socket.timeout("timed out"), imap.ImapTimeout, "did not answer within 5s (login)"),
    (imaplib.IMAP4.abort("socket error: EOF"), imap.ImapUnreachable, "connection to imap.example:993 lost (login)"),
])
def test_failures_become_one_line_reasons(exc, kind, words):
    error = imap.describe(exc, ENDPOINT, "login")
    assert isinstance(error, kind) and words in error.reason and "\n" not in error.reason


def test_an_untrusted_certificate_says_so():
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    error = imap.describe(exc, ENDPOINT, "connect")
    assert isinstance(error, imap.ImapTLSError) and error.reason == \
        "TLS certificate of imap.example:993 is not trusted: self-signed certificate"


def test_a_missing_ca_bundle_is_a_tls_error(tmp_path):
    endpoint = imap.Endpoint("h", "u", SecretRef(env="X"), ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(imap.ImapTLSError, match="cannot load CA bundle"):
        imap.tls_context(endpoint)
    insecure = imap.tls_context(imap.Endpoint("h", "u", SecretRef(env="X"), insecure=True))
    assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
