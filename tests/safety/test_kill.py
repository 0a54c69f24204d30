"""Rule 10: kill -9 at every step of a batch (and of an undo), then look at the disk.

A child process runs a real batch with ``PHOTODUP_FAULT=kill@POINT`` and SIGKILLs itself
there.  Afterwards every file must be at its path with its bytes or a complete trash
entry; the batch must be reported as interrupted; ``recover`` must leave no half entry;
and ``undo`` must bring every file back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete import (
    JournalError,
    execute,
    interrupted_batches,
    list_batches,
    make_plan,
    recover,
    undo,
)
from photodup_tui.engine.types import Kind
from tests.safety.helpers import assert_accounted_for, group, snapshot, trash_entries, write

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, os, sys
from photodup_tui.engine.safedelete import OpKind, execute, make_plan, undo
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
spec = json.loads(sys.argv[1])
if spec["do"] == "undo":
    undo()
else:
    keeper, *victims = spec["paths"]
    members = [Member(Photo(p, FileStat.of(os.lstat(p))), Action.DELETE) for p in victims]
    members.insert(0, Member(Photo(keeper, FileStat.of(os.lstat(keeper))), Action.KEEP))
    mode = OpKind(spec.get("mode", "trash"))
    execute(make_plan([Group(Kind.EXACT, members, "t")], mode=mode), dry_run=False)
"""


def run_child(spec: dict[str, object], fault: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PHOTODUP_FAULT": fault, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], env=env, capture_output=True, timeout=60
    )


def make_tree(root: Path) -> list[str]:
    keeper = write(root / "keep/IMG_1.JPG", b"same photo" * 500)
    return [keeper] + [write(root / f"dup{i}/IMG_1.JPG", b"same photo" * 500) for i in range(3)]


#: fault point -> how many of the three victims are in the trash when the kill lands
KILL_POINTS = {
    "after_begin": 0,
    "after_intent": 0,
    "info_write": 0,  # the info file's temporary exists, nothing written yet
    "info_written": 0,
    "after_info": 0,
    "after_rename": 1,
    "after_done": 1,
    "after_intent:2": 1,
    "info_write:2": 1,
    "info_written:2": 1,
    "after_info:2": 1,
    "after_rename:3": 3,
    "before_end": 3,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_at_each_step_of_a_batch(tmp_path: Path, home_trash: Path, point: str) -> None:
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    child = run_child({"do": "batch", "paths": paths}, f"kill@{point}")
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    # Straight after the kill: each file in place or a complete trash entry.
    _in_place, trashed = assert_accounted_for(before, [home_trash], allow_orphan_info=True)
    assert len(trashed) == KILL_POINTS[point]

    # The next start finds the batch and says where each half-done file is.
    [batch] = interrupted_batches()
    assert batch.state == "interrupted"
    for path, where in batch.in_flight:
        expected = "in the trash" if os.fsencode(path) in trashed else "in place"
        assert where.startswith(expected), (path, where)

    recover()
    assert interrupted_batches() == []
    assert_accounted_for(before, [home_trash])  # now strict: no info file without its file
    [info] = list_batches()
    assert info.state == "complete" and info.acted == len(trashed)

    if trashed:
        report = undo()
        assert sorted(report.restored) == sorted(os.fsdecode(p) for p in trashed)
    assert snapshot(tmp_path / "p") == before
    assert trash_entries(home_trash) == []


def test_kills_while_writing_info_files_leave_no_empty_info(
    tmp_path: Path, home_trash: Path
) -> None:
    """Killed between creating an info file and writing it, five times over: recovery
    leaves info/ holding exactly the infos of the files in the trash, none empty."""
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    for nth in (1, 2, 1, 2, 1):
        child = run_child({"do": "batch", "paths": paths}, f"kill@info_write:{nth}")
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()
        paths = [paths[0]] + [p for p in paths[1:] if os.path.lexists(p)]
    recover()
    _in_place, trashed = assert_accounted_for(before, [home_trash])  # strict
    info = home_trash / "info"  # re-read: no empty info, no temporary left
    names = sorted(os.listdir(info))
    assert names == sorted(
        os.path.basename(e.files_path).decode() + ".trashinfo" for e in trash_entries(home_trash)
    )
    assert all(os.path.getsize(info / n) > 0 for n in names)
    assert len(trashed) == 2  # each kill at the 2nd info file let one file go first
    assert interrupted_batches() == []


def test_undo_after_a_kill_undoes_the_killed_batch_not_the_one_before(
    tmp_path: Path, home_trash: Path
) -> None:
    """Killed right after its first rename, the newest batch is what plain undo puts back
    (recovering it first), and the complete batch before it stays as it is."""
    earlier = make_tree(tmp_path / "earlier")
    execute(make_plan([group(Kind.EXACT, *earlier)]), dry_run=False)
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    child = run_child({"do": "batch", "paths": paths}, "kill@after_rename:1")
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert not os.path.lexists(paths[1])

    report = undo()  # no recover() first: undo does it
    assert report.restored == [paths[1]] and report.refused == []
    assert snapshot(tmp_path / "p") == before
    assert not any(os.path.lexists(p) for p in earlier[1:])  # still in the trash
    assert sorted(e.original for e in trash_entries(home_trash)) == sorted(
        os.fsencode(p) for p in earlier[1:]
    )
    assert [b.state for b in list_batches()] == ["undone", "complete"]
    assert interrupted_batches() == []


@pytest.mark.parametrize("nth", [1, 2])
def test_kill_in_the_middle_of_an_undo(tmp_path: Path, home_trash: Path, nth: int) -> None:
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    execute(make_plan([group(Kind.EXACT, *paths)]), dry_run=False)
    child = run_child({"do": "undo"}, f"kill@undo_after_rename:{nth}")
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()

    _in_place, trashed = assert_accounted_for(before, [home_trash], allow_orphan_info=True)
    assert len(trashed) == 3 - nth
    [batch] = interrupted_batches()
    assert len(batch.in_flight) == 1  # the file being restored when the kill landed

    report = undo()  # recovers first, then restores the rest
    assert len(report.restored) == 3 - nth and report.refused == []
    assert snapshot(tmp_path / "p") == before
    assert trash_entries(home_trash) == []
    assert list_batches()[0].state == "undone"


def test_a_running_batch_is_not_reported_as_interrupted(tmp_path: Path) -> None:
    """The journal lock tells a live batch from a dead one (no guessing from timestamps)."""
    from photodup_tui.engine.safedelete.journal import JournalWriter, default_journal_dir

    with JournalWriter.create(default_journal_dir(), "20000101-000000-000000000-beef", []):
        assert [b.state for b in list_batches()] == ["running"]
        assert interrupted_batches() == []
    assert [b.state for b in list_batches()] == ["interrupted"]


def test_a_journal_that_cannot_be_created_stops_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home_trash: Path
) -> None:
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    write(tmp_path / "not-a-dir", b"")
    monkeypatch.setenv("PHOTODUP_STATE_DIR", str(tmp_path / "not-a-dir"))
    with pytest.raises(JournalError):
        execute(make_plan([group(Kind.EXACT, *paths)]), dry_run=False)
    assert snapshot(tmp_path / "p") == before and not home_trash.exists()


def test_a_journal_that_fails_mid_batch_stops_before_the_next_move(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, home_trash: Path
) -> None:
    """Records: begin, trying, reserved(1st file) ... the 6th write fails (2nd file's reserve)."""
    paths = make_tree(tmp_path / "p")
    before = snapshot(tmp_path / "p")
    monkeypatch.setenv("PHOTODUP_FAULT", "ENOSPC@journal_write:6")
    with pytest.raises(JournalError):
        execute(make_plan([group(Kind.EXACT, *paths)]), dry_run=False)
    monkeypatch.delenv("PHOTODUP_FAULT")
    _in_place, trashed = assert_accounted_for(before, [home_trash])  # strict: no half entry
    assert trashed == {os.fsencode(paths[1])}
    [batch] = interrupted_batches()
    assert [where for _p, where in batch.in_flight] == ["in place"]
    recover()
    assert list_batches()[0].acted == 1


@pytest.mark.parametrize("point", ["after_intent", "after_rename"])
def test_kill_during_a_hard_link_replacement(tmp_path: Path, home_trash: Path, point: str) -> None:
    """Killed with the keeper's spare link made: recovery never leaves a stray link or hole."""
    keeper, victim = make_tree(tmp_path / "p")[:2]
    victim_ino = os.lstat(victim).st_ino
    child = run_child(
        {"do": "batch", "paths": [keeper, victim], "mode": "hardlink"}, f"kill@{point}"
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    assert any(n.startswith(".photodup-link-") for n in os.listdir(os.path.dirname(victim)))

    recover()
    assert not any(n.startswith(".photodup-link-") for n in os.listdir(os.path.dirname(victim)))
    if point == "after_rename":  # the victim was in the trash: the link was put in its place
        assert os.path.samefile(victim, keeper)
        [entry] = trash_entries(home_trash)
        assert os.lstat(entry.files_path).st_ino == victim_ino
        undo()
    assert os.lstat(victim).st_ino == victim_ino and os.lstat(keeper).st_nlink == 1
    assert trash_entries(home_trash) == []
