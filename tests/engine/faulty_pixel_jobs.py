"""A pixel-check job function that misbehaves on command (run in the isolated decoders).

A detail job on a file whose name starts with ``hang`` blocks forever (the pool must time
out and replace the worker); everything else is the real :func:`pixeljobs.pixel_job`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from photodup_tui.engine import pixeljobs


def hang_on_marked(job: Any, spec: object = None) -> bytes | float | bool:
    if job[0] == "detail" and any(os.path.basename(p).startswith("hang") for p in job[1:3]):
        threading.Event().wait()
    return pixeljobs.pixel_job(job, spec)
