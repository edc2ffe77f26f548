"""The evidence bundle an auditor keeps: the sealed rows and the chain, verifiable without
the database.

CONTRACT: `export(store, directory)` writes, from one read snapshot of the store, into a
new (or empty) `directory`:
- `tables/<table>.jsonl`: one JSON object per row, columns in schema order, typed values
  (numbers stay numbers; a BLOB is {"$b": hex}, a non-finite REAL {"$f": repr}): what
  verification reads;
- `tables/<table>.csv`: the same rows for people (NULL is empty), which verification checks
  against the JSON Lines file row by row;
- `chain.jsonl`: the chain entries (id, tbl, row_id, row_digest, link, sealed_at);
- `HEAD`: JSON with the head (count, digest, sealed_at), generated_at, agent, and each
  table's columns and row count.
It is written beside `directory` and renamed into place, so a bundle is never half there.
`verify_bundle(directory, anchor)` runs the same walk as `drcheck evidence verify`
(drcheck.evidence_verify.check) over these files, and checks HEAD and the CSV files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from drcheck import __version__
from drcheck.evidence import GENESIS, ChainHead, columns
from drcheck.evidence_verify import Broken, Verification, check, sealed_tables
from drcheck.results import utcnow
from drcheck.sqltime import ts

FORMAT = "drcheck-evidence-1"
CHAIN_COLUMNS = ("id", "tbl", "row_id", "row_digest", "link", "sealed_at")


class BundleError(Exception):
    """A bundle that cannot be written or read: one line naming the file and the cause."""


def _encode(value: Any) -> Any:
    if isinstance(value, (bytes, memoryview)):
        return {"$b": bytes(value).hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$f": repr(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b" in value:
            return bytes.fromhex(value["$b"])
        return float(value["$f"])
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return repr(value) if isinstance(value, float) else str(value)


def _csv(names: list[str], rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([_cell(row.get(n)) for n in names] for row in rows)
    return text.getvalue()


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def export(store, directory: str | os.PathLike) -> Path:
    """Write the bundle into `directory` (must not exist or be empty); return its path."""
    target = Path(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BundleError(f"{target}: exists and is not an empty directory; a bundle is never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (work / "tables").mkdir()
        conn = store.db.conn
        own = not conn.in_transaction  # one read snapshot (inside a caller's transaction: that one)
        if own:
            conn.execute("BEGIN")
        try:
            manifest = {}
            for table in sealed_tables(conn):
                names = columns(conn, table)
                rows = [dict(zip(names, values, strict=True)) for values in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
                with open(work / "tables" / f"{table}.jsonl", "w", encoding="utf-8") as out:
                    out.writelines(_line({k: _encode(v) for k, v in row.items()}) for row in rows)
                (work / "tables" / f"{table}.csv").write_text(_csv(names, rows), encoding="utf-8")
                manifest[table] = {"columns": names, "rows": len(rows)}
            head = ChainHead(0, GENESIS)
            with open(work / "chain.jsonl", "w", encoding="utf-8") as out:
                for entry in conn.execute(f"SELECT {', '.join(CHAIN_COLUMNS)} FROM evidence_chain ORDER BY id"):
                    out.write(_line(dict(zip(CHAIN_COLUMNS, entry, strict=True))))
                    head = ChainHead(entry[0], entry[4], entry[5])
        finally:
            if own:
                conn.execute("ROLLBACK")
        (work / "HEAD").write_text(json.dumps({
            "format": FORMAT, "count": head.count, "digest": head.digest, "sealed_at": head.at,
            "generated_at": ts(utcnow()), "agent": store.agent, "drcheck": __version__, "tables": manifest,
        }, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rmdir()
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return target


def read_head(path: str | os.PathLike) -> dict:
    """The HEAD file at `path` (or in bundle directory `path`) as a dict."""
    path = Path(path)
    if path.is_dir():
        path = path / "HEAD"
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
        if head.get("format") != FORMAT:
            raise BundleError(f"{path}: not a drcheck evidence HEAD (format {head.get('format')!r})")
        int(head["count"]), str(head["digest"])
        return head
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path}: unreadable evidence HEAD: {exc}") from None


def _jsonl(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise BundleError(f"{path}:{number}: not JSON: {exc}") from None


def _table_rows(directory: Path, table: str) -> Iterator[dict]:
    path = directory / "tables" / f"{table}.jsonl"
    for number, row in enumerate(_jsonl(path), 1):
        if not isinstance(row, dict) or type(row.get("id")) is not int:
            raise BundleError(f"{path}:{number}: not a row with an integer id")
        yield {k: _decode(v) for k, v in row.items()}


def _chain(directory: Path) -> Iterator[tuple]:
    path = directory / "chain.jsonl"
    if not path.exists():
        raise BundleError(f"{path}: missing")
    for entry in _jsonl(path):
        try:
            yield tuple(entry[c] for c in CHAIN_COLUMNS)
        except (KeyError, TypeError):
            raise BundleError(f"{path}: a chain entry lacks {CHAIN_COLUMNS}") from None


def _seals(directory: Path, table: str) -> list[tuple]:
    """(row_id, position, row_digest) of the chain entries sealing `table`, by row id."""
    return sorted((e[2], e[0], e[3]) for e in _chain(directory) if e[1] == table)


def _csv_problem(directory: Path, table: str, names: list[str]) -> Broken | None:
    """The first row whose CSV line differs from the JSON Lines row it should show."""
    path = directory / "tables" / f"{table}.csv"
    try:
        shown = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    except OSError:
        return Broken(table, None, f"{path.name} is missing")
    expected = list(csv.reader(io.StringIO(_csv(names, list(_table_rows(directory, table))))))
    for number, (want, got) in enumerate(zip(expected, shown, strict=False)):
        if want != got:
            row_id = want[names.index("id")] if number and "id" in names else None
            return Broken(table, int(row_id) if row_id else None,
                          f"{path.name} line {number + 1} differs from the sealed row")
    if len(expected) != len(shown):
        return Broken(table, None, f"{path.name} has {len(shown) - 1} rows, the sealed rows are {len(expected) - 1}")
    return None


def verify_bundle(directory: str | os.PathLike, anchor: tuple[int, str] | None = None) -> Verification:
    """Verify an exported bundle on its own (no database): the chain, every row, HEAD
    against the chain's end, and each CSV file against its JSON Lines file. A file that is
    not in the bundle's format at all raises BundleError naming it."""
    try:
        return _verify_bundle(Path(directory), anchor)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{directory}: not a readable evidence bundle: {exc!r}") from None


def _verify_bundle(directory: Path, anchor: tuple[int, str] | None) -> Verification:
    head = read_head(directory)
    tables = list(head.get("tables", {}))
    disorder: list[Broken] = []

    def rows_of(table: str) -> list[dict]:  # in id order; lines out of order are named after the walk
        rows = list(_table_rows(directory, table))
        ids = [row.get("id") for row in rows]
        if ids != sorted(ids, key=lambda i: (i is None, i)):
            moved = next(b for a, b in zip(ids, ids[1:], strict=False) if b is None or a is None or b < a)
            disorder.append(Broken(table, moved, "out of id order (lines reordered in the bundle)"))
            rows.sort(key=lambda row: (row.get("id") is None, row.get("id")))
        return rows

    result = check(_chain(directory), lambda t: _seals(directory, t), rows_of, tables, anchor)
    broken = result.first_broken or (disorder[0] if disorder else None)
    if broken is None and (result.head.count, result.head.digest) != (head["count"], head["digest"]):
        broken = Broken("HEAD", None, f"says {head['count']} entries ending {head['digest'][:16]}…, the chain has "
                                      f"{result.head.count} ending {result.head.digest[:16]}…")
    for table in tables:
        if broken is not None:
            break
        broken = _csv_problem(directory, table, head["tables"][table]["columns"])
    if broken is result.first_broken:
        return result
    return Verification(False, result.checked, result.head, broken, result.problems + 1, result.removed)
