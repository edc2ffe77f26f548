"""One HTTP client base for the REST APIs drcheck reads (Veeam Backup & Replication now),
over httpx.

`RestClient` gives JSON requests with:
- OAuth2 password-grant login (`OAuth2Password`) with refresh: a token about to expire is
  refreshed (refresh-token grant, else a new login) before a request; a 401 on a request
  refreshes once and retries it. Expiry mid-run is normal, never an error.
- fixed headers on every request, e.g. an API version (`x-api-version`);
- `skip`/`limit` pagination (`pages`);
- a per-request timeout; bounded retries with exponential backoff on connection
  failures, 429 and 5xx (never on other 4xx). A POST is retried only when it cannot have
  reached the server (connection not established) or was refused unprocessed (429, 503),
  so nothing is started twice;
- TLS verified by default (system CAs or `ca_bundle`); `insecure` is an explicit opt-out,
  logged as a warning whenever a client is made.

Every failure is a `HttpError` (a `SourceError`) whose one-line reason names the service,
the URL (never its query) and the cause. Passwords and tokens never appear in reasons or
logs.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import httpx

from drcheck.clients import SourceError
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
UNPROCESSED_STATUSES = frozenset({429, 503})  # a POST answered so was not acted on: safe to retry
MAX_PAUSE = 30.0  # longest pause between attempts, whatever Retry-After asks


class HttpError(SourceError):
    """A REST API could not be used: unreachable, silent, untrusted, refused or failing.
    `url` is the request's URL without its query; `status` the HTTP status, if any."""

    def __init__(self, reason: str, url: str = "", status: int | None = None):
        super().__init__(reason)
        self.url, self.status = url, status


class Unreachable(HttpError):
    """The connection could not be made or broke (refused, reset, DNS)."""


class TimedOut(HttpError):
    """No answer within the request's timeout."""


class Untrusted(HttpError):
    """The server's TLS certificate is not trusted (or TLS failed)."""


class LoginRefused(HttpError):
    """The token endpoint refused the credentials."""


class StatusError(HttpError):
    """The server answered with an error status; `message` is what it said."""

    def __init__(self, reason: str, url: str, status: int, message: str):
        super().__init__(reason, url, status)
        self.message = message


@dataclass(frozen=True)
class OAuth2Password:
    """OAuth2 resource-owner password grant at `token_path` (form-encoded), with the
    refresh-token grant for renewals."""

    token_path: str
    username: str
    password: SecretRef
    extra: Mapping[str, str] = field(default_factory=dict)  # more form fields some servers want


@dataclass(frozen=True)
class HttpSettings:
    """Where a REST API is and how to talk to it. `timeout` bounds each request
    (seconds); `retries` is the number of attempts after the first; `backoff` the first
    pause (doubled at each attempt, at most MAX_PAUSE)."""

    base_url: str
    service: str = "HTTP"  # names the peer in reasons: "Veeam B&R"
    ca_bundle: Path | None = None
    insecure: bool = False
    timeout: float = 30.0
    retries: int = 2
    backoff: float = 0.5
    headers: Mapping[str, str] = field(default_factory=dict)

    def verify(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        return ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)


@dataclass
class _Token:
    access: str
    refresh: str | None
    expires: float | None  # clock() value

    def __repr__(self) -> str:  # never the tokens
        return f"_Token(expires={self.expires})"


class RestClient:
    """JSON over HTTP with login, refresh, retries and paging (see the module doc).

    `transport` replaces the network (tests: httpx.MockTransport); `sleep` and `clock`
    replace time.sleep and time.monotonic. `who` (a probe or test name) prefixes the
    warning logged when TLS verification is off. Use as a context manager, or `close()`."""

    def __init__(self, settings: HttpSettings, auth: OAuth2Password | None = None, *, who: str = "",
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.auth = settings, auth
        self._sleep, self._clock = sleep, clock
        self._token: _Token | None = None
        self.requests = 0  # HTTP requests sent (benchmarks, tests)
        if settings.insecure:
            log.warning("%s%s %s: TLS certificate verification is OFF (insecure = true)",
                        f"{who}: " if who else "", settings.service, settings.base_url)
        self._http = httpx.Client(base_url=settings.base_url.rstrip("/"), verify=settings.verify(),
                                  timeout=settings.timeout, transport=transport, follow_redirects=False,
                                  headers={"Accept": "application/json", **settings.headers})

    def __enter__(self) -> "RestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ---------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET `path`; return the decoded JSON body (None when empty)."""
        return _json(self.request("GET", path, params=params))

    def post(self, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """POST `body` as JSON to `path`; return the decoded JSON answer (None when empty)."""
        return _json(self.request("POST", path, params=params, json=body))

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None) -> httpx.Response:
        """Send one request (logged in first when the client has `auth`), with retries;
        return the successful (2xx) response. A 401 renews the token once and retries.
        Raise an `HttpError` subclass for anything else."""
        renewed = False
        while True:
            headers = self._auth_header() if self.auth else {}
            response = self._send(method, path, params=params, json=json, headers=headers)
            if response.status_code == 401 and self.auth and not renewed:
                log.info("%s %s: token refused (HTTP 401); renewing it once", self.settings.service,
                         _where(response.request))
                self._renew(force=True)
                renewed = True
                continue
            if response.is_success:
                return response
            raise self._status_error(response)

    def pages(self, path: str, params: Mapping[str, Any] | None = None, limit: int = 200) -> Iterator[Any]:
        """Every item of a `skip`/`limit`-paged collection (`{"data": [...], "pagination":
        {"total", "count", "skip", "limit"}}`), page by page, until `pagination.total` items
        were read, an empty page, or (without a total) a short page."""
        skip = 0
        while True:
            body = self.get(path, {**(params or {}), "skip": skip, "limit": limit})
            body = body if isinstance(body, dict) else {}
            data = body.get("data") or []
            yield from data
            skip += len(data)
            total = (body.get("pagination") or {}).get("total")
            if not data or (total is not None and skip >= total) or (total is None and len(data) < limit):
                return

    # -- tokens -----------------------------------------------------------------------

    def _auth_header(self) -> dict[str, str]:
        if self._token is None:
            self._login()
        elif self._token.expires is not None and self._clock() >= self._token.expires:
            self._renew(force=False)
        return {"Authorization": f"Bearer {self._token.access}"}

    def _renew(self, force: bool) -> None:
        """Refresh the token (refresh-token grant); log in again when that is refused."""
        token = self._token
        if token is not None and token.refresh:
            try:
                self._token = self._grant({"grant_type": "refresh_token", "refresh_token": token.refresh})
                log.debug("%s: token refreshed%s", self.settings.service, " after a 401" if force else "")
                return
            except LoginRefused:
                log.info("%s: refresh token refused; logging in again", self.settings.service)
        self._login()

    def _login(self) -> None:
        auth = self.auth
        self._token = self._grant({"grant_type": "password", "username": auth.username,
                                   "password": auth.password.reveal(), **auth.extra})

    def _grant(self, form: dict[str, str]) -> _Token:
        response = self._send("POST", self.auth.token_path, data=form, idempotent=True)
        if response.status_code in (400, 401, 403):
            message = _server_message(response)
            credentials = response.status_code == 401 or "invalid_grant" in message
            what = "refresh token refused" if form["grant_type"] == "refresh_token" else \
                f"login of user {self.auth.username!r} refused" + (" (wrong user name or password)" if credentials else "")
            raise LoginRefused(f"{self.settings.service} {_where(response.request)}: {what}: "
                               f"HTTP {response.status_code}{': ' + message if message else ''}",
                               _where(response.request), response.status_code)
        if not response.is_success:
            raise self._status_error(response)
        body = _json(response)
        if not isinstance(body, dict) or not body.get("access_token"):
            raise HttpError(f"{self.settings.service} {_where(response.request)}: the token answer holds no "
                            "access_token", _where(response.request), response.status_code)
        lifetime = body.get("expires_in")
        margin = min(30.0, 0.1 * float(lifetime)) if isinstance(lifetime, (int, float)) else 0.0
        return _Token(body["access_token"], body.get("refresh_token"),
                      self._clock() + float(lifetime) - margin if isinstance(lifetime, (int, float)) else None)

    # -- the wire -----------------------------------------------------------------------

    def _send(self, method: str, path: str, *, params=None, json=None, data=None, headers=None,
              idempotent: bool | None = None) -> httpx.Response:
        """One request with bounded retries; the last response (any status) or an error."""
        idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS") if idempotent is None else idempotent
        request = self._http.build_request(method, path, params=params, json=json, data=data, headers=headers)
        attempts = self.settings.retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                self.requests += 1
                response = self._http.send(request)
            except httpx.TimeoutException as exc:
                sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
                if last or (sent and not idempotent):
                    raise TimedOut(f"{self.settings.service} {_where(request)}: no answer within "
                                   f"{self.settings.timeout:g}s{_tries(attempt)}", _where(request)) from None
                self._pause(attempt, None, f"timeout of {_where(request)}")
                continue
            except httpx.TransportError as exc:
                if _untrusted(exc):
                    raise Untrusted(f"{self.settings.service} {_where(request)}: certificate not trusted "
                                    f"({_tls_reason(exc)}); set ca_bundle to the CA that signed it "
                                    "(insecure = true turns checking off)", _where(request)) from None
                sent = not isinstance(exc, httpx.ConnectError)
                if last or (sent and not idempotent):
                    raise Unreachable(f"{self.settings.service} {_where(request)}: unreachable "
                                      f"({_cause(exc)}){_tries(attempt)}", _where(request)) from None
                self._pause(attempt, None, f"{_cause(exc)} at {_where(request)}")
                continue
            retry = response.status_code in RETRY_STATUSES and \
                (idempotent or response.status_code in UNPROCESSED_STATUSES)
            if not retry or last:
                if retry:
                    response.extensions["drcheck_attempts"] = attempt + 1
                return response
            response.read()
            response.close()
            self._pause(attempt, response.headers.get("Retry-After"), f"HTTP {response.status_code} from "
                                                                       f"{_where(request)}")
        raise AssertionError("unreachable")  # the loop returns or raises

    def _pause(self, attempt: int, retry_after: str | None, why: str) -> None:
        pause = min(self.settings.backoff * 2 ** attempt, MAX_PAUSE)
        if retry_after and retry_after.strip().isdigit():
            pause = min(max(pause, float(retry_after)), MAX_PAUSE)
        log.info("%s: %s; retrying in %.1fs (attempt %d of %d)", self.settings.service, why, pause, attempt + 2,
                 self.settings.retries + 1)
        self._sleep(pause)

    def _status_error(self, response: httpx.Response) -> StatusError:
        message = _server_message(response)
        where = _where(response.request)
        attempts = response.extensions.get("drcheck_attempts")
        tail = f" (after {attempts} attempts)" if attempts and attempts > 1 else ""
        return StatusError(f"{self.settings.service} {response.request.method} {where}: HTTP {response.status_code} "
                           f"{response.reason_phrase}{': ' + message if message else ''}{tail}", where,
                           response.status_code, message)


# -- helpers --------------------------------------------------------------------------------


def _where(request: httpx.Request) -> str:
    """The request's URL without its query (filters may be long; nothing secret is ever
    in a URL drcheck builds, but a query is no help in a one-line reason)."""
    return str(request.url.copy_with(query=None))


def _tries(attempt: int) -> str:
    return f" (after {attempt + 1} attempts)" if attempt else ""


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise HttpError(f"answer of {_where(response.request)} is not JSON "
                        f"({response.headers.get('content-type', 'no content type')})",
                        _where(response.request), response.status_code) from None


def _server_message(response: httpx.Response, limit: int = 300) -> str:
    """What the server said about an error, on one line: a JSON body's `message`
    (Veeam: `{"errorCode", "message"}`), an OAuth2 `error_description`/`error`, else
    the start of a text body."""
    try:
        response.read()
        body = response.json()
    except (ValueError, httpx.HTTPError):
        body = None
    text = ""
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error_description") or body.get("error") or
                   body.get("title") or "")
        code = body.get("errorCode")
        if code and text and str(code) not in text:
            text = f"{text} ({code})"
    elif response.content and "json" not in response.headers.get("content-type", ""):
        text = response.text
    text = " ".join(text.split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _untrusted(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLError) for e in _chain(exc)) or "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _tls_reason(exc: BaseException) -> str:
    for e in _chain(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return e.verify_message or "verification failed"
        if isinstance(e, ssl.SSLError):
            return e.reason or str(e)
    return str(exc) or type(exc).__name__


def _cause(exc: BaseException) -> str:
    """A short cause: 'connection refused', 'connection reset', or the error's own words."""
    for e in _chain(exc):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed: {text or 'no response'}"
    return text or type(exc).__name__
