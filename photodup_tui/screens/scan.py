"""The scan, live: numbers stream from the engine; escape stops it and keeps what was learnt."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Static
from textual.worker import Worker, WorkerState

from photodup_tui.engine.scan import ScanProgress, ScanResult
from photodup_tui.formatting import display_path
from photodup_tui.messages import DaemonReport, ScanProgressed, ScanSourceReady
from photodup_tui.screens.start import StartScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.scan_stats import ScanStats
from photodup_tui.workers import Cancelled, run_scan

if TYPE_CHECKING:
    from photodup_tui.app import PhotodupApp

WAITING = ScanProgress("walking", 0, 0, 0, 0, 0, 0, "", 0.0, None)


class ScanScreen(Screen[None]):
    HELP = (
        "photodup is reading your folders. Everything it learns is kept in a cache, so "
        "stopping now loses nothing and the next scan only looks at new or changed files."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop scan"),
        Binding("c", "cancel", "Stop scan", show=False),
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
    ScanScreen ProgressBar {
        margin-top: 1;
    }
    """

    def __init__(self, roots: list[str], *, autostart: bool = True) -> None:
        super().__init__()
        self.roots = roots
        self.autostart = autostart
        self.cancel = threading.Event()
        self.feature_note = ""
        self.fallback_reason: str | None = None

    @property
    def papp(self) -> PhotodupApp:
        return cast("PhotodupApp", self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        with Vertical(id="scan-box"):
            shown = ", ".join(display_path(r) for r in self.roots)
            yield Static(f"[b]Looking for duplicates in[/b] {shown}", id="scan-title")
            yield ScanStats(self.roots, id="scan-stats")
            yield ProgressBar(total=None, show_eta=False, id="scan-bar")
            yield Static("Connecting to photodupd for the image model…", id="scan-model")
        yield Footer()

    def on_mount(self) -> None:
        self.show_progress(WAITING)
        if self.autostart:
            self.run_worker(self._scan, thread=True, exit_on_error=False, name="scan")

    def on_unmount(self) -> None:
        self.cancel.set()  # leaving the screen (or the app) stops the scan

    def _scan(self) -> tuple[ScanResult, str | None]:
        def report(text: str) -> None:
            self.post_message(DaemonReport(text))

        def progress(snapshot: ScanProgress) -> None:
            self.post_message(ScanProgressed(snapshot))

        opened = self.papp.feature_factory()(report, self.cancel)
        self.post_message(ScanSourceReady(opened.source.model_id, opened.fallback_reason))
        result = run_scan(
            self.roots,
            self.papp.scan_settings,
            opened.source,
            progress,
            self.cancel,
        )
        return result, opened.fallback_reason

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
            line.update(f"Model: {message.model_id}")
        else:
            self.feature_note = "(perceptual hashes, no model)"
            line.add_class("-fallback")
            line.update(
                f"Scanning without a model: {message.fallback_reason}.\n"
                "Exact copies and resized or re-saved copies are still found; similar shots "
                "(edits, crops, bursts) need the model."
            )

    def show_progress(self, progress: ScanProgress) -> None:
        self.query_one(ScanStats).show(progress, self.feature_note)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "scan":
            return
        if event.state is WorkerState.SUCCESS:
            result, fallback = cast("tuple[ScanResult, str | None]", event.worker.result)
            self.papp.show_review(result, fallback)
        elif event.state is WorkerState.ERROR:
            error = event.worker.error
            if isinstance(error, Cancelled):
                self.papp.notify("Scan stopped before it started.")
            else:
                self.papp.notify(
                    f"{type(error).__name__}: {error}", title="The scan failed", severity="error"
                )
            self.papp.switch_screen(StartScreen())

    # ------------------------------------------------------------------ keys

    def action_cancel(self) -> None:
        if self.cancel.is_set():
            return
        self.cancel.set()
        self.query_one("#scan-title", Static).update(
            "[b]Stopping…[/b] everything read so far stays in the cache."
        )
