"""What the terminal UI remembers between runs, and writing settings back to config.toml.

The UI owns the ``[ui]`` table; the settings screen also edits keys of ``[scan]`` (read by
``engine.settings``) and ``[daemon]`` (read by ``photodupd.config``).  Writes change only the
keys they name: every other table and key stays as it was.  tomli-w cannot keep comments, so
before the first rewrite of a file that has any, the original is copied to ``config.toml.bak``.

``[ui]`` keys::

    recent_roots = ["/home/me/Pictures"]   # newest first, at most MAX_RECENT
    use_model = true                       # false: perceptual hashes only, no daemon
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tomli_w

from photodup_tui.engine.atomic import write_atomically
from photodupd import config, paths

MAX_RECENT = 10


class UiSettingsError(Exception):
    """The config file cannot be read or written; the message says which and why."""


@dataclass(frozen=True, slots=True)
class UiSettings:
    recent_roots: tuple[str, ...] = ()
    use_model: bool = True

    def with_recent(self, roots: Sequence[str]) -> UiSettings:
        """These roots first (newest scan), then the older ones, without repeats."""
        fresh = [os.path.abspath(os.path.expanduser(r)) for r in roots]
        merged = list(dict.fromkeys([*fresh, *self.recent_roots]))
        return replace(self, recent_roots=tuple(merged[:MAX_RECENT]))


def read_config(config_file: Path | None = None) -> dict[str, Any]:
    """The whole config document; an absent file is an empty one."""
    try:
        return config.read_document(config_file or paths.config_file(), required=False)
    except config.ConfigError as exc:
        raise UiSettingsError(str(exc)) from None


def load(config_file: Path | None = None) -> UiSettings:
    """The ``[ui]`` table; unknown or mistyped keys are ignored (the UI must always start)."""
    table = read_config(config_file).get("ui", {})
    if not isinstance(table, dict):
        return UiSettings()
    recent = table.get("recent_roots", [])
    use_model = table.get("use_model", True)
    return UiSettings(
        recent_roots=tuple(r for r in recent if isinstance(r, str))[:MAX_RECENT]
        if isinstance(recent, list)
        else (),
        use_model=use_model if isinstance(use_model, bool) else True,
    )


def save(settings: UiSettings, config_file: Path | None = None) -> None:
    update_tables(
        {"ui": {"recent_roots": list(settings.recent_roots), "use_model": settings.use_model}},
        config_file,
    )


def update_tables(
    updates: Mapping[str, Mapping[str, Any]],
    config_file: Path | None = None,
    *,
    remove: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Set (or, with ``remove``, delete) keys in the named tables and write the file atomically.

    Nested tables given as values (``{"scan": {"thresholds": {...}}}``) are merged one level
    deep, so saving one model's thresholds keeps another's.
    """
    path = config_file or paths.config_file()
    document = read_config(path)
    for table_name, values in updates.items():
        table = document.setdefault(table_name, {})
        if not isinstance(table, dict):
            raise UiSettingsError(f"{path}: [{table_name}] is not a table; fix it by hand")
        for key, value in values.items():
            if isinstance(value, Mapping) and isinstance(table.get(key), dict):
                table[key] = {**table[key], **value}
            else:
                table[key] = value
    for table_name, keys in (remove or {}).items():
        table = document.get(table_name)
        if isinstance(table, dict):
            for key in keys:
                table.pop(key, None)
    _write_atomically(path, tomli_w.dumps(document).encode())


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _keep_commented_original(path)
        write_atomically(path, data)
    except OSError as exc:
        raise UiSettingsError(f"cannot write {path}: {exc.strerror or exc}") from None


def _keep_commented_original(path: Path) -> None:
    """tomli-w drops comments: keep the hand-written file beside the new one, once."""
    backup = path.with_name(path.name + ".bak")
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return
    has_comment = any(line.lstrip().startswith("#") for line in text.splitlines())
    if has_comment and not backup.exists():
        shutil.copy2(path, backup)
