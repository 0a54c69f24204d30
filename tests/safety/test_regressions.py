"""Regressions an audit's deliberate bugs got past: each test here fails on one of them.

* M1: the byte compare must read the files to their ends, not just their first block.
* M8: keeper and victim are checked again right before *each* operation, not once a group.
* M10: ``rename_noreplace`` never replaces its destination, even when one appears in the
  moment between a caller's "does it exist" check and the rename.

Every assertion re-reads the disk (``tests/safety/helpers.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from photodup_tui.engine.safedelete import OpKind, RunReport, execute, fsops, make_plan, undo
from photodup_tui.engine.safedelete.fsops import rename_noreplace
from photodup_tui.engine.types import Group, Kind
from tests.safety.helpers import (
    assert_accounted_for,
    group,
    read,
    snapshot,
    trash_entries,
    write,
)

MIB = 1 << 20
#: Three blocks of the byte compare, and then some: no 1 MiB boundary is special.
BIG = (bytes(range(256)) * (MIB // 256)) * 3 + b"tail" * 1000
DATA = b"\xff\xd8\xff" + bytes(range(256)) * 40


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


# --------------------------------------------------------------------------
# M1: the whole file is compared


@pytest.mark.parametrize("where", ["last byte", "first byte of block 2", "middle of block 3"])
@pytest.mark.parametrize("mode", [OpKind.TRASH, OpKind.HARDLINK, OpKind.MOVE])
def test_big_files_equal_at_the_start_but_not_at_the_end_are_never_acted_on(
    tmp_path: Path, home_trash: Path, where: str, mode: OpKind
) -> None:
    """A forged (or stale) equal content hash labels them exact; the bytes say no."""
    at = {"last byte": len(BIG) - 1, "first byte of block 2": MIB, "middle of block 3": 2 * MIB + 7}
    keeper = write(tmp_path / "p/keeper.jpg", BIG)
    victim = write(tmp_path / "p/victim.jpg", flipped(BIG, at[where]))
    g = group(Kind.EXACT, keeper, victim, content_hash="forged-equal-hash")
    before = snapshot(tmp_path / "p")
    move_to = str(tmp_path / "p/review") if mode is OpKind.MOVE else None
    plan = make_plan([g], mode=mode, move_to=move_to)
    assert [op.victim.path for op in plan.operations] == [victim]  # the plan trusts the hash

    report = execute(plan, dry_run=False)

    assert snapshot(tmp_path / "p") == before
    assert os.lstat(victim).st_nlink == 1  # not replaced by a link to the keeper either
    assert trash_entries(home_trash) == []
    assert report.trashed == [] and report.bytes_reclaimed == 0
    assert "contents differ (rule 5)" in report.skipped[0][1]


def test_big_identical_files_are_still_trashed(tmp_path: Path, home_trash: Path) -> None:
    """The other side of the test above: a full compare of equal multi-block files passes."""
    keeper = write(tmp_path / "p/keeper.jpg", BIG)
    victim = write(tmp_path / "p/victim.jpg", BIG)
    plan = make_plan([group(Kind.EXACT, keeper, victim, content_hash="h")])
    report = execute(plan, dry_run=False)
    assert not os.path.lexists(victim) and read(keeper) == BIG
    [entry] = trash_entries(home_trash)
    assert entry.data == BIG and report.bytes_reclaimed == len(BIG)


# --------------------------------------------------------------------------
# M8: every operation checks keeper and victim again


def run_with(groups_: list[Group], step: Callable[[int], None]) -> RunReport:
    """Execute for real; ``step(done)`` runs after each operation (a change by someone else)."""
    return execute(make_plan(groups_), dry_run=False, progress=lambda done, _total: step(done))


def test_keeper_deleted_after_the_first_operation_stops_the_rest(
    tmp_path: Path, home_trash: Path
) -> None:
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victims = [write(tmp_path / f"p/v{i}.jpg", DATA) for i in range(4)]
    before = snapshot(tmp_path / "p")

    def delete_keeper(done: int) -> None:
        if done == 1:
            os.unlink(keeper)

    report = run_with([group(Kind.EXACT, keeper, *victims)], delete_keeper)

    # One copy went to the trash before the keeper vanished; every later copy stayed.
    assert all(read(v) == DATA for v in victims[1:])
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(victims[0])]
    assert len(report.skipped) == 3
    assert all("is gone" in why for _p, why in report.skipped)
    del before[os.fsencode(keeper)]  # removed by "someone else", not by us
    assert_accounted_for(before, [home_trash])


@pytest.mark.parametrize("kind", [Kind.EXACT, Kind.NEAR])
def test_keeper_replaced_by_other_bytes_mid_batch_stops_the_rest(
    tmp_path: Path, home_trash: Path, kind: Kind
) -> None:
    """Near groups are never byte-compared: only the per-operation check protects them."""
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victims = [write(tmp_path / f"p/v{i}.jpg", DATA) for i in range(3)]

    def replace_keeper(done: int) -> None:
        if done == 1:
            write(tmp_path / "p/.new", b"a different picture")
            os.replace(tmp_path / "p/.new", keeper)

    report = run_with([group(kind, keeper, *victims, decodable=True)], replace_keeper)
    assert all(read(v) == DATA for v in victims[1:])
    assert len(trash_entries(home_trash)) == 1
    assert all("keeper" in why for _p, why in report.skipped)


def test_victim_edited_mid_batch_is_not_trashed(tmp_path: Path, home_trash: Path) -> None:
    """A later victim that became the only copy of new bytes after the group check."""
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victims = [write(tmp_path / f"p/v{i}.jpg", DATA) for i in range(3)]
    edit = b"new work " + DATA[9:]

    def edit_last(done: int) -> None:
        if done == 1:
            with open(victims[2], "r+b") as f:
                f.write(edit[:9])

    report = run_with([group(Kind.NEAR, keeper, *victims, decodable=True)], edit_last)
    assert read(victims[2]) == edit
    assert [
        e.data for e in trash_entries(home_trash) if e.original == os.fsencode(victims[2])
    ] == []
    assert any("changed since the scan" in why for _p, why in report.skipped)


def test_near_victim_edited_in_place_with_its_mtime_put_back_is_kept(
    tmp_path: Path, home_trash: Path
) -> None:
    """No byte compare for near copies: the ctime is the only witness of this edit."""
    keeper = write(tmp_path / "p/keeper.jpg", DATA)
    victim = write(tmp_path / "p/victim.jpg", DATA)
    g = group(Kind.NEAR, keeper, victim, decodable=True)
    st = os.lstat(victim)
    edit = DATA[::-1]
    with open(victim, "r+b") as f:
        f.write(edit)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    report = execute(make_plan([g]), dry_run=False)
    assert read(victim) == edit
    assert trash_entries(home_trash) == []
    assert "changed since the scan (ctime_ns)" in report.skipped[0][1]


# --------------------------------------------------------------------------
# M10: rename_noreplace never replaces


def _no_atomic_primitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsops, "_renameat2", None)
    monkeypatch.setattr(fsops, "_renamex_np", None)


@pytest.mark.parametrize("primitive", ["native", "fallback"])
def test_rename_noreplace_refuses_an_existing_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, primitive: str
) -> None:
    if primitive == "fallback":
        _no_atomic_primitive(monkeypatch)
    src = write(tmp_path / "src.jpg", b"source")
    dst = write(tmp_path / "dst.jpg", b"destination")
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "nowhere")
    for target in (dst, str(dangling)):
        with pytest.raises(FileExistsError):
            rename_noreplace(src, target)
    assert read(src) == b"source" and read(dst) == b"destination"
    assert os.readlink(dangling) == str(tmp_path / "nowhere")
    rename_noreplace(src, str(tmp_path / "free.jpg"))  # and a free name just works
    assert read(tmp_path / "free.jpg") == b"source" and not os.path.lexists(src)


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux's primitive")
def test_rename_noreplace_is_atomic_on_linux(tmp_path: Path) -> None:
    """The native primitive is in use here, so no caller's check-then-rename can race."""
    assert fsops._renameat2 is not None
    src = write(tmp_path / "src.jpg", b"source")
    dst = write(tmp_path / "dst.jpg", b"destination")
    with pytest.raises(FileExistsError):
        rename_noreplace(src, dst)
    assert read(dst) == b"destination"


def appear_at_rename(
    monkeypatch: pytest.MonkeyPatch, where: Callable[[], str], data: bytes, times: int = 1
) -> list[str]:
    """Make a file appear at ``where()`` at the moment of the rename: after every check."""
    made: list[str] = []

    def hook(point: str) -> None:
        if point == "rename" and len(made) < times:
            path = where()
            write(path, data)
            made.append(path)

    monkeypatch.setattr(fsops, "fault_point", hook)
    return made


def test_a_file_appearing_at_the_move_destination_is_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "p/a/x.jpg", DATA)
    victim = write(tmp_path / "p/b/x.jpg", DATA)
    review = tmp_path / "p/review"
    plan = make_plan([group(Kind.EXACT, keeper, victim)], mode=OpKind.MOVE, move_to=str(review))
    made = appear_at_rename(monkeypatch, lambda: str(review / "x.jpg"), b"intruder")
    report = execute(plan, dry_run=False)
    assert made == [str(review / "x.jpg")]
    assert read(review / "x.jpg") == b"intruder"
    assert read(review / "x.2.jpg") == DATA and not os.path.lexists(victim)
    assert report.failed == []


def test_a_file_appearing_in_trash_files_is_not_overwritten(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "p/a/x.jpg", DATA)
    victim = write(tmp_path / "p/b/x.jpg", DATA)
    plan = make_plan([group(Kind.EXACT, keeper, victim)])
    made = appear_at_rename(monkeypatch, lambda: str(home_trash / "files/x.jpg"), b"intruder")
    report = execute(plan, dry_run=False)
    assert made and read(home_trash / "files/x.jpg") == b"intruder"
    assert read(home_trash / "files/x.2.jpg") == DATA and not os.path.lexists(victim)
    # The name the intruder took has no info file of ours left behind.
    assert sorted(os.listdir(home_trash / "info")) == ["x.2.jpg.trashinfo"]
    assert report.failed == [] and len(report.trashed) == 1


def test_a_file_appearing_at_the_original_path_during_undo_is_not_overwritten(
    tmp_path: Path, home_trash: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "p/a.jpg", DATA)
    victim = write(tmp_path / "p/b.jpg", DATA)
    execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    appear_at_rename(monkeypatch, lambda: victim, b"made by the user meanwhile")
    report = undo()
    assert read(victim) == b"made by the user meanwhile"
    assert [e.data for e in trash_entries(home_trash)] == [DATA]
    assert report.restored == [] and "appeared at this path" in report.refused[0][1]
