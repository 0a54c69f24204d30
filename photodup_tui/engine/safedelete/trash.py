"""The freedesktop.org trash (https://specifications.freedesktop.org/trash-spec/), for files.

Why not send2trash (2.2.0, read in site-packages): on Linux it (1) falls back to
``shutil.move`` into the home trash on EXDEV, i.e. copy then delete across devices, which
rule 8 forbids; (2) picks the entry name with ``exists()`` checks and opens the info file
without O_EXCL, so two trashers can take the same name and ``rename`` can replace an entry;
(3) reads XDG_DATA_HOME once at import; (4) does not return where the file went, which the
journal, undo and the rule-9 check need; (5) prefers gio when installed, whose behaviour we
cannot check.  So this module is a small spec-correct implementation that never copies:
``rename(2)`` (no-replace) on the same device, or the file stays where it is.
On macOS ``macos.py`` asks the system trash (NSFileManager) and keeps the resulting path.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote, unquote_to_bytes

from photodup_tui.engine.safedelete.faults import fault_point
from photodup_tui.engine.safedelete.fsops import (
    create_whole,
    make_private_dir,
    rename_noreplace,
    replica_at,
)
from photodup_tui.engine.safedelete.mounts import mount_of, mount_points
from photodup_tui.engine.safedelete.trashtypes import (
    INFO_SUFFIX,
    TrashEntry,
    TrashLocation,
    TrashSteps,
    TrashUnavailable,
)

#: Info files are written under a hidden temporary name in info/ first (see ``create_whole``).
INFO_TMP_PREFIX = ".photodup-"
_NAME_MAX = 255
_MAX_CLASHES = 100_000
#: Room an info file needs: refuse up front on a filesystem with less (a dry run says the same).
_INFO_ROOM = 8192


def home_trash_dir() -> str:
    data_home = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):  # basedir spec: relative values are ignored
        data_home = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data_home, "Trash")


def is_in_trash_dir(path: str) -> bool:
    """True for anything inside a home, topdir or macOS trash (rule 11: never a target)."""
    parts = os.path.abspath(path).split(os.sep)[:-1]
    if any(p in (".Trash", ".Trashes") or p.startswith(".Trash-") for p in parts):
        return True
    return _same_or_inside(path, home_trash_dir())


def locations(path: str) -> list[TrashLocation]:
    """The trash directories that may take ``path``, best first, per the spec.

    Nothing is created.  On the home trash's mount, only the home trash (like gio).  On any
    other mount, even of the same device (a bind mount, where ``rename`` fails with EXDEV),
    the spec's topdir trashes of that mount: ``$topdir/.Trash/$uid`` when ``$topdir/.Trash``
    is a real sticky directory, then ``$topdir/.Trash-$uid``.  Never a trash a rename cannot
    reach, so nothing is ever copied, and a dry run sees the trash the real run will use.
    """
    dev = os.lstat(path).st_dev
    home = home_trash_dir()
    points = mount_points()
    anchor = _nearest_existing(home)
    if (
        anchor is not None
        and os.stat(anchor).st_dev == dev
        and mount_of(os.path.realpath(anchor), points) == mount_of(path, points)
    ):
        return [TrashLocation(home, None, "home")]
    uid = str(os.getuid())
    top = mount_top(path, dev, points)
    found = []
    admin = os.path.join(top, ".Trash")
    if _is_sticky_real_dir(admin):
        found.append(TrashLocation(os.path.join(admin, uid), top, "topdir"))
    found.append(TrashLocation(os.path.join(top, f".Trash-{uid}"), top, "topdir-fallback"))
    return found


def usable_location(path: str) -> TrashLocation:
    """The first location a trash could be made in, without creating anything.

    Both the dry run and the real run ask this first, so they refuse the same files for
    the same reasons (read-only, full, foreign-owned trash).
    """
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        from photodup_tui.engine.safedelete import macos

        return macos.usable_location(path)
    reasons = []
    for loc in locations(path):
        reason = _unusable_reason(loc)
        if reason is None:
            return loc
        reasons.append(f"{loc.trash_dir}: {reason}")
    raise TrashUnavailable("no usable trash on this device (" + "; ".join(reasons) + ")")


def trash_file(path: str, steps: TrashSteps) -> TrashEntry:
    """Move ``path`` into a trash on its own device; return the entry.

    Info file first (O_EXCL, fsynced), then a no-replace ``rename`` into files/.  A failed
    attempt removes only the info file it created and leaves the file in place.  Raises
    ``TrashUnavailable`` when no trash takes it; the file is then untouched.
    """
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        from photodup_tui.engine.safedelete import macos

        return macos.trash_file(path, steps)
    original = os.path.abspath(path)
    dev_ino = replica_at(original)
    reasons = []
    candidates = locations(original)
    start = candidates.index(usable_location(original))
    for loc in candidates[start:]:
        try:
            _prepare(loc)
        except OSError as exc:
            reasons.append(f"{loc.trash_dir}: {_why(exc)}")
            continue
        steps.trying(loc)
        try:
            return _move_in(loc, original, steps)
        except OSError as exc:
            reasons.append(f"{loc.trash_dir}: {_why(exc)}")
            if replica_at(original) != dev_ino:
                raise  # the file is no longer where it was: never guess, report
    raise TrashUnavailable("could not trash (" + "; ".join(reasons) + "); file left in place")


def check_entry(entry: TrashEntry, dev: int, ino: int, size: int) -> str | None:
    """Rule 9: why ``entry`` is not a complete trash entry of that file, or None if it is."""
    try:
        st = os.lstat(entry.files_path)
    except OSError as exc:
        return f"trash file missing ({_why(exc)})"
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (dev, ino):
        return "trash file is not the file we moved"
    if st.st_size != size:
        return f"trash file has {st.st_size} bytes, expected {size}"
    if entry.has_info and read_info_path(entry) is None:
        return "trash info file missing or unreadable"
    return None


def read_info_path(entry: TrashEntry) -> str | None:
    """The original path an info file records (absolute), or None if it is not a valid one."""
    try:
        with open(entry.info_path, "rb") as f:
            lines = f.read(1 << 16).splitlines()
    except OSError:
        return None
    if not lines or lines[0].strip() != b"[Trash Info]":
        return None
    for line in lines[1:]:
        if line.startswith(b"Path="):
            raw = os.fsdecode(unquote_to_bytes(line[5:].strip()))
            return raw if os.path.isabs(raw) else os.path.join(_base_of(entry.trash_dir), raw)
    return None


def _base_of(trash_dir: str) -> str:
    """What relative info paths are relative to: $topdir for topdir trashes."""
    parent = os.path.dirname(trash_dir)
    if os.path.basename(parent) == ".Trash":  # $topdir/.Trash/$uid
        return os.path.dirname(parent)
    return parent  # $topdir/.Trash-$uid, or $XDG_DATA_HOME for the home trash


def mount_top(path: str, dev: int, points: frozenset[str] | None = None) -> str:
    """The spec's $topdir of ``path``: the top of its mount, not above its device.

    Walks up while the device stays the same (a btrfs subvolume has its own) and stops at
    a mount point (a bind mount of the same device is another mount).
    """
    if points is None:
        points = mount_points()
    current = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    while current not in points:
        parent = os.path.dirname(current)
        if parent == current or os.stat(parent).st_dev != dev:
            break
        current = parent
    return current


def info_tmp_prefix(original: str) -> str:
    """The temporary info names of one original path start with this (recovery finds them)."""
    digest = hashlib.blake2b(os.fsencode(os.path.abspath(original)), digest_size=8)
    return f"{INFO_TMP_PREFIX}{digest.hexdigest()}-"


def info_text(original: str, topdir: str | None) -> bytes:
    """The .trashinfo content: Path percent-encoded from the raw bytes, local DeletionDate."""
    if topdir is None:
        recorded = os.fsencode(original)
    else:
        real = os.path.join(os.path.realpath(os.path.dirname(original)), os.path.basename(original))
        recorded = os.fsencode(os.path.relpath(real, topdir))
    date = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    return f"[Trash Info]\nPath={quote(recorded, safe='/')}\nDeletionDate={date}\n".encode("ascii")


def _move_in(loc: TrashLocation, original: str, steps: TrashSteps) -> TrashEntry:
    content = info_text(original, loc.topdir)
    tmp = os.path.join(loc.trash_dir, "info", info_tmp_prefix(original) + secrets.token_hex(4))
    for name in candidate_names(os.fsencode(os.path.basename(original))):
        entry = TrashEntry(loc.trash_dir, os.fsdecode(name), original)
        # spec: an orphan in files/ also owns the name.  A cheap look first; the link
        # in create_whole is what makes taking the name atomic.
        if os.path.lexists(entry.info_path) or os.path.lexists(entry.files_path):
            continue
        try:
            create_whole(entry.info_path, content, tmp, point="info_write")
        except FileExistsError:
            continue  # another entry took this name meanwhile: take the next one
        if os.path.lexists(entry.files_path):
            os.unlink(entry.info_path)
            continue
        try:
            fault_point("info_written")
            steps.reserved(entry)
            fault_point("after_info")
            rename_noreplace(original, entry.files_path)
        except FileExistsError:
            _release(entry, steps, "name taken in files/ meanwhile")
            continue
        except OSError as exc:
            _release(entry, steps, _why(exc))
            raise
        except BaseException:
            remove_info(entry)  # e.g. the journal failed: no half entry left
            raise
        return entry
    raise OSError(errno.EEXIST, "no free name in the trash")


def candidate_names(base: bytes) -> Iterator[bytes]:
    """IMG.JPG, IMG.2.JPG, IMG.3.JPG ... each short enough for NAME_MAX with ".trashinfo"."""
    stem, ext = os.path.splitext(base)
    limit = _NAME_MAX - len(INFO_SUFFIX)
    for n in range(1, _MAX_CLASHES):
        tail = (b"" if n == 1 else b"." + str(n).encode()) + ext
        room = limit - len(tail)
        yield stem[:room] + tail if room > 0 else (stem + tail)[-limit:]


def _release(entry: TrashEntry, steps: TrashSteps, reason: str) -> None:
    remove_info(entry)
    steps.released(entry, reason)


def remove_info(entry: TrashEntry) -> bool:
    """Remove an entry's info file (which holds no photo data); True if it is gone now."""
    try:
        os.unlink(entry.info_path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _prepare(loc: TrashLocation) -> None:
    if loc.kind == "home":
        os.makedirs(loc.trash_dir, 0o700, exist_ok=True)
    else:
        make_private_dir(loc.trash_dir)
        _check_owned(loc.trash_dir)
    for sub in ("files", "info"):
        make_private_dir(os.path.join(loc.trash_dir, sub))


def _unusable_reason(loc: TrashLocation) -> str | None:
    existing = loc.trash_dir
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if loc.kind != "home" and existing == loc.trash_dir:
        try:
            _check_owned(loc.trash_dir)
        except OSError as exc:
            return _why(exc)
    try:
        vfs = os.statvfs(existing)
    except OSError as exc:
        return _why(exc)
    if vfs.f_flag & os.ST_RDONLY:
        return "read-only filesystem"
    if vfs.f_bavail * vfs.f_frsize < _INFO_ROOM:
        return "filesystem is full"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def _check_owned(path: str) -> None:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "trash is not a real directory", path)
    if st.st_uid != os.getuid():
        raise PermissionError(errno.EPERM, "trash directory belongs to another user", path)


def _is_sticky_real_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_ISVTX)


def _nearest_existing(path: str) -> str | None:
    """``path`` or its nearest ancestor that exists (following symlinks)."""
    current = path
    while True:
        try:
            os.stat(current)
        except FileNotFoundError:
            parent = os.path.dirname(current)
            if parent == current:
                return None
            current = parent
        except OSError:
            return None
        else:
            return current


def _same_or_inside(path: str, folder: str) -> bool:
    try:
        target = os.stat(folder)
    except OSError:
        return False
    current = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(current)
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                return True
        except OSError:
            pass
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)
