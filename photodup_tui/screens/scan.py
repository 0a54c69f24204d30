"""The scan, live: numbers and a progress bar stream from the engine; e lists the files that
could not be used so far; escape stops the scan and keeps what was learnt."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, ProgressBar, Static
from textual.worker import Worker, WorkerState

from photodup_tui.engine.cancellable import Cancelled
from photodup_tui.engine.scan import ScanProgress
from photodup_tui.formatting import display_path
from photodup_tui.messages import DaemonReport, ScanProgressed, ScanSourceReady
from photodup_tui.scan_session import OpenedSource, Scanned
from photodup_tui.screens.base import AppScreen
from photodup_tui.screens.errors import ErrorsScreen
from photodup_tui.screens.start import StartScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.scan_stats import ScanStats, bar_label

WAITING = ScanProgress("walking", 0, 0, 0, 0, 0, 0, "", 0.0, None)


class ScanScreen(AppScreen):
    HELP = (
        "photodup is reading your folders. Everything it learns is kept in a cache, so "
        "stopping now loses nothing and the next scan only looks at new or changed files. "
        "The bar shows the current step (how many of how many, and the time left); e lists "
        "the files that could not be read so far while the scan goes on."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop scan"),
        Binding("c", "cancel", "Stop scan", show=False),
        Binding("e", "errors", "Errors so far"),
    ]
    DEFAULT_CSS = """
    ScanScreen #scan-box {
        padding: 1 2;
        height: auto;
    }
    ScanScreen #scan-title {
        margin-bottom: 1;
    }
    ScanScreen #scan-model {
        margin: 1 0 0 0;
        height: auto;
    }
    ScanScreen #scan-model.-fallback {
        color: $warning;
    }
    ScanScreen #scan-progress {
        margin-top: 1;
        height: 1;
    }
    ScanScreen #scan-bar-label {
        width: 1fr;
        margin-left: 2;
        color: $text-muted;
    }
    """

    def __init__(self, roots: list[str], *, autostart: bool = True) -> None:
        super().__init__()
        self.roots = roots
        self.autostart = autostart
        self.cancel = threading.Event()
        self.feature_note = ""
        self.fallback_reason: str | None = None
        self.latest = WAITING
        self._worker: Worker[Scanned] | None = None
        self._errors_screen: ErrorsScreen | None = None  # the live list, while it is open
        self._outcome: Callable[[], object] | None = None  # what to show once back on top

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        with Vertical(id="scan-box"):
            shown = ", ".join(display_path(r) for r in self.roots)
            yield Static(f"[b]Looking for duplicates in[/b] {shown}", id="scan-title")
            yield ScanStats(self.roots, id="scan-stats")
            with Horizontal(id="scan-progress"):
                yield ProgressBar(total=None, show_eta=False, id="scan-bar")
                yield Static(id="scan-bar-label")
            yield Static("Connecting to photodupd for the image model…", id="scan-model")
        yield Footer()

    def on_mount(self) -> None:
        self.show_progress(WAITING)
        if self.autostart:
            self._worker = self.run_worker(
                self._scan, thread=True, exit_on_error=False, name="scan"
            )

    def on_unmount(self) -> None:
        self.cancel.set()  # leaving the screen (or the app) stops the scan

    @property
    def scanning(self) -> bool:
        return self._worker is not None and not self._worker.is_finished

    def _scan(self) -> Scanned:
        def report(text: str) -> None:
            self.post_message(DaemonReport(text))

        def chosen(opened: OpenedSource) -> None:
            self.post_message(
                ScanSourceReady(
                    opened.source.model_id,
                    opened.fallback_reason,
                    opened.mode,
                    opened.served_by(),
                    tuple(opened.steps),
                )
            )

        def progress(snapshot: ScanProgress) -> None:
            self.post_message(ScanProgressed(snapshot))

        session = self.papp.scan_session()
        return session.run(self.roots, self.cancel, progress=progress, report=report, chosen=chosen)

    # ------------------------------------------------------------------ messages

    def on_scan_progressed(self, message: ScanProgressed) -> None:
        self.show_progress(message.progress)

    def on_daemon_report(self, message: DaemonReport) -> None:
        # It bubbles on to the app, whose status line says it too.
        self.query_one("#scan-model", Static).update(f"photodupd: {message.text}")

    def on_scan_source_ready(self, message: ScanSourceReady) -> None:
        self.fallback_reason = message.fallback_reason
        line = self.query_one("#scan-model", Static)
        if message.fallback_reason is None:
            self.feature_note = ""
            line.update(f"Model: {message.served_by or message.model_id}")
        else:
            self.feature_note = "(perceptual hashes, no model)"
            line.add_class("-fallback")
            line.update(
                f"Scanning without a model: {message.fallback_reason}.\n"
                "Exact copies and resized or re-saved copies are still found; most edits "
                "(mirrors, crops, borders) need the model."
            )

    def show_progress(self, progress: ScanProgress) -> None:
        self.latest = progress
        self.query_one(ScanStats).show(progress, self.feature_note)
        bar = self.query_one("#scan-bar", ProgressBar)
        if progress.phase_total is None or progress.phase in ("done", "cancelled"):
            bar.update(total=None)  # no total known: the bar says "busy", not "n %"
        else:
            bar.update(total=max(progress.phase_total, 1), progress=progress.phase_done)
        self.query_one("#scan-bar-label", Static).update(bar_label(progress))
        if errors := self._open_errors():
            errors.update_errors(progress.error_files, live=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.worker.is_finished:
            self.papp.scan_ended()
        if event.state is WorkerState.SUCCESS and self._worker.result is not None:
            scanned = self._worker.result
            if errors := self._open_errors():
                errors.update_errors(scanned.result.errors, live=False)
            self._when_on_top(
                lambda: self.papp.show_review(
                    scanned.result, scanned.fallback_reason, scanned.hidden, scanned.keepers
                ),
                "The scan is done",
            )
        elif event.state is WorkerState.ERROR:
            error = event.worker.error
            if isinstance(error, Cancelled):
                self.papp.notify("Scan stopped before it started.")
            else:
                self.papp.notify(
                    f"{type(error).__name__}: {error}", title="The scan failed", severity="error"
                )
            self._when_on_top(lambda: self.papp.switch_screen(StartScreen()), "The scan ended")

    def _when_on_top(self, show: Callable[[], object], what: str) -> None:
        """Leave this screen now, or, while another screen is open on top of it (the error
        list, help, settings), once the user closes that: never pull a screen from under
        the user's feet."""
        if self.app.screen is self:
            show()
            return
        self._outcome = show
        self.papp.notify(f"{what}: escape to go on.", timeout=8)

    def _open_errors(self) -> ErrorsScreen | None:
        """The live error list, while it is open (on top, or under help)."""
        screen = self._errors_screen
        return screen if screen is not None and screen in self.app.screen_stack else None

    def on_screen_resume(self) -> None:
        self._errors_screen = None  # whatever was on top of this screen is closed now
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            outcome()

    # ------------------------------------------------------------------ keys

    def action_errors(self) -> None:
        """The files found unusable so far; the list keeps growing while it is open."""
        self._errors_screen = ErrorsScreen(self.latest.error_files, self.roots, live=True)
        self.app.push_screen(self._errors_screen)

    def action_cancel(self) -> None:
        if self.cancel.is_set():
            return
        self.cancel.set()
        self.query_one("#scan-title", Static).update(
            "[b]Stopping…[/b] everything read so far stays in the cache."
        )
