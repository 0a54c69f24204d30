"""What a trash is made of, for every trash backend: where a file can go, the entry it
became, the steps the journal hears about, and the refusal.

:mod:`photodup_tui.engine.safedelete.trash` (freedesktop.org) and
:mod:`photodup_tui.engine.safedelete.macos` (the system trash) both build on these; the
freedesktop module picks the macOS one on macOS, so the types live here, below both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

INFO_SUFFIX = ".trashinfo"


class TrashUnavailable(Exception):
    """No trash can take this file without copying it; the file stays where it is."""


@dataclass(frozen=True, slots=True)
class TrashLocation:
    trash_dir: str
    topdir: str | None  # None for the home trash: info files then hold absolute paths
    kind: str  # "home", "topdir" ($topdir/.Trash/$uid), "topdir-fallback" ($topdir/.Trash-$uid)


@dataclass(frozen=True, slots=True)
class TrashEntry:
    trash_dir: str
    name: str  # the name in files/; the info file is info/<name>.trashinfo
    original: str  # absolute path the file came from
    has_info: bool = True  # False only for the macOS system trash

    @property
    def files_path(self) -> str:
        if not self.has_info:  # macOS: the system put the file straight into trash_dir
            return os.path.join(self.trash_dir, self.name)
        return os.path.join(self.trash_dir, "files", self.name)

    @property
    def info_path(self) -> str:
        return os.path.join(self.trash_dir, "info", self.name + INFO_SUFFIX)


class TrashSteps(Protocol):
    """Where the journal hears about each step before the next one happens."""

    def trying(self, location: TrashLocation) -> None: ...
    def reserved(self, entry: TrashEntry) -> None: ...
    def released(self, entry: TrashEntry, reason: str) -> None: ...
