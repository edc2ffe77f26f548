"""Tamper-evident evidence: every stored result carries a hash chained to the previous one.

CONTRACT:
- Every row inserted into a sealed table (`SEALED_TABLES`, plus any table a later migration
  passes to `seal_table`) gets, in the same transaction, one `evidence_chain` row: the
  row's digest (`row_digest`: SHA-256 over the table name and a canonical JSON of its
  non-NULL columns, id included) and a link = SHA-256 over the previous link, the chain
  position, the table, the row id, the digest and the sealing time (`link`). An AFTER
  INSERT trigger writes it with the SQL functions `register(conn)` defines on every
  connection the Store opens, so no code path can forget it; a connection without them
  cannot insert results at all ("no such function").
- `head(store) -> ChainHead`: the number of sealed rows and the digest of the newest link.
- `verify(store_or_bundle_dir, anchor=None) -> Verification` walks the chain and names the
  first broken row (`.ok`, `.first_broken` (table, row_id, why), `.checked`; the walk is
  drcheck.evidence_verify); `export(store, directory) -> Path` writes a bundle (CSV + JSON
  Lines + the chain + HEAD, drcheck.evidence_bundle) that `verify` accepts on its own.
- Compaction (drcheck.compaction) deletes rows on purpose: before deleting, it records each
  row's digest, recomputed from the row, in the sealed `evidence_removals` table, which
  `verify` accepts in place of the row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

# Result tables sealed by m009 (in this order for the rows that existed before it). A later
# migration seals a new results table with one line: `seal_table(db, "its_name")`.
SEALED_TABLES = ("probe_runs", "restore_points", "findings", "restore_tests", "check_results", "canaries",
                 "point_removals", "assets", "compactions", "evidence_removals", "corrective_actions",
                 "deliveries")
GENESIS = hashlib.sha256(b"drcheck evidence chain v1").hexdigest()
# the sealing time, as drcheck.sqltime.ts writes UTC (millisecond precision)
SEALED_AT_SQL = "strftime('%Y-%m-%dT%H:%M:%f', 'now') || '+00:00'"
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ChainHead:
    """The newest link of the evidence chain: how many rows it seals and its digest (hex)."""

    count: int
    digest: str
    at: str | None = None  # when the newest link was sealed (UTC ISO text)


_PLAIN = (str, int)


def _canonical(value: Any) -> Any:
    """A JSON-able value that hashes the same for the same SQLite value: an integral REAL
    equals its INTEGER, non-finite REALs and BLOBs are tagged objects."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return {"$f": repr(value)}
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    elif isinstance(value, (bytes, memoryview)):
        return {"$b": bytes(value).hex()}
    return value


def row_digest(table: str, row: dict[str, Any]) -> str:
    """SHA-256 (hex) of `table` and the row's non-NULL columns (name -> value), canonical
    JSON with sorted keys: a NULL column added later by a migration changes no digest."""
    body = {name: value if type(value) in _PLAIN else _canonical(value)
            for name, value in row.items() if value is not None}
    return hashlib.sha256(_ENCODER.encode([table, body]).encode("utf-8", "surrogatepass")).hexdigest()


def link(previous: str, position: int, table: str, row_id: int, digest: str, sealed_at: str) -> str:
    """The chain link at `position` (1-based) following `previous` (GENESIS for the first)."""
    text = f"{previous}\n{position}\n{table}\n{row_id}\n{digest}\n{sealed_at}"
    return hashlib.sha256(text.encode()).hexdigest()


def _sql_row_digest(table: str, *pairs: Any) -> str:
    it = iter(pairs)
    return row_digest(table, dict(zip(it, it, strict=True)))


def register(conn) -> None:
    """Define `drcheck_row_digest(table, name, value, ...)` and `drcheck_link(previous,
    position, table, row_id, digest, sealed_at)` on a sqlite3 connection."""
    conn.create_function("drcheck_row_digest", -1, _sql_row_digest, deterministic=True)
    conn.create_function("drcheck_link", 6, link, deterministic=True)


def columns(db, table: str) -> list[str]:
    """The table's column names, in schema order."""
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()]


def digest_sql(db, table: str, prefix: str = "") -> str:
    """The SQL expression computing a row's digest from its columns (`NEW.` in a trigger)."""
    pairs = ", ".join(f"'{name}', {prefix}\"{name}\"" for name in columns(db, table))
    return f"drcheck_row_digest('{table}', {pairs})"


def seal_table(db, table: str) -> None:
    """(Re)create the trigger sealing every row inserted into `table`. Call it again in any
    migration that adds a column to a sealed table, so new rows seal the new column."""
    db.execute(f"DROP TRIGGER IF EXISTS {table}_evidence_seal")
    db.execute(f"""CREATE TRIGGER {table}_evidence_seal AFTER INSERT ON {table} BEGIN
        INSERT INTO evidence_chain (id, tbl, row_id, row_digest, link, sealed_at)
        SELECT p.n, '{table}', NEW.id, r.d, drcheck_link(p.l, p.n, '{table}', NEW.id, r.d, r.s), r.s
        FROM (SELECT COALESCE((SELECT id FROM evidence_chain ORDER BY id DESC LIMIT 1), 0) + 1 AS n,
                     COALESCE((SELECT link FROM evidence_chain ORDER BY id DESC LIMIT 1), '{GENESIS}') AS l) p,
             (SELECT {digest_sql(db, table, "NEW.")} AS d, {SEALED_AT_SQL} AS s) r;
        END""")


def seal_existing(db, table: str) -> int:
    """Seal the rows `table` already holds, in id order (the migration sealing a store
    written before the chain existed). Return how many."""
    conn = db.conn if hasattr(db, "conn") else db
    last = conn.execute("SELECT id, link FROM evidence_chain ORDER BY id DESC LIMIT 1").fetchone()
    position, previous = last if last else (0, GENESIS)
    sealed_at = conn.execute(f"SELECT {SEALED_AT_SQL}").fetchone()[0]
    names = columns(db, table)
    insert = "INSERT INTO evidence_chain (id, tbl, row_id, row_digest, link, sealed_at) VALUES (?, ?, ?, ?, ?, ?)"
    batch, sealed = [], 0
    for values in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
        row = dict(zip(names, values, strict=True))
        position += 1
        digest = row_digest(table, row)
        previous = link(previous, position, table, row["id"], digest, sealed_at)
        batch.append((position, table, row["id"], digest, previous, sealed_at))
        if len(batch) >= 10_000:  # a big old store is sealed in bounded memory
            conn.executemany(insert, batch)
            sealed, batch = sealed + len(batch), []
    conn.executemany(insert, batch)
    return sealed + len(batch)


def head(store) -> ChainHead:
    """The chain's head: how many rows it seals, the newest link and when it was sealed (an
    empty chain: count 0, the genesis digest)."""
    conn = store.db.conn
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE name = 'evidence_chain'")}
    row = conn.execute("SELECT id, link, sealed_at FROM evidence_chain ORDER BY id DESC LIMIT 1").fetchone() \
        if tables else None
    return ChainHead(row[0], row[1], row[2]) if row else ChainHead(0, GENESIS)


def verify(store_or_bundle, anchor: tuple[int, str] | None = None):
    """Verify a Store's chain, or an exported bundle when given a directory path; `anchor`
    (count, digest) is an earlier head the chain must still hold."""
    from drcheck.evidence_bundle import verify_bundle
    from drcheck.evidence_verify import verify as verify_store

    if isinstance(store_or_bundle, (str, os.PathLike)):
        return verify_bundle(store_or_bundle, anchor)
    return verify_store(store_or_bundle, anchor)


def export(store, directory):
    """Write the evidence bundle of `store` into `directory` (new or empty); return its Path."""
    from drcheck.evidence_bundle import export as export_bundle

    return export_bundle(store, directory)
