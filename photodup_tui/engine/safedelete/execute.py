"""Run a plan: verify at the moment of acting, journal every step first, trash, check.

A dry run walks exactly the same path (the same verification, the same trash choice, the
same refusals) and stops short of the first destructive step of each operation, so its
report lists the same operations with the same outcomes as the real run would.

A real run holds the acting lock for the whole batch and, around each group's checks and
moves, a lock on each of the group's files (``locks.py``): another photodup cannot move a
keeper between "the keeper is present" and the victim's move.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from photodup_tui.engine.safedelete import trash
from photodup_tui.engine.safedelete.faults import fault_point
from photodup_tui.engine.safedelete.fsops import drop_spare_link, rename_noreplace, replica_at
from photodup_tui.engine.safedelete.journal import (
    JournalWriter,
    default_journal_dir,
    entry_to_json,
    new_batch_id,
)
from photodup_tui.engine.safedelete.locks import (
    DEFAULT_WAIT,
    ActingBusy,
    LockCancelled,
    OnWait,
    acquire_acting,
    lock_files,
)
from photodup_tui.engine.safedelete.mounts import mount_of
from photodup_tui.engine.safedelete.plan import FileRef, Operation, OpKind, Plan
from photodup_tui.engine.safedelete.verify import Expectations, group_problem, op_problem

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class RunReport:
    batch_id: str
    dry_run: bool
    #: (path, where it went, size); in a dry run "where" is the trash or folder it would go to
    trashed: list[tuple[str, str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # file untouched, and why
    failed: list[tuple[str, str]] = field(default_factory=list)  # acted, but a check failed
    bytes_reclaimed: int = 0  # freed once the trash is emptied (last links only)
    cancelled: bool = False
    journal: Path | None = None
    #: who held the acting lock when this run started ("... (pid 1234)"); None: nobody
    waited_for: str | None = None

    def lines(self) -> list[str]:
        verb = "would trash" if self.dry_run else "trashed"
        out = [f"waited for {self.waited_for} to finish first"] if self.waited_for else []
        out += [f"{verb} {p!r} -> {where!r} ({size} bytes)" for p, where, size in self.trashed]
        out += [f"skipped {p!r}: {why}" for p, why in self.skipped]
        out += [f"FAILED {p!r}: {why}" for p, why in self.failed]
        return out


class _Refused(Exception):
    """This operation cannot run here; nothing was changed."""


def execute(
    plan: Plan,
    *,
    dry_run: bool,
    journal_dir: Path | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_wait: OnWait | None = None,
    lock_timeout: float = DEFAULT_WAIT,
) -> RunReport:
    """Run ``plan``; a dry run makes the same decisions and changes nothing.

    A real run first takes the acting lock; while another photodup holds it, ``on_wait``
    is told who, once, and the run waits up to ``lock_timeout`` seconds (``ActingBusy``
    after that; a ``cancel`` while waiting skips every operation).  Raises
    ``JournalError`` (before acting, or stopping before the next destructive step) when
    the journal cannot be written; the next start then reports the batch as interrupted.
    """
    batch_id = new_batch_id()
    report = RunReport(batch_id=batch_id, dry_run=dry_run)
    report.skipped += plan.refused
    if dry_run or not plan.operations:
        _Batch(plan, report, None).run(progress, cancel)
        return report
    directory = journal_dir or default_journal_dir()
    try:
        lock = acquire_acting(directory, timeout=lock_timeout, on_wait=on_wait, cancel=cancel)
    except LockCancelled:
        _Batch(plan, report, None).run(progress, cancel)  # cancelled: skips every operation
        return report
    with lock:
        report.waited_for = lock.waited_for
        journal = JournalWriter.create(directory, batch_id, plan.operations)
        report.journal = journal.path
        with journal:
            # An exception escaping here (say, the journal's disk is full) leaves no ``end``
            # record: the batch then shows as interrupted and ``recover`` accounts for it.
            _Batch(plan, report, journal, lock_timeout, on_wait).run(progress, cancel)
            fault_point("before_end")
            journal.write("end", cancelled=report.cancelled)
    return report


class _Batch:
    def __init__(
        self,
        plan: Plan,
        report: RunReport,
        journal: JournalWriter | None,
        lock_timeout: float = DEFAULT_WAIT,
        on_wait: OnWait | None = None,
    ) -> None:
        self.plan = plan
        self.report = report
        self.journal = journal
        self.lock_timeout = lock_timeout
        self.on_wait = on_wait
        self.expect = Expectations()
        self.acted_links: Counter[tuple[int, int]] = Counter()

    def run(self, progress: Progress | None, cancel: threading.Event | None) -> None:
        total, done = len(self.plan.operations), 0
        for group_ops in _by_group(self.plan.operations):
            with contextlib.ExitStack() as held:
                reason: str | None = None
                if not (cancel and cancel.is_set()):
                    ops = [op for _, op in group_ops]
                    reason = self._lock_files(ops, cancel, held) or group_problem(ops, self.expect)
                for i, op in group_ops:
                    if cancel and cancel.is_set():
                        self.report.cancelled = True
                        self._skip(i, op, "cancelled before acting")
                    else:
                        reason = reason or op_problem(op, self.expect)
                        if reason is not None:  # one change skips the rest of the group too
                            self._skip(i, op, reason)
                        else:
                            self._act(i, op)
                    done += 1
                    if progress is not None:
                        progress(done, total)

    def _lock_files(
        self, ops: list[Operation], cancel: threading.Event | None, held: contextlib.ExitStack
    ) -> str | None:
        """Lock the group's files for its checks and moves (a real run only)."""
        if self.journal is None:
            return None  # a dry run moves nothing, so it excludes nobody
        paths = [ops[0].keeper.path, *(op.victim.path for op in ops)]
        try:
            locks = lock_files(
                paths, timeout=self.lock_timeout, on_wait=self._waiting, cancel=cancel
            )
            held.enter_context(locks)
        except LockCancelled:
            return None  # the caller sees ``cancel`` and skips the group as cancelled
        except ActingBusy as exc:
            return str(exc)
        except OSError as exc:
            return f"cannot lock the files ({exc.strerror or exc})"
        return None

    def _waiting(self, who: str) -> None:
        self.report.waited_for = self.report.waited_for or who
        if self.on_wait is not None:
            self.on_wait(who)

    # -- one operation -------------------------------------------------------------------

    def _act(self, i: int, op: Operation) -> None:
        try:
            target = self._target(op)
            nlink = os.lstat(op.victim.path).st_nlink
        except (_Refused, trash.TrashUnavailable) as exc:
            self._skip(i, op, str(exc))
            return
        except OSError as exc:  # it vanished since the check a moment ago
            self._skip(i, op, f"cannot be checked ({exc.strerror})")
            return
        if self.journal is None:
            self._succeeded(op, target, nlink)
            return
        if op.kind is OpKind.MOVE:
            self._move(i, op, target, nlink)
        else:
            self._trash(i, op, nlink)
        fault_point("after_done")

    def _target(self, op: Operation) -> str:
        """Where the victim would go; the same answer for a dry run and a real run."""
        if op.kind is OpKind.MOVE:
            assert op.move_to is not None
            return _move_target(op.victim, op.move_to)
        return trash.usable_location(op.victim.path).trash_dir

    def _trash(self, i: int, op: Operation, nlink: int) -> None:
        assert self.journal is not None
        link_tmp = None
        if op.kind is OpKind.HARDLINK:
            link_tmp = self._make_link(i, op)
            if link_tmp is None:
                return
        steps = _JournalSteps(self.journal, i)
        try:
            entry = trash.trash_file(op.victim.path, steps)
        except (trash.TrashUnavailable, OSError) as exc:
            if link_tmp is not None:
                drop_spare_link(link_tmp, op.keeper.path)
            if isinstance(exc, trash.TrashUnavailable):
                self._skip(i, op, str(exc))
            else:
                self._fail(i, op, f"could not trash: {exc}", entry=None)
            return
        fault_point("after_rename")
        if self._swapped_in(i, op, entry.files_path, entry, link_tmp):
            return
        self.expect.touched(op.victim, entry.files_path)
        v = op.victim.stat
        problem = trash.check_entry(entry, v.dev, v.ino, v.size) or _still_there(op.victim)
        if link_tmp is not None and problem is None:
            problem = _put_link(link_tmp, op)
        if problem is not None:
            self._fail(i, op, f"moved to the trash, but {problem}", entry=entry_to_json(entry))
            return
        self.journal.write("done", op=i, entry=entry_to_json(entry))
        self._succeeded(op, entry.files_path, nlink)

    def _make_link(self, i: int, op: Operation) -> str | None:
        """A hard link to the keeper beside the victim, made before the victim leaves."""
        assert self.journal is not None
        tmp = os.path.join(
            os.path.dirname(op.victim.path), f".photodup-link-{self.report.batch_id}-{i}"
        )
        self.journal.write("link", op=i, tmp=tmp)
        try:
            os.link(op.keeper.path, tmp, follow_symlinks=False)
        except OSError as exc:
            self._skip(i, op, f"cannot make a hard link here ({exc.strerror})")
            return None
        if replica_at(tmp) != op.keeper.stat.replica:  # the keeper was swapped under us
            drop_spare_link(tmp, op.keeper.path)
            self._skip(i, op, "keeper changed while linking")
            return None
        self.expect.touched(op.keeper, op.keeper.path)  # our link bumped the keeper's ctime
        return tmp

    def _move(self, i: int, op: Operation, folder: str, nlink: int) -> None:
        assert self.journal is not None
        base = os.fsencode(os.path.basename(op.victim.path))
        try:
            os.makedirs(folder, exist_ok=True)
            for name in trash.candidate_names(base):
                dest = os.path.join(folder, os.fsdecode(name))
                if os.path.lexists(dest):
                    continue
                self.journal.write("moving", op=i, dest=dest)
                try:
                    rename_noreplace(op.victim.path, dest)
                except FileExistsError:
                    continue
                break
            else:
                raise OSError(errno.EEXIST, "no free name in the destination folder")
        except OSError as exc:
            self._skip(i, op, f"could not move ({exc.strerror or exc}); file left in place")
            return
        fault_point("after_rename")
        if self._swapped_in(i, op, dest, None, None):
            return
        problem = _still_there(op.victim)
        if replica_at(dest) != op.victim.stat.replica:
            problem = "the moved file is not at its destination"
        if problem is not None:
            self._fail(i, op, f"moved, but {problem}", dest=dest)
            return
        self.journal.write("done", op=i, dest=dest)
        self._succeeded(op, dest, nlink)

    def _swapped_in(
        self,
        i: int,
        op: Operation,
        moved_to: str,
        entry: trash.TrashEntry | None,
        link_tmp: str | None,
    ) -> bool:
        """Put back a file that another process swapped in at the victim's path in time.

        Linux cannot rename a file by its descriptor, so a swap between the last check and
        ``rename`` moves the other file.  What arrived is looked at: if it is not the
        victim, it goes back where it came from (no-replace), and the operation is
        skipped.  If it cannot go back, the journal records what was moved, so ``undo``
        restores it.  True when the victim was not what moved.
        """
        assert self.journal is not None
        arrived = replica_at(moved_to)
        if arrived is None or arrived == op.victim.stat.replica:
            return False  # the victim, or nothing (the rule-9 check reports that)
        self.journal.write("putting_back", op=i, src=moved_to, moved=list(arrived))
        fault_point("before_put_back")
        try:
            rename_noreplace(moved_to, op.victim.path)
        except OSError as exc:
            if link_tmp is not None:
                drop_spare_link(link_tmp, op.keeper.path)
            self._fail(
                i,
                op,
                f"another file was swapped in at this path just before the move and went to "
                f"{moved_to!r}; it could not be put back ({exc.strerror or exc}); "
                "undo restores it",
                entry=entry_to_json(entry) if entry is not None else None,
                dest=moved_to if entry is None else None,
                moved=list(arrived),
            )
            return True
        if entry is not None:
            trash.remove_info(entry)
            self.journal.write("released", op=i, reason="put back")
        if link_tmp is not None:
            drop_spare_link(link_tmp, op.keeper.path)
        self._skip(i, op, "another file was swapped in at this path just before the move; put back")
        return True

    # -- bookkeeping ---------------------------------------------------------------------

    def _succeeded(self, op: Operation, where: str, nlink: int) -> None:
        size = op.victim.stat.size
        self.report.trashed.append((op.victim.path, where, size))
        if op.kind is OpKind.MOVE:
            return  # a move frees nothing
        # Space comes back only when the last link to the inode goes.
        replica = op.victim.stat.replica
        self.acted_links[replica] += 1
        if self.acted_links[replica] == nlink:
            self.report.bytes_reclaimed += size

    def _skip(self, i: int, op: Operation, reason: str) -> None:
        if self.journal is not None:
            self.journal.write("skipped", op=i, reason=reason)
        self.report.skipped.append((op.victim.path, reason))

    def _fail(
        self,
        i: int,
        op: Operation,
        reason: str,
        *,
        entry: dict[str, object] | None = None,
        dest: str | None = None,
        moved: list[int] | None = None,
    ) -> None:
        assert self.journal is not None
        fields: dict[str, object] = {"entry": entry, "dest": dest}
        if moved is not None:  # what went there was not the victim: undo restores this one
            fields["moved"] = moved
        self.journal.write("failed", op=i, reason=reason, **fields)
        self.report.failed.append((op.victim.path, reason))


class _JournalSteps:
    """The trash module's step hooks, written to the journal (fsync) as they happen."""

    def __init__(self, journal: JournalWriter, op: int) -> None:
        self.journal = journal
        self.op = op

    def trying(self, location: trash.TrashLocation) -> None:
        self.journal.write("trying", op=self.op, trash_dir=location.trash_dir)
        fault_point("after_intent")

    def reserved(self, entry: trash.TrashEntry) -> None:
        self.journal.write("reserved", op=self.op, entry=entry_to_json(entry))

    def released(self, entry: trash.TrashEntry, reason: str) -> None:
        self.journal.write("released", op=self.op, reason=reason)


def _by_group(ops: list[Operation]) -> Iterator[list[tuple[int, Operation]]]:
    """Consecutive operations of one group, with their index in the plan."""
    for _, items in itertools.groupby(enumerate(ops), key=lambda item: item[1].group):
        yield list(items)


def _move_target(victim: FileRef, folder: str) -> str:
    """The folder, if a rename can put the victim there; else ``_Refused`` with the reason."""
    existing = folder
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    try:
        st, vfs = os.stat(existing), os.statvfs(existing)
    except OSError as exc:
        raise _Refused(f"destination cannot be checked ({exc.strerror})") from None
    if st.st_dev != victim.stat.dev or mount_of(os.path.realpath(existing)) != mount_of(
        victim.path
    ):
        raise _Refused("destination folder is on another device or mount; photodup never copies")
    if vfs.f_flag & os.ST_RDONLY:
        raise _Refused("destination is on a read-only filesystem")
    return folder


def _still_there(victim: FileRef) -> str | None:
    if replica_at(victim.path) == victim.stat.replica:
        return "the original path still holds the file"
    return None


def _put_link(tmp: str, op: Operation) -> str | None:
    try:
        rename_noreplace(tmp, op.victim.path)
    except OSError as exc:
        return f"the link to the keeper could not be put in place ({exc}); it is at {tmp!r}"
    if replica_at(op.victim.path) != op.keeper.stat.replica:
        return "the path does not hold the keeper's link"
    return None
