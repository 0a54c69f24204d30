"""Filesystem steps that must be atomic or must not clobber anything."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys

from photodup_tui.engine.safedelete.faults import fault_point

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1  # linux/fs.h
_RENAME_EXCL = 0x4  # macOS <stdio.h>, for renamex_np

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc >= 2.28
_renamex_np = getattr(_libc, "renamex_np", None)  # macOS >= 10.12

#: The kernel or filesystem cannot do a no-replace rename (old kernels, NFS, FUSE).
_NO_SUPPORT = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP}
#: link(2) on a filesystem without hard links (FAT, exFAT, some FUSE).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def rename_noreplace(src: str, dst: str) -> None:
    """``rename(2)`` that fails with ``FileExistsError`` instead of replacing ``dst``.

    Never copies: across devices it fails with ``EXDEV`` like ``rename`` itself, so a
    file is always either at ``src`` or at ``dst``, never at both or neither.
    """
    fault_point("rename")
    _rename_noreplace(src, dst)


def _rename_noreplace(src: str, dst: str) -> None:
    src_b, dst_b = os.fsencode(src), os.fsencode(dst)
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, src_b, _AT_FDCWD, dst_b, _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in _NO_SUPPORT:
            raise OSError(err, os.strerror(err), src, None, dst)
    elif _renamex_np is not None and sys.platform == "darwin":
        if _renamex_np(src_b, dst_b, _RENAME_EXCL) == 0:
            return
        err = ctypes.get_errno()
        if err not in _NO_SUPPORT:
            raise OSError(err, os.strerror(err), src, None, dst)
    # No atomic primitive here.  Callers have already reserved ``dst`` (the trash info file
    # is created with link(2)), so the window below only matters against foreign writers.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)


def create_whole(path: str, data: bytes, tmp: str, point: str) -> None:
    """Create ``path`` (0600) holding ``data``, whole or not at all; never replace it.

    The data is written and fsynced under ``tmp`` (a new name in the same folder), then
    ``link(2)`` gives it the name ``path`` (failing with ``FileExistsError`` if taken), and
    ``tmp`` goes.  So a kill at any moment leaves ``path`` absent or complete, never empty,
    plus at most ``tmp``, which the caller's recovery removes.  On filesystems without hard
    links (FAT) a no-replace rename publishes it instead.  ``point`` names the fault point.
    """
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fault_point(point)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            _rename_noreplace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # a leftover is removed by recovery
            os.unlink(tmp)


def make_private_dir(path: str) -> None:
    """``mkdir -m 0700`` if missing; an existing one must be a real directory (lstat)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path) or os.path.islink(path):
            raise NotADirectoryError(errno.ENOTDIR, "not a real directory", path) from None


def replica_at(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of whatever is at ``path`` (not following a symlink), or None."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def drop_spare_link(spare: str, keeper_path: str) -> bool:
    """Remove ``spare``, a hard link we made, only while ``keeper_path`` names the same inode.

    So the content always keeps a name; returns whether the spare link is gone.
    """
    here = replica_at(spare)
    if here is None:
        return True
    if here != replica_at(keeper_path):
        return False
    try:
        os.unlink(spare)
    except OSError:
        return False
    return True
