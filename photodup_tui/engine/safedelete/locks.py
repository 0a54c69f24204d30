"""Locks that keep two photodup processes (or threads) from acting on the same files at once.

Two apply runs with opposite keepers (A kept and B trashed by one, B kept and A trashed by
the other) must never interleave "the keeper is present" with the other's move, or both
copies end up in the trash.  Two locks, each an ``flock`` (released by the kernel when the
holder dies, so a kill never leaves a stale lock):

* **The acting lock**, one per journal directory (so per state dir): a real batch, an undo
  and a recovery hold it from start to end.  A second CLI, or a TUI, waits for it (bounded,
  cancellable) and is told which process it waits for.  This serialises every batch of one
  user's photodup, whatever front end started it.
* **File locks**: around one group's checks and moves, an exclusive ``flock`` on every
  member (keeper and victims), taken in ``(st_dev, st_ino)`` order so two holders cannot
  deadlock.  This also covers what the acting lock cannot see: photodup processes with
  another state dir (``PHOTODUP_STATE_DIR``) or another user acting on a shared folder.
  A file that cannot be opened is not locked: it cannot pass another run's keeper check
  either (that reads the keeper).  Filesystems without ``flock`` (some network mounts)
  are acted on with the acting lock alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from photodup_tui.engine.safedelete.journal import BatchBusy, JournalError
from photodupd.paths import UnsafeRuntimeDir, ensure_private_dir

LOCK_NAME = "acting.lock"
#: How long a batch, an undo or a recovery waits for another one to finish (seconds).
DEFAULT_WAIT = 600.0
_POLL_FIRST, _POLL_MAX = 0.01, 0.25
#: flock is not available on this filesystem: act under the acting lock alone.
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}

#: Called once when a lock is held by someone else, with who it is ("... (pid 1234)").
OnWait = Callable[[str], None]
FILES_HOLDER = "another photodup process acting on the same files"


class ActingBusy(BatchBusy):
    """Another photodup process kept acting past the wait; nothing was done."""


class LockCancelled(Exception):
    """The caller cancelled while waiting for the acting lock; nothing was done."""


class ActingLock:
    """The acting lock, held; a context manager that releases it."""

    def __init__(self, fd: int, waited_for: str | None) -> None:
        self._fd = fd
        #: who held it when we arrived (None: it was free)
        self.waited_for = waited_for

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also drops the flock
            self._fd = -1

    def __enter__(self) -> ActingLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_acting(
    directory: Path,
    *,
    timeout: float = DEFAULT_WAIT,
    on_wait: OnWait | None = None,
    cancel: threading.Event | None = None,
) -> ActingLock:
    """Take the acting lock of ``directory`` (the journal dir), waiting up to ``timeout``.

    Raises ``JournalError`` if the directory cannot be made, ``ActingBusy`` when the wait
    runs out and ``LockCancelled`` when ``cancel`` is set while waiting.
    """
    path = directory / LOCK_NAME
    try:
        ensure_private_dir(directory)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
    except (OSError, UnsafeRuntimeDir) as exc:
        raise JournalError(f"cannot open the lock {path}: {exc}") from exc
    waited_for = None
    try:
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while not _try_flock(fd):
            if waited_for is None:
                waited_for = _holder(fd)
                if on_wait is not None:
                    on_wait(waited_for)
            if cancel is not None and cancel.is_set():
                raise LockCancelled(f"cancelled while waiting for {waited_for}")
            if time.monotonic() >= deadline:
                raise ActingBusy(
                    f"{waited_for} has been moving files for over {timeout:.0f} s "
                    f"(lock {path}); nothing was done, try again when it has finished"
                )
            _pause(delay, cancel)
            delay = min(delay * 2, _POLL_MAX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # tells a waiter whom it waits for
    except BaseException:
        os.close(fd)
        raise
    return ActingLock(fd, waited_for)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(fd: int) -> str:
    try:
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return "another photodup process"
    return f"another photodup process (pid {pid})"


def _pause(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is not None:
        cancel.wait(seconds)
    else:
        time.sleep(seconds)


class FileLocks:
    """Exclusive flocks on a group's files, held together, dropped together."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def __enter__(self) -> FileLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_files(
    paths: Iterable[str],
    *,
    timeout: float = DEFAULT_WAIT,
    on_wait: OnWait | None = None,
    cancel: threading.Event | None = None,
) -> FileLocks:
    """Lock every regular file among ``paths`` (one lock per inode, in inode order).

    ``on_wait`` hears once if another process holds one.  Raises ``ActingBusy`` when it
    holds it past ``timeout`` and ``LockCancelled`` on ``cancel``; nothing stays locked then.
    """
    opened: dict[tuple[int, int], int] = {}
    locks = FileLocks()
    try:
        for path in paths:
            fd = _open_for_lock(path)
            if fd is None:
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in opened or not stat.S_ISREG(st.st_mode):
                os.close(fd)  # the same inode twice would block on its own lock
                continue
            opened[(st.st_dev, st.st_ino)] = fd
        locks._fds = [opened[key] for key in sorted(opened)]
        deadline = time.monotonic() + timeout
        for fd in locks._fds:
            delay = _POLL_FIRST
            while not _try_flock_file(fd):
                if on_wait is not None:
                    on_wait(FILES_HOLDER)
                    on_wait = None
                if cancel is not None and cancel.is_set():
                    raise LockCancelled("cancelled while waiting for a file lock")
                if time.monotonic() >= deadline:
                    raise ActingBusy("another photodup process is acting on these files")
                _pause(delay, cancel)
                delay = min(delay * 2, _POLL_MAX)
    except BaseException:
        locks.release()
        raise
    return locks


def _open_for_lock(path: str) -> int | None:
    # O_NONBLOCK: a FIFO swapped in for a photo must not hang the open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except OSError:
        return None  # gone or unreadable: the checks decide about it


def _try_flock_file(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in _NO_FLOCK:
            return True  # no flock here (some network filesystems): the acting lock remains
        raise
    return True
