"""The evidence chain on a real store with real recorded results: sealing, verification of
every kind of tampering (as an attacker with the sqlite3 shell does it: dropping the
append-only triggers first), compaction as a recorded removal, and migration of a 0.1.0 store."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drcheck import evidence
from drcheck.evidence import GENESIS, SEALED_TABLES, ChainHead, head, link, row_digest
from drcheck.evidence_verify import Broken, verify
from drcheck.results import Finding, InventoryAsset, ProbeResult, RestorePoint, Severity, Status
from drcheck.store import Store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-0.1.0.db"
T0 = datetime(2025, 3, 3, 6, tzinfo=timezone.utc)


def week(record, days: int = 7) -> None:
    """Real results: daily probes (points, a finding, assets), restore tests with checks, a canary."""
    for day in range(days):
        at = T0 + timedelta(days=day)
        record.probe({"sis": at - timedelta(hours=2), "payroll": at - timedelta(hours=3)}, at)
        record.test("sis", "passed" if day % 3 else "failed", at + timedelta(hours=1), rto=timedelta(minutes=12.5),
                    rpo=timedelta(hours=3), checks=[("expected paths", "passed", "all there"),
                                                     ("canary", "passed" if day % 3 else "failed", "found")])
    record.store.record_probe(ProbeResult(
        probe="vc", kind="vmware", action="inventory", status=Status.OK, started_at=T0, finished_at=T0,
        assets=[InventoryAsset(source="vc", asset_id="vm-1", name="sis01", protected=True, system="sis", kind="vm")],
        findings=[Finding(Severity.WARNING, "old_snapshot", "a snapshot is 40 days old", "sis", "vm-1")]))
    record.store.record_canary("sis-files", "sis", "/srv/sis/.drcheck-canary", f"tok-{uuid.uuid4()}", T0)


def raw(store: Store) -> sqlite3.Connection:
    """The attacker's connection: plain sqlite3, none of drcheck's functions."""
    return sqlite3.connect(store.path, isolation_level=None)


def broken(store: Store):
    result = verify(store)
    assert not result.ok
    return result.first_broken


def test_every_result_row_is_sealed_and_the_chain_verifies(store, record):
    assert head(store) == ChainHead(0, GENESIS)
    week(record)
    sealed = sum(store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in SEALED_TABLES)
    result = verify(store)
    assert result.ok and result.first_broken is None and result.checked == sealed > 40
    top = head(store)
    assert top == result.head and top.count == sealed and len(top.digest) == 64 and top.at.endswith("+00:00")
    assert {r["tbl"] for r in store.query("SELECT DISTINCT tbl FROM evidence_chain")} == {
        "probe_runs", "restore_points", "findings", "restore_tests", "check_results", "canaries", "assets"}
    record.test("payroll", "passed", T0 + timedelta(days=9))  # one test, two checks sealed in its transaction
    assert head(store).count == top.count + 2 and verify(store).ok


def test_the_link_and_digest_are_what_the_docstring_says(store, record):
    record.probe({"sis": T0}, T0)
    first = store.query("SELECT * FROM evidence_chain ORDER BY id LIMIT 1")[0]
    row = store.query("SELECT * FROM probe_runs WHERE id = ?", [first["row_id"]])[0]
    assert first["tbl"] == "probe_runs" and first["row_digest"] == row_digest("probe_runs", row)
    assert first["link"] == link(GENESIS, 1, "probe_runs", row["id"], first["row_digest"], first["sealed_at"])
    # a NULL column a later migration adds changes no digest; an integral REAL hashes as its INTEGER
    assert row_digest("t", {"id": 1, "a": 2.0}) == row_digest("t", {"id": 1, "a": 2, "new": None})
    assert row_digest("t", {"id": 1, "a": 2.5}) != row_digest("t", {"id": 1, "a": 2})
    assert row_digest("t", {"id": 1, "a": "x"}) != row_digest("u", {"id": 1, "a": "x"})


EDITS = {
    "probe_runs": "UPDATE probe_runs SET status = 'ok', reason = NULL WHERE id = ?",
    "restore_points": "UPDATE restore_points SET point_time = '2025-03-09T05:00:00.000000+00:00' WHERE id = ?",
    "findings": "UPDATE findings SET severity = 'info' WHERE id = ?",
    "restore_tests": "UPDATE restore_tests SET status = 'passed', rto_seconds = 60.0 WHERE id = ?",
    "check_results": "UPDATE check_results SET evidence = 'all there (edited)' WHERE id = ?",
    "canaries": "UPDATE canaries SET written_at = '2025-03-09T00:00:00.000000+00:00' WHERE id = ?",
    "assets": "UPDATE assets SET protected = 0 WHERE id = ?",
}


@pytest.mark.parametrize("table", sorted(EDITS))
def test_editing_one_stored_result_names_it(store, record, table):
    week(record)
    victim = store.db.execute(f"SELECT MIN(id) FROM {table}").fetchone()[0]
    attacker = raw(store)
    attacker.execute(f"DROP TRIGGER {table}_no_update")
    assert attacker.execute(EDITS[table], [victim]).rowcount == 1
    assert broken(store) == Broken(table, victim, "changed since it was sealed")


@pytest.mark.parametrize("table", ["probe_runs", "restore_tests", "check_results", "findings", "canaries"])
def test_deleting_one_stored_result_names_it(store, record, table):
    week(record)
    victim = store.db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
    attacker = raw(store)
    attacker.execute("PRAGMA foreign_keys = OFF")
    attacker.execute(f"DROP TRIGGER {table}_no_delete")
    attacker.execute(f"DELETE FROM {table} WHERE id = ?", [victim])
    assert broken(store) == Broken(
        table, victim, "deleted (no compaction recorded removing it)")


def test_reordering_stored_results_names_the_row(store, record):
    week(record)
    a, b = [r["id"] for r in store.query("SELECT id FROM restore_tests ORDER BY id LIMIT 2")]
    attacker = raw(store)
    attacker.execute("DROP TRIGGER restore_tests_no_update")
    attacker.execute("UPDATE restore_tests SET id = -1 WHERE id = ?", [a])  # swap two tests' places
    attacker.execute("UPDATE restore_tests SET id = ? WHERE id = ?", [a, b])
    attacker.execute("UPDATE restore_tests SET id = ? WHERE id = -1", [b])
    assert broken(store) == Broken(
        "restore_tests", a, f"holds row {b}'s sealed content (rows reordered or renumbered)")
    assert verify(store).problems == 2


def test_a_row_inserted_behind_the_chain_is_named(store, record):
    week(record)
    attacker = raw(store)
    with pytest.raises(sqlite3.OperationalError, match="no such function: drcheck_row_digest"):
        attacker.execute("INSERT INTO restore_tests (test, kind, system, status, started_at, finished_at) "
                         "VALUES ('t', 'files', 'sis', 'passed', 'x', 'y')")
    attacker.execute("DROP TRIGGER restore_tests_evidence_seal")
    row_id = attacker.execute("INSERT INTO restore_tests (test, kind, system, status, started_at, finished_at) "
                              "VALUES ('t', 'files', 'sis', 'passed', 'x', 'y')").lastrowid
    assert broken(store) == Broken(
        "restore_tests", row_id, "not sealed (inserted without the chain: the sealing trigger was bypassed)")


def test_a_dropped_sealing_trigger_alone_is_named(store, record):
    week(record, 1)
    raw(store).execute("DROP TRIGGER canaries_evidence_seal")
    assert broken(store) == Broken(
        "canaries", None, "its sealing trigger is gone: new rows are not sealed")


def test_editing_the_chain_itself_is_named(store, record):
    week(record)
    attacker = raw(store)
    attacker.execute("DROP TRIGGER evidence_chain_no_update")
    entry = store.query("SELECT * FROM evidence_chain WHERE id = 5")[0]
    attacker.execute("UPDATE evidence_chain SET sealed_at = '2024-01-01T00:00:00.000+00:00' WHERE id = 5")
    found = broken(store)
    assert (found.table, found.row_id) == (entry["tbl"], entry["row_id"])
    assert found.why.startswith("chain link broken at entry 5")


def test_cutting_an_entry_out_of_the_chain_is_named(store, record):
    week(record)
    attacker = raw(store)
    attacker.execute("DROP TRIGGER evidence_chain_no_delete")
    attacker.execute("DELETE FROM evidence_chain WHERE id = 7")
    after = store.query("SELECT * FROM evidence_chain WHERE id = 8")[0]
    found = broken(store)
    assert (found.table, found.row_id) == (after["tbl"], after["row_id"])
    assert "chain link broken" in found.why and "removed or reordered" in found.why


def test_a_rewritten_chain_passes_alone_but_not_against_an_earlier_head(store, record):
    """Whoever can run drcheck's own code can reseal everything: an auditor's earlier head catches it."""
    week(record)
    earlier = head(store)
    victim = store.db.execute("SELECT MIN(id) FROM restore_tests").fetchone()[0]
    attacker = raw(store)
    for statement in ("DROP TRIGGER restore_tests_no_update", "DROP TRIGGER evidence_chain_no_delete"):
        attacker.execute(statement)
    attacker.execute("UPDATE restore_tests SET status = 'passed' WHERE id = ?", [victim])
    attacker.execute("DELETE FROM evidence_chain")
    for table in SEALED_TABLES:
        evidence.seal_existing(store.db, table)  # a full reseal with drcheck's functions
    store.db.conn.commit()
    assert verify(store).ok
    found = verify(store, anchor=(earlier.count, earlier.digest)).first_broken
    assert found.why.startswith("the chain was rewritten since the anchored head")
    assert verify(store, anchor=(earlier.count + 10_000, earlier.digest)).first_broken.why.startswith(
        "shorter than the anchored head")


def test_a_genuine_earlier_head_anchors_a_grown_chain(store, record):
    week(record, 2)
    earlier = head(store)
    week(record, 3)
    assert verify(store, anchor=(earlier.count, earlier.digest)).ok


def test_compaction_is_a_recorded_removal_the_chain_accepts(tmp_path):
    with Store(tmp_path / "db") as store:
        for day in range(60):
            at = T0 + timedelta(days=day)
            store.record_probe(ProbeResult(
                probe="p", kind="restic", action="snapshots", status=Status.OK, started_at=at, finished_at=at,
                copy="c", newest=[RestorePoint("a", "c", T0 + timedelta(days=day // 10), f"pt{day // 10}")]))
        result = store.compact(keep_days=0)
        assert result["removed"]["probe_runs"] > 0
        removals = store.query("SELECT * FROM evidence_removals")
        assert len(removals) == sum(n for t, n in result["removed"].items() if t != "leases")
        assert {r["compaction_id"] for r in removals} == {store.query("SELECT id FROM compactions")[0]["id"]}
        checked = verify(store)
        assert checked.ok and checked.removed == len(removals)
        # the removal records are themselves sealed: editing one is named
        attacker = raw(store)
        attacker.execute("DROP TRIGGER evidence_removals_no_update")
        attacker.execute("UPDATE evidence_removals SET row_digest = 'x' WHERE id = 1")
        found = verify(store).first_broken
        assert found.table in ("evidence_removals", "probe_runs")


def test_a_row_changed_before_compaction_removed_it_is_named(tmp_path):
    with Store(tmp_path / "db") as store:
        for day in range(10):
            at = T0 + timedelta(days=day)
            store.record_probe(ProbeResult(probe="p", kind="restic", action="snapshots", status=Status.OK,
                                           started_at=at, finished_at=at))
        attacker = raw(store)
        attacker.execute("DROP TRIGGER probe_runs_no_update")
        attacker.execute("UPDATE probe_runs SET reason = 'edited' WHERE id = 5")
        attacker.close()
        store.compact(keep_days=0)
        assert verify(store).first_broken == Broken(
            "probe_runs", 5, "changed before compaction 1 removed it")


def test_a_0_1_0_store_migrates_into_a_verifiable_chain(tmp_path):
    path = tmp_path / "drcheck.db"
    shutil.copy(FIXTURE, path)
    with Store(path) as store:
        rows = sum(store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in SEALED_TABLES)
        result = verify(store)
        assert result.ok and result.checked == rows > 0
        # sealed table by table in id order
        order = [(r["tbl"], r["row_id"]) for r in store.query("SELECT tbl, row_id FROM evidence_chain ORDER BY id")]
        assert order == sorted(order, key=lambda e: (SEALED_TABLES.index(e[0]), e[1]))
        store.compact(keep_days=0)
        assert verify(store).ok


def test_a_later_column_on_a_sealed_table_keeps_verifying_once_resealed(store, record):
    week(record, 2)
    store.db.execute("ALTER TABLE restore_tests ADD COLUMN note TEXT")
    evidence.seal_table(store.db, "restore_tests")
    store.db.conn.commit()
    record.test("sis", "passed", T0 + timedelta(days=5))
    raw(store).execute("DROP TRIGGER restore_tests_no_update")
    assert verify(store).ok
    store.db.execute("UPDATE restore_tests SET note = 'x' WHERE id = 1")
    store.db.conn.commit()
    assert broken(store) == Broken("restore_tests", 1, "changed since it was sealed")


def test_verify_reads_inside_a_callers_transaction(store, record):
    week(record, 1)
    with store.write_lock():
        assert verify(store).ok
    assert verify(store).ok


def test_every_append_only_table_is_sealed_over_all_its_columns(tmp_path):
    """A guard for later migrations: a new append-only (results) table must be sealed
    (`seal_table(db, name)`), and a column added to a sealed table must be resealed."""
    from drcheck.evidence_verify import sealed_tables

    with Store(tmp_path / "db") as store:
        conn = store.db.conn
        triggers = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
        append_only = {name[: -len("_no_update")] for name in triggers if name.endswith("_no_update")}
        assert append_only - {"evidence_chain"} <= set(sealed_tables(conn))
        for table in sealed_tables(conn):
            sql = triggers[f"{table}_evidence_seal"]
            missing = [c for c in evidence.columns(conn, table) if f'NEW."{c}"' not in sql]
            assert missing == [], f"{table}: the sealing trigger leaves out {missing}"
