"""The batch journal: one JSON-lines file per batch, written before each step it records.

A batch file starts with ``begin`` (the whole plan), then for each operation the steps in
the order they happen on disk, each written *before* that step (see ``_DURABLE``):
``trying`` (a trash dir) -> ``reserved`` (info file made; its name) -> ``done`` / ``failed``,
or ``released`` when an attempt was undone; ``link`` and ``moving`` for the hard-link and
move operations; ``putting_back`` when another file had been swapped in at the victim's
path and moved instead (it goes back); ``skipped``; then ``end``.  Undo and recovery
append to the same file.
While a process works on a batch it holds an exclusive ``flock`` on the file, so "no
``end`` and nobody holds the lock" is exactly "interrupted".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from photodup_tui.engine.safedelete.faults import fault_point
from photodup_tui.engine.safedelete.plan import Operation
from photodup_tui.engine.safedelete.trash import TrashEntry
from photodupd.paths import UnsafeRuntimeDir, ensure_private_dir, state_dir

SUFFIX = ".jsonl"

#: Records that precede a destructive step (or open / close a batch) are fsynced before
#: the step (rule 10).  The others ("trying", "done", "skipped" ...) are flushed by the
#: next fsync; if a power cut loses them, recovery rebuilds them from the disk, because
#: the durable "reserved" / "moving" / "restoring" record already names where to look.
_DURABLE = {
    "begin",
    "reserved",
    "link",
    "moving",
    "putting_back",
    "restoring",
    "end",
    "recovered",
    "undo_end",
}


class JournalError(Exception):
    """The journal cannot be written; photodup stops before the next destructive step.

    The batch then has no ``end`` record, so the next start reports it as interrupted and
    ``recover`` finds, on disk, where each file of it is.
    """


class BatchBusy(Exception):
    """Another photodup process is working on this batch right now."""


class BatchNotFound(LookupError):
    pass


def default_journal_dir() -> Path:
    return state_dir() / "journal"


def new_batch_id() -> str:
    """Sortable by time: 20250102-030405-<nanoseconds>-<random>."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now // 1_000_000_000))
    return f"{stamp}-{now % 1_000_000_000:09d}-{secrets.token_hex(2)}"


class JournalWriter:
    """Appends records to one batch file, holding its lock; use as a context manager."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def create(cls, directory: Path, batch_id: str, ops: Sequence[Operation]) -> JournalWriter:
        path = directory / f"{batch_id}{SUFFIX}"
        try:
            ensure_private_dir(directory)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
        except (OSError, UnsafeRuntimeDir) as exc:
            raise JournalError(f"cannot create the journal {path}: {exc}") from exc
        fcntl.flock(fd, fcntl.LOCK_EX)
        writer = cls(path, fd)
        writer.write(
            "begin",
            batch=batch_id,
            created_ns=time.time_ns(),
            pid=os.getpid(),
            command=command_line(),  # what made the batch, for `photodup undo --list`
            ops=[op.to_json() for op in ops],
        )
        _fsync_dir(directory)  # the journal file itself must survive a crash
        fault_point("after_begin")
        return writer

    @classmethod
    def reopen(cls, path: Path) -> JournalWriter:
        """Lock an existing batch for undo or recovery; ``BatchBusy`` if someone holds it."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BatchBusy(f"batch {path.stem} is in use by another photodup process") from None
        return cls(path, fd)

    def write(self, rec: str, **fields: Any) -> None:
        """One record; those that precede a destructive step are durable on return."""
        line = json.dumps({"rec": rec, **fields}, ensure_ascii=True) + "\n"
        try:
            fault_point("journal_write")
            os.write(self._fd, line.encode("ascii"))  # O_APPEND: one write, one whole line
            if rec in _DURABLE:
                os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        os.close(self._fd)  # also releases the flock

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def command_line() -> str:
    """This process's command line, short: ``photodup apply report.json``."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "photodup"
    if program.endswith(".py"):
        program = "photodup"  # python -m photodup_tui.cli, or a script that imports it
    return " ".join([program, *sys.argv[1:]])[:300]


def read_records(path: Path) -> list[dict[str, Any]]:
    """All complete records; a torn last line (power loss mid-write) is ignored."""
    records = []
    for line in path.read_bytes().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "rec" in rec:
            records.append(rec)
    return records


def is_locked(path: Path) -> bool:
    """True when a live process holds this batch (it is running, not interrupted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass(slots=True)
class OpLog:
    """What the journal says happened to one operation."""

    op: Operation
    trying: list[str] = field(default_factory=list)  # trash dirs attempted
    reserved: TrashEntry | None = None  # info file made and not released
    link_tmp: str | None = None  # hard link to the keeper made under this temp name
    moving: str | None = None  # MOVE destination being tried
    outcome: str | None = None  # "done", "skipped", "failed"
    reason: str = ""
    entry: TrashEntry | None = None  # where a done TRASH / HARDLINK put the victim
    dest: str | None = None  # where a done MOVE put the victim
    #: (dev, ino) of what was moved when it was not the victim (swapped in just before)
    moved: tuple[int, int] | None = None
    put_back: tuple[int, int] | None = None  # a swapped-in file being moved back
    restoring: bool = False
    restored: bool = False
    undo_refused: str | None = None

    @property
    def in_flight(self) -> bool:
        """Started and never settled: where the file is must be found on disk."""
        started = bool(self.trying or self.link_tmp or self.moving)
        return (self.outcome is None and started) or (self.restoring and not self.restored)

    @property
    def moved_replica(self) -> tuple[int, int]:
        """The (dev, ino) of what this operation moved: the victim, unless swapped."""
        return self.moved if self.moved is not None else self.op.victim.stat.replica

    @property
    def moved_to(self) -> str | None:
        """Where a finished operation put the victim (also for a failed rule-9 check)."""
        if self.entry is not None:
            return self.entry.files_path
        return self.dest


@dataclass(slots=True)
class BatchLog:
    batch_id: str
    path: Path
    created_ns: int
    ops: list[OpLog]
    ended: bool = False
    recovered: bool = False
    undo_open: bool = False  # an undo began and did not finish


def load_batch(path: Path) -> BatchLog:
    records = read_records(path)
    if not records or records[0]["rec"] != "begin":
        raise BatchNotFound(f"{path} is not a photodup batch journal")
    begin = records[0]
    log = BatchLog(
        batch_id=begin["batch"],
        path=path,
        created_ns=int(begin["created_ns"]),
        ops=[OpLog(Operation.from_json(d)) for d in begin["ops"]],
    )
    for rec in records[1:]:
        _apply(log, rec)
    return log


def _apply(log: BatchLog, rec: dict[str, Any]) -> None:
    kind = rec["rec"]
    if kind == "end":
        log.ended = True
        return
    if kind == "recovered":
        log.recovered = log.ended = True
        return
    if kind in ("undo_begin", "undo_end"):
        log.undo_open = kind == "undo_begin"
        return
    if not isinstance(rec.get("op"), int) or not 0 <= rec["op"] < len(log.ops):
        return
    op = log.ops[rec["op"]]
    if kind == "trying":
        op.trying.append(rec["trash_dir"])
    elif kind == "reserved":
        op.reserved = entry_from_json(rec["entry"])
    elif kind == "released":
        op.reserved = None
    elif kind == "link":
        op.link_tmp = rec["tmp"]
    elif kind == "moving":
        op.moving = rec["dest"]
    elif kind in ("done", "skipped", "failed"):
        op.outcome = kind
        op.reason = rec.get("reason", "")
        op.entry = entry_from_json(rec["entry"]) if rec.get("entry") else None
        op.dest = rec.get("dest")
        op.moved = _replica(rec.get("moved"))
    elif kind == "putting_back":
        op.put_back = _replica(rec.get("moved"))
    elif kind == "restoring":
        op.restoring = True
    elif kind == "restored":
        op.restored = True
    elif kind == "undo_refused":
        op.undo_refused = rec.get("reason", "")


def _replica(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (value[0], value[1])
    return None


def entry_to_json(entry: TrashEntry) -> dict[str, Any]:
    return {
        "trash_dir": entry.trash_dir,
        "name": entry.name,
        "original": entry.original,
        "has_info": entry.has_info,
    }


def entry_from_json(d: dict[str, Any]) -> TrashEntry:
    return TrashEntry(d["trash_dir"], d["name"], d["original"], bool(d.get("has_info", True)))


def batch_paths(directory: Path) -> list[Path]:
    """Journal files, oldest first (batch ids sort by time)."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SUFFIX}"))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
