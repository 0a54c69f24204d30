"""photodup's terminal UI: the app, the state its screens share, and how to start it.

``create_app`` builds the app for the CLI (``run_app``) and for the tests alike; every
outside dependency (feature source, daemon socket, preview loader, a ready-made scan
result) can be handed in, so tests drive the real screens on real or fixed data.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.worker import Worker, WorkerState, get_current_worker

from photodup_tui import ui_settings
from photodup_tui.engine import settings as scan_settings
from photodup_tui.engine.decisions import Decision
from photodup_tui.engine.safedelete import BatchNotFound, interrupted_batches, make_plan
from photodup_tui.engine.scan import ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group
from photodup_tui.engine.undo_preview import UndoPreview, next_undo
from photodup_tui.formatting import plural
from photodup_tui.messages import DaemonReport, DaemonStatusChanged, GroupShownAgain
from photodup_tui.review_state import Review
from photodup_tui.screens.action import ActionScreen
from photodup_tui.screens.confirm import ConfirmScreen, UndoConfirmScreen
from photodup_tui.screens.group import GroupScreen
from photodup_tui.screens.help import HelpScreen
from photodup_tui.screens.hidden import HiddenScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.screens.scan import ScanScreen
from photodup_tui.screens.settings import SettingsScreen
from photodup_tui.screens.start import StartScreen, check_folders
from photodup_tui.widgets.preview import Renderer
from photodup_tui.workers import (
    UNAVAILABLE,
    Cancelled,
    DaemonNotRunning,
    DaemonStatus,
    DecisionBook,
    ModelSwitch,
    PlanSummary,
    PreviewCache,
    PreviewLoader,
    SourceFactory,
    open_feature_source,
    poll_daemon,
    run_cancellable,
    short_reason,
    start_daemon,
    summarize,
    switch_model,
)

POLL_SECONDS = 2.0


@dataclass(slots=True)
class AppOptions:
    roots: list[str] = field(default_factory=list)
    scan_settings: ScanSettings = field(default_factory=ScanSettings)
    settings_error: str | None = None  # the config file's [scan] table could not be used
    ui: ui_settings.UiSettings = field(default_factory=ui_settings.UiSettings)
    socket_path: Path | None = None
    source_factory: SourceFactory | None = None  # default: daemon, or no-model fallback
    watch_daemon: bool = True  # poll the daemon's status for the status line
    start_daemon: bool = True  # start photodupd at launch when nobody answers
    daemon_status: DaemonStatus | None = None  # a fixed status line (snapshots)
    preview: Renderer = "auto"
    preview_loader: PreviewLoader | None = None
    cursor_blink: bool = True
    animations: bool = True  # False: still frames (snapshot tests)
    result: ScanResult | None = None  # open straight on the review of this scan
    hidden: list[tuple[Group, Decision]] = field(default_factory=list)  # ... and these hidden
    check_interrupted: bool = True


class PhotodupApp(App[int]):
    CSS_PATH = "photodup.tcss"
    ENABLE_COMMAND_PALETTE = False  # every action has a key; the footer needs the room
    TITLE = "photodup"
    SUB_TITLE = "duplicate photos, found and safely trashed"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help"),
        Binding("u", "undo", "Undo"),
        Binding("f2,comma", "settings", "Settings"),
        Binding("q", "quit", "Quit"),
    ]

    daemon_status: var[DaemonStatus] = var(DaemonStatus("checking"), always_update=True)

    def __init__(self, options: AppOptions) -> None:
        super().__init__()
        # The pixel check decodes and scores in a "spawn" process pool (sameshot_check), and
        # multiprocessing's resource tracker process inherits stderr; once Textual runs,
        # sys.stderr has no file descriptor (fileno() == -1) and starting the tracker fails.
        # So it starts now, while stderr is real.
        resource_tracker.ensure_running()
        self.options = options
        self.scan_settings = options.scan_settings
        self.ui = options.ui
        self.cursor_blink = options.cursor_blink
        if not options.animations:
            self.animation_level = "none"
        self.previews = PreviewCache(options.preview_loader)
        self.result: ScanResult | None = None
        self.review: Review | None = None
        self.fallback_reason: str | None = None  # why the last scan ran without a model
        self._loading_since: float | None = None
        self._daemon_starting = False
        self._daemon_lock = threading.Lock()  # one start of photodupd at a time
        self._start_failure: str | None = None  # why photodupd could not start, if it failed
        self.decision_book = DecisionBook()
        self._hides: list[int] = []  # groups hidden since the last clean-up: u shows them again
        self._switching: str | None = None  # the model photodupd is switching to
        self._switch_previous: str | None = None  # the config's model before that switch
        self._switch_later: tuple[str, str | None] | None = None  # (model, previous) after a scan
        self._status_before_switch = DaemonStatus("checking")
        self._told_about_hiding = False  # the first "not duplicates" explains it all
        self._undo_asked = False  # an undo confirmation is open or being prepared

    # ------------------------------------------------------------------ start and stop

    def on_mount(self) -> None:
        if self.options.daemon_status is not None:
            self.daemon_status = self.options.daemon_status
        elif not self.ui.use_model:
            self.daemon_status = DaemonStatus("off")
        elif self.options.watch_daemon:
            self._poll_daemon()
            if self.options.start_daemon:
                self._start_daemon()
        if self.options.check_interrupted:
            self._check_interrupted()
        if self.options.settings_error:
            self.notify(
                f"{self.options.settings_error}\nUsing the default scan settings.",
                title="Config file problem",
                severity="error",
                timeout=15,
            )
        if self.options.result is not None:
            self.show_review(self.options.result, hidden=self.options.hidden)
        elif self.options.roots:
            self._check_roots(self.options.roots)
        else:
            self.push_screen(StartScreen())

    # ------------------------------------------------------------------ the journey

    def start_scan(self, roots: Sequence[str]) -> None:
        gc.unfreeze()  # what this scan replaces may be collected again (see _settle_heap)
        folders = [root for root in roots if os.path.isdir(root)]  # a photo is no "folder"
        if folders:
            self.ui = self.ui.with_recent(folders)
            self._save_ui(self.ui)
        screen = ScanScreen(list(roots))
        if len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def feature_factory(self) -> SourceFactory:
        if self.options.source_factory is not None:
            return self.options.source_factory
        use_model, socket_path, lock = (
            self.ui.use_model,
            self.options.socket_path,
            self._daemon_lock,
        )
        return lambda report, cancel: open_feature_source(
            use_model, socket_path, report, cancel, lock
        )

    def show_review(
        self,
        result: ScanResult,
        fallback_reason: str | None = None,
        hidden: Sequence[tuple[Group, Decision]] = (),
        keepers: Sequence[tuple[Group, int]] = (),
    ) -> None:
        """The review of ``result``; ``hidden``: groups earlier answers hide; ``keepers``:
        (group, member) the user chose as keeper in an earlier scan."""
        self.result, self.fallback_reason = result, fallback_reason
        if fallback_reason and self.ui.use_model and self.options.daemon_status is None:
            self._start_failure = fallback_reason.removeprefix(UNAVAILABLE)
            self.daemon_status = DaemonStatus("down", detail=self._start_failure)
        self.review = Review(result.groups, hidden, keepers)
        self._hides.clear()
        screen = ReviewScreen(result, self.review)
        if len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)
        self.call_after_refresh(_settle_heap)

    def scan_ended(self) -> None:
        """The scan worker is done (results, failure or cancel): a model change the user
        saved meanwhile can happen now."""
        if self._switch_later is not None:
            model, previous = self._switch_later
            self._switch_later = None
            self._begin_switch(model, previous)

    def action_trash(self) -> None:
        """``d``: plan the marked files, say exactly what will happen, then do it."""
        if self.review is None:
            return
        marked = self.review.marked()
        if marked.files == 0:
            self.notify(
                "Nothing is marked. Press a to mark copies with the keep rules, "
                "or space on a photo in a group.",
                title="Nothing to trash",
            )
            return
        self._plan(self.review.groups_to_act_on())

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan", name="plan")
    def _plan(self, groups: list[Group]) -> PlanSummary:
        plan = make_plan(
            groups,
            allow_similar=True,  # every similar-group mark is the user's own (review_state)
            reference_dirs=list(self.scan_settings.reference_folders),
        )
        return summarize(plan)

    def _confirmed(self, summary: PlanSummary) -> None:
        def go(confirmed: bool | None) -> None:
            if confirmed:
                self.push_screen(ActionScreen.trash(summary.plan, self._roots()))

        self.push_screen(ConfirmScreen(summary, self._roots()), go)

    def after_trash(self, trashed: Sequence[str]) -> None:
        self._hides.clear()  # u now means "put the files back"
        if self.review is not None:
            self.review.remove(trashed)

    def after_undo(self, restored: Sequence[str]) -> None:
        if self.review is not None:
            self.review.restore(restored)

    # ------------------------------------------------------------------ hiding groups

    def not_duplicates(self, group_index: int) -> None:
        """Hide a group and remember, by content, that its photos are not duplicates; u
        right after (or the hidden-groups list, h) takes it back."""
        if self.review is None:
            return
        self.review.dismiss(group_index, Decision.NOT_DUPLICATES)
        self._hides.append(group_index)
        self.decision_book.want(self.review.groups[group_index], Decision.NOT_DUPLICATES)
        self._write_decisions()
        if self._told_about_hiding:  # the long story once; later hides must not pile up
            self.notify("Hidden and remembered; u shows it again.", timeout=3)
            return
        self._told_about_hiding = True
        self.notify(
            "Hidden, and remembered: later scans will not show these photos as duplicates. "
            "u shows them again; h on the list of groups shows every hidden group.",
            title="Not duplicates",
            timeout=6,
        )

    def choose_keeper(self, group_index: int, member_index: int) -> str:
        """k: keep this member instead, and remember the choice by content, so a rescan
        keeps it too.  Returns what to tell the user."""
        if self.review is None:
            return ""
        group = self.review.groups[group_index]
        before = group.keeper_member
        message = self.review.set_keeper(group_index, member_index)
        if group.keeper_member is not before:
            self.decision_book.want_keeper(group)
            self._write_decisions()
            message += " Remembered for later scans."
        return message

    def show_again(self, group_index: int) -> bool:
        """Bring a hidden group back and forget the answer that hid it."""
        if self.review is None or self.review.show_again(group_index) is None:
            return False
        if group_index in self._hides:
            self._hides.remove(group_index)
        self.decision_book.want(self.review.groups[group_index], None)
        self._write_decisions()
        self.screen.post_message(GroupShownAgain(group_index))
        self.notify("Shown again; photodup forgot that answer.", timeout=4)
        return True

    @work(thread=True, exit_on_error=False, group="decisions", name="decisions")
    def _write_decisions(self) -> None:
        self.decision_book.write()

    def on_unmount(self) -> None:
        gc.unfreeze()  # hand the heap back as it was (tests run many apps in one process)

    # ------------------------------------------------------------------ global keys

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_undo(self) -> None:
        """u: show the last hidden group again if that was the last thing done on the
        review; otherwise put the files of the last clean-up back."""
        on_review = isinstance(self.screen, ReviewScreen | GroupScreen | HiddenScreen)
        if on_review and self._hides:
            self.show_again(self._hides[-1])
            return
        if isinstance(self.screen, ActionScreen) and self.screen.busy:
            self.notify("Wait for the current batch to finish first.")
            return
        if not self._undo_asked:
            self._undo_asked = True
            self._find_undo()  # then _ask_undo: say what comes back before it does

    @work(thread=True, exclusive=True, exit_on_error=False, group="undo", name="find-undo")
    def _find_undo(self) -> UndoPreview | None:
        try:
            return next_undo()
        except BatchNotFound:
            return None

    def _ask_undo(self, target: UndoPreview | None) -> None:
        if target is None:
            self._undo_asked = False
            self.notify("No clean-up has files in the trash to put back.", title="Nothing to undo")
            return

        def go(confirmed: bool | None) -> None:
            self._undo_asked = False
            if not confirmed:
                return
            screen = ActionScreen.undo(self._roots(), target.batch.batch_id)
            if isinstance(self.screen, ActionScreen):
                self.switch_screen(screen)
            else:
                self.push_screen(screen)

        self.push_screen(UndoConfirmScreen(target), go)

    def action_settings(self) -> None:
        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen())

    def _roots(self) -> list[str]:
        return list(self.result.roots) if self.result is not None else []

    # ------------------------------------------------------------------ settings

    def apply_settings(
        self,
        settings: ScanSettings,
        ui: ui_settings.UiSettings,
        model: str | None = None,
        previous_model: str | None = None,
    ) -> None:
        """Use saved settings from now on.  ``model``: the model the user chose (None: left
        as it was); photodupd switches to it now, and ``previous_model`` (the config's value
        before) is put back if it cannot."""
        was_on, self.scan_settings, self.ui = self.ui.use_model, settings, ui
        if ui.use_model != was_on and self.options.daemon_status is None:
            if ui.use_model:
                self.daemon_status = DaemonStatus("checking")
                if self.options.watch_daemon:
                    self._poll_daemon()
            else:
                self.workers.cancel_group(self, "daemon")
                self.daemon_status = DaemonStatus("off")
        if model is not None and ui.use_model and self.options.daemon_status is None:
            if self._scan_running():
                self._switch_later = (model, previous_model)
                self.notify(
                    f"photodupd switches to {model} when this scan ends: one scan never mixes "
                    "two models.",
                    title="Model",
                )
            else:
                self._begin_switch(model, previous_model)

    def _scan_running(self) -> bool:
        return any(w.name == "scan" and w.state in _BUSY for w in self.workers)

    # ------------------------------------------------------------------ switching models

    def _begin_switch(self, model: str, previous: str | None) -> None:
        self._switching, self._switch_previous = model, previous
        self._status_before_switch = self.daemon_status
        self.daemon_status = DaemonStatus("loading", model=model, why="switching models")
        self._switch_model(model)

    @work(thread=True, exclusive=True, exit_on_error=False, group="model", name="model-switch")
    def _switch_model(self, model: str) -> ModelSwitch:
        cancel = get_current_worker().cancelled_event
        socket_path = self.options.socket_path
        return run_cancellable(lambda: switch_model(socket_path, model), cancel)

    def _switch_done(self, worker: Worker[Any]) -> None:
        model, previous = self._switching or "", self._switch_previous
        self._switching = None
        if worker.state is WorkerState.SUCCESS and isinstance(worker.result, ModelSwitch):
            switched = worker.result
            self.daemon_status = DaemonStatus("ready", model=switched.model_id, why=switched.why)
            self.notify(
                f"photodupd now serves {switched.model_id}. The next scan uses it.",
                title="Model switched",
            )
            return
        error = worker.error
        if isinstance(error, Cancelled):
            return
        if isinstance(error, DaemonNotRunning):
            self.notify(
                f"photodupd is not running; it loads {model} when it starts (the next scan "
                "starts it).",
                title="Model saved",
            )
        else:
            # Said once, in a notification: the status line shows what photodupd serves
            # now, which is the model it had.
            reason = short_reason(error) if error is not None else "unknown error"
            back = previous or "auto"
            self.notify(
                f"{reason}\nphotodupd keeps the model it had; the model setting is back to {back}.",
                title=f"Could not switch to {model}",
                severity="error",
                timeout=20,
            )
            self._restore_model_setting(previous)
        self.daemon_status = self._status_before_switch  # until photodupd's own word
        if self.options.watch_daemon:
            self._poll_daemon()  # the daemon's own word replaces ours

    @work(thread=True, exit_on_error=False, group="save", name="save-ui")
    def _restore_model_setting(self, previous: str | None) -> None:
        if previous is None:
            ui_settings.update_tables({}, remove={"daemon": ["model"]})
        else:
            ui_settings.update_tables({"daemon": {"model": previous}})

    @work(thread=True, exit_on_error=False, group="save", name="save-ui")
    def _save_ui(self, ui: ui_settings.UiSettings) -> None:
        ui_settings.save(ui)

    # ------------------------------------------------------------------ daemon status

    def loading_seconds(self) -> float | None:
        if self._loading_since is None:
            return None
        return time.monotonic() - self._loading_since

    def watch_daemon_status(self, status: DaemonStatus) -> None:
        if status.state != "loading":
            self._loading_since = None
        elif self._loading_since is None:
            self._loading_since = time.monotonic()

    @work(thread=True, exclusive=True, exit_on_error=False, group="daemon", name="daemon-poll")
    def _poll_daemon(self) -> None:
        worker = get_current_worker()  # cancelled when the app exits or the model is turned off
        while not worker.is_cancelled:
            self.post_message(DaemonStatusChanged(poll_daemon(self.options.socket_path)))
            if worker.cancelled_event.wait(POLL_SECONDS):
                return

    @work(thread=True, exit_on_error=False, group="daemon-start", name="daemon-start")
    def _start_daemon(self) -> None:
        if poll_daemon(self.options.socket_path).state != "down":
            return

        def report(text: str) -> None:
            self.post_message(DaemonReport(text))

        self._daemon_starting = True
        try:
            start_daemon(self.options.socket_path, report, self._daemon_lock)
        finally:
            self._daemon_starting = False

    def on_daemon_status_changed(self, message: DaemonStatusChanged) -> None:
        if not self.ui.use_model or self.options.daemon_status is not None:
            return
        status = message.status
        if self._switching is not None and status.state != "down":
            # The daemon says "ready" (old model) until the new one starts loading: say what
            # is really going on.
            status = DaemonStatus("loading", model=self._switching, why="switching models")
        if status.state == "down" and self._daemon_starting:
            status = DaemonStatus("starting", detail=self.daemon_status.detail)
        elif status.state == "down" and self._start_failure:
            status = DaemonStatus("down", detail=self._start_failure)
        elif status.state != "down":
            self._start_failure = None
        self.daemon_status = status

    def on_daemon_report(self, message: DaemonReport) -> None:
        if self.options.daemon_status is None and self.daemon_status.state in (
            "down",
            "checking",
            "starting",
        ):
            self.daemon_status = DaemonStatus("starting", detail=message.text)

    @work(thread=True, exit_on_error=False, group="start", name="roots")
    def _check_roots(self, roots: list[str]) -> tuple[list[str], str | None]:
        return [os.path.abspath(os.path.expanduser(r)) for r in roots], check_folders(roots)

    @work(thread=True, exit_on_error=False, group="start", name="interrupted")
    def _check_interrupted(self) -> list[Any]:
        return interrupted_batches()

    # ------------------------------------------------------------------ worker results

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker, state = event.worker, event.state
        if worker.name == "model-switch" and state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self._switch_done(worker)
            return
        if state is WorkerState.SUCCESS:
            if worker.name == "plan" and isinstance(worker.result, PlanSummary):
                self._confirmed(worker.result)
            elif worker.name == "find-undo":
                self._ask_undo(cast("UndoPreview | None", worker.result))
            elif worker.name == "interrupted" and worker.result:
                count = len(worker.result)
                self.notify(
                    f"{plural(count, 'earlier clean-up')} stopped half-way (the program was "
                    "killed). Every file is either in place or in the trash; press u to put "
                    "the files of the last one back.",
                    title="Interrupted clean-up found",
                    severity="warning",
                    timeout=20,
                )
            elif worker.name == "roots":
                roots, problem = cast("tuple[list[str], str | None]", worker.result)
                if problem is None:
                    self.start_scan(roots)
                else:
                    self.push_screen(StartScreen(error=problem, value=" ".join(roots)))
        elif state is WorkerState.ERROR:
            error = worker.error
            what = {
                "plan": "Could not plan the clean-up",
                "save-ui": "Could not save your settings",
                "decisions": "Could not remember that answer",
                "daemon-start": "photodupd did not start",
                "interrupted": "Could not read the journal of earlier clean-ups",
                "find-undo": "Could not read the journal of earlier clean-ups",
            }.get(worker.name, f"{worker.name} failed")
            if worker.name == "find-undo":
                self._undo_asked = False
            reason = short_reason(error) if error is not None else "unknown error"
            if worker.name == "daemon-start":
                self._start_failure = reason
                self.daemon_status = DaemonStatus("down", detail=reason)
            self.notify(reason, title=what, severity="error", timeout=12)


_BUSY = (WorkerState.PENDING, WorkerState.RUNNING)


def _settle_heap() -> None:
    """Keep the garbage collector's full passes out of key handling.

    A scan of 100,000 photos leaves about a million long-lived objects, and every full
    collection the collector starts while the UI allocates walks all of them: 0.3-0.6 s,
    seen as keys handled that late (bench/tui_bench.py).  Freezing them moves them out of
    its sight; nothing is kept alive by it (reference counting still frees them), and the
    next scan unfreezes them so what it replaces is collected as usual.
    """
    gc.freeze()


if TYPE_CHECKING:
    from photodup_tui.screens.base import Host

    # The screens see the app only as ``Host``; this has mypy hold the app to it.
    _HOST: type[Host] = PhotodupApp


def create_app(roots: Sequence[str] = (), **options: Any) -> PhotodupApp:
    """The app for ``photodup [PATH...]`` and for tests (``options``: see AppOptions)."""
    return PhotodupApp(AppOptions(roots=list(roots), **options))


def run_app(paths: list[str]) -> int:
    """Start the UI on these folders (or the folder picker when none); the exit status."""
    settings_error = None
    try:
        settings = scan_settings.load()
    except scan_settings.SettingsError as exc:
        settings, settings_error = ScanSettings(), str(exc)
    try:
        ui = ui_settings.load()
    except ui_settings.UiSettingsError as exc:
        ui, settings_error = ui_settings.UiSettings(), settings_error or str(exc)
    app = create_app(paths, scan_settings=settings, settings_error=settings_error, ui=ui)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(run_app(sys.argv[1:]))
