"""The model's input as it travels to a remote photodupd: a ``pixels`` item (torch-free).

With ``upload = "reduced"`` the client decodes each photo here, in its own isolated decoders,
exactly as the daemon would (:func:`photodupd.imaging.decode` with the model's
:class:`~photodupd.imaging.PreprocessSpec`), and sends only the model's input: ``side`` x
``side`` RGB, lossless, so the remote model sees the very pixels a local daemon would have
made and the embedding is the same.  Everything else a scan needs (pHash, size, format,
EXIF facts) was learnt by the same local decode and never travels.

Wire form: each row's bytes as differences from the pixel to their left (per channel,
modulo 256), then zlib at level 1.  Photos compress to about 60-70% of the raw 150 KB of a
224 x 224 input (~95 KB), in ~2 ms; PNG would save ~10% more but would need an image
parser on the daemon side, and this needs none: the receiver inflates at most
``side * side * 3 + 1`` bytes and refuses anything that is not exactly that size.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from photodupd.imagebase import ImageError
from photodupd.imaging import Decoded, DecodeSpec, PreprocessSpec, decode_item, model_spec
from photodupd.protocol import ErrorCode, FeatureItem

#: zlib level: 1 is 5-10x faster than 6 for ~3% more bytes.
LEVEL: Final = 1


def pack(pixels: np.ndarray) -> bytes:
    """``(side, side, 3)`` uint8 RGB -> the wire bytes of a ``pixels`` item."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(
            f"expected (side, side, 3) uint8 pixels, got {pixels.dtype} {pixels.shape}"
        )
    # uint8 arithmetic wraps: the difference is exact modulo 256, and so is its undoing.
    deltas = np.diff(pixels, axis=1, prepend=np.zeros_like(pixels[:, :1]))
    return zlib.compress(deltas.tobytes(), LEVEL)


def unpack(packed: bytes, side: int) -> np.ndarray:
    """The wire bytes -> ``(side, side, 3)`` uint8; :class:`ImageError` when they are not
    exactly that (never inflates more than one byte past the expected size)."""
    expected = side * side * 3
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed, expected + 1)
    except zlib.error as exc:
        raise ImageError(ErrorCode.NOT_AN_IMAGE, f"pixels do not inflate: {exc}") from None
    # Bytes after the stream (unused_data) are refused too: exactly one image, nothing else.
    if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise ImageError(
            ErrorCode.NOT_AN_IMAGE, f"pixels are not {side}x{side} RGB ({len(raw)} bytes or more)"
        )
    deltas = np.frombuffer(raw, dtype=np.uint8).reshape(side, side, 3)
    return np.cumsum(deltas, axis=1, dtype=np.uint8)


def decoded_from_item(item: FeatureItem, spec: PreprocessSpec | None) -> Decoded:
    """The daemon's side: a ``pixels`` item as the model thread takes it.  Only the pixels
    are real; the facts are the client's, so they are left empty here."""
    if spec is None or item.pixels is None:
        raise ImageError(ErrorCode.INTERNAL, "a pixels item needs the model's input spec")
    if item.side != spec.size:
        raise ImageError(
            ErrorCode.NOT_AN_IMAGE,
            f"pixels of {item.side}x{item.side} do not fit the model input {spec.size}x{spec.size}",
        )
    pixels = unpack(item.pixels, item.side)
    return Decoded(pixels=pixels, phash=0, width=item.side, height=item.side, format="RGB")


@dataclass(frozen=True, slots=True)
class ForUpload:
    """The client's side: what the local decode learnt, and the model input to send."""

    decoded: Decoded  # pixels dropped: they travel packed
    packed: bytes
    side: int

    def item(self) -> dict[str, object]:
        return {"pixels": self.packed, "side": self.side}


def decode_for_upload(item: FeatureItem, spec: PreprocessSpec | DecodeSpec | None) -> Decoded:
    """A decoder pool's ``decode_fn`` for reduced uploads: the daemon's own decode, packed in
    the worker process (so the scanning process never holds or compresses full pixels); a
    :class:`DecodeSpec` asking for the thumbnail gets it from the same decode.

    Returns a :class:`Decoded` (what the pool insists on) whose ``pixels`` is the packed
    bytes as a 1-D uint8 array: :func:`for_upload` turns it back into a :class:`ForUpload`."""
    decoded = decode_item(item, spec)
    if decoded.pixels is None or model_spec(spec) is None:
        raise ImageError(ErrorCode.INTERNAL, "reduced upload needs the model's input spec")
    return replace(decoded, pixels=np.frombuffer(pack(decoded.pixels), dtype=np.uint8))


def for_upload(decoded: Decoded, spec: PreprocessSpec) -> ForUpload:
    """What :func:`decode_for_upload` returned, as the upload needs it."""
    assert decoded.pixels is not None
    packed = decoded.pixels.tobytes()
    return ForUpload(replace(decoded, pixels=None), packed, spec.size)
