"""What the image decoders share (torch-free): the error, the upright picture, the format
tables and Pillow's guard rails.

:mod:`photodupd.imaging` (every format Pillow reads) and :mod:`photodupd.rawimage` (camera
RAW files, through their embedded preview) both stand on this module and on nothing of each
other's: imaging hands rawimage its own Pillow path as a function for the previews.  Callers
keep importing :mod:`photodupd.imaging`, which names the public part of this one again.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import pillow_heif
from PIL import Image, features

from photodupd.protocol import ErrorCode

# --------------------------------------------------------------------------
# The error and the picture


class ImageError(Exception):
    """A per-item failure with a protocol error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[ImageError], tuple[ErrorCode, str]]:
        # Exceptions pickle as cls(*args); ours needs both fields to cross a process pipe.
        return (type(self), (self.code, self.message))

    def __repr__(self) -> str:
        return f"ImageError({self.code.value!r}, {self.message!r})"


@dataclass(slots=True)
class Upright:
    """A decoded picture before hashing: upright pixels and what the file said of itself."""

    image: Image.Image  # RGB with the EXIF orientation applied
    width: int  # oriented full-resolution size, taken before any draft
    height: int
    format: str
    exif: Image.Exif | None


# --------------------------------------------------------------------------
# Limits and format tables

#: Pillow's default, used if something in the process set ``MAX_IMAGE_PIXELS`` to None.
_DEFAULT_MAX_PIXELS: Final = 89_478_485

#: The JPEG draft never goes below this shorter side, whatever the spec: the
#: perceptual hash then sees the same scale with or without a model.
DRAFT_MIN_SIDE: Final = 256

_HAS_AVIF: Final = bool(features.check("avif"))

#: The formats Pillow may parse, passed as ``formats=`` to every open.
# AVIF before HEIF: AVIF files also carry the generic "mif1" brand that the
# pillow-heif opener accepts, and Pillow's own AVIF plugin is the better fit.
OPEN_FORMATS: Final = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "TIFF",
    "BMP",
    *(("AVIF",) if _HAS_AVIF else ()),
    "HEIF",
)

#: Format names the decoder accepts.  MPO is not opened by name: Pillow's JPEG
#: opener returns it for camera JPEGs that carry a second (preview) frame.
ALLOWED_FORMATS: Final = frozenset((*OPEN_FORMATS, "MPO"))

#: File suffixes (lowercase, with the dot) of the allow-listed formats: the one table of
#: names, which the engine's walker offers to the decoder.  The decoder itself goes by a
#: file's first bytes, not its name.
# fmt: off
IMAGE_EXTENSIONS: Final = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp",
    ".dib", ".heic", ".heif", ".hif", *((".avif",) if _HAS_AVIF else ()),
})
# fmt: on

#: Camera RAW suffixes: the decoder reads these files through their embedded preview
#: when rawpy is installed (:mod:`photodupd.rawimage`), and reports them as unsupported if not.
# fmt: off
RAW_EXTENSIONS: Final = frozenset({
    ".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".iiq", ".k25", ".kdc",
    ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl",
    ".sr2", ".srf", ".srw", ".x3f",
})
# fmt: on


def has_raw_suffix(name: str | bytes | os.PathLike[str]) -> bool:
    """Whether a file's name says camera RAW (the one such test: walker, keep rules, decoder)."""
    return os.path.splitext(os.fsdecode(name))[1].lower() in RAW_EXTENSIONS


# libheif's security limits stay on (they are on by default; this pins them in
# case something else in the process turned them off).  Embedded thumbnails,
# depth and auxiliary images are never decoded, only the main picture.
pillow_heif.options.DISABLE_SECURITY_LIMITS = False
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

# --------------------------------------------------------------------------
# Orientation

_TAG_ORIENTATION: Final = 0x0112

#: PIL transpose that shows stored pixels upright for each EXIF orientation value.
ORIENT_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: EXIF orientations that swap width and height.
SWAPS_AXES: Final = frozenset({5, 6, 7, 8})
#: Per EXIF orientation, whether the upright x and y axes run against the stored axes they
#: come from (so that what was stored last, a partial DCT block, is upright first).
REVERSES_AXES: Final = {
    1: (False, False),
    2: (True, False),
    3: (True, True),
    4: (False, True),
    5: (False, False),
    6: (True, False),
    7: (True, True),
    8: (False, True),
}


def exif_orientation(exif: Image.Exif | None) -> int:
    """The EXIF orientation (1-8); 1 when there is none or it is malformed."""
    if exif is None:
        return 1
    try:
        value = exif.get(_TAG_ORIENTATION)
    except Exception:
        return 1
    if isinstance(value, tuple) and len(value) == 1:  # some writers store count=1 arrays
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8:
        return value
    return 1


# --------------------------------------------------------------------------
# Guard rails

# warnings.catch_warnings swaps process-global state; one lock keeps our own
# threads (the app decodes previews on several) from restoring each other's filters.
_WARNINGS_LOCK = threading.Lock()


def pixel_limit() -> int:
    """The most pixels an image may have: Pillow's ``MAX_IMAGE_PIXELS``, never unlimited."""
    limit = Image.MAX_IMAGE_PIXELS
    return int(limit) if limit else _DEFAULT_MAX_PIXELS


@contextmanager
def strict_warnings() -> Iterator[None]:
    """Bomb warnings become errors; every other warning is dropped (not printed)."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True):
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


# --------------------------------------------------------------------------
# Recognising a file without parsing it


def signature_format(data: bytes) -> str | None:
    """The format whose signature ``data`` starts with, allow-listed formats first.

    Only the format plugins' signature checks run (on the first 16 bytes, as
    Pillow does); no parser of a non-allow-listed format ever sees the file.
    """
    prefix = data[:16]
    Image.init()
    allowed_first = [f for f in OPEN_FORMATS if f in Image.OPEN]
    others = [f for f in Image.ID if f not in OPEN_FORMATS]
    for fmt in (*allowed_first, *others):
        accept = Image.OPEN[fmt][1]
        if accept is None:
            continue  # formats without a signature cannot be recognised safely
        try:
            if accept(prefix):
                return fmt
        except Exception:  # a signature check that fails is a "no"
            continue
    return None


def container_truncated(data: bytes) -> bool:
    """True when a RIFF (WebP) or ISO-BMFF (HEIF, AVIF) container declares more bytes
    than the file holds: the decoders behind them report that only as "invalid"."""
    if data[:4] == b"RIFF":
        return int.from_bytes(data[4:8], "little") + 8 > len(data)
    if data[4:8] != b"ftyp":
        return False
    position = 0
    while position + 8 <= len(data):
        size = int.from_bytes(data[position : position + 4], "big")
        if size == 1:  # 64-bit size follows the box type
            if position + 16 > len(data):
                return True
            size = int.from_bytes(data[position + 8 : position + 16], "big")
        elif size == 0:  # the last box runs to the end of the file
            return False
        if size < 8:
            return False  # damaged, not cut short
        position += size
    return position > len(data) or 0 < len(data) - position < 8
