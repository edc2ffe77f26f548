"""OAuth2 tokens as Veeam Backup & Replication's REST API issues them (`POST /api/oauth2/token`).

Contract (documented in README.md "Authorization"):
- `password` grant with the server's one user → 200 TokenModel (`access_token`, `token_type`
  "bearer", `refresh_token`, `expires_in`, `.issued`, `.expires`); a wrong user or password → 401
  `AccessDenied`; a missing field or an unknown grant type → 400 `UnexpectedContent`.
- `refresh_token` grant → a new pair; a refresh token works ONCE (as documented), an unknown,
  used or expired one → 401 `InvalidToken`.
- An access token lives `lifetime` seconds (changeable at run time; tokens already issued keep
  theirs unless `expire_all()`); an expired one → 401 `ExpiredToken`, an unknown one → 401
  `InvalidToken`, none → 401 `AccessDenied`.
Thread-safe.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

REFRESH_LIFETIME = timedelta(days=14)


class AuthError(Exception):
    """`status` HTTP code and Veeam `errorCode` for the error body."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Token:
    username: str
    expires: datetime
    used: bool = False


class TokenStore:
    def __init__(self, username: str, password: str, lifetime: float):
        self.username = username
        self.password = password
        self.lifetime = float(lifetime)
        self._access: dict[str, _Token] = {}
        self._refresh: dict[str, _Token] = {}
        self._lock = threading.Lock()
        self.issued = 0  # token pairs issued (both grants)

    def grant(self, form: dict[str, str]) -> dict:
        """Answer a token request (form fields already decoded); raise AuthError."""
        grant_type = form.get("grant_type")
        if grant_type == "password":
            user, password = form.get("username"), form.get("password")
            if not user or password is None:
                raise AuthError(400, "UnexpectedContent", "The username and password fields are required "
                                                         "for the password grant type.")
            ok_user = hmac.compare_digest(user.lower().encode(), self.username.lower().encode())
            ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
            if not (ok_user and ok_pass):
                raise AuthError(401, "AccessDenied", "Invalid username or password.")
            return self._issue(self.username)
        if grant_type == "refresh_token":
            token = form.get("refresh_token")
            if not token:
                raise AuthError(400, "UnexpectedContent", "The refresh_token field is required "
                                                         "for the refresh_token grant type.")
            with self._lock:
                entry = self._refresh.get(token)
                if entry is None or entry.used or entry.expires <= _now():
                    raise AuthError(401, "InvalidToken", "The refresh token is invalid, expired or already used.")
                entry.used = True
            return self._issue(entry.username)
        if not grant_type:
            raise AuthError(400, "UnexpectedContent", "The grant_type field is required.")
        raise AuthError(400, "UnexpectedContent", f"Grant type '{grant_type}' is not supported.")

    def _issue(self, username: str) -> dict:
        now = _now()
        expires = now + timedelta(seconds=self.lifetime)
        access, refresh = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
        with self._lock:
            self._access[access] = _Token(username, expires)
            self._refresh[refresh] = _Token(username, now + REFRESH_LIFETIME)
            self.issued += 1
        return {"access_token": access, "token_type": "bearer", "refresh_token": refresh,
                "expires_in": int(round(self.lifetime)), ".issued": now.isoformat(), ".expires": expires.isoformat()}

    def check(self, header: str | None) -> str:
        """The user of a request's Authorization header (`Bearer <token>`, or the bare token as
        revision 1.2-rev1's Swagger UI sends it); raise AuthError."""
        if not header:
            raise AuthError(401, "AccessDenied", "Authorization header is missing.")
        scheme, _, value = header.strip().partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else header.strip()
        with self._lock:
            entry = self._access.get(token)
        if entry is None:
            raise AuthError(401, "InvalidToken", "The access token is invalid.")
        if entry.expires <= _now():
            raise AuthError(401, "ExpiredToken", "The access token has expired.")
        return entry.username

    def logout(self, header: str | None) -> None:
        """Revoke the access token of the request (and nothing else)."""
        scheme, _, value = (header or "").strip().partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else (header or "").strip()
        with self._lock:
            self._access.pop(token, None)

    def set_lifetime(self, seconds: float) -> None:
        self.lifetime = float(seconds)

    def expire_all(self) -> int:
        """Make every access token issued so far expired (refresh tokens stay valid)."""
        past = _now() - timedelta(seconds=1)
        with self._lock:
            for entry in self._access.values():
                entry.expires = min(entry.expires, past)
            return len(self._access)


def _now() -> datetime:
    return datetime.now(timezone.utc)
