"""What an undo would put back, said before it happens: ``photodup undo`` prints it, the
TUI asks about it, ``photodup undo --list`` shows every batch.

The journal is shared by every photodup process (the TUI, ``photodup apply``), so "the last
batch" may be one the user does not remember making: the preview names it by when it was
made, by which command, how many files and how many bytes.  The caller then undoes exactly
the batch it showed (``safedelete.undo(batch_id)``), never whichever is newest by then.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from photodup_tui.engine.keeprules import human_size
from photodup_tui.engine.safedelete import BatchInfo, BatchNotFound, list_batches
from photodup_tui.engine.safedelete.journal import load_batch, read_records
from photodup_tui.engine.safedelete.plan import OpKind

#: Batch states that have (or may have) files to put back; "running" is another process's.
_UNDOABLE = ("complete", "partly undone", "interrupted")
#: How ``batches.where_now`` says an interrupted batch's file did leave its place.
_MOVED = ("in the trash", "moved to")


@dataclass(frozen=True, slots=True)
class UndoPreview:
    batch: BatchInfo
    files: int  # files the batch moved that are not back yet
    bytes: int
    moved_bytes: int  # everything the batch moved, back or not
    command: str | None  # the command that made the batch; None in journals before it was kept
    moved: bool  # the batch moved files to a folder rather than to the trash

    @property
    def undoable(self) -> bool:
        """Undo would put files back (another process is not working on the batch)."""
        return self.batch.state in _UNDOABLE and self.files > 0

    @property
    def when(self) -> str:
        """``2025-01-02 03:04``: the batch's local time, to the minute."""
        return self.batch.created.replace("T", " ")[:16]

    @property
    def by(self) -> str:
        return f"by `{self.command}`" if self.command else "by an earlier photodup"

    @property
    def where(self) -> str:
        return "moved away" if self.moved else "moved to the trash"

    def sentence(self) -> str:
        """``3 files (12.4 MB) moved to the trash on 2025-01-02 03:04 by `photodup apply
        r.json```."""
        files = f"{self.files:,} file" + ("" if self.files == 1 else "s")
        return f"{files} ({human_size(self.bytes)}) {self.where} on {self.when} {self.by}"


def preview(info: BatchInfo) -> UndoPreview:
    """What undoing this batch would put back, read from its journal."""
    log = load_batch(info.journal)
    out = [o for o in log.ops if o.moved_to is not None and not o.restored]
    in_trash = {path for path, where in info.in_flight if where.startswith(_MOVED)}
    half = [o for o in log.ops if o.moved_to is None and o.op.victim.path in in_trash]
    waiting = out + half  # an interrupted batch's half-moved files go back too (recovery)
    try:
        command = read_records(info.journal)[0].get("command")
    except (OSError, IndexError):
        command = None
    return UndoPreview(
        info,
        files=len(waiting),
        bytes=sum(o.op.victim.stat.size for o in waiting),
        moved_bytes=sum(o.op.victim.stat.size for o in log.ops if o.moved_to is not None),
        command=command if isinstance(command, str) and command else None,
        moved=any(o.op.kind is OpKind.MOVE for o in log.ops),
    )


def previews(journal_dir: Path | None = None) -> list[UndoPreview]:
    """Every batch in the journal, newest first."""
    return [preview(info) for info in list_batches(journal_dir)]


def next_undo(journal_dir: Path | None = None) -> UndoPreview:
    """The batch ``u`` / ``photodup undo`` put back: the newest with files to put back.
    Raises ``BatchNotFound`` when there is none."""
    for info in list_batches(journal_dir):
        if info.state in _UNDOABLE and (found := preview(info)).undoable:
            return found
    raise BatchNotFound("nothing to undo: no batch has files left to put back")


def find(batch_id: str, journal_dir: Path | None = None) -> UndoPreview:
    """The preview of the batch named ``batch_id``; ``BatchNotFound`` if there is none."""
    for info in list_batches(journal_dir):
        if info.batch_id == batch_id:
            return preview(info)
    raise BatchNotFound(f"no batch {batch_id!r} in the journal (photodup undo --list shows them)")
