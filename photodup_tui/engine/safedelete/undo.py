"""Undo a batch: put every file it moved back at its path, never over anything.

Undo holds the acting lock (``locks.py``) and first settles every interrupted batch, so
the newest batch, finished or killed half-way, is the one plain ``undo`` puts back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from photodup_tui.engine.safedelete.batches import (
    batch_file,
    describe,
    recover_all_held,
    recover_locked,
)
from photodup_tui.engine.safedelete.faults import fault_point
from photodup_tui.engine.safedelete.fsops import rename_noreplace, replica_at
from photodup_tui.engine.safedelete.journal import (
    BatchNotFound,
    JournalWriter,
    OpLog,
    batch_paths,
    default_journal_dir,
    is_locked,
    load_batch,
)
from photodup_tui.engine.safedelete.locks import DEFAULT_WAIT, OnWait, acquire_acting
from photodup_tui.engine.safedelete.plan import OpKind
from photodup_tui.engine.safedelete.trash import remove_info


@dataclass(slots=True)
class UndoReport:
    batch_id: str
    restored: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, why it stays put)
    waited_for: str | None = None  # who held the acting lock when undo started

    def lines(self) -> list[str]:
        out = [f"waited for {self.waited_for} to finish first"] if self.waited_for else []
        out += [f"restored {p!r}" for p in self.restored]
        out += [f"not restored {p!r}: {why}" for p, why in self.refused]
        return out


class _Refusal(Exception):
    pass


def undo(
    batch_id: str | None = None,
    *,
    journal_dir: Path | None = None,
    on_wait: OnWait | None = None,
    lock_timeout: float = DEFAULT_WAIT,
) -> UndoReport:
    """Restore the newest batch that has something to restore, or the one named.

    Each file goes back with a no-replace rename: if anything now stands at its path the
    file stays in the trash and the refusal says why.  Every interrupted batch is
    recovered first, so a batch killed half-way counts as the newest.  Waits for the
    acting lock like ``execute``.  Raises ``BatchNotFound`` when there is nothing to undo,
    ``BatchBusy`` when another photodup process holds the batch.
    """
    directory = journal_dir or default_journal_dir()
    if not directory.is_dir():
        raise BatchNotFound("nothing to undo")
    with acquire_acting(directory, timeout=lock_timeout, on_wait=on_wait) as lock:
        recover_all_held(directory)
        path = batch_file(directory, batch_id) if batch_id else _newest_undoable(directory)
        with JournalWriter.reopen(path) as writer:
            log = load_batch(path)
            if not log.ended or log.undo_open:
                recover_locked(log, writer)
                log = load_batch(path)
            report = UndoReport(log.batch_id, waited_for=lock.waited_for)
            writer.write("undo_begin")
            for index in reversed(range(len(log.ops))):
                o = log.ops[index]
                if o.moved_to is None or o.restored:
                    continue
                try:
                    _restore(index, o, writer)
                except _Refusal as refusal:
                    writer.write("undo_refused", op=index, reason=str(refusal))
                    report.refused.append((o.op.victim.path, str(refusal)))
                else:
                    report.restored.append(o.op.victim.path)
            writer.write("undo_end")
    return report


def _newest_undoable(directory: Path) -> Path:
    for path in reversed(batch_paths(directory)):
        try:
            log = load_batch(path)
        except (BatchNotFound, OSError):
            continue
        info = describe(log, running=is_locked(path))
        if info.state != "running" and info.acted > info.restored:
            return path
    raise BatchNotFound("nothing to undo")


def _restore(index: int, o: OpLog, writer: JournalWriter) -> None:
    victim, keeper = o.op.victim, o.op.keeper
    source = o.moved_to
    assert source is not None
    if replica_at(source) != o.moved_replica:  # the victim, or what was swapped in for it
        raise _Refusal(f"no longer at {source!r} (trash emptied or restored by hand?)")
    parent = os.path.dirname(victim.path)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        raise _Refusal(f"{parent!r} is no longer a folder")
    ours = o.op.kind is OpKind.HARDLINK and replica_at(victim.path) == keeper.stat.replica
    if os.path.lexists(victim.path) and not ours:
        raise _Refusal("something else now stands at this path; nothing was overwritten")
    if ours and replica_at(keeper.path) != keeper.stat.replica:
        raise _Refusal("the hard link here is now the keeper's only name; not removed")
    writer.write("restoring", op=index)
    try:
        os.makedirs(parent, exist_ok=True)
        if ours:
            os.unlink(victim.path)  # a name of the keeper's inode, which keeps its own name
        rename_noreplace(source, victim.path)
    except FileExistsError:
        raise _Refusal("something appeared at this path meanwhile; nothing overwritten") from None
    except OSError as exc:
        raise _Refusal(f"cannot move it back ({exc.strerror or exc})") from None
    fault_point("undo_after_rename")
    if o.entry is not None and o.entry.has_info:
        remove_info(o.entry)
    writer.write("restored", op=index)
