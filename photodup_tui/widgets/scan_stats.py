"""Live scan numbers: what the engine has found, read and computed so far."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from photodup_tui.engine.scan import ScanProgress
from photodup_tui.formatting import display_path, duration, human_size, plural

PHASES = {
    "walking": "looking for photos",
    "hashing": "comparing file contents (exact copies)",
    "features": "looking at the pictures (near and similar copies)",
    "grouping": "grouping matches",
    "done": "done",
    "cancelled": "cancelled: everything read so far is kept in the cache",
}
#: What one item of a phase is, for "1,234 of 5,000 files hashed".
UNITS = {"walking": "found", "hashing": "read", "features": "looked at"}


def phase_line(progress: ScanProgress) -> str:
    """``comparing file contents (exact copies): reading possible copies in full``."""
    text = PHASES.get(progress.phase, progress.phase)
    return f"{text}: {progress.step}" if progress.step else text


def bar_label(progress: ScanProgress) -> str:
    """What the progress bar stands for: ``1,234 of 5,000 read · 0:42 left``."""
    unit = UNITS.get(progress.phase)
    if unit is None:
        return ""
    if progress.phase_total is None:
        return f"{progress.phase_done:,} {unit}"
    left = f" · {duration(progress.eta_seconds)} left" if progress.eta_seconds is not None else ""
    return f"{progress.phase_done:,} of {progress.phase_total:,} {unit}{left}"


def errors_text(count: int, running: bool) -> Text:
    if not count:
        return Text("none so far" if running else "none", style="dim")
    return Text(f"{plural(count, 'file')} unreadable or undecodable · e lists them", style="yellow")


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
        running = progress.phase not in ("done", "cancelled")
        rows: list[tuple[str, str | Text]] = [
            ("Now", phase_line(progress)),
            ("Photos found", f"{progress.files_found:,} ({human_size(progress.bytes_found)})"),
            ("Files hashed", f"{progress.hashed:,}"),
            ("Cache hits", f"{progress.cache_hits:,}"),
            ("Pictures read", f"{progress.embedded:,}  {feature_note}"),
            ("Speed", f"{progress.rate:,.0f} {rate_unit}" if progress.phase in UNITS else "–"),
            ("Time left", duration(progress.eta_seconds)),
            ("Errors", errors_text(progress.errors, running)),
            ("Folder", display_path(progress.current_dir, self.roots) or "–"),
        ]
        for label, value in rows:
            table.add_row(label, value)
        self.update(table)
