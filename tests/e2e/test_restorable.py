"""Does a green result mean the backup restores what the system holds? Realistic broken
backups made with the real restic, each beside a healthy twin that passes."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from drcheck.results import Status

from .conftest import RESTIC, utc

pytestmark = pytest.mark.e2e

OLD = time.time() - 30 * 86400  # a month old: long before any snapshot below


def check(result, name):
    return next(c for c in result.checks if c.name == name)


def age_source(lab, when: float = OLD) -> None:
    """Make every live file old, as on a server whose data changed long before the backup."""
    for path in lab.source.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (when, when))


def restic_in(lab, cwd, *args: str) -> str:
    """Run restic from `cwd` (relative paths are what the layout tests are about)."""
    env = {**os.environ, "RESTIC_REPOSITORY": lab.repository, "RESTIC_PASSWORD_FILE": str(lab.password_file),
           "RESTIC_CACHE_DIR": str(lab.root / "cache"), "TZ": "UTC"}
    done = subprocess.run([RESTIC, *args], env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=300)
    return done.stdout


def status_of(lab) -> dict:
    done = lab.cli("status", "--json")
    (system,) = json.loads(done.stdout)["systems"]
    return system


# -- completeness -------------------------------------------------------------------------


def old_archive(lab) -> None:
    for year in (2019, 2020):
        for i in range(5):
            lab.write(f"archive/{year}/report{i}.txt", f"report {year} {i}\n" * 20)
    age_source(lab)


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "old-directory-missing"])
def test_snapshot_missing_an_old_directory_fails_completeness_naming_it(lab, broken):
    old_archive(lab)
    lab.plant_canary()
    lab.backup(excludes=("archive",) if broken else ())  # the job silently left a directory out

    result = lab.restore_test()

    complete = check(result, "completeness")
    if broken:
        assert result.status is Status.FAILED
        assert complete.status is Status.FAILED
        assert "10 source file(s) older than the point are missing" in complete.evidence
        assert f"{lab.source}/archive/ (10 files)" in complete.evidence
        assert complete.details["missing_files"] == 10
    else:
        assert result.status is Status.PASSED, result.reason
        assert complete.status is Status.PASSED
        assert complete.details["share"] == 1.0 and complete.details["missing_files"] == 0
        assert "all present with matching sizes" in complete.evidence


def test_knowingly_excluded_directory_is_counted_not_missing(lab):
    old_archive(lab)
    lab.plant_canary()
    lab.backup(excludes=("archive",))
    lab.configure(restore_tests={"app-files": {"completeness": {"excludes": ["archive"]}}})

    result = lab.restore_test()

    complete = check(result, "completeness")
    assert result.status is Status.PASSED, result.reason
    assert "excluded by pattern: 0 file(s), 1 dir(s)" in complete.evidence
    assert complete.details["excluded_dirs"] == 1


def test_files_changed_since_the_point_are_not_failures(lab):
    age_source(lab)
    lab.plant_canary()
    lab.backup(at=utc(minutes=30))
    lab.write("docs/new-today.txt", "written after the backup\n")
    lab.write("docs/doc01.txt", "edited after the backup\n")

    result = lab.restore_test()

    complete = check(result, "completeness")
    assert complete.status is Status.PASSED, complete.evidence
    assert complete.details["changed_since_point"] == 2


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "zero-length"])
def test_files_stored_zero_length_at_unchanged_mtime_fail(lab, broken):
    age_source(lab)
    docs = sorted((lab.source / "docs").iterdir())[:12]
    originals = {p: (p.read_bytes(), p.stat().st_mtime) for p in docs}
    if broken:  # what the backup saw: placeholders of the right mtime and no content
        for path, (_, mtime) in originals.items():
            path.write_bytes(b"")
            os.utime(path, (mtime, mtime))
    lab.plant_canary()
    lab.backup()
    for path, (content, mtime) in originals.items():
        path.write_bytes(content)
        os.utime(path, (mtime, mtime))

    result = lab.restore_test()

    complete, spot = check(result, "completeness"), check(result, "spot_check")
    if broken:
        assert result.status is Status.FAILED
        assert complete.status is Status.FAILED and complete.details["size_mismatches"] == 12
        assert "12 file(s) stored with another size at an unchanged mtime" in complete.evidence
        assert f"{docs[0]} (stored 0 bytes" in complete.evidence
        # never "changed at the source": the spot check fails them too, sampled or not
        assert spot.status is Status.FAILED and spot.details["size_differs"] == 12
    else:
        assert result.status is Status.PASSED, result.reason
        assert spot.status is Status.PASSED and spot.details["size_differs"] == 0


def test_spot_check_of_every_file(lab):
    lab.plant_canary()
    lab.backup()
    lab.configure(restore_tests={"app-files": {"spot_check": {"percent": 100}}})

    spot = check(lab.restore_test(), "spot_check")

    assert spot.status is Status.PASSED
    assert spot.details["sampled"] == spot.details["eligible"] >= 32


# -- layout read from the snapshot ----------------------------------------------------------


@pytest.mark.parametrize("cwd, given, stored_as", [
    ("source", ".", "/"),           # cd /srv/app && restic backup .
    ("parent", "app", "/app"),      # cd /srv && restic backup app
    ("parent", None, None),         # restic backup /srv/app (absolute): the healthy twin
], ids=["dot", "relative-name", "absolute"])
def test_snapshot_layout_is_read_not_assumed(lab, cwd, given, stored_as):
    lab.plant_canary()
    where = lab.source if cwd == "source" else lab.source.parent
    restic_in(lab, where, "backup", "--host", "app01", given or str(lab.source))
    snap = json.loads(restic_in(lab, where, "snapshots", "--json"))[-1]
    assert snap["paths"] == [str(lab.source)]  # restic records the absolute path either way

    result = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert all(c.status is Status.PASSED for c in result.checks)  # db integrity ran on {data}
    complete = check(result, "completeness")
    assert complete.details["missing_files"] == 0 and complete.details["share"] == 1.0
    if stored_as is None:
        assert complete.details["layout"] == f"{lab.source} stored as is"
    else:
        assert f"layout read from the point: {lab.source} stored as {stored_as}" in complete.evidence
    assert result.files_restored == complete.details["source_files"]


def test_snapshot_of_several_paths_maps_each(lab):
    other = lab.root / "live" / "etc-app"
    other.mkdir()
    (other / "app.conf").write_text("port = 8080\n")
    lab.plant_canary()
    restic_in(lab, lab.root, "backup", "--host", "app01", str(lab.source), str(other))
    lab.configure(probes={"repo": {"systems": [{"system": "app", "paths": [str(lab.source), str(other)]}]}},
                  restore_tests={"app-files": {"canary": {"path": str(lab.source / ".drcheck-canary")},
                                               "expected_paths": [str(other / "app.conf")], "commands": []}})

    result = lab.restore_test()

    assert result.status is Status.PASSED, result.reason
    assert check(result, "completeness").details["source_files"] == 34


# -- the wrong source -----------------------------------------------------------------------


def host_rule(lab) -> None:
    lab.configure(probes={"repo": {"systems": [{"system": "app", "hosts": ["app01"], "paths": [str(lab.source)]}]}})


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "other-directory"])
def test_newest_point_of_the_wrong_directory_fails_status_at_once(lab, broken):
    host_rule(lab)
    lab.plant_canary()
    lab.backup(at=utc(hours=2))
    assert lab.probe().status is Status.OK
    assert lab.restore_test().status is Status.PASSED
    wrong = lab.root / "live" / "app-old"
    (wrong / "x").mkdir(parents=True)
    (wrong / "x" / "stale.txt").write_text("not the system\n")
    restic_in(lab, lab.root, "backup", "--host", "app01", str(wrong if broken else lab.source))

    probe = lab.probe()
    system = status_of(lab)

    if broken:
        assert probe.status is Status.FAILED
        (finding,) = [f for f in probe.findings if f.code == "wrong_source"]
        assert f"does not cover {lab.source}" in finding.message and str(wrong) in finding.message
        assert system["ok"] is False
        assert any(p.startswith("wrong_source: ") for p in system["problems"])
        test = lab.restore_test()  # restoring it shows what is missing
        assert test.status is Status.FAILED
        assert "missing" in check(test, "completeness").evidence
    else:
        assert probe.status is Status.OK and not probe.findings
        assert system["ok"] is True, system["problems"]


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "shrunk"])
def test_newest_point_holding_a_fraction_of_the_previous_fails(lab, broken):
    counting = lab.wrapper("restic-counting", f'echo "$@" >> {lab.root}/calls\nexec "$RESTIC" "$@"')
    lab.configure(probes={"repo": {"restic_command": str(counting)}})
    lab.backup(at=utc(hours=2))
    lab.probe()
    # e.g. the data volume was not mounted: most of the source is gone from the backup
    lab.backup(excludes=("data", "blob.bin", "docs") if broken else ())

    first, second = lab.probe(), lab.probe()

    codes = [f.code for f in first.findings]
    if broken:
        assert first.status is Status.FAILED and codes == ["wrong_source"]
        assert "of the previous point" in first.findings[0].message
        assert [f.code for f in second.findings] == ["wrong_source"]  # stays failed, from the cache
        assert any(p.startswith("wrong_source: ") for p in status_of(lab)["problems"])
    else:
        assert first.status is Status.OK and codes == []
    stats_calls = [line for line in (lab.root / "calls").read_text().splitlines() if "stats" in line.split()[:2]]
    assert len(stats_calls) == 2  # each point measured once, never again for an unchanged point
    rows = lab.rows("SELECT point_id, size_bytes FROM restore_points ORDER BY id")
    # each point is one row (an unchanged point is confirmed, not written again), sized once
    assert len(rows) == len({r["point_id"] for r in rows}) == 2 and all(r["size_bytes"] is not None for r in rows)
    assert (rows[-1]["size_bytes"] < rows[0]["size_bytes"] / 2) is broken


# -- a restore losing data the repository lacks ---------------------------------------------


@pytest.mark.parametrize("broken", [False, True], ids=["healthy", "missing-pack"])
def test_missing_pack_fails_the_restore_naming_files(lab, broken):
    lab.plant_canary()
    lab.backup()
    if broken:
        biggest = max(lab.data_packs(), key=lambda p: p.stat().st_size)
        biggest.unlink()

    result = lab.restore_test()

    if broken:
        assert result.status is Status.FAILED, result.reason  # a bad backup, not "could not test"
        assert result.reason.startswith("backup data is missing or damaged (pack ")
        assert "could not be restored" in result.reason and f"{lab.source}/" in result.reason  # names the files
        assert lab.sandbox_entries() == []
    else:
        assert result.status is Status.PASSED, result.reason


# -- not restic at all ----------------------------------------------------------------------


@pytest.mark.parametrize("program", ["/bin/true", "garbage", "restic"])
def test_a_program_that_is_not_restic_is_an_error_saying_so(lab, program):
    lab.backup()
    if program == "garbage":
        command = str(lab.wrapper("restic-impostor", 'echo "Hello from backup-tool 9.1"; echo "[]"'))
    elif program == "restic":
        command = RESTIC
    else:
        command = program
    lab.configure(probes={"repo": {"restic_command": command}})

    result = lab.probe()

    if program == "restic":
        assert result.status is Status.OK
    else:
        assert result.status is Status.ERROR
        assert f"{command} is not restic" in result.reason
        assert "no snapshot" not in result.reason


# -- canary planting ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["healthy", "empty", "marker-missing", "absent"])
def test_canary_into_an_empty_or_unmounted_source_is_refused(lab, case):
    canary = {"require": ["data/important.db"]} if case == "marker-missing" else {}
    lab.configure(restore_tests={"app-files": {"canary": canary}})
    if case == "empty":
        for path in sorted(lab.source.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
    elif case == "marker-missing":
        (lab.source / "data" / "important.db").unlink()
    elif case == "absent":
        lab.source.rename(lab.source.with_name("moved"))

    done = lab.cli("canary", "plant", "app-files")

    if case == "healthy":
        assert done.returncode == 0, done.stderr
        assert (lab.source / ".drcheck-canary").is_file()
        return
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("app-files: canary not planted: ")
    assert {"empty": "holds 0 entries", "marker-missing": "lacks the marker data/important.db",
            "absent": "is not a directory"}[case] in lines[0]
    assert not (lab.source / ".drcheck-canary").exists()
    assert lab.rows("SELECT COUNT(*) AS n FROM canaries")[0]["n"] == 0
