"""The screen every full-screen view of photodup derives from, and what it asks of the app."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

from textual.notifications import SeverityLevel
from textual.screen import Screen

from photodup_tui.answers import DecisionBook
from photodup_tui.engine.daemon_control import DaemonStatus
from photodup_tui.engine.decisions import Decision
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group, ScanResult
from photodup_tui.previews import PreviewCache
from photodup_tui.scan_session import ScanSession
from photodup_tui.ui_settings import UiSettings
from photodup_tui.widgets.preview import Renderer


class HostOptions(Protocol):
    """The launch options a screen reads."""

    @property
    def preview(self) -> Renderer: ...


class Host(Protocol):
    """What the screens ask of the app (:class:`photodup_tui.app.PhotodupApp`).

    The app imports every screen to show it; the screens see the app only through this,
    so no import runs back up from a screen to the app.
    """

    @property
    def options(self) -> HostOptions: ...
    @property
    def ui(self) -> UiSettings: ...
    @property
    def scan_settings(self) -> ScanSettings: ...
    @property
    def result(self) -> ScanResult | None: ...
    @property
    def fallback_reason(self) -> str | None: ...
    @property
    def daemon_status(self) -> DaemonStatus: ...
    @property
    def decision_book(self) -> DecisionBook: ...
    @property
    def previews(self) -> PreviewCache: ...

    def notify(
        self,
        message: str,
        *,
        title: str = ...,
        severity: SeverityLevel = ...,
        timeout: float | None = ...,
    ) -> None: ...
    def switch_screen(self, screen: Screen[Any]) -> object: ...
    def start_scan(self, roots: Sequence[str]) -> None: ...
    def scan_session(self) -> ScanSession: ...
    def scan_ended(self) -> None: ...
    def show_review(
        self,
        result: ScanResult,
        fallback_reason: str | None = ...,
        hidden: Sequence[tuple[Group, Decision]] = ...,
        keepers: Sequence[tuple[Group, int]] = ...,
    ) -> None: ...
    def apply_settings(
        self,
        settings: ScanSettings,
        ui: UiSettings,
        model: str | None = ...,
        previous_model: str | None = ...,
    ) -> None: ...
    def after_trash(self, trashed: Sequence[str]) -> None: ...
    def after_undo(self, restored: Sequence[str]) -> None: ...
    def not_duplicates(self, group_index: int) -> None: ...
    def show_again(self, group_index: int) -> bool: ...
    def choose_keeper(self, group_index: int, member_index: int) -> str: ...


class AppScreen(Screen[None]):
    """A screen of photodup's app, with the app typed as what screens may ask of it."""

    @property
    def papp(self) -> Host:
        return cast(Host, self.app)
