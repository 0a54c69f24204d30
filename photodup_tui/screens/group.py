"""One group, its photos side by side: choose the keeper, mark or unmark, open, dismiss."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, HorizontalScroll
from textual.geometry import Size
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from photodup_tui.engine.types import Action
from photodup_tui.formatting import display_path, human_size, plural
from photodup_tui.messages import GroupShownAgain
from photodup_tui.previews import open_in_viewer
from photodup_tui.review_state import Review
from photodup_tui.screens.base import AppScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.group_table import KIND_STYLE
from photodup_tui.widgets.member_card import MemberCard
from photodup_tui.widgets.metadata_table import MetadataTable

#: Below this size the photos do not fit side by side with their facts: one at a time.
COMPACT_WIDTH = 100
COMPACT_HEIGHT = 32


class GroupScreen(AppScreen):
    HELP = (
        "The photos of one group, side by side (one at a time on a small terminal: ←/→ "
        "flip through them). ★ is the copy that stays; ✗ marks copies that go to the trash "
        "when you press d (after a confirmation). Match says how each photo matches the "
        "keeper: exact (byte-identical), near (re-saved or resized) or similar (an edit). "
        "Yellow values differ from the keeper's. Choose a photo with ←/→, then k to keep it "
        "instead (remembered for later scans), or space to mark or unmark it."
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("left,h", "move(-1)", "Previous photo", show=False),
        Binding("right,l", "move(1)", "Next photo", show=False),
        Binding("space", "toggle_mark", "Mark/unmark"),
        Binding("k", "keep", "Keep this"),
        Binding("n", "not_duplicates", "Not duplicates"),
        Binding("o", "open_file", "Open"),
        Binding("d", "app.trash", "Trash marked"),
        Binding("right_square_bracket,pagedown", "group(1)", "Next"),
        Binding("left_square_bracket,pageup", "group(-1)", "Prev group", show=False),
    ]
    DEFAULT_CSS = """
    GroupScreen #group-title {
        height: 2;
        padding: 0 1;
    }
    GroupScreen #body {
        height: 1fr;
    }
    GroupScreen #cards {
        height: 1fr;
        min-height: 8;
    }
    /* A small terminal: one large preview beside the selected photo's facts. */
    GroupScreen.-compact #body {
        layout: horizontal;
    }
    GroupScreen.-compact #cards {
        width: 1fr;
        min-height: 0;
    }
    GroupScreen.-compact MemberCard {
        display: none;
    }
    GroupScreen.-compact MemberCard.-selected {
        display: block;
        min-width: 0;
    }
    GroupScreen.-compact #metadata {
        width: 40;
        height: 1fr;
        max-height: 100%;
    }
    GroupScreen #member-detail {
        height: 2;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, review: Review, order: Sequence[int], position: int, roots: Sequence[str]):
        super().__init__()
        self.review = review
        self.order = list(order)
        self.position = position
        self.roots = list(roots)
        self.selected = 0
        self._loading = asyncio.Lock()
        self._hidden_at: dict[int, int] = {}  # group index -> its position when hidden here

    @property
    def group_index(self) -> int:
        return self.order[self.position]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DaemonStatusLine()
        yield Static(id="group-title")
        with Container(id="body"):
            yield HorizontalScroll(id="cards")
            yield MetadataTable(self.roots, id="metadata")
        yield Static(id="member-detail")
        yield Footer(compact=True)  # many keys: the roomy footer would cut off "q Quit"

    def on_mount(self) -> None:
        self._fit(self.app.size)

    def on_resize(self, event: events.Resize) -> None:
        if self._fit(event.size):
            self._redraw()

    def _fit(self, size: Size) -> bool:
        """Choose the layout for this terminal size; True if it changed."""
        compact = size.width < COMPACT_WIDTH or size.height < COMPACT_HEIGHT
        changed = compact != self.compact
        self.set_class(compact, "-compact")
        return changed

    @property
    def compact(self) -> bool:
        return self.has_class("-compact")

    def last_seen(self) -> int | None:
        """The group on screen (the list puts its cursor there when this screen closes)."""
        return self.group_index if self.order else None

    async def on_screen_resume(self) -> None:
        # A batch or an undo may have changed this group (or emptied it) meanwhile.
        current = self.group_index
        self.order = [i for i in self.order if len(self.review.groups[i].members) >= 2]
        if not self.order:
            self.app.pop_screen()
            return
        self.position = self.order.index(current) if current in self.order else 0
        if not self._cards_match():
            await self._load_group()

    async def _load_group(self) -> None:
        async with self._loading:  # one reload at a time: cards must match the members
            group = self.review.groups[self.group_index]
            self.selected = group.keeper
            cards = self.query_one("#cards", HorizontalScroll)
            await cards.remove_children()
            await cards.mount_all(
                MemberCard(n, m, self.papp.previews, self.papp.options.preview)
                for n, m in enumerate(group.members, start=1)
            )
            self._redraw()

    def _cards_match(self) -> bool:
        cards = list(self.query(MemberCard))
        members = self.review.groups[self.group_index].members
        return len(cards) == len(members) and all(
            c.member is m for c, m in zip(cards, members, strict=True)
        )

    def _redraw(self) -> None:
        group = self.review.groups[self.group_index]
        if not self._cards_match():
            return  # the group changed under us; the reload under way draws it
        cards = list(self.query(MemberCard))
        self.selected = min(self.selected, len(group.members) - 1)
        marked = sum(m.action is Action.DELETE for m in group.members)
        self.query_one("#group-title", Static).update(
            Text.assemble(
                (f"Group {self.position + 1} of {len(self.order)}  ", "bold"),
                (group.kind.value, KIND_STYLE[group.kind]),
                f"  {plural(len(group.members), 'photo')} · {marked} marked · frees "
                f"{human_size(group.reclaimable)}\n",
                ("Why they match: ", "bold"),
                (group.reason, "dim"),
            )
        )
        relations = [self.review.relation(self.group_index, m) for m in group.members]
        flip = len(cards) if self.compact else None
        for number, card in enumerate(cards):
            card.show(
                relations[number],
                selected=number == self.selected,
                name=os.path.basename(card.member.photo.path),
                flip=flip,
            )
        self.query_one(MetadataTable).show(
            group, self.selected, relations, only_selected=self.compact
        )
        member = group.members[self.selected]
        self.query_one("#member-detail", Static).update(
            Text.assemble(
                (f"{self.selected + 1}: ", "bold"),
                display_path(member.photo.path, self.roots),
                "\n",
                (member.why or "", "green" if member is group.keeper_member else "dim"),
            )
        )
        if cards:
            self.query_one("#cards", HorizontalScroll).scroll_to_widget(
                cards[self.selected], animate=False
            )

    # ------------------------------------------------------------------ keys

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_move(self, step: int) -> None:
        count = len(self.review.groups[self.group_index].members)
        self.selected = (self.selected + step) % count
        self._redraw()

    async def action_group(self, step: int) -> None:
        position = self.position + step
        if not 0 <= position < len(self.order):
            self.notify("That was the last group." if step > 0 else "This is the first group.")
            return
        self.position = position
        await self._load_group()

    def action_toggle_mark(self) -> None:
        self.notify(self.review.toggle(self.group_index, self.selected), timeout=3)
        self._redraw()

    def action_keep(self) -> None:
        self.notify(self.papp.choose_keeper(self.group_index, self.selected), timeout=3)
        self._redraw()

    async def action_not_duplicates(self) -> None:
        index = self.group_index
        self.papp.not_duplicates(index)
        self._hidden_at[index] = self.position
        self.order.remove(index)
        if not self.order:
            self.app.pop_screen()
            return
        self.position = min(self.position, len(self.order) - 1)
        await self._load_group()

    async def on_group_shown_again(self, message: GroupShownAgain) -> None:
        """u right after n: the group comes back where it was, and is shown."""
        index = message.group_index
        if index not in self.order:
            position = self._hidden_at.pop(index, self.position)
            self.order.insert(min(position, len(self.order)), index)
        self.position = self.order.index(index)
        await self._load_group()

    def action_open_file(self) -> None:
        path = self.review.groups[self.group_index].members[self.selected].photo.path
        self.run_worker(lambda: open_in_viewer(path), thread=True, exit_on_error=False, name="open")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name == "open" and event.state is WorkerState.ERROR:
            self.notify(str(event.worker.error), title="Cannot open the file", severity="error")
