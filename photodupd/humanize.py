"""How byte counts read for people: one spelling for ``photodup-ctl`` and for photodup."""

from __future__ import annotations


def human_size(size: float) -> str:
    """Decimal units, as file managers count them: ``512 B``, ``3.4 MB``, ``1.2 TB``."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover
