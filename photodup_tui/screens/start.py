"""Pick the folders to scan: type one (with completion) or take a recent one."""

from __future__ import annotations

import asyncio
import os
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.suggester import Suggester
from textual.widgets import Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from photodup_tui.screens.base import AppScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.text_input import TextInput


class FolderSuggester(Suggester):
    """Completes the last path component from the folders that exist (listed off the loop)."""

    def __init__(self) -> None:
        super().__init__(use_cache=True, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        return await asyncio.to_thread(_complete_folder, value)


def _complete_folder(value: str) -> str | None:
    expanded = os.path.expanduser(value)
    parent, stem = os.path.split(expanded)
    try:
        names = sorted(
            e.name
            for e in os.scandir(parent or ".")
            if e.is_dir() and e.name.startswith(stem) and not e.name.startswith(".")
        )
    except OSError:
        return None
    if not names or names[0] == stem:
        return None
    return value + names[0][len(stem) :] + os.sep


def check_folders(paths: list[str]) -> str | None:
    """Why these cannot be scanned, or None."""
    for path in paths:
        full = os.path.expanduser(path)
        if not os.path.exists(full):
            return f"{path} does not exist"
        if not (os.path.isdir(full) or os.path.isfile(full)):
            return f"{path} is not a folder"
    return None


class StartScreen(AppScreen):
    HELP = (
        "Type a folder and press enter to look for duplicate photos in it, or pick a folder "
        "you scanned before. Nothing is changed on disk until you confirm a clean-up."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "focus_input", "Type a folder", show=False),
    ]
    DEFAULT_CSS = """
    StartScreen #start-box {
        padding: 1 2;
        height: auto;
        max-width: 100;
    }
    StartScreen #start-intro {
        margin-bottom: 1;
    }
    StartScreen #start-error {
        color: $error;
        height: auto;
    }
    StartScreen #recent {
        height: auto;
        max-height: 12;
        margin-top: 1;
    }
    """

    def __init__(self, error: str | None = None, value: str = "") -> None:
        super().__init__()
        self.error = error
        self.value = value

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        with Vertical(id="start-box"):
            yield Static(
                "[b]Which folder should photodup look through?[/b]\n"
                "It finds exact copies, re-saved or resized copies, and similar shots. "
                "Nothing is deleted until you confirm, and everything goes to the trash "
                "(press [b]u[/b] to undo).",
                id="start-intro",
            )
            yield Label("Folder (enter scans it; → accepts the suggested name):")
            yield TextInput(
                value=self.value,
                placeholder="~/Pictures",
                suggester=FolderSuggester(),
                id="folder",
            )
            yield Static(self.error or "", id="start-error")
            recent = self.papp.ui.recent_roots
            if recent:
                yield Label("Recent folders (enter to scan):", id="recent-label")
                yield OptionList(*(Option(r, id=r) for r in recent), id="recent")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#folder", Input).focus()

    def action_focus_input(self) -> None:
        self.query_one("#folder", Input).focus()

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip() or "~/Pictures"
        await self._scan([value])

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id is not None:
            await self._scan([event.option.id])

    async def _scan(self, paths: list[str]) -> None:
        problem = await asyncio.to_thread(check_folders, paths)
        if problem is not None:
            self.query_one("#start-error", Static).update(problem)
            return
        self.papp.start_scan([os.path.abspath(os.path.expanduser(p)) for p in paths])
