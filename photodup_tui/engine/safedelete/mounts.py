"""Which mount a path is on: ``rename(2)`` works within one mount only.

Two paths with the same ``st_dev`` can still be on different mounts (a bind mount of a
folder of the same filesystem), and a rename between them fails with ``EXDEV``.  So the
trash choice (and the move mode's destination check) compare mounts as well as devices,
from ``/proc/self/mountinfo``.  Where that is missing (macOS, no /proc) every answer is
``None`` and the device alone decides, as before.
"""

from __future__ import annotations

import os

MOUNTINFO = "/proc/self/mountinfo"


def mount_points() -> frozenset[str]:
    """Every mount point of this mount namespace (canonical paths); empty when unknown."""
    try:
        with open(MOUNTINFO, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return frozenset()
    points = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) > 4:
            points.add(os.fsdecode(_unescape(fields[4])))
    return frozenset(points)


def mount_of(path: str, points: frozenset[str] | None = None) -> str | None:
    """The mount point of the mount ``path`` is on (a final symlink is not followed)."""
    if points is None:
        points = mount_points()
    if not points:
        return None
    current = canonical(path)
    while current not in points:
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return current


def canonical(path: str) -> str:
    """``path`` with its folders resolved (symlinks, ``..``), its last component kept."""
    absolute = os.path.abspath(path)
    head, tail = os.path.split(absolute)
    return os.path.join(os.path.realpath(head), tail) if tail else os.path.realpath(absolute)


def _unescape(field: bytes) -> bytes:
    r"""mountinfo writes space, tab, newline and backslash as ``\040`` ``\011`` ``\012`` ``\134``."""
    if b"\\" not in field:
        return field
    out, i = bytearray(), 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i : i + 1] == b"\\" and len(chunk) == 3 and chunk.isdigit():
            out.append(int(chunk, 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)
