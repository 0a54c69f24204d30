"""Widgets of the terminal UI, one per file, each with its own DEFAULT_CSS."""
