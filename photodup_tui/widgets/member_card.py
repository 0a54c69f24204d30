"""One member of a group: its preview and whether it stays or goes."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from photodup_tui.engine.types import Action, Kind, Member
from photodup_tui.previews import PreviewCache
from photodup_tui.widgets.preview import Preview, Renderer

#: A member's own match to the keeper, in a word or two: a byte-identical copy inside a
#: near group says so, whatever the group's kind.
MATCH_WORDS = {
    Kind.EXACT: ("exact: byte-identical", "bold green"),
    Kind.NEAR: ("near: re-saved/resized", "bold cyan"),
    Kind.SIMILAR: ("similar: an edit apart", "bold magenta"),
}


def verdict(member: Member, keeper: bool) -> Text:
    if keeper:
        return Text("★ KEEP", style="bold green")
    if member.action is Action.DELETE:
        return Text("✗ TO TRASH", style="bold red")
    return Text("· kept (unmarked)", style="dim")


def match_words(relation: Kind | None, short: bool = False) -> Text:
    """``relation``: the member's match to the keeper (None: it is the keeper)."""
    if relation is None:
        return Text("the keeper", style="dim")
    words, style = MATCH_WORDS[relation]
    return Text(relation.value if short else words, style=style)


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

    def show(
        self, relation: Kind | None, selected: bool, name: str, flip: int | None = None
    ) -> None:
        """``relation`` to the keeper (None: this is the keeper); ``flip``: how many photos
        there are, when only this one is on screen and ← → flip through them."""
        keeper = relation is None
        self.border_title = f"← {self.number} of {flip} →" if flip is not None else f"{self.number}"
        self.border_subtitle = name
        self.set_class(selected, "-selected")
        self.set_class(keeper, "-keeper")
        self.set_class(self.member.action is Action.DELETE, "-marked")
        caption = Text.assemble(f"{self.number} ", verdict(self.member, keeper))
        if not keeper:
            caption.append(" · ")
            caption.append_text(match_words(relation, short=True))
        self._caption.update(caption)
