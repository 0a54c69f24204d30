"""A photo pair's levels read from its pictures' means (issue 14): the blocks of the detail
size are blocks of a picture four times smaller whose pixels are the means of its squares, so
a 12 MP JPEG is decoded for them at its 1/8 DCT scale.  The means must be those of the detail
size's picture (to rounding), for every orientation and for sizes that leave a partial DCT
block at an edge; and the verdicts those of the full-size levels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, JpegImagePlugin

from photodup_tui.engine import pixeljobs, sameshot
from photodupd import imaging
from photodupd.imagebase import ORIENT_TRANSPOSE, REVERSES_AXES, SWAPS_AXES
from tests.photos import exif_bytes

REDUCTION = sameshot.LEVEL_REDUCTION


def square_means(picture: Image.Image, side: int) -> np.ndarray:
    """The mean colour of every whole side x side square, in float64."""
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
    h, w = (n // side for n in pixels.shape[:2])
    return pixels[: h * side, : w * side].reshape(h, side, w, side, 3).mean(axis=(1, 3))


def sharp_photo(size: tuple[int, int]) -> Image.Image:
    """A photo with sharp edges everywhere (a shifted grid of means would show at once)."""
    picture = Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(picture)
    for x in range(0, size[0], 37):
        draw.line([(x, 0), (x, size[1])], fill=(0, 0, 0), width=3)
    for y in range(0, size[1], 29):
        draw.line([(0, y), (size[0], y)], fill=(255, 255, 255), width=2)
    return picture


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_reverses_axes_says_where_pillows_transpose_puts_the_last_stored_pixel(
    orientation: int,
) -> None:
    stored = np.zeros((3, 4), np.uint8)
    stored[2, 3] = 255  # the stored picture's last row and column: a partial DCT block
    method = ORIENT_TRANSPOSE.get(orientation)
    upright = Image.fromarray(stored)
    if method is not None:
        upright = upright.transpose(method)
    y, x = np.argwhere(np.asarray(upright) == 255)[0]
    height, width = np.asarray(upright).shape
    assert (width, height) == ((3, 4) if orientation in SWAPS_AXES else (4, 3))
    assert REVERSES_AXES[orientation] == (x == 0, y == 0)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_the_means_of_a_jpeg_are_its_detail_pictures_for_every_orientation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orientation: int
) -> None:
    """Stored 1606x1202: neither side a whole number of 8x8 blocks, so the 1/8 decode ends in
    a partial block, which orientations 2, 3, 4, 6, 7 and 8 turn to the upright start."""
    stored = (1606, 1202)
    sharp_photo(stored).save(
        tmp_path / "p.jpg", quality=95, exif=exif_bytes(orientation=orientation)
    )
    upright = (stored[1], stored[0]) if orientation in SWAPS_AXES else stored
    size = (upright[0] // 2, upright[1] // 2)  # as detail_size makes it for a 12 MP photo
    decoded: list[tuple[int, int]] = []
    load = JpegImagePlugin.JpegImageFile.load

    def spy(self: JpegImagePlugin.JpegImageFile) -> object:
        result = load(self)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    means = imaging.load_means(str(tmp_path / "p.jpg"), size, REDUCTION)
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", load)
    expected = square_means(imaging.load_sized(str(tmp_path / "p.jpg"), size), REDUCTION)
    assert means.size == (size[0] // REDUCTION, size[1] // REDUCTION)
    difference = np.abs(np.asarray(means, dtype=np.float64) - expected)
    assert float(difference.max()) <= 4.0 and float(difference.mean()) <= 0.6
    turned_first = any(REVERSES_AXES[orientation])
    # At 1/8 where no partial block comes first, else at the scale that has none (1/2).
    assert decoded[-1] == ((803, 601) if turned_first else (201, 151))


def test_the_means_of_a_png_are_exact(tmp_path: Path) -> None:
    sharp_photo((1600, 1200)).save(tmp_path / "p.png")
    means = imaging.load_means(str(tmp_path / "p.png"), (800, 600), REDUCTION)
    expected = square_means(Image.open(tmp_path / "p.png"), 2 * REDUCTION)
    assert means.size == (200, 150)
    assert float(np.abs(np.asarray(means, dtype=np.float64) - expected).max()) <= 0.5


def test_a_size_that_is_no_whole_fraction_takes_the_detail_picture_itself(
    tmp_path: Path,
) -> None:
    """The larger side of a resized pair (4000 px against 3000): its detail picture is
    resampled, and the means are taken from exactly that picture."""
    sharp_photo((1600, 1200)).save(tmp_path / "p.jpg", quality=90)
    size = (600, 450)
    means = imaging.load_means(str(tmp_path / "p.jpg"), size, REDUCTION)
    picture = imaging.load_sized(str(tmp_path / "p.jpg"), size)
    expected = square_means(picture, REDUCTION)
    assert float(np.abs(np.asarray(means, dtype=np.float64) - expected).max()) <= 0.5


def test_same_levels_reads_the_levels_of_the_detail_check() -> None:
    """On pictures whose means are exact, the levels from the means are the full-size
    pictures' levels (to the rounding of a mean): re-encodes pass, a small bar fails."""
    picture = sharp_photo((800, 600))
    copies = [picture.copy()]
    for quality in (90, 70):
        stream = io.BytesIO()
        picture.save(stream, format="JPEG", quality=quality)
        copies.append(Image.open(io.BytesIO(stream.getvalue())).convert("RGB"))
    barred = picture.copy()
    ImageDraw.Draw(barred).rectangle((300, 200, 325, 207), fill=(0, 0, 0))
    copies.append(barred)
    for copy in copies:
        full = sameshot.same_detail(picture, copy, structure=False)
        reduced = [image.reduce(REDUCTION) for image in (picture, copy)]
        assert sameshot.same_levels(*reduced) == pytest.approx(full, abs=0.0025)
    assert sameshot.same_levels(picture.reduce(4), barred.reduce(4)) < sameshot.SAME_PICTURE_MIN
    assert sameshot.same_levels(picture.reduce(4), copies[2].reduce(4)) >= (
        sameshot.SAME_PICTURE_MIN
    )


def test_pictures_of_different_reductions_are_not_compared() -> None:
    picture = sharp_photo((64, 48))
    reduced = sameshot.DetailPicture.of(picture.reduce(REDUCTION), REDUCTION)
    with pytest.raises(ValueError, match="reduction"):
        sameshot.same_detail(reduced, picture, structure=False)
    with pytest.raises(ValueError, match="reduction"):
        sameshot.same_levels(sameshot.DetailPicture.of(picture), picture)


@pytest.mark.parametrize("structure", [True, False])
def test_the_12_mp_pair_check_through_the_means(tmp_path: Path, structure: bool) -> None:
    """Real 12 MP JPEGs through the pixel job, both ways: a re-encode is the same picture, a
    40x12 black box on the face (a third of a thumbnail pixel) is not."""
    original = Image.fromarray(skimage.data.astronaut()).resize((4000, 3000))
    original.save(tmp_path / "a.jpg", quality=92)
    original.save(tmp_path / "b.jpg", quality=75)
    marked = original.copy()
    ImageDraw.Draw(marked).rectangle((1000, 600, 1040, 612), fill=(0, 0, 0))
    marked.save(tmp_path / "c.jpg", quality=92)
    small = original.resize((3000, 2250), Image.Resampling.LANCZOS)
    small.save(tmp_path / "d.jpg", quality=85)
    found = pixeljobs.details(
        str(tmp_path / "a.jpg"),
        [
            (str(tmp_path / "b.jpg"), (2000, 1500), structure),
            (str(tmp_path / "c.jpg"), (2000, 1500), structure),
            (str(tmp_path / "d.jpg"), (1500, 1125), structure),
        ],
    )
    same, other, resized = found
    assert same is not None and same >= sameshot.SAME_PICTURE_MIN
    assert other is not None and other < sameshot.SAME_PICTURE_MIN
    assert resized is not None and resized >= sameshot.SAME_PICTURE_MIN


def test_a_keeper_is_decoded_once_for_its_photo_pairs_means(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picture = sharp_photo((800, 600))
    picture.save(tmp_path / "keeper.png")
    picture.save(tmp_path / "q90.jpg", quality=90)
    picture.save(tmp_path / "q80.jpg", quality=80)
    (tmp_path / "broken.jpg").write_bytes((tmp_path / "q90.jpg").read_bytes()[:300])
    loads: list[str] = []
    real = imaging.load_means

    def counted(source: str, size: tuple[int, int], reduction: int) -> Image.Image:
        loads.append(Path(source).name)
        return real(source, size, reduction)

    monkeypatch.setattr(imaging, "load_means", counted)
    names = ["q90.jpg", "broken.jpg", "q80.jpg"]
    others = [(str(tmp_path / n), (800, 600), False) for n in names]
    found = pixeljobs.details(str(tmp_path / "keeper.png"), others)
    assert found[1] is None  # that pair only
    assert loads.count("keeper.png") == 1
    for (path, size, _), value in zip(others, found, strict=True):
        if value is not None:
            assert value >= sameshot.SAME_PICTURE_MIN
            expected = pixeljobs.detail(str(tmp_path / "keeper.png"), path, size, False)
            assert value == expected
