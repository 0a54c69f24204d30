"""Camera RAW files through the one decoder: real DNG files that libraw opens, decoded from
their embedded preview (upright, sensor size reported), developed when the preview is too
small, refused when cut short, and within the daemon's decoder memory cap."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from photodupd import imaging
from photodupd.config import DaemonConfig
from photodupd.decodepool import DecoderPool
from photodupd.imaging import ImageError, PreprocessSpec
from photodupd.protocol import ErrorCode, FeatureItem
from tests.dng import dng_bytes
from tests.photos import encode, hamming, make_photo

rawpy = pytest.importorskip(
    "rawpy", reason="rawpy (the photodup[raw] extra) is not installed; the test extra has it"
)

UPRIGHT_SIZE = (768, 1024)  # the photo as seen, portrait
PREVIEW_UPRIGHT = (384, 512)  # dng_bytes' default 512 px preview, upright
WRONG_WAYS = (
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_LEFT_RIGHT,
)


@pytest.fixture(scope="module")
def upright() -> Image.Image:
    return make_photo(7, UPRIGHT_SIZE)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def assert_upright(phash: int, upright: Image.Image) -> None:
    """The hash is the upright photo's, and clearly not that of any wrong turn of it."""
    assert hamming(phash, imaging.phash(upright)) <= 6
    for method in WRONG_WAYS:
        assert hamming(phash, imaging.phash(upright.transpose(method))) >= 16


def test_libraw_itself_opens_the_test_dng(upright: Image.Image) -> None:
    with rawpy.imread(io.BytesIO(dng_bytes(upright, orientation=6))) as raw:
        assert (raw.sizes.width, raw.sizes.height, raw.sizes.flip) == (1024, 768, 6)
        assert raw.extract_thumb().format == rawpy.ThumbFormat.JPEG


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_dng_decodes_from_its_preview_upright_with_the_sensor_size(
    tmp_path: Path, upright: Image.Image, orientation: int
) -> None:
    path = write(tmp_path, "IMG_0001.DNG", dng_bytes(upright, orientation=orientation))
    decoded = imaging.decode(path, spec=PreprocessSpec())
    assert (decoded.width, decoded.height) == UPRIGHT_SIZE  # the sensor's, not the preview's
    assert decoded.format == "RAW"
    assert decoded.taken == "2021-06-01T12:30:00"
    assert decoded.camera == "Photodup Test Camera"
    assert decoded.exif_fields > 0
    assert decoded.pixels is not None and decoded.pixels.shape == (224, 224, 3)
    assert_upright(decoded.phash, upright)
    # The picture is the 512 px preview (drafted and turned), not a development of the sensor.
    preview = imaging.load_preview(path, 4096)
    assert preview.size == PREVIEW_UPRIGHT
    assert_upright(imaging.phash(preview), upright)


def test_a_preview_with_its_own_orientation_is_turned_once(
    tmp_path: Path, upright: Image.Image
) -> None:
    data = dng_bytes(upright, orientation=6, preview_exif_orientation=6)
    path = write(tmp_path, "tagged.dng", data)
    decoded = imaging.decode(path)
    assert (decoded.width, decoded.height) == UPRIGHT_SIZE
    assert_upright(decoded.phash, upright)


def test_a_preview_stored_upright_is_not_turned_on_its_side(
    tmp_path: Path, upright: Image.Image
) -> None:
    path = write(tmp_path, "upright.dng", dng_bytes(upright, orientation=6, preview_upright=True))
    decoded = imaging.decode(path)
    assert (decoded.width, decoded.height) == UPRIGHT_SIZE
    assert_upright(decoded.phash, upright)


@pytest.mark.parametrize("orientation", [1, 6])
def test_without_a_usable_preview_the_sensor_data_is_developed(
    tmp_path: Path, upright: Image.Image, orientation: int
) -> None:
    data = dng_bytes(upright, orientation=orientation, preview_side=None)  # a 64 px thumbnail
    path = write(tmp_path, "nopreview.dng", data)
    decoded = imaging.decode(path, spec=PreprocessSpec())
    assert (decoded.width, decoded.height) == UPRIGHT_SIZE
    assert_upright(decoded.phash, upright)
    developed = imaging.load_preview(path, 4096)
    assert developed.size == (UPRIGHT_SIZE[0] // 2, UPRIGHT_SIZE[1] // 2)  # libraw's half size


def test_raw_bytes_sent_as_data_are_recognised(upright: Image.Image) -> None:
    data = dng_bytes(upright, orientation=8)
    decoded = imaging.decode(data, is_data=True)
    assert (decoded.format, decoded.width, decoded.height) == ("RAW", *UPRIGHT_SIZE)
    assert_upright(decoded.phash, upright)


@pytest.mark.parametrize(
    "where", ["in its directories", "in the preview", "in the sensor data", "one byte short"]
)
def test_a_raw_cut_short_is_a_truncated_item_even_with_its_preview_intact(
    tmp_path: Path, upright: Image.Image, where: str
) -> None:
    data = dng_bytes(upright, orientation=6)
    whole = imaging.decode(write(tmp_path, "whole.dng", data))
    assert whole.format == "RAW"
    cut = {
        "in its directories": 120,
        "in the preview": 2_000,
        "in the sensor data": len(data) // 2,
        "one byte short": len(data) - 1,
    }[where]
    path = write(tmp_path, "cut.dng", data[:cut])
    with pytest.raises(ImageError) as caught:
        imaging.decode(path)
    assert caught.value.code is ErrorCode.TRUNCATED


def test_the_preview_obeys_the_pixel_limit(
    tmp_path: Path, upright: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "big.dng", dng_bytes(upright))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # below the 384x512 preview
    with pytest.raises(ImageError) as caught:
        imaging.decode(path)
    assert caught.value.code is ErrorCode.TOO_LARGE


def test_files_with_a_raw_name_that_are_not_raw(tmp_path: Path) -> None:
    photo = make_photo(3, (320, 240))
    jpeg = imaging.decode(write(tmp_path, "saved-as.nef", encode(photo, "JPEG")))
    assert (jpeg.format, jpeg.width, jpeg.height) == ("JPEG", 320, 240)  # decoded as what it is
    with pytest.raises(ImageError) as junk:
        imaging.decode(write(tmp_path, "junk.cr2", b"not a photo at all " * 40))
    assert junk.value.code is ErrorCode.NOT_AN_IMAGE
    # A TIFF that libraw does not take: not reported as its own thumbnail-sized photo.
    with pytest.raises(ImageError) as tiff:
        imaging.decode(write(tmp_path, "scan.arw", encode(photo, "TIFF")))
    assert tiff.value.code is ErrorCode.UNSUPPORTED_FORMAT


# --------------------------------------------------------------------------
# A 24-megapixel RAW in the daemon's isolated decoder, under its default memory cap


@pytest.fixture(scope="module")
def big_raws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("big-raws")
    scene = make_photo(11, (6000, 4000), noise=0)
    with_preview = write(folder, "big.dng", dng_bytes(scene, orientation=6, preview_side=1620))
    without = write(folder, "big-nopreview.dng", dng_bytes(scene, preview_side=None))
    yield with_preview, without


def test_a_24_megapixel_raw_decodes_within_the_decoder_memory_cap(
    big_raws: tuple[Path, Path],
) -> None:
    with_preview, without = big_raws
    memory_mb = DaemonConfig().decode_memory_mb
    with DecoderPool(workers=1, timeout=60.0, memory_mb=memory_mb) as pool:
        previewed = pool.submit(FeatureItem(path=str(with_preview)), PreprocessSpec()).result()
        developed = pool.submit(FeatureItem(path=str(without)), PreprocessSpec()).result()
    assert (previewed.format, previewed.width, previewed.height) == ("RAW", 6000, 4000)
    assert (developed.format, developed.width, developed.height) == ("RAW", 6000, 4000)
    assert previewed.pixels is not None and previewed.pixels.shape == (224, 224, 3)
    assert developed.pixels is not None and developed.pixels.shape == (224, 224, 3)
    # Both show the same scene: the preview path and libraw's development agree.
    assert hamming(previewed.phash, developed.phash) <= 8
