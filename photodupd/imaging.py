"""The one image decoder of photodup (torch-free).

The daemon runs :func:`decode` in isolated worker processes (see
:mod:`photodupd.decodepool`); the app reuses it for previews and for the
no-model mode.  Camera RAW files take :mod:`photodupd.rawimage`; what the two
share (the error, the format tables, Pillow's guard rails) is in
:mod:`photodupd.imagebase`, and its public names are importable from here too.

Every file is untrusted.  Pillow is locked down per call rather than globally:

* only the formats in :data:`ALLOWED_FORMATS` are ever parsed (``formats=``);
  other image formats are recognised by their signature alone (no parser runs)
  and reported as ``unsupported_format``;
* ``Image.MAX_IMAGE_PIXELS`` is kept and enforced as a hard limit: Pillow's
  ``DecompressionBombWarning`` is raised as an error while a file is opened, and
  the oriented pixel count is checked again on our side;
* truncated files fail (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set);
* files above :data:`MAX_FILE_BYTES` are refused before they are read;
* HEIF goes through pillow-heif with libheif's security limits on;
* EXIF is read defensively: any malformed tag only means "no such tag".

Every failure leaves :func:`decode` as an :class:`ImageError` carrying a
protocol :class:`~photodupd.protocol.ErrorCode`; nothing else escapes.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Final

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from photodupd import pixelthumb, rawimage
from photodupd.imagebase import (
    ALLOWED_FORMATS,
    DRAFT_MIN_SIDE,
    IMAGE_EXTENSIONS,
    OPEN_FORMATS,
    ORIENT_TRANSPOSE,
    RAW_EXTENSIONS,
    REVERSES_AXES,
    SWAPS_AXES,
    ImageError,
    Upright,
    container_truncated,
    exif_orientation,
    pixel_limit,
    signature_format,
    strict_warnings,
)
from photodupd.protocol import ErrorCode, FeatureItem

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "MAX_FILE_BYTES",
    "RAW_EXTENSIONS",
    "DecodeSpec",
    "Decoded",
    "ImageError",
    "PreprocessSpec",
    "decode",
    "decode_item",
    "error_for_os_error",
    "load_means",
    "load_preview",
    "load_sized",
    "phash",
    "read_image_file",
]

# --------------------------------------------------------------------------
# What the decoder gives


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """How a model wants its pixels: resize the shorter side to ``resize`` (bicubic),
    then centre-crop ``size`` x ``size``.  Normalisation happens in the model thread."""

    size: int = 224
    resize: int = 256

    def __post_init__(self) -> None:
        if self.size < 1 or self.resize < self.size:
            raise ValueError(f"need 1 <= size <= resize, got size={self.size} resize={self.resize}")


@dataclass(frozen=True, slots=True)
class DecodeSpec:
    """What a decoder pool job makes besides the facts: the model's input (``model``) and,
    with ``thumb``, the pixel checks' thumbnail (:mod:`photodupd.pixelthumb`)."""

    model: PreprocessSpec | None = None
    thumb: bool = False


def model_spec(spec: PreprocessSpec | DecodeSpec | None) -> PreprocessSpec | None:
    """The model's input spec of a decoder pool job's ``spec``."""
    return spec.model if isinstance(spec, DecodeSpec) else spec


@dataclass(frozen=True, slots=True)
class Decoded:
    pixels: np.ndarray | None  # uint8 (size, size, 3) RGB for the model; None when no spec
    phash: int  # 64-bit unsigned perceptual hash of the oriented image
    width: int  # oriented full-resolution pixel size
    height: int
    format: str  # Pillow format name ("MPO" is a camera JPEG with extra frames)
    taken: str | None = None  # EXIF DateTimeOriginal as ISO 8601 (with offset when known)
    camera: str | None = None  # EXIF Make + Model
    exif_fields: int = 0  # descriptive EXIF tags present: "richness" for the keep rules
    #: The pixel checks' thumbnail, packed (pixelthumb.pack), when asked for (``thumb=True``).
    thumb: bytes | None = None


# --------------------------------------------------------------------------
# Limits

#: Files bigger than this are refused before reading (the largest real photos,
#: 16-bit TIFF scans and panoramas, stay well below).
MAX_FILE_BYTES: Final = 512 * 1024 * 1024

# --------------------------------------------------------------------------
# EXIF tags

_TAG_MAKE: Final = 0x010F
_TAG_MODEL: Final = 0x0110
_IFD_EXIF: Final = 0x8769
_IFD_GPS: Final = 0x8825
_TAG_DATETIME_ORIGINAL: Final = 0x9003
_TAG_OFFSET_TIME_ORIGINAL: Final = 0x9011

# Tags that describe how pixels are stored, not the photo: TIFF files carry them
# in the same directory as EXIF data, and they must not count as "richness".
# fmt: off
_STRUCTURAL_TAGS: Final = frozenset({
    254, 255, 256, 257, 258, 259, 262, 266,  # subfile type, size, bits, compression ...
    273, 277, 278, 279, 280, 281, 282, 283, 284, 296,  # strips, samples, resolution
    317, 320, 322, 323, 324, 325, 338, 339, 340, 341, 347,  # predictor, palette, tiles
    513, 514, 529, 530, 531, 532,  # JPEG thumbnail and YCbCr layout
    _IFD_EXIF, _IFD_GPS, 0xA005,  # pointers to the sub-directories
})
# fmt: on

_EXIF_DATETIME: Final = re.compile(r"(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_EXIF_OFFSET: Final = re.compile(r"[+\-]\d{2}:\d{2}")

# --------------------------------------------------------------------------
# Perceptual hash: DCT-II basis for the low 8 frequencies of a 32-sample signal.
# Scale factors are left out; only the sign against the median matters.
_HASH_SIDE: Final = 32
_DCT_LOW: Final = np.cos(
    np.pi / (2 * _HASH_SIDE) * np.outer(np.arange(8), 2 * np.arange(_HASH_SIDE) + 1)
)

# --------------------------------------------------------------------------
# Public API


def decode(
    source: str | bytes | os.PathLike[str],
    *,
    is_data: bool = False,
    spec: PreprocessSpec | None = None,
    draft: bool = True,
    thumb: bool = False,
) -> Decoded:
    """Decode one untrusted image: a path (str / bytes / PathLike), or file bytes when ``is_data``.

    Returns the oriented full size, a 64-bit pHash, EXIF facts, and the model's
    pixels when ``spec`` is given; with ``thumb``, the pixel checks' thumbnail too, made
    from the same decode (transparency kept for it, flattened for the rest).
    ``draft=False`` decodes JPEGs at full scale (benchmarks only: the hash and pixels are
    the same to within a few bits).  Raises only :class:`ImageError`.
    """
    data = _data_from(source) if is_data else read_image_file(source)
    # Decode JPEGs in the DCT domain at 1/2, 1/4 or 1/8 scale, still at least the
    # model's resize (and the hash's working size) on the shorter side, and the thumbnail's
    # preview side on the longer one (for 4:3 and 3:2 photos the same scale).
    draft_side = max(spec.resize if spec is not None else 0, DRAFT_MIN_SIDE) if draft else None
    long_side = pixelthumb.PREVIEW_SIDE if thumb else None
    try:
        name = None if is_data else source
        picture = _decode_upright(data, draft_side, name, keep_alpha=thumb, long_side=long_side)
        image, packed = picture.image, None
        if thumb:
            packed = pixelthumb.pack(pixelthumb.make(image))
            image = _flatten(image)  # what every other use sees, as without a thumbnail
        taken, camera, exif_fields = _exif_facts(picture.exif)
        return Decoded(
            pixels=_model_pixels(image, spec) if spec is not None else None,
            phash=phash(image),
            width=picture.width,
            height=picture.height,
            format=picture.format,
            taken=taken,
            camera=camera,
            exif_fields=exif_fields,
            thumb=packed,
        )
    except ImageError:
        raise
    except Exception as exc:  # the last resort: nothing else may escape
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"cannot decode: {_describe(exc)}") from None


def decode_item(item: FeatureItem, spec: PreprocessSpec | DecodeSpec | None = None) -> Decoded:
    """:func:`decode` for a protocol item: the default ``decode_fn`` of the decoder pool.
    A :class:`DecodeSpec` may ask for the thumbnail too."""
    thumb = isinstance(spec, DecodeSpec) and spec.thumb
    model = model_spec(spec)
    if item.path is not None:
        return decode(item.path, spec=model, thumb=thumb)
    return decode(item.data or b"", is_data=True, spec=model, thumb=thumb)


def load_preview(
    source: str | bytes | os.PathLike[str],
    max_side: int,
    *,
    is_data: bool = False,
    alpha: bool = False,
) -> Image.Image:
    """An upright RGB image that fits in ``max_side`` x ``max_side``, decoded as safely as
    :func:`decode` (same allow-list and limits; JPEGs decoded at reduced scale).

    ``alpha=True``: a picture with transparency comes back RGBA, not flattened onto white.
    The pixel checks need it: a logo or an overlay whose picture lives in its alpha channel
    is, flattened, a blank page like every other such overlay."""
    if max_side < 1:
        raise ValueError("max_side must be positive")
    data = _data_from(source) if is_data else read_image_file(source)
    try:
        name = None if is_data else source
        upright = _decode_upright(data, max_side, name, keep_alpha=alpha).image
        upright.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return upright
    except ImageError:
        raise
    except Exception as exc:  # same last resort as decode()
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"cannot decode: {_describe(exc)}") from None


def load_sized(
    source: str | bytes | os.PathLike[str], size: tuple[int, int], *, alpha: bool = False
) -> Image.Image:
    """An upright picture of exactly ``size`` (width, height), decoded as safely as
    :func:`decode`, and as cheaply as that size allows: a JPEG at the smallest DCT scale that
    still covers ``size``, any picture then shrunk by the whole factor that still covers it
    (a box filter), and only what remains resampled (Lanczos; a pixel off, bilinear).

    The pixel checks' full-detail comparison asks for half a 12 MP photo's size: a JPEG
    decoded straight at that size costs an eighth of a full decode and a resize.  ``alpha``
    as in :func:`load_preview`."""
    width, height = (int(size[0]), int(size[1]))
    if width < 1 or height < 1:
        raise ValueError("size must be positive")
    data = read_image_file(source)
    try:
        picture = _decode_upright(data, None, source, keep_alpha=alpha, cover=(width, height))
        return _resampled(picture.image, (width, height))
    except ImageError:
        raise
    except Exception as exc:  # same last resort as decode()
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"cannot decode: {_describe(exc)}") from None


def load_means(
    source: str | bytes | os.PathLike[str], size: tuple[int, int], reduction: int
) -> Image.Image:
    """The picture :func:`load_sized` gives at ``size``, reduced ``reduction`` times: each
    pixel the mean colour of a ``reduction`` x ``reduction`` square of it (the edge pixels
    that fill no square left out; transparency flattened onto white).

    Where ``size`` is the picture's own divided by a whole number (the smaller side of a
    near pair), the squares are whole blocks of the file's pixels, and the means are taken
    from the coarsest decode whose pixels tile them: a 12 MP JPEG at its 1/8 DCT scale,
    where each pixel is already an 8x8 block's mean (to rounding), with no resize, for a
    quarter less decoding than at half size.  Otherwise they come from :func:`load_sized`'s
    picture itself."""
    width, height = (int(size[0]), int(size[1]))
    if width < 1 or height < 1 or reduction < 1:
        raise ValueError("size and reduction must be positive")
    cells = (width // reduction, height // reduction)
    if min(cells) < 1:
        raise ValueError("size must be at least one square")
    data = read_image_file(source)
    try:
        scale = None if rawimage.is_raw(data, source) else _block_scale(data, size, reduction)
        cover = (width, height) if scale is None else scale[0][0]
        image = _decode_upright(data, None, source, cover=cover).image
        if scale is not None and image.size == scale[0][1]:
            step = scale[1]
        else:  # not whole blocks of the decoded pixels: load_sized's picture
            image, step = _resampled(image, (width, height)), (reduction, reduction)
        region = (0, 0, cells[0] * step[0], cells[1] * step[1])
        if region != (0, 0, *image.size):
            image = image.crop(region)
        return image.reduce(step) if step != (1, 1) else image
    except ImageError:
        raise
    except Exception as exc:  # same last resort as decode()
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"cannot decode: {_describe(exc)}") from None


def _block_scale(
    data: bytes, size: tuple[int, int], reduction: int
) -> tuple[tuple[tuple[int, int], tuple[int, int]], tuple[int, int]] | None:
    """For :func:`load_means`: the upright size to ask the decoder to cover and the size it
    then decodes at (a JPEG's DCT scale 1/k, its last block partial; any other format at
    full size), and the decoded pixels per square (per axis), when ``size``
    is the picture's own divided by whole numbers; else None.  The scale must divide the
    squares, and where the orientation turns the file's last, partial DCT block to the
    upright start, the picture's side too (so no square straddles it)."""
    image = _open(data)
    try:
        stored = image.size
        jpeg = image.format in ("JPEG", "MPO")
        # Only a JPEG's orientation matters here (its DCT blocks); another format's is not
        # read (PNG decodes everything to find it): a turned one decodes at another size
        # than this says, and load_means resamples it.
        orientation = exif_orientation(_read_exif(image)) if jpeg else 1
    finally:
        image.close()
    upright = (stored[1], stored[0]) if orientation in SWAPS_AXES else stored
    if any(side % target for side, target in zip(upright, size, strict=True)):
        return None
    squares = [side // target * reduction for side, target in zip(upright, size, strict=True)]
    reverses = REVERSES_AXES.get(orientation, (False, False))
    for k in (8, 4, 2, 1) if jpeg else (1,):
        fits = all(
            square % k == 0 and (not turned or side % k == 0)
            for square, side, turned in zip(squares, upright, reverses, strict=True)
        )
        if fits:
            # Pillow's draft takes the coarsest scale whose whole pixels still cover this.
            cover = (upright[0] // k, upright[1] // k)
            decoded = (-(-upright[0] // k), -(-upright[1] // k))
            return (cover, decoded), (squares[0] // k, squares[1] // k)
    return None


def _resampled(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at exactly ``size``: shrunk by a whole factor while that still covers it
    (not with transparency: a box filter on straight alpha smears colour from transparent
    pixels), then resampled."""
    factor = min(image.width // size[0], image.height // size[1])
    if factor >= 2 and image.mode == "RGB":
        image = image.reduce(factor)
    if image.size == size:
        return image
    near = abs(image.width - size[0]) <= 1 and abs(image.height - size[1]) <= 1
    method = Image.Resampling.BILINEAR if near else Image.Resampling.LANCZOS
    return image.resize(size, method)


def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash (the imagehash ``phash`` algorithm).

    32x32 grayscale (Lanczos), 2-D DCT-II, the low 8x8 block, each bit set when
    its coefficient is above the block's median.  Bit 63 is the DC term; bits
    follow in row-major order.
    """
    gray = image.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS)
    samples = np.asarray(gray, dtype=np.float64)
    low = _DCT_LOW @ samples @ _DCT_LOW.T
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def read_image_file(path: str | bytes | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """All bytes of a regular file, refusing FIFOs, devices, directories and files over the cap.

    Opened non-blocking so a FIFO cannot hang the caller, and sized by fstat so a
    huge file is refused before any allocation.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error_for_os_error(exc) from None
    try:
        with open(fd, "rb", closefd=True) as fh:
            info = os.fstat(fh.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise ImageError(ErrorCode.UNREADABLE, "is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise ImageError(ErrorCode.UNREADABLE, "not a regular file")
            if info.st_size > max_bytes:
                raise ImageError(
                    ErrorCode.TOO_LARGE,
                    f"file of {info.st_size} bytes exceeds the {max_bytes}-byte limit",
                )
            if info.st_size == 0:
                raise ImageError(ErrorCode.NOT_AN_IMAGE, "empty file")
            return fh.read(info.st_size)
    except OSError as exc:
        raise error_for_os_error(exc) from None


def error_for_os_error(exc: OSError) -> ImageError:
    """The item error for a failed open or read of an image file."""
    code = exc.errno
    reason = os.strerror(code) if code is not None else str(exc)
    name = errno.errorcode.get(code, "") if code is not None else ""
    label = f"{name}: {reason}" if name else reason
    if code in (errno.ENOENT, errno.ENOTDIR):
        return ImageError(ErrorCode.NOT_FOUND, label)
    if code in (errno.EACCES, errno.EPERM):
        return ImageError(ErrorCode.PERMISSION_DENIED, label)
    return ImageError(ErrorCode.UNREADABLE, label)


# --------------------------------------------------------------------------
# Opening


def _data_from(source: object) -> bytes:
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, bytearray | memoryview):
        data = bytes(source)
    else:
        raise ImageError(
            ErrorCode.NOT_AN_IMAGE, f"image data must be bytes, not {type(source).__name__}"
        )
    if not data:
        raise ImageError(ErrorCode.NOT_AN_IMAGE, "empty data")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(
            ErrorCode.TOO_LARGE, f"{len(data)} bytes exceed the {MAX_FILE_BYTES}-byte limit"
        )
    return data


def _open(data: bytes) -> ImageFile.ImageFile:
    try:
        with strict_warnings():
            return Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(ErrorCode.TOO_LARGE, str(exc)) from None
    except Exception as exc:  # an allow-listed plugin that failed on a damaged header
        fmt = signature_format(data) or "image"
        if container_truncated(data):
            raise ImageError(ErrorCode.TRUNCATED, f"{fmt} file is cut short") from None
        raise _load_error(exc, fmt) from None


def _decode_upright(
    data: bytes,
    draft_side: int | None,
    name: str | bytes | os.PathLike[str] | None = None,
    *,
    keep_alpha: bool = False,
    long_side: int | None = None,
    cover: tuple[int, int] | None = None,
) -> Upright:
    """Open, check limits, read EXIF, decode (JPEG drafted to ``draft_side``, and to
    ``long_side`` on the longer side; or to the smallest scale still covering ``cover``, an
    upright (width, height)), orient.

    Camera RAW files (known by ``name``, the file's path, or by signature without one) take
    :mod:`photodupd.rawimage`, which decodes their embedded preview through this function.
    ``keep_alpha``: a picture with transparency stays RGBA (see :func:`_to_rgb`)."""
    if rawimage.is_raw(data, name):
        other = partial(_decode_upright, keep_alpha=keep_alpha, long_side=long_side, cover=cover)
        return rawimage.decode_upright(data, draft_side, other)
    image = _open(data)
    try:
        upright = _load_upright(image, draft_side, keep_alpha, long_side, cover)
    except BaseException:
        image.close()
        raise
    if upright.image is not image:
        image.close()  # frees the decoded source pixels now rather than at GC
    return upright


def _load_upright(
    image: ImageFile.ImageFile,
    draft_side: int | None,
    keep_alpha: bool = False,
    long_side: int | None = None,
    cover: tuple[int, int] | None = None,
) -> Upright:
    fmt = image.format or "?"
    if fmt not in ALLOWED_FORMATS:  # cannot happen with formats=, kept as a guard
        raise ImageError(ErrorCode.UNSUPPORTED_FORMAT, f"{fmt} images are not supported")
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"{fmt} image of {width}x{height} pixels")
    if width * height > pixel_limit():
        raise ImageError(
            ErrorCode.TOO_LARGE,
            f"{width}x{height} pixels exceed the limit of {pixel_limit()} pixels",
        )
    # PNG may keep EXIF after the pixels, and its getexif() decodes everything to
    # find it; every other format has EXIF in its header (and TIFF can only read
    # it before the pixels are loaded).
    exif = _read_exif(image) if fmt != "PNG" else None
    if draft_side is not None and fmt in ("JPEG", "MPO"):
        image.draft("RGB", _draft_box(image.size, draft_side, long_side))
    elif cover is not None and fmt in ("JPEG", "MPO"):
        # The draft keeps the stored picture at least this big: the stored axes.
        turned = exif_orientation(exif) in SWAPS_AXES
        image.draft("RGB", (cover[1], cover[0]) if turned else cover)
    try:
        image.load()
        rgb = _to_rgb(image, keep_alpha)
    except ImageError:
        raise
    except Exception as exc:  # mapped to a precise code
        raise _load_error(exc, fmt) from None
    if fmt == "PNG":
        exif = _read_exif(image)
    if draft_side is not None:
        rgb = _reduced(rgb, draft_side)
    orientation = exif_orientation(exif)
    method = ORIENT_TRANSPOSE.get(orientation)
    if method is not None:
        rgb = rgb.transpose(method)
    if orientation in SWAPS_AXES:
        width, height = height, width
    return Upright(rgb, width, height, fmt, exif)


def _draft_box(size: tuple[int, int], side: int, long_side: int | None) -> tuple[int, int]:
    """The size Pillow's JPEG draft must keep: ``side`` on both sides, and ``long_side`` on
    the longer one (the draft picks the smallest scale that keeps both)."""
    if long_side is None or long_side <= side:
        return (side, side)
    return (long_side, side) if size[0] >= size[1] else (side, long_side)


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """The picture shrunk by a whole factor (a box filter), its shorter side still >= 2 x ``side``.

    JPEG's draft shrinks while decoding; PNG, TIFF, WebP and HEIF cannot decode at a reduced
    scale (Pillow has no draft for them), so they are shrunk once right after decoding.
    Everything after it (the hash's grayscale 32x32, the model's resize, the previews) then
    works on ~0.5 MP, not 7-12 MP: 16-20% off a 12 MP PNG or WebP decode, a few % off a HEIC
    (bench/README.md, decode study).  Twice ``side``, not ``side``: the pHash then stays within
    2 bits of the full-size picture's (down to ``side`` it moved up to 6 bits on flat photos).
    RGBA (``keep_alpha``) is left alone: a box filter on straight alpha smears colour from
    transparent pixels."""
    factor = min(image.size) // (2 * side)
    if factor < 2 or image.mode != "RGB":
        return image
    return image.reduce(factor)


def _unidentified(data: bytes) -> ImageError:
    """Why Pillow could not open ``data``, judged without parsing it any further."""
    fmt = signature_format(data)
    if fmt is None:
        return ImageError(ErrorCode.NOT_AN_IMAGE, "not a recognised image format")
    if fmt not in OPEN_FORMATS:
        return ImageError(ErrorCode.UNSUPPORTED_FORMAT, f"{fmt} images are not supported")
    if container_truncated(data):
        return ImageError(ErrorCode.TRUNCATED, f"{fmt} file is cut short")
    return ImageError(ErrorCode.NOT_AN_IMAGE, f"{fmt} signature, but the header is damaged")


# --------------------------------------------------------------------------
# EXIF


def _read_exif(image: Image.Image) -> Image.Exif | None:
    try:
        with strict_warnings():  # Pillow warns about each odd tag; keep them off stderr
            return image.getexif()
    except Exception:  # malformed EXIF means "no EXIF", never a failed decode
        return None


def _sub_ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        with strict_warnings():
            ifd = exif.get_ifd(tag)
        return dict(ifd) if isinstance(ifd, dict) else {}
    except Exception:
        return {}


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value.replace("\0", " ") if ch.isprintable()).strip()
    return " ".join(cleaned.split())[:120] or None


def _taken(exif_ifd: dict[int, Any]) -> str | None:
    text = _text(exif_ifd.get(_TAG_DATETIME_ORIGINAL))
    match = _EXIF_DATETIME.match(text or "")
    if match is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError:  # "0000:00:00 00:00:00" and other placeholders
        return None
    iso = moment.isoformat()
    offset = _text(exif_ifd.get(_TAG_OFFSET_TIME_ORIGINAL))
    if offset is not None and _EXIF_OFFSET.fullmatch(offset):
        iso += offset
    return iso


def _camera(exif: Image.Exif) -> str | None:
    make, model = _text(exif.get(_TAG_MAKE)), _text(exif.get(_TAG_MODEL))
    if make and model:
        # "Canon" + "Canon EOS 5D" reads better as "Canon EOS 5D".
        return model if model.lower().startswith(make.split()[0].lower()) else f"{make} {model}"
    return model or make


def _exif_facts(exif: Image.Exif | None) -> tuple[str | None, str | None, int]:
    if exif is None:
        return None, None, 0
    try:
        exif_ifd = _sub_ifd(exif, _IFD_EXIF)
        gps_ifd = _sub_ifd(exif, _IFD_GPS)
        fields = sum(1 for tag in exif if tag not in _STRUCTURAL_TAGS)
        fields += len(exif_ifd) + len(gps_ifd)
        return _taken(exif_ifd), _camera(exif), fields
    except Exception:  # facts are best-effort, the pixels are what matters
        return None, None, 0


# --------------------------------------------------------------------------
# Pixels


def _load_error(exc: BaseException, fmt: str) -> ImageError:
    text = str(exc).lower()
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ImageError(ErrorCode.TOO_LARGE, str(exc))
    if isinstance(exc, MemoryError):
        return ImageError(ErrorCode.TOO_LARGE, f"{fmt}: out of memory while decoding")
    if "security limit" in text or "exceeds the maximum" in text:
        return ImageError(ErrorCode.TOO_LARGE, f"{fmt}: {_describe(exc)}")
    if isinstance(exc, EOFError) or "truncated" in text or "end of file" in text:
        return ImageError(ErrorCode.TRUNCATED, f"{fmt}: {_describe(exc)}")
    return ImageError(ErrorCode.NOT_AN_IMAGE, f"damaged {fmt} data: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


def _to_rgb(image: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """RGB pixels; with ``keep_alpha``, RGBA for a picture with transparency."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_depth_gray_to_rgb(image)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return rgba if keep_alpha else _flatten(rgba)
    try:
        return image.convert("RGB")
    except ValueError:  # e.g. LAB or HSV TIFFs: Pillow has no conversion to RGB
        raise ImageError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{image.format or 'image'} in colour mode {mode} is not supported",
        ) from None


def _flatten(image: Image.Image) -> Image.Image:
    """An RGBA picture flattened onto white, as exporters do when they drop alpha; RGB as
    it is."""
    if image.mode != "RGBA":
        return image
    canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
    canvas.alpha_composite(image)
    return canvas.convert("RGB")


def _high_depth_gray_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit values at 255 (a white picture); scale instead.
    samples = np.asarray(image).astype(np.float32)
    if image.mode == "F":
        peak = float(samples.max()) if samples.size else 0.0
        samples = samples * 255.0 if peak <= 1.0 else samples * (255.0 / peak)
    elif image.mode != "I" or (samples.size and float(samples.max()) > 255.0):
        samples = samples / 257.0
    gray = np.clip(samples, 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _model_pixels(upright: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Shorter side to ``spec.resize`` (bicubic), centre crop ``spec.size`` (torchvision's
    rounding), computed as one resize of the source box so that extreme aspect
    ratios never build a huge intermediate image."""
    width, height = upright.size
    if width <= height:
        new_w, new_h = spec.resize, int(spec.resize * height / width)
    else:
        new_w, new_h = int(spec.resize * width / height), spec.resize
    left = round((new_w - spec.size) / 2.0)
    top = round((new_h - spec.size) / 2.0)
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + spec.size) * sx, (top + spec.size) * sy)
    cropped = upright.resize(
        (spec.size, spec.size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0
    )
    return np.array(cropped, dtype=np.uint8).reshape(spec.size, spec.size, 3)
