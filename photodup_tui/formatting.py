"""How numbers, paths and errors read on screen."""

from __future__ import annotations

import os
from collections.abc import Sequence

from photodupd.humanize import human_size

__all__ = ["display_path", "duration", "human_size", "plural", "short_path", "short_reason"]


def display_path(path: str, roots: Sequence[str] = ()) -> str:
    """Relative to the scan root that holds it (roots are what the user typed), else ``~/..``."""
    for root in sorted(roots, key=len, reverse=True):
        prefix = root.rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return path[len(prefix) :]
    home = os.path.expanduser("~").rstrip(os.sep) + os.sep
    if path.startswith(home):
        return "~" + os.sep + path[len(home) :]
    return path


def short_path(path: str, width: int) -> str:
    """The end of a path (the file name matters most), elided at the front to fit."""
    if len(path) <= width:
        return path
    return "…" + path[-(width - 1) :] if width > 1 else "…"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def short_reason(exc: BaseException) -> str:
    """An error in one line: its first line and, when the launcher appended photodupd's log
    to it, the log's last line, which says why (without the log's ``photodupd:`` prefix)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]} {lines[-1].removeprefix('photodupd: ')}"
