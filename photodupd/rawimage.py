"""Camera RAW files, decoded from the preview the camera embedded (optional: rawpy / libraw).

A RAW file holds the sensor data and a JPEG preview of the finished photo, often full size,
for the camera's own screen.  Comparing photos needs that picture, not a slow demosaic, so:

* libraw (through rawpy) only parses the file and hands over the preview;
* a JPEG preview then goes through the same hardened Pillow path as any JPEG
  (:mod:`photodupd.imaging`, which passes it in as ``decode_other``: allow-list, pixel
  limit, draft mode, EXIF orientation); a bitmap thumbnail is checked against the same
  pixel limit;
* the preview is turned upright by its own EXIF orientation (libraw writes the RAW's there
  when the camera wrote none) or else by the RAW's (``sizes.flip``); a preview the camera
  stored upright already is not put on its side;
* the size reported is the sensor's developed size, upright, not the preview's, so the keep
  rules compare resolutions honestly;
* a file whose preview is missing or smaller than the hash's working size is developed by
  libraw at half size instead (camera white balance, 8 bits).

A RAW file cut short can still show an intact preview, so the data the file's own directories
declare (TIFF strips, tiles and SubIFDs; ISO-BMFF boxes for CR3; the RAF header) must lie
inside it, or the file is ``truncated``: an interrupted copy must never pass for a whole one.

rawpy is imported on first use: without it (the default install) RAW files fail with
``unsupported_format`` and :func:`available` tells the engine not to ask at all.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np
from PIL import Image, TiffImagePlugin

from photodupd.imagebase import (
    DRAFT_MIN_SIDE,
    OPEN_FORMATS,
    ORIENT_TRANSPOSE,
    SWAPS_AXES,
    ImageError,
    Upright,
    container_truncated,
    exif_orientation,
    has_raw_suffix,
    pixel_limit,
    signature_format,
    strict_warnings,
)
from photodupd.protocol import ErrorCode

if TYPE_CHECKING:
    import rawpy

#: The Pillow path of :mod:`photodupd.imaging` (data, draft side -> upright picture), for the
#: JPEG previews inside RAW files and for files that only carry a RAW suffix.
DecodeOther = Callable[[bytes, int | None], Upright]

#: What :class:`photodupd.imaging.Decoded` reports as the format of every RAW file.
RAW_FORMAT: Final = "RAW"

#: A preview smaller than this on its shorter side is a thumbnail, not a picture to compare:
#: the sensor data is developed instead.  The same floor as the JPEG draft's.
MIN_PREVIEW_SIDE: Final = DRAFT_MIN_SIDE

#: libraw's ``sizes.flip`` (dcraw numbering) -> the EXIF orientation that means the same.
_FLIP_TO_ORIENTATION: Final = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
#: EXIF orientations that swap the axes -> the orientation whose transpose undoes theirs.
_UNDO_QUARTER_TURN: Final = {5: 5, 6: 8, 7: 7, 8: 6}

# Signatures of RAW containers that are not plain TIFF (checked only for unnamed data).
# fmt: off
_RAW_MAGIC: Final = (
    (0, b"IIRO"), (0, b"IIRS"), (0, b"MMOR"),  # Olympus ORF
    (0, b"IIU\0"),  # Panasonic RW2, Leica RWL
    (0, b"FUJIFILMCCD-RAW"),  # Fujifilm RAF
    (4, b"ftypcrx "),  # Canon CR3
    (0, b"FOVb"),  # Sigma X3F
    (0, b"\0MRM"),  # Minolta MRW
    (6, b"HEAPCCDR"),  # Canon CRW
    (8, b"CR\x02"),  # Canon CR2 (a TIFF with a marker after its header)
)
# fmt: on
_TIFF_HEADERS: Final = (b"II*\0", b"MM\0*")
_TAG_DNG_VERSION: Final = 50706
_TAG_SUB_IFDS: Final = 330
#: (offsets, byte counts) tag pairs whose data must lie inside the file: strips, tiles, and
#: the JPEG thumbnail of old-style directories.
_EXTENT_TAGS: Final = ((273, 279), (324, 325), (513, 514))
_MAX_IFDS: Final = 64  # a loop of directory pointers ends here


def available() -> bool:
    """Whether RAW files can be decoded here: rawpy is installed.  Found, not imported: the
    daemon answers this in every welcome, and only its decoder processes need rawpy loaded."""
    if "rawpy" in sys.modules:  # imported already, or blocked (None), as tests do
        return sys.modules["rawpy"] is not None
    return importlib.util.find_spec("rawpy") is not None


def is_raw(data: bytes, name: str | bytes | os.PathLike[str] | None) -> bool:
    """Whether :func:`decode_upright` is the decoder for this file: by the suffix of its
    ``name`` when there is one (RAW containers are TIFF or ISO-BMFF files that Pillow would
    misread), else by signature (DNG, CR2 and the non-TIFF RAW containers)."""
    if name is not None:
        return has_raw_suffix(name)
    if _raw_signature(data):
        return True
    return data[:4] in _TIFF_HEADERS and _TAG_DNG_VERSION in _first_ifd(data)


def looks_raw(head: bytes) -> bool:
    """Whether the first bytes of a file are those of a RAW container (any TIFF-based one,
    or one of the others): what a file with a RAW suffix must start with to be one."""
    return head[:4] in _TIFF_HEADERS or _raw_signature(head)


def _raw_signature(data: bytes) -> bool:
    """Whether ``data`` starts like one of the RAW containers that are not plain TIFF."""
    return any(data[at : at + len(magic)] == magic for at, magic in _RAW_MAGIC)


def decode_upright(data: bytes, draft_side: int | None, decode_other: DecodeOther) -> Upright:
    """The upright picture of a RAW file (its preview, or a half-size development), with the
    sensor's upright size and the RAW's EXIF.  ``decode_other`` decodes what is not RAW: the
    JPEG preview, or a misnamed file.  Raises only :class:`ImageError`."""
    try:
        import rawpy
    except ImportError:
        raise ImageError(
            ErrorCode.UNSUPPORTED_FORMAT,
            "camera RAW files need the rawpy package: install photodup[raw]",
        ) from None
    declared = _declared_end(data)
    if declared > len(data):
        raise ImageError(
            ErrorCode.TRUNCATED,
            f"RAW file is cut short: its data runs to byte {declared}, the file has {len(data)}",
        )
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
            width, height = sizes.width, sizes.height
            if orientation in SWAPS_AXES:
                width, height = height, width
            if width < 1 or height < 1:
                raise ImageError(ErrorCode.NOT_AN_IMAGE, f"RAW image of {width}x{height} pixels")
            picture = _preview(raw, orientation, (width, height), draft_side, decode_other)
            if picture is None:
                picture = _develop(raw)
    except ImageError:
        raise
    except Exception as exc:  # libraw's errors, mapped to what they mean for the user
        fallback = _misnamed(data, draft_side, exc, decode_other)
        if fallback is not None:
            return fallback
        raise _libraw_error(exc, data) from None
    exif = _raw_exif(data) or picture.exif
    return Upright(picture.image, width, height, RAW_FORMAT, exif)


# --------------------------------------------------------------------------
# The picture


def _preview(
    raw: rawpy.RawPy,
    orientation: int,
    upright_size: tuple[int, int],
    draft_side: int | None,
    decode_other: DecodeOther,
) -> Upright | None:
    """The embedded preview, upright; None when there is none worth comparing."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        assert isinstance(thumb.data, bytes)
        try:
            # Oriented by the preview's own EXIF: the camera's, or the RAW's orientation that
            # libraw writes there when the camera wrote none.
            picture = decode_other(thumb.data, draft_side)
        except ImageError as exc:
            if exc.code is ErrorCode.TOO_LARGE:
                raise
            return None  # a damaged preview: the sensor data may still be fine
        applied = exif_orientation(picture.exif)
        if applied == 1:
            applied = orientation
            picture.image = _turn(picture.image, orientation)
    else:
        image = _bitmap(thumb.data)
        if image is None:
            return None
        applied = orientation
        picture = Upright(_turn(image, orientation), 0, 0, RAW_FORMAT, None)
    picture.image = _match_shape(picture.image, applied, upright_size)
    if min(picture.image.size) < MIN_PREVIEW_SIDE:
        return None
    return picture


def _turn(stored: Image.Image, orientation: int) -> Image.Image:
    method = ORIENT_TRANSPOSE.get(orientation)
    return stored if method is None else stored.transpose(method)


def _match_shape(image: Image.Image, applied: int, upright_size: tuple[int, int]) -> Image.Image:
    """A preview the camera stored upright was put on its side by the RAW's quarter turn: when
    it is portrait and the photo landscape (or the other way round), that turn is undone."""
    undo = _UNDO_QUARTER_TURN.get(applied)
    width, height = image.size
    upright_w, upright_h = upright_size
    if undo is None or width == height or upright_w == upright_h:
        return image
    if (width > height) == (upright_w > upright_h):
        return image
    return _turn(image, undo)


def _bitmap(pixels: object) -> Image.Image | None:
    """An RGB image of a bitmap thumbnail (h, w, 3 or 1), within the pixel limit."""
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        return None
    height, width = pixels.shape[:2]
    if width < 1 or height < 1 or width * height > pixel_limit():
        return None
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        return None
    if pixels.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]), "L").convert("RGB")
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def _develop(raw: rawpy.RawPy) -> Upright:
    """The sensor data developed by libraw at half size (it applies the orientation itself)."""
    sizes = raw.sizes
    half_pixels = (sizes.width // 2) * (sizes.height // 2)
    if half_pixels > pixel_limit():
        raise ImageError(
            ErrorCode.TOO_LARGE,
            f"RAW without a preview: {sizes.width}x{sizes.height} pixels exceed the limit",
        )
    rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    image = Image.fromarray(np.ascontiguousarray(rgb[:, :, :3]), "RGB")
    return Upright(image, 0, 0, RAW_FORMAT, None)


def _misnamed(
    data: bytes, draft_side: int | None, exc: Exception, decode_other: DecodeOther
) -> Upright | None:
    """A file with a RAW suffix that libraw does not know but Pillow does (a JPEG saved as
    .raw): decoded as what it is.  TIFF is left out: a RAW from a camera newer than libraw is
    a TIFF too, and Pillow would report its thumbnail as the photo."""
    import rawpy

    if not isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return None
    fmt = signature_format(data)
    if fmt is None or fmt == "TIFF" or fmt not in OPEN_FORMATS:
        return None
    return decode_other(data, draft_side)


def _libraw_error(exc: Exception, data: bytes) -> ImageError:
    import rawpy

    text = _describe(exc)
    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        if not _raw_signature(data) and _tiff_header(data) is None:
            return ImageError(ErrorCode.NOT_AN_IMAGE, "not a camera RAW file")
        version = ".".join(str(part) for part in rawpy.libraw_version)
        return ImageError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"libraw {version} cannot read this RAW file (a camera it does not know?)",
        )
    if isinstance(
        exc,
        MemoryError
        | rawpy.LibRawTooBigError
        | rawpy.LibRawUnsufficientMemoryError
        | rawpy.LibRawMemPoolOverflowError,
    ):
        return ImageError(ErrorCode.TOO_LARGE, f"RAW file too large to decode: {text}")
    if isinstance(exc, rawpy.LibRawIOError):  # reading from memory fails only past the end
        return ImageError(ErrorCode.TRUNCATED, f"RAW data ends early: {text}")
    return ImageError(ErrorCode.NOT_AN_IMAGE, f"damaged RAW file: {text}")


def _describe(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):  # rawpy passes libraw's C strings on as bytes
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


# --------------------------------------------------------------------------
# Structure: EXIF and the declared extent of the data


def _raw_exif(data: bytes) -> Image.Exif | None:
    """The RAW's own EXIF (TIFF-based RAWs keep it in IFD 0), or None."""
    if data[:4] not in _TIFF_HEADERS:
        return None
    exif = Image.Exif()
    try:
        with strict_warnings():
            exif.load(data)
    except Exception:  # malformed: the preview's EXIF, if any, is used instead
        return None
    return exif if len(exif) else None


def _declared_end(data: bytes) -> int:
    """The end of the last block of data the file's own structure points at (0: unknown)."""
    if data.startswith(b"FUJIFILMCCD-RAW"):
        # Big-endian (offset, length) pairs at 84: JPEG, CFA header, CFA data.
        if len(data) < 108:
            return len(data) + 1
        fields = [int.from_bytes(data[at : at + 4], "big") for at in range(84, 108, 4)]
        return max(fields[i] + fields[i + 1] for i in (0, 2, 4))
    if data[4:8] == b"ftyp":
        return len(data) + 1 if container_truncated(data) else 0
    return _tiff_extent(data)


def _tiff_header(data: bytes) -> bytes | None:
    """A standard TIFF header for ``data``: ORF and RW2 use other magic numbers but the same
    directory structure."""
    head = data[:8]
    if len(head) < 8:
        return None
    if head[:4] in _TIFF_HEADERS:
        return head
    if head[:4] in (b"IIRO", b"IIRS", b"IIU\0"):
        return b"II*\0" + head[4:]
    if head[:4] == b"MMOR":
        return b"MM\0*" + head[4:]
    return None


def _first_ifd(data: bytes) -> TiffImagePlugin.ImageFileDirectory_v2:
    head = _tiff_header(data)
    directory = TiffImagePlugin.ImageFileDirectory_v2(head or b"II*\0\0\0\0\0")
    if head is None:
        return directory
    try:
        with strict_warnings():
            stream = io.BytesIO(data)
            stream.seek(directory.next)
            directory.load(stream)
    except Exception:
        directory.clear()
    return directory


def _tiff_extent(data: bytes) -> int:
    """The furthest byte any strip, tile or thumbnail of any directory (the IFD chain and
    SubIFDs) declares; 0 when the file is not TIFF-structured."""
    head = _tiff_header(data)
    if head is None:
        return 0
    stream = io.BytesIO(data)
    first = TiffImagePlugin.ImageFileDirectory_v2(head).next
    entries = int.from_bytes(data[first : first + 2], "little" if head[:2] == b"II" else "big")
    if first + 2 + 12 * entries + 4 > len(data):
        return len(data) + 1  # the header's own directory is cut off
    end = 0
    todo = [first]
    seen: set[int] = set()
    while todo and len(seen) < _MAX_IFDS:
        offset = todo.pop()
        if offset in seen or not 8 <= offset < len(data):
            continue
        seen.add(offset)
        directory = TiffImagePlugin.ImageFileDirectory_v2(head)
        try:
            with strict_warnings():
                stream.seek(offset)
                directory.load(stream)
        except Exception:  # a damaged or bogus directory: libraw will judge the file
            continue
        for starts_tag, counts_tag in _EXTENT_TAGS:
            starts, counts = _ints(directory.get(starts_tag)), _ints(directory.get(counts_tag))
            if starts_tag == 513 and counts:  # a JPEGInterchangeFormat block
                starts = starts[:1]
            end = max([end, *(s + c for s, c in zip(starts, counts, strict=False))])
        todo.extend(_ints(directory.get(_TAG_SUB_IFDS)))
        todo.append(directory.next)
    return end


def _ints(value: object) -> list[int]:
    values = value if isinstance(value, tuple) else (value,)
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]
