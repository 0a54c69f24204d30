"""The full-detail check at a JPEG's own DCT scale (issue 14): a 12 MP near pair is compared
at half size, decoded straight at that size, and the block statistics give the same verdicts
as computing them pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, JpegImagePlugin

from photodup_tui.engine import pixeljobs, sameshot
from photodupd import imaging
from tests.photos import exif_bytes


def reference_detail(image_a: Image.Image, image_b: Image.Image) -> float:
    """:func:`sameshot.same_detail` as its docstring defines it, pixel by pixel in float64:
    what the block-mean implementation must agree with."""

    def planes(image: Image.Image) -> list[np.ndarray]:
        rgb, alpha = sameshot._flattened(image)
        pixels = np.asarray(rgb, dtype=np.float64)
        gray = np.asarray(rgb.convert("L"), dtype=np.float64)
        rg = pixels[..., 0] - pixels[..., 1]
        yb = 0.5 * (pixels[..., 0] + pixels[..., 1]) - pixels[..., 2]
        opacity = np.full(gray.shape, 255.0) if alpha is None else np.asarray(alpha, np.float64)
        return [gray, rg, yb, opacity]

    def blocks(pixels: np.ndarray, side: int, offset: int) -> np.ndarray:
        shifted = pixels[offset:, offset:]
        h, w = (n // side * side for n in shifted.shape)
        return shifted[:h, :w].reshape(h // side, side, w // side, side)

    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        worst = 1.0
        for offset in (0, sameshot.DETAIL_BLOCK // 2):
            x, y = (
                blocks(a, sameshot.DETAIL_BLOCK, offset),
                blocks(b, sameshot.DETAIL_BLOCK, offset),
            )
            x = x - x.mean(axis=(1, 3), keepdims=True)
            y = y - y.mean(axis=(1, 3), keepdims=True)
            sx = np.sqrt(np.mean(x * x, axis=(1, 3)))
            sy = np.sqrt(np.mean(y * y, axis=(1, 3)))
            used = np.maximum(sx, sy) >= sameshot.DETAIL_SPREAD
            if used.any():
                product = np.mean(x * y, axis=(1, 3))[used]
                worst = min(worst, float((product / np.maximum(sx[used] * sy[used], 1e-6)).min()))
        return worst

    def levels(a: np.ndarray, b: np.ndarray, side: int) -> float:
        worst = 0.0
        for offset in (0, side // 2):
            x, y = blocks(a, side, offset), blocks(b, side, offset)
            worst = max(worst, float(np.abs(x.mean(axis=(1, 3)) - y.mean(axis=(1, 3))).max()))
        return worst

    a, b = planes(image_a), planes(image_b)
    pairs = [(a[0], b[0])]
    if a[3].min() < 255 or b[3].min() < 255:
        pairs.append((a[3], b[3]))
    margin = 1.0 - sameshot.SAME_PICTURE_MIN
    structure = 1.0 - margin * (1.0 - min(correlation(x, y) for x, y in pairs)) / (
        1.0 - sameshot.DETAIL_CORRELATION
    )
    worst = max(levels(x, y, sameshot.LEVEL_BLOCK) for x, y in zip(a, b, strict=True))
    worst = max(worst, levels(a[0], b[0], sameshot.FINE_LEVEL_BLOCK))  # brightness, finer
    level = 1.0 - margin * worst / sameshot.LEVEL_TOLERANCE
    return max(-1.0, min(structure, level))


def variants(picture: Image.Image, seed: int) -> list[Image.Image]:
    """The picture, a blurred resize of it, a noisy copy, a copy with a transparent corner,
    one with a mark on it, and one with a flat patch: pairs with every kind of block."""
    rng = np.random.default_rng(seed)
    w, h = picture.size
    noisy = np.asarray(picture).astype(np.int16) + rng.integers(-12, 12, (h, w, 3))
    holed = np.asarray(picture.convert("RGBA")).copy()
    holed[: h // 5, : w // 5, 3] = 0
    marked = picture.copy()
    ImageDraw.Draw(marked).line(
        [(w // 3, h // 2), (w // 2, h // 2 + 7)], fill=(10, 10, 90), width=3
    )
    patched = picture.copy()
    patched.paste((255, 255, 255), (w // 2, h // 4, w // 2 + 60, h // 4 + 60))
    return [
        picture,
        picture.resize((w // 2, h // 2)).resize((w, h), Image.Resampling.BILINEAR),
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)),
        Image.fromarray(holed),
        marked,
        patched,
    ]


@pytest.mark.parametrize("name", ["astronaut", "coffee", "page"])
def test_the_block_statistics_agree_with_the_pixel_by_pixel_definition(name: str) -> None:
    picture = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    pictures = variants(picture, seed=len(name))
    for a in pictures:
        for b in pictures:
            expected = reference_detail(a, b)
            assert sameshot.same_detail(a, b) == pytest.approx(expected, abs=1e-6)


def test_a_mark_on_a_blank_margin_is_not_lost_to_rounding() -> None:
    """A block with contrast on one side and none on the other must correlate 0 exactly, as
    pixel by pixel: rounded block means made it thousands (and a clamp would make it 1)."""
    blank = Image.new("RGB", (600, 400), (250, 250, 250))
    marked = blank.copy()
    ImageDraw.Draw(marked).rectangle((300, 200, 302, 205), fill=(0, 0, 0))
    value = sameshot.same_detail(blank, marked)
    assert value == pytest.approx(reference_detail(blank, marked), abs=1e-9)
    assert value < sameshot.SAME_PICTURE_MIN


def test_a_12_mp_pair_is_compared_at_half_size_and_a_document_at_its_own() -> None:
    assert sameshot.detail_size((4000, 3000), (4000, 3000)) == (2000, 1500)
    assert sameshot.detail_size((4000, 3000), (3000, 2250)) == (1500, 1125)
    assert sameshot.detail_size((6000, 4000), (6000, 4000)) == (2000, 1333)
    assert sameshot.detail_size((1600, 1200), (800, 600)) == (800, 600)
    assert sameshot.detail_size((2048, 1536), (2048, 1536)) == (2048, 1536)


def photo_file(path: Path, size: tuple[int, int], orientation: int = 1) -> Image.Image:
    picture = Image.fromarray(skimage.data.astronaut()).resize(size, Image.Resampling.BICUBIC)
    extra = {"exif": exif_bytes(orientation=orientation)} if orientation != 1 else {}
    picture.save(path, quality=92, **extra)
    return picture


def test_a_jpeg_is_decoded_at_the_dct_scale_that_covers_the_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo_file(tmp_path / "big.jpg", (2400, 1800))
    asked: list[tuple[int, int]] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: object) -> object:
        result = draft(self, mode, size)  # type: ignore[arg-type]
        asked.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    picture = imaging.load_sized(str(tmp_path / "big.jpg"), (1200, 900))
    assert picture.size == (1200, 900)
    assert asked == [(1200, 900)]  # decoded at 1/2, nothing left to resample
    third = imaging.load_sized(str(tmp_path / "big.jpg"), (800, 600))
    assert third.size == (800, 600) and asked[-1] == (1200, 900)  # 1/3 is no DCT scale


def test_a_turned_photo_is_drafted_along_its_stored_axes(tmp_path: Path) -> None:
    """EXIF orientation 6: the file stores 2400x1800, the photo is 1800x2400 upright."""
    original = photo_file(tmp_path / "turned.jpg", (2400, 1800), orientation=6)
    picture = imaging.load_sized(str(tmp_path / "turned.jpg"), (900, 1200))
    assert picture.size == (900, 1200)
    upright = original.transpose(Image.Transpose.ROTATE_270).resize((900, 1200))
    difference = np.abs(np.asarray(picture, np.int16) - np.asarray(upright, np.int16))
    assert float(difference.mean()) < 6.0


def test_the_detail_check_of_a_12_mp_re_encode_and_of_another_shot(tmp_path: Path) -> None:
    """Real 12 MP JPEGs through the pixel job: a re-encode is the same picture at half
    size, the same picture with a mark on it is not."""
    original = photo_file(tmp_path / "a.jpg", (4000, 3000))
    original.save(tmp_path / "b.jpg", quality=80)
    marked = original.copy()
    ImageDraw.Draw(marked).rectangle((1000, 600, 1040, 612), fill=(0, 0, 0))  # on the face
    marked.save(tmp_path / "c.jpg", quality=92)
    size = sameshot.detail_size((4000, 3000), (4000, 3000))
    same = pixeljobs.detail(str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"), size)
    other = pixeljobs.detail(str(tmp_path / "a.jpg"), str(tmp_path / "c.jpg"), size)
    assert same >= sameshot.SAME_PICTURE_MIN > other


def test_a_keeper_is_decoded_once_for_all_its_near_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    picture = Image.fromarray(skimage.data.astronaut())
    picture.save(tmp_path / "keeper.png")
    picture.save(tmp_path / "q90.jpg", quality=90)
    picture.save(tmp_path / "q70.jpg", quality=70)
    picture.resize((256, 256), Image.Resampling.LANCZOS).save(tmp_path / "half.jpg")
    (tmp_path / "broken.jpg").write_bytes((tmp_path / "q90.jpg").read_bytes()[:300])
    marked = picture.copy()
    ImageDraw.Draw(marked).rectangle([320, 128, 380, 148], fill=(0, 0, 0))  # on white
    marked.save(tmp_path / "marked.png")
    loads: list[str] = []
    real = imaging.load_sized

    def counted(source: str, size: tuple[int, int], *, alpha: bool = False) -> Image.Image:
        loads.append(Path(source).name)
        return real(source, size, alpha=alpha)

    monkeypatch.setattr(imaging, "load_sized", counted)
    full, half = (512, 512), (256, 256)
    others = [("q90.jpg", full), ("broken.jpg", full), ("q70.jpg", full), ("half.jpg", half)]
    others += [("marked.png", full)]
    found = pixeljobs.details(
        str(tmp_path / "keeper.png"), [(str(tmp_path / n), size, True) for n, size in others]
    )
    q90, broken, q70, small, mark = found
    assert broken is None  # that pair only
    assert all(v is not None and v >= sameshot.SAME_PICTURE_MIN for v in (q90, q70, small))
    assert mark is not None and mark < sameshot.SAME_PICTURE_MIN
    assert loads.count("keeper.png") == 2  # once per size, not once per pair
    # Each answer is the pair's own detail check.
    for (name, size), value in zip(others, found, strict=True):
        if value is not None:
            assert value == pixeljobs.detail(
                str(tmp_path / "keeper.png"), str(tmp_path / name), size
            )


@pytest.mark.parametrize("shape", [(37, 53), (64, 48, 3), (17, 16, 3)])
@pytest.mark.parametrize(("side", "offset"), [(16, 0), (16, 8), (8, 4), (6, 3)])
def test_block_sums_are_exact(shape: tuple[int, ...], side: int, offset: int) -> None:
    """The levels and shapes read 8-bit planes (and 16-bit squares) through whole-number
    block sums: every block's sum must be its pixels' sum, block by block and channel by
    channel, edges left out, with no overflow at the largest levels."""
    rng = np.random.default_rng(sum(shape) + side)
    for top in (255, 65025):
        dtype = np.uint8 if top == 255 else np.uint16
        pixels = rng.integers(top - 3, top + 1, shape, dtype=dtype)
        _assert_block_sums(pixels, side, offset)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    _assert_block_sums(pixels, side, offset)


def _assert_block_sums(pixels: np.ndarray, side: int, offset: int) -> None:
    shape = pixels.shape
    sums = sameshot._block_sums(pixels, side, offset)
    rows, columns = ((n - offset) // side for n in shape[:2])
    assert sums.shape == (rows, columns, *shape[2:])
    for r in range(rows):
        for c in range(columns):
            top, left = offset + r * side, offset + c * side
            block = pixels[top : top + side, left : left + side].astype(np.int64)
            assert np.array_equal(sums[r, c], block.sum(axis=(0, 1)))


@pytest.mark.parametrize("size", [(53, 37), (48, 64), (47, 40), (16, 23), (9, 31)])
def test_the_wide_levels_added_up_from_the_fine_blocks_are_the_blocks_own(
    size: tuple[int, int],
) -> None:
    """The 16-pixel levels come from four 8-pixel block sums each; at both grid offsets and
    any picture size (a last row or column of fine blocks without a partner) they must be
    the 16-pixel blocks' own means, for brightness, colour and alpha."""
    rng = np.random.default_rng(size[0] * size[1])
    rgba = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    rgba[..., 3] = np.maximum(rgba[..., 3], 1)  # transparent, but no pixel wholly
    picture = sameshot.DetailPicture.of(Image.fromarray(rgba, "RGBA"))
    assert picture.transparent
    area = float(sameshot.LEVEL_BLOCK**2)
    for offset in (0, sameshot.LEVEL_BLOCK // 2):
        gray, red_green, yellow_blue, opacity = picture.level_means(offset)
        colour = sameshot._block_sums(picture.rgb, sameshot.LEVEL_BLOCK, offset) / area
        red, green, blue = colour[..., 0], colour[..., 1], colour[..., 2]
        direct = sameshot._block_sums(picture.luma, sameshot.LEVEL_BLOCK, offset) / area
        assert np.array_equal(gray, direct)
        assert np.array_equal(red_green, red - green)
        assert np.array_equal(yellow_blue, 0.5 * (red + green) - blue)
        alpha = np.asarray(rgba[..., 3])
        assert np.array_equal(
            opacity, sameshot._block_sums(alpha, sameshot.LEVEL_BLOCK, offset) / area
        )
    for offset in (0, sameshot.FINE_LEVEL_BLOCK // 2):
        fine = sameshot._block_sums(picture.luma, sameshot.FINE_LEVEL_BLOCK, offset) / 64.0
        assert np.array_equal(picture.fine_means(offset), fine)
