"""The store's schema, as the list of migrations that builds it (sqlite-utils migrations).

History tables (results) are append-only by trigger; compaction (drcheck.compaction) is the
single, audited exception. The current-state tables are small and mutable: one row per
thing that exists now (a probe's newest point per system, a finding, an asset, the latest
run of each probe and test), so no read that status, reports, metrics or the scheduler make
has to scan history.

Migrations are never edited once released: a store written by any release is brought
along, keeping every row (see tests/fixtures/store-0.1.0.db).
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("drcheck")

# Release 0.1.0's result tables (m002 made them append-only).
_V1_RESULT_TABLES = ("probe_runs", "restore_points", "findings", "restore_tests", "check_results", "canaries")
# Every append-only table now; `compactions` audits the one sanctioned deletion.
RESULT_TABLES = (*_V1_RESULT_TABLES, "point_removals", "assets", "compactions")


def append_only_triggers(table: str) -> list[str]:
    """The statements making `table` append-only (also used to restore them after compaction)."""
    return [
        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for action in ("UPDATE", "DELETE")
    ]


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["probe_runs"].create(
        {
            "id": int, "probe": str, "kind": str, "action": str, "copy": str,
            "status": str, "reason": str, "started_at": str, "finished_at": str,
            "duration_seconds": float, "details": str, "agent": str,
        },
        pk="id", not_null={"probe", "kind", "action", "status", "started_at", "finished_at"},
    )
    db["probe_runs"].create_index(["probe", "action", "id"])
    db["restore_points"].create(
        {
            "id": int, "probe_run_id": int, "probe": str, "system": str, "copy": str,
            "point_time": str, "point_id": str, "size_bytes": int, "status": str,
            "host": str, "paths": str, "point_count": int, "recorded_at": str,
        },
        pk="id", foreign_keys=[("probe_run_id", "probe_runs", "id")],
        not_null={"system", "copy", "point_time", "point_id"},
    )
    db["restore_points"].create_index(["system", "copy", "id"])
    db["findings"].create(
        {
            "id": int, "probe_run_id": int, "probe": str, "severity": str, "code": str,
            "system": str, "message": str, "recorded_at": str,
        },
        pk="id", foreign_keys=[("probe_run_id", "probe_runs", "id")],
    )
    db["findings"].create_index(["probe_run_id"])
    db["restore_tests"].create(
        {
            "id": int, "test": str, "kind": str, "system": str, "probe": str, "copy": str,
            "status": str, "reason": str, "started_at": str, "finished_at": str,
            "point_id": str, "point_time": str, "restore_seconds": float,
            "verify_seconds": float, "rto_seconds": float, "rpo_seconds": float,
            "rpo_source": str, "rto_target_seconds": float, "rpo_target_seconds": float,
            "files_restored": int, "bytes_restored": int, "sandbox": str, "agent": str,
        },
        pk="id", not_null={"test", "kind", "system", "status", "started_at", "finished_at"},
    )
    db["restore_tests"].create_index(["system", "test", "id"])
    db["restore_tests"].create_index(["started_at"])
    db["check_results"].create(
        {
            "id": int, "restore_test_id": int, "name": str, "status": str,
            "evidence": str, "duration_seconds": float, "details": str,
        },
        pk="id", foreign_keys=[("restore_test_id", "restore_tests", "id")],
    )
    db["check_results"].create_index(["restore_test_id"])
    db["canaries"].create(
        {"id": int, "test": str, "system": str, "path": str, "token": str, "written_at": str},
        pk="id",
    )
    db["canaries"].create_index(["token"], unique=True)
    db["sandbox_leases"].create(
        {
            "id": int, "test": str, "path": str, "pid": int, "pid_started": str,
            "host": str, "created_at": str, "released_at": str, "release_note": str,
        },
        pk="id",
    )
    db["sandbox_leases"].create_index(["released_at"])


@migrations()
def m002_results_are_append_only(db: sqlite_utils.Database) -> None:
    # Evidence for auditors: once recorded, a result can be neither changed nor removed.
    for table in _V1_RESULT_TABLES:
        for statement in append_only_triggers(table):
            db.execute(statement)


@migrations()
def m003_leases_of_any_resource(db: sqlite_utils.Database) -> None:
    # A lease names any resource a run creates (directory, VM, scratch database, mount), and
    # the module whose cleanup(lease, loaded) removes it, so the reaper needs no registry.
    db.execute("""CREATE TABLE leases (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, resource TEXT NOT NULL, handler TEXT NOT NULL,
        owner TEXT NOT NULL, pid INTEGER, pid_started TEXT, host TEXT, created_at TEXT NOT NULL,
        released_at TEXT, release_note TEXT, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)""")
    db.execute("""INSERT INTO leases (id, kind, resource, handler, owner, pid, pid_started, host, created_at,
                                      released_at, release_note)
        SELECT id, 'directory', path, 'drcheck.sandbox', COALESCE(test, ''), pid, pid_started, host,
               created_at, released_at, release_note FROM sandbox_leases ORDER BY id""")
    db.execute("DROP TABLE sandbox_leases")
    db.execute("CREATE INDEX leases_open ON leases (kind, resource) WHERE released_at IS NULL")


@migrations()
def m004_details_and_assets(db: sqlite_utils.Database) -> None:
    db.execute("ALTER TABLE restore_tests ADD COLUMN details TEXT")  # JSON, kind-specific
    # Inventory assets, event-based: a row when an asset appears, changes or is gone.
    db.execute("""CREATE TABLE assets (
        id INTEGER PRIMARY KEY, probe_run_id INTEGER NOT NULL REFERENCES probe_runs(id),
        probe TEXT NOT NULL, action TEXT NOT NULL, event TEXT NOT NULL, source TEXT, asset_id TEXT NOT NULL,
        kind TEXT, name TEXT, protected INTEGER, system TEXT, attributes TEXT, recorded_at TEXT NOT NULL)""")
    db.execute("CREATE INDEX assets_by_asset ON assets (probe, asset_id, id)")
    db.execute("CREATE INDEX assets_by_run ON assets (probe_run_id)")
    db.execute("""CREATE TABLE current_assets (
        probe TEXT NOT NULL, asset_id TEXT NOT NULL, action TEXT NOT NULL,
        asset_row_id INTEGER NOT NULL REFERENCES assets(id),
        probe_run_id INTEGER NOT NULL REFERENCES probe_runs(id), confirmed_at TEXT NOT NULL,
        PRIMARY KEY (probe, asset_id))""")
    for statement in append_only_triggers("assets"):
        db.execute(statement)


@migrations()
def m005_current_state(db: sqlite_utils.Database) -> None:
    """Events, not probe frequency: an unchanged point or finding is confirmed in place in a
    current-state table instead of being written again by every probe run."""
    # findings: history rows now say what happened ('appeared', 'changed', 'cleared');
    # 0.1.0 rows (one copy per run) keep event NULL.
    db.execute("ALTER TABLE findings ADD COLUMN action TEXT")
    db.execute("ALTER TABLE findings ADD COLUMN event TEXT")
    db.execute("CREATE INDEX restore_points_by_run ON restore_points (probe_run_id)")
    db.execute("CREATE INDEX restore_points_by_probe ON restore_points (probe, system, copy, id)")
    db.execute("""CREATE TABLE point_removals (
        id INTEGER PRIMARY KEY, probe_run_id INTEGER NOT NULL REFERENCES probe_runs(id), probe TEXT NOT NULL,
        system TEXT NOT NULL, copy TEXT NOT NULL, restore_point_id INTEGER REFERENCES restore_points(id),
        recorded_at TEXT NOT NULL)""")
    db.execute("CREATE INDEX point_removals_by_run ON point_removals (probe_run_id)")
    db.execute("""CREATE TABLE compactions (
        id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT NOT NULL, keep_days INTEGER NOT NULL,
        cutoff TEXT NOT NULL, removed TEXT NOT NULL, agent TEXT)""")
    for table in ("point_removals", "compactions"):
        for statement in append_only_triggers(table):
            db.execute(statement)

    db.execute("""CREATE TABLE current_points (
        probe TEXT NOT NULL, system TEXT NOT NULL, copy TEXT NOT NULL,
        restore_point_id INTEGER NOT NULL REFERENCES restore_points(id), point_count INTEGER,
        confirmed_at TEXT NOT NULL, probe_run_id INTEGER NOT NULL REFERENCES probe_runs(id),
        PRIMARY KEY (probe, system, copy))""")
    db.execute("CREATE INDEX current_points_by_system ON current_points (system, copy)")
    db.execute("""CREATE TABLE current_findings (
        id INTEGER PRIMARY KEY, probe TEXT NOT NULL, action TEXT NOT NULL, code TEXT, system TEXT,
        severity TEXT, message TEXT, finding_id INTEGER NOT NULL REFERENCES findings(id),
        probe_run_id INTEGER NOT NULL REFERENCES probe_runs(id), confirmed_at TEXT NOT NULL)""")
    db.execute("CREATE INDEX current_findings_by_run ON current_findings (probe, action)")
    db.execute("""CREATE TABLE probe_latest (
        probe TEXT NOT NULL, action TEXT NOT NULL, probe_run_id INTEGER NOT NULL REFERENCES probe_runs(id),
        PRIMARY KEY (probe, action))""")
    db.execute("""CREATE TABLE test_latest (
        system TEXT NOT NULL, test TEXT NOT NULL,
        last_id INTEGER NOT NULL REFERENCES restore_tests(id), passed_id INTEGER REFERENCES restore_tests(id),
        rto_id INTEGER REFERENCES restore_tests(id), rpo_id INTEGER REFERENCES restore_tests(id),
        PRIMARY KEY (system, test))""")

    # Bring a 0.1.0 store along: the current state is what its old queries computed.
    db.execute("""INSERT INTO probe_latest (probe, action, probe_run_id)
        SELECT probe, action, MAX(id) FROM probe_runs GROUP BY probe, action""")
    db.execute("""INSERT INTO test_latest (system, test, last_id, passed_id, rto_id, rpo_id)
        SELECT system, test, MAX(id), MAX(CASE WHEN status = 'passed' THEN id END),
               MAX(CASE WHEN rto_seconds IS NOT NULL THEN id END), MAX(CASE WHEN rpo_seconds IS NOT NULL THEN id END)
        FROM restore_tests GROUP BY system, test""")
    db.execute("""INSERT OR REPLACE INTO current_points
            (probe, system, copy, restore_point_id, point_count, confirmed_at, probe_run_id)
        SELECT rp.probe, rp.system, rp.copy, rp.id, rp.point_count, COALESCE(rp.recorded_at, run.finished_at), run.id
        FROM restore_points rp JOIN (
            SELECT t.id, t.finished_at FROM probe_runs t JOIN (
                SELECT MAX(id) AS id FROM probe_runs WHERE action = 'snapshots' AND status != 'error' GROUP BY probe
            ) newest ON t.id = newest.id) run ON rp.probe_run_id = run.id
        ORDER BY rp.id""")
    db.execute("""INSERT INTO current_findings
            (probe, action, code, system, severity, message, finding_id, probe_run_id, confirmed_at)
        SELECT f.probe, l.action, f.code, f.system, f.severity, f.message, f.id, f.probe_run_id,
               COALESCE(f.recorded_at, r.finished_at)
        FROM probe_latest l JOIN findings f ON f.probe_run_id = l.probe_run_id
        JOIN probe_runs r ON r.id = l.probe_run_id ORDER BY f.id""")


@migrations()
def m006_proven_vms(db: sqlite_utils.Database) -> None:
    """When each VM was last proven restorable (a passed `vm` restore test of it) is read at
    every status and scrape: index those results by the VM they restored."""
    db.execute("""CREATE INDEX restore_tests_proven_vm ON restore_tests
        (json_extract(details, '$.vm_uuid'), started_at) WHERE kind = 'vm' AND status = 'passed'""")


@migrations()
def m007_finding_subjects(db: sqlite_utils.Database) -> None:
    """A finding code can apply to several objects of one probe (an old snapshot on each of
    several VMs): the object it is about keeps each one's history apart."""
    db.execute("ALTER TABLE findings ADD COLUMN subject TEXT")
    db.execute("ALTER TABLE current_findings ADD COLUMN subject TEXT")


@migrations()
def m008_corrective_actions(db: sqlite_utils.Database) -> None:
    """Open corrective actions (POA&M): a failing compliance rule opens an item, a pass
    closes it; both are events, so the history stays (append-only)."""
    db["corrective_actions"].create(
        {"id": int, "event": str, "rule": str, "system": str, "subject": str, "severity": str, "message": str,
         "at": str, "opened_id": int, "agent": str},
        pk="id", not_null={"event", "rule", "system", "subject", "at"})
    db["corrective_actions"].create_index(["rule", "system", "subject", "id"])
    db["corrective_actions"].create_index(["opened_id"])
    for statement in append_only_triggers("corrective_actions"):
        db.execute(statement)


@migrations()
def m009_evidence_chain(db: sqlite_utils.Database) -> None:
    """Tamper-evident evidence (drcheck.evidence): every result row is sealed in a hash chain
    by an AFTER INSERT trigger; compaction records what it removes in `evidence_removals`
    (itself sealed). Rows written before this migration are sealed now, table by table in
    id order."""
    from drcheck.evidence import SEALED_TABLES, seal_existing, seal_table

    db.execute("""CREATE TABLE evidence_chain (
        id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, row_id INTEGER NOT NULL, row_digest TEXT NOT NULL,
        link TEXT NOT NULL, sealed_at TEXT NOT NULL)""")
    db.execute("""CREATE TABLE evidence_removals (
        id INTEGER PRIMARY KEY, compaction_id INTEGER NOT NULL, tbl TEXT NOT NULL, row_id INTEGER NOT NULL,
        row_digest TEXT NOT NULL)""")
    for table in ("evidence_chain", "evidence_removals"):
        for statement in append_only_triggers(table):
            db.execute(statement)
    for table in SEALED_TABLES:
        if table in db.table_names():  # a later migration creates (and seals) its own
            seal_existing(db, table)
            seal_table(db, table)


@migrations()
def m010_deliveries(db: sqlite_utils.Database) -> None:
    """E-mail deliveries of reports (drcheck.delivery): one append-only row per event of a
    delivery: queued (attempt 0), then each attempt, sent or failed with its reason and the
    time of the next try. A delivery is pending while its newest row is not `sent`, so a
    failure is never lost and the queue survives restarts."""
    db.execute("""CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY, delivery INTEGER, report TEXT NOT NULL, text_part TEXT, plan TEXT,
        recipients TEXT NOT NULL, subject TEXT NOT NULL, slot TEXT, status TEXT NOT NULL, reason TEXT,
        at TEXT NOT NULL, attempt INTEGER NOT NULL, next_attempt_at TEXT, agent TEXT)""")
    db.execute("CREATE INDEX deliveries_by_delivery ON deliveries (delivery, id)")
    db.execute("CREATE INDEX deliveries_by_slot ON deliveries (slot) WHERE slot IS NOT NULL")
    for statement in append_only_triggers("deliveries"):
        db.execute(statement)
    from drcheck.evidence import seal_table

    seal_table(db, "deliveries")  # each attempt is evidence that the report went out (or why not)
