"""Verifying the evidence chain (drcheck.evidence), in a store or in an exported bundle.

CONTRACT: `check(chain, rows_of, tables, anchor)` is the one walk both use. It recomputes
every link from the previous one and every row's digest from the row as it is now, and
returns a `Verification` naming the first problem in chain order:
- a row whose content differs from what was sealed ("changed"; "holds row N's content"
  when rows were swapped or renumbered),
- a sealed row that is gone and that no compaction recorded removing ("deleted"), or that a
  compaction recorded with a different digest ("changed before compaction removed it"),
- a row with no seal ("not sealed": inserted with the sealing trigger dropped),
- a chain entry whose link does not follow from the previous one, or whose position is not
  the next one ("chain link broken": the chain itself was edited, cut or reordered),
- with an `anchor` (count, digest) from an earlier head (an auditor's HEAD file): a chain
  that no longer has that link at that position ("rewritten since").
`verify(store, anchor)` reads one snapshot of the store; `verify_bundle` is in
drcheck.evidence_bundle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

from drcheck.evidence import GENESIS, SEALED_TABLES, ChainHead, columns, link, row_digest

LATE = float("inf")  # problems found after the chain walk sort after every chain position


@dataclass(frozen=True)
class Broken:
    """The first problem: the table and row it concerns (None: the table or chain as a whole)."""

    table: str
    row_id: int | None
    why: str

    def line(self) -> str:
        where = f"{self.table} row {self.row_id}" if self.row_id is not None else self.table
        return f"{where}: {self.why}"


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int  # chain entries walked
    head: ChainHead
    first_broken: Broken | None
    problems: int  # how many problems in all (only the first is named)
    removed: int  # sealed rows compaction removed on purpose

    def as_json(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "head": asdict(self.head), "problems": self.problems,
                "removed_by_compaction": self.removed,
                "first_broken": asdict(self.first_broken) if self.first_broken else None}


def check(chain: Iterable[tuple], seals_of: Callable[[str], Iterable[tuple]],
          rows_of: Callable[[str], Iterable[dict]], tables: Iterable[str],
          anchor: tuple[int, str] | None = None) -> Verification:
    """Walk `chain` ((id, tbl, row_id, row_digest, link, sealed_at) in id order) for its
    links, then each table's rows against its seals: `seals_of(table)` yields (row_id,
    position, row_digest) sorted by row_id, `rows_of(table)` the rows (column -> value) in id
    order. Memory stays per table, not per chain."""
    problems: list[tuple[float, int, Broken]] = []

    def problem(position: float, table: str, row_id: int | None, why: str) -> None:
        problems.append((position, len(problems), Broken(table, row_id, why)))

    previous, count, last = GENESIS, 0, ChainHead(0, GENESIS)
    named: dict[str, None] = dict.fromkeys(tables)
    anchored = anchor is None
    for position, tbl, row_id, digest, stored, sealed_at in chain:
        count += 1
        named.setdefault(tbl)
        if position != count:
            problem(count, tbl, row_id, f"chain link broken: entry {position} stands at position {count} "
                                        "(chain entries removed or reordered)")
        elif link(previous, position, tbl, row_id, digest, sealed_at) != stored:
            problem(position, tbl, row_id, f"chain link broken at entry {position}: its link does not follow "
                                           "from the previous one (the chain was edited)")
        if anchor is not None and position == anchor[0]:
            anchored = True
            if stored != anchor[1]:
                problem(position, tbl, row_id, f"the chain was rewritten since the anchored head (entry {position} "
                                               f"is no longer {anchor[1][:16]}…)")
        previous, last = stored, ChainHead(position, stored, sealed_at)
    if not anchored:
        problem(LATE, "evidence_chain", None, f"shorter than the anchored head ({count} of {anchor[0]} entries): "
                                              "the chain was cut")

    removals = {(r["tbl"], r["row_id"]): (r["row_digest"], r["compaction_id"])
                for r in (rows_of("evidence_removals") if "evidence_removals" in named else ())}
    removed = sum(_merge(table, seals_of, rows_of, removals, problem) for table in named)
    problems.sort(key=lambda p: (p[0], p[1]))
    first = problems[0][2] if problems else None
    return Verification(not problems, count, last, first, len(problems), removed)


def _merge(table: str, seals_of, rows_of, removals: dict, problem) -> int:
    """Match the table's rows with its seals (both in id order), reporting each mismatch;
    return how many sealed rows are absent as a compaction recorded."""
    seals, rows = iter(seals_of(table)), iter(rows_of(table))
    seal, row = next(seals, None), next(rows, None)
    removed, guesses, last_seal, last_row = 0, 0, None, None
    while seal is not None or row is not None:
        if seal is not None and seal[0] == last_seal:
            problem(seal[1], table, seal[0], f"sealed twice (chain entry {seal[1]} seals it again)")
            seal = next(seals, None)
        elif row is not None and last_row is not None and row["id"] <= last_row:
            problem(LATE, table, row["id"], "out of id order (rows reordered)")
            row = next(rows, None)
        elif seal is not None and (row is None or seal[0] < row["id"]):  # sealed, not there
            removal = removals.get((table, seal[0]))
            if removal is None:
                problem(seal[1], table, seal[0], "deleted (no compaction recorded removing it)")
            elif removal[0] != seal[2]:
                problem(seal[1], table, seal[0], f"changed before compaction {removal[1]} removed it")
            else:
                removed += 1
            last_seal, seal = seal[0], next(seals, None)
        elif seal is None or row["id"] < seal[0]:  # there, not sealed
            problem(LATE, table, row["id"], "not sealed (inserted without the chain: the sealing trigger was bypassed)")
            last_row, row = row["id"], next(rows, None)
        else:
            if row_digest(table, row) != seal[2]:
                guesses += 1
                other = _whose_content(table, row, seals_of) if guesses <= 3 else None
                problem(seal[1], table, row["id"],
                        f"holds row {other}'s sealed content (rows reordered or renumbered)" if other is not None
                        else "changed since it was sealed")
            last_seal, seal = seal[0], next(seals, None)
            last_row, row = row["id"], next(rows, None)
    return removed


def _whose_content(table: str, row: dict, seals_of) -> int | None:
    """The id of the sealed row of `table` whose content `row` holds now, if any."""
    for row_id, _position, digest in seals_of(table):
        if row_id != row["id"] and row_digest(table, {**row, "id": row_id}) == digest:
            return row_id
    return None


def sealed_tables(conn) -> list[str]:
    """The tables the chain covers in this database: SEALED_TABLES, those a sealing trigger
    names, and those chain entries name (a table seen in any of these is checked)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    triggered = [r[0] for r in conn.execute("SELECT tbl_name FROM sqlite_master WHERE type = 'trigger' "
                                            "AND name LIKE '%\\_evidence\\_seal' ESCAPE '\\' ORDER BY name")]
    return [t for t in dict.fromkeys([*SEALED_TABLES, *triggered]) if t in names]


def _rows(conn, table: str) -> Iterator[dict]:
    names = columns(conn, table)
    for values in conn.execute(f"SELECT * FROM {table} ORDER BY id"):
        yield dict(zip(names, values, strict=True))


def _seals(conn, table: str) -> Iterator[tuple]:
    yield from conn.execute("SELECT row_id, id, row_digest FROM evidence_chain WHERE tbl = ? ORDER BY row_id, id",
                            [table])


def verify(store, anchor: tuple[int, str] | None = None) -> Verification:
    """Verify the chain of the store, in one read snapshot. Also a problem: a sealed
    table whose sealing trigger is gone (its new rows would not be sealed)."""
    conn = store.db.conn
    own = not conn.in_transaction  # one read snapshot (inside a caller's transaction: that one)
    if own:
        conn.execute("BEGIN")
    try:
        tables = sealed_tables(conn)
        chain = conn.execute("SELECT id, tbl, row_id, row_digest, link, sealed_at FROM evidence_chain ORDER BY id")
        result = check(chain, lambda t: _seals(conn, t), lambda t: _rows(conn, t) if t in tables else (), tables,
                       anchor)
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    finally:
        if own:
            conn.execute("ROLLBACK")
    gone = [t for t in tables if f"{t}_evidence_seal" not in triggers]
    if result.ok and gone:
        return Verification(False, result.checked, result.head,
                            Broken(gone[0], None, "its sealing trigger is gone: new rows are not sealed"),
                            len(gone), result.removed)
    return result
