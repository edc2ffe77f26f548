"""Veeam Backup & Replication REST API replay server (drcheck's test peer; see README.md).

    python tests/peers/veeam/server.py --listen 127.0.0.1:0 --control 127.0.0.1:0 \
        --scenario lab.json --cert server.pem --key server.key \
        --username drcheck --password-file password.txt --token-lifetime 900 \
        --vcsim-control http://127.0.0.1:41721

Two listeners: the REST API over HTTPS (stdlib ThreadingHTTPServer; the TLS handshake runs in
the connection's own thread) and the control API over plain HTTP. When both listen it prints,
flushed, in this order:

    CONTROL=http://127.0.0.1:PORT
    VEEAM_URL=https://127.0.0.1:PORT

SIGTERM/SIGINT stop it (held `hang` requests are released first); exit status 0. Errors at
start (bad scenario, unreadable certificate, port in use) print one line to stderr, status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import ssl
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vbr_api import Api, ApiError  # noqa: E402
from vbr_auth import TokenStore  # noqa: E402
from vbr_control import Control, ControlError, Faults, OutageGate, RequestLog  # noqa: E402
from vbr_model import Model, ScenarioError  # noqa: E402
from vbr_recovery import Recovery  # noqa: E402

HANDSHAKE_TIMEOUT = 30
IDLE_TIMEOUT = 120  # a keep-alive connection idle this long is closed


class Replay:
    """Everything both listeners share."""

    def __init__(self, model: Model, tokens: TokenStore, recovery: Recovery):
        self.api = Api(model, tokens, recovery)
        self.gate = OutageGate()
        self.faults = Faults()
        self.log = RequestLog()
        self.control = Control(self.api, self.gate, self.faults, self.log)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True  # small responses on a kept-alive connection: no 40 ms delayed-ACK stalls
    server_version = "Kestrel"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the request log (control API /requests) records what matters

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
        self.flush_headers()

    do_GET = do_POST = do_PUT = do_DELETE = lambda self: self.serve()  # noqa: E731


class ApiHandler(_Handler):
    def serve(self) -> None:
        replay: Replay = self.server.replay
        began = time.monotonic()
        split = urlsplit(self.path)
        body = self._read_body()
        entry = {"time": datetime.now(timezone.utc).isoformat(), "method": self.command, "path": split.path,
                 "query": split.query, "api_version": self.headers.get("x-api-version"),
                 "authorization": bool(self.headers.get("Authorization")), "status": None}
        mode = replay.gate.wait()
        if mode == "refuse":
            entry["outage"] = "refuse"
            replay.log.add(entry)
            self.close_connection = True
            return
        fault = replay.faults.take(split.path)
        try:
            if fault is not None:
                raise ApiError(fault, Faults.CODES.get(fault, "UnknownError"),
                               f"replay: injected HTTP {fault} for {split.path}.")
            status, payload = replay.api.handle(self.command, split.path, split.query, self.headers, body)
        except ApiError as err:
            status, payload = err.status, err.body
        except Exception as err:  # a replay bug: answer as the service does, and say so
            status, payload = 500, {"errorCode": "UnknownError", "message": f"replay: {type(err).__name__}: {err}"}
            print(f"replay error on {self.command} {self.path}: {err!r}", file=sys.stderr, flush=True)
        entry["status"] = status
        entry["ms"] = round((time.monotonic() - began) * 1000, 1)
        replay.log.add(entry)
        self._send_json(status, payload)


class ControlHandler(_Handler):
    def serve(self) -> None:
        body = self._read_body()
        try:
            payload, status = self.server.replay.control.handle(self.command, urlsplit(self.path).path, body), 200
        except ControlError as err:
            payload, status = {"error": str(err)}, err.status
        self._send_json(status, payload)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, replay: Replay, tls: ssl.SSLContext | None = None):
        self.replay = replay
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request, client_address) -> None:
        """Runs in the connection's thread: the TLS handshake happens here, so a client that
        stalls in it holds only its own thread."""
        if self.tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            conn.settimeout(IDLE_TIMEOUT)
            self.RequestHandlerClass(conn, client_address, self)
        except (ConnectionError, ssl.SSLError, socket.timeout):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Veeam Backup & Replication REST API replay (drcheck tests)")
    parser.add_argument("--listen", default="127.0.0.1:9419", help="REST API address (port 0: any free port)")
    parser.add_argument("--control", default="127.0.0.1:0", help="control API address (plain HTTP)")
    parser.add_argument("--scenario", help="scenario JSON file (README.md); none: an empty server")
    parser.add_argument("--cert", help="TLS certificate (PEM); without --cert/--key the API is plain HTTP")
    parser.add_argument("--key", help="TLS private key (PEM)")
    parser.add_argument("--username", default="drcheck")
    parser.add_argument("--password-file", help="file holding the password (default: lab-secret); a file, "
                                                "not an argument, so it never shows in process listings")
    parser.add_argument("--token-lifetime", type=float, default=900, help="access token lifetime, seconds")
    parser.add_argument("--vcsim-control", help="the vCenter simulator's control URL (instant recovery)")
    args = parser.parse_args(argv)

    try:
        scenario = json.loads(Path(args.scenario).read_text()) if args.scenario else {}
        model = Model.load(scenario)
        tls = None
        if args.cert or args.key:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            tls.load_cert_chain(args.cert, args.key)
        password = Path(args.password_file).read_text().strip() if args.password_file else "lab-secret"
        replay = Replay(model, TokenStore(args.username, password, args.token_lifetime),
                        Recovery(args.vcsim_control))
        control = Server(_address(args.control), ControlHandler, replay)
        api = Server(_address(args.listen), ApiHandler, replay, tls)
    except (OSError, ValueError, ScenarioError, ssl.SSLError) as err:
        print(f"veeam replay: cannot start: {err}", file=sys.stderr, flush=True)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
               for s in (control, api)]
    for t in threads:
        t.start()
    scheme = "https" if tls else "http"
    print(f"CONTROL=http://127.0.0.1:{control.server_address[1]}", flush=True)
    print(f"VEEAM_URL={scheme}://127.0.0.1:{api.server_address[1]}", flush=True)
    while not stop.wait(0.5):
        pass
    replay.gate.stop()
    for s in (api, control):
        s.shutdown()
        s.server_close()
    replay.api.recovery.wait_idle(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
