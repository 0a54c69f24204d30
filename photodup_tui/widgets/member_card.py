"""One member of a group: its preview and whether it stays or goes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from photodup_tui.engine.types import Action, Member
from photodup_tui.widgets.preview import Preview, Renderer
from photodup_tui.workers import PreviewCache


def verdict(member: Member, keeper: bool) -> Text:
    if keeper:
        return Text("★ KEEP", style="bold green")
    if member.action is Action.DELETE:
        return Text("✗ TO TRASH", style="bold red")
    return Text("· kept (unmarked)", style="dim")


class MemberCard(Vertical):
    DEFAULT_CSS = """
    MemberCard {
        width: 1fr;
        min-width: 30;
        height: 1fr;
        border: round $panel-lighten-2;
        padding: 0 1;
    }
    MemberCard.-selected {
        border: heavy $accent;
    }
    MemberCard.-keeper {
        border-title-color: $success;
    }
    MemberCard.-marked {
        border-title-color: $error;
    }
    MemberCard > .card-caption {
        height: 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(
        self, number: int, member: Member, cache: PreviewCache, renderer: Renderer
    ) -> None:
        super().__init__()
        self.number = number
        self.member = member
        self._preview = Preview(member.photo.path, cache, renderer)
        self._caption = Static(classes="card-caption")

    def compose(self) -> ComposeResult:
        yield self._preview
        yield self._caption

    def show(self, keeper: bool, selected: bool, name: str) -> None:
        self.border_title = f"{self.number}"
        self.border_subtitle = name
        self.set_class(selected, "-selected")
        self.set_class(keeper, "-keeper")
        self.set_class(self.member.action is Action.DELETE, "-marked")
        self._caption.update(Text.assemble(f"{self.number} ", verdict(self.member, keeper)))
