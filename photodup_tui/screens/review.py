"""All groups at a glance: what matches, what is marked, what it frees; sort, filter, act."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header, Input, Static

from photodup_tui.engine.scan import ScanResult
from photodup_tui.engine.types import Kind
from photodup_tui.formatting import display_path, human_size, plural
from photodup_tui.messages import GroupShownAgain
from photodup_tui.review_state import Review, SortKey
from photodup_tui.screens.base import AppScreen
from photodup_tui.screens.errors import ErrorsScreen
from photodup_tui.screens.group import GroupScreen
from photodup_tui.screens.hidden import HiddenScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.group_table import GroupTable
from photodup_tui.widgets.text_input import TextInput

SORT_COLUMN = {
    SortKey.RECLAIMABLE: "reclaim",
    SortKey.KIND: "kind",
    SortKey.FILES: "files",
    SortKey.PATH: "keeper",
}


class ReviewScreen(AppScreen):
    HELP = (
        "Each row is a group of photos that match. exact = byte-identical copies; near = the "
        "same picture re-saved, resized or re-tagged; similar = edits (crops, borders, mirrors, "
        "brightened or grayscale copies), shown beside their original, never marked for you. In exact and near groups the keep rules chose one copy to "
        "keep and marked the others; open a group to see them side by side and change that. "
        "d moves every marked file to the trash after you confirm; u puts them back. n hides "
        "a group for good (remembered by content); u right after, or h, brings it back."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_group", "Open group"),
        Binding("a", "apply_rules", "Keep rules"),
        Binding("d", "app.trash", "Trash marked"),
        Binding("n", "not_duplicates", "Not duplicates"),
        Binding("s", "sort", "Sort"),
        Binding("slash", "filter", "Filter"),
        Binding("e", "errors", "Errors"),
        Binding("h", "hidden", "Hidden"),
        Binding("x", "unmark_all", "Unmark all", show=False),
        Binding("r", "rescan", "Rescan", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]
    #: Focus is placed by hand (the table, or nothing while it is hidden): Textual's own
    #: choice would be the filter box, and keys meant for the list would be typed there.
    AUTO_FOCUS = ""
    DEFAULT_CSS = """
    ReviewScreen #summary {
        height: auto;
        padding: 0 1;
    }
    ReviewScreen .banner {
        height: auto;
        padding: 0 1;
        color: $warning;
    }
    ReviewScreen #filter {
        display: none;
    }
    ReviewScreen #filter.-shown {
        display: block;
    }
    ReviewScreen #empty {
        padding: 2 4;
        height: 1fr;
    }
    ReviewScreen #detail {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, result: ScanResult, review: Review) -> None:
        super().__init__()
        self.result = result
        self.review = review
        self.sort = SortKey.RECLAIMABLE
        self.filter_text = ""
        self._group_screen: GroupScreen | None = None  # the group view opened from here

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        yield Static(id="summary")
        for line in self._banners():
            yield Static(line, classes="banner")
        yield TextInput(
            placeholder="filter: part of a path, or exact / near / similar", id="filter"
        )
        yield GroupTable(self.result.roots, id="groups")
        yield Static(id="empty")
        yield Static(id="detail")
        yield Footer(compact=True)  # many keys: the roomy footer would cut off "q Quit"

    def on_mount(self) -> None:
        self.refresh_all()
        self.query_one(GroupTable).focus()

    def on_screen_resume(self) -> None:
        # Back from a group (] and [ move through them): the cursor goes to the group the
        # user looked at last, not the one they opened.
        viewed, self._group_screen = self._group_screen, None
        self.refresh_all(cursor_on=viewed.last_seen() if viewed is not None else None)

    # ------------------------------------------------------------------ drawing

    def refresh_all(self, cursor_on: int | None = None) -> None:
        """Redraw from the review; ``cursor_on``: the group to put the cursor on, if shown."""
        order = self.review.visible(self.sort, self.filter_text)
        table = self.query_one(GroupTable)
        table.show(self.review.groups, order, SORT_COLUMN[self.sort], cursor_on=cursor_on)
        empty = self.query_one("#empty", Static)
        empty.display = not order
        if not order and self.focused is table:
            # Hiding the table would hand its focus to the next widget, the filter box, and
            # the next key (u, which the toast suggests) would be typed into the filter.
            self.set_focus(None)
        table.display = bool(order)
        if order and self.focused is None:
            table.focus()
        if not order:
            empty.update(self._empty_text())
        self._show_summary()
        self._show_detail()

    def _show_summary(self) -> None:
        kinds = self.review.kinds()  # kept up to date by the review: no walk over the groups
        shown = sum(kinds.values())
        marked = self.review.marked()
        counts = self.result.counts
        where = ", ".join(display_path(r) for r in self.result.roots)
        text = Text.assemble(
            (plural(shown, "group"), "bold"),
            f": {kinds[Kind.EXACT]} exact · {kinds[Kind.NEAR]} near · {kinds[Kind.SIMILAR]} "
            f"similar, among {plural(counts.files, 'photo')} in {where}",
        )
        if self.result.errors:
            text.append(f" · {plural(len(self.result.errors), 'file')} unreadable (e)", "yellow")
        if self.review.dismissed:
            text.append(f" · {len(self.review.dismissed):,} hidden (h)", "dim")
        if not shown:
            self.query_one("#summary", Static).update(text)
            return
        text.append("\n")
        if marked.files:
            text.append(
                f"Marked for the trash: {plural(marked.files, 'file')}, {human_size(marked.bytes)}",
                "bold red",
            )
            text.append(" · d to review and trash them · similar groups are never marked for you")
        else:
            text.append("Nothing marked. a marks the extra copies in exact and near groups.")
        self.query_one("#summary", Static).update(text)

    def _show_detail(self) -> None:
        index = self.query_one(GroupTable).current_group()
        detail = self.query_one("#detail", Static)
        if index is None:
            detail.update("")
            return
        group = self.review.groups[index]
        keeper = group.keeper_member
        detail.update(
            Text.assemble(
                ("Keeps ", "bold"),
                display_path(keeper.photo.path, self.result.roots),
                (f"  {keeper.why}\n", "green"),
                ("Match: ", "bold"),
                (group.reason, "dim"),
            )
        )

    def _banners(self) -> list[str]:
        lines = []
        if self.result.cancelled:
            lines.append(
                "The scan was stopped early: these groups come from the files read so far. "
                "r scans again (fast: the cache remembers what was read)."
            )
        if self.papp.fallback_reason:
            lines.append(
                f"Scanned without a model ({self.papp.fallback_reason}): similar shots are not "
                "found, exact and near copies are."
            )
        lines.extend(f"Warning: {w}" for w in self.result.warnings)
        return lines

    def _empty_text(self) -> str:
        if self.filter_text:
            return f"No group matches the filter {self.filter_text!r}. escape clears it."
        found = plural(self.result.counts.files, "photo")
        return (
            f"[b]No duplicates left.[/b]\n\nphotodup looked at {found} and found no other "
            "copies to review. r scans again; q quits."
        )

    # ------------------------------------------------------------------ events

    def on_virtual_table_highlighted(self, event: GroupTable.Highlighted) -> None:
        self._show_detail()

    def on_virtual_table_selected(self, event: GroupTable.Selected) -> None:
        self.action_open_group()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self.refresh_all()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(GroupTable).focus()

    # ------------------------------------------------------------------ keys

    def action_open_group(self) -> None:
        index = self.query_one(GroupTable).current_group()
        if index is None:
            return
        order = self.review.visible(self.sort, self.filter_text)
        self._group_screen = GroupScreen(self.review, order, order.index(index), self.result.roots)
        self.app.push_screen(self._group_screen)

    def action_apply_rules(self) -> None:
        marked = self.review.apply_rules()
        self.refresh_all()
        self.notify(
            f"The keep rules marked {plural(marked, 'file')} in exact and near groups. "
            "Similar groups were left alone."
        )

    def action_unmark_all(self) -> None:
        self.review.unmark_all()
        self.refresh_all()
        self.notify("Nothing is marked now.")

    def action_not_duplicates(self) -> None:
        index = self.query_one(GroupTable).current_group()
        if index is None:
            return
        self.papp.not_duplicates(index)
        self.refresh_all()

    def on_group_shown_again(self, message: GroupShownAgain) -> None:
        self.refresh_all(cursor_on=message.group_index)

    def action_hidden(self) -> None:
        self.app.push_screen(HiddenScreen(self.review, self.result.roots))

    def action_sort(self) -> None:
        self.sort = self.sort.next()
        self.refresh_all()
        self.notify(f"Sorted by {self.sort.value}.", timeout=2)

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("-shown")
        self.query_one(GroupTable).focus()

    def action_errors(self) -> None:
        self.app.push_screen(ErrorsScreen(self.result.errors, self.result.roots))

    def action_rescan(self) -> None:
        self.papp.start_scan(self.result.roots)
