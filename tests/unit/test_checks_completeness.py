"""Completeness, layout discovery, the wrong-source judgement and restic output parsing,
on real files in a temporary directory (nothing replaced)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from drcheck.canary import refusal
from drcheck.clients.restic import _version_problem, lost_files
from drcheck.coverage import PointFacts, WrongSourceConfig, wrong_source
from drcheck.mapping import LayoutError, SystemMapping, by_identity, discover_layout
from drcheck.clients.restic import Snapshot
from drcheck.restore_tests.completeness import Completeness, completeness
from drcheck.results import SnapshotFile, Status

NOW = datetime.now(timezone.utc)
OLD = NOW - timedelta(days=30)


@pytest.mark.parametrize("listed, stored_as", [
    (["/srv", "/srv/app", "/srv/app/a.txt"], "/srv/app"),
    (["/app", "/app/a.txt", "/app/sub/b"], "/app"),
    (["/a.txt", "/sub", "/sub/b"], "/"),
    # a relative snapshot whose source holds a directory named like itself: the live
    # directory's entries decide, not the precedence
    (["/app", "/app/deep.txt", "/a.txt", "/sub/b"], "/"),
])
def test_layout_is_read_from_the_listing(listed, stored_as):
    layout = discover_layout(["/srv/app"], listed, lambda path: {"a.txt", "sub", "app"})
    assert layout.roots == ((stored_as, "/srv/app"),)
    assert layout.to_stored("/srv/app/a.txt") == (stored_as.rstrip("/") + "/a.txt")
    assert layout.to_live(layout.to_stored("/srv/app/sub/b")) == "/srv/app/sub/b"


def test_layout_that_cannot_be_mapped_is_an_error_not_missing_data():
    with pytest.raises(LayoutError, match="does not guess"):
        discover_layout(["/srv/app", "/etc/app"], ["/elsewhere/x"])


def test_several_paths_map_each():
    layout = discover_layout(["/srv/app", "/etc/app"], ["/srv/app/a", "/etc/app/b"])
    assert layout.to_stored("/etc/app/b") == "/etc/app/b" and not layout.relocated


def entry(path: str, size: int, mtime: datetime, kind: str = "file") -> SnapshotFile:
    return SnapshotFile(path, size, mtime, kind)


@pytest.fixture
def live(tmp_path: Path) -> Path:
    root = tmp_path / "srv" / "app"
    for rel, body in {"keep.txt": "k" * 10, "old/a.txt": "a", "old/deep/b.txt": "bb", "cache/x": "x",
                      "trunc.txt": "full"}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        os.utime(path, (OLD.timestamp(), OLD.timestamp()))
    return tmp_path


def test_completeness_names_missing_directories_and_size_mismatches(live):
    root = "/srv/app"
    listing = {f"{root}/keep.txt": entry(f"{root}/keep.txt", 10, OLD),
               f"{root}/trunc.txt": entry(f"{root}/trunc.txt", 0, OLD)}
    result = completeness([root], live, listing, NOW, Completeness(excludes=["cache"]))
    assert result.status is Status.FAILED
    assert "/srv/app/old/ (2 files)" in result.evidence
    assert "/srv/app/trunc.txt (stored 0 bytes, live 4, same mtime)" in result.evidence
    assert result.details["excluded_dirs"] == 1 and result.details["source_files"] == 4


def test_completeness_passes_and_warns_on_a_sharp_drop(live):
    root = "/srv/app"
    young = NOW - timedelta(days=40)  # the point predates every file: all "changed since"
    result = completeness([root], live, {}, young, Completeness(), previous=0.9)
    assert result.status is Status.PASSED
    assert result.details["changed_since_point"] == 5 and result.details["share"] == 0
    assert "WARNING: comparable share fell to 0% from 90%" in result.evidence


def test_completeness_of_an_unreadable_source_is_an_error(tmp_path):
    result = completeness(["/srv/app"], tmp_path, {}, NOW, Completeness())
    assert result.status is Status.ERROR and "cannot read the live source" in result.evidence


def test_wrong_source_judgement():
    cfg = WrongSourceConfig()
    good = PointFacts("a" * 8, ("/srv/app",), 1000, 10)
    assert wrong_source("app", "local", ["/srv/app/db"], good, None, cfg) is None
    other = PointFacts("b" * 8, ("/srv/app-old",), 1000, 10)
    assert "does not cover /srv/app" in wrong_source("app", "local", ["/srv/app"], other, good, cfg).message
    small = PointFacts("c" * 8, ("/srv/app",), 100, 9)
    finding = wrong_source("app", "local", ["/srv/app"], small, good, cfg)
    assert finding.code == "wrong_source" and "100 of 1000 bytes (10%)" in finding.message
    assert wrong_source("app", "local", ["/srv/app"], small, good, WrongSourceConfig(min_fraction=0)) is None


def test_identity_assigns_a_snapshot_of_other_paths_to_its_hosts_system():
    rules = [SystemMapping(system="app", hosts=["app01"], paths=["/srv/app"]),
             SystemMapping(system="db", hosts=["app01"], paths=["/srv/db"])]
    right = Snapshot("1", NOW, "app01", ("/srv/app",), ())
    db = Snapshot("2", NOW, "app01", ("/srv/db",), ())
    stray = Snapshot("3", NOW, "app01", ("/srv/app-old",), ())
    grouped = by_identity([right, db, stray], rules)
    assert grouped["app"] == [right, stray] and grouped["db"] == [db, stray]


def test_restore_errors_naming_packs_are_lost_files():
    stderr = ("Load(<data/83ce1c631f>, 9001500, 0) returned error, retrying after 1s: open x: no such file\n"
              "ignoring error for /srv/app/f1.bin: StreamPack: open /r/data/83/83ce1c631fb7: no such file or directory\n"
              "ignoring error for /srv/app/f1.bin: UtimesNano: no such file or directory\n"
              "ignoring error for /srv/app/f2.bin: StreamPack: open /r/data/83/83ce1c631fb7: no such file or directory\n"
              "ignoring error for /srv/app/x: Lchown: operation not permitted\n")
    files, packs, message = lost_files(stderr)
    assert files == ["/srv/app/f1.bin", "/srv/app/f2.bin"] and packs == ["83ce1c631fb7"]
    assert message.startswith("StreamPack")


@pytest.mark.parametrize("output, problem", [
    ("restic 0.14.0 compiled with go1.19.8 on linux/amd64\n", None),
    ("restic 0.9.6 compiled with go1.13 on linux/amd64\n", "needs restic 0.12.0 or newer"),
    ("", "printed 'nothing'"),
    ("Hello from backup-tool 9.1\n", "is not restic"),
])
def test_version_check(output, problem):
    found = _version_problem(output, "/usr/bin/x")
    assert (found is None) if problem is None else (problem in found)


def test_canary_refuses_empty_unmarked_or_absent_sources(tmp_path):
    source = tmp_path / "app"
    assert "is not a directory" in refusal(source, ".drcheck-canary")
    source.mkdir()
    (source / ".drcheck-canary").write_text("old")
    assert "holds 0 entries" in refusal(source, ".drcheck-canary")
    (source / "data").write_text("x")
    assert refusal(source, ".drcheck-canary") is None
    assert "lacks the marker .mounted" in refusal(source, ".drcheck-canary", require=[".mounted"])
    assert "not a mount point" in refusal(source, ".drcheck-canary", mount_point=True)
