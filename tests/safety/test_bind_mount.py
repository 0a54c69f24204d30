"""Rules 8 and 12 on a bind mount: same device as the home trash, yet another mount.

``rename`` between two mounts fails with EXDEV even on one filesystem, so the trash is
chosen by mount, not only by device: the dry run and the real run pick the same topdir
trash of the bind mount, and the real run really trashes there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete import OpKind, execute, make_plan, undo
from photodup_tui.engine.safedelete.mounts import _unescape, mount_of, mount_points
from photodup_tui.engine.types import Kind
from tests.safety.helpers import group, mount, read, snapshot, trash_entries, write

DATA = b"bind-mounted photo " * 100
UID = os.getuid()


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/bind``: a bind mount of ``tmp_path/src``, on the home trash's filesystem."""
    src, dst = tmp_path / "src", tmp_path / "bind"
    src.mkdir()
    dst.mkdir()
    if not mount(["mount", "--bind", str(src), str(dst)]):
        pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN)")
    try:
        yield dst
    finally:
        mount(["umount", "-l", str(dst)])


def test_bind_mount_dry_run_and_real_run_trash_the_same_files(
    bind: Path, tmp_path: Path, home_trash: Path
) -> None:
    assert os.stat(bind).st_dev == os.stat(tmp_path).st_dev  # same device, another mount
    keeper = write(bind / "photos/keep/a.jpg", DATA)
    victims = [write(bind / f"photos/dup{i}/a.jpg", DATA) for i in range(4)]
    plan = make_plan([group(Kind.EXACT, keeper, *victims)])
    dry = execute(plan, dry_run=True)
    real = execute(plan, dry_run=False)

    trash_dir = bind / f".Trash-{UID}"
    assert [(p, w) for p, w, _s in dry.trashed] == [(v, str(trash_dir)) for v in victims]
    assert [p for p, _w, _s in real.trashed] == victims
    assert dry.skipped == real.skipped == [] and real.failed == []
    for (_p, would_go, _s), (_p2, went, _s2) in zip(dry.trashed, real.trashed, strict=True):
        assert os.path.dirname(os.path.dirname(went)) == would_go

    # Re-read the disk: gone from their paths, complete entries in the mount's trash.
    assert not any(os.path.lexists(v) for v in victims) and read(keeper) == DATA
    entries = trash_entries(trash_dir)
    assert sorted(e.original for e in entries) == sorted(os.fsencode(v) for v in victims)
    assert all(e.data == DATA for e in entries)
    assert b"Path=photos/dup0/a.jpg\n" in sorted(e.info_text for e in entries)[0]
    assert trash_entries(home_trash) == []

    assert sorted(undo().restored) == sorted(victims)
    assert all(read(v) == DATA for v in victims) and trash_entries(trash_dir) == []


def test_bind_mount_move_to_another_mount_is_refused_alike(bind: Path, tmp_path: Path) -> None:
    """The move mode's destination on the same device but another mount: EXDEV, so
    both runs refuse it up front instead of the dry run promising a move."""
    keeper = write(bind / "a.jpg", DATA)
    victim = write(bind / "b.jpg", DATA)
    plan = make_plan(
        [group(Kind.EXACT, keeper, victim)], mode=OpKind.MOVE, move_to=str(tmp_path / "review")
    )
    before = snapshot(tmp_path / "src")
    dry = execute(plan, dry_run=True)
    real = execute(plan, dry_run=False)
    assert dry.trashed == real.trashed == []
    assert dry.skipped == real.skipped
    assert "another device or mount" in real.skipped[0][1]
    assert snapshot(tmp_path / "src") == before and not (tmp_path / "review").exists()


def test_mount_points_come_from_mountinfo(bind: Path, tmp_path: Path) -> None:
    assert str(bind) in mount_points()
    assert mount_of(str(bind / "x" / "y.jpg")) == str(bind)
    assert mount_of(str(tmp_path / "src" / "y.jpg")) != str(bind)
    assert _unescape(rb"/a\040b\134c\011") == b"/a b\\c\t"
