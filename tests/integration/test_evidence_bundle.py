"""The evidence bundle an auditor keeps verifies on its own, names what was edited in it, and
`drcheck evidence verify/export` say so in one line with the right exit status."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import timedelta

import pytest
from click.testing import CliRunner

from drcheck.cli import cli
from drcheck.evidence import head
from drcheck.evidence_bundle import BundleError, export, read_head, verify_bundle
from drcheck.evidence_verify import Broken

from .test_evidence import T0, week


@pytest.fixture
def bundle(store, record, tmp_path):
    week(record)
    path = export(store, tmp_path / "audit" / "2025-03")
    store.close()
    (tmp_path / "state" / "drcheck.db").unlink()  # the bundle stands on its own
    return path


def lines(path):
    return path.read_text().splitlines(keepends=True)


def test_the_bundle_holds_every_sealed_row_and_verifies_without_the_database(store, record, tmp_path):
    week(record)
    top = head(store)
    path = export(store, tmp_path / "bundle")
    meta = read_head(path)
    assert (meta["count"], meta["digest"], meta["sealed_at"]) == (top.count, top.digest, top.at)
    assert meta["agent"] == store.agent and meta["generated_at"].endswith("+00:00")
    tests = meta["tables"]["restore_tests"]
    assert tests["rows"] == 7 and tests["columns"][0] == "id"
    first = json.loads(lines(path / "tables" / "restore_tests.jsonl")[0])
    assert isinstance(first["restore_seconds"], float) and first["system"] == "sis"  # typed values
    assert (path / "tables" / "restore_tests.csv").read_text().startswith(",".join(tests["columns"]) + "\n")
    assert len(lines(path / "chain.jsonl")) == top.count
    assert sorted(p.name for p in path.iterdir()) == ["HEAD", "chain.jsonl", "tables"]
    store.close()
    shutil.rmtree(tmp_path / "state")
    result = verify_bundle(path)
    assert result.ok and result.head == top


def test_an_edited_value_in_the_bundle_is_named(bundle):
    path = bundle / "tables" / "restore_tests.jsonl"
    rows = [json.loads(line) for line in lines(path)]
    rows[2]["status"] = "passed" if rows[2]["status"] == "failed" else "failed"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert verify_bundle(bundle).first_broken == Broken("restore_tests", rows[2]["id"], "changed since it was sealed")


def test_a_row_removed_from_the_bundle_is_named(bundle):
    path = bundle / "tables" / "check_results.jsonl"
    kept = lines(path)
    gone = json.loads(kept.pop(3))
    path.write_text("".join(kept))
    assert verify_bundle(bundle).first_broken == Broken(
        "check_results", gone["id"], "deleted (no compaction recorded removing it)")


def test_an_edited_csv_cell_is_named(bundle):
    path = bundle / "tables" / "restore_tests.csv"
    text = lines(path)
    row_id = text[4].split(",")[0]
    text[4] = text[4].replace("failed", "passed").replace(",sis,", ",payroll,")
    path.write_text("".join(text))
    assert verify_bundle(bundle).first_broken == Broken(
        "restore_tests", int(row_id), "restore_tests.csv line 5 differs from the sealed row")


def test_an_edited_head_or_a_cut_chain_is_named(bundle):
    meta = read_head(bundle)
    chain = bundle / "chain.jsonl"
    entries = lines(chain)
    chain.write_text("".join(entries[:-1]))
    found = verify_bundle(bundle).first_broken
    last = json.loads(entries[-1])
    assert found == Broken(last["tbl"], last["row_id"],
                           "not sealed (inserted without the chain: the sealing trigger was bypassed)")
    chain.write_text("".join(entries))
    assert verify_bundle(bundle).ok
    (bundle / "HEAD").write_text(json.dumps({**meta, "digest": "0" * 64}))
    assert verify_bundle(bundle).first_broken.table == "HEAD"
    (bundle / "HEAD").write_text(json.dumps(meta))
    chain.write_text("".join(entries[:5] + entries[6:]))
    assert "chain link broken" in verify_bundle(bundle).first_broken.why


def test_a_compacted_store_exports_a_bundle_that_verifies(store, record, tmp_path):
    week(record)
    for day in range(8, 30):  # the same point seen day after day: compaction removes the repeats' runs
        record.probe({"sis": T0}, T0 + timedelta(days=day))
    removed = store.compact(keep_days=0)["removed"]
    assert removed["probe_runs"] > 0
    result = verify_bundle(export(store, tmp_path / "bundle"))
    assert result.ok and result.removed == sum(n for t, n in removed.items() if t != "leases")


def test_a_bundle_is_never_overwritten(store, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("keep")
    with pytest.raises(BundleError, match="not an empty directory"):
        export(store, tmp_path / "b")
    assert export(store, tmp_path / "empty").is_dir() and verify_bundle(tmp_path / "empty").ok


def test_the_cli_verifies_exports_and_names_the_broken_row(loaded, store, record, tmp_path):
    week(record)
    runner = CliRunner()
    config = ["--config", str(loaded.path)]
    ok = runner.invoke(cli, [*config, "evidence", "verify"])
    assert ok.exit_code == 0 and ok.output.startswith("evidence chain intact: ")
    out = runner.invoke(cli, [*config, "evidence", "export", "--output", str(tmp_path / "bundle"), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["count"] == head(store).count
    again = runner.invoke(cli, [*config, "evidence", "export", "--output", str(tmp_path / "bundle")])
    assert again.exit_code == 1 and "not an empty directory" in again.output and "Traceback" not in again.output
    alone = runner.invoke(cli, ["evidence", "verify", "--bundle", str(tmp_path / "bundle"), "--json"])
    assert alone.exit_code == 0 and json.loads(alone.output)["ok"] is True

    victim = store.db.execute("SELECT MAX(id) FROM restore_tests").fetchone()[0]
    attacker = sqlite3.connect(store.path, isolation_level=None)
    attacker.execute("DROP TRIGGER restore_tests_no_update")
    attacker.execute("UPDATE restore_tests SET rto_seconds = 1 WHERE id = ?", [victim])
    bad = runner.invoke(cli, [*config, "evidence", "verify"])
    assert bad.exit_code == 1
    assert bad.output.strip() == f"evidence chain broken: restore_tests row {victim}: changed since it was sealed"
    as_json = json.loads(runner.invoke(cli, [*config, "evidence", "verify", "--json"]).output)
    assert as_json["ok"] is False and as_json["first_broken"] == {
        "table": "restore_tests", "row_id": victim, "why": "changed since it was sealed"}
    anchored = runner.invoke(cli, [*config, "evidence", "verify", "--against", str(tmp_path / "bundle" / "HEAD")])
    assert anchored.exit_code == 1
    garbage = tmp_path / "HEAD"
    garbage.write_text("nope")
    refused = runner.invoke(cli, [*config, "evidence", "verify", "--against", str(garbage)])
    assert refused.exit_code == 1 and "unreadable evidence HEAD" in refused.output


def test_a_failed_export_leaves_nothing_behind(store, record, tmp_path):
    week(record, 1)
    store.close()  # the export fails on its first read, after its working directory exists
    with pytest.raises(Exception, match="closed"):
        export(store, tmp_path / "out" / "bundle")
    assert list((tmp_path / "out").iterdir()) == []


def test_reordered_lines_in_the_bundle_are_named(bundle):
    path = bundle / "tables" / "restore_tests.jsonl"
    rows = lines(path)
    rows[1], rows[2] = rows[2], rows[1]
    path.write_text("".join(rows))
    moved = json.loads(rows[2])["id"]
    assert verify_bundle(bundle).first_broken == Broken("restore_tests", moved,
                                                        "out of id order (lines reordered in the bundle)")


def test_a_mangled_bundle_file_is_one_line_not_a_traceback(bundle):
    (bundle / "tables" / "canaries.jsonl").write_text('{"token": "no id"}\n')
    result = CliRunner().invoke(cli, ["evidence", "verify", "--bundle", str(bundle)])
    assert result.exit_code == 1 and "canaries.jsonl:1: not a row with an integer id" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_the_evidence_module_verifies_a_store_or_a_bundle(store, record, tmp_path):
    from drcheck import evidence

    week(record, 2)
    path = evidence.export(store, tmp_path / "b")
    assert evidence.verify(store).ok and evidence.verify(path).ok and evidence.verify(str(path)).ok
    assert evidence.verify(store).head == evidence.verify(path).head == head(store)
