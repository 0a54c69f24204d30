"""A pixel-check job function that misbehaves on command (run in the isolated decoders).

A ``details`` job on a file whose name starts with ``hang`` (the keeper or any other)
blocks forever (the pool must time out and replace the worker); everything else is the real :func:`pixeljobs.pixel_job`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from photodup_tui.engine import pixeljobs


def hang_on_marked(job: Any, spec: object = None) -> Any:
    paths: list[str] = []
    if job[0] == "details":
        paths = [job[1], *(other[0] for other in job[2])]
    if any(os.path.basename(p).startswith("hang") for p in paths):
        threading.Event().wait()
    return pixeljobs.pixel_job(job, spec)
