"""The screen every full-screen view of photodup derives from."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from photodup_tui.app import PhotodupApp


class AppScreen(Screen[None]):
    """A screen of :class:`PhotodupApp`, with the app typed as such."""

    @property
    def papp(self) -> PhotodupApp:
        return cast("PhotodupApp", self.app)
