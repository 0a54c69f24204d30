"""The pixel checks' decodes, run in isolated decoder processes (worker side).

:class:`~photodup_tui.engine.sameshot_check.SameShotChecker` sends each of these to a
:class:`photodupd.decodepool.IsolatedPool` (``pixel_job``), under the daemon's decoder limits
(memory cap, timeout, crash isolation), so a hostile or broken file costs its own check,
never the scan, and the scanning process never decodes one.  The functions also run in the
calling process for trusted files (``isolate=False``: tests, benchmarks).

Jobs are tuples: ``("thumb", path)`` -> the packed thumbnail (bytes), for a photo whose
features came without one (an older daemon or cache); ``("details", keeper, [(other, size,
structure), ...])`` -> one float per other, None where that other does not decode (the
keeper decoded once per size for them all);
``("resave", lossless, original, size)`` -> bool.  A file that does not decode raises
:class:`~photodupd.imagebase.ImageError`, which the pool hands back as the job's error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from photodup_tui.engine import sameshot
from photodupd import imaging, pixelthumb
from photodupd.imagebase import ImageError
from photodupd.protocol import ErrorCode

#: A lossless re-save may differ from its original by this many levels: JPEG decoders round
#: their transforms a level or two apart.  A JPEG saved from a PNG differs by far more.
RESAVE_TOLERANCE = 2


def pixel_job(job: Any, spec: object = None) -> bytes | float | bool | list[float | None]:
    """The pool's ``decode_fn``: one job (see the module docstring)."""
    kind, *args = job
    if kind == "thumb":
        return thumbnail_bytes(*args)
    if kind == "details":
        return details(*args)
    if kind == "resave":
        return resave(*args)
    raise ImageError(ErrorCode.INTERNAL, f"unknown pixel job {kind!r}")


def thumbnail_bytes(path: str) -> bytes:
    """The packed thumbnail of one file, made exactly as the daemon's decode makes it."""
    thumb = imaging.decode(path, thumb=True).thumb
    if thumb is None:
        raise ImageError(ErrorCode.INTERNAL, "the decoder made no thumbnail")
    return thumb


def thumbnail(path: str) -> pixelthumb.Thumb:
    return pixelthumb.unpack(thumbnail_bytes(path))


def detail(path_a: str, path_b: str, size: tuple[int, int]) -> float:
    """:func:`sameshot.same_detail` of two files, both decoded at ``size`` (the smaller
    one's own size or a whole fraction of it, see :func:`sameshot.detail_size`)."""
    target = (int(size[0]), int(size[1]))
    pictures = [imaging.load_sized(path, target, alpha=True) for path in (path_a, path_b)]
    return float(sameshot.same_detail(*pictures))


def details(keeper: str, others: list[tuple[str, tuple[int, int], bool]]) -> list[float | None]:
    """:func:`sameshot.same_detail` of ``keeper`` with each of ``others`` (path, size,
    whether shapes are compared: :func:`sameshot.needs_structure`), decoding the keeper once
    per size: a keeper with three near copies is decoded once, not three times.  An other
    that does not decode gets None (its pair only); a keeper that does not decode fails the
    job."""
    keeper_at: dict[tuple[int, int], sameshot.DetailPicture] = {}
    found: list[float | None] = []
    for path, size, structure in others:
        target = (int(size[0]), int(size[1]))
        try:
            picture = imaging.load_sized(path, target, alpha=True)
        except ImageError:
            found.append(None)
            continue
        if target not in keeper_at:
            loaded = imaging.load_sized(keeper, target, alpha=True)
            keeper_at[target] = sameshot.DetailPicture.of(loaded)
        value = sameshot.same_detail(keeper_at[target], picture, structure=bool(structure))
        found.append(float(value))
    return found


def resave(lossless: str, original: str, size: tuple[int, int]) -> bool:
    """Whether ``lossless`` holds exactly the pixels of ``original`` (both decoded at full
    size, ``size``, EXIF orientation applied).  Transparency counts: an original has none."""
    a, b = (imaging.load_preview(path, max(size), alpha=True) for path in (lossless, original))
    if a.size != b.size or a.mode != b.mode:
        return False
    difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return bool(difference.max(initial=0) <= RESAVE_TOLERANCE)
