"""vCenter sessions over pyvmomi: connect with verified TLS, and turn every failure of the
vSphere API or the network into a `VSphereError` that says what went wrong.

pyvmomi is imported inside the functions, so configuring (and validating) drcheck does not
need it loaded.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from drcheck.clients import SourceError
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)


class VSphereError(SourceError):
    """vCenter could not be reached or refused what drcheck asked (ERROR, not a verdict on
    any backup; `damaged` stays False)."""


@dataclass(frozen=True)
class Endpoint:
    """Where a vCenter is and how to trust it. `thumbprint` pins the certificate (SHA-1,
    SHA-256 or SHA-512, hex with or without colons): a certificate no CA vouches for is
    accepted when it has exactly that thumbprint. `insecure` turns verification off (the
    caller logs a warning at every run). `timeout` bounds every network read (seconds)."""

    url: str
    username: str
    password: SecretRef
    ca_bundle: Path | None = None
    thumbprint: str | None = None
    insecure: bool = False
    timeout: float = 60.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def ssl_context(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)


@contextmanager
def api_errors(endpoint: Endpoint, what: str) -> Iterator[None]:
    """Re-raise anything the vSphere API or the network raises while doing `what` as a
    VSphereError naming the vCenter and the cause."""
    from pyVmomi import vim, vmodl

    where = f"vCenter {endpoint.url}"
    try:
        yield
    except VSphereError:
        raise
    except vim.fault.InvalidLogin:
        raise VSphereError(f"{where}: login refused for user {endpoint.username!r} "
                           "(wrong user name or password)") from None
    except vim.fault.NoPermission as exc:
        raise VSphereError(f"{where}: {what}: permission denied ({exc.msg or exc.privilegeId})") from None
    except vmodl.MethodFault as exc:
        raise VSphereError(f"{where}: {what}: {type(exc).__name__.rpartition('.')[2]}: "
                           f"{exc.msg or 'refused'}") from None
    except ssl.SSLCertVerificationError as exc:
        raise VSphereError(f"{where}: certificate not trusted ({exc.verify_message}); set ca_bundle to the CA "
                           "that signed it, or pin its thumbprint (insecure = true turns checking off)") from None
    except ssl.SSLError as exc:
        raise VSphereError(f"{where}: TLS failed ({exc.reason or exc})") from None
    except (socket.timeout, TimeoutError):
        raise VSphereError(f"{where}: {what}: no answer within {endpoint.timeout:.0f}s") from None
    except ConnectionRefusedError:
        raise VSphereError(f"{where}: unreachable (connection refused)") from None
    except (http.client.HTTPException, ConnectionError, OSError) as exc:
        if type(exc).__name__ in ("ThumbprintMismatchException", "CertificateMismatchException"):
            raise VSphereError(f"{where}: certificate does not match the pinned thumbprint") from None
        raise VSphereError(f"{where}: {what}: connection failed ({type(exc).__name__}: {exc})") from None


@contextmanager
def connect(endpoint: Endpoint) -> Iterator[Any]:
    """A logged-in `vim.ServiceInstance`, logged out on exit. Raise VSphereError when the
    vCenter is unreachable, its certificate is not trusted, or the login is refused."""
    from pyVim.connect import Disconnect, SmartConnect

    if endpoint.insecure:
        log.warning("vCenter %s: TLS certificate verification is OFF (insecure = true)", endpoint.url)
    with api_errors(endpoint, "connect"):
        try:
            instance = SmartConnect(
                protocol=urlsplit(endpoint.url).scheme or "https", host=endpoint.host, port=endpoint.port,
                path=urlsplit(endpoint.url).path or "/sdk", user=endpoint.username, pwd=endpoint.password.reveal(),
                sslContext=endpoint.ssl_context(), thumbprint=_thumbprint(endpoint.thumbprint),
                httpConnectionTimeout=endpoint.timeout, connectionPoolTimeout=-1)
        except Exception as exc:  # pyvmomi's thumbprint exceptions carry no common base
            if type(exc).__name__ in ("ThumbprintMismatchException", "CertificateMismatchException"):
                raise VSphereError(f"vCenter {endpoint.url}: certificate does not match the pinned thumbprint") \
                    from None
            raise
    try:
        yield instance
    finally:
        try:
            Disconnect(instance)
        except Exception as exc:  # the session dies with the server anyway
            log.debug("vCenter %s: logout failed: %s", endpoint.url, exc)


def _thumbprint(value: str | None) -> str | None:
    return value.replace(":", "").lower() if value else None
