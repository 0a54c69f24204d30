"""Real DNG files for the RAW tests, written from an RGB picture (no camera, no extra package).

A DNG is a TIFF: here IFD 0 holds the embedded JPEG preview (NewSubFileType 1, as cameras and
Adobe's converter write it) with the camera-level DNG tags and an EXIF directory, and one
SubIFD holds the sensor data: 16-bit RGGB Bayer samples, uncompressed.  The mosaic is
sampled from the linearised picture and the colour matrix says the camera sees sRGB
primaries, so libraw's own demosaic (``postprocess``) shows the same scene as the preview.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.photos import jpeg_bytes, store_with_orientation

# TIFF field types
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_FORMATS = {_BYTE: "B", _SHORT: "H", _LONG: "I"}

WHITE_LEVEL = 65535
# XYZ (D65) -> linear sRGB: DNG's ColorMatrix1 maps XYZ to camera space, and our "camera"
# records linear sRGB.
_XYZ_TO_SRGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)


@dataclass(frozen=True)
class Entry:
    tag: int
    kind: int
    values: tuple[float, ...] | bytes | str  # numbers (ints for the integer types)

    def payload(self) -> tuple[int, bytes]:
        """(count, little-endian bytes) of the value."""
        if self.kind == _ASCII:
            text = str(self.values).encode("ascii") + b"\0"
            return len(text), text
        if isinstance(self.values, bytes):
            return len(self.values), self.values
        values = self.values
        assert isinstance(values, tuple)
        if self.kind in (_RATIONAL, _SRATIONAL):
            code = "i" if self.kind == _SRATIONAL else "I"
            pairs = [_fraction(v) for v in values]
            return len(pairs), b"".join(struct.pack(f"<{code}{code}", n, d) for n, d in pairs)
        code = _FORMATS[self.kind]
        return len(values), struct.pack(f"<{len(values)}{code}", *values)


def _fraction(value: float) -> tuple[int, int]:
    return round(value * 10_000), 10_000


def _ifd(entries: list[Entry], offset: int) -> bytes:
    """One directory placed at ``offset``, its long values right after it, no next IFD."""
    entries = sorted(entries, key=lambda e: e.tag)
    head_size = 2 + 12 * len(entries) + 4
    table = struct.pack("<H", len(entries))
    overflow = b""
    for entry in entries:
        count, data = entry.payload()
        if len(data) <= 4:
            field = data.ljust(4, b"\0")
        else:
            field = struct.pack("<I", offset + head_size + len(overflow))
            overflow += data + b"\0" * (len(data) % 2)  # values start on word boundaries
        table += struct.pack("<HHI", entry.tag, entry.kind, count) + field
    return table + struct.pack("<I", 0) + overflow


def bayer_mosaic(picture: Image.Image) -> np.ndarray:
    """16-bit RGGB samples of ``picture``: what a sensor behind a Bayer filter records."""
    srgb = np.asarray(picture.convert("RGB"))
    height, width = srgb.shape[:2]
    mosaic = np.empty((height, width), dtype=np.uint8)
    mosaic[0::2, 0::2] = srgb[0::2, 0::2, 0]  # R
    mosaic[0::2, 1::2] = srgb[0::2, 1::2, 1]  # G
    mosaic[1::2, 0::2] = srgb[1::2, 0::2, 1]  # G
    mosaic[1::2, 1::2] = srgb[1::2, 1::2, 2]  # B
    return _LINEAR[mosaic]


def _linear_levels() -> np.ndarray:
    """sRGB code value -> linear 16-bit sensor level (a sensor counts light, not gamma)."""
    srgb = np.arange(256) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return np.round(linear * WHITE_LEVEL).astype("<u2")


_LINEAR = _linear_levels()


def dng_bytes(
    upright: Image.Image,
    *,
    orientation: int = 1,
    preview_side: int | None = 512,
    preview_exif_orientation: int | None = None,
    preview_upright: bool = False,
    make: str = "Photodup",
    model: str = "Test Camera",
    taken: str = "2021:06:01 12:30:00",
) -> bytes:
    """A DNG of ``upright`` as a camera held at ``orientation`` (EXIF numbering) stores it.

    The sensor data is full size; the JPEG preview is the same stored picture scaled to
    ``preview_side`` on its longer side (None: IFD 0 holds a 64 px RGB thumbnail instead, too
    small to be a usable preview).  ``preview_exif_orientation`` tags the preview JPEG's own
    EXIF, as some cameras do; ``preview_upright`` stores the preview already upright.
    """
    stored = store_with_orientation(upright.convert("RGB"), orientation)
    width, height = stored.size
    if width % 2 or height % 2:
        raise ValueError("a Bayer sensor has even sides")
    sensor = bayer_mosaic(stored).tobytes()

    header_size = 8
    if preview_side is not None:
        preview = upright.convert("RGB") if preview_upright else stored.copy()
        preview.thumbnail((preview_side, preview_side), Image.Resampling.LANCZOS)
        preview_data = jpeg_bytes(preview, quality=90, exif_orientation=preview_exif_orientation)
        preview_tags = [
            Entry(258, _SHORT, (8, 8, 8)),
            Entry(259, _SHORT, (7,)),  # JPEG
            Entry(262, _SHORT, (6,)),  # YCbCr
        ]
    else:
        preview = stored.resize((64, max(2, 64 * height // width)), Image.Resampling.BILINEAR)
        preview_data = preview.tobytes()
        preview_tags = [
            Entry(258, _SHORT, (8, 8, 8)),
            Entry(259, _SHORT, (1,)),
            Entry(262, _SHORT, (2,)),  # RGB
        ]

    def directories(preview_at: int, sensor_at: int) -> bytes:
        """IFD 0, the sensor SubIFD and the EXIF directory, laid out from byte 8 on."""
        main_size = len(main_ifd(0, 0, 0, preview_at, sensor_at))
        raw_at = header_size + main_size
        raw = raw_ifd(raw_at, sensor_at)
        exif_at = raw_at + len(raw)
        return main_ifd(header_size, raw_at, exif_at, preview_at, sensor_at) + raw + exif(exif_at)

    def main_ifd(at: int, raw_at: int, exif_at: int, preview_at: int, sensor_at: int) -> bytes:
        return _ifd(
            [
                Entry(254, _LONG, (1,)),  # a reduced-resolution copy: the preview
                Entry(256, _LONG, (preview.width,)),
                Entry(257, _LONG, (preview.height,)),
                *preview_tags,
                Entry(271, _ASCII, make),
                Entry(272, _ASCII, model),
                Entry(273, _LONG, (preview_at,)),
                Entry(274, _SHORT, (orientation,)),
                Entry(277, _SHORT, (3,)),
                Entry(278, _LONG, (preview.height,)),
                Entry(279, _LONG, (len(preview_data),)),
                Entry(284, _SHORT, (1,)),
                Entry(330, _LONG, (raw_at,)),  # SubIFDs: the sensor data
                Entry(34665, _LONG, (exif_at,)),  # EXIF directory
                Entry(50706, _BYTE, bytes([1, 4, 0, 0])),  # DNGVersion
                Entry(50707, _BYTE, bytes([1, 1, 0, 0])),  # DNGBackwardVersion
                Entry(50708, _ASCII, f"{make} {model}"),  # UniqueCameraModel
                Entry(50721, _SRATIONAL, tuple(v for row in _XYZ_TO_SRGB for v in row)),
                Entry(50728, _RATIONAL, (1.0, 1.0, 1.0)),  # AsShotNeutral: no white balance
                Entry(50778, _SHORT, (21,)),  # CalibrationIlluminant1: D65
            ],
            at,
        )

    def raw_ifd(at: int, sensor_at: int) -> bytes:
        return _ifd(
            [
                Entry(254, _LONG, (0,)),  # the main image
                Entry(256, _LONG, (width,)),
                Entry(257, _LONG, (height,)),
                Entry(258, _SHORT, (16,)),
                Entry(259, _SHORT, (1,)),
                Entry(262, _SHORT, (32803,)),  # colour filter array
                Entry(273, _LONG, (sensor_at,)),
                Entry(277, _SHORT, (1,)),
                Entry(278, _LONG, (height,)),
                Entry(279, _LONG, (len(sensor),)),
                Entry(284, _SHORT, (1,)),
                Entry(33421, _SHORT, (2, 2)),  # CFARepeatPatternDim
                Entry(33422, _BYTE, bytes([0, 1, 1, 2])),  # CFAPattern: RGGB
                Entry(50714, _LONG, (0,)),  # BlackLevel
                Entry(50717, _LONG, (WHITE_LEVEL,)),  # WhiteLevel
            ],
            at,
        )

    def exif(at: int) -> bytes:
        return _ifd(
            [
                Entry(0x9003, _ASCII, taken),
                Entry(0x829A, _RATIONAL, (1 / 125,)),  # exposure time
                Entry(0x8827, _SHORT, (200,)),  # ISO
            ],
            at,
        )

    # Directories first, as cameras write them; their size does not depend on the offsets.
    preview_at = header_size + len(directories(0, 0))
    sensor_at = preview_at + len(preview_data) + len(preview_data) % 2
    padding = b"\0" * (len(preview_data) % 2)
    head = b"II*\0" + struct.pack("<I", header_size)
    return head + directories(preview_at, sensor_at) + preview_data + padding + sensor
