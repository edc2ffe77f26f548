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


def check(chain: Iterable[tuple], rows_of: Callable[[str], Iterable[dict]], tables: Iterable[str],
          anchor: tuple[int, str] | None = None) -> Verification:
    """Walk `chain` ((id, tbl, row_id, row_digest, link, sealed_at) in id order) against
    the rows `rows_of(table)` yields (column -> value, any order) for each of `tables`."""
    problems: list[tuple[float, int, Broken]] = []

    def problem(position: float, table: str, row_id: int | None, why: str) -> None:
        problems.append((position, len(problems), Broken(table, row_id, why)))

    sealed: dict[tuple[str, int], tuple[int, str]] = {}
    previous, count, last = GENESIS, 0, ChainHead(0, GENESIS)
    anchored = anchor is None
    for position, tbl, row_id, digest, stored, sealed_at in chain:
        count += 1
        if position != count:
            problem(count, tbl, row_id, f"chain link broken: entry {position} stands at position {count} "
                                        "(chain entries removed or reordered)")
        elif link(previous, position, tbl, row_id, digest, sealed_at) != stored:
            problem(position, tbl, row_id, f"chain link broken at entry {position}: its link does not follow "
                                           "from the previous one (the chain was edited)")
        if (tbl, row_id) in sealed:
            problem(position, tbl, row_id, f"sealed twice (chain entries {sealed[tbl, row_id][0]} and {position})")
        sealed[tbl, row_id] = (position, digest)
        if anchor is not None and position == anchor[0]:
            anchored = stored == anchor[1]
            if not anchored:
                problem(position, tbl, row_id, f"the chain was rewritten since the anchored head (entry {position} "
                                               f"is no longer {anchor[1][:16]}…)")
                anchored = True  # reported
        previous, last = stored, ChainHead(position, stored, sealed_at)
    if not anchored:
        problem(LATE, "evidence_chain", None, f"shorter than the anchored head ({count} of {anchor[0]} entries): "
                                              "the chain was cut")

    tables = list(dict.fromkeys([*tables, *(t for t, _ in sealed)]))
    removals = {(r["tbl"], r["row_id"]): (r["row_digest"], r["compaction_id"])
                for r in (rows_of("evidence_removals") if "evidence_removals" in tables else ())}
    present: set[tuple[str, int]] = set()
    for table in tables:
        unsealed: list[int] = []
        guesses = 0
        for row in rows_of(table):
            key = (table, row["id"])
            present.add(key)
            seal = sealed.get(key)
            if seal is None:
                unsealed.append(row["id"])
            elif row_digest(table, row) != seal[1]:
                guesses += 1
                other = _whose_content(table, row, sealed) if guesses <= 10 else None
                why = (f"holds row {other}'s sealed content (rows reordered or renumbered)" if other is not None
                       else "changed since it was sealed")
                problem(seal[0], table, row["id"], why)
        for row_id in sorted(unsealed):
            problem(LATE, table, row_id, "not sealed (inserted without the chain: the sealing trigger was bypassed)")
    for key, (position, digest) in sealed.items():
        if key in present:
            continue
        removal = removals.get(key)
        if removal is None:
            problem(position, *key, "deleted (no compaction recorded removing it)")
        elif removal[0] != digest:
            problem(position, *key, f"changed before compaction {removal[1]} removed it")

    problems.sort(key=lambda p: (p[0], p[1]))
    first = problems[0][2] if problems else None
    return Verification(not problems, count, last, first, len(problems),
                        sum(1 for key in removals if key in sealed and key not in present))


def _whose_content(table: str, row: dict, sealed: dict) -> int | None:
    """The id of the sealed row of `table` whose content `row` holds now, if any."""
    for (tbl, row_id), (_position, digest) in sealed.items():
        if tbl == table and row_id != row["id"] and row_digest(table, {**row, "id": row_id}) == digest:
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


def verify(store, anchor: tuple[int, str] | None = None) -> Verification:
    """Verify the chain of the store, in one read snapshot. Also a problem: a sealed
    table whose sealing trigger is gone (its new rows would not be sealed)."""
    conn = store.db.conn
    conn.execute("BEGIN")
    try:
        tables = sealed_tables(conn)
        chain = conn.execute("SELECT id, tbl, row_id, row_digest, link, sealed_at FROM evidence_chain ORDER BY id")
        result = check(chain, lambda t: _rows(conn, t) if t in tables else (), tables, anchor)
        triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    finally:
        conn.execute("ROLLBACK")
    gone = [t for t in tables if f"{t}_evidence_seal" not in triggers]
    if result.ok and gone:
        return Verification(False, result.checked, result.head,
                            Broken(gone[0], None, "its sealing trigger is gone: new rows are not sealed"),
                            len(gone), result.removed)
    return result
