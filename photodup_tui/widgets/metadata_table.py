"""The members of a group compared field by field; what differs from the keeper stands out."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widgets import DataTable

from photodup_tui.engine.keeprules import dimensions, format_name
from photodup_tui.engine.types import Group, Kind, Photo
from photodup_tui.formatting import display_path, human_size
from photodup_tui.widgets.member_card import match_words, verdict

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

    def show(
        self,
        group: Group,
        selected: int,
        relations: Sequence[Kind | None],
        only_selected: bool = False,
    ) -> None:
        """Every member side by side, or (``only_selected``: a small terminal) the selected
        one alone, its values that differ from the keeper's still marked.  ``relations``:
        each member's own match to the keeper (None for the keeper)."""
        self.clear(columns=True)
        self.add_column("", key="field", width=11)
        numbered = list(enumerate(group.members))
        if only_selected:
            numbered = [numbered[selected]]
        for index, member in numbered:
            star = " ★" if member is group.keeper_member else ""
            width = 24 if only_selected else 28
            self.add_column(f"{index + 1}{star}", key=str(index + 1), width=width)
        keeper = group.keeper_member.photo
        members = [member for _index, member in numbered]
        verdicts = [verdict(m, m is group.keeper_member) for m in members]
        self.add_row(Text("Verdict", style="bold"), *verdicts)
        self.add_row(Text("Match", style="bold"), *(match_words(relations[i]) for i, _ in numbered))
        scores = [f"{group.scores.get(m.photo.path, 1.0):.3f}" for m in members]
        self.add_row(Text("Similarity", style="bold"), *(Text(s) for s in scores))
        for label, value_of in FIELDS:
            base = value_of(keeper, self.roots)
            cells = []
            for member in members:
                value = value_of(member.photo, self.roots)
                style = DIFFERENT if value != base else ""
                cells.append(Text(value, style=style, overflow="ellipsis", no_wrap=True))
            self.add_row(Text(label, style="bold"), *cells)
        self.move_cursor(column=1 if only_selected else selected + 1, animate=False)
