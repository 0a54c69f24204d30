"""The keys of the screen you were on, read from its live bindings (so it cannot go stale)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

#: App bindings Textual adds that a photodup user does not need spelled out.
_NOISE = {"ctrl+c", "ctrl+q", "ctrl+p", "tab", "shift+tab", "super+c"}
MOVING = "↑ ↓ (or j k) move through lists; enter opens; tab moves between fields"


def key_rows(screen: Screen[object]) -> list[tuple[str, str]]:
    """(keys, what they do) for the screen's and the app's described bindings: the screen's
    own first; widget-level keys (cursor movement) are summed up in one line instead."""
    by_action: dict[tuple[str, str], list[str]] = {}
    ordered = sorted(screen.active_bindings.items(), key=lambda item: item[1].node is not screen)
    for key, active in ordered:
        binding = active.binding
        if active.node not in (screen, screen.app) or not binding.description:
            continue
        if key in _NOISE:
            continue
        display = screen.app.get_key_display(binding.with_key(key))
        by_action.setdefault((binding.action, binding.description), []).append(display)
    rows = [(" / ".join(dict.fromkeys(keys)), desc) for (_a, desc), keys in by_action.items()]
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "Close help"),
    ]
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen #help-box {
        width: 84;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    HelpScreen #help-body {
        height: auto;
    }
    """

    def __init__(self, under: Screen[object]) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box") as box:
            box.border_title = "Keys (escape closes)"
            box.border_subtitle = "photodup"
            with VerticalScroll(id="help-body"):
                explanation = getattr(self.under, "HELP", "")
                if explanation:
                    yield Static(Text(explanation + "\n"))
                yield Static(Text(MOVING + "\n", style="dim"))
                table = Table.grid(padding=(0, 2))
                table.add_column(style="bold cyan", no_wrap=True, justify="right")
                table.add_column()
                for keys, description in key_rows(self.under):
                    table.add_row(keys, description)
                yield Static(table)
                yield Static(
                    Text(
                        "\nNothing is ever deleted outright: files go to the system trash, "
                        "and u brings the last batch back.",
                        style="dim",
                    )
                )
