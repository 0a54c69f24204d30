"""The catalogue of hostile inputs (issue 6): frames and images, one source for all uses.

The daemon tests send every entry to a real photodupd, the fuzz harnesses start
their corpus from them and ``bench/load_bench.py`` counts them under load, so
an attack added here is exercised everywhere.

Frames are complete byte strings as a client would write them after ``hello``
(4-byte length prefix included); each carries the connection-level error code
the daemon must answer before it closes the connection.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgpack

from photodupd import protocol
from photodupd.protocol import ErrorCode
from tests.photos import claimed_size_file, encode, jpeg_bytes, make_photo, raw_exif

U32: Final = struct.Struct(">I")

#: Pillow's default MAX_IMAGE_PIXELS; the bombs below claim multiples of it.
PILLOW_MAX_PIXELS: Final = 89_478_485

# A map header and the envelope of a ping, to which the attacks append one more key.
_PING_3 = b"\x83\xa2id\x01\xa2op\xa4ping"


def framed(body: bytes) -> bytes:
    """``body`` behind a length prefix that tells the truth."""
    return U32.pack(len(body)) + body


def _extra_field(value: bytes) -> bytes:
    """A ping frame with a third key ``x`` whose msgpack-encoded value is ``value``."""
    return framed(_PING_3 + b"\xa1x" + value)


@dataclass(frozen=True)
class HostileFrame:
    payload: bytes
    code: ErrorCode  # the error the daemon answers before closing the connection


def _frames() -> dict[str, HostileFrame]:
    bad, big = ErrorCode.BAD_FRAME, ErrorCode.FRAME_TOO_LARGE
    two_million_int_keys = b"\xdf" + U32.pack(2_000_000) + b"\x01\x02" * 2_000_000
    many_keys = {f"k{i}": i for i in range(protocol.MAX_MAP_LEN + 1)}
    return {
        # Length prefixes: refused from the 4 header bytes alone, before any allocation.
        "length prefix 4 GiB": HostileFrame(U32.pack(0xFFFF_FFFF), big),
        "length prefix MAX_FRAME+1": HostileFrame(U32.pack(protocol.MAX_FRAME + 1), big),
        "length prefix 0": HostileFrame(U32.pack(0), bad),
        # Headers inside a small frame that claim far more than the frame holds.
        "str32 claiming 4 GB": HostileFrame(_extra_field(b"\xdb" + U32.pack(0xFFFF_FFF0)), bad),
        "bin32 claiming 4 GB": HostileFrame(
            _extra_field(b"\xc6" + U32.pack(0xFFFF_FFF0) + b"xx"), bad
        ),
        "array32 claiming 4G items": HostileFrame(
            _extra_field(b"\xdd" + U32.pack(0xFFFF_FFFF) + b"\xc0"), bad
        ),
        "map32 claiming 4G pairs": HostileFrame(framed(b"\xdf" + U32.pack(0xFFFF_FFFF)), bad),
        "ext32 claiming 4 GB": HostileFrame(
            _extra_field(b"\xc9" + U32.pack(0xFFFF_FFF0) + b"\x05abc"), bad
        ),
        # Maps: two million int keys (4 MB, every byte sent), and too many str keys.
        "map of 2M int keys": HostileFrame(framed(two_million_int_keys), bad),
        "int key": HostileFrame(framed(msgpack.packb({"id": 1, "op": "ping", 7: 1})), bad),
        "map over MAX_MAP_LEN": HostileFrame(framed(msgpack.packb(many_keys)), bad),
        # Nesting 100,000 deep, as arrays and as maps.
        "arrays nested 100k deep": HostileFrame(_extra_field(b"\x91" * 100_000 + b"\xc0"), bad),
        "maps nested 100k deep": HostileFrame(_extra_field(b"\x81\xa1a" * 100_000 + b"\xc0"), bad),
        # Ext types of every size class, the msgpack timestamp (-1) included.
        "fixext1": HostileFrame(_extra_field(msgpack.packb(msgpack.ExtType(1, b"x"))), bad),
        "ext8 empty": HostileFrame(_extra_field(b"\xc7\x00\x05"), bad),
        "timestamp ext -1": HostileFrame(_extra_field(msgpack.packb(msgpack.Timestamp(0))), bad),
        "timestamp ext -1 empty": HostileFrame(_extra_field(b"\xc7\x00\xff"), bad),
        # Text that is not UTF-8, as a value, as a key, and an encoded surrogate.
        "invalid UTF-8 value": HostileFrame(_extra_field(b"\xa2\xff\xfe"), bad),
        "invalid UTF-8 key": HostileFrame(framed(_PING_3 + b"\xa2\xc3\x28\x01"), bad),
        "UTF-8 surrogate": HostileFrame(_extra_field(b"\xa3\xed\xa0\x80"), bad),
        # Not one msgpack map.
        "array at top level": HostileFrame(framed(msgpack.packb(["ping", 1])), bad),
        "int at top level": HostileFrame(framed(b"\x01"), bad),
        "nil at top level": HostileFrame(framed(b"\xc0"), bad),
        "reserved byte 0xc1": HostileFrame(framed(b"\xc1"), bad),
        "body cut inside a str": HostileFrame(framed(b"\x82\xa2id\x01\xa2op\xa4pi"), bad),
        "two documents in one frame": HostileFrame(
            framed(msgpack.packb({"id": 1, "op": "ping"}) * 2), bad
        ),
    }


HOSTILE_FRAMES: Final = _frames()


def amplifying_frame(megabytes: float, element: bytes = b"\x90") -> bytes:
    """A ping whose extra field holds ``megabytes`` of one-byte empty containers.

    Every limit is respected (arrays of 4096, shallow nesting, frame far below
    MAX_FRAME), yet each byte becomes a new Python object of ~70 bytes when
    unpacked: the frame costs ~70x its size in memory and seconds of CPU.
    """
    per_array = 4096
    arrays = max(1, int(megabytes * 1_000_000) // (per_array + 5))
    inner = b"\xdd" + U32.pack(per_array) + element * per_array
    return _extra_field(b"\xdd" + U32.pack(arrays) + inner * arrays)


# --------------------------------------------------------------------------------- images

IMAGE_ERRORS: Final = frozenset(
    {
        ErrorCode.NOT_AN_IMAGE,
        ErrorCode.UNSUPPORTED_FORMAT,
        ErrorCode.TRUNCATED,
        ErrorCode.TOO_LARGE,
    }
)


def good_image(seed: int = 1, size: tuple[int, int] = (160, 120)) -> bytes:
    return jpeg_bytes(make_photo(seed, size), quality=85)


def _side(factor: float) -> int:
    return int((factor * PILLOW_MAX_PIXELS) ** 0.5) + 1


def _insert_png_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    chunk = U32.pack(len(payload)) + kind + payload + U32.pack(zlib.crc32(kind + payload))
    ihdr_end = 8 + 25  # signature + IHDR chunk
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def _webp_canvas(width: int, height: int) -> bytes:
    vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _many_frame_gif(frames: int) -> bytes:
    tiles = [make_photo(seed, (32, 32)).convert("P") for seed in range(3)]  # no quantising
    buffer = io.BytesIO()
    tiles[0].save(
        buffer, "GIF", save_all=True, append_images=(tiles * frames)[: frames - 1], duration=1
    )
    return buffer.getvalue()


@functools.cache
def decompression_bombs() -> dict[str, tuple[bytes, frozenset[ErrorCode]]]:
    """Bombs and the item outcomes allowed for each: never a timeout, a crash or an allocation."""
    too_large = frozenset({ErrorCode.TOO_LARGE})
    bombs: dict[str, tuple[bytes, frozenset[ErrorCode]]] = {}
    for fmt in ("PNG", "GIF", "TIFF", "BMP", "JPEG"):
        for factor in (2.0, 1.2):
            side = _side(factor)
            bombs[f"{fmt} header claiming {factor}x MAX_IMAGE_PIXELS"] = (
                claimed_size_file(fmt, side, side),
                too_large,
            )
    bombs["WebP VP8X canvas 16384x16384"] = (_webp_canvas(16384, 16384), too_large)
    # zlib bombs in PNG side chunks (Pillow CVE-2019-16865 class): 64 MB of text from 62 kB,
    # 64 times Pillow's MAX_TEXT_CHUNK.
    zbomb = zlib.compress(bytes(64 * 2**20), 9)
    png = encode(make_photo(3, (64, 48)), "PNG")
    refused = frozenset({ErrorCode.NOT_AN_IMAGE, ErrorCode.TOO_LARGE})
    bombs["PNG zTXt zlib bomb"] = (_insert_png_chunk(png, b"zTXt", b"c\0\0" + zbomb), refused)
    bombs["PNG iTXt zlib bomb"] = (_insert_png_chunk(png, b"iTXt", b"c\0\1\0\0\0" + zbomb), refused)
    bombs["PNG iCCP zlib bomb"] = (_insert_png_chunk(png, b"iCCP", b"icc\0\0" + zbomb), refused)
    # Only the first frame is decoded: 900 frames cost no more than one.
    bombs["GIF with 900 frames"] = (_many_frame_gif(900), frozenset())
    return bombs


def _saved(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    make_photo(18, (64, 64)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _psd_header() -> bytes:
    return (
        b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + (64).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03"
    )


def _fli_header() -> bytes:
    header = struct.pack("<IHHHHHH", 128, 0xAF12, 1, 64, 64, 8, 3) + bytes(114)
    return header + bytes(64)


#: Containers outside the allow-list, many with a Pillow CVE history (PCX, SGI, PSD, FLI,
#: ICNS, BLP, J2K, EPS, DDS, TGA ...): each must be an item error before any parser runs.
UNSUPPORTED_CONTAINERS: Final[dict[str, Callable[[], bytes]]] = {
    "PCX": lambda: _saved("PCX"),
    "ICO": lambda: _saved("ICO"),
    "ICNS": lambda: _saved("ICNS"),
    "PPM": lambda: _saved("PPM"),
    "QOI": lambda: _saved("QOI"),
    "SGI": lambda: _saved("SGI"),
    "JPEG2000": lambda: _saved("JPEG2000"),
    "DDS": lambda: _saved("DDS"),
    "MSP": lambda: _saved("MSP", "1"),
    "XBM": lambda: _saved("XBM", "1"),
    "TGA": lambda: _saved("TGA"),
    "IM": lambda: _saved("IM"),
    "SPIDER": lambda: _saved("SPIDER", "F"),
    "PDF": lambda: _saved("PDF"),
    "PSD": _psd_header,
    "FLI": _fli_header,
    "BLP": lambda: b"BLP1" + bytes(28) + bytes(64),
    "EPS": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
}

#: Of those, the ones without a signature Pillow knows: plain "not an image".
NO_SIGNATURE: Final = frozenset({"IM", "SPIDER", "PDF"})


def unsupported_code(name: str) -> ErrorCode:
    return ErrorCode.NOT_AN_IMAGE if name in NO_SIGNATURE else ErrorCode.UNSUPPORTED_FORMAT


#: Formats the allow-list admits, cut to two thirds: each must be "truncated".
TRUNCATABLE_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "HEIF")


def truncated_images() -> dict[str, bytes]:
    out = {}
    for fmt in TRUNCATABLE_FORMATS:
        full = encode(make_photo(17, (320, 240)), fmt)
        out[fmt] = full[: len(full) * 2 // 3]
    return out


def malformed_exif_jpegs() -> dict[str, bytes]:
    """JPEGs whose EXIF is broken in the ways cameras and editors have broken it."""
    short, long_ = 3, 4
    payloads = {
        "orientation count past the end": raw_exif([(0x0112, short, 0x7FFFFFFF, b"\6\0")]),
        "orientation of unknown type": raw_exif([(0x0112, 99, 1, b"\6\0")]),
        "Exif IFD pointing at itself": raw_exif([(0x8769, long_, 1, (8).to_bytes(4, "little"))]),
        "next IFD loop": raw_exif([(0x010F, short, 1, b"\1\0")], sub_ifd_offset=8),
        "garbage after the header": b"Exif\0\0II*\0\xff\xff\xff\x7f" + bytes(40),
        "not TIFF at all": b"Exif\0\0" + bytes(range(200)),
    }
    photo = make_photo(19, (160, 120))
    return {name: jpeg_bytes(photo, exif=payload) for name, payload in payloads.items()}


def image_kinds() -> dict[str, int]:
    """How many hostile images of each kind the catalogue holds (for the bench table)."""
    return {
        "decompression bombs": len(decompression_bombs()),
        "formats outside the allow-list": len(UNSUPPORTED_CONTAINERS),
        "truncated files": len(TRUNCATABLE_FORMATS),
        "malformed EXIF": len(malformed_exif_jpegs()),
    }
