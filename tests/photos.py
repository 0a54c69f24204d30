"""Deterministic synthetic photos for tests (Pillow + numpy only).

``make_photo(seed, size)`` draws a scene from the seed alone: a smooth two-colour
gradient, a few soft light blobs, random shapes and fine sensor-like noise.  The
scene is laid out in relative coordinates, so the same seed at another size is
the same picture (a "resized copy"), while two seeds differ in their coarse
structure, which is what perceptual hashes look at.

The writers build real files: JPEG with EXIF (orientation, camera, date), every
format the decoder accepts, and headers that *claim* huge pixel sizes without
holding the pixels (for decompression-bomb tests).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: The scene is drawn at most this big, then scaled; fine noise is added at full size.
_SCENE_SIDE = 768

#: PIL transpose that *undoes* each EXIF orientation (what a viewer applies).
_APPLY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
#: The inverse: how a camera stores an upright scene under each orientation tag.
_STORE_FOR_ORIENTATION = {
    **_APPLY_ORIENTATION,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def make_photo(seed: int, size: tuple[int, int] = (640, 480), *, noise: float = 3.0) -> Image.Image:
    """An RGB "photo" of ``size`` (width, height) that depends only on ``seed``."""
    width, height = size
    scale = min(1.0, _SCENE_SIDE / max(width, height))
    scene_size = (max(8, round(width * scale)), max(8, round(height * scale)))
    rng = np.random.default_rng(seed)
    scene = _draw_scene(rng, scene_size)
    if scene.size != size:
        scene = scene.resize(size, Image.Resampling.BICUBIC)
    if noise <= 0:
        return scene
    # Fine grain at full resolution, from its own stream so the scene stays seed-stable.
    grain = np.random.default_rng([seed, 1]).normal(0.0, noise, (height, width, 1))
    pixels = np.asarray(scene, dtype=np.float32) + grain.astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_scene(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / max(1, width - 1), ys / max(1, height - 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (u - 0.5) + np.sin(angle) * (v - 0.5)) + 0.5
    ramp = np.clip(ramp, 0, 1)[..., None]
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start * (1 - ramp) + end * ramp
    for _ in range(int(rng.integers(2, 5))):  # soft light and shadow blobs
        cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.4)
        strength = rng.uniform(-90, 90, 3)
        blob = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * radius**2))[..., None]
        pixels = pixels + strength * blob
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.1, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        w, h = rng.uniform(0.1, 0.5) * width, rng.uniform(0.1, 0.5) * height
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            points = [(x0 + rng.uniform(0, w), y0 + rng.uniform(0, h)) for _ in range(3)]
            draw.polygon(points, fill=colour)
    # Slight blur: real lenses do not draw razor-sharp edges.
    return image.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(width, height) / 300)))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (a ^ b).bit_count()


def store_with_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for ``upright`` when it tags them with ``orientation``."""
    method = _STORE_FOR_ORIENTATION.get(orientation)
    return upright if method is None else upright.transpose(method)


def apply_orientation(stored: Image.Image, orientation: int) -> Image.Image:
    """What a viewer shows for ``stored`` pixels tagged with ``orientation``."""
    method = _APPLY_ORIENTATION.get(orientation)
    return stored if method is None else stored.transpose(method)


def exif_bytes(
    *,
    orientation: Any = None,
    make: str | None = None,
    model: str | None = None,
    taken: str | None = None,
    offset: str | None = None,
    extra: dict[int, Any] | None = None,
) -> bytes:
    """A TIFF-structured EXIF block. ``taken`` is EXIF text, e.g. ``"2021:06:01 12:30:00"``."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if make is not None:
        exif[0x010F] = make
    if model is not None:
        exif[0x0110] = model
    for tag, value in (extra or {}).items():
        exif[tag] = value
    sub: dict[int, Any] = {}
    if taken is not None:
        sub[0x9003] = taken
    if offset is not None:
        sub[0x9011] = offset
    if sub:
        exif_ifd = exif.get_ifd(0x8769)
        exif_ifd.update(sub)
    return exif.tobytes()


#: TIFF field type codes used by raw_exif.
SHORT, ASCII, LONG, RATIONAL = 3, 2, 4, 5


def raw_exif(
    entries: list[tuple[int, int, int, bytes]], *, sub_ifd_offset: int | None = None
) -> bytes:
    """An APP1 EXIF payload with IFD0 ``entries`` written verbatim: (tag, type, count, value).

    Nothing is checked, so tests can write what Pillow's own writer refuses:
    orientation as text or as a zero-denominator rational, unknown type codes,
    counts that run past the end, IFD pointers that loop.  A value of up to 4
    bytes is stored inline, a longer one after the IFD.
    """
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    extra = b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            field = value.ljust(4, b"\0")
        else:
            field = struct.pack("<I", data_offset + len(extra))
            extra += value
        ifd += struct.pack("<HHI", tag, kind, count) + field
    ifd += struct.pack("<I", sub_ifd_offset or 0)
    return b"Exif\0\0II*\x00" + struct.pack("<I", 8) + ifd + extra


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """``image`` saved as ``fmt`` (any Pillow writer; "HEIF" needs pillow_heif registered)."""
    buffer = io.BytesIO()
    if fmt.upper() in ("HEIF", "HEIC"):
        import pillow_heif

        pillow_heif.register_heif_opener()
        fmt = "HEIF"
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def jpeg_bytes(
    image: Image.Image, quality: int = 90, exif_orientation: int | None = None, **params: Any
) -> bytes:
    if exif_orientation is not None and "exif" not in params:
        params["exif"] = exif_bytes(orientation=exif_orientation)
    return encode(image, "JPEG", quality=quality, **params)


def write_jpeg(
    path: Path,
    image: Image.Image,
    quality: int = 90,
    exif_orientation: int | None = None,
    **params: Any,
) -> Path:
    """Write ``image`` as a JPEG; ``exif_orientation`` only tags it (see store_with_orientation)."""
    path.write_bytes(jpeg_bytes(image, quality, exif_orientation, **params))
    return path


def write_image(path: Path, image: Image.Image, fmt: str, **params: Any) -> Path:
    path.write_bytes(encode(image, fmt, **params))
    return path


# --------------------------------------------------------------------------
# Headers that claim a size they do not hold (decompression bombs).


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def claimed_size_file(fmt: str, width: int, height: int) -> bytes:
    """A small, well-formed-looking file of ``fmt`` whose header claims width x height.

    A decoder that trusts the header would allocate ``width * height`` pixels.
    """
    fmt = fmt.upper()
    if fmt == "PNG":
        ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = zlib.compress(b"\0" * 64)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b"")
        )
    if fmt == "GIF":
        screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
        descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
        return b"GIF89a" + screen + descriptor + b"\x02\x02\x44\x01\x00;"
    if fmt == "BMP":
        info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
        header = b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info))
        return header + info + b"\0" * 16
    if fmt == "TIFF":
        entries = [
            (256, 4, 1, width),  # ImageWidth, LONG
            (257, 4, 1, height),  # ImageLength
            (258, 3, 1, 8),  # BitsPerSample
            (259, 3, 1, 1),  # Compression: none
            (262, 3, 1, 1),  # Photometric: min-is-black
            (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets: just after the IFD
            (277, 3, 1, 1),  # SamplesPerPixel
            (278, 4, 1, height),  # RowsPerStrip
            (279, 4, 1, 16),  # StripByteCounts
        ]
        ifd = struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
            ifd += struct.pack("<HHI", tag, kind, count) + packed
        return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + b"\0" * 16
    if fmt == "JPEG":
        sof = struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"
        dqt = b"\x00" + bytes(range(1, 65))
        return (
            b"\xff\xd8"
            + b"\xff\xdb"
            + struct.pack(">H", len(dqt) + 2)
            + dqt
            + b"\xff\xc0"
            + struct.pack(">H", len(sof) + 2)
            + sof
            + b"\xff\xd9"
        )
    raise ValueError(f"no claimed-size writer for {fmt}")
