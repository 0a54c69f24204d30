"""Large PNG, TIFF, WebP and HEIF pictures are shrunk right after decoding, as JPEG's draft
shrinks them while decoding, and the decode still describes the same picture.

A 12 MP PNG used to go through the hash's grayscale conversion and 32x32 Lanczos at full size
(and the pixel checks' thumbnails after it): 10-20% of its decode.  These tests pin both halves:
the picture handed on is small, and its hash, model pixels and orientation are those of the
full-size picture.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from photodupd import imaging
from photodupd.imaging import PreprocessSpec, decode, load_preview, phash
from tests.photos import encode, exif_bytes, hamming, make_photo, store_with_orientation

SPEC = PreprocessSpec(size=224, resize=256)
SIZE = (2400, 1800)  # 7x the draft side: the decode may shrink it by 3, to 800x600
FORMATS: dict[str, dict[str, Any]] = {
    "PNG": {},
    "TIFF": {},
    "WEBP": {"quality": 90},
    "HEIF": {"quality": 90},
}


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    return make_photo(23, SIZE, noise=4.0)


@pytest.fixture(scope="module")
def encoded(upright: Image.Image) -> dict[str, bytes]:
    return {fmt: encode(upright, fmt, **params) for fmt, params in FORMATS.items()}


def full_size(data: bytes) -> Image.Image:
    """The picture decoded the plain way, at full size: the reference."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def mean_diff(a: np.ndarray | None, b: np.ndarray | None) -> float:
    assert a is not None and b is not None
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_large_pictures_are_handed_on_shrunk(encoded: dict[str, bytes], fmt: str) -> None:
    picture = imaging._decode_upright(encoded[fmt], SPEC.resize)
    assert (picture.width, picture.height) == SIZE  # the facts stay the full size
    shorter = min(picture.image.size)
    assert 2 * SPEC.resize <= shorter < 4 * SPEC.resize
    assert picture.image.size[0] * SIZE[1] == picture.image.size[1] * SIZE[0]  # same shape


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_hash_and_pixels_are_those_of_the_full_size_picture(
    encoded: dict[str, bytes], fmt: str
) -> None:
    result = decode(encoded[fmt], is_data=True, spec=SPEC)
    reference = full_size(encoded[fmt])
    assert (result.width, result.height) == SIZE
    assert hamming(result.phash, phash(reference)) <= 2
    assert mean_diff(result.pixels, imaging._model_pixels(reference, SPEC)) < 2.0


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_shrunk_pictures_are_still_turned_upright(upright: Image.Image, fmt: str) -> None:
    """PNG and WebP are turned by photodup itself, after the shrink: a portrait stays one."""
    stored = store_with_orientation(upright, 6)
    data = encode(stored, fmt, exif=exif_bytes(orientation=6), **FORMATS[fmt])
    result = decode(data, is_data=True, spec=SPEC)
    plain = decode(encode(upright, fmt, **FORMATS[fmt]), is_data=True, spec=SPEC)
    assert (result.width, result.height) == SIZE
    assert hamming(result.phash, plain.phash) <= 2
    assert mean_diff(result.pixels, plain.pixels) < 2.0
    # Not vacuous: the stored (turned) pixels hash far from the upright picture.
    assert hamming(phash(stored), plain.phash) > 10


def test_pictures_kept_with_their_alpha_are_not_shrunk(upright: Image.Image) -> None:
    """A box filter on straight alpha smears colour out of transparent pixels: an RGBA picture
    asked for with its alpha (the pixel checks) is left as decoded; the caller resamples it."""
    rgba = upright.convert("RGBA")
    rgba.putalpha(128)
    data = encode(rgba, "PNG")
    kept = imaging._decode_upright(data, SPEC.resize, keep_alpha=True).image
    assert (kept.mode, kept.size) == ("RGBA", SIZE)
    flattened = imaging._decode_upright(data, SPEC.resize).image  # onto white: shrunk
    assert flattened.mode == "RGB" and min(flattened.size) < 4 * SPEC.resize
    preview = load_preview(data, SPEC.resize, is_data=True, alpha=True)
    assert preview.mode == "RGBA" and max(preview.size) == SPEC.resize
