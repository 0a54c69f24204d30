"""Fault points for the crash and error tests, and nothing else.

``PHOTODUP_FAULT`` holds comma-separated rules, read at each fault point:

* ``kill@POINT`` or ``kill@POINT:N`` - SIGKILL this process the N-th time (default 1st)
  execution reaches ``POINT``: the kill -9 tests of rule 10.
* ``ERRNO@POINT`` or ``ERRNO@POINT:N`` (e.g. ``ENOSPC@info_write``, ``EXDEV@rename``) -
  raise that ``OSError`` there every time (or from the N-th time on): the read-only / full /
  cross-device tests of rule 8, on any filesystem.

Unset (the normal case) every point is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "PHOTODUP_FAULT"

_reached: Counter[str] = Counter()
_counted_for = ""  # the spec the counts belong to: a new spec counts from zero


def fault_point(point: str) -> None:
    """Die or fail here if a test asked for it; otherwise do nothing."""
    global _counted_for
    spec = os.environ.get(ENV)
    if not spec:
        return
    if spec != _counted_for:
        _reached.clear()
        _counted_for = spec
    _reached[point] += 1
    for rule in spec.split(","):
        action, _, where = rule.strip().partition("@")
        name, _, nth = where.partition(":")
        if name != point:
            continue
        if action == "kill":
            if _reached[point] == int(nth or "1"):
                os.kill(os.getpid(), signal.SIGKILL)
        elif _reached[point] >= int(nth or "1"):
            code = getattr(errno, action, None)
            if not isinstance(code, int):
                raise ValueError(f"{ENV}: unknown errno {action!r}")
            raise OSError(code, f"{os.strerror(code)} (injected at {point})")
