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
lost by trashing it beside its original.)

Everything here is numpy on arrays; the decoding is done by ``sameshot_check``, in worker
processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Thumbnails fit in this many pixels per side: enough to see parallax, cheap to correlate.
THUMB_SIDE = 96
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
COLOUR_TOLERANCE = 3.0  # difference of colourfulness (opponent-colour spread)


@dataclass(frozen=True, slots=True)
class Thumb:
    """A photo as the pixel checks see it: a small grayscale picture and its colourfulness."""

    gray: np.ndarray  # float32, long side THUMB_SIDE
    colour: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.gray.shape)


def thumbnail_from(image: object) -> Thumb:
    """The :class:`Thumb` of an upright PIL image."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError("expected a PIL image")
    # Always exactly THUMB_SIDE on the long side, small pictures scaled up: both checks
    # compare two thumbnails at the same framing, so they must share their scale.
    width, height = image.size
    factor = THUMB_SIDE / max(width, height, 1)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    gray = np.asarray(small.convert("L"), dtype=np.float32)
    return Thumb(gray, _colourfulness(np.asarray(small, dtype=np.float32)))


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness: 0 for gray, tens for colour photos."""
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = float(np.hypot(rg.std(), yb.std()))
    return spread + 0.3 * float(np.hypot(rg.mean(), yb.mean()))


def same_picture(a: Thumb, b: Thumb) -> float:
    """How well one is a re-encode or resize of the other, in [-1, 1]: 1 - the RMS difference
    of their thumbnails at the same framing in 8-bit levels / 100; -1.0 when exposure,
    contrast or colour differ."""
    ga, gb = a.gray, b.gray
    if min(ga.shape) < 8 or min(gb.shape) < 8:
        return -1.0
    if abs(a.colour - b.colour) > COLOUR_TOLERANCE:
        return -1.0
    if abs(float(ga.mean()) - float(gb.mean())) > MEAN_TOLERANCE:
        return -1.0
    sa, sb = float(ga.std()), float(gb.std())
    if max(sa, sb) > CONTRAST_TOLERANCE * max(min(sa, sb), 1e-3):
        return -1.0
    if gb.shape != ga.shape:  # aspect ratios a pixel apart after rounding
        gb = _resized_to(gb, ga.shape)
    rms = float(np.sqrt(np.mean(np.square(ga - gb))))
    return max(-1.0, 1.0 - rms / 100.0)


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

    A coarse search (small copies, every scale, with and without a mirror, both ways round)
    finds the alignment; a fine search at full size around it measures the agreement of the
    detail (edges and texture, the smooth shading taken away).
    -1.0 when either image is too small or flat to say anything.
    """
    a, b = thumb_a.gray, thumb_b.gray
    if min(a.shape) < 8 or min(b.shape) < 8:
        return -1.0
    small_a, small_b = _shrunk(a), _shrunk(b)
    coarse = [
        (*_search(small_a, small_b, SCALES, (False, True)), False),
        (*_search(small_b, small_a, SCALES, (False, True)), True),
    ]
    best, scale, mirrored, swapped = max(coarse)
    if best < COARSE_MIN:
        return best  # not even roughly aligned: no need for the fine search
    image, other = (b, a) if swapped else (a, b)
    step = SCALES[1] / SCALES[0]
    fine = tuple(float(s) for s in scale * np.geomspace(1 / step, step, FINE_STEPS))
    return _search(_detail(image), _detail(other), fine, (mirrored,))[0]


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
        template = _centre(_resized(other, scale))
        th, tw = template.shape
        if th < 4 or tw < 4 or th > image.shape[0] or tw > image.shape[1]:
            continue
        centred = template - template.mean()
        norm = float(np.sqrt(np.square(centred).sum()))
        if norm >= FLAT * np.sqrt(centred.size):
            templates.append((scale, centred, norm))
    if not templates:
        return best
    # One padded size fits every template: the image's spectrum is computed once, and all
    # templates (and their mirror images) go through the FFT together in one call.
    tallest = max(t.shape[0] for _, t, _ in templates)
    widest = max(t.shape[1] for _, t, _ in templates)
    shape = (_fast_size(image.shape[0] + tallest), _fast_size(image.shape[1] + widest))
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


def _centre(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    dh = round(h * (1 - TEMPLATE_SHARE) / 2)
    dw = round(w * (1 - TEMPLATE_SHARE) / 2)
    return image[dh : h - dh, dw : w - dw]
