"""EXIF orientation turns the *pixels* of every format that carries it, not only the size.

``test_imaging`` checks pixels for JPEG and only the reported size for PNG, WebP, TIFF and
HEIF: a decoder that turned the size but not the pixels of those would pass it, and its
pHash of a phone's portrait PNG would be ~30 bits away from the same picture upright.
(Pillow's TIFF plugin and libheif turn their pictures themselves and drop the tag; PNG and
WebP are turned by photodup.  The tests check the outcome for all of them.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from photodupd.imaging import PreprocessSpec, decode, load_preview
from tests.photos import encode, exif_bytes, hamming, make_photo, store_with_orientation

SPEC = PreprocessSpec(size=224, resize=256)
#: Lossless containers decode to the very same pixels; HEIF is lossy, but only slightly.
LOSSLESS: dict[str, dict[str, Any]] = {"PNG": {}, "WEBP": {"lossless": True}, "TIFF": {}}
LOSSY: dict[str, dict[str, Any]] = {"HEIF": {"quality": 95}, "JPEG": {"quality": 95}}


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    return make_photo(7, (320, 240))  # a random scene: no orientation looks like another


def tagged(upright: Image.Image, orientation: int, fmt: str, params: dict[str, Any]) -> bytes:
    """What a camera writes: stored pixels plus the tag saying how to show them."""
    stored = store_with_orientation(upright, orientation)
    return encode(stored, fmt, exif=exif_bytes(orientation=orientation), **params)


def mean_diff(a: np.ndarray | None, b: np.ndarray | None) -> float:
    assert a is not None and b is not None
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("fmt", sorted(LOSSLESS))
def test_lossless_formats_decode_to_the_upright_pixels(
    upright: Image.Image, fmt: str, orientation: int
) -> None:
    params = LOSSLESS[fmt]
    reference = decode(encode(upright, fmt, **params), is_data=True, spec=SPEC)
    result = decode(tagged(upright, orientation, fmt, params), is_data=True, spec=SPEC)
    assert (result.width, result.height) == (320, 240)
    assert result.pixels is not None and reference.pixels is not None
    assert np.array_equal(result.pixels, reference.pixels)
    assert result.phash == reference.phash
    # Not vacuous: the same stored pixels shown as stored look nothing like the upright.
    untagged = decode(
        encode(store_with_orientation(upright, orientation), fmt, **params), is_data=True
    )
    assert untagged.phash != reference.phash


@pytest.mark.parametrize("orientation", [3, 6])
@pytest.mark.parametrize("fmt", sorted(LOSSY))
def test_lossy_formats_decode_to_nearly_the_upright_pixels(
    upright: Image.Image, fmt: str, orientation: int
) -> None:
    params = LOSSY[fmt]
    reference = decode(encode(upright, fmt, **params), is_data=True, spec=SPEC)
    result = decode(tagged(upright, orientation, fmt, params), is_data=True, spec=SPEC)
    assert (result.width, result.height) == (320, 240)
    assert mean_diff(result.pixels, reference.pixels) < 3  # a wrong turn differs everywhere
    assert hamming(result.phash, reference.phash) <= 4


@pytest.mark.parametrize("fmt", sorted(LOSSLESS))
def test_previews_are_upright_too(upright: Image.Image, fmt: str) -> None:
    """The same-shot and same-picture checks compare previews, not the model's pixels."""
    params = LOSSLESS[fmt]
    preview = load_preview(tagged(upright, 6, fmt, params), 128, is_data=True)
    reference = load_preview(encode(upright, fmt, **params), 128, is_data=True)
    assert preview.size == reference.size == (128, 96)
    assert np.array_equal(np.asarray(preview), np.asarray(reference))
