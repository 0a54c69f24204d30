"""Live scan numbers: what the engine has found, read and computed so far."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from photodup_tui.engine.scan import ScanProgress
from photodup_tui.formatting import display_path, duration, human_size

PHASES = {
    "walking": "looking for photos",
    "hashing": "comparing file contents (exact copies)",
    "features": "looking at the pictures (near and similar copies)",
    "grouping": "grouping matches",
    "done": "done",
    "cancelled": "cancelled: everything read so far is kept in the cache",
}


class ScanStats(Static):
    DEFAULT_CSS = """
    ScanStats {
        height: auto;
        padding: 1 2;
        border: round $primary;
    }
    """

    def __init__(self, roots: Sequence[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.roots = list(roots)
        self.border_title = "Scan"
        self.shown: ScanProgress | None = None  # what the widget shows now

    def show(self, progress: ScanProgress, feature_note: str) -> None:
        self.shown = progress
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        rate_unit = "files/s" if progress.phase != "features" else "images/s"
        rows: list[tuple[str, str | Text]] = [
            ("Now", PHASES.get(progress.phase, progress.phase)),
            ("Photos found", f"{progress.files_found:,} ({human_size(progress.bytes_found)})"),
            ("Files hashed", f"{progress.hashed:,}"),
            ("Cache hits", f"{progress.cache_hits:,}"),
            ("Pictures read", f"{progress.embedded:,}  {feature_note}"),
            ("Speed", f"{progress.rate:,.0f} {rate_unit}"),
            ("Time left", duration(progress.eta_seconds)),
            (
                "Errors",
                Text(
                    f"{progress.errors:,} unreadable or undecodable (listed after the scan: e)",
                    style="yellow" if progress.errors else "",
                ),
            ),
            ("Folder", display_path(progress.current_dir, self.roots) or "–"),
        ]
        for label, value in rows:
            table.add_row(label, value)
        self.update(table)
