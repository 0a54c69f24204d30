"""Safe deletion: plan, re-verify, trash (freedesktop / macOS), journal, undo.

Used by the TUI and by ``photodup apply`` / ``photodup undo``; no Textual here.
The rules it keeps are 1-14 of docs/safety.md; ``tests/safety`` proves them on disk.
"""

from photodup_tui.engine.safedelete.apply import ReportError, apply_report, groups_from_report_dict
from photodup_tui.engine.safedelete.batches import (
    BatchInfo,
    RecoveryReport,
    interrupted_batches,
    list_batches,
    recover,
)
from photodup_tui.engine.safedelete.execute import RunReport, execute
from photodup_tui.engine.safedelete.journal import BatchBusy, BatchNotFound, JournalError
from photodup_tui.engine.safedelete.locks import ActingBusy
from photodup_tui.engine.safedelete.plan import (
    FileRef,
    Operation,
    OpKind,
    Plan,
    PlanError,
    make_plan,
)
from photodup_tui.engine.safedelete.trash import TrashEntry, TrashUnavailable, home_trash_dir
from photodup_tui.engine.safedelete.undo import UndoReport, undo

__all__ = [
    "ActingBusy",
    "BatchBusy",
    "BatchInfo",
    "BatchNotFound",
    "FileRef",
    "JournalError",
    "OpKind",
    "Operation",
    "Plan",
    "PlanError",
    "RecoveryReport",
    "ReportError",
    "RunReport",
    "TrashEntry",
    "TrashUnavailable",
    "UndoReport",
    "apply_report",
    "execute",
    "groups_from_report_dict",
    "home_trash_dir",
    "interrupted_batches",
    "list_batches",
    "make_plan",
    "recover",
    "undo",
]
