"""Past batches: list them, find interrupted ones, and settle those from the disk's state.

Recovery never removes or overwrites a photo.  It finds where each in-flight file is
(at its path, or a complete trash entry), records that in the journal, and removes only
what photodup itself made and that holds no data of its own: a trash info file whose
file never arrived (or its hidden temporary), or a spare hard link whose inode the
keeper's path still names.  A file that another process swapped in at the victim's path
just before the move, and that our rename moved instead, goes back to that path.
Recovery holds the acting lock (``locks.py``), so it never runs beside a batch.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from photodup_tui.engine.safedelete.fsops import drop_spare_link, rename_noreplace, replica_at
from photodup_tui.engine.safedelete.journal import (
    BatchBusy,
    BatchLog,
    BatchNotFound,
    JournalWriter,
    OpLog,
    batch_paths,
    default_journal_dir,
    entry_to_json,
    is_locked,
    load_batch,
)
from photodup_tui.engine.safedelete.locks import DEFAULT_WAIT, OnWait, acquire_acting
from photodup_tui.engine.safedelete.plan import OpKind
from photodup_tui.engine.safedelete.trash import (
    INFO_SUFFIX,
    TrashEntry,
    candidate_names,
    info_tmp_prefix,
    read_info_path,
    remove_info,
)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    batch_id: str
    created: str  # local time, ISO 8601
    journal: Path
    operations: int
    acted: int  # files moved to the trash (or folder) by this batch
    restored: int  # of those, restored by undo
    state: str  # "running", "interrupted", "complete", "partly undone", "undone"
    #: for an interrupted batch: each file that was mid-operation, and where it is now
    in_flight: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class RecoveryReport:
    batch_id: str
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what was found/done)


def list_batches(journal_dir: Path | None = None) -> list[BatchInfo]:
    """Every batch in the journal, newest first."""
    infos = []
    for path in reversed(batch_paths(journal_dir or default_journal_dir())):
        try:
            log = load_batch(path)
        except (BatchNotFound, OSError):
            continue  # killed before its first record: it did nothing
        infos.append(describe(log, running=is_locked(path)))
    return infos


def interrupted_batches(journal_dir: Path | None = None) -> list[BatchInfo]:
    """Batches (or undos) a killed process left half-done; call at start-up and report."""
    return [b for b in list_batches(journal_dir) if b.state == "interrupted"]


def recover(
    batch_id: str | None = None,
    *,
    journal_dir: Path | None = None,
    on_wait: OnWait | None = None,
    lock_timeout: float = DEFAULT_WAIT,
) -> list[RecoveryReport]:
    """Settle one interrupted batch (or all of them) and close it in the journal."""
    directory = journal_dir or default_journal_dir()
    path = batch_file(directory, batch_id) if batch_id is not None else None
    if not directory.is_dir():
        return []  # no batch ever ran
    with acquire_acting(directory, timeout=lock_timeout, on_wait=on_wait):
        if path is None:
            return recover_all_held(directory)
        with JournalWriter.reopen(path) as writer:
            return [recover_locked(load_batch(path), writer)]


def recover_all_held(directory: Path) -> list[RecoveryReport]:
    """Settle every interrupted batch; the caller holds the acting lock."""
    reports = []
    for info in interrupted_batches(directory):
        try:
            writer = JournalWriter.reopen(info.journal)
        except BatchBusy:
            continue  # a process that does not take the acting lock is still on it
        with writer:
            reports.append(recover_locked(load_batch(info.journal), writer))
    return reports


def batch_file(directory: Path, batch_id: str) -> Path:
    path = directory / f"{batch_id}.jsonl"
    if os.sep in batch_id or not path.is_file():
        raise BatchNotFound(f"no batch {batch_id!r} in {directory}")
    return path


def describe(log: BatchLog, *, running: bool) -> BatchInfo:
    acted = [o for o in log.ops if o.moved_to is not None]
    restored = sum(o.restored for o in acted)
    if running:
        state = "running"
    elif not log.ended or log.undo_open:
        state = "interrupted"
    elif acted and restored == len(acted):
        state = "undone"
    elif restored:
        state = "partly undone"
    else:
        state = "complete"
    in_flight = tuple((o.op.victim.path, where_now(o)) for o in log.ops if o.in_flight)
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(log.created_ns / 1e9))
    return BatchInfo(
        log.batch_id, created, log.path, len(log.ops), len(acted), restored, state, in_flight
    )


def where_now(o: OpLog) -> str:
    """Where the victim of an operation is, found on disk by its (dev, ino)."""
    victim = o.op.victim
    replica = victim.stat.replica
    if replica_at(victim.path) == replica:
        return "in place"
    for place in (o.moved_to, o.reserved.files_path if o.reserved else None, o.moving):
        if place is not None and replica_at(place) == replica:
            return f"moved to {place!r}" if o.op.kind is OpKind.MOVE else f"in the trash: {place!r}"
    if o.put_back is not None:
        return "another file was swapped in at its path just before the move; see recovery"
    return "NOT FOUND at its path nor where the journal says it went"


def recover_locked(log: BatchLog, writer: JournalWriter) -> RecoveryReport:
    """Recovery for a batch whose journal lock the caller holds."""
    report = RecoveryReport(log.batch_id)
    for index, o in enumerate(log.ops):
        if o.outcome is None and o.in_flight:
            report.notes.append((o.op.victim.path, _settle(index, o, writer)))
        elif o.outcome is None:
            writer.write("skipped", op=index, reason="not reached before the interruption")
        elif o.restoring and not o.restored:
            report.notes.append((o.op.victim.path, _settle_undo(index, o, writer)))
    writer.write("recovered", notes=report.notes)
    if log.undo_open:
        writer.write("undo_end")
    return report


def _settle(index: int, o: OpLog, writer: JournalWriter) -> str:
    victim, keeper = o.op.victim, o.op.keeper
    replica = victim.stat.replica
    entry = o.reserved
    _remove_info_temps(o)
    if entry is not None and replica_at(entry.files_path) == replica:
        note = f"was moved to the trash ({entry.files_path!r}); undo can restore it"
        if o.link_tmp is not None and replica_at(o.link_tmp) is not None:
            note += "; " + _finish_link(o.link_tmp, victim.path, keeper.path)
        writer.write("done", op=index, entry=entry_to_json(entry), reason="recovered")
        return note
    if o.moving is not None and replica_at(o.moving) == replica:
        writer.write("done", op=index, dest=o.moving, reason="recovered")
        return f"was moved to {o.moving!r}; undo can move it back"
    if replica_at(victim.path) == replica:
        note = "in place, untouched" + _tidy(o)
        writer.write("failed", op=index, reason="interrupted before acting; file left in place")
        return note
    # Our reserved name in the trash holds another file: it can only have come from the
    # victim's path, swapped in there just before our rename.  (A move's destination name
    # is not reserved, so there only what the batch itself saw arrive counts.)
    moved_to = entry.files_path if entry is not None else o.moving
    stranger = replica_at(moved_to) if moved_to is not None else None
    if moved_to is not None and stranger is not None and (entry or stranger == o.put_back):
        return _put_back(index, o, moved_to, stranger, writer)
    if o.put_back is not None and replica_at(victim.path) == o.put_back:
        writer.write("skipped", op=index, reason="another file was swapped in; put back")
        return "another file swapped in at this path just before the move was put back" + _tidy(o)
    writer.write("failed", op=index, reason="not found after the interruption")
    note = "NOT FOUND at its path nor in the trash entry the journal names"
    if stranger is not None:
        note += f"; another file is at {moved_to!r}, left there"
    return note + _tidy(o)


def _put_back(
    index: int, o: OpLog, moved_to: str, stranger: tuple[int, int], writer: JournalWriter
) -> str:
    """Move a swapped-in file back to the victim's path (never over anything)."""
    entry, path = o.reserved, o.op.victim.path
    writer.write("putting_back", op=index, src=moved_to, moved=list(stranger))
    try:
        rename_noreplace(moved_to, path)
    except OSError as exc:
        fields = {"entry": entry_to_json(entry)} if entry is not None else {"dest": moved_to}
        writer.write(
            "failed", op=index, reason="swapped in, not put back", moved=list(stranger), **fields
        )
        return (
            f"another file, swapped in at this path just before the move, went to "
            f"{moved_to!r} and cannot go back ({exc.strerror or exc}); undo restores it"
        )
    if entry is not None:
        remove_info(entry)
    writer.write("skipped", op=index, reason="another file was swapped in; put back")
    return "another file swapped in at this path just before the move was put back" + _tidy(o)


def _tidy(o: OpLog) -> str:
    """Remove what an unfinished operation made that holds no data; say what remains."""
    note = ""
    removed = _remove_orphan_infos(o)
    if removed:
        note += f"; removed {removed} unfinished trash info file(s)"
    if o.link_tmp is not None and not drop_spare_link(o.link_tmp, o.op.keeper.path):
        note += f"; a spare hard link to the keeper remains at {o.link_tmp!r}"
    return note


def _finish_link(tmp: str, path: str, keeper_path: str) -> str:
    """Hard-link op killed after trashing: put the keeper's link at the path if it is free."""
    if replica_at(tmp) != replica_at(keeper_path):
        return f"a hard link made by photodup remains at {tmp!r}"
    try:
        rename_noreplace(tmp, path)
    except OSError:
        return f"the path is taken; the hard link to the keeper remains at {tmp!r}"
    return "the hard link to the keeper was put at the path"


def _settle_undo(index: int, o: OpLog, writer: JournalWriter) -> str:
    replica = o.moved_replica
    if replica_at(o.op.victim.path) == replica:
        if o.entry is not None and o.entry.has_info and replica_at(o.entry.files_path) is None:
            remove_info(o.entry)
        writer.write("restored", op=index)
        return "undo had restored it"
    return "undo was interrupted before restoring it; it is still where the batch put it"


def _remove_orphan_infos(o: OpLog) -> int:
    """Info files this operation made whose file never arrived (they hold no data).

    Also a zero-length info file under one of the names this operation could have taken
    (what a kill between creating and writing one left before info files were written
    under a temporary name first).
    """
    original = o.op.victim.path
    base = os.fsencode(os.path.basename(original))
    stem = os.path.splitext(os.path.basename(original))[0][:16]
    removed = 0
    for trash_dir in dict.fromkeys(o.trying):
        try:
            names = os.listdir(os.path.join(trash_dir, "info"))
        except OSError:
            continue
        ours = {
            os.fsdecode(n) + INFO_SUFFIX
            for n in itertools.islice(candidate_names(base), len(names) + 1)
        }
        for info_name in names:
            if not (info_name.startswith(stem) and info_name.endswith(INFO_SUFFIX)):
                continue
            entry = TrashEntry(trash_dir, info_name[: -len(INFO_SUFFIX)], original)
            if os.path.lexists(entry.files_path):
                continue
            if _same_path(read_info_path(entry), original) or (
                info_name in ours and _is_empty_file(entry.info_path)
            ):
                removed += remove_info(entry)
    return removed


def _remove_info_temps(o: OpLog) -> None:
    """The hidden temporaries (``create_whole``) a kill left while writing an info file."""
    prefix = info_tmp_prefix(o.op.victim.path)
    for trash_dir in dict.fromkeys(o.trying):
        info_dir = os.path.join(trash_dir, "info")
        try:
            names = [n for n in os.listdir(info_dir) if n.startswith(prefix)]
        except OSError:
            continue
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(info_dir, name))


def _is_empty_file(path: str) -> bool:
    try:
        return os.lstat(path).st_size == 0
    except OSError:
        return False


def _same_path(a: str | None, b: str) -> bool:
    if a is None:
        return False

    def canonical(p: str) -> str:
        return os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))

    return canonical(a) == canonical(b)
