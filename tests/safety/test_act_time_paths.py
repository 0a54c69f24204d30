"""Act-time refusals and post-act checks that no other in-process test reaches.

Each test makes the disk disagree with the plan in one precise way, at one precise moment,
runs the batch for real, and re-reads the disk:

* a victim or keeper turned into a symlink after the scan (rule 3, at act time);
* a plan (stale, hand-made) whose victim is the keeper's inode (rule 2, at act time);
* a keeper that cannot be read when a near or similar copy is about to go (rule 1);
* a file swapped between its ``lstat`` and its ``open`` (the fd is checked, rule 4);
* a move into a read-only destination on the same device;
* each post-trash / post-move check failing (rule 9): the batch says so, the journal
  records where the file went, and nothing is lost.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from photodup_tui.engine.safedelete import (
    FileRef,
    Operation,
    OpKind,
    Plan,
    RunReport,
    execute,
    make_plan,
    undo,
    verify,
)
from photodup_tui.engine.types import FileStat, Group, Kind
from tests.safety.helpers import (
    group,
    mount,
    read,
    snapshot,
    trash_entries,
    write,
)

DATA = b"\xff\xd8\xff" + bytes(range(256)) * 40
#: The module (``safedelete.execute`` the attribute is the function of the same name).
EXECUTE = sys.modules["photodup_tui.engine.safedelete.execute"]


def run(groups: list[Group], **plan_options: Any) -> RunReport:
    return execute(make_plan(groups, **plan_options), dry_run=False)


# --------------------------------------------------------------------------
# Rule 3 at act time


@pytest.mark.parametrize("who", ["victim", "keeper"])
def test_a_file_turned_into_a_symlink_after_the_scan_is_left_alone(
    tmp_path: Path, home_trash: Path, who: str
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    plan = make_plan([group(Kind.EXACT, keeper, victim)])
    elsewhere = write(tmp_path / "elsewhere/copy.jpg", DATA)
    swapped = victim if who == "victim" else keeper
    os.unlink(swapped)
    os.symlink(elsewhere, swapped)  # same bytes behind it: only the link type tells

    report = execute(plan, dry_run=False)

    assert os.readlink(swapped) == elsewhere and read(elsewhere) == DATA
    assert read(victim) == DATA and read(keeper) == DATA
    assert trash_entries(home_trash) == []
    assert report.trashed == [] and "is now a symlink (rule 3)" in report.skipped[0][1]


# --------------------------------------------------------------------------
# Rule 2 at act time


@pytest.mark.parametrize("spelling", ["hard link", "same path"])
def test_a_plan_whose_victim_is_the_keepers_inode_is_refused_when_acting(
    tmp_path: Path, home_trash: Path, spelling: str
) -> None:
    """``make_plan`` never builds this; a stale or hand-made plan can, and runs anyway."""
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = keeper
    if spelling == "hard link":
        victim = str(tmp_path / "p/link.jpg")
        os.link(keeper, victim)
    ref = {p: FileRef(p, FileStat.of(os.lstat(p))) for p in {keeper, victim}}
    op = Operation(OpKind.TRASH, 0, Kind.EXACT, victim=ref[victim], keeper=ref[keeper])
    before = snapshot(tmp_path / "p")

    report = execute(Plan(operations=[op]), dry_run=False)

    assert snapshot(tmp_path / "p") == before
    assert os.lstat(keeper).st_nlink == (2 if spelling == "hard link" else 1)
    assert trash_entries(home_trash) == []
    assert report.skipped == [(victim, "victim and keeper are the same file (rule 2)")]


# --------------------------------------------------------------------------
# Rule 1: the keeper must be readable


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CAP_V3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


@contextmanager
def permissions_enforced() -> Iterator[None]:
    """File modes apply to this thread even as root: drop the DAC override capabilities
    from the effective set (they stay permitted, so they come back afterwards)."""
    if os.geteuid() != 0:
        yield
        return
    if sys.platform != "linux":
        pytest.skip("root outside Linux: no way to make a file unreadable to us")
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_V3, 0), (_CapData * 2)()
    assert libc.capget(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    saved = data[0].effective
    data[0].effective &= ~_DAC_CAPS
    assert libc.capset(ctypes.byref(header), data) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0


@pytest.mark.parametrize("kind", [Kind.NEAR, Kind.SIMILAR, Kind.EXACT])
def test_an_unreadable_keeper_keeps_every_copy(
    tmp_path: Path, home_trash: Path, kind: Kind
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    # Other bytes for near and similar copies: equal hashes would make them exact.
    copy = DATA if kind is Kind.EXACT else DATA[:-1] + bytes([DATA[-1] ^ 1])
    victims = [write(tmp_path / f"p/v{i}.jpg", copy) for i in range(2)]
    os.chmod(keeper, 0)  # before the "scan": chmod moves ctime, which act time would see
    plan = make_plan([group(kind, keeper, *victims, decodable=True)], allow_similar=True)
    assert len(plan.operations) == 2
    with permissions_enforced():
        with pytest.raises(PermissionError):
            open(keeper, "rb").close()
        report = execute(plan, dry_run=False)
    os.chmod(keeper, 0o644)
    assert read(keeper) == DATA and all(read(v) == copy for v in victims)
    assert trash_entries(home_trash) == []
    expected = "byte compare with the keeper failed" if kind is Kind.EXACT else "not readable"
    assert [why for _p, why in report.skipped] == [report.skipped[0][1]] * 2
    assert expected in report.skipped[0][1] and "Permission denied" in report.skipped[0][1]


# --------------------------------------------------------------------------
# Rule 4: the file opened is the file checked


@pytest.mark.parametrize(
    ("kind", "who"),
    [(Kind.EXACT, "keeper"), (Kind.EXACT, "victim"), (Kind.NEAR, "keeper")],
)
def test_a_file_swapped_between_its_stat_and_its_open_is_caught_on_the_fd(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch, kind: Kind, who: str
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    plan = make_plan([group(kind, keeper, victim, decodable=True)])
    target = keeper if who == "keeper" else victim
    real_stat_problem = verify.stat_problem
    swaps: list[str] = []

    def stat_then_swap(ref: FileRef, expected: FileStat) -> str | None:
        problem = real_stat_problem(ref, expected)
        if ref.path == target and not swaps:  # right after its lstat passed
            write(tmp_path / "p/.swap", DATA)  # equal bytes, another inode
            os.replace(tmp_path / "p/.swap", target)
            swaps.append(target)
        return problem

    monkeypatch.setattr(verify, "stat_problem", stat_then_swap)
    report = execute(plan, dry_run=False)

    assert swaps == [target]
    assert read(keeper) == DATA and read(victim) == DATA
    assert trash_entries(home_trash) == []
    assert report.trashed == [] and "was replaced while being checked" in report.skipped[0][1]


# --------------------------------------------------------------------------
# Moves into a read-only destination


@pytest.mark.parametrize("dest", ["the read-only folder", "a new folder inside it"])
def test_a_move_into_a_read_only_destination_leaves_the_file(
    tmp_path: Path, tmpfs: Path, dest: str
) -> None:
    """Same mount, so only the read-only flag stops it: the whole filesystem made read-only
    after the plan.  (A read-only bind mount of the folder is another mount, refused as such
    before the flag is looked at.)"""
    keeper = write(tmpfs / "p/a.jpg", DATA)
    victim = write(tmpfs / "p/b.jpg", DATA)
    review = tmpfs / "review"
    review.mkdir()
    folder = review if dest == "the read-only folder" else review / "new"
    plan = make_plan([group(Kind.EXACT, keeper, victim)], mode=OpKind.MOVE, move_to=str(folder))
    assert mount(["mount", "-o", "remount,ro", str(tmpfs)])
    try:
        rehearsal = execute(plan, dry_run=True)
        report = execute(plan, dry_run=False)
        assert os.listdir(review) == []
    finally:
        assert mount(["mount", "-o", "remount,rw", str(tmpfs)])
    assert read(victim) == DATA and read(keeper) == DATA
    assert report.trashed == [] and report.failed == []
    assert report.skipped == [(victim, "destination is on a read-only filesystem")]
    assert rehearsal.skipped == report.skipped and rehearsal.trashed == []  # a dry run says so


# --------------------------------------------------------------------------
# Rule 9: the checks after the rename


def at_after_rename(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object]) -> None:
    """Run ``action`` once, right after the victim's rename and before its checks."""
    done: list[bool] = []

    def hook(point: str) -> None:
        if point == "after_rename" and not done:
            done.append(True)
            action()

    monkeypatch.setattr(EXECUTE, "fault_point", hook)


def only_trash_file(home_trash: Path) -> Path:
    [name] = os.listdir(home_trash / "files")
    return home_trash / "files" / name


def test_a_foreign_file_in_the_trash_entry_right_after_the_rename_is_put_back(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What arrived in the trash is not the victim's inode (a swap, before or just after
    the rename, looks the same): it goes back to the path, the operation is skipped, and
    the trash keeps no entry of it."""
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)

    def replace_trash_file() -> None:
        path = only_trash_file(home_trash)
        write(str(path) + ".tmp", read(path))
        os.replace(str(path) + ".tmp", path)

    at_after_rename(monkeypatch, replace_trash_file)
    report = run([group(Kind.EXACT, keeper, victim)])
    assert report.trashed == [] and report.failed == []
    assert report.skipped == [
        (victim, "another file was swapped in at this path just before the move; put back")
    ]
    assert read(victim) == DATA and read(keeper) == DATA
    assert trash_entries(home_trash) == []


def test_trash_info_lost_right_after_the_rename_is_reported_and_undo_restores(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    ino = os.lstat(victim).st_ino

    def drop_info() -> None:
        [info] = os.listdir(home_trash / "info")
        os.unlink(home_trash / "info" / info)

    at_after_rename(monkeypatch, drop_info)
    report = run([group(Kind.EXACT, keeper, victim)])
    [(path, why)] = report.failed
    assert path == victim and why.endswith("trash info file missing or unreadable")
    assert not os.path.lexists(victim)
    assert read(only_trash_file(home_trash)) == DATA  # the journal knows where it is
    assert undo().restored == [victim]
    assert read(victim) == DATA and os.lstat(victim).st_ino == ino
    assert os.listdir(home_trash / "files") == []


def test_original_path_still_holding_the_file_after_the_rename_is_reported(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    at_after_rename(monkeypatch, lambda: os.link(only_trash_file(home_trash), victim))
    report = run([group(Kind.EXACT, keeper, victim)])
    assert report.failed == [
        (victim, "moved to the trash, but the original path still holds the file")
    ]
    assert read(victim) == DATA and read(keeper) == DATA
    assert report.bytes_reclaimed == 0


def test_hard_link_that_cannot_be_put_in_place_is_reported_and_nothing_is_overwritten(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    at_after_rename(monkeypatch, lambda: write(victim, b"saved by the user meanwhile"))
    report = run([group(Kind.EXACT, keeper, victim)], mode=OpKind.HARDLINK)
    [(path, why)] = report.failed
    assert path == victim and "link to the keeper could not be put in place" in why
    assert read(victim) == b"saved by the user meanwhile"
    [spare] = [n for n in os.listdir(tmp_path / "p") if n.startswith(".photodup-link-")]
    assert os.path.samefile(tmp_path / "p" / spare, keeper)  # the keeper's content has a name
    assert [e.data for e in trash_entries(home_trash)] == [DATA]  # and so has the victim's


@pytest.mark.parametrize("tamper", ["moved away", "linked back"])
def test_moved_file_checks_after_the_rename(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch, tamper: str
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    review = tmp_path / "p/review"

    def act() -> None:
        if tamper == "moved away":
            os.rename(review / "victim.jpg", tmp_path / "p/elsewhere.jpg")
        else:
            os.link(review / "victim.jpg", victim)

    at_after_rename(monkeypatch, act)
    report = run([group(Kind.EXACT, keeper, victim)], mode=OpKind.MOVE, move_to=str(review))
    expected = {
        "moved away": "moved, but the moved file is not at its destination",
        "linked back": "moved, but the original path still holds the file",
    }
    assert report.failed == [(victim, expected[tamper])]
    assert report.trashed == []
    survivors = snapshot(tmp_path / "p")
    assert DATA in survivors.values() and read(keeper) == DATA
