"""Rules 1, 4, 5 and 9 at the moment of acting: the scan is stale, the disk decides."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from photodup_tui.engine.safedelete import execute, make_plan
from photodup_tui.engine.types import Kind
from tests.safety.helpers import group, read, snapshot, trash_entries, write

DATA = bytes(range(256)) * 64


def overwrite_same_size_keep_mtime(path: str, data: bytes) -> None:
    """The sneakiest edit: same size, mtime put back; only ctime (and bytes) tell."""
    st = os.lstat(path)
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.lstat(path).st_mtime_ns == st.st_mtime_ns


def test_victim_changed_after_scan_with_restored_mtime_skips_the_group(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    c = write(tmp_path / "p/c.jpg", DATA)
    g = group(Kind.EXACT, a, b, c)  # the scan
    overwrite_same_size_keep_mtime(c, DATA[::-1])  # c is now the only copy of new bytes
    report = execute(make_plan([g]), dry_run=False)
    assert read(c) == DATA[::-1]
    assert read(b) == DATA  # the whole group is skipped, not just c
    assert trash_entries(home_trash) == []
    assert all("changed since the scan (ctime_ns)" in r for _p, r in report.skipped)
    assert len(report.skipped) == 2 and report.bytes_reclaimed == 0


def test_keeper_removed_after_scan_keeps_the_victim(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    g = group(Kind.EXACT, a, b)
    os.unlink(a)
    report = execute(make_plan([g]), dry_run=False)
    assert read(b) == DATA
    assert trash_entries(home_trash) == []
    assert "keeper" in report.skipped[0][1] and "is gone" in report.skipped[0][1]


def test_keeper_replaced_after_scan_by_an_equal_file_still_skips(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    g = group(Kind.NEAR, a, b, decodable=True)
    write(tmp_path / "p/.a.tmp", DATA)
    os.replace(tmp_path / "p/.a.tmp", a)  # same bytes, another inode: not the file we saw
    report = execute(make_plan([g]), dry_run=False)
    assert read(b) == DATA
    assert trash_entries(home_trash) == []
    assert "changed since the scan (ino" in report.skipped[0][1]


def test_keeper_turned_into_a_folder_skips(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    g = group(Kind.NEAR, a, b, decodable=True)
    os.unlink(a)
    os.mkdir(a)
    report = execute(make_plan([g]), dry_run=False)
    assert read(b) == DATA
    assert "no longer a regular file" in report.skipped[0][1]


def test_exact_group_needs_equal_bytes_even_when_stats_match(
    tmp_path: Path, home_trash: Path
) -> None:
    """A stale hash (or a bad report) says "exact"; the full byte compare says no."""
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA[:-1] + b"\0")
    g = group(Kind.EXACT, a, b, content_hash="same-by-mistake")
    report = execute(make_plan([g]), dry_run=False)
    assert read(b) == DATA[:-1] + b"\0"
    assert trash_entries(home_trash) == []
    assert "contents differ (rule 5)" in report.skipped[0][1]


def test_a_successful_trash_is_checked_on_disk(tmp_path: Path, home_trash: Path) -> None:
    """Rule 9 from the outside: gone from its path, complete entry with the same bytes."""
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    ino = os.lstat(b).st_ino
    report = execute(make_plan([group(Kind.EXACT, a, b)]), dry_run=False)
    assert not os.path.lexists(b)
    [entry] = trash_entries(home_trash)
    assert entry.original == os.fsencode(b) and entry.data == DATA
    assert os.lstat(entry.files_path).st_ino == ino  # moved, never copied
    info = os.fsencode(home_trash / "info") + b"/" + os.path.basename(entry.files_path)
    assert stat.S_IMODE(os.lstat(info + b".trashinfo").st_mode) == 0o600
    for sub in ("", "files", "info"):
        assert stat.S_IMODE(os.lstat(home_trash / sub).st_mode) == 0o700
    assert report.trashed == [(b, os.fsdecode(entry.files_path), len(DATA))]
    assert report.bytes_reclaimed == len(DATA) and report.failed == []
    assert read(a) == DATA


def test_two_victims_that_are_one_inode_are_both_trashed_and_counted_once(
    tmp_path: Path, home_trash: Path
) -> None:
    """Our own rename bumps the twin's ctime; that must not look like a foreign change."""
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    os.link(b, tmp_path / "p/b2.jpg")
    g = group(Kind.EXACT, a, b, str(tmp_path / "p/b2.jpg"))
    report = execute(make_plan([g]), dry_run=False)
    assert report.skipped == [] and len(report.trashed) == 2
    assert report.bytes_reclaimed == len(DATA)
    assert sorted(e.original for e in trash_entries(home_trash)) == sorted(
        [os.fsencode(b), os.fsencode(tmp_path / "p/b2.jpg")]
    )


def test_a_victim_with_a_link_elsewhere_frees_nothing(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    os.link(b, tmp_path / "elsewhere.jpg")
    report = execute(make_plan([group(Kind.EXACT, a, b)]), dry_run=False)
    assert len(report.trashed) == 1 and report.bytes_reclaimed == 0


def test_cancel_stops_before_the_next_file_and_reports_progress(
    tmp_path: Path, home_trash: Path
) -> None:
    keeper = write(tmp_path / "p/k.jpg", DATA)
    victims = [write(tmp_path / f"p/v{i}.jpg", DATA) for i in range(5)]
    groups = [group(Kind.EXACT, keeper, v) for v in victims]
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            cancel.set()

    report = execute(make_plan(groups), dry_run=False, progress=progress, cancel=cancel)
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert report.cancelled and len(report.trashed) == 2
    assert [r for _p, r in report.skipped] == ["cancelled before acting"] * 3
    assert sorted(snapshot(tmp_path / "p")) == sorted(
        os.fsencode(p) for p in [keeper, *victims[2:]]
    )
    assert len(trash_entries(home_trash)) == 2
