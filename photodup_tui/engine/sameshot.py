"""Is one photo an edit of the other, or another shot of the same scene?

Embeddings and perceptual hashes cannot tell a crop, a border, a mirror or a brightened copy
from the next frame of a burst or the other half of a stereo pair: all of them land close
together (on the quality set a stereo pair scores a higher cosine, 0.93, than a +35%
brightness edit, 0.66).  Pixels can.  An edit keeps the geometry: after undoing a scale, a
shift and maybe a mirror, the two images agree everywhere, up to brightness and contrast.
Another shot moves things by different amounts at different depths (parallax, motion), so
no single alignment makes them agree.

So: both photos as small grayscale thumbnails; the central part of one is searched in the
other over a grid of scales, with and without a mirror, by normalised cross-correlation
(zero-mean, so brightness, contrast and grayscale conversion cancel out), first coarsely on
tiny copies, then finely on the detail (the picture minus its blur: smooth shading alone
would make any two gradients agree).  The best correlation is the score.  On the quality
set every pair of copies of one photograph scores >= 0.82 (the weakest: a brightened copy
against a bordered one), the stereo pair <= 0.79, unrelated photographs <= 0.48, and
different synthetic gradient scenes <= 0.57.

The same thumbnails also guard the ``near`` verdict, the one that pre-marks deletions
(:func:`same_picture`): a re-encode or resize keeps the framing, the exposure and the
colour, so its thumbnail is the same picture, pixel for pixel, within a few levels.  A crop
that happens to keep the aspect ratio, a brightened copy or a grayscale one can sit within
2 bits of pHash and a high cosine of the original; they are edits, so only ``similar``.  On
the quality set re-encodes differ by <= 3.8 levels RMS, <= 0.4 levels of mean brightness,
<= 1.5% of contrast and <= 0.9 of colourfulness; crops by >= 6.2 levels RMS, mirrors by
>= 13, brightness +35% moves the mean by >= 5.8 levels, grayscale the colourfulness by
>= 8.4.  (A crop of a picture with no detail at all, a smooth gradient, can pass: little is
lost by trashing it beside its original.)  Every small region must agree too, in brightness,
colour and transparency (:func:`_region_difference`): a button of another colour, a logo
whose picture lives in its alpha channel, change a region, not the whole.

Thumbnails cannot see what is smaller than one of their pixels: two invoices from one
template are one grey texture at 96 pixels, and a 40x12-pixel black box over a face in a
12 MP photo is a third of a thumbnail pixel.  So every pair the thumbnails call the same is
proven again at the smaller one's own size (at most DETAIL_SIDE), block by block
(:func:`same_detail`): every block with contrast must correlate with its counterpart (a
re-encode blurs and rings an edge, another digit or a mark replaces it) and every larger
block keep its levels (a photo pair's levels alone, read from its pictures' means,
:func:`same_levels`).  On the hard-negative set (bench/hard_negatives.py) re-encodes and
resizes at q70-q95 correlate >= 0.94 in every block and keep block levels within 12, while
another amount on an invoice, another file in a screenshot, a signature on a blank page
correlate <= 0.5 somewhere; the photos of the quality set (re-encodes down to q40,
resizes) pass.

Everything here is numpy on arrays; the decoding is done by ``sameshot_check``, in worker
processes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# The thumbnail lives in the base (the daemon's decoders make it); its names stay here too.
from photodupd.pixelthumb import (  # noqa: F401
    FLAT_SPREAD,
    FLAT_WINDOW,
    PREVIEW_SIDE,
    THUMB_SIDE,
    Thumb,
    _colourfulness,
    _flat_share,
    _flattened,
    _opponent,
    thumbnail_from,
)

#: The low-pass removed before correlating: detail finer than side / this stays.
BLUR_FACTOR = 8
#: The coarse search runs on thumbnails shrunk to this side: every scale, mirror, direction.
COARSE_SIDE = 32
#: The central share of one image searched for in the other: small enough to stay inside an
#: 8-15% crop or a border, big enough to carry the whole composition.
TEMPLATE_SHARE = 0.70
#: Relative scales tried between the two thumbnails (a crop or a border rescales content).
SCALES = tuple(float(s) for s in np.geomspace(0.80, 1.25, 13))
#: Below this coarse score the fine search is skipped (every pair of copies in the quality
#: set scores >= 0.77 coarse; 90% of unrelated pairs score < 0.66).
COARSE_MIN = 0.70
#: The fine search around the best coarse scale, at full thumbnail size.
FINE_STEPS = 7
#: Windows with less spread than this (8-bit levels) are flat: nothing to correlate.
FLAT = 2.0
#: Scores at or above this mean "the same shot, edited" (see the module docstring).
SAME_SHOT_MIN = 0.80
#: ``near`` needs the thumbnails to agree at the same framing within 5 levels RMS (score
#: 1 - RMS / 100), and the same exposure and colour within these tolerances.
SAME_PICTURE_MIN = 0.95
MEAN_TOLERANCE = 3.0  # 8-bit levels of mean brightness
CONTRAST_TOLERANCE = 1.06  # ratio of the standard deviations
CONTRAST_FLOOR = 1.0  # ... or this many levels, whichever is more
COLOUR_TOLERANCE = 3.0  # difference of colourfulness (opponent-colour spread)
#: ... and every REGION x REGION window of the thumbnails within REGION_TOLERANCE levels of
#: brightness, colour and transparency.
REGION = 3
REGION_TOLERANCE = 20.0
#: A picture at least FLAT_SHARE_MIN flat (FLAT_WINDOW pixel windows of the preview spreading
#: less than FLAT_SPREAD levels, see :mod:`photodupd.pixelthumb`) has its shapes compared in
#: the detail check too (:func:`needs_structure`).
FLAT_SHARE_MIN = 0.5
#: The detail check (:func:`same_detail`) compares at the smaller picture's own size, at most
#: this long: a 1600-pixel invoice with 11-pixel text is compared at 1600 pixels.
DETAIL_SIDE = 2048
DETAIL_BLOCK = 6
DETAIL_SPREAD = 40.0
DETAIL_CORRELATION = 0.7
LEVEL_BLOCK = 16
LEVEL_TOLERANCE = 20.0
#: Brightness alone is compared on blocks this small too: a censor bar over an eye on the
#: half-size side of a pair (10x3 pixels there) moves a 16-pixel block's mean by 10 levels
#: and an 8-pixel block's by 38.  True copies move 8-pixel brightness means by at most 11.1
#: levels on the quality, hard-negative, camera and mixed sets (q40 re-encodes, resizes to
#: 371 pixels, WebP and HEIC); their colour opponents move by up to 19.8 at q40 (chroma
#: subsampling), so colour and transparency stay at LEVEL_BLOCK.
FINE_LEVEL_BLOCK = 8
#: A photo's pair compares levels only (:func:`needs_structure`), and a block's mean is the
#: mean of its cells' means: so its levels are read from pictures this many times smaller
#: than the detail size (each pixel the mean of a square of the detail size's, see
#: :func:`same_levels`), the same blocks from a sixteenth of the pixels.  A 12 MP JPEG decodes
#: for them at its 1/8 DCT scale, where each pixel is the mean of an 8x8 block: no resize,
#: and a quarter less decoding than at half size.
LEVEL_REDUCTION = 4


def same_picture(a: Thumb, b: Thumb) -> float:
    """How well one is a re-encode or resize of the other, in [-1, 1]: 1 - the RMS difference
    of their thumbnails at the same framing in 8-bit levels / 100; -1.0 when exposure,
    contrast or colour differ, or (for a pair the RMS difference alone would call the same
    picture) any small region does."""
    ga, gb = a.gray, b.gray
    if min(ga.shape) < 8 or min(gb.shape) < 8:
        return -1.0
    if abs(a.colour - b.colour) > COLOUR_TOLERANCE:
        return -1.0
    if abs(float(ga.mean()) - float(gb.mean())) > MEAN_TOLERANCE:
        return -1.0
    sa, sb = float(ga.std()), float(gb.std())
    # A ratio, but never finer than CONTRAST_FLOOR levels: a blank page with a signature
    # has a spread of 2 levels, and a re-encode moves it by a few tenths.
    if max(sa, sb) - min(sa, sb) > max((CONTRAST_TOLERANCE - 1) * min(sa, sb), CONTRAST_FLOOR):
        return -1.0
    if gb.shape != ga.shape:  # aspect ratios a pixel apart after rounding
        gb = _resized_to(gb, ga.shape)
    value = max(-1.0, 1.0 - float(np.sqrt(np.mean(np.square(ga - gb)))) / 100.0)
    # The regions only matter to a pair the whole calls the same picture: in a look-alike
    # folder most near candidates fail on the whole, and the regions cost four box filters.
    if value >= SAME_PICTURE_MIN and _region_difference(a, b, ga.shape) > REGION_TOLERANCE:
        return -1.0
    return value


def _region_difference(a: Thumb, b: Thumb, shape: tuple[int, ...]) -> float:
    """The largest difference of any small region (3x3 thumbnail pixels) in brightness, in
    either colour opponent or in transparency, in levels.  A global RMS hides what only a
    small part of the picture changed: a logo or a button of another colour, a stamp."""
    worst = 0.0
    for x, y in zip(_planes(a, shape), _planes(b, shape), strict=True):
        worst = max(worst, float(np.abs(_box_mean(x - y, REGION)).max()))
    return worst


def _planes(thumb: Thumb, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Brightness, the two colour opponents and alpha (opaque: 255) at ``shape``."""
    gray = thumb.gray
    chroma = thumb.chroma
    if chroma is None:
        chroma = np.zeros((2, *gray.shape), dtype=np.int16)
    alpha = thumb.alpha if thumb.alpha is not None else np.full(gray.shape, 255, np.uint8)
    planes = [gray, chroma[0], chroma[1], alpha]
    return [
        p.astype(np.float32) if p.shape == shape else _resized_to(p.astype(np.float32), shape)
        for p in planes
    ]


def _box_mean(pixels: np.ndarray, side: int) -> np.ndarray:
    """The mean of every side x side window (valid windows only)."""
    h, w = pixels.shape
    if h < side or w < side:
        return pixels
    padded = np.zeros((h + 1, w + 1), dtype=np.float64)
    padded[1:, 1:] = pixels
    return _box(padded.cumsum(0).cumsum(1), side, side) / (side * side)


def needs_structure(a: Thumb, b: Thumb) -> bool:
    """Whether the detail check must compare a pair's shapes, block by block, besides their
    levels.  Documents, screenshots, drawings, logos and blank pages are mostly flat, and
    what tells two of them apart (another amount on an invoice, a signature) keeps every
    block's mean and changes its shapes; transparent pictures show their shapes in alpha.
    A photo's fine texture is decorrelated by a q40 re-encode or a small resize, and a mark
    on it (a black box over a face) moves its block levels."""
    return max(a.flat, b.flat) >= FLAT_SHARE_MIN or a.alpha is not None or b.alpha is not None


def detail_size(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """(width, height) at which :func:`same_detail` compares pictures of sizes ``a`` and
    ``b``: the smaller one's own size divided by the smallest whole number that brings its
    long side within DETAIL_SIDE.  A whole fraction, not DETAIL_SIDE itself: a 12 MP JPEG
    then decodes straight at that size (its DCT scale, see ``imaging.load_sized``), at an
    eighth of a full decode and a resize, and a 4000-pixel photo is compared at 2000."""
    small = a if a[0] * a[1] <= b[0] * b[1] else b
    steps = max(1, -(-max(small[0], small[1]) // DETAIL_SIDE))
    return (max(1, small[0] // steps), max(1, small[1] // steps))


def reads_means(detail: tuple[int, int]) -> bool:
    """Whether a photo pair compared at ``detail`` has its levels read from its pictures'
    means (:func:`same_levels`); tiny pictures are compared as they are."""
    return min(detail) >= LEVEL_BLOCK


def same_levels(image_a: object, image_b: object) -> float:
    """:func:`same_detail` with ``structure=False``, read from pictures LEVEL_REDUCTION times
    smaller whose pixels are the means of the detail size's squares
    (``imaging.load_means``): every block of the detail size is a block of these, so the
    levels compared are the same (to the rounding of the means)."""
    a = DetailPicture.of(image_a, LEVEL_REDUCTION)
    b = DetailPicture.of(image_b, LEVEL_REDUCTION)
    if a.shape != b.shape or min(a.shape) * LEVEL_REDUCTION < DETAIL_BLOCK:
        return -1.0
    return max(-1.0, _level_score(a, b))


def same_detail(image_a: object, image_b: object, *, structure: bool = True) -> float:
    """How well two pictures of the same size agree in their detail, in [-1, 1]; at or above
    SAME_PICTURE_MIN they are the same picture (re-encoded, resized, re-formatted).

    Two checks, on blocks, so that one changed word is not averaged away by a page:

    * structure: every DETAIL_BLOCK-pixel block with any contrast (DETAIL_SPREAD) must
      correlate with its counterpart (>= DETAIL_CORRELATION), in brightness and in alpha.
      Compression and resampling blur and ring an edge, they do not move or replace it;
      another digit, word or line does.
    * levels: every LEVEL_BLOCK-pixel block must keep its mean brightness, colour and
      transparency within LEVEL_TOLERANCE levels (a button of another colour, a faded mark),
      and every FINE_LEVEL_BLOCK-pixel block its mean brightness (a small black bar).

    ``structure=False`` checks the levels only: for photos (see :func:`needs_structure`),
    whose fine texture a q40 re-encode or a small resize decorrelates (blocks down to 0.56
    on the quality set) while every block keeps its levels.
    """
    a, b = DetailPicture.of(image_a), DetailPicture.of(image_b)
    if a.shape != b.shape or min(a.shape) < DETAIL_BLOCK:
        return -1.0
    level = _level_score(a, b)
    if not structure:
        return max(-1.0, level)
    margin = 1.0 - SAME_PICTURE_MIN
    correlation = _block_correlation(a.brightness, b.brightness)
    if a.transparent or b.transparent:  # transparency: its shapes are compared too
        correlation = min(correlation, _block_correlation(a.alpha_shapes, b.alpha_shapes))
    shapes = 1.0 - margin * (1.0 - correlation) / (1.0 - DETAIL_CORRELATION)
    return max(-1.0, min(shapes, level))


#: The 16-pixel levels are added up from the 8-pixel blocks' sums (four to a block), so the
#: pixels are summed once for both sizes: the two grids must fall on the finer one's.
assert LEVEL_BLOCK == 2 * FINE_LEVEL_BLOCK and (LEVEL_BLOCK // 2) % FINE_LEVEL_BLOCK == 0
#: The reduced pictures keep both grids and their half-block offsets whole.
assert (FINE_LEVEL_BLOCK // 2) % LEVEL_REDUCTION == 0
#: The shapes' two grids, half a block apart (a change on a block border shows in the other).
SHAPE_OFFSETS = (0, DETAIL_BLOCK // 2)


class _Shapes:
    """One 8-bit plane as the block correlation reads it: the plane and, per grid offset,
    the whole-number block sums of its pixels and of their squares (16 bits: 255 x 255
    fits).  Made once per picture: a keeper's serve all its pairs."""

    __slots__ = ("pixels", "sums")

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        wide = pixels.astype(np.uint16)
        squares = wide * wide
        self.sums = {
            offset: (
                _block_sums(pixels, DETAIL_BLOCK, offset).astype(np.float64),
                _block_sums(squares, DETAIL_BLOCK, offset).astype(np.float64),
            )
            for offset in SHAPE_OFFSETS
        }


class DetailPicture:
    """A picture as the detail check reads it: its 8-bit brightness (Pillow's "L"), colour
    and alpha planes, whose block sums the levels and the shapes compare.  Made once, it
    serves every pair the picture is in (a keeper and its near copies,
    ``pixeljobs.details``), with the block sums it has taken.  ``reduction``: the picture
    is that many times smaller than the detail size (see :func:`same_levels`), its level
    blocks as many times narrower."""

    __slots__ = (
        "_alpha_shapes",
        "_brightness",
        "_fine_sums",
        "_opacity",
        "fine_block",
        "level_block",
        "luma",
        "means",
        "rgb",
    )

    def __init__(
        self, luma: np.ndarray, rgb: np.ndarray, opacity: np.ndarray | None, reduction: int = 1
    ) -> None:
        self.luma = luma  # (h, w) uint8
        self.rgb = rgb  # (h, w, 3) uint8
        self._opacity = opacity  # (h, w) uint8, or None: opaque
        self.fine_block = FINE_LEVEL_BLOCK // reduction
        self.level_block = LEVEL_BLOCK // reduction
        self._brightness: _Shapes | None = None
        self._alpha_shapes: _Shapes | None = None
        self._fine_sums: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
        #: Block means already taken, by (block side, offset): a keeper's serve all its pairs.
        self.means: dict[tuple[int, int], list[np.ndarray]] = {}

    @classmethod
    def of(cls, image: object, reduction: int = 1) -> DetailPicture:
        from PIL import Image

        if isinstance(image, DetailPicture):
            if image.fine_block * reduction != FINE_LEVEL_BLOCK:
                raise ValueError("the picture was made for another reduction")
            return image
        if not isinstance(image, Image.Image):
            raise TypeError("expected a PIL image")
        rgb, alpha = _flattened(image)
        opacity = None if alpha is None else np.asarray(alpha)
        return cls(np.asarray(rgb.convert("L")), np.asarray(rgb), opacity, reduction)

    @property
    def shape(self) -> tuple[int, int]:
        height, width = self.luma.shape
        return height, width

    @property
    def transparent(self) -> bool:
        return self._opacity is not None

    @property
    def brightness(self) -> _Shapes:
        """The brightness plane for the shapes (made when first needed: a photo's check
        compares levels only)."""
        if self._brightness is None:
            self._brightness = _Shapes(self.luma)
        return self._brightness

    @property
    def alpha_shapes(self) -> _Shapes:
        """The alpha plane for the shapes (255 everywhere for an opaque picture)."""
        if self._alpha_shapes is None:
            opacity = self._opacity
            if opacity is None:
                opacity = np.full(self.shape, 255, dtype=np.uint8)
            self._alpha_shapes = _Shapes(opacity)
        return self._alpha_shapes

    def level_means(self, offset: int) -> list[np.ndarray]:
        """LEVEL_BLOCK block means (``level_block`` pixels here) of brightness, the two
        colour opponents (R-G and (R+G)/2-B: colour without brightness) and alpha (opaque:
        255).  The opponents are linear, so their block means come from the channels'."""
        found = self.means.get((self.level_block, offset))
        if found is None:
            if offset % self.fine_block:
                raise ValueError("the wide levels' grid must fall on the fine one's")
            start = offset // self.fine_block
            area = float(self.level_block * self.level_block)
            luma, rgb, alpha = self._sums_at_fine_grid()
            gray = _paired_blocks(luma, start) / area
            colour = _paired_blocks(rgb, start) / area
            red, green, blue = colour[..., 0], colour[..., 1], colour[..., 2]
            if alpha is None:
                opacity = np.full(gray.shape, 255.0)
            else:
                opacity = _paired_blocks(alpha, start) / area
            found = [gray, red - green, 0.5 * (red + green) - blue, opacity]
            self.means[(self.level_block, offset)] = found
        return found

    def fine_means(self, offset: int) -> np.ndarray:
        """FINE_LEVEL_BLOCK block means (``fine_block`` pixels here) of brightness."""
        side = self.fine_block
        found = self.means.get((side, offset))
        if found is None:
            if offset == 0:
                sums = self._sums_at_fine_grid()[0]
            else:
                sums = _block_sums(self.luma, side, offset)
            found = self.means[(side, offset)] = [sums / float(side * side)]
        return found[0]

    def _sums_at_fine_grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Whole-number fine block sums from (0, 0) of brightness, colour and alpha: the
        fine levels read them, and the coarse levels add them up in fours."""
        if self._fine_sums is None:
            side = self.fine_block
            self._fine_sums = (
                _block_sums(self.luma, side, 0),
                _block_sums(self.rgb, side, 0),
                None if self._opacity is None else _block_sums(self._opacity, side, 0),
            )
        return self._fine_sums


def _paired_blocks(sums: np.ndarray, start: int) -> np.ndarray:
    """Block sums twice as wide from block sums: each adds 2 x 2 of ``sums`` from block
    (``start``, ``start``); a row or column of ``sums`` left without a partner is dropped,
    as the wider grid drops the pixels it does not cover."""
    rows, columns = ((n - start) // 2 for n in sums.shape[:2])
    if rows <= 0 or columns <= 0:
        return np.zeros((0, 0, *sums.shape[2:]), dtype=sums.dtype)
    inside = sums[start : start + 2 * rows, start : start + 2 * columns]
    return inside[0::2, 0::2] + inside[1::2, 0::2] + inside[0::2, 1::2] + inside[1::2, 1::2]


def _block_sums(pixels: np.ndarray, side: int, offset: int) -> np.ndarray:
    """The sum (uint32) of every whole side x side block of an (h, w) or (h, w, channels)
    array of 8-bit or 16-bit levels from (offset, offset), edges left out.  A row of blocks
    is added up a pixel row at a time (contiguous adds, in 16 bits for 8-bit levels: the
    side is at most 257), then its blocks a column at a time: several times faster than
    numpy's reductions over a block reshape."""
    if pixels.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"expected 8- or 16-bit levels, not {pixels.dtype}")
    wide: type[np.unsignedinteger[Any]] = np.uint16 if pixels.dtype == np.uint8 else np.uint32
    if side > 257:  # 257 x 255 fills 16 bits; 257^2 x 65025 fills 32
        raise ValueError("blocks too wide for the sums' integers")
    rows, columns = ((n - offset) // side for n in pixels.shape[:2])
    channels = pixels.shape[2:]
    if rows <= 0 or columns <= 0:
        return np.zeros((0, 0, *channels), dtype=np.uint32)
    inside = pixels[offset : offset + rows * side, offset : offset + columns * side]
    strips = inside[0::side].astype(wide)
    for row in range(1, side):
        strips += inside[row::side]
    blocks = strips.reshape(rows, columns, side, *channels)
    sums = blocks[:, :, 0].astype(np.uint32)
    for column in range(1, side):
        sums += blocks[:, :, column]
    return sums


def _block_correlation(a: _Shapes, b: _Shapes) -> float:
    """The lowest correlation of two pictures' blocks with strong contrast, over two grids
    half a block apart (a change on a block border shows in the other grid).

    From the whole-number block sums of the pixels, their squares and their products, so
    the variances and covariances below are exact, and a flat block (a blank margin beside
    a mark) has exactly no covariance, as when computed pixel by pixel."""
    worst = 1.0
    area = float(DETAIL_BLOCK * DETAIL_BLOCK)
    products = a.pixels.astype(np.uint16) * b.pixels  # 16 bits: 255 x 255 fits
    for offset in SHAPE_OFFSETS:
        (x, xx), (y, yy) = a.sums[offset], b.sums[offset]
        if x.size == 0:
            continue
        xy = _block_sums(products, DETAIL_BLOCK, offset).astype(np.float64)
        # area^2 x the variances and the covariance
        vx, vy, cov = area * xx - x * x, area * yy - y * y, area * xy - x * y
        # A block with contrast on one side only (a mark on a blank page) correlates ~0.
        used = np.maximum(vx, vy) >= (DETAIL_SPREAD * area) ** 2
        if used.any():
            spread = np.maximum(np.sqrt(vx[used] * vy[used]), 1e-6 * area * area)
            worst = min(worst, float((cov[used] / spread).min()))
    return worst


def _level_score(a: DetailPicture, b: DetailPicture) -> float:
    """The levels' part of :func:`same_detail`: SAME_PICTURE_MIN where the largest block
    difference reaches LEVEL_TOLERANCE, 1 where there is none."""
    return 1.0 - (1.0 - SAME_PICTURE_MIN) * _block_levels(a, b) / LEVEL_TOLERANCE


def _block_levels(a: DetailPicture, b: DetailPicture) -> float:
    """The largest difference of block means (brightness, colour, alpha), over two grids
    half a block apart."""
    if a.fine_block != b.fine_block:
        raise ValueError("pictures of different reductions")
    worst = 0.0
    for offset in (0, a.level_block // 2):
        for x, y in zip(a.level_means(offset), b.level_means(offset), strict=True):
            if x.size:
                worst = max(worst, float(np.abs(x - y).max()))
    for offset in (0, a.fine_block // 2):
        x, y = a.fine_means(offset), b.fine_means(offset)
        if x.size:
            worst = max(worst, float(np.abs(x - y).max()))
    return worst


def _resized_to(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    resized = Image.fromarray(image, mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def _detail(pixels: np.ndarray) -> np.ndarray:
    """The picture minus its blurred self: edges and texture, what identifies a shot.

    Without this, two different pictures made of smooth gradients (sky, a wall, a studio
    backdrop) correlate almost perfectly once brightness and contrast are normalised away.
    """
    from PIL import Image

    h, w = pixels.shape
    small = (max(1, round(w / BLUR_FACTOR)), max(1, round(h / BLUR_FACTOR)))
    blurred = (
        Image.fromarray(pixels, mode="F")
        .resize(small, Image.Resampling.BOX)
        .resize((w, h), Image.Resampling.BILINEAR)
    )
    return pixels - np.asarray(blurred, dtype=np.float32)


def score(thumb_a: Thumb, thumb_b: Thumb) -> float:
    """How well one thumbnail is an edit of the other, in [-1, 1]; symmetric.

    A quick search (a third of the scales; :data:`QUICK_MIN`) rejects most pairs; the coarse
    search (small copies, every scale, with and without a mirror, both ways round) finds the
    alignment; a fine search at full size around it measures the agreement of the detail
    (edges and texture, the smooth shading taken away).
    -1.0 when either image is too small or flat to say anything.
    """
    return score_prepared(Prepared(thumb_a), Prepared(thumb_b)).value


@dataclass(frozen=True, slots=True)
class Scored:
    """A same-shot score and the stage that settled it: ``quick`` (rejected by the quick
    search), ``coarse`` (rejected by the coarse search), ``fine`` (fully scored) or
    ``none`` (too small to say anything)."""

    value: float
    stage: str


def score_prepared(a: Prepared, b: Prepared, *, quick: bool = True) -> Scored:
    """:func:`score` of two prepared thumbnails; ``quick=False`` skips the quick rejection
    (the full search alone: what the quick one is calibrated against)."""
    return score_many([(a, b)], quick=quick)[0]


def score_many(pairs: Sequence[tuple[Prepared, Prepared]], *, quick: bool = True) -> list[Scored]:
    """:func:`score_prepared` of each pair, the coarse correlations of all the pairs
    computed together (:func:`_coarse_many`): a keeper's sixteen candidates cost one
    transform and a few array operations per scale, not sixteen of each."""
    scored: list[Scored | None] = [
        None if a.usable and b.usable else Scored(-1.0, "none") for a, b in pairs
    ]
    live = [i for i, s in enumerate(scored) if s is None]
    # The quick search is the coarse search at a third of its scales: its correlations are
    # kept, and the coarse search adds the other scales.
    found = _both_ways([pairs[i] for i in live], QUICK_SCALES)
    pending = []
    for i, (ab, ba) in zip(live, found, strict=True):
        first = max(ab[0], ba[0])
        if quick and first < QUICK_MIN:
            scored[i] = Scored(first, "quick")
        else:
            pending.append((i, ab, ba))
    more = _both_ways([pairs[i] for i, _, _ in pending], OTHER_SCALES)
    for (i, ab, ba), (ab_more, ba_more) in zip(pending, more, strict=True):
        scored[i] = _finished(pairs[i], _better(ab, ab_more), _better(ba, ba_more))
    return [s for s in scored if s is not None]


def _both_ways(
    pairs: Sequence[tuple[Prepared, Prepared]], scales: tuple[int, ...]
) -> list[tuple[_Found, _Found]]:
    """(_coarse(a, b), _coarse(b, a)) at ``scales`` for each pair (a, b)."""
    found = _coarse_many([*pairs, *[(b, a) for a, b in pairs]], scales)
    return list(zip(found[: len(pairs)], found[len(pairs) :], strict=True))


def _finished(pair: tuple[Prepared, Prepared], ab: _Found, ba: _Found) -> Scored:
    """The score of a pair from its coarse search both ways round: the fine search around
    the better alignment, unless even that is poor."""
    best, scale, mirrored, swapped = max([(*ab, False), (*ba, True)])
    if best < COARSE_MIN:
        return Scored(best, "coarse")  # not even roughly aligned: no need for the fine search
    a, b = pair
    image, other = (b, a) if swapped else (a, b)
    step = SCALES[1] / SCALES[0]
    fine = tuple(float(s) for s in scale * np.geomspace(1 / step, step, FINE_STEPS))
    return Scored(_search(image.detail(), other.detail(), fine, (mirrored,))[0], "fine")


def _better(
    x: tuple[float, float, bool], y: tuple[float, float, bool]
) -> tuple[float, float, bool]:
    """The better of two searches over different scales; on a tie the smaller scale, as one
    search over all of them would pick (it keeps the first best, scales ascending)."""
    return max(x, y, key=lambda r: (r[0], -r[1]))


def quick_prepared(a: Prepared, b: Prepared) -> Scored:
    """The quick search alone: stage ``quick`` when it rejects the pair, ``pending`` (with
    its score) when the full search must decide."""
    if not (a.usable and b.usable):
        return Scored(-1.0, "none")
    # Both ways round, like the full search: one way alone is not enough (a bordered copy's
    # centre searched in the original scores 0.76 on the quality set, the other way 0.41),
    # and the keeper may be either.
    value = max(_coarse(a, b, QUICK_SCALES)[0], _coarse(b, a, QUICK_SCALES)[0])
    return Scored(value, "quick" if value < QUICK_MIN else "pending")


def calibration_row(a: Thumb, b: Thumb) -> dict[str, float | str]:
    """For calibration (bench/lookalike_bench.py --calibrate): the full search's score and
    stage without the quick rejection, and the quick search each way round."""
    pa, pb = Prepared(a), Prepared(b)
    full = score_prepared(pa, pb, quick=False)
    if not (pa.usable and pb.usable):
        return {"full": full.value, "stage": full.stage, "quick_ab": -1.0, "quick_ba": -1.0}
    return {
        "full": full.value,
        "stage": full.stage,
        "quick_ab": _coarse(pa, pb, QUICK_SCALES)[0],
        "quick_ba": _coarse(pb, pa, QUICK_SCALES)[0],
    }


#: Every coarse correlation is computed at this size, as a circular correlation: the windows
#: where a template lies wholly inside the image (the only ones scored) never wrap around,
#: so the image's own size is enough, and one transform of a thumbnail (and of each of its
#: templates) serves every pair it is in.
COARSE_PAD = (COARSE_SIDE, COARSE_SIDE)
ALL_SCALES = tuple(range(len(SCALES)))
#: The quick search: every third scale (0.80, 0.89, 1.00, 1.12, 1.25), both mirrors, both
#: ways round: 20 correlations of the coarse search's 52.
QUICK_SCALES = ALL_SCALES[::3]
OTHER_SCALES = tuple(k for k in ALL_SCALES if k not in QUICK_SCALES)
#: Below this quick score a pair is rejected before the full search.  Calibrated on the
#: quality set, the hard-negative set and the Adwaita icons (bench/lookalike_bench.py
#: --calibrate): see the README's benchmark notes for the margins.
QUICK_MIN = 0.55


class Prepared:
    """One thumbnail ready for many pairs: its coarse copy with that copy's spectrum and
    window statistics, its templates (its centre at each scale, plain and mirrored) with
    their spectra, and its detail for the fine search.  Each is made once, when first
    needed, so a keeper checked against sixteen candidates is transformed once, not
    sixteen times, and a pair rejected by the quick search never pays for the other
    scales."""

    __slots__ = ("_detail", "_spectrum", "_spreads", "_templates", "_windows", "gray", "small")

    def __init__(self, thumb: Thumb) -> None:
        self.gray = thumb.gray
        self.small = _shrunk(self.gray) if self.usable else self.gray
        self._spectrum: np.ndarray | None = None
        self._windows: _Windows | None = None
        self._spreads: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._templates: dict[int, _Template | None] = {}
        self._detail: np.ndarray | None = None

    @property
    def usable(self) -> bool:
        return min(self.gray.shape) >= 8

    def spectrum(self) -> np.ndarray:
        if self._spectrum is None:
            self._spectrum = np.fft.rfft2(self.small, COARSE_PAD)
        return self._spectrum

    def spread(self, th: int, tw: int) -> tuple[np.ndarray, np.ndarray]:
        """Every th x tw window's spread (see :meth:`_Windows.spread`) and which are usable."""
        found = self._spreads.get((th, tw))
        if found is None:
            if self._windows is None:
                self._windows = _Windows(self.small)
            spread = self._windows.spread(th, tw)
            found = self._spreads[(th, tw)] = (spread, spread > FLAT * np.sqrt(th * tw))
        return found

    def templates(self, scales: tuple[int, ...]) -> list[tuple[int, _Template | None]]:
        """(k, template) for each k in ``scales``: this thumbnail's centre at SCALES[k] as
        (height, width, norm, spectra of the plain and the mirrored kernel), None where
        too small or flat to correlate.  The missing ones are transformed in one call."""
        missing = [k for k in scales if k not in self._templates]
        if missing:
            made = [(k, _centred(self.small, SCALES[k])) for k in missing]
            kept = [(k, t) for k, t in made if t is not None]
            stack = np.zeros((len(kept), 2, *COARSE_PAD), dtype=np.float32)
            for i, (_, (centred, _norm)) in enumerate(kept):
                th, tw = centred.shape
                # Correlation = convolution with the template turned by 180 degrees, as in
                # _search: the plain kernel, then the mirrored one.
                stack[i, 0, :th, :tw] = centred[:, ::-1][::-1]
                stack[i, 1, :th, :tw] = centred[::-1]
            spectra = np.fft.rfft2(stack) if kept else stack
            for k, _ in made:
                self._templates[k] = None
            for i, (k, (centred, norm)) in enumerate(kept):
                self._templates[k] = (*centred.shape, norm, spectra[i])
        return [(k, self._templates[k]) for k in scales]

    def detail(self) -> np.ndarray:
        if self._detail is None:
            self._detail = _detail(self.gray)
        return self._detail


_Template = tuple[int, int, float, np.ndarray]


def _centred(small: np.ndarray, scale: float) -> tuple[np.ndarray, float] | None:
    """The zero-mean centre of ``small`` at ``scale`` and its norm; None when too small or
    flat to correlate (as in :func:`_search`)."""
    template = _centre(_resampled(small, scale))
    if template.shape[0] < 4 or template.shape[1] < 4:
        return None
    centred = template - template.mean()
    norm = float(np.sqrt(np.square(centred).sum()))
    if norm < FLAT * np.sqrt(centred.size):
        return None
    return centred, norm


_Found = tuple[float, float, bool]


def _coarse_many(
    pairs: Sequence[tuple[Prepared, Prepared]], scales: tuple[int, ...]
) -> list[_Found]:
    """:func:`_coarse` of each (image, other) pair, the same values: every correlation in
    one inverse transform, and each window normalisation done for all the templates of one
    size in images of one size at once (in a look-alike folder, nearly all of them)."""
    entries = []  # (pair, k, template), in _coarse's order
    for p, (image, other) in enumerate(pairs):
        height, width = image.small.shape
        for k, t in other.templates(scales):
            if t is not None and t[0] <= height and t[1] <= width:
                entries.append((p, k, t))
    found: list[_Found] = [(-1.0, 1.0, False)] * len(pairs)
    if not entries:
        return found
    templates = np.stack([t[3] for _, _, t in entries])
    spectra = templates * np.stack([pairs[p][0].spectrum() for p, _, _ in entries])[:, None]
    full = np.fft.irfft2(spectra, COARSE_PAD)
    by_size: dict[tuple[int, int, int, int], list[int]] = {}
    for e, (p, _, (th, tw, _, _)) in enumerate(entries):
        by_size.setdefault((*pairs[p][0].small.shape, th, tw), []).append(e)
    peaks = np.empty((len(entries), 2))
    for (height, width, th, tw), members in by_size.items():
        spreads, usable = zip(
            *(pairs[entries[e][0]][0].spread(th, tw) for e in members), strict=True
        )
        norms = np.array([entries[e][2][2] for e in members])
        scaled = np.stack(spreads) * norms[:, None, None]
        valid = full[members, :, th - 1 : height, tw - 1 : width]
        mask = np.broadcast_to(np.stack(usable)[:, None], valid.shape)
        ratio = np.full(valid.shape, -np.inf)
        np.divide(valid, scaled[:, None], out=ratio, where=mask)
        peaks[members] = ratio.max(axis=(2, 3))
    for e, (p, k, _) in enumerate(entries):
        for m, mirrored in enumerate((False, True)):
            if peaks[e, m] > found[p][0]:
                found[p] = (float(peaks[e, m]), SCALES[k], mirrored)
    return found


def _coarse(image: Prepared, other: Prepared, scales: tuple[int, ...]) -> tuple[float, float, bool]:
    """:func:`_search` of ``other``'s coarse copy in ``image``'s, at SCALES[k] for each k in
    ``scales`` and both mirrors, from the prepared spectra: (score, scale, mirrored)."""
    best = (-1.0, 1.0, False)
    height, width = image.small.shape
    chosen = [
        (k, t)
        for k, t in other.templates(scales)
        if t is not None and t[0] <= height and t[1] <= width
    ]
    if not chosen:
        return best
    spectra = np.stack([t[3] for _, t in chosen]) * image.spectrum()
    full = np.fft.irfft2(spectra, COARSE_PAD)
    for i, (k, (th, tw, norm, _)) in enumerate(chosen):
        spread, usable = image.spread(th, tw)
        if not usable.any():
            continue
        scaled = spread[usable] * norm
        valid = full[i, :, th - 1 : height, tw - 1 : width]
        found = (valid[:, usable] / scaled).max(axis=1)  # plain, mirrored
        for m, mirrored in enumerate((False, True)):
            if found[m] > best[0]:
                best = (float(found[m]), SCALES[k], mirrored)
    return best


def _shrunk(image: np.ndarray) -> np.ndarray:
    factor = COARSE_SIDE / max(image.shape)
    return _resized(image, factor) if factor < 1 else image


def _search(
    image: np.ndarray,
    other: np.ndarray,
    scales: tuple[float, ...],
    mirrors: tuple[bool, ...],
) -> tuple[float, float, bool]:
    """The best correlation of ``other``'s centre anywhere in ``image``, over ``scales`` and
    ``mirrors``: (score, scale, mirrored)."""
    best = (-1.0, 1.0, False)
    templates = []
    for scale in scales:
        template = _centre(_resampled(other, scale))
        th, tw = template.shape
        if th < 4 or tw < 4 or th > image.shape[0] or tw > image.shape[1]:
            continue
        centred = template - template.mean()
        norm = float(np.sqrt(np.square(centred).sum()))
        if norm >= FLAT * np.sqrt(centred.size):
            templates.append((scale, centred, norm))
    if not templates:
        return best
    # One size fits every template: the image's spectrum is computed once, and all templates
    # (and their mirror images) go through the FFT together in one call.  A circular
    # correlation at the image's own size is enough: where a template lies wholly inside
    # the image (the only windows scored) nothing wraps around.
    shape = (_fast_size(image.shape[0]), _fast_size(image.shape[1]))
    variants = [(s, m, t, n) for s, t, n in templates for m in mirrors]
    stack = np.zeros((len(variants), *shape), dtype=np.float32)
    for i, (_, mirrored, centred, _) in enumerate(variants):
        kernel = centred if mirrored else centred[:, ::-1]
        # Correlation = convolution with the template turned by 180 degrees.
        stack[i, : kernel.shape[0], : kernel.shape[1]] = kernel[::-1]
    spectrum = np.fft.rfft2(image, shape)
    full = np.fft.irfft2(np.fft.rfft2(stack) * spectrum, shape)
    windows = _Windows(image)
    for i, (scale, mirrored, centred, norm) in enumerate(variants):
        th, tw = centred.shape
        valid = full[i, th - 1 : image.shape[0], tw - 1 : image.shape[1]]
        spread = windows.spread(th, tw)
        usable = spread > FLAT * np.sqrt(th * tw)
        if usable.any():
            found = float((valid[usable] / (spread[usable] * norm)).max())
            if found > best[0]:
                best = (found, scale, mirrored)
    return best


class _Windows:
    """Sums and sums of squares of the image (integral images), for window statistics."""

    def __init__(self, image: np.ndarray) -> None:
        padded = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
        padded[1:, 1:] = image
        self.sums = padded.cumsum(0).cumsum(1)
        padded[1:, 1:] = np.square(image, dtype=np.float64)
        self.squares = padded.cumsum(0).cumsum(1)

    def spread(self, th: int, tw: int) -> np.ndarray:
        """sqrt(sum((window - mean)^2)) for every th x tw window of the image."""
        n = th * tw
        total = _box(self.sums, th, tw)
        squares = _box(self.squares, th, tw)
        return np.sqrt(np.maximum(squares - total * total / n, 0.0))


def _fast_size(n: int) -> int:
    """The smallest 2^a * 3^b * 5^c >= n: sizes the FFT handles fastest."""
    best = 1 << (n - 1).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def _box(integral: np.ndarray, th: int, tw: int) -> np.ndarray:
    return integral[th:, tw:] - integral[:-th, tw:] - integral[th:, :-tw] + integral[:-th, :-tw]


def _resized(image: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-6:
        return image
    from PIL import Image

    h, w = image.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray(image, mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def _resampled(image: np.ndarray, scale: float) -> np.ndarray:
    """:func:`_resized` as two small matrix products: Pillow's bilinear resampling (its
    triangle filter widened by the scale when shrinking), made once per size and kept.
    A coarse copy has thirteen templates; Pillow's per-call overhead was a third of the
    search.  Equal to :func:`_resized` within 1e-4 levels."""
    if abs(scale - 1.0) < 1e-6:
        return image
    h, w = image.shape
    rows = _resampling(h, max(1, round(h * scale)))
    columns = _resampling(w, max(1, round(w * scale)))
    return (rows @ image.astype(np.float64) @ columns.T).astype(np.float32)


@functools.lru_cache(maxsize=1024)
def _resampling(size: int, new_size: int) -> np.ndarray:
    """The (new_size, size) matrix of Pillow's BILINEAR resampling along one axis
    (libImaging/Resample.c: precompute_coeffs with the triangle filter)."""
    scale = size / new_size
    widen = max(scale, 1.0)
    matrix = np.zeros((new_size, size))
    for out in range(new_size):
        centre = (out + 0.5) * scale
        first = max(int(centre - widen + 0.5), 0)
        last = min(int(centre + widen + 0.5), size)
        taps = np.arange(first, last)
        weights = np.maximum(1.0 - np.abs((taps - centre + 0.5) / widen), 0.0)
        if weights.sum() > 0:
            matrix[out, first:last] = weights / weights.sum()
    matrix.setflags(write=False)
    return matrix


def _centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    dh = round(h * (1 - TEMPLATE_SHARE) / 2)
    dw = round(w * (1 - TEMPLATE_SHARE) / 2)
    return image[dh : h - dh, dw : w - dw]
