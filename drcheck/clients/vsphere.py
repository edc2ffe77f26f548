"""vCenter sessions over pyvmomi: connect with verified TLS, turn every failure of the
vSphere API or the network into a `VSphereError` that says what went wrong, and read
properties of many objects in one paged `RetrievePropertiesEx` sweep.

pyvmomi is imported inside the functions, so configuring (and validating) drcheck does not
need it loaded.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import ssl
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from drcheck.clients import SourceError
from drcheck.secrets import SecretRef

log = logging.getLogger(__name__)


class VSphereError(SourceError):
    """vCenter could not be reached or refused what drcheck asked (ERROR), or, with
    `damaged`, what should be restored is not there (FAILED). `connection_lost`: the network
    failed (timeout, reset), so cleanup calls on that session would only wait for their own
    timeouts."""

    def __init__(self, reason: str, damaged: bool = False, connection_lost: bool = False):
        super().__init__(reason, damaged=damaged)
        self.connection_lost = connection_lost


def connection_lost(exc: BaseException) -> bool:
    """True when `exc` says the session's connection is gone or hung (not a refusal)."""
    if isinstance(exc, VSphereError):
        return exc.connection_lost
    return isinstance(exc, (OSError, http.client.HTTPException)) and not isinstance(exc, ssl.SSLCertVerificationError)


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
    except vim.fault.NotAuthenticated:  # a subclass of NoPermission, but no missing right
        raise VSphereError(f"{where}: {what}: not authenticated (the session expired or was closed)") from None
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
        raise VSphereError(f"{where}: {what}: no answer within {endpoint.timeout:.0f}s", connection_lost=True) from None
    except ConnectionRefusedError:
        raise VSphereError(f"{where}: unreachable (connection refused)", connection_lost=True) from None
    except (http.client.HTTPException, ConnectionError, OSError) as exc:
        if type(exc).__name__ in ("ThumbprintMismatchException", "CertificateMismatchException"):
            raise VSphereError(f"{where}: certificate does not match the pinned thumbprint") from None
        raise VSphereError(f"{where}: {what}: connection failed ({type(exc).__name__}: {exc})", connection_lost=True) from None


@contextmanager
def connect(endpoint: Endpoint, who: str = "") -> Iterator[Any]:
    """A logged-in `vim.ServiceInstance`, logged out on exit. Raise VSphereError when the
    vCenter is unreachable or silent past `endpoint.timeout`, its certificate is not
    trusted (nor the pinned one), or the login is refused. `who` (a probe or test name)
    prefixes the warning logged when verification is off."""
    from pyVim.connect import Connect, Disconnect

    if endpoint.insecure:
        log.warning("%svCenter %s: TLS certificate verification is OFF (insecure = true)",
                    f"{who}: " if who else "", endpoint.url)
    with api_errors(endpoint, "connect"):
        context, pin_matched = _context(endpoint)
        try:
            version = _api_version(endpoint, context)
            instance = Connect(
                host=endpoint.host, port=endpoint.port if _https(endpoint) else -endpoint.port, path=_path(endpoint),
                user=endpoint.username, pwd=endpoint.password.reveal(), version=version, sslContext=context,
                httpConnectionTimeout=endpoint.timeout, connectionPoolTimeout=-1)
        except ssl.SSLCertVerificationError:
            if pin_matched is False:
                raise VSphereError(f"vCenter {endpoint.url}: certificate does not match the pinned thumbprint") \
                    from None
            raise
    lost = False
    try:
        yield instance
    except BaseException as exc:
        lost = connection_lost(exc)
        raise
    finally:
        if not lost:  # a logout on a hung connection would only wait for its timeout
            try:
                Disconnect(instance)
            except Exception as exc:  # the session dies with the server anyway
                log.debug("vCenter %s: logout failed: %s", endpoint.url, exc)


def _https(endpoint: Endpoint) -> bool:
    return (urlsplit(endpoint.url).scheme or "https") == "https"


def _path(endpoint: Endpoint) -> str:
    return urlsplit(endpoint.url).path or "/sdk"


def _context(endpoint: Endpoint) -> tuple[ssl.SSLContext | None, bool | None]:
    """The TLS context of every connection of the session, and whether a pinned thumbprint
    matched (None: no pin). A served certificate with the pinned thumbprint becomes the
    only trust anchor, so each later connection is verified against exactly it (its name
    is not checked: the pin is the identity); otherwise CA verification decides."""
    if not _https(endpoint):
        return None, None
    try:
        verified = endpoint.ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise VSphereError(f"vCenter {endpoint.url}: cannot use ca_bundle {endpoint.ca_bundle}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None
    if not endpoint.thumbprint or endpoint.insecure:
        return verified, None
    probe = ssl.create_default_context()
    probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.timeout) as raw:
        with probe.wrap_socket(raw, server_hostname=endpoint.host) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    pin = _thumbprint(endpoint.thumbprint) or ""
    digest = {40: hashlib.sha1, 64: hashlib.sha256, 128: hashlib.sha512}.get(len(pin), hashlib.sha256)
    if digest(der).hexdigest() != pin:
        return verified, False
    pinned = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pinned.check_hostname = False
    pinned.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf certificate as its own anchor
    pinned.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(der))
    return pinned, True


def _api_version(endpoint: Endpoint, context: ssl.SSLContext | None) -> str:
    """The newest vim25 API version pyVmomi and the server both speak, from the server's
    vimServiceVersions.xml. Read here because pyVim's own discovery has no timeout."""
    from xml.etree import ElementTree

    from pyVmomi.VmomiSupport import GetServiceVersions, versionIdMap

    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(
            endpoint.host, endpoint.port, timeout=endpoint.timeout)
    else:
        conn = http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=endpoint.timeout, context=context)
    try:
        conn.request("GET", _path(endpoint).rstrip("/") + "/vimServiceVersions.xml")
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    try:
        root = ElementTree.fromstring(body) if response.status == 200 else None
    except ElementTree.ParseError:
        root = None
    if root is None or root.tag != "namespaces":
        raise VSphereError(f"vCenter {endpoint.url}: not a vSphere API endpoint (no vimServiceVersions.xml, "
                           f"HTTP {response.status})")
    offered = {v.text for ns in root.findall("namespace") if ns.findtext("name") == "urn:vim25"
               for v in [ns.find("version"), *ns.findall("priorVersions/version")] if v is not None}
    for version in GetServiceVersions("vim25"):
        if versionIdMap.get(version) in offered:
            return version
    raise VSphereError(f"vCenter {endpoint.url}: no API version in common (server offers {sorted(offered)})")


def _thumbprint(value: str | None) -> str | None:
    return value.replace(":", "").lower() if value else None


# -- property sweeps -------------------------------------------------------------------


@dataclass
class Row:
    """One object a sweep read: its moref id, its type name and the properties asked for
    that it has (pyVmomi values; they stay inside drcheck.clients)."""

    moref: str
    type: str
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class Counter:
    """The API work of one read: calls made and result pages received."""

    calls: int = 0
    pages: int = 0


def collect(collector: Any, spec: Any, page_size: int, counter: Counter) -> list[Row]:
    """Every object `spec` (a PropertyFilterSpec) selects, with its properties: one
    `RetrievePropertiesEx` of at most `page_size` objects per page, then
    `ContinueRetrievePropertiesEx` with each token until the token is None. A read
    interrupted between pages cancels the remaining result on the server
    (`CancelRetrievePropertiesEx`) before the error propagates, unless the connection
    itself was lost."""
    from pyVmomi import vmodl

    options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=page_size)
    counter.calls += 1
    page = collector.RetrievePropertiesEx(specSet=[spec], options=options)
    rows: list[Row] = []
    token = None
    try:
        while page is not None:
            counter.pages += 1
            token = page.token  # set first: a page that fails to convert still cancels the rest
            rows.extend(_row(content) for content in page.objects or ())
            if token is None:
                break
            counter.calls += 1
            page = collector.ContinueRetrievePropertiesEx(token=token)
            token = None
    except BaseException as exc:
        if token is not None and not connection_lost(exc):
            _cancel(collector, token, counter)
        raise
    return rows


def _row(content: Any) -> Row:
    """An ObjectContent as a Row. A property the session may not read (NotAuthenticated:
    the session expired) fails the read; other missing properties are left out."""
    from pyVmomi import vim

    for missing in content.missingSet or ():
        if isinstance(missing.fault, vim.fault.NotAuthenticated):
            raise missing.fault
    obj = content.obj
    return Row(obj._moId, obj._wsdlName, {p.name: p.val for p in content.propSet or ()})


def _cancel(collector: Any, token: str, counter: Counter) -> None:
    counter.calls += 1
    try:
        collector.CancelRetrievePropertiesEx(token=token)
    except Exception as exc:  # the result expires on the server anyway; the first error matters
        log.debug("CancelRetrievePropertiesEx failed: %s", exc)


def sweep(content: Any, view_types: Sequence[type], prop_type: type, properties: Sequence[str],
          page_size: int, counter: Counter) -> list[Row]:
    """Every object of `view_types` in the inventory (a recursive ContainerView from the
    root folder) with exactly `properties` (paths valid on `prop_type`, a common base of
    the view's types), read by `collect`. The view is destroyed however the read ends."""
    from pyVmomi import vim, vmodl

    pc = vmodl.query.PropertyCollector
    counter.calls += 1
    view = content.viewManager.CreateContainerView(container=content.rootFolder, type=list(view_types),
                                                   recursive=True)
    lost = False
    try:
        traverse = pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
        spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                             propSet=[pc.PropertySpec(type=prop_type, all=False, pathSet=list(properties))])
        return collect(content.propertyCollector, spec, page_size, counter)
    except BaseException as exc:
        lost = connection_lost(exc)
        raise
    finally:
        if not lost:  # views die with the session; on a hung one destroying would only wait
            counter.calls += 1
            try:
                view.DestroyView()
            except Exception as exc:  # never hide the read's own error
                log.debug("DestroyView failed: %s", exc)


def read_objects(content: Any, objects: Sequence[Any], prop_type: type, properties: Sequence[str],
                 page_size: int, counter: Counter) -> list[Row]:
    """`properties` of the given managed objects (not entities in a view: alarms, the
    custom fields manager), in one paged read."""
    from pyVmomi import vmodl

    if not objects:
        return []
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj, skip=False) for obj in objects],
                         propSet=[pc.PropertySpec(type=prop_type, all=False, pathSet=list(properties))])
    return collect(content.propertyCollector, spec, page_size, counter)
