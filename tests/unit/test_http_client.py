"""The REST client base at its boundary (httpx.MockTransport stands in for the network):
login, refresh on expiry and on a 401, version header, paging, retries and what is never
retried, and one-line errors that carry no secret."""

from __future__ import annotations

import json
import logging
import ssl
from urllib.parse import parse_qs

import httpx
import pytest

from drcheck.clients import SourceError
from drcheck.clients.http import (
    HttpSettings,
    LoginRefused,
    OAuth2Password,
    RestClient,
    StatusError,
    TimedOut,
    Unreachable,
    Untrusted,
)
from drcheck.secrets import SecretRef

BASE = "https://backup.example:9419"
PASSWORD = "s3cret-Passw0rd"


class Server:
    """A scripted REST server: a token endpoint handing out numbered tokens, and routes."""

    def __init__(self, lifetime: float = 900, password: str = PASSWORD):
        self.lifetime, self.password = lifetime, password
        self.issued = 0
        self.valid: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.log: list[tuple[str, str, dict]] = []
        self.routes: dict[tuple[str, str], object] = {}

    def token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if form["grant_type"] == "password" and (form["username"], form["password"]) != ("admin", self.password):
            return httpx.Response(401, json={"errorCode": "Unauthorized", "message": "Invalid credentials."})
        if form["grant_type"] == "refresh_token" and form["refresh_token"] not in self.refresh_tokens:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "refresh token expired"})
        self.issued += 1
        access, refresh = f"access-{self.issued}", f"refresh-{self.issued}"
        self.valid.add(access)
        self.refresh_tokens.add(refresh)
        return httpx.Response(200, json={"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                                         "expires_in": self.lifetime})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append((request.method, request.url.path, dict(request.headers)))
        if request.url.path == "/api/oauth2/token":
            return self.token(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.valid:
            return httpx.Response(401, json={"errorCode": "Unauthorized", "message": "Token expired."})
        route = self.routes[(request.method, request.url.path)]
        return route(request) if callable(route) else route

    def requests_to(self, path: str) -> list[tuple[str, str, dict]]:
        return [entry for entry in self.log if entry[1] == path]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(server, *, clock=None, sleeps=None, retries=2, **settings) -> RestClient:
    auth = OAuth2Password("/api/oauth2/token", "admin", SecretRef(env="DRCHECK_TEST_PASSWORD"))
    return RestClient(HttpSettings(BASE, service="Veeam B&R", retries=retries, headers={"x-api-version": "1.1-rev1"},
                                   **settings),
                      auth, transport=httpx.MockTransport(server), clock=clock or Clock(),
                      sleep=(sleeps.append if sleeps is not None else lambda s: None))


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("DRCHECK_TEST_PASSWORD", PASSWORD)


def test_logs_in_once_and_sends_the_version_header_and_bearer_token():
    server = Server()
    server.routes[("GET", "/api/v1/jobs")] = httpx.Response(200, json={"data": [{"id": "j1"}]})
    with client(server) as rest:
        assert rest.get("/api/v1/jobs") == {"data": [{"id": "j1"}]}
        rest.get("/api/v1/jobs")
    assert server.issued == 1
    assert all(headers["x-api-version"] == "1.1-rev1" for _, _, headers in server.log)
    assert [h["authorization"] for _, p, h in server.log if p == "/api/v1/jobs"] == ["Bearer access-1"] * 2


def test_a_token_about_to_expire_is_refreshed_before_the_request():
    server, clock = Server(lifetime=60), Clock()
    server.routes[("GET", "/api/v1/jobs")] = httpx.Response(200, json={})
    with client(server, clock=clock) as rest:
        rest.get("/api/v1/jobs")
        clock.now += 55  # within the 10% margin of its 60 s lifetime
        rest.get("/api/v1/jobs")
    assert server.issued == 2
    assert [h["authorization"] for _, p, h in server.log if p == "/api/v1/jobs"] == ["Bearer access-1",
                                                                                      "Bearer access-2"]


def test_a_token_the_server_expired_early_is_renewed_once_on_a_401_and_the_request_retried():
    server = Server()
    server.routes[("GET", "/api/v1/jobs")] = httpx.Response(200, json={"ok": True})
    with client(server) as rest:
        rest.get("/api/v1/jobs")
        server.valid.clear()  # the server forgot every access token (restart, shorter lifetime)
        assert rest.get("/api/v1/jobs") == {"ok": True}
    assert [p for _, p, _ in server.log] == ["/api/oauth2/token", "/api/v1/jobs", "/api/v1/jobs",
                                             "/api/oauth2/token", "/api/v1/jobs"]


def test_a_refused_refresh_token_falls_back_to_a_new_login():
    server = Server()
    server.routes[("GET", "/api/v1/jobs")] = httpx.Response(200, json={})
    with client(server) as rest:
        rest.get("/api/v1/jobs")
        server.valid.clear()
        server.refresh_tokens.clear()
        rest.get("/api/v1/jobs")
    assert len(server.requests_to("/api/oauth2/token")) == 3 and server.issued == 2  # login, refused refresh, login


def test_a_second_401_is_an_error_with_the_servers_message():
    server = Server()
    server.routes[("GET", "/api/v1/jobs")] = httpx.Response(401, json={"errorCode": "Unauthorized",
                                                                       "message": "Access denied for this user."})
    with client(server) as rest, pytest.raises(StatusError) as caught:
        rest.get("/api/v1/jobs")
    assert str(caught.value) == (f"Veeam B&R GET {BASE}/api/v1/jobs: HTTP 401 Unauthorized: Access denied for this "
                                 "user. (Unauthorized)")
    assert server.issued == 2


def test_bad_credentials_are_a_clear_error_without_the_password(caplog):
    caplog.set_level(logging.DEBUG)
    server = Server(password="another one")
    with client(server) as rest, pytest.raises(LoginRefused) as caught:
        rest.get("/api/v1/jobs")
    assert str(caught.value) == (f"Veeam B&R {BASE}/api/oauth2/token: login of user 'admin' refused (wrong user "
                                 "name or password): HTTP 401: Invalid credentials. (Unauthorized)")
    assert isinstance(caught.value, SourceError) and not caught.value.damaged
    assert len(server.requests_to("/api/oauth2/token")) == 1  # a refusal is not retried
    assert PASSWORD not in caplog.text and PASSWORD not in str(caught.value)


def test_pages_reads_until_the_total_and_sends_skip_and_limit():
    server = Server()
    items = [{"id": i} for i in range(7)]

    def page(request):
        skip, limit = int(request.url.params["skip"]), int(request.url.params["limit"])
        assert request.url.params["typeFilter"] == "VM"
        chunk = items[skip: skip + limit]
        return httpx.Response(200, json={"data": chunk, "pagination": {"total": len(items), "count": len(chunk),
                                                                        "skip": skip, "limit": limit}})

    server.routes[("GET", "/api/v1/backupObjects")] = page
    with client(server) as rest:
        assert list(rest.pages("/api/v1/backupObjects", {"typeFilter": "VM"}, limit=3)) == items
    assert len(server.requests_to("/api/v1/backupObjects")) == 3


@pytest.mark.parametrize("pages, calls", [
    ([[1, 2], [3, 4], []], 3),  # no total: until an empty page
    ([[1, 2], [3]], 2),  # no total: a short page is the last
])
def test_pages_without_a_total(pages, calls):
    server = Server()
    answers = iter(pages)
    server.routes[("GET", "/api/v1/sessions")] = lambda request: httpx.Response(200, json={"data": next(answers)})
    with client(server) as rest:
        assert list(rest.pages("/api/v1/sessions", limit=2)) == [x for p in pages for x in p]
    assert len(server.requests_to("/api/v1/sessions")) == calls


def flaky(*statuses, final=None):
    answers = iter(statuses)

    def route(request):
        status = next(answers, None)
        if status is None:
            return final or httpx.Response(200, json={"ok": True})
        headers = {"Retry-After": "7"} if status == 429 else {}
        return httpx.Response(status, json={"errorCode": "Busy", "message": f"status {status}"}, headers=headers)

    return route


def test_5xx_and_429_are_retried_with_backoff_and_retry_after():
    server, sleeps = Server(), []
    server.routes[("GET", "/api/v1/jobs")] = flaky(503, 429)
    with client(server, sleeps=sleeps, backoff=0.5) as rest:
        assert rest.get("/api/v1/jobs") == {"ok": True}
    assert sleeps == [0.5, 7.0]  # doubling backoff, or Retry-After when longer


def test_retries_are_bounded_and_the_error_says_how_many():
    server, sleeps = Server(), []
    server.routes[("GET", "/api/v1/jobs")] = flaky(500, 500, 500, 500)
    with client(server, sleeps=sleeps, retries=2) as rest, pytest.raises(StatusError) as caught:
        rest.get("/api/v1/jobs")
    assert str(caught.value).endswith("HTTP 500 Internal Server Error: status 500 (Busy) (after 3 attempts)")
    assert caught.value.status == 500 and len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_other_4xx_are_not_retried(status):
    server = Server()
    server.routes[("GET", "/api/v1/jobs/x")] = flaky(status, status)
    with client(server) as rest, pytest.raises(StatusError) as caught:
        rest.get("/api/v1/jobs/x")
    assert len(server.requests_to("/api/v1/jobs/x")) == 1
    assert caught.value.status == status and f"HTTP {status}" in str(caught.value)


def test_a_post_is_not_retried_once_it_may_have_been_acted_on():
    server = Server()
    server.routes[("POST", "/api/v1/restore")] = flaky(500, final=httpx.Response(201, json={"id": "m1"}))
    with client(server) as rest, pytest.raises(StatusError):
        rest.post("/api/v1/restore", {"restorePointId": "p"})
    assert len(server.requests_to("/api/v1/restore")) == 1
    server.routes[("POST", "/api/v1/restore")] = flaky(503, final=httpx.Response(201, json={"id": "m1"}))
    with client(server) as rest:
        assert rest.post("/api/v1/restore", {"restorePointId": "p"}) == {"id": "m1"}


def failing(exc_factory, then=None):
    calls = []

    def route(request):
        calls.append(request)
        if then is not None and len(calls) > 1:
            return then
        raise exc_factory(request)

    route.calls = calls
    return route


def test_connection_refused_is_retried_then_unreachable():
    sleeps = []
    route = failing(lambda r: httpx.ConnectError("[Errno 111] Connection refused", request=r))
    with client(route, sleeps=sleeps, retries=2) as rest, pytest.raises(Unreachable) as caught:
        rest.get("/api/v1/jobs")
    assert str(caught.value) == (f"Veeam B&R {BASE}/api/oauth2/token: unreachable (connection refused) "
                                 "(after 3 attempts)")
    assert len(route.calls) == 3 and sleeps == [0.5, 1.0]


def test_a_connection_error_before_sending_a_post_is_retried():
    server = Server()
    server.routes[("POST", "/api/v1/restore")] = httpx.Response(201, json={"id": "m1"})
    attempts = []

    def transport(request):
        if request.url.path == "/api/v1/restore" and not attempts:
            attempts.append(1)
            raise httpx.ConnectError("Connection refused", request=request)
        return server(request)

    with client(transport) as rest:
        assert rest.post("/api/v1/restore", {}) == {"id": "m1"}


def test_a_read_timeout_is_a_clear_error():
    route = failing(lambda r: httpx.ReadTimeout("timed out", request=r))
    with client(route, timeout=2.5, retries=1) as rest, pytest.raises(TimedOut) as caught:
        rest.get("/api/v1/jobs")
    assert str(caught.value) == f"Veeam B&R {BASE}/api/oauth2/token: no answer within 2.5s (after 2 attempts)"


def test_an_untrusted_certificate_is_named_and_not_retried():
    def untrusted(request):
        cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cause.verify_message = "self-signed certificate in certificate chain"
        try:
            raise cause
        except ssl.SSLError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED]", request=request) from exc

    route = failing(untrusted)
    with client(route) as rest, pytest.raises(Untrusted) as caught:
        rest.get("/api/v1/jobs")
    assert str(caught.value) == (f"Veeam B&R {BASE}/api/oauth2/token: certificate not trusted (self-signed "
                                 "certificate in certificate chain); set ca_bundle to the CA that signed it "
                                 "(insecure = true turns checking off)")
    assert len(route.calls) == 1


def test_insecure_is_warned_and_verification_is_on_by_default(caplog, tmp_path):
    assert isinstance(HttpSettings(BASE).verify(), ssl.SSLContext)
    assert HttpSettings(BASE, insecure=True).verify() is False
    with caplog.at_level(logging.WARNING):
        RestClient(HttpSettings(BASE, service="Veeam B&R", insecure=True), who="veeam").close()
    assert f"veeam: Veeam B&R {BASE}: TLS certificate verification is OFF (insecure = true)" in caplog.text


def test_no_token_or_password_reaches_an_error_or_a_log(caplog):
    caplog.set_level(logging.DEBUG)
    server = Server(lifetime=60)
    clock = Clock()
    server.routes[("GET", "/api/v1/jobs")] = flaky(503, final=httpx.Response(404, json={"message": "gone"}))
    with client(server, clock=clock) as rest, pytest.raises(StatusError) as caught:
        rest.get("/api/v1/jobs")
    text = caplog.text + str(caught.value) + repr(rest._token)
    assert PASSWORD not in text and "access-1" not in text and "refresh-1" not in text


def test_a_non_json_answer_is_an_error():
    server = Server()
    server.routes[("GET", "/api/v1/jobs")] = httpx.Response(200, text="<html>proxy login</html>",
                                                            headers={"content-type": "text/html"})
    with client(server) as rest, pytest.raises(SourceError) as caught:
        rest.get("/api/v1/jobs")
    assert "is not JSON (text/html)" in str(caught.value)


def test_json_bodies_are_sent_as_json():
    server = Server()
    seen = []
    server.routes[("POST", "/api/v1/x")] = lambda r: (seen.append(json.loads(r.content)), httpx.Response(204))[1]
    with client(server) as rest:
        assert rest.post("/api/v1/x", {"a": 1}) is None
    assert seen == [{"a": 1}]
