"""Rules 1, 2, 3, 6, 7, 11 and 14 as the plan sees them, then proved on disk after a real run.

Each test builds a real tree, plans, *executes for real*, and re-reads the disk: the files
a rule protects are still there with their bytes, and no trash entry holds them.
"""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from photodup_tui.engine.safedelete import execute, make_plan
from photodup_tui.engine.types import Action, Group, Kind
from tests.safety.helpers import group, member, read, snapshot, trash_entries, write

DATA = b"\xff\xd8\xff" + bytes(range(256)) * 40


def run_and_check_untouched(groups: list[Group], root: Path, home_trash: Path) -> list[str]:
    """Plan + real run; assert nothing under ``root`` moved; return the refusal reasons."""
    before = snapshot(root)
    plan = make_plan(groups)
    report = execute(plan, dry_run=False)
    assert snapshot(root) == before
    assert trash_entries(home_trash) == []
    assert report.trashed == []
    return [reason for _path, reason in report.skipped]


def test_whole_group_marked_for_deletion_is_refused(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    g = Group(Kind.EXACT, [member(a), member(b)], "byte-identical")
    reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    assert len(reasons) == 2 and all("keep one copy" in r for r in reasons)


def test_same_root_twice_never_makes_a_file_its_own_victim(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "p")  # the same root given again by another spelling
    spellings = [a, a, str(alias / "a.jpg"), os.path.join(tmp_path, "p", ".", "a.jpg")]
    g = group(Kind.EXACT, *spellings)
    reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    assert len(reasons) == 3 and all("same file as the keeper" in r for r in reasons)


def test_same_root_twice_in_a_real_group_trashes_only_the_other_copy(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    g = group(Kind.EXACT, a, a, b, b)  # the walk met every file twice
    report = execute(make_plan([g]), dry_run=False)
    assert read(a) == DATA
    assert not os.path.lexists(b)
    [entry] = trash_entries(home_trash)
    assert entry.original == os.fsencode(b) and entry.data == DATA
    assert len(report.trashed) == 1
    assert [r.split(" (")[0] for _p, r in report.skipped] == [
        "same file as the keeper",
        "already planned",
    ]


def test_bind_mount_of_the_same_folder_is_one_replica(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    bound = tmp_path / "bound"
    bound.mkdir()
    if subprocess.run(["mount", "--bind", str(tmp_path / "p"), str(bound)]).returncode != 0:
        pytest.skip("bind mounts are not allowed here")
    try:
        g = group(Kind.EXACT, a, str(bound / "a.jpg"))
        reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    finally:
        subprocess.run(["umount", "-l", str(bound)])
    assert reasons and "same file as the keeper" in reasons[0]


def test_hard_link_of_the_keeper_is_never_a_victim(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    os.link(a, tmp_path / "p/a-link.jpg")
    g = group(Kind.EXACT, a, str(tmp_path / "p/a-link.jpg"))
    reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    assert "same file as the keeper" in reasons[0]


def test_hard_link_of_a_file_kept_in_another_group_is_never_a_victim(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    c = write(tmp_path / "p/c.jpg", DATA)
    os.link(a, tmp_path / "p/a-link.jpg")
    kept_elsewhere = group(Kind.NEAR, a, decodable=True)
    g = group(Kind.EXACT, c, str(tmp_path / "p/a-link.jpg"))
    reasons = run_and_check_untouched([kept_elsewhere, g], tmp_path / "p", home_trash)
    assert "member you keep" in reasons[0]


def test_symlinks_are_neither_keepers_nor_victims(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    link = tmp_path / "p/link.jpg"
    link.symlink_to(b)
    as_victim = group(Kind.EXACT, a, str(link))
    as_keeper = group(Kind.EXACT, str(link), b)
    assert run_and_check_untouched([as_victim], tmp_path / "p", home_trash) == [
        "is a symlink (rule 3)"
    ]
    assert run_and_check_untouched([as_keeper], tmp_path / "p", home_trash) == [
        "keeper is a symlink (rule 3)"
    ]
    assert os.readlink(link) == b


def test_symlink_loop_reaches_the_keeper_again_and_is_refused(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    (tmp_path / "p/loop").symlink_to(".")  # p/loop/loop/... is p again
    (tmp_path / "p/x1").symlink_to("x2")
    (tmp_path / "p/x2").symlink_to("x1")  # a two-link loop as a "file"
    through_loop = str(tmp_path / "p/loop/loop/a.jpg")
    g = Group(
        Kind.EXACT,
        [member(a, Action.KEEP), member(through_loop), member(str(tmp_path / "p/x1"))],
        "t",
    )
    reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    assert "same file as the keeper" in reasons[0]
    assert reasons[1] == "is a symlink (rule 3)"


def test_similar_groups_need_an_explicit_choice(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA[:-1] + b"x")
    g = group(Kind.SIMILAR, a, b, decodable=True)
    reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    assert "explicit choice" in reasons[0]
    report = execute(make_plan([g], allow_similar=True), dry_run=False)
    assert not os.path.lexists(b) and os.path.exists(a)
    assert [e.data for e in trash_entries(home_trash)] == [DATA[:-1] + b"x"]
    assert report.bytes_reclaimed == len(DATA)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_beside_its_original(tmp_path: Path, home_trash: Path) -> None:
    """Rule 7 both ways, and rule 5 if a report calls them identical."""
    full = _jpeg()
    original = write(tmp_path / "p/IMG_1.jpg", full)
    truncated = write(tmp_path / "p/IMG_1 (copy).jpg", full[: len(full) // 2])
    keeper_broken = Group(
        Kind.NEAR,
        [member(truncated, Action.KEEP, decodable=False), member(original, decodable=True)],
        "t",
    )
    victim_broken = Group(
        Kind.NEAR,
        [member(original, Action.KEEP, decodable=True), member(truncated, decodable=False)],
        "t",
    )
    # A wrong or hand-made report, without hashes: only the byte compare can tell.
    called_exact = group(Kind.EXACT, original, truncated, content_hash=None)
    reasons = [
        run_and_check_untouched([g], tmp_path / "p", home_trash)
        for g in (keeper_broken, victim_broken, called_exact)
    ]
    assert "keeper is undecodable" in reasons[0][0]
    assert "undecodable: never deleted because of a similarity match" in reasons[1][0]
    assert "contents differ" in reasons[2][0]


def test_undecodable_exact_duplicates_are_decided_by_bytes(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.raw", DATA)
    b = write(tmp_path / "p/b.raw", DATA)
    execute(make_plan([group(Kind.EXACT, a, b, decodable=False)]), dry_run=False)
    assert os.path.exists(a) and not os.path.lexists(b)
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(b)]


def test_reference_folders_are_never_targets_under_any_spelling(
    tmp_path: Path, home_trash: Path
) -> None:
    ref = tmp_path / "p/reference"
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(ref / "sub/b.jpg", DATA)
    spelled_otherwise = tmp_path / "ref-alias"
    spelled_otherwise.symlink_to(ref)
    g = group(Kind.EXACT, a, b)
    before = snapshot(tmp_path / "p")
    report = execute(make_plan([g], reference_dirs=[str(spelled_otherwise)]), dry_run=False)
    assert snapshot(tmp_path / "p") == before
    assert "reference folder" in report.skipped[0][1]


def test_files_inside_a_trash_are_never_targets(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    in_home_trash = write(home_trash / "files/a.jpg", DATA)
    in_topdir_trash = write(tmp_path / "p/.Trash-1000/files/a.jpg", DATA)
    g = group(Kind.EXACT, a, in_home_trash, in_topdir_trash)
    report = execute(make_plan([g]), dry_run=False)
    assert os.path.exists(in_home_trash) and os.path.exists(in_topdir_trash)
    assert [r for _p, r in report.skipped] == ["inside a trash folder (rule 11)"] * 2


def test_relative_paths_are_refused(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    g = group(Kind.EXACT, a, b)
    g.members[1].photo.path = os.path.relpath(b)
    reasons = run_and_check_untouched([g], tmp_path / "p", home_trash)
    assert reasons == ["not an absolute path"]


def test_plan_lines_list_every_operation_and_refusal(tmp_path: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    plan = make_plan([group(Kind.EXACT, a, b, a)])
    assert plan.lines() == [
        f"trash {b!r} (keeps {a!r})",
        f"refuse {a!r}: same file as the keeper (same device and inode: hard link or repeated root)",
    ]
    assert plan.bytes_planned == len(DATA)
