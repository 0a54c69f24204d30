"""The list of duplicate groups: kind, files, what is marked, what it frees, the keeper."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from photodup_tui.engine.types import Action, Group, Kind
from photodup_tui.formatting import display_path, human_size
from photodup_tui.widgets.virtual_table import Cell, Column, VirtualTable

KIND_STYLE = {Kind.EXACT: "bold green", Kind.NEAR: "bold cyan", Kind.SIMILAR: "bold magenta"}
COLUMNS = (
    Column("kind", "Kind", 8),
    Column("files", "Files", 7),  # room for the sort arrow: "Files ▼", never "File…"
    Column("marked", "Marked", 6),
    Column("reclaim", "Frees", 9),
    Column("keeper", "Keeper (kept copy)"),
    Column("reason", "Why they match"),
)
SORT_ARROWS = {"kind": " ▲", "files": " ▼", "reclaim": " ▼", "keeper": " ▲"}


class GroupTable(VirtualTable):
    """One row per shown group; rows are drawn from the groups when they come on screen."""

    DEFAULT_CSS = """
    GroupTable {
        height: 1fr;
    }
    """

    def __init__(self, roots: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(COLUMNS, id=id)
        self.roots = list(roots)
        self._groups: Sequence[Group] = ()
        self._order: list[int] = []

    def show(
        self,
        groups: Sequence[Group],
        order: Sequence[int],
        sorted_by: str = "",
        cursor_on: int | None = None,
    ) -> None:
        """Show ``groups[i] for i in order``; the cursor goes to ``cursor_on`` if shown, else
        stays on the same group if shown.  ``sorted_by`` names the column the order follows;
        its header gets an arrow."""
        current = self.current_group()
        self._groups, self._order = groups, list(order)
        arrows = {sorted_by: SORT_ARROWS.get(sorted_by, "")}
        self.set_columns([Column(c.key, c.label + arrows.get(c.key, ""), c.width) for c in COLUMNS])
        position = 0
        for wanted in (cursor_on, current):
            if wanted is not None and wanted in self._order:
                position = self._order.index(wanted)
                break
        self.set_rows(len(self._order), self._cells, cursor=position)

    def current_group(self) -> int | None:
        if not self._order or not 0 <= self.cursor < len(self._order):
            return None
        return self._order[self.cursor]

    def _cells(self, row: int) -> tuple[Cell, ...]:
        group = self._groups[self._order[row]]
        marked = sum(m.action is Action.DELETE for m in group.members)
        return (
            Text(group.kind.value, style=KIND_STYLE[group.kind]),
            str(len(group.members)),
            Text(str(marked), style="bold red" if marked else "dim"),
            human_size(group.reclaimable) if group.reclaimable else "–",
            display_path(group.keeper_member.photo.path, self.roots),
            Text(group.reason, style="dim"),
        )
