"""An Input whose cursor blinks unless the app says not to (stable snapshot tests)."""

from __future__ import annotations

from textual.widgets import Input


class TextInput(Input):
    DEFAULT_CSS = """
    TextInput {
        width: 1fr;
    }
    """

    def on_mount(self) -> None:
        self.cursor_blink = bool(getattr(self.app, "cursor_blink", True))
