"""Seeing a photo: decoded previews for the terminal, kept for a while, or the system viewer.

Previews are decoded in an isolated worker process (:mod:`photodupd.previewdecode`), never in
the app's own process: the file may be hostile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable

from PIL import Image

from photodupd.previewdecode import IsolatedPreviewLoader

PreviewLoader = Callable[[str, int], Image.Image]


class PreviewCache:
    """Decoded previews by path and mtime, least recently used first out."""

    def __init__(self, loader: PreviewLoader | None = None, capacity: int = 48) -> None:
        self._isolated: IsolatedPreviewLoader | None = None
        if loader is None:  # started on the first preview, stopped by close()
            loader = self._isolated = IsolatedPreviewLoader()
        self._loader = loader
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, max_side: int) -> Image.Image:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            stamp = 0  # the loader reports the real problem, or a test loader needs no file
        key = (path, stamp)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = self._loader(path, max_side)
        with self._lock:
            self._items[key] = image
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return image

    def close(self) -> None:
        """Stop the preview decoder process, if this cache started one."""
        if self._isolated is not None:
            self._isolated.close()


def open_in_viewer(path: str) -> str:
    """Start the system viewer without waiting for it; returns the command used."""
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    if shutil.which(opener) is None:
        raise FileNotFoundError(f"{opener} is not installed, so photodup cannot open files")
    subprocess.Popen(
        [opener, path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the viewer outlives us and never grabs our terminal
    )
    return opener
