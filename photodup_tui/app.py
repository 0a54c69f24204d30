"""photodup's terminal UI: the app, the state its screens share, and how to start it.

``create_app`` builds the app for the CLI (``photodup [PATH...]``) and for the tests alike;
every outside dependency (feature source, daemon socket, preview loader, a ready-made scan
result) can be handed in, so tests drive the real screens on real or fixed data.

The app shows and routes; the view-models below it decide: a scan's setting up is a
:class:`~photodup_tui.scan_session.ScanSession`, photodupd's life a
:class:`~photodup_tui.daemon_supervisor.DaemonSupervisor` (the app is its host), the review
a :class:`~photodup_tui.review_state.Review` and the user's
:class:`~photodup_tui.answers.Answers` on it.  Every blocking call runs in a thread worker
(background.py) whose result is handed back to one handler on the UI thread, and every
failure is said in one place.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.worker import Worker, WorkerState

from photodup_tui import ui_settings
from photodup_tui.answers import Answers, DecisionBook
from photodup_tui.background import BackgroundApp
from photodup_tui.daemon_supervisor import DaemonSupervisor, Notice, elsewhere
from photodup_tui.engine.daemon_control import DaemonStatus
from photodup_tui.engine.decisions import Decision
from photodup_tui.engine.placement import Placement
from photodup_tui.engine.safedelete import BatchNotFound, interrupted_batches, make_plan
from photodup_tui.engine.scan import ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group
from photodup_tui.engine.undo_preview import UndoPreview, next_undo
from photodup_tui.formatting import plural
from photodup_tui.messages import DaemonReport, GroupShownAgain, ScanSourceReady
from photodup_tui.plan_summary import PlanSummary, summarize
from photodup_tui.previews import PreviewCache, PreviewLoader
from photodup_tui.review_state import Review
from photodup_tui.scan_session import ScanSession, SourceFactory, daemon_or_local
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


@dataclass(slots=True)
class AppOptions:
    roots: list[str] = field(default_factory=list)
    scan_settings: ScanSettings = field(default_factory=ScanSettings)
    settings_error: str | None = None  # the config file's [scan] table could not be used
    ui: ui_settings.UiSettings = field(default_factory=ui_settings.UiSettings)
    socket_path: Path | None = None
    source_factory: SourceFactory | None = None  # default: daemon, or no-model fallback
    placement: Placement | None = None  # where the model runs ([daemon] mode, --mode, --remote)
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


class PhotodupApp(BackgroundApp[int]):
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
        # The pixel checks score in a multiprocessing pool, whose resource-tracker helper
        # process inherits stderr; once Textual runs, sys.stderr has no file descriptor
        # (fileno() == -1) and starting that helper fails. So it starts now, while stderr is
        # real.
        resource_tracker.ensure_running()
        self.options = options
        self.scan_settings = options.scan_settings
        self.ui = options.ui
        self.cursor_blink = options.cursor_blink
        if not options.animations:
            self.animation_level = "none"
        self.previews = PreviewCache(options.preview_loader)
        self.daemon = DaemonSupervisor(
            self,
            options.socket_path,
            use_model=options.ui.use_model,
            watch=options.watch_daemon,
            fixed=options.daemon_status,
            elsewhere=elsewhere(options.placement),
        )
        self.result: ScanResult | None = None
        self.review: Review | None = None
        self.fallback_reason: str | None = None  # why the last scan ran without a model
        self.decision_book = DecisionBook()
        self.answers: Answers | None = None
        self._told_about_hiding = False  # the first "not duplicates" explains it all
        #: finding, then asking, what u puts back (the search's worker)
        self._undo_asked: Worker[None] | None = None

    # ------------------------------------------------------------------ start and stop

    def on_mount(self) -> None:
        self.daemon.begin(start=self.options.start_daemon)
        if self.options.check_interrupted:
            self.in_thread(
                interrupted_batches, self._tell_interrupted, name="interrupted", does=_JOURNAL
            )
        if self.options.settings_error:
            self.notify(
                f"{self.options.settings_error}\nUsing the default scan settings.",
                title="Config file problem",
                severity="error",
                timeout=15,
            )
        if self.options.result is not None:
            self.show_review(self.options.result, hidden=self.options.hidden)
        elif roots := self.options.roots:
            absolute = [os.path.abspath(os.path.expanduser(r)) for r in roots]
            check = functools.partial(check_folders, roots)
            then = functools.partial(self._open, absolute)
            self.in_thread(check, then, name="roots", does="check the folders")
        else:
            self.push_screen(StartScreen())

    def _open(self, roots: list[str], problem: str | None) -> None:
        if problem is None:
            self.start_scan(roots)
        else:
            self.push_screen(StartScreen(error=problem, value=" ".join(roots)))

    def _tell_interrupted(self, batches: Sequence[object]) -> None:
        if batches:
            self.notify(
                f"{plural(len(batches), 'earlier clean-up')} stopped half-way (the program was "
                "killed). Every file is either in place or in the trash; press u to put the "
                "files of the last one back.",
                title="Interrupted clean-up found",
                severity="warning",
                timeout=20,
            )

    def on_unmount(self) -> None:
        self.previews.close()
        gc.unfreeze()  # hand the heap back as it was (tests run many apps in one process)

    # ------------------------------------------------------------------ the journey

    def start_scan(self, roots: Sequence[str]) -> None:
        gc.unfreeze()  # what this scan replaces may be collected again (see _settle_heap)
        folders = [root for root in roots if os.path.isdir(root)]  # a photo is no "folder"
        if folders:
            self.ui = self.ui.with_recent(folders)
            save = functools.partial(ui_settings.save, self.ui)
            self.in_thread(save, None, name="save-ui", does="save your settings")
        self._show(ScanScreen(list(roots)))

    def scan_session(self) -> ScanSession:
        """A scan with the settings of now.  Its features: photodupd's model (started if need
        be, never at the same time as the app's own start), or none when it cannot serve."""
        features = self.options.source_factory or daemon_or_local(
            self.ui.use_model,
            self.options.socket_path,
            self.daemon.start_lock,
            placement=self.options.placement,
        )
        return ScanSession(self.scan_settings, features)

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
        self.daemon.scan_fell_back(fallback_reason)
        self.review = Review(result.groups, hidden, keepers)
        self.answers = Answers(self.review, self.decision_book, self._write_decisions)
        self._show(ReviewScreen(result, self.review))
        self.call_after_refresh(_settle_heap)

    def scan_ended(self) -> None:
        """The scan worker is done (results, failure or cancel)."""
        self.daemon.scan_ended()

    def action_trash(self) -> None:
        """``d``: plan the marked files, say exactly what will happen, then do it."""
        if self.review is None:
            return
        if self.review.marked().files == 0:
            self.notify(
                "Nothing is marked. Press a to mark copies with the keep rules, "
                "or space on a photo in a group.",
                title="Nothing to trash",
            )
            return
        groups, reference = self.review.groups_to_act_on(), self.scan_settings.reference_folders
        plan = functools.partial(_plan, groups, list(reference))
        self.in_thread(plan, self._confirm, name="plan", does="plan the clean-up", exclusive=True)

    def _confirm(self, summary: PlanSummary) -> None:
        def go(confirmed: bool | None) -> None:
            if confirmed:
                self.push_screen(ActionScreen.trash(summary.plan, self._roots()))

        self.push_screen(ConfirmScreen(summary, self._roots()), go)

    def after_trash(self, trashed: Sequence[str]) -> None:
        if self.answers is not None:
            self.answers.cleaned_up(trashed)

    def after_undo(self, restored: Sequence[str]) -> None:
        if self.review is not None:
            self.review.restore(restored)

    def _roots(self) -> list[str]:
        return list(self.result.roots) if self.result is not None else []

    def _show(self, screen: ReviewScreen | ScanScreen) -> None:
        """A stage of the journey: it takes the place of the one before."""
        if len(self.screen_stack) > 1:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    # ------------------------------------------------------------------ answers

    def not_duplicates(self, group_index: int) -> None:
        """Hide a group and remember, by content, that its photos are not duplicates; u
        right after (or the hidden-groups list, h) takes it back."""
        if self.answers is None:
            return
        self.answers.not_duplicates(group_index)
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
        """k: keep this member instead (remembered); returns what to tell the user."""
        return self.answers.choose_keeper(group_index, member_index) if self.answers else ""

    def show_again(self, group_index: int) -> bool:
        """Bring a hidden group back and forget the answer that hid it."""
        if self.answers is None or not self.answers.show_again(group_index):
            return False
        self.screen.post_message(GroupShownAgain(group_index))
        self.notify("Shown again; photodup forgot that answer.", timeout=4)
        return True

    def _write_decisions(self) -> None:
        self.in_thread(
            self.decision_book.write, None, name="decisions", does="remember that answer"
        )

    # ------------------------------------------------------------------ global keys

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def action_settings(self) -> None:
        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen())

    def action_undo(self) -> None:
        """u: show the last hidden group again if that was the last thing done on the
        review; otherwise put the files of the last clean-up back."""
        on_review = isinstance(self.screen, ReviewScreen | GroupScreen | HiddenScreen)
        if on_review and self.answers is not None and self.answers.recent_hides:
            self.show_again(self.answers.recent_hides[-1])
        elif isinstance(self.screen, ActionScreen) and self.screen.busy:
            self.notify("Wait for the current batch to finish first.")
        elif self._undo_asked is None or self._undo_asked.state is WorkerState.ERROR:
            # Say what comes back before it does.
            self._undo_asked = self.in_thread(
                _next_undo, self._ask_undo, name="find-undo", does=_JOURNAL
            )

    def _ask_undo(self, target: UndoPreview | None) -> None:
        if target is None:
            self._undo_asked = None
            self.notify("No clean-up has files in the trash to put back.", title="Nothing to undo")
            return

        def go(confirmed: bool | None) -> None:
            self._undo_asked = None
            if not confirmed:
                return
            screen = ActionScreen.undo(self._roots(), target.batch.batch_id)
            if isinstance(self.screen, ActionScreen):
                self.switch_screen(screen)
            else:
                self.push_screen(screen)

        self.push_screen(UndoConfirmScreen(target), go)

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
        self.scan_settings, self.ui = settings, ui
        scanning = any(isinstance(s, ScanScreen) and s.scanning for s in self.screen_stack)
        self.daemon.settings_changed(ui.use_model, model, previous_model, scanning)

    # ------------------------------------------------------------------ photodupd

    # DaemonHost: the supervisor decides; the app shows, tells, and runs its jobs.

    def tell(self, notice: Notice) -> None:
        self.notify(
            notice.message, title=notice.title, severity=notice.severity, timeout=notice.timeout
        )

    def on_daemon_report(self, message: DaemonReport) -> None:
        self.daemon.launcher_said(message.text)  # a scan's start of photodupd

    def on_scan_source_ready(self, message: ScanSourceReady) -> None:
        """Where the scan's model runs: on the status line; each step down, said once."""
        for step in message.steps:
            self.notify(step, title="Model", severity="warning", timeout=12)
        self.daemon.scan_chose(message.mode, message.model_id, message.served_by)

    def loading_seconds(self) -> float | None:
        return self.daemon.loading_seconds()


_JOURNAL = "read the journal of earlier clean-ups"


def _plan(groups: list[Group], reference_dirs: list[str]) -> PlanSummary:
    # Every similar-group mark is the user's own (review_state: safety rule 6).
    return summarize(make_plan(groups, allow_similar=True, reference_dirs=reference_dirs))


def _next_undo() -> UndoPreview | None:
    """What u puts back: the newest batch with files still in the trash, if any."""
    try:
        return next_undo()
    except BatchNotFound:
        return None


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
