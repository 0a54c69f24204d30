"""The pixel checks' decodes, run in isolated decoder processes (worker side).

:class:`~photodup_tui.engine.sameshot_check.SameShotChecker` sends each of these to a
:class:`photodupd.decodepool.IsolatedPool` (``pixel_job``), under the daemon's decoder limits
(memory cap, timeout, crash isolation), so a hostile or broken file costs its own check,
never the scan, and the scanning process never decodes one.  The functions also run in the
calling process for trusted files (``isolate=False``: tests, benchmarks).

Jobs are tuples: ``("thumb", path)`` -> the packed thumbnail (bytes), for a photo whose
features came without one (an older daemon or cache); ``("details", keeper, [(other, size,
structure), ...])`` -> one float per other, None where that other does not decode (the
keeper decoded once per size for them all: a photo pair, whose shapes are not compared,
reads the means of its pictures at a quarter of ``size``, see :func:`detail`);
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


def detail(path_a: str, path_b: str, size: tuple[int, int], structure: bool = True) -> float:
    """The detail check of two files compared at ``size`` (the smaller one's own size or a
    whole fraction of it, see :func:`sameshot.detail_size`): :func:`sameshot.same_detail`
    of both decoded at that size, or, when only their levels are compared (``structure``
    False, :func:`sameshot.needs_structure`), :func:`sameshot.same_levels` of their means."""
    (value,) = details(path_a, [(path_b, size, structure)], missing_raises=True)
    if value is None:  # cannot happen: a file that does not decode raised
        raise ImageError(ErrorCode.INTERNAL, "no detail score")
    return value


def details(
    keeper: str,
    others: list[tuple[str, tuple[int, int], bool]],
    *,
    missing_raises: bool = False,
) -> list[float | None]:
    """:func:`detail` of ``keeper`` with each of ``others`` (path, size, whether shapes are
    compared), decoding the keeper once per size and kind: a keeper with three near copies
    is decoded once, not three times.  An other that does not decode gets None (its pair
    only; ``missing_raises``: its ImageError); a keeper that does not decode fails the job."""
    keeper_as: dict[tuple[tuple[int, int], bool], sameshot.DetailPicture] = {}
    found: list[float | None] = []
    for path, size, structure in others:
        target = (int(size[0]), int(size[1]))
        levels = not structure and sameshot.reads_means(target)
        kind = (target, levels)
        try:
            picture = _detail_picture(path, target, levels)
        except ImageError:
            if missing_raises:
                raise
            found.append(None)
            continue
        if kind not in keeper_as:
            keeper_as[kind] = _detail_picture(keeper, target, levels)
        if levels:
            value = sameshot.same_levels(keeper_as[kind], picture)
        else:
            value = sameshot.same_detail(keeper_as[kind], picture, structure=bool(structure))
        found.append(float(value))
    return found


def _detail_picture(path: str, size: tuple[int, int], levels: bool) -> sameshot.DetailPicture:
    """One side of a detail check: the picture at ``size``, or with ``levels`` its means
    (:func:`sameshot.same_levels`)."""
    if not levels:
        return sameshot.DetailPicture.of(imaging.load_sized(path, size, alpha=True))
    means = imaging.load_means(path, size, sameshot.LEVEL_REDUCTION)
    return sameshot.DetailPicture.of(means, sameshot.LEVEL_REDUCTION)


def resave(lossless: str, original: str, size: tuple[int, int]) -> bool:
    """Whether ``lossless`` holds exactly the pixels of ``original`` (both decoded at full
    size, ``size``, EXIF orientation applied).  Transparency counts: an original has none."""
    a, b = (imaging.load_preview(path, max(size), alpha=True) for path in (lossless, original))
    if a.size != b.size or a.mode != b.mode:
        return False
    difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return bool(difference.max(initial=0) <= RESAVE_TOLERANCE)
