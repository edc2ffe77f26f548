"""Sandbox containment and removal, on real directories."""

import stat

import pytest

from drcheck.sandbox import SandboxRefused, check_entry, contained, remove_tree


def test_remove_tree_handles_read_only_directories_and_keeps_symlink_targets(tmp_path):
    root = tmp_path / "sandbox"
    box = root / "t-1"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    for d in range(5):
        sub = box / "srv" / f"d{d}"
        sub.mkdir(parents=True)
        (sub / "f").write_text("x")
        (sub / "link").symlink_to(outside)
        sub.chmod(stat.S_IRUSR | stat.S_IXUSR)  # restored read-only, as restic may leave it
    (box / "srv" / "top-link").symlink_to(outside / "keep.txt")

    remove_tree(box, root)

    assert not box.exists()
    assert (outside / "keep.txt").read_text() == "keep"


def test_remove_tree_refuses_outside_root(tmp_path):
    (tmp_path / "victim").mkdir()
    with pytest.raises(SandboxRefused):
        remove_tree(tmp_path / "victim", tmp_path / "sandbox")
    assert (tmp_path / "victim").exists()


def test_contained_refuses_dotdot_and_symlinks_out(tmp_path):
    box = tmp_path / "box"
    (box / "srv").mkdir(parents=True)
    (box / "srv" / "etc").symlink_to("/etc")
    assert contained(box, "/srv/app/file") == box / "srv" / "app" / "file"
    with pytest.raises(SandboxRefused):
        contained(box, "/srv/../../etc/passwd")
    with pytest.raises(SandboxRefused):
        contained(box, "/srv/etc/passwd")


@pytest.mark.parametrize("entry", ["relative/path", "/a/../../b", "/a/\x00b"])
def test_check_entry_refuses(entry):
    with pytest.raises(SandboxRefused):
        check_entry(entry)


def test_check_entry_accepts_ordinary_names():
    check_entry("/srv/app/..hidden..file")
    check_entry("/srv/app/x..y")


def test_a_fixed_target_is_never_shared_by_two_live_runs(tmp_path):
    from drcheck.sandbox import sandbox
    from drcheck.store import Store

    root = tmp_path / "sandbox"
    target = root / "fixed"
    with Store(tmp_path / "db.sqlite") as store:
        with sandbox(store, root, "first", target) as first:
            (first / "restoring").write_text("data")
            with pytest.raises(SandboxRefused, match="in use by first"):
                with sandbox(store, root, "second", target):
                    pass
            assert (first / "restoring").exists()  # the refused run removed nothing
        assert not target.exists()
        leases = store.query("SELECT owner, released_at FROM leases ORDER BY id")
    assert [row["owner"] for row in leases] == ["first"] and leases[0]["released_at"]


def test_lease_of_a_dead_owner_is_superseded_not_reaped_later(tmp_path):
    from drcheck.sandbox import reap, sandbox
    from drcheck.store import Store

    root = tmp_path / "sandbox"
    target = root / "fixed"
    with Store(tmp_path / "db.sqlite") as store:
        dead = store.take_lease("directory", target, "crashed", "drcheck.sandbox")
        store.db["leases"].update(dead, {"pid": 2**22 + 7})  # a pid that does not exist
        with sandbox(store, root, "next", target) as path:
            (path / "f").write_text("x")
            assert reap(store, root) == []  # the superseded lease is not reaped under us
            assert (path / "f").exists()
        rows = store.query("SELECT release_note FROM leases ORDER BY id")
    assert rows[0]["release_note"].startswith("superseded")
