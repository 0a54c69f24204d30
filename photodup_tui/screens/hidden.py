"""The groups your answers hide ("not duplicates", "keep all"), and a key to take one back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from photodup_tui.engine.decisions import Decision
from photodup_tui.formatting import display_path, plural
from photodup_tui.messages import GroupShownAgain
from photodup_tui.review_state import Review
from photodup_tui.screens.base import AppScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.group_table import KIND_STYLE
from photodup_tui.widgets.virtual_table import Cell, Column, VirtualTable

ANSWERS = {Decision.NOT_DUPLICATES: "not duplicates", Decision.KEEP_ALL: "keep all"}
COLUMNS = (
    Column("kind", "Kind", 8),
    Column("files", "Files", 5),
    Column("answer", "Your answer", 15),
    Column("when", "Given", 12),
    Column("photos", "Photos"),
)


class HiddenScreen(AppScreen):
    HELP = (
        "Groups you said are not duplicates (or that you keep all of) are hidden, and "
        "photodup remembers that by the photos' content, so renamed or moved copies stay "
        "hidden in later scans too. enter (or space) shows a group again and forgets the "
        "answer."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter,space", "show_again", "Show again"),
    ]
    DEFAULT_CSS = """
    HiddenScreen #hidden-title {
        height: auto;
        padding: 1 1 0 1;
    }
    HiddenScreen VirtualTable {
        height: 1fr;
    }
    """

    def __init__(self, review: Review, roots: Sequence[str] = ()) -> None:
        super().__init__()
        self.review = review
        self.roots = list(roots)
        self.rows: list[int] = []  # group indices, the most recently hidden first
        self.elsewhere: int | None = None  # remembered answers about photos not shown here

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        yield Static(id="hidden-title")
        yield VirtualTable(COLUMNS)
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        self.query_one(VirtualTable).focus()
        book = self.papp.decision_book
        self.run_worker(book.count, thread=True, exit_on_error=False, name="count")

    def redraw(self) -> None:
        self.rows = self.review.hidden()
        table = self.query_one(VirtualTable)
        table.set_rows(len(self.rows), self._cells, cursor=table.cursor)
        self.query_one("#hidden-title", Static).update(self._title())

    def _cells(self, row: int) -> tuple[Cell, ...]:
        index = self.rows[row]
        group = self.review.groups[index]
        why = self.review.dismissed.get(index)
        names = ", ".join(display_path(m.photo.path, self.roots) for m in group.members)
        return (
            Text(group.kind.value, style=KIND_STYLE[group.kind]),
            str(len(group.members)),
            ANSWERS.get(why.decision, str(why.decision)) if why else "",
            "earlier" if why and why.earlier else "just now",
            names,
        )

    def _title(self) -> Text:
        count = len(self.rows)
        text = Text()
        if count:
            text.append(f"{plural(count, 'group')} hidden by your answers. ", "bold")
            text.append("enter or space shows one again, and photodup forgets that answer.")
        else:
            text.append("No hidden groups in this scan.", "bold")
        if self.elsewhere:
            text.append(
                f"\nphotodup also remembers {plural(self.elsewhere, 'answer')} about photos "
                "outside this scan; they stay hidden there.",
                "dim",
            )
        return text

    def action_show_again(self) -> None:
        table = self.query_one(VirtualTable)
        if not self.rows:
            return
        self.papp.show_again(self.rows[table.cursor])

    def on_virtual_table_selected(self, event: VirtualTable.Selected) -> None:
        self.action_show_again()  # enter on a row (the table's own enter key)

    def on_group_shown_again(self, message: GroupShownAgain) -> None:
        self.redraw()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name == "count" and event.state is WorkerState.SUCCESS:
            remembered = cast(int, event.worker.result)
            self.elsewhere = max(0, remembered - len(self.review.hidden()))
            self.query_one("#hidden-title", Static).update(self._title())
