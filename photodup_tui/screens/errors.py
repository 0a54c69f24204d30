"""Files the scan could not read or decode, and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from photodup_tui.formatting import display_path, plural
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.virtual_table import Column, VirtualTable


class ErrorsScreen(Screen[None]):
    HELP = (
        "Files photodup could not read (permissions, vanished) or decode (damaged, not really "
        "an image). They are never chosen as keepers over good copies, and never trashed "
        "because they look like another photo."
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]
    DEFAULT_CSS = """
    ErrorsScreen #errors-title {
        height: auto;
        padding: 1 1 0 1;
    }
    ErrorsScreen VirtualTable {
        height: 1fr;
    }
    """

    def __init__(self, errors: Sequence[tuple[str, str]], roots: Sequence[str]) -> None:
        super().__init__()
        self.errors = list(errors)
        self.roots = list(roots)

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        title = (
            f"[b]{plural(len(self.errors), 'file')} could not be used[/b]"
            if self.errors
            else "[b]No errors:[/b] every file could be read."
        )
        yield Static(title, id="errors-title")
        yield VirtualTable([Column("file", "File", 60), Column("problem", "Problem")])
        yield Footer()

    def on_mount(self) -> None:
        rows = sorted(self.errors)

        def row(index: int) -> tuple[str, Text]:
            path, reason = rows[index]
            return display_path(path, self.roots), Text(reason, style="yellow")

        table = self.query_one(VirtualTable)
        table.set_rows(len(rows), row)
        table.focus()
