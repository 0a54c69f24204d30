"""Undo: back to the original paths, never over anything that stands there now."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete import (
    BatchNotFound,
    OpKind,
    execute,
    list_batches,
    make_plan,
    undo,
)
from photodup_tui.engine.types import Kind
from tests.safety.helpers import group, read, snapshot, trash_entries, write

DATA = b"\x89PNG" + bytes(range(200)) * 30


def trash_three(root: Path) -> tuple[str, list[str]]:
    keeper = write(root / "keep.png", DATA)
    victims = [write(root / f"d{i}/x.png", DATA) for i in range(3)]
    execute(make_plan([group(Kind.EXACT, keeper, *victims)]), dry_run=False)
    assert not any(os.path.lexists(v) for v in victims)
    return keeper, victims


def test_undo_into_a_changed_tree_refuses_to_overwrite(tmp_path: Path, home_trash: Path) -> None:
    _keeper, (occupied, parent_gone, parent_is_file) = trash_three(tmp_path / "p")
    write(occupied, b"a new file the user made since")
    os.rmdir(os.path.dirname(parent_gone))
    os.rmdir(os.path.dirname(parent_is_file))
    write(os.path.dirname(parent_is_file), b"now a file")

    report = undo()
    assert read(occupied) == b"a new file the user made since"
    assert read(parent_gone) == DATA  # its folder was made again
    assert read(os.path.dirname(parent_is_file)) == b"now a file"
    assert report.restored == [parent_gone]
    refused = dict(report.refused)
    assert "nothing was overwritten" in refused[occupied]
    assert "no longer a folder" in refused[parent_is_file]
    # The two refused files are still complete trash entries, nothing lost.
    assert sorted(e.original for e in trash_entries(home_trash)) == sorted(
        [os.fsencode(occupied), os.fsencode(parent_is_file)]
    )
    assert list_batches()[0].state == "partly undone"


def test_undo_after_the_trash_was_emptied_says_so(tmp_path: Path, home_trash: Path) -> None:
    _keeper, victims = trash_three(tmp_path / "p")
    for entry in trash_entries(home_trash):
        os.unlink(entry.files_path)
    report = undo()
    assert report.restored == []
    assert all("no longer at" in why for _p, why in report.refused)
    assert not any(os.path.lexists(v) for v in victims)


def test_undo_picks_the_last_batch_or_the_one_named(tmp_path: Path, home_trash: Path) -> None:
    _k1, first = trash_three(tmp_path / "first")
    _k2, second = trash_three(tmp_path / "second")
    older, newer = sorted(b.batch_id for b in list_batches())
    assert sorted(undo().restored) == sorted(second)
    assert sorted(undo(older).restored) == sorted(first)
    with pytest.raises(BatchNotFound):
        undo()
    assert {b.batch_id: b.state for b in list_batches()} == {older: "undone", newer: "undone"}
    assert trash_entries(home_trash) == []


def test_hardlink_mode_replaces_the_victim_and_undo_puts_it_back(
    tmp_path: Path, home_trash: Path
) -> None:
    keeper = write(tmp_path / "p/a.jpg", DATA)
    victim = write(tmp_path / "p/b.jpg", DATA)
    victim_ino = os.lstat(victim).st_ino
    report = execute(
        make_plan([group(Kind.EXACT, keeper, victim)], mode=OpKind.HARDLINK), dry_run=False
    )
    assert report.failed == [] and len(report.trashed) == 1
    assert os.path.samefile(keeper, victim)  # the path now names the keeper's inode
    [entry] = trash_entries(home_trash)
    assert os.lstat(entry.files_path).st_ino == victim_ino  # the old file is in the trash
    assert sorted(os.listdir(tmp_path / "p")) == ["a.jpg", "b.jpg"]  # no temp link left

    assert undo().restored == [victim]
    assert os.lstat(victim).st_ino == victim_ino and os.lstat(keeper).st_nlink == 1
    assert trash_entries(home_trash) == []


def test_hardlink_mode_is_refused_for_anything_but_exact(tmp_path: Path) -> None:
    keeper = write(tmp_path / "p/a.jpg", DATA)
    victim = write(tmp_path / "p/b.jpg", DATA[::-1])  # a near copy: other bytes
    g = group(Kind.NEAR, keeper, victim, decodable=True)
    plan = make_plan([g], mode=OpKind.HARDLINK)
    assert plan.operations == [] and "only for byte-identical" in plan.refused[0][1]


def test_move_mode_moves_to_a_folder_and_undo_moves_back(tmp_path: Path, home_trash: Path) -> None:
    keeper = write(tmp_path / "p/a/x.jpg", DATA)
    victims = [write(tmp_path / f"p/b{i}/x.jpg", DATA) for i in range(2)]
    review = tmp_path / "p/review"
    before = snapshot(tmp_path / "p")
    plan = make_plan([group(Kind.EXACT, keeper, *victims)], mode=OpKind.MOVE, move_to=str(review))
    report = execute(plan, dry_run=False)
    assert sorted(os.listdir(review)) == ["x.2.jpg", "x.jpg"]
    assert all(read(review / n) == DATA for n in os.listdir(review))
    assert report.bytes_reclaimed == 0 and trash_entries(home_trash) == []
    undo()
    assert snapshot(tmp_path / "p") == before


def test_move_to_another_device_is_refused_never_copied(tmp_path: Path, tmpfs: Path) -> None:
    keeper = write(tmp_path / "p/a.jpg", DATA)
    victim = write(tmp_path / "p/b.jpg", DATA)
    plan = make_plan([group(Kind.EXACT, keeper, victim)], mode=OpKind.MOVE, move_to=str(tmpfs))
    report = execute(plan, dry_run=False)
    assert read(victim) == DATA and os.listdir(tmpfs) == []
    assert "another device" in report.skipped[0][1]
