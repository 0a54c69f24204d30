"""Find the photo files under some roots, each file once (rules 2, 3, 11, 14).

* ``lstat`` only: a symlink (to a file or a directory) is never followed or reported.  A root
  named on the command line may itself be a symlink to a folder; the user asked for it.
* Each directory is entered once, by ``(st_dev, st_ino)``: symlink loops, bind mounts and
  repeated or overlapping roots cannot make us walk a tree twice.
* Each file is reported once, by ``(st_dev, st_ino)``: the first path that reaches a hard-linked
  file is its only path.  Reference folders are walked first so their spelling wins.
* Trash folders (``.Trash``, ``.Trash-1000``, ``.Trashes``, ``$RECYCLE.BIN``, the XDG home
  trash) are never entered, whatever the other options say.
* ``exclude`` globs: a pattern without ``/`` matches a file or folder name (``node_modules``,
  ``*.thumb.jpg``); a pattern with ``/`` matches the whole path, ``*`` spanning ``/``
  (``*/Backups/*``).  Matching is case-sensitive.
* Hidden files and folders (name starts with ``.``) are skipped unless ``include_hidden``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import FileStat, Photo
from photodupd.imagebase import IMAGE_EXTENSIONS, RAW_EXTENSIONS, has_raw_suffix

#: The walker offers what the decoder's one table of names lists.
__all__ = ["IMAGE_EXTENSIONS", "RAW_EXTENSIONS", "Walker", "has_raw_suffix", "is_trash_name"]

_TRASH_NAME = re.compile(r"^(\.Trash(-\d+)?|\.Trashes|\$RECYCLE\.BIN|RECYCLER)$", re.IGNORECASE)


def is_trash_name(name: str) -> bool:
    return _TRASH_NAME.match(name) is not None


@dataclass
class WalkStats:
    """Running totals, read by the progress reporter while the walk goes on."""

    dirs: int = 0
    files_found: int = 0
    bytes_found: int = 0
    symlinks_skipped: int = 0
    aliases_skipped: int = 0  # hard links, repeated or overlapping roots
    trash_skipped: int = 0
    current_dir: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)


class Walker:
    def __init__(self, settings: ScanSettings) -> None:
        self.settings = settings
        self.stats = WalkStats()
        self._extensions = IMAGE_EXTENSIONS | (RAW_EXTENSIONS if settings.raw else frozenset())
        self._name_globs = [p for p in settings.exclude if "/" not in p]
        self._path_globs = [p for p in settings.exclude if "/" in p]
        self._seen_dirs: set[tuple[int, int]] = set()
        self._seen_files: set[tuple[int, int]] = set()
        self._trash_dirs = _home_trash_identity()

    def walk(self, roots: Iterable[str], cancel: threading.Event | None = None) -> Iterator[Photo]:
        """Yield each photo file once; reference folders are walked (and win) first."""
        references = [_normalise(r) for r in self.settings.reference_folders]
        reference_ids = {ident for r in references if (ident := _dir_identity(r)) is not None}
        ordered = references + [_normalise(r) for r in roots]
        for root in ordered:
            if cancel is not None and cancel.is_set():
                return
            yield from self._walk_root(root, reference_ids, cancel)

    def _walk_root(
        self, root: str, reference_ids: set[tuple[int, int]], cancel: threading.Event | None
    ) -> Iterator[Photo]:
        try:
            st = os.lstat(root)
            if stat.S_ISLNK(st.st_mode):
                # A root the user named may be a symlink to a folder (we follow that one
                # link); a symlink to a file is never a keeper or a victim (rule 3).
                st = os.stat(root)
                if not stat.S_ISDIR(st.st_mode):
                    self.stats.symlinks_skipped += 1
                    self.stats.errors.append((root, "symlink to a file: not followed"))
                    return
        except OSError as exc:
            self.stats.errors.append((root, exc.strerror or str(exc)))
            return
        if stat.S_ISREG(st.st_mode):
            photo = self._accept_file(root, st, reference=False)
            if photo is not None:
                yield photo
            return
        if not stat.S_ISDIR(st.st_mode):
            self.stats.errors.append((root, "not a folder or a regular file"))
            return
        if self._inside_trash(root, st):
            self.stats.trash_skipped += 1
            self.stats.errors.append((root, "trash folder: never scanned"))
            return
        # Depth-first with an explicit stack: no recursion limit, sorted for stable output.
        stack: list[tuple[str, os.stat_result, bool]] = [(root, st, False)]
        while stack:
            if cancel is not None and cancel.is_set():
                return
            path, dir_st, reference = stack.pop()
            identity = (dir_st.st_dev, dir_st.st_ino)
            if identity in self._seen_dirs:
                continue
            self._seen_dirs.add(identity)
            reference = reference or identity in reference_ids
            self.stats.dirs += 1
            self.stats.current_dir = path
            subdirs: list[tuple[str, os.stat_result, bool]] = []
            for entry in self._entries(path):
                child = self._visit(entry, reference)
                if isinstance(child, Photo):
                    yield child
                elif child is not None:
                    subdirs.append((entry.path, child, reference))
            stack.extend(reversed(subdirs))

    def _entries(self, path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.stats.errors.append((path, exc.strerror or str(exc)))
            return []

    def _visit(self, entry: os.DirEntry[str], reference: bool) -> Photo | os.stat_result | None:
        """A photo to report, a directory's stat to descend into, or None to skip."""
        name = entry.name
        try:
            if entry.is_symlink():
                self.stats.symlinks_skipped += 1
                return None
            is_dir = entry.is_dir(follow_symlinks=False)
        except OSError as exc:
            self.stats.errors.append((entry.path, exc.strerror or str(exc)))
            return None
        if is_dir and is_trash_name(name):
            self.stats.trash_skipped += 1
            return None
        if name.startswith(".") and not self.settings.include_hidden:
            return None
        if self._excluded(name, entry.path):
            return None
        if not is_dir and os.path.splitext(name)[1].lower() not in self._extensions:
            return None
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            self.stats.errors.append((entry.path, exc.strerror or str(exc)))
            return None
        if is_dir:
            if (st.st_dev, st.st_ino) in self._trash_dirs:
                self.stats.trash_skipped += 1
                return None
            return st
        return self._accept_file(entry.path, st, reference)

    def _accept_file(self, path: str, st: os.stat_result, reference: bool) -> Photo | None:
        if not stat.S_ISREG(st.st_mode) or st.st_size < self.settings.min_size:
            return None
        if os.path.splitext(path)[1].lower() not in self._extensions:
            return None
        identity = (st.st_dev, st.st_ino)
        if identity in self._seen_files:
            self.stats.aliases_skipped += 1
            return None
        self._seen_files.add(identity)
        self.stats.files_found += 1
        self.stats.bytes_found += st.st_size
        return Photo(path=path, stat=FileStat.of(st), reference=reference)

    def _inside_trash(self, root: str, st: os.stat_result) -> bool:
        """A root that is a trash folder or lies inside one (rule 11)."""
        if (st.st_dev, st.st_ino) in self._trash_dirs:
            return True
        parts = root.split(os.sep)
        if any(is_trash_name(part) for part in parts):
            return True
        return any(
            _dir_identity(os.sep.join(parts[:i]) or os.sep) in self._trash_dirs
            for i in range(1, len(parts))
        )

    def _excluded(self, name: str, path: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self._name_globs) or any(
            fnmatch.fnmatchcase(path, p) for p in self._path_globs
        )


def _normalise(root: str) -> str:
    # abspath, not realpath: the user's spelling stays; identities dedupe.
    return os.path.abspath(os.fsdecode(root))


def _dir_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _home_trash_identity() -> set[tuple[int, int]]:
    """The XDG home trash ($XDG_DATA_HOME/Trash) is named plain "Trash"; match it by identity."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    identity = _dir_identity(os.path.join(data_home, "Trash"))
    return {identity} if identity is not None else set()
