"""Doing it: trash a plan or undo the last batch in a worker, then say what happened to
every file (moved, skipped and why, failed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, ProgressBar, Static
from textual.worker import Worker, WorkerState

from photodup_tui.engine.safedelete import (
    BatchBusy,
    BatchNotFound,
    Plan,
    RunReport,
    UndoReport,
    execute,
    undo,
)
from photodup_tui.formatting import display_path, human_size, plural
from photodup_tui.messages import ActionProgressed
from photodup_tui.screens.base import AppScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.virtual_table import Column, VirtualTable

PROGRESS_SECONDS = 0.1


class ActionScreen(AppScreen):
    HELP = (
        "What the last clean-up did to each file. Trashed files are in your system trash; "
        "u puts the last batch back where it was (never over a file that is there now)."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back to groups"),
        Binding("enter", "back", "Back", show=False),
    ]
    DEFAULT_CSS = """
    ActionScreen #action-title {
        height: auto;
        padding: 1 1 0 1;
    }
    ActionScreen ProgressBar {
        padding: 0 1;
        margin-bottom: 1;
    }
    ActionScreen #outcome {
        height: 1fr;
    }
    """

    def __init__(
        self,
        kind: str,
        roots: Sequence[str],
        plan: Plan | None = None,
        report: RunReport | UndoReport | None = None,
        batch_id: str | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind  # "trash" | "undo"
        self.batch_id = batch_id  # the batch to undo (the one the user was shown)
        self.roots = list(roots)
        self.plan = plan
        self.report = report
        self.busy = report is None
        self.cancel = threading.Event()

    @classmethod
    def trash(cls, plan: Plan, roots: Sequence[str]) -> ActionScreen:
        return cls("trash", roots, plan=plan)

    @classmethod
    def undo(cls, roots: Sequence[str], batch_id: str) -> ActionScreen:
        return cls("undo", roots, batch_id=batch_id)

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        yield Static(id="action-title")
        yield ProgressBar(total=None, show_eta=False, id="action-bar")
        yield VirtualTable(
            [
                Column("result", "Result", 14),
                Column("file", "File", 50),
                Column("where", "Where / why"),
            ],
            id="outcome",
        )
        yield Footer()

    def on_mount(self) -> None:
        if self.report is not None:
            self._show(self.report)
            return
        title = self.query_one("#action-title", Static)
        if self.kind == "trash":
            assert self.plan is not None
            title.update(f"Moving {plural(len(self.plan.operations), 'file')} to the trash…")
        else:
            title.update(f"Putting the files of batch {self.batch_id} back…")
        self.run_worker(self._work, thread=True, exit_on_error=False, name="action")

    def on_unmount(self) -> None:
        self.cancel.set()

    def _work(self) -> RunReport | UndoReport:
        if self.kind == "undo":
            return undo(self.batch_id, on_wait=self._waiting)
        assert self.plan is not None
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_SECONDS or done == total:
                last[0] = now
                self.post_message(ActionProgressed(done, total))

        return execute(
            self.plan, dry_run=False, progress=progress, cancel=self.cancel, on_wait=self._waiting
        )

    def _waiting(self, holder: str) -> None:
        """Called on the worker thread while another photodup holds the acting lock."""
        self.app.call_from_thread(
            self.query_one("#action-title", Static).update,
            f"Waiting for {holder} to finish first…",
        )

    def on_action_progressed(self, message: ActionProgressed) -> None:
        self.query_one(ProgressBar).update(total=message.total, progress=message.done)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "action" or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
        ):
            return
        self.busy = False
        if event.state is WorkerState.SUCCESS:
            report = cast("RunReport | UndoReport", event.worker.result)
            if isinstance(report, RunReport):
                self.papp.after_trash([path for path, _where, _size in report.trashed])
            else:
                self.papp.after_undo(report.restored)
            self._show(report)
            return
        error = event.worker.error
        title = self.query_one("#action-title", Static)
        self.query_one(ProgressBar).display = False
        if isinstance(error, BatchNotFound):
            title.update("[b]Nothing to undo.[/b] No clean-up has files in the trash to restore.")
        elif isinstance(error, BatchBusy):
            title.update(f"[b]Another photodup is working on that batch.[/b] {error}")
        else:
            title.update(
                f"[b red]The {self.kind} stopped with an error:[/b red] {error}\n"
                "Every file is either at its place or in the trash; the journal records which."
            )

    # ------------------------------------------------------------------ the outcome

    def _show(self, report: RunReport | UndoReport) -> None:
        self.report = report
        self.query_one(ProgressBar).display = False
        table = self.query_one("#outcome", VirtualTable)
        title = self.query_one("#action-title", Static)
        rows: list[tuple[Text, str, str]] = []
        if isinstance(report, RunReport):
            rows += [
                (Text("trashed", "green"), self._path(p), display_path(where))
                for p, where, _size in report.trashed
            ]
            rows += [(Text("skipped", "yellow"), self._path(p), why) for p, why in report.skipped]
            rows += [(Text("FAILED", "bold red"), self._path(p), why) for p, why in report.failed]
            title.update(self._trash_title(report))
        else:
            rows += [
                (Text("restored", "green"), self._path(p), "back in place") for p in report.restored
            ]
            rows += [
                (Text("not restored", "yellow"), self._path(p), why) for p, why in report.refused
            ]
            title.update(
                f"[b]Undo:[/b] {plural(len(report.restored), 'file')} back where they were"
                + (
                    f", {len(report.refused)} left in the trash (see why below)"
                    if report.refused
                    else ""
                )
                + f".  Batch {report.batch_id}.\n"
                + "They are unmarked now. Moving a file back changes its status time, so "
                "photodup would skip it as changed: rescan (r) before trashing it again."
            )
        table.set_rows(len(rows), rows.__getitem__)
        table.focus()

    def _trash_title(self, report: RunReport) -> str:
        moved = len(report.trashed)
        text = (
            f"[b]Moved {plural(moved, 'file')} to the trash[/b]"
            f" ({human_size(sum(size for _p, _w, size in report.trashed))}; "
            f"{human_size(report.bytes_reclaimed)} freed once the trash is emptied)."
        )
        if report.skipped:
            text += f"  {len(report.skipped)} skipped, untouched."
        if report.failed:
            text += f"  [b red]{len(report.failed)} failed checks: see below.[/b red]"
        if report.cancelled:
            text += "  Stopped early on your request."
        if moved:
            text += "\n[b]u[/b] puts them all back."
        return text

    def _path(self, path: str) -> str:
        return display_path(path, self.roots)

    # ------------------------------------------------------------------ keys

    def action_back(self) -> None:
        if self.busy:
            self.cancel.set()
            self.notify("Stopping after the current file…")
            return
        self.app.pop_screen()
