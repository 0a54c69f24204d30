"""Re-verification at the moment of acting (rules 1-5), against the disk, not the scan.

Stats (dev, ino, size, mtime, ctime) say a file was not touched; only its bytes prove it is
still what was judged.  Exact victims are compared with their keeper byte for byte.  A near
(or user-chosen similar) victim is no copy of its keeper's bytes, so it and its keeper are
hashed again and must give the content hashes the scan recorded for what it judged: a scan
that trusted a stale cache, or a report edited by hand, cannot make a unique photo a "copy".
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from dataclasses import fields

from photodup_tui.engine.exact import FileChanged, full_hash
from photodup_tui.engine.safedelete.plan import FileRef, Operation
from photodup_tui.engine.types import FileStat, Kind

_CHUNK = 1 << 20
_FIELDS = [f.name for f in fields(FileStat)]


class Expectations:
    """What each file should look like now: the scan's stat, except for our own changes.

    Our own ``rename``/``link`` of a file bumps its ctime (and a hard-linked twin's).  We
    record the new ctime right after such a step, and only when nothing else moved, so a
    second path to the same inode in the batch is not skipped because of our own act.
    """

    def __init__(self) -> None:
        self._now: dict[tuple[int, int], FileStat] = {}

    def of(self, ref: FileRef) -> FileStat:
        return self._now.get(ref.stat.replica, ref.stat)

    def touched(self, ref: FileRef, path_now: str) -> None:
        before = self.of(ref)
        try:
            now = FileStat.of(os.lstat(path_now))
        except OSError:
            return
        if now.replica == before.replica and (now.size, now.mtime_ns) == (
            before.size,
            before.mtime_ns,
        ):
            self._now[before.replica] = now


def stat_problem(ref: FileRef, expected: FileStat) -> str | None:
    """Why the file at ``ref.path`` is not the one we expect (rule 4), or None."""
    try:
        st = os.lstat(ref.path)
    except FileNotFoundError:
        return "is gone"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is now a symlink (rule 3)"
    if not stat.S_ISREG(st.st_mode):
        return "is no longer a regular file"
    now = FileStat.of(st)
    moved = [name for name in _FIELDS if getattr(now, name) != getattr(expected, name)]
    if moved:
        return f"changed since the scan ({', '.join(moved)})"
    return None


def group_problem(ops: Sequence[Operation], expect: Expectations) -> str | None:
    """Why no operation of this group may run now, or None.

    Every op of a group shares its keeper.  The keeper must be present, unchanged and
    readable to the end (rule 1); no victim may be the keeper's inode (rule 2); every
    member must be unchanged (rule 4); a byte-identical victim must match the keeper byte for
    byte (rule 5); a near or similar victim and the keeper must still hash to what the scan
    recorded (``content_problem``).
    Stats are checked again after the reads, which take time.
    """
    keeper = ops[0].keeper
    problem = _stats_problem(ops, expect)
    if problem is not None:
        return problem
    for op in ops:
        if op.group_kind is Kind.EXACT:
            problem = compare_bytes(keeper, op.victim, expect)
            if problem is not None:
                return f"byte compare with the keeper failed: {problem} (rule 5)"
    judged = [op.victim for op in ops if op.group_kind is not Kind.EXACT]
    if judged:
        # Hashing the keeper also reads it through: it is readable right now (rule 1).
        for ref in (keeper, *judged):
            problem = content_problem(ref, expect)
            if problem is not None:
                return f"keeper {problem} (rule 1)" if ref is keeper else problem
    return _stats_problem(ops, expect)


def content_problem(ref: FileRef, expect: Expectations) -> str | None:
    """Why the file at ``ref.path`` cannot be proven to be the content the scan judged.

    Hashed through the scan's own fd-checked reader (``exact.full_hash``: no symlink
    followed, ``fstat`` before and after the read must match what we expect), with the
    scan's algorithm (BLAKE2b-256), and compared with the hash in ``ref``.
    """
    if not ref.content_hash:
        return (
            f"{ref.path!r} has no recorded content hash: cannot prove it is the photo"
            " that was judged"
        )
    try:
        digest = full_hash(ref.path, expect.of(ref))
    except FileChanged as exc:
        return f"{ref.path!r} changed while being checked ({exc})"
    except OSError as exc:
        return f"{ref.path!r} is not readable ({exc.strerror or exc})"
    if digest != ref.content_hash:
        return f"{ref.path!r} is not the photo that was judged (content changed since the scan)"
    return None


def op_problem(op: Operation, expect: Expectations) -> str | None:
    """The last check right before the destructive step: lstat both again."""
    return _stats_problem([op], expect)


def _stats_problem(ops: Sequence[Operation], expect: Expectations) -> str | None:
    keeper = ops[0].keeper
    problem = stat_problem(keeper, expect.of(keeper))
    if problem is not None:
        return f"keeper {keeper.path!r} {problem}"
    for op in ops:
        if op.victim.stat.replica == keeper.stat.replica:
            return "victim and keeper are the same file (rule 2)"
        problem = stat_problem(op.victim, expect.of(op.victim))
        if problem is not None:
            return f"{op.victim.path!r} {problem}"
    return None


def compare_bytes(keeper: FileRef, victim: FileRef, expect: Expectations) -> str | None:
    """Full byte compare of the two files we verified (checked with fstat on the open fds)."""
    try:
        with _open_checked(keeper, expect) as a, _open_checked(victim, expect) as b:
            while True:
                block_a, block_b = a.read(_CHUNK), b.read(_CHUNK)
                if block_a != block_b:
                    return "contents differ"
                if not block_a:
                    return None
    except OSError as exc:
        return exc.strerror or str(exc)


class _Swapped(OSError):
    pass


def _open_checked(ref: FileRef, expect: Expectations) -> io.FileIO:
    """Open without following a symlink; the open file must be the verified one."""
    fd = os.open(ref.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    f = io.FileIO(fd, "rb")
    if FileStat.of(os.fstat(fd)) != expect.of(ref):
        f.close()
        raise _Swapped(0, f"{ref.path!r} was replaced while being checked")
    return f
