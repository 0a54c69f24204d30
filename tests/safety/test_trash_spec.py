"""The freedesktop trash, file names, and rule 8 (trash or nothing) on real and injected faults."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete import execute, make_plan, undo
from photodup_tui.engine.safedelete.journal import load_batch
from photodup_tui.engine.types import Kind
from tests.safety.helpers import (
    fill_up,
    group,
    read,
    remount_read_only,
    snapshot,
    trash_entries,
    write,
)

DATA = b"photo bytes " * 100
UID = os.getuid()


def trash_pair(root: Path) -> tuple[str, str]:
    return write(root / "keep/a.jpg", DATA), write(root / "dup/a.jpg", DATA)


def test_other_device_uses_topdir_trash_uid_created_private(tmpfs: Path, home_trash: Path) -> None:
    keeper, victim = trash_pair(tmpfs / "photos")
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    trash_dir = tmpfs / f".Trash-{UID}"
    st = os.lstat(trash_dir)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    [entry] = trash_entries(trash_dir)
    assert entry.original == os.fsencode(victim) and entry.data == DATA
    assert b"Path=photos/dup/a.jpg\n" in entry.info_text  # relative to $topdir, per the spec
    assert not home_trash.exists()  # never a copy into the home trash across devices
    assert report.trashed[0][1] == os.fsdecode(entry.files_path)


def test_sticky_admin_trash_is_used_as_trash_slash_uid(tmpfs: Path) -> None:
    os.mkdir(tmpfs / ".Trash", 0o1777)
    os.chmod(tmpfs / ".Trash", 0o1777)
    keeper, victim = trash_pair(tmpfs)
    execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    [entry] = trash_entries(tmpfs / ".Trash" / str(UID))
    assert entry.original == os.fsencode(victim)
    assert not (tmpfs / f".Trash-{UID}").exists()


@pytest.mark.parametrize("kind", ["not sticky", "symlink"])
def test_admin_trash_that_fails_the_checks_is_not_used(tmpfs: Path, kind: str) -> None:
    if kind == "not sticky":
        os.mkdir(tmpfs / ".Trash", 0o777)
    else:
        os.mkdir(tmpfs / "elsewhere", 0o1777)
        os.chmod(tmpfs / "elsewhere", 0o1777)
        (tmpfs / ".Trash").symlink_to("elsewhere")
    keeper, victim = trash_pair(tmpfs)
    execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert [e.original for e in trash_entries(tmpfs / f".Trash-{UID}")] == [os.fsencode(victim)]
    assert not (tmpfs / ".Trash" / str(UID)).exists()


def test_other_device_without_a_usable_trash_leaves_the_file(tmpfs: Path) -> None:
    write(tmpfs / f".Trash-{UID}", b"a file where the trash should be")
    keeper, victim = trash_pair(tmpfs)
    before = snapshot(tmpfs)
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert snapshot(tmpfs) == before
    assert "no usable trash" in report.skipped[0][1] and report.trashed == []


def test_read_only_filesystem_leaves_the_file(tmpfs: Path) -> None:
    keeper, victim = trash_pair(tmpfs)
    g = group(Kind.EXACT, keeper, victim)
    remount_read_only(tmpfs)
    before = snapshot(tmpfs)
    dry = execute(make_plan([g]), dry_run=True)
    real = execute(make_plan([g]), dry_run=False)
    assert snapshot(tmpfs) == before
    assert "read-only filesystem" in real.skipped[0][1]
    assert dry.skipped == real.skipped and real.trashed == []


def test_full_filesystem_leaves_the_file_and_no_half_entry(tmpfs: Path) -> None:
    keeper, victim = trash_pair(tmpfs)
    g = group(Kind.EXACT, keeper, victim)
    fill_up(tmpfs)
    report = execute(make_plan([g]), dry_run=False)
    assert read(victim) == DATA
    assert "filesystem is full" in report.skipped[0][1]
    assert trash_entries(tmpfs / f".Trash-{UID}") == []


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC", "EXDEV", "EACCES"])
@pytest.mark.parametrize("point", ["rename", "info_write"])
def test_injected_trash_errors_leave_the_file_and_say_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home_trash: Path, errno_name: str, point: str
) -> None:
    """Every candidate trash fails (home, then $topdir ones): the file stays, no fallback."""
    keeper, victim = trash_pair(tmp_path / "p")
    ino = os.lstat(victim).st_ino
    monkeypatch.setenv("PHOTODUP_FAULT", f"{errno_name}@{point}")
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    monkeypatch.delenv("PHOTODUP_FAULT")
    assert os.lstat(victim).st_ino == ino and read(victim) == DATA
    assert trash_entries(home_trash) == []  # and no info file left behind either
    assert os.strerror(getattr(__import__("errno"), errno_name)) in report.skipped[0][1]
    assert report.trashed == [] and report.bytes_reclaimed == 0
    assert report.journal is not None
    assert load_batch(report.journal).ops[0].outcome == "skipped"


def test_ten_same_named_files_become_ten_entries(tmp_path: Path, home_trash: Path) -> None:
    keeper = write(tmp_path / "p/keep/IMG_0001.JPG", DATA)
    victims = [write(tmp_path / f"p/card{i}/IMG_0001.JPG", DATA) for i in range(10)]
    report = execute(make_plan([group(Kind.EXACT, keeper, *victims)]), dry_run=False)
    entries = trash_entries(home_trash)
    assert sorted(e.original for e in entries) == sorted(os.fsencode(v) for v in victims)
    names = sorted(os.path.basename(e.files_path) for e in entries)
    assert names == sorted([b"IMG_0001.JPG"] + [b"IMG_0001.%d.JPG" % n for n in range(2, 11)])
    assert len(report.trashed) == 10
    undone = undo()
    assert sorted(undone.restored) == sorted(victims)
    assert all(read(v) == DATA for v in victims)


def test_an_info_name_taken_by_another_trasher_mid_write_is_never_replaced(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program takes ``IMG.JPG.trashinfo`` between our look and our publish: our
    entry moves on to the next name and theirs keeps its bytes (link(2) never replaces)."""
    from photodup_tui.engine.safedelete import fsops

    keeper = write(tmp_path / "p/keep/IMG.JPG", DATA)
    victim = write(tmp_path / "p/dup/IMG.JPG", DATA)
    foreign = home_trash / "info" / "IMG.JPG.trashinfo"
    theirs = b"[Trash Info]\nPath=/elsewhere/IMG.JPG\nDeletionDate=2020-01-01T00:00:00\n"
    real_fault_point = fsops.fault_point

    def another_trasher(point: str) -> None:
        if point == "info_write" and not foreign.exists():
            foreign.write_bytes(theirs)
        real_fault_point(point)

    monkeypatch.setattr(fsops, "fault_point", another_trasher)
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert foreign.read_bytes() == theirs
    assert len(report.trashed) == 1
    ours = home_trash / "info" / "IMG.2.JPG.trashinfo"
    assert b"Path=" + os.fsencode(victim) in ours.read_bytes()
    assert read(home_trash / "files" / "IMG.2.JPG") == DATA


def test_an_orphan_in_trash_files_is_never_overwritten(tmp_path: Path, home_trash: Path) -> None:
    orphan = write(home_trash / "files/a.jpg", b"someone else's file")
    keeper, victim = trash_pair(tmp_path / "p")
    execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert read(orphan) == b"someone else's file"
    assert read(home_trash / "files/a.2.jpg") == DATA


ODD_NAMES = [
    b"with space.jpg",
    b"new\nline.jpg",
    b"-leading-dash.jpg",
    b"quotes ' \" `.jpg",
    b"bad utf8 \xff\xfe\x80.jpg",
    b"percent %41 %zz.jpg",
    b"hash#question?.jpg",
    b"\xe5\x86\x99\xe7\x9c\x9f.jpg",
    b"x" * 250 + b".jpg",
    b".hidden",
]


def test_odd_file_names_round_trip_exactly(tmp_path: Path, home_trash: Path) -> None:
    root = os.fsencode(tmp_path / "p")
    keeper = write(os.path.join(root, b"keeper.jpg"), DATA)
    victims = [write(os.path.join(root, b"d%d" % i, n), DATA) for i, n in enumerate(ODD_NAMES)]
    report = execute(make_plan([group(Kind.EXACT, keeper, *victims)]), dry_run=False)
    assert report.skipped == [] and len(report.trashed) == len(ODD_NAMES)
    entries = trash_entries(home_trash)
    assert sorted(e.original for e in entries) == sorted(os.fsencode(v) for v in victims)
    assert all(b"\n" not in e.info_text.split(b"Path=")[1].split(b"\n")[0] for e in entries)
    assert not any(os.path.lexists(v) for v in victims)
    undo()
    for i, name in enumerate(ODD_NAMES):
        assert os.listdir(os.path.join(root, b"d%d" % i)) == [name]
    assert trash_entries(home_trash) == []


def test_info_files_are_published_whole_also_without_hard_links(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home_trash: Path
) -> None:
    """FAT has no link(2): the whole info file then arrives by a no-replace rename."""

    def no_links(*_args: object, **_kw: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    keeper, victim = trash_pair(tmp_path / "p")
    monkeypatch.setattr(os, "link", no_links)
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    monkeypatch.undo()
    [entry] = trash_entries(home_trash)  # strict: no temporary left in info/ either
    assert entry.original == os.fsencode(victim) and report.failed == []
