"""The members of a group compared field by field; what differs from the keeper stands out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widgets import DataTable

from photodup_tui.engine.keeprules import dimensions, format_name
from photodup_tui.engine.types import Group, Photo
from photodup_tui.formatting import display_path, human_size
from photodup_tui.widgets.member_card import verdict

FIELDS: tuple[tuple[str, Callable[[Photo, Sequence[str]], str]], ...] = (
    ("Dimensions", lambda p, _r: dimensions(p)),
    ("File size", lambda p, _r: human_size(p.stat.size)),
    ("Format", lambda p, _r: format_name(p)),
    ("Taken", lambda p, _r: (p.taken or "no date").replace("T", " ")),
    ("Camera", lambda p, _r: p.camera or "–"),
    ("File name", lambda p, _r: os.path.basename(p.path)),
    ("Folder", lambda p, r: display_path(os.path.dirname(p.path), r) or "."),
)
DIFFERENT = "bold yellow"


class MetadataTable(DataTable[Text]):
    DEFAULT_CSS = """
    MetadataTable {
        height: auto;
        max-height: 12;
    }
    """

    def __init__(self, roots: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="column", show_cursor=True, zebra_stripes=False)
        self.roots = list(roots)
        self.can_focus = False

    def show(self, group: Group, selected: int) -> None:
        self.clear(columns=True)
        self.add_column("", key="field", width=11)
        for number, member in enumerate(group.members, start=1):
            star = " ★" if member is group.keeper_member else ""
            self.add_column(f"{number}{star}", key=str(number), width=28)
        keeper = group.keeper_member.photo
        verdicts = [verdict(m, m is group.keeper_member) for m in group.members]
        self.add_row(Text("Verdict", style="bold"), *verdicts)
        scores = [f"{group.scores.get(m.photo.path, 1.0):.3f}" for m in group.members]
        self.add_row(Text("Similarity", style="bold"), *(Text(s) for s in scores))
        for label, value_of in FIELDS:
            base = value_of(keeper, self.roots)
            cells = []
            for member in group.members:
                value = value_of(member.photo, self.roots)
                style = DIFFERENT if value != base else ""
                cells.append(Text(value, style=style, overflow="ellipsis", no_wrap=True))
            self.add_row(Text(label, style="bold"), *cells)
        self.move_cursor(column=selected + 1, animate=False)
