"""The macOS system trash, through NSFileManager (pyobjc), keeping the resulting path.

send2trash's macOS backend calls the same API but throws the resulting URL away, and the
journal, undo and the rule-9 check need it, so we call it ourselves.  Without pyobjc
(``pip install pyobjc-framework-Cocoa``) nothing is trashed: the file stays and the reason
says why.  Untested on Linux CI: the freedesktop path is the one the test-suite proves.
"""

from __future__ import annotations

import os

from photodup_tui.engine.safedelete.faults import fault_point
from photodup_tui.engine.safedelete.trashtypes import (
    TrashEntry,
    TrashLocation,
    TrashSteps,
    TrashUnavailable,
)


def usable_location(path: str) -> TrashLocation:
    try:
        import Foundation  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        raise TrashUnavailable(
            "the macOS trash needs pyobjc (pip install pyobjc-framework-Cocoa); file left in place"
        ) from None
    return TrashLocation(os.path.expanduser("~/.Trash"), None, "system")


def trash_file(path: str, steps: TrashSteps) -> TrashEntry:
    from Foundation import NSURL, NSFileManager  # type: ignore[import-not-found,unused-ignore]

    location = usable_location(path)
    original = os.path.abspath(path)
    steps.trying(location)
    fault_point("rename")
    ok, result_url, error = NSFileManager.defaultManager().trashItemAtURL_resultingItemURL_error_(
        NSURL.fileURLWithPath_(original), None, None
    )
    if not ok:
        raise TrashUnavailable(f"the system trash refused: {error.localizedDescription()}")
    result = str(result_url.path())
    entry = TrashEntry(os.path.dirname(result), os.path.basename(result), original, has_info=False)
    steps.reserved(entry)
    return entry
