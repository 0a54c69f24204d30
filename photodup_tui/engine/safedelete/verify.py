"""Re-verification at the moment of acting (rules 1-5), against the disk, not the scan."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from dataclasses import fields

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
    byte (rule 5).
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
    if any(op.group_kind is not Kind.EXACT for op in ops):
        problem = read_through(keeper, expect)
        if problem is not None:
            return f"keeper is not readable: {problem} (rule 1)"
    return _stats_problem(ops, expect)


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


def read_through(ref: FileRef, expect: Expectations) -> str | None:
    """Read the whole file: proves the surviving copy is readable right now."""
    try:
        with _open_checked(ref, expect) as f:
            while f.read(_CHUNK):
                pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


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
