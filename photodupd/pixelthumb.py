"""The pixel checks' thumbnail of a photo, and its compact, exact wire and cache form
(torch-free; numpy and Pillow only).

The daemon's decoders make it from the very decode that feeds the model
(:func:`photodupd.imaging.decode` with ``thumb=True``), so the same-picture and same-shot
checks (``photodup_tui.engine.sameshot``) never decode a photo again: the ``features``
reply carries it (``thumb``), the scan cache keeps it beside the embedding.

Packed form (:func:`pack`, :func:`unpack`): a 24-byte header (magic, version, which planes,
height, width, colourfulness and flat share as float64), then zlib (level 1) of the planes,
each row as differences from the pixel to its left like :mod:`photodupd.pixelcodec`: gray as
uint8 (its values are whole levels), the two colour opponents as int16 (zigzagged, low and
high bytes in planes of their own), alpha as uint8.  Lossless, as the checks compare levels:
2-21 KB, about 9 KB on average over a mixed set of 200 photos (colour photos 10-20 KB).  The
bytes cross a trust boundary (a remote daemon, a cache file), so :func:`unpack` refuses
anything that is not exactly a thumbnail
(:class:`~photodupd.imagebase.ImageError`) and never inflates past the expected size.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from photodupd.imagebase import ImageError
from photodupd.protocol import ErrorCode

if TYPE_CHECKING:
    from PIL import Image

#: Thumbnails fit in this many pixels per side: enough to see parallax, cheap to correlate.
THUMB_SIDE: Final = 96
#: Thumbnails are made from a preview this big (its flat share is measured at this size).
PREVIEW_SIDE: Final = 4 * THUMB_SIDE
#: Windows of FLAT_WINDOW pixels (of the preview) spreading less than FLAT_SPREAD levels are
#: flat (see :attr:`Thumb.flat`).
FLAT_WINDOW: Final = 4
FLAT_SPREAD: Final = 3.0
#: Version of the thumbnail and of its packed form: a cache keeps thumbnails under it.
METHOD: Final = f"thumb-{THUMB_SIDE}-preview{PREVIEW_SIDE}-v1"


@dataclass(frozen=True, slots=True)
class Thumb:
    """A photo as the pixel checks see it: a small grayscale picture (flattened onto white),
    its colourfulness, its colour and transparency, and how flat it is."""

    gray: np.ndarray  # float32, long side THUMB_SIDE
    colour: float
    #: int16 (2, h, w): the opponent colours R-G and (R+G)/2-B of the flattened picture.
    chroma: np.ndarray | None = None
    #: uint8 (h, w): the alpha channel, for a picture with any transparency; None if opaque.
    alpha: np.ndarray | None = None
    #: Share of the (preview-size) picture in flat windows: documents, screenshots, drawings,
    #: logos and blank pages are mostly flat, photos rarely (see ``needs_structure`` in the
    #: engine's sameshot).
    flat: float = 0.0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.gray.shape)


def thumbnail_from(image: object) -> Thumb:
    """The :class:`Thumb` of an upright PIL image (RGBA keeps its transparency)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError("expected a PIL image")
    rgb, alpha = _flattened(image)
    # Always exactly THUMB_SIDE on the long side, small pictures scaled up: both checks
    # compare two thumbnails at the same framing, so they must share their scale.
    width, height = image.size
    factor = THUMB_SIDE / max(width, height, 1)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    gray = np.asarray(small.convert("L"), dtype=np.float32)
    pixels = np.asarray(small, dtype=np.float32)
    small_alpha = None
    if alpha is not None:
        resized = alpha.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        small_alpha = np.asarray(resized, dtype=np.uint8)
    return Thumb(
        gray,
        _colourfulness(pixels),
        chroma=np.round(_opponent(pixels)).astype(np.int16),
        alpha=small_alpha,
        flat=_flat_share(np.asarray(rgb.convert("L"), dtype=np.float32)),
    )


def _flattened(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """The picture flattened onto white, and its alpha channel when it has transparency."""
    from PIL import Image

    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in image.info:
        # convert() copies even when the mode is already right: 36 MB for a 12 MP photo.
        return (image if image.mode == "RGB" else image.convert("RGB")), None
    rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    # An alpha channel that is opaque everywhere: an opaque picture.
    return canvas.convert("RGB"), None if alpha.getextrema()[0] == 255 else alpha


def _opponent(rgb: np.ndarray) -> np.ndarray:
    """(R-G, (R+G)/2-B) of an (h, w, 3) array: colour without brightness."""
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return np.stack([rg, yb])


def _flat_share(gray: np.ndarray) -> float:
    """The share of FLAT_WINDOW-pixel windows whose levels spread less than FLAT_SPREAD."""
    h, w = (side // FLAT_WINDOW * FLAT_WINDOW for side in gray.shape)
    if h == 0 or w == 0:
        return 1.0
    windows = gray[:h, :w].reshape(h // FLAT_WINDOW, FLAT_WINDOW, w // FLAT_WINDOW, FLAT_WINDOW)
    return float((windows.std(axis=(1, 3)) < FLAT_SPREAD).mean())


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness: 0 for gray, tens for colour photos."""
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = float(np.hypot(rg.std(), yb.std()))
    return spread + 0.3 * float(np.hypot(rg.mean(), yb.mean()))


def make(upright: Image.Image) -> Thumb:
    """The :class:`Thumb` of a decoded upright picture (RGBA keeps its transparency): first
    fitted in PREVIEW_SIDE, as the flat share is measured at that size.  ``upright`` is left
    as it is."""
    from PIL import Image

    preview = upright.copy()
    preview.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    return thumbnail_from(preview)


# --------------------------------------------------------------------------
# Packed form

_MAGIC: Final = b"PT"
_VERSION: Final = 1
_HEADER: Final = struct.Struct("<2sBBHHdd")  # magic, version, planes, height, width, colour, flat
_CHROMA: Final = 1
_ALPHA: Final = 2
#: Most bytes a packed thumbnail may have: zlib never grows ~55 KB of planes past this.
MAX_PACKED: Final = 96 * 1024


def pack(thumb: Thumb) -> bytes:
    """The exact packed form of ``thumb`` (see the module docstring)."""
    gray = thumb.gray
    height, width = gray.shape
    if not (1 <= height <= THUMB_SIDE and 1 <= width <= THUMB_SIDE):
        raise ValueError(f"a thumbnail of {width}x{height} pixels is not {THUMB_SIDE} at most")
    levels = gray.astype(np.uint8)
    if not np.array_equal(levels, gray):
        raise ValueError("thumbnail gray levels must be whole numbers 0-255")
    planes = [_row_deltas(levels)]
    flags = 0
    if thumb.chroma is not None:
        flags |= _CHROMA
        for plane in thumb.chroma.astype(np.int16):
            planes.extend(_split(_row_deltas(plane)))
    if thumb.alpha is not None:
        flags |= _ALPHA
        planes.append(_row_deltas(thumb.alpha.astype(np.uint8)))
    header = _HEADER.pack(_MAGIC, _VERSION, flags, height, width, thumb.colour, thumb.flat)
    return header + zlib.compress(b"".join(p.tobytes() for p in planes), 1)


def unpack(packed: bytes) -> Thumb:
    """A :class:`Thumb` from its packed form; :class:`ImageError` for anything else."""
    if not isinstance(packed, bytes) or not _HEADER.size < len(packed) <= MAX_PACKED:
        raise _malformed("not a packed thumbnail")
    magic, version, flags, height, width, colour, flat = _HEADER.unpack_from(packed)
    if magic != _MAGIC or version != _VERSION or flags & ~(_CHROMA | _ALPHA):
        raise _malformed(f"unknown thumbnail form {magic!r} v{version} planes {flags}")
    if not (1 <= height <= THUMB_SIDE and 1 <= width <= THUMB_SIDE):
        raise _malformed(f"a thumbnail of {width}x{height} pixels")
    if not (math.isfinite(colour) and colour >= 0.0 and 0.0 <= flat <= 1.0):
        raise _malformed("thumbnail colourfulness or flat share out of range")
    area = height * width
    expected = area * (1 + (4 if flags & _CHROMA else 0) + (1 if flags & _ALPHA else 0))
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed[_HEADER.size :], expected + 1)
    except zlib.error as exc:
        raise _malformed(f"thumbnail does not inflate: {exc}") from None
    ended = inflater.eof and not inflater.unconsumed_tail and not inflater.unused_data
    if len(raw) != expected or not ended:
        raise _malformed(f"thumbnail planes are not {expected} bytes")
    shape = (height, width)
    gray = _undo_deltas(np.frombuffer(raw, np.uint8, area, 0).reshape(shape))
    at = area
    chroma = None
    if flags & _CHROMA:
        halves = np.frombuffer(raw, np.uint8, 4 * area, at).reshape(4, *shape)
        chroma = np.stack([_undo_deltas(_joined(halves[i], halves[i + 1])) for i in (0, 2)])
        at += 4 * area
    alpha = None
    if flags & _ALPHA:
        alpha = _undo_deltas(np.frombuffer(raw, np.uint8, area, at).reshape(shape))
    return Thumb(gray.astype(np.float32), colour, chroma=chroma, alpha=alpha, flat=flat)


def _row_deltas(plane: np.ndarray) -> np.ndarray:
    """Each row as differences from the pixel to its left; the dtype wraps, exactly."""
    return np.diff(plane, axis=1, prepend=np.zeros_like(plane[:, :1]))


def _undo_deltas(deltas: np.ndarray) -> np.ndarray:
    return np.cumsum(deltas, axis=1, dtype=deltas.dtype)


def _split(deltas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int16 differences, zigzagged (small magnitudes: small numbers) and split into a low
    and a high byte plane: the high bytes are nearly all zero, and deflate sees that."""
    wide = deltas.astype(np.int32)
    zigzag = ((wide << 1) ^ (wide >> 31)).astype(np.uint16)
    return (zigzag & 0xFF).astype(np.uint8), (zigzag >> 8).astype(np.uint8)


def _joined(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The int16 differences :func:`_split` made (any bytes give some int16: never fails)."""
    zigzag = low.astype(np.int32) | (high.astype(np.int32) << 8)
    return ((zigzag >> 1) ^ -(zigzag & 1)).astype(np.int16)


def _malformed(message: str) -> ImageError:
    return ImageError(ErrorCode.NOT_AN_IMAGE, message)
