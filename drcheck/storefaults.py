"""What is wrong with the database, in one line: read-only, locked, damaged, disk full.

Every command that opens the store goes through `preflight` (via `engine.open_store`), and
every SQLite or OS error escaping a command is described by `describe`, so the operator
reads `drcheck: database /var/lib/drcheck/drcheck.db is damaged: file is not a database`
and exit status 1, never a traceback. The agent uses `cause` to back off and to export
`drcheck_store_up` / `drcheck_store_error_info{cause}`.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

MIN_FREE_BYTES = 1 << 20  # below this the database's filesystem counts as full: results cannot be recorded

READ_ONLY, LOCKED, DAMAGED, FULL, UNREADABLE = "read_only", "locked", "damaged", "disk_full", "unreadable"

ADVICE = {
    READ_ONLY: "drcheck must write its results there",
    LOCKED: "another process holds a write lock on it",
    DAMAGED: "restore it from a backup, or move it aside and drcheck starts a new one",
    FULL: "free some space",
    UNREADABLE: "check its permissions and the file system",
}


class StoreUnavailable(RuntimeError):
    """The database at `path` cannot be used; `cause` is one of the constants above and
    `detail` what SQLite or the OS said."""

    def __init__(self, path: Path, cause: str, detail: str):
        self.path, self.cause, self.detail = Path(path), cause, detail
        super().__init__(self.line())

    def line(self) -> str:
        what = {READ_ONLY: "is read-only", LOCKED: "is locked", DAMAGED: "is damaged",
                FULL: "cannot be written: disk full", UNREADABLE: "cannot be opened"}[self.cause]
        return f"database {self.path} {what}: {self.detail} ({ADVICE[self.cause]})"


def _read_only_fs(path: Path) -> bool:
    for candidate in (path, path.parent):
        try:
            return bool(os.statvfs(candidate).f_flag & os.ST_RDONLY)
        except OSError:
            continue
    return False


def free_bytes(path: Path) -> int | None:
    for candidate in (path, path.parent):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def describe(path: Path, exc: BaseException, timeout: float | None = None) -> StoreUnavailable:
    """Classify an error raised while using the database at `path`."""
    path = Path(path)
    if isinstance(exc, StoreUnavailable):
        return exc
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    name = getattr(exc, "sqlite_errorname", "") or ""
    number = getattr(exc, "errno", None)
    if number == errno.ENOSPC or "disk is full" in lowered or name == "SQLITE_FULL":
        free = free_bytes(path)
        return StoreUnavailable(path, FULL, f"{free if free is not None else '?'} bytes free on its file system")
    if number == errno.EROFS or "readonly" in lowered or "read-only" in lowered or _read_only_fs(path):
        return StoreUnavailable(path, READ_ONLY, "read-only file system" if _read_only_fs(path) else text)
    if "locked" in lowered or "busy" in name.lower():
        waited = f"gave up after {timeout:g}s: " if timeout is not None else ""
        return StoreUnavailable(path, LOCKED, waited + text)
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered or name in (
            "SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return StoreUnavailable(path, DAMAGED, text)
    if isinstance(exc, OSError) and exc.strerror:
        return StoreUnavailable(path, UNREADABLE, f"{exc.strerror}: {exc.filename or path}")
    return StoreUnavailable(path, UNREADABLE, text)


def _truncated(path: Path) -> str | None:
    """Why the file is shorter than its own header says, else None (cheap: one read)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
        size = path.stat().st_size
    except OSError:
        return None  # whatever it is, opening it says so
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return None if size == 0 else "file is not a database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = header[24:28] == header[92:96]  # the in-header size is only trusted when current
    if valid and pages and size < pages * page_size:
        return f"truncated: {size} bytes, its header says {pages * page_size}"
    return None


def preflight(path: Path, timeout: float) -> None:
    """Check, before a command relies on it, that the database at `path` (if it exists
    yet) is a readable SQLite database that this process can lock for writing within
    `timeout` seconds, on a file system with room for results. Raise StoreUnavailable."""
    path = Path(path)
    free = free_bytes(path)
    if free is not None and free < MIN_FREE_BYTES and not _read_only_fs(path):
        raise StoreUnavailable(path, FULL, f"{free} bytes free on its file system")
    if not path.exists():
        return
    truncated = _truncated(path)
    if truncated:
        raise StoreUnavailable(path, DAMAGED, truncated)
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    except sqlite3.Error as exc:
        raise describe(path, exc, timeout) from None
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the header: garbage fails here
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        conn.execute("BEGIN IMMEDIATE")  # read-only or locked beyond the timeout fails here
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise describe(path, exc, timeout) from None
    finally:
        conn.close()
