"""The walk finds each photo file once, never through a symlink, never in a trash folder."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import pytest

from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.walk import Walker


def write(path: Path, data: bytes = b"\xff\xd8 jpeg bytes \xff\xd9") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def walk(roots: list[Path | str], **options: object) -> tuple[list[str], Walker]:
    walker = Walker(replace(ScanSettings(), **options))  # type: ignore[arg-type]
    found = [p.path for p in walker.walk([os.fspath(r) for r in roots])]
    return found, walker


def test_finds_images_by_extension_case_insensitively(tmp_path: Path) -> None:
    write(tmp_path / "a.jpg")
    write(tmp_path / "B.JPEG")
    write(tmp_path / "sub" / "c.HeIc")
    write(tmp_path / "notes.txt")
    write(tmp_path / "raw.CR2")
    found, _ = walk([tmp_path])
    assert sorted(os.path.basename(p) for p in found) == ["B.JPEG", "a.jpg", "c.HeIc", "raw.CR2"]
    found, _ = walk([tmp_path], raw=False)
    assert "raw.CR2" not in {os.path.basename(p) for p in found}


@pytest.mark.parametrize("name", ["scan.k25", "back.MOS", "leaf.mef", "old.dcr", "pic.dib"])
def test_every_name_the_decoder_knows_is_offered(tmp_path: Path, name: str) -> None:
    """One table of names for walker and decoder: these were the decoder's alone."""
    from photodupd.imagebase import has_raw_suffix

    write(tmp_path / name)
    found, _ = walk([tmp_path])
    assert [os.path.basename(p) for p in found] == [name]
    found, _ = walk([tmp_path], raw=False)
    assert bool(found) is not has_raw_suffix(name)


def test_symlink_loop_is_walked_once_and_symlinks_are_never_reported(tmp_path: Path) -> None:
    photo = write(tmp_path / "lib" / "a.jpg")
    os.symlink(tmp_path / "lib", tmp_path / "lib" / "loop")  # dir symlink to itself
    os.symlink(photo, tmp_path / "lib" / "link.jpg")  # file symlink
    found, walker = walk([tmp_path / "lib"])
    assert found == [str(photo)]
    assert walker.stats.symlinks_skipped == 2


def test_symlinked_file_named_as_a_root_is_not_followed(tmp_path: Path) -> None:
    photo = write(tmp_path / "a.jpg")
    os.symlink(photo, tmp_path / "link.jpg")
    found, walker = walk([tmp_path / "link.jpg"])
    assert found == []
    assert walker.stats.errors and "symlink" in walker.stats.errors[0][1]


def test_symlinked_folder_named_as_a_root_is_walked(tmp_path: Path) -> None:
    write(tmp_path / "real" / "a.jpg")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    found, _ = walk([tmp_path / "alias"])
    assert found == [str(tmp_path / "alias" / "a.jpg")]


def test_same_root_twice_and_overlapping_roots_count_each_file_once(tmp_path: Path) -> None:
    a = write(tmp_path / "lib" / "a.jpg")
    b = write(tmp_path / "lib" / "sub" / "b.jpg")
    found, walker = walk([tmp_path / "lib" / "sub", tmp_path / "lib", tmp_path / "lib/"])
    assert sorted(found) == sorted([str(a), str(b)])
    assert walker.stats.dirs == 2  # "sub" is entered once, though two roots reach it
    found, _ = walk([tmp_path / "lib", tmp_path / "lib" / "sub", tmp_path / "lib" / ".." / "lib"])
    assert sorted(found) == sorted([str(a), str(b)])


def test_hard_links_count_once(tmp_path: Path) -> None:
    a = write(tmp_path / "x" / "a.jpg")
    (tmp_path / "y").mkdir()
    os.link(a, tmp_path / "y" / "a-link.jpg")
    found, walker = walk([tmp_path])
    assert found == [str(a)]
    assert walker.stats.aliases_skipped == 1


def test_bind_mount_like_second_path_to_same_folder_is_walked_once(tmp_path: Path) -> None:
    """A folder reached by a second (symlinked) root is the same (dev, ino): walked once."""
    a = write(tmp_path / "real" / "a.jpg")
    os.symlink(tmp_path / "real", tmp_path / "other")
    found, _ = walk([tmp_path / "real", tmp_path / "other"])
    assert found == [str(a)]


@pytest.mark.parametrize("trash", [".Trash", ".Trash-1000", ".Trashes", "$RECYCLE.BIN"])
def test_trash_folders_are_skipped_even_with_hidden_included(tmp_path: Path, trash: str) -> None:
    keep = write(tmp_path / "a.jpg")
    write(tmp_path / trash / "files" / "old.jpg")
    found, walker = walk([tmp_path], include_hidden=True)
    assert found == [str(keep)]
    assert walker.stats.trash_skipped == 1


def test_xdg_home_trash_is_skipped_when_inside_a_root(tmp_path: Path) -> None:
    data_home = Path(os.environ["XDG_DATA_HOME"])  # set to a temp dir by conftest
    write(data_home / "Trash" / "files" / "old.jpg")
    keep = write(data_home / "a.jpg")
    found, _ = walk([data_home], include_hidden=True)
    assert found == [str(keep)]


@pytest.mark.parametrize("root", [".Trash-1000", ".Trash-1000/files"])
def test_trash_named_as_root_is_refused(tmp_path: Path, root: str) -> None:
    write(tmp_path / ".Trash-1000" / "files" / "old.jpg")
    found, walker = walk([tmp_path / root], include_hidden=True)
    assert found == []
    assert "trash" in walker.stats.errors[0][1]


def test_folder_inside_the_xdg_home_trash_is_refused_as_root() -> None:
    data_home = Path(os.environ["XDG_DATA_HOME"])
    write(data_home / "Trash" / "files" / "album" / "old.jpg")
    found, _ = walk([data_home / "Trash" / "files" / "album"])
    assert found == []


def test_exclusions_by_name_and_by_path(tmp_path: Path) -> None:
    keep = write(tmp_path / "photos" / "a.jpg")
    write(tmp_path / "photos" / "a.thumb.jpg")
    write(tmp_path / "node_modules" / "icon.png")
    write(tmp_path / "Backups" / "2020" / "b.jpg")
    found, _ = walk([tmp_path], exclude=("*.thumb.jpg", "node_modules", "*/Backups/*"))
    assert found == [str(keep)]


def test_hidden_files_and_folders(tmp_path: Path) -> None:
    keep = write(tmp_path / "a.jpg")
    hidden_file = write(tmp_path / ".b.jpg")
    hidden_dir_file = write(tmp_path / ".thumbs" / "c.jpg")
    found, _ = walk([tmp_path])
    assert found == [str(keep)]
    found, _ = walk([tmp_path], include_hidden=True)
    assert sorted(found) == sorted(map(str, [keep, hidden_file, hidden_dir_file]))


def test_minimum_size_and_empty_files(tmp_path: Path) -> None:
    write(tmp_path / "empty.jpg", b"")
    small = write(tmp_path / "small.jpg", b"x" * 10)
    big = write(tmp_path / "big.jpg", b"x" * 1000)
    found, _ = walk([tmp_path])
    assert sorted(found) == sorted([str(big), str(small)])
    found, _ = walk([tmp_path], min_size=100)
    assert found == [str(big)]


def test_odd_file_names_round_trip_exactly(tmp_path: Path) -> None:
    names = [
        b"new\nline.jpg",
        b"-leading-dash.jpg",
        b'quote\'s "double".jpg',
        b"spaces  and\ttab.jpg",
        b"invalid-\xff\xfe-utf8.jpg",
        "caf\u00e9-nfc.jpg".encode(),
    ]
    base = os.fsencode(tmp_path)
    for name in names:
        with open(os.path.join(base, name), "wb") as fh:
            fh.write(b"data")
    found, _ = walk([tmp_path])
    assert sorted(os.fsencode(os.path.basename(p)) for p in found) == sorted(names)
    for path in found:  # every reported str opens the very file
        with open(path, "rb") as fh:
            assert fh.read() == b"data"


def test_special_files_are_skipped(tmp_path: Path) -> None:
    keep = write(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    found, _ = walk([tmp_path])
    assert found == [str(keep)]


@pytest.mark.needs_nonroot
def test_unreadable_folder_is_an_error_not_a_crash(tmp_path: Path) -> None:
    keep = write(tmp_path / "a.jpg")
    locked = tmp_path / "locked"
    write(locked / "b.jpg")
    locked.chmod(0)
    try:
        found, walker = walk([tmp_path])
    finally:
        locked.chmod(0o755)
    assert found == [str(keep)]
    assert walker.stats.errors == [(str(locked), os.strerror(errno.EACCES))]


@pytest.mark.needs_nonroot
def test_a_folder_listed_but_not_entered_is_an_error_per_entry(tmp_path: Path) -> None:
    """Read but no search permission: the names can be listed, but no entry can be looked
    at; each photo there is an error, the walk goes on."""
    keep = write(tmp_path / "a.jpg")
    closed = tmp_path / "closed"
    write(closed / "b.jpg")
    (closed / "inner").mkdir()
    closed.chmod(0o444)
    try:
        found, walker = walk([tmp_path])
    finally:
        closed.chmod(0o755)
    assert found == [str(keep)]
    denied = os.strerror(errno.EACCES)
    assert sorted(walker.stats.errors) == [
        (str(closed / "b.jpg"), denied),
        (str(closed / "inner"), denied),
    ]


def test_reference_folders_are_walked_first_and_flagged(tmp_path: Path) -> None:
    ref = write(tmp_path / "archive" / "a.jpg")
    os.link(ref, tmp_path / "inbox-a.jpg")  # the same file: the reference spelling wins
    other = write(tmp_path / "b.jpg", b"other")
    walker = Walker(replace(ScanSettings(), reference_folders=(str(tmp_path / "archive"),)))
    photos = {p.path: p for p in walker.walk([str(tmp_path)])}
    assert set(photos) == {str(ref), str(other)}
    assert photos[str(ref)].reference is True
    assert photos[str(other)].reference is False


def test_missing_root_is_reported(tmp_path: Path) -> None:
    found, walker = walk([tmp_path / "nope"])
    assert found == []
    assert walker.stats.errors[0][0] == str(tmp_path / "nope")


def test_file_stat_matches_lstat(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jpg")
    walker = Walker(ScanSettings())
    (photo,) = list(walker.walk([str(tmp_path)]))
    st = os.lstat(a)
    assert (photo.stat.dev, photo.stat.ino, photo.stat.size, photo.stat.mtime_ns) == (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )
