"""Apply a saved JSON report (``photodup apply``): load it, re-plan it, run it.

A saved report is only a wish: it is turned into groups again by the report module's own
strict parser (one parser for one format), planned under the same static rules as a fresh
scan, and every operation is re-verified on disk when it runs (rule 13), so a report that
went stale, or was edited by hand, cannot do harm.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from photodup_tui.engine.safedelete.execute import Progress, RunReport, execute
from photodup_tui.engine.safedelete.plan import make_plan
from photodup_tui.engine.types import Group


class ReportError(ValueError):
    """The report is not something we can trust to act on; nothing was done."""


def apply_report(
    report_path: Path,
    *,
    dry_run: bool,
    allow_similar: bool = False,
    reference_dirs: Sequence[str] = (),
    journal_dir: Path | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    # Imported here: the report module pulls in the scan engine, which undo and the
    # crash-recovery path do not need.
    from photodup_tui.engine import report

    try:
        loaded = report.load_report(report_path)
    except report.ReportError as exc:
        raise ReportError(str(exc)) from exc
    plan = make_plan(
        loaded.groups,
        allow_similar=allow_similar,
        reference_dirs=[*reference_dirs, *loaded.reference_folders],
    )
    return execute(plan, dry_run=dry_run, journal_dir=journal_dir, progress=progress, cancel=cancel)


def groups_from_report_dict(data: Any) -> list[Group]:
    """Groups from an already-parsed JSON report (see ``engine/report.py``)."""
    from photodup_tui.engine import report

    try:
        return report.parse_report(data).groups
    except report.ReportError as exc:
        raise ReportError(str(exc)) from exc
