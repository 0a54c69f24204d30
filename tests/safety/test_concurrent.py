"""Two photodups at once, and a file swapped in just before the rename (issue 11, holes 2, 5).

Rule 1 must hold against other processes too: two runs with opposite keepers may not both
see "the keeper is present" and then trash each other's keeper.  And a rename that moved
another file than the victim (swapped in at its path in the last instant) must not leave
that file in the trash where undo cannot reach it.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete import (
    ActingBusy,
    BatchNotFound,
    OpKind,
    execute,
    fsops,
    interrupted_batches,
    list_batches,
    make_plan,
    recover,
    undo,
)
from photodup_tui.engine.safedelete.journal import default_journal_dir
from photodup_tui.engine.safedelete.locks import acquire_acting
from photodup_tui.engine.types import Kind
from tests.safety.helpers import assert_accounted_for, group, read, snapshot, trash_entries, write

REPO = Path(__file__).resolve().parents[2]
# The package exports the function ``execute`` under the module's name.
execute_module = importlib.import_module("photodup_tui.engine.safedelete.execute")
PAIRS = 60

#: A child runs one real batch over its pairs (keeper first).  At its first move (fault
#: point ``after_intent``, after every check of the first group) it stops until the other
#: child has passed its own checks too, or is waiting for a lock: that forces the overlap
#: the red team hit by chance.  The same child runs against code without the locks (no
#: ``on_wait``) to show that the test catches the race.
CHILD = """
import importlib, inspect, json, os, sys, time
from photodup_tui.engine.safedelete import make_plan
ex = importlib.import_module("photodup_tui.engine.safedelete.execute")
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
spec = json.loads(sys.argv[1])
sync, me, other = spec["sync"], spec["me"], spec["other"]

def mark(what):
    open(os.path.join(sync, f"{me}.{what}"), "w").close()

def other_is(*states):
    return any(os.path.exists(os.path.join(sync, f"{other}.{s}")) for s in states)

real_fault_point, paused = ex.fault_point, []

def barrier(point):
    if point == "after_intent" and not paused:
        paused.append(1)
        mark("checked")
        deadline = time.monotonic() + 60
        while not other_is("checked", "waiting", "done") and time.monotonic() < deadline:
            time.sleep(0.005)
    real_fault_point(point)

ex.fault_point = barrier
groups = []
for keeper, victim in spec["pairs"]:
    members = [Member(Photo(p, FileStat.of(os.lstat(p))), a)
               for p, a in ((keeper, Action.KEEP), (victim, Action.DELETE))]
    groups.append(Group(Kind.EXACT, members, "t"))
kwargs = {}
if "on_wait" in inspect.signature(ex.execute).parameters:
    kwargs["on_wait"] = lambda who: mark("waiting")
mark("ready")
while not other_is("ready", "done"):
    time.sleep(0.005)
try:
    report = ex.execute(make_plan(groups), dry_run=False, **kwargs)
finally:
    mark("done")
print(json.dumps({"trashed": len(report.trashed), "skipped": len(report.skipped)}))
"""


def start_child(spec: dict[str, object], state_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PHOTODUP_STATE_DIR": str(state_dir)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("state_dirs", ["one state dir", "two state dirs"])
def test_two_applies_with_opposite_keepers_never_trash_both_copies(
    tmp_path: Path, home_trash: Path, state_dirs: str
) -> None:
    """A kept, B trashed in one process; B kept, A trashed in another; at the same time.

    With one state dir the acting lock serialises the batches; with two (another
    PHOTODUP_STATE_DIR) only the per-file locks stand between them.
    """
    a = [write(tmp_path / f"lib/A/{i:03}.jpg", b"photo %d " % i * 200) for i in range(PAIRS)]
    b = [write(tmp_path / f"lib/B/{i:03}.jpg", b"photo %d " % i * 200) for i in range(PAIRS)]
    before = snapshot(tmp_path / "lib")
    sync = tmp_path / "sync"
    sync.mkdir()
    second_state = tmp_path / ("state" if state_dirs == "one state dir" else "state2")
    one = start_child(
        {"pairs": list(zip(a, b, strict=True)), "sync": str(sync), "me": "1", "other": "2"},
        tmp_path / "state",
    )
    two = start_child(
        {"pairs": list(zip(b, a, strict=True)), "sync": str(sync), "me": "2", "other": "1"},
        second_state,
    )
    for child in (one, two):
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()

    # Re-read the disk: every photo still has a copy outside the trash, and the trash
    # holds complete entries of exactly the other copies.
    _in_place, trashed = assert_accounted_for(before, [home_trash])
    for i in range(PAIRS):
        left = [p for p in (a[i], b[i]) if os.path.isfile(p)]
        assert len(left) == 1, f"pair {i}: {left}"
        assert read(left[0]) == before[os.fsencode(left[0])]
    assert len(trashed) == PAIRS


def test_a_second_run_waits_for_the_first_and_says_for_whom(
    tmp_path: Path, home_trash: Path
) -> None:
    keeper = write(tmp_path / "p/a.jpg", b"x" * 1000)
    victim = write(tmp_path / "p/b.jpg", b"x" * 1000)
    plan = make_plan([group(Kind.EXACT, keeper, victim)])
    told: list[str] = []
    with acquire_acting(default_journal_dir()):  # another batch is running
        with pytest.raises(ActingBusy, match=f"pid {os.getpid()}"):
            execute(plan, dry_run=False, on_wait=told.append, lock_timeout=0)
        with pytest.raises(ActingBusy):
            undo(lock_timeout=0)
        cancel = threading.Event()
        cancel.set()  # e.g. Ctrl-C while waiting
        cancelled = execute(plan, dry_run=False, cancel=cancel)
        dry = execute(plan, dry_run=True, lock_timeout=0)  # a dry run needs no lock
    assert told == [f"another photodup process (pid {os.getpid()})"]
    assert cancelled.cancelled and cancelled.skipped == [(victim, "cancelled before acting")]
    assert [p for p, _w, _s in dry.trashed] == [victim]
    assert read(victim) == b"x" * 1000 and trash_entries(home_trash) == []
    assert list_batches() == []  # nothing started, so nothing to recover or undo

    report = execute(plan, dry_run=False, lock_timeout=0)  # free again
    assert report.waited_for is None and [p for p, _w, _s in report.trashed] == [victim]
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(victim)]


def test_a_group_whose_files_another_run_holds_is_skipped_after_the_wait(
    tmp_path: Path, home_trash: Path
) -> None:
    """Another photodup (another state dir: not the acting lock) holds the keeper."""
    keeper = write(tmp_path / "p/a.jpg", b"x" * 1000)
    victim = write(tmp_path / "p/b.jpg", b"x" * 1000)
    other_k = write(tmp_path / "p/c.jpg", b"y" * 1000)
    other_v = write(tmp_path / "p/d.jpg", b"y" * 1000)
    plan = make_plan([group(Kind.EXACT, keeper, victim), group(Kind.EXACT, other_k, other_v)])
    told: list[str] = []
    fd = os.open(keeper, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        report = execute(plan, dry_run=False, on_wait=told.append, lock_timeout=0)
    finally:
        os.close(fd)
    assert report.skipped == [(victim, "another photodup process is acting on these files")]
    assert told == ["another photodup process acting on the same files"]
    assert read(victim) == b"x" * 1000
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(other_v)]


# -- a file swapped in at the victim's path just before the rename (hole 5) -------------

_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_EXCHANGE = 2


def exchange(a: str, b: str) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE), as another program could."""
    if _libc.renameat2(-100, os.fsencode(a), -100, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


DATA = b"the duplicate " * 300
OTHER = b"an unrelated photo " * 200


@pytest.fixture
def swap_at_rename(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[str, str, str]:
    """keeper, victim, unrelated: at the first rename the victim and unrelated swap paths."""
    keeper = write(tmp_path / "p/keep.jpg", DATA)
    victim = write(tmp_path / "p/dup.jpg", DATA)
    unrelated = write(tmp_path / "q/other.jpg", OTHER)
    real, done = fsops.fault_point, list[str]()

    def hook(point: str) -> None:
        if point == "rename" and not done:
            done.append(point)
            exchange(victim, unrelated)
        real(point)

    monkeypatch.setattr(fsops, "fault_point", hook)
    return keeper, victim, unrelated


@pytest.mark.parametrize("mode", ["trash", "move"])
def test_a_file_swapped_in_before_the_rename_is_put_back(
    tmp_path: Path, home_trash: Path, swap_at_rename: tuple[str, str, str], mode: str
) -> None:
    keeper, victim, unrelated = swap_at_rename
    g = group(Kind.EXACT, keeper, victim)
    review = tmp_path / "review"
    plan = (
        make_plan([g]) if mode == "trash" else make_plan([g], mode=OpKind.MOVE, move_to=str(review))
    )
    report = execute(plan, dry_run=False)
    assert read(victim) == OTHER  # the unrelated file is back where it was taken from
    assert read(unrelated) == DATA  # the duplicate is where the swapper put it
    assert read(keeper) == DATA
    assert trash_entries(home_trash) == []  # strict: no info file left either
    assert not review.exists() or os.listdir(review) == []
    assert report.trashed == [] and report.failed == []
    assert "swapped in" in report.skipped[0][1]
    with pytest.raises(BatchNotFound):
        undo()


def test_a_swapped_in_file_that_cannot_go_back_is_restored_by_undo(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    home_trash: Path,
    swap_at_rename: tuple[str, str, str],
) -> None:
    keeper, victim, unrelated = swap_at_rename
    real = execute_module.fault_point

    def occupy(point: str) -> None:
        if point == "after_rename":  # something new appears at the path at once
            write(victim, b"a new file")
        real(point)

    monkeypatch.setattr(execute_module, "fault_point", occupy)
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert "could not be put back" in report.failed[0][1]
    [entry] = trash_entries(home_trash)
    assert entry.data == OTHER and entry.original == os.fsencode(victim)

    os.unlink(victim)  # the user moves the new file away and asks for the old one back
    assert undo().restored == [victim]
    assert read(victim) == OTHER and read(unrelated) == DATA
    assert trash_entries(home_trash) == []


class Killed(BaseException):
    """Stands in for SIGKILL in-process: no handler runs, nothing is cleaned up."""


@pytest.mark.parametrize(
    ("point", "mode"),
    [("before_put_back", "trash"), ("after_rename", "trash"), ("before_put_back", "move")],
)
def test_recovery_puts_a_swapped_in_file_back(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    home_trash: Path,
    swap_at_rename: tuple[str, str, str],
    point: str,
    mode: str,
) -> None:
    keeper, victim, unrelated = swap_at_rename
    real = execute_module.fault_point

    def die(at: str) -> None:
        if at == point:
            raise Killed
        real(at)

    monkeypatch.setattr(execute_module, "fault_point", die)
    g = group(Kind.EXACT, keeper, victim)
    review = tmp_path / "review"
    plan = make_plan([g], mode=OpKind(mode), move_to=str(review) if mode == "move" else None)
    with pytest.raises(Killed):
        execute(plan, dry_run=False)
    assert [b.state for b in interrupted_batches()] == ["interrupted"]
    recover()
    assert read(victim) == OTHER and read(unrelated) == DATA
    assert trash_entries(home_trash) == []
    assert not review.exists() or os.listdir(review) == []
    assert list_batches()[0].state == "complete"
