"""Taking one e-mail apart cheaply: the few headers a reader needs, the body as text
(plain or HTML, any transfer encoding), and the small value formats of Barracuda mail
(sizes, RFC 5322 dates). The common single-part message never goes through the `email`
package: a first run reads thousands."""

from __future__ import annotations

import binascii
import email
import email.policy
import html
import re
from datetime import datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.utils import parsedate_to_datetime

_UTC = timezone.utc
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DATE = re.compile(r"(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([+-]\d{4})?")
_SIZE = re.compile(r"([\d][\d,]*(?:\.\d+)?)\s*([KMGTP]?)(i?)B\b", re.I)
_UNITS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_CHARSET = re.compile(r'charset="?([\w.:-]+)', re.I)
_WANTED = {b"subject", b"date", b"from", b"content-type", b"content-transfer-encoding"}


def parse_size(text: str) -> int | None:
    """Bytes of '41.2 GB' (KB/MB/GB/TB taken as powers of 1024, as backup consoles show them)."""
    found = _SIZE.search(text)
    if not found:
        return None
    return int(float(found.group(1).replace(",", "")) * 1024 ** _UNITS[found.group(2).upper()])


def parse_date_header(value: str) -> datetime | None:
    """An RFC 5322 Date header as an aware datetime (in its own offset), or None."""
    found = _DATE.search(value)
    if found and found.group(2).lower() in _MONTHS:
        day, month, year, hour, minute, second, offset = found.groups()
        sign, off = (1 if not offset or offset[0] == "+" else -1), (offset or "+0000")[1:]
        zone = timezone(sign * timedelta(hours=int(off[:2]), minutes=int(off[2:])))
        try:
            return datetime(int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second or 0),
                            tzinfo=zone)
        except ValueError:
            return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def decode_word(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def strip_html(markup: str) -> str:
    """Text of an HTML body with each table row as `cell: cell` and block ends as lines."""
    markup = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", "", markup)
    markup = re.sub(r"(?i)</t[dh]\s*>\s*<t[dh]\b[^>]*>", ": ", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</(tr|p|div|h\d|li|table)\s*>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


def message_text(raw: bytes) -> tuple[dict[bytes, str], str]:
    """(selected headers by lower-case name, the body as text). A single-part text/plain
    or text/html body in 7bit, 8bit, quoted-printable or base64 is decoded directly (the
    common case, and cheap); anything else goes through the `email` package."""
    cut = raw.find(b"\r\n\r\n")
    head, body = (raw[:cut], raw[cut + 4:]) if cut >= 0 else (raw, b"")
    if cut < 0 and (lf := raw.find(b"\n\n")) >= 0:
        head, body = raw[:lf], raw[lf + 2:]
    headers: dict[bytes, str] = {}
    name = None
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the header above
            if name in headers:
                headers[name] += " " + line.strip().decode("utf-8", "replace")
            continue
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name in _WANTED and name not in headers:
            headers[name] = value.strip().decode("utf-8", "replace")
        else:
            name = None
    ctype = headers.get(b"content-type", "text/plain").lower()
    cte = headers.get(b"content-transfer-encoding", "7bit").strip().lower()
    if ctype.startswith(("text/plain", "text/html")) and cte in ("7bit", "8bit", "binary", "quoted-printable",
                                                                  "base64"):
        try:
            data = binascii.a2b_qp(body) if cte == "quoted-printable" else \
                binascii.a2b_base64(body) if cte == "base64" else body
        except binascii.Error:
            data = body
        charset = _CHARSET.search(ctype)
        try:
            text = data.decode(charset.group(1) if charset else "utf-8", "replace")
        except LookupError:
            text = data.decode("utf-8", "replace")
        return headers, strip_html(text) if ctype.startswith("text/html") else text
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return headers, ""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        text = part.get_payload(decode=True).decode("utf-8", "replace") if part.get_payload(decode=True) else ""
    return headers, strip_html(text) if part.get_content_type() == "text/html" else text
