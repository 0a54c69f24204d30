"""Helpers for the safe-deletion tests: build trees and groups, and re-read the disk.

Every assertion about safety goes through ``trash_entries``, ``snapshot`` and
``assert_accounted_for``, which read files, trash entries and info files back from disk;
none trusts the report the code under test returns.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes

from photodup_tui.engine.exact import FileChanged, full_hash
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo


def read(path: Path | str | bytes) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def write(path: Path | str | bytes, data: bytes) -> str:
    p = os.fsencode(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    return os.fsdecode(p)


def member(path: str, action: Action = Action.DELETE, **photo: object) -> Member:
    """A member with the stat the disk has right now, as a scan would record it, and the
    content hash the scan records for every group member (the file's real BLAKE2b, through
    the scan's own reader; None where it cannot read it, e.g. a symlink), unless given."""
    stat = FileStat.of(os.lstat(path))
    if "content_hash" not in photo:
        photo["content_hash"] = content_hash(path, stat)
    return Member(Photo(path, stat, **photo), action)  # type: ignore[arg-type]


def content_hash(path: str, stat: FileStat | None = None) -> str | None:
    try:
        return full_hash(path, stat or FileStat.of(os.lstat(path)))
    except (OSError, FileChanged):
        return None


def group(kind: Kind, keeper: str, *victims: str, **photo: object) -> Group:
    """A group whose first member is kept and the others are marked for deletion."""
    members = [member(keeper, Action.KEEP, **photo)]
    members += [member(v, Action.DELETE, **photo) for v in victims]
    return Group(kind=kind, members=members, reason="test")


@dataclass(frozen=True)
class Entry:
    """One trash entry as found on disk."""

    files_path: bytes
    data: bytes
    original: bytes  # the info file's Path, decoded to raw bytes (absolute)
    info_text: bytes


def trash_entries(trash_dir: Path | str, *, allow_orphan_info: bool = False) -> list[Entry]:
    """Complete entries (file + valid info) of a trash dir.

    Asserts there is no file without its info; an info file without its file (what a kill
    between the two steps leaves) is only allowed with ``allow_orphan_info``.
    """
    root = os.fsencode(trash_dir)
    files_dir, info_dir = os.path.join(root, b"files"), os.path.join(root, b"info")
    if not os.path.isdir(root):
        return []
    names = set(os.listdir(files_dir)) if os.path.isdir(files_dir) else set()
    infos = set(os.listdir(info_dir)) if os.path.isdir(info_dir) else set()
    expected = {n + b".trashinfo" for n in names}
    assert expected <= infos, f"trash files without info: {expected - infos}"
    assert allow_orphan_info or expected == infos, f"info without file: {infos - expected}"
    out = []
    for name in sorted(names):
        info = read(os.path.join(info_dir, name + b".trashinfo"))
        lines = info.splitlines()
        assert lines[0] == b"[Trash Info]"
        fields = dict(line.split(b"=", 1) for line in lines[1:])
        original = unquote_to_bytes(fields[b"Path"])
        if not original.startswith(b"/"):  # topdir trash: relative to $topdir
            base = os.path.dirname(root)
            if os.path.basename(base) == b".Trash":
                base = os.path.dirname(base)
            original = os.path.join(base, original)
        assert len(fields[b"DeletionDate"]) == 19, fields  # YYYY-MM-DDThh:mm:ss
        with open(os.path.join(files_dir, name), "rb") as f:
            out.append(Entry(os.path.join(files_dir, name), f.read(), original, info))
    return out


def snapshot(root: Path | str) -> dict[bytes, bytes]:
    """Every regular file under ``root`` (not following symlinks) and its bytes."""
    out = {}
    for dirpath, _dirs, files in os.walk(os.fsencode(root)):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    out[p] = f.read()
    return out


def assert_accounted_for(
    before: dict[bytes, bytes], trash_dirs: list[Path | str], *, allow_orphan_info: bool = False
) -> tuple[set[bytes], set[bytes]]:
    """Rule 10: each file is at its path with its bytes, or a complete trash entry of it.

    Returns (paths in place, paths whose content is found only in the trash).
    """
    entries: dict[bytes, list[bytes]] = {}
    for d in trash_dirs:
        for e in trash_entries(d, allow_orphan_info=allow_orphan_info):
            entries.setdefault(e.original, []).append(e.data)
    in_place, trashed = set(), set()
    for path, data in before.items():
        if os.path.isfile(path) and read(path) == data:
            in_place.add(path)
        else:
            assert data in entries.get(path, []), f"{path!r}: neither in place nor in the trash"
            trashed.add(path)
    return in_place, trashed


def mount(args: list[str]) -> bool:
    return subprocess.run(args, capture_output=True).returncode == 0


def remount_read_only(mnt: Path) -> None:
    assert mount(["mount", "-o", "remount,ro", str(mnt)])


def fill_up(mnt: Path) -> None:
    """Fill a filesystem until a write fails with ENOSPC."""
    with open(mnt / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
