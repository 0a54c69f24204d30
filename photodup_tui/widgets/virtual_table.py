"""A table that draws only the rows on screen, so 100,000 rows cost what 40 do.

Textual's DataTable measures and stores every cell up front, which takes seconds for tens of
thousands of rows and again on every re-sort.  Here rows are produced on demand by a
function (Textual's line API): replacing, sorting or filtering the rows is O(1) for the widget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = str | Text
RowFunction = Callable[[int], Sequence[Cell]]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    width: int | None = None  # None: a share of what fixed columns leave (at least MIN_FLEX)


MIN_FLEX = 20


class VirtualTable(ScrollView, can_focus=True):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtual-table--header",
        "virtual-table--cursor",
        "virtual-table--odd",
    }
    DEFAULT_CSS = """
    VirtualTable {
        height: 1fr;
        background: $surface;
    }
    VirtualTable > .virtual-table--header {
        background: $panel;
        text-style: bold;
    }
    VirtualTable > .virtual-table--cursor {
        background: $block-cursor-blurred-background;
    }
    VirtualTable:focus > .virtual-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    VirtualTable > .virtual-table--odd {
        background: $surface-lighten-1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "move(-1)", "Up", show=False),
        Binding("down,j", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]

    cursor: reactive[int] = reactive(0, init=False)

    class Highlighted(Message):
        def __init__(self, table: VirtualTable, row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

    class Selected(Message):
        def __init__(self, table: VirtualTable, row: int) -> None:
            super().__init__()
            self.table = table
            self.row = row

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self.row_count = 0
        self._row: RowFunction = lambda _index: ()

    # ------------------------------------------------------------------ content

    def set_rows(self, count: int, row: RowFunction, cursor: int = 0) -> None:
        """Show ``count`` rows, row ``i`` given by ``row(i)``; nothing is computed yet."""
        self.row_count, self._row = count, row
        self.virtual_size = Size(self.size.width, count + 1)  # + the header line
        self.set_reactive(VirtualTable.cursor, max(0, min(cursor, count - 1)))
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self, self.cursor))

    def set_columns(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, self.row_count + 1)

    # ------------------------------------------------------------------ drawing

    def _widths(self) -> list[int]:
        fixed = sum(c.width or 0 for c in self.columns) + 2 * len(self.columns)
        flexible = sum(c.width is None for c in self.columns) or 1
        flex = max(MIN_FLEX, (self.size.width - fixed - 1) // flexible)
        return [c.width if c.width is not None else flex for c in self.columns]

    def _strip(self, cells: Sequence[Cell], base: Style) -> Strip:
        segments: list[Segment] = []
        console = self.app.console
        for cell, width in zip(cells, self._widths(), strict=False):
            # Text.render keeps spans only: append_text turns the cell's own style into one.
            text = Text()
            if isinstance(cell, Text):
                text.append_text(cell)
            else:
                text.append(cell)
            text.truncate(width, overflow="ellipsis", pad=True)
            segments.append(Segment(" "))
            segments.extend(text.render(console))
            segments.append(Segment(" "))
        strip = Strip(segments).apply_style(base)
        return strip.adjust_cell_length(self.size.width, base)

    def render_line(self, y: int) -> Strip:
        if y == 0:
            header = self.get_component_rich_style("virtual-table--header")
            return self._strip([c.label for c in self.columns], header)
        index = self.scroll_offset.y + y - 1
        if index >= self.row_count:
            return Strip.blank(self.size.width, self.rich_style)
        if index == self.cursor:
            style = self.get_component_rich_style("virtual-table--cursor")
        elif index % 2:
            style = self.get_component_rich_style("virtual-table--odd")
        else:
            style = self.rich_style
        return self._strip(self._row(index), style)

    # ------------------------------------------------------------------ cursor

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self, new))

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = self.scroll_offset.y
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False)

    def action_move(self, step: int) -> None:
        if self.row_count:
            self.cursor = max(0, min(self.row_count - 1, self.cursor + step))

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 2))

    def action_jump(self, row: int) -> None:
        if self.row_count:
            self.cursor = row % self.row_count

    def action_select(self) -> None:
        if self.row_count:
            self.post_message(self.Selected(self, self.cursor))

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= index < self.row_count:
            self.cursor = index
            if event.chain >= 2:
                self.action_select()
