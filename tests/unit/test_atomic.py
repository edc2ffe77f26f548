"""Evidence files: never overwritten, written atomically and durably."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from drcheck import atomic
from drcheck.atomic import write_atomically, write_new


def weekly(directory: Path):
    return lambda n: directory / ("weekly-2024-03-13-0800.html" if n == 0 else f"weekly-2024-03-13-0800-{n + 1}.html")


def test_two_reports_of_the_same_minute_both_exist(tmp_path):
    first = write_new(weekly(tmp_path), "first")
    second = write_new(weekly(tmp_path), "second")
    third = write_new(weekly(tmp_path), "third")
    assert [first.name, second.name, third.name] == [
        "weekly-2024-03-13-0800.html", "weekly-2024-03-13-0800-2.html", "weekly-2024-03-13-0800-3.html"]
    assert [p.read_text() for p in (first, second, third)] == ["first", "second", "third"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name, third.name])


def test_an_existing_file_is_never_replaced_even_if_foreign(tmp_path):
    (tmp_path / "weekly-2024-03-13-0800.html").write_text("an auditor's copy")
    path = write_new(weekly(tmp_path), "new")
    assert (tmp_path / "weekly-2024-03-13-0800.html").read_text() == "an auditor's copy"
    assert path.name.endswith("-2.html")


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def spy(fd):  # the OS boundary: record what was synced, then really sync it
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", spy)
    path = write_new(weekly(tmp_path), "x")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.startswith(".weekly-")  # the data
    assert Path(synced[1]) == tmp_path  # the directory entry
    synced.clear()
    write_atomically(path, "y")
    assert Path(synced[-1]) == tmp_path


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(UnicodeEncodeError):
        write_new(weekly(tmp_path), "\udcff not encodable")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(tmp_path / "canary", "\udcff")
    assert list(tmp_path.iterdir()) == []


def test_every_name_taken_is_an_error_not_an_overwrite(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "MAX_NAME_ATTEMPTS", 2)
    write_new(weekly(tmp_path), "1")
    write_new(weekly(tmp_path), "2")
    with pytest.raises(FileExistsError):
        write_new(weekly(tmp_path), "3")
    assert sorted(p.read_text() for p in tmp_path.iterdir()) == ["1", "2"]
