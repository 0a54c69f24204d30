"""Apply a saved JSON report (``photodup apply``): load it, vet it, re-plan it, run it.

A saved report is only a wish: it is turned into groups again by the report module's own
strict parser (one parser for one format), vetted (``vetting.py``: every victim and keeper
under the report's roots, a regular image file, its verdict proven here), planned under the
same static rules as a fresh scan with today's reference folders as well as the report's,
and every operation is re-verified on disk when it runs (rule 13), so a report that went
stale, or was edited by hand, cannot do harm.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from photodup_tui.engine.safedelete.execute import Progress, RunReport, execute
from photodup_tui.engine.safedelete.locks import OnWait
from photodup_tui.engine.safedelete.plan import make_plan
from photodup_tui.engine.safedelete.vetting import vet_groups
from photodup_tui.engine.types import Group


class ReportError(ValueError):
    """The report is not something we can trust to act on; nothing was done."""


def apply_report(
    report_path: Path,
    *,
    dry_run: bool,
    allow_similar: bool = False,
    reference_dirs: Sequence[str] = (),
    config_file: Path | None = None,
    journal_dir: Path | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_wait: OnWait | None = None,
) -> RunReport:
    """Trash what the report at ``report_path`` marks, as far as it still holds.

    ``allow_similar`` only when every ``similar`` mark is the user's own choice (never for a
    file from elsewhere: the CLI never passes it).  Protected, besides ``reference_dirs``:
    the report's reference folders and today's ``reference_folders`` (the user's config, or
    ``config_file``), which may have been added since the scan.
    """
    # Imported here: the report module pulls in the scan engine, which undo and the
    # crash-recovery path do not need.
    from photodup_tui.engine import report, settings

    try:
        loaded = report.load_report(report_path)
    except report.ReportError as exc:
        raise ReportError(str(exc)) from exc
    try:
        today = settings.load(config_file)
    except settings.SettingsError as exc:
        # Without it we cannot know which folders the user protects now: do nothing.
        raise ReportError(f"cannot read today's reference folders: {exc}") from exc
    vetting = vet_groups(
        loaded.groups,
        roots=loaded.roots,
        reference_dirs=loaded.reference_folders,
        allow_similar=allow_similar,
        cancel=cancel,
    )
    plan = make_plan(
        loaded.groups,
        allow_similar=allow_similar,
        reference_dirs=[*reference_dirs, *loaded.reference_folders, *today.reference_folders],
        vet=vetting.refusal,
    )
    return execute(
        plan,
        dry_run=dry_run,
        journal_dir=journal_dir,
        progress=progress,
        cancel=cancel,
        on_wait=on_wait,
    )


def groups_from_report_dict(data: Any) -> list[Group]:
    """Groups from an already-parsed JSON report (see ``engine/report.py``)."""
    from photodup_tui.engine import report

    try:
        return report.parse_report(data).groups
    except report.ReportError as exc:
        raise ReportError(str(exc)) from exc
