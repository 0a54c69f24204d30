"""Files the scan could not read or decode, and why: during the scan (the list grows as the
scan finds more) and after it."""

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
        "because they look like another photo. While a scan runs the list grows as it finds "
        "more; the scan goes on meanwhile."
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

    def __init__(
        self, errors: Sequence[tuple[str, str]], roots: Sequence[str], *, live: bool = False
    ) -> None:
        """``live``: the scan still runs; :meth:`update_errors` brings newer lists."""
        super().__init__()
        self.roots = list(roots)
        self.live = live
        self.errors: list[tuple[str, str]] = []
        self._given = list(errors)  # shown once the widgets exist
        self._ready = False  # the table exists (set in on_mount, before is_mounted is)
        self._drawn = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        yield Static(id="errors-title")
        yield VirtualTable([Column("file", "File", 60), Column("problem", "Problem")])
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self.update_errors(self._given, live=self.live)
        self.query_one(VirtualTable).focus()

    def update_errors(self, errors: Sequence[tuple[str, str]], *, live: bool) -> None:
        """Show this list.  While the scan runs, rows keep the order files were found in (new
        ones at the end, so the row under the cursor stays put); afterwards, sorted by path."""
        if not self._ready:
            self._given, self.live = list(errors), live
            return
        if self._drawn and len(errors) == len(self.errors) and live == self.live:
            return  # nothing new: the rows on screen are right
        self._drawn, self.live = True, live
        rows = list(errors) if live else sorted(errors)
        self.errors = rows

        def row(index: int) -> tuple[str, Text]:
            path, reason = rows[index]
            return display_path(path, self.roots), Text(reason, style="yellow")

        table = self.query_one(VirtualTable)
        table.set_rows(len(rows), row, cursor=table.cursor)
        self.query_one("#errors-title", Static).update(self._title())

    def _title(self) -> str:
        count = len(self.errors)
        if self.live:
            found = plural(count, "file") if count else "No file"
            return (
                f"[b]{found} could not be used so far.[/b] The scan goes on; this list grows "
                "as it finds more."
            )
        if not count:
            return "[b]No errors:[/b] every file could be read."
        return f"[b]{plural(count, 'file')} could not be used[/b]"
