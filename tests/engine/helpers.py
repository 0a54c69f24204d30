"""Small builders shared by the engine tests (no disk needed for grouping and keep rules)."""

from __future__ import annotations

import itertools

import numpy as np

from photodup_tui.engine.types import FileStat, Photo

_inodes = itertools.count(1000)


def photo(
    path: str,
    *,
    size: int = 100_000,
    width: int | None = 4000,
    height: int | None = 3000,
    fmt: str | None = "JPEG",
    phash: int | None = 0,
    content_hash: str | None = None,
    taken: str | None = None,
    exif_fields: int = 0,
    mtime_ns: int = 1_600_000_000_000_000_000,
    decodable: bool | None = True,
    reference: bool = False,
) -> Photo:
    """A Photo as the scanner would hand it to grouping; ``content_hash`` defaults to unique."""
    return Photo(
        path=path,
        stat=FileStat(dev=1, ino=next(_inodes), size=size, mtime_ns=mtime_ns, ctime_ns=mtime_ns),
        content_hash=content_hash if content_hash is not None else f"content-of-{path}",
        width=width,
        height=height,
        format=fmt,
        phash=phash,
        taken=taken,
        exif_fields=exif_fields,
        decodable=decodable,
        reference=reference,
    )


def unit_at(angle_degrees: float, dim: int = 8) -> np.ndarray:
    """A unit vector in the plane of the first two axes: cosine between two = cos(angle diff)."""
    vector = np.zeros(dim, dtype=np.float32)
    vector[0] = np.cos(np.radians(angle_degrees))
    vector[1] = np.sin(np.radians(angle_degrees))
    return vector


def angle_for(cosine: float) -> float:
    return float(np.degrees(np.arccos(cosine)))
