"""A hard-negative set for the ``near`` verdict: pictures that differ only where a 96-pixel
thumbnail cannot see, beside true copies of each that must still be ``near``.

Usage::

    python bench/hard_negatives.py DIR     # writes the files and prints what it made

Everything is drawn here, deterministically, with Pillow (its bundled font) and numpy; no
download.  Families of pictures, each with variants that are *different pictures* (never to
be pre-marked for deletion against each other):

* ``overlay``: RGBA overlays whose RGB is uniformly white and whose picture lives entirely in
  the alpha channel (a vignette, a frame, a "DRAFT" stamp, a star): flattened onto white,
  every one is the same blank page.
* ``logo``: a coloured logo on a transparent background, in two colours and with another
  letter.
* ``invoice-S`` (S = 11, 16, 24 px text): 1600x1200 invoices from one template; variant b
  has a different amount on every line, variant c differs from a in one amount.
* ``screenshot``: 1280x800 UI screenshots of one app: another list of files, and the same
  list with another row selected.
* ``poster``: a flat design in colour variants (the button red, blue, or green of about the
  same luminance).
* ``drawing``: line art on white: a diagram, the same with one more arrow, and a blank page
  with a small signature.
* ``photo``: a real photograph (``skimage.data.astronaut``, 1536 px with sensor grain, stored
  as a camera's JPEG), the same with a small black bar over an eye (25x7 pixels), and with a
  camera's orange date stamp in a corner (14-pixel digits): a photo is not mostly flat, and
  neither mark changes any region of its 96-pixel thumbnail by more than 20 levels.

And the true copies of every variant (``COPIES``): JPEG re-encodes at q70/q85/q95, 50% and
75% resizes at q70-q90, the PNG <-> JPEG conversion, and an EXIF-rotated copy (pixels stored
turned, orientation tag 6).  Transparent pictures keep their transparency in every copy
(PNG re-save, PNG resizes, WebP lossless and lossy with alpha, rotated PNG): a copy that
dropped the alpha would be another picture.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.photos import exif_bytes, store_with_orientation  # noqa: E402


@dataclass(frozen=True)
class Item:
    """One file: ``original`` names the picture it shows (family/variant); files with the same
    ``original`` are true copies of each other, files of one ``family`` with another
    variant are the hard negatives."""

    path: Path
    original: str
    edit: str  # "original" or a COPIES key
    family: str


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# ------------------------------------------------------------------------------ pictures


def _overlay(kind: str) -> Image.Image:
    """White RGB, the picture in the alpha channel only."""
    size = (1200, 800)
    alpha = Image.new("L", size, 0)
    draw = ImageDraw.Draw(alpha)
    if kind == "vignette":
        ys, xs = np.mgrid[0:800, 0:1200].astype(np.float32)
        r = np.hypot((xs - 600) / 600, (ys - 400) / 400)
        alpha = Image.fromarray(np.clip((r - 0.6) * 400, 0, 200).astype(np.uint8), "L")
    elif kind == "frame":
        draw.rectangle((30, 30, 1170, 770), outline=230, width=40)
    elif kind == "stamp":
        draw.text((250, 250), "DRAFT", fill=160, font=_font(260))
    else:  # star
        points = []
        for k in range(10):
            radius = 350 if k % 2 == 0 else 140
            angle = np.pi / 2 + k * np.pi / 5
            points.append((600 + radius * np.cos(angle), 400 - radius * np.sin(angle)))
        draw.polygon(points, fill=255)
    white = Image.new("RGB", size, (255, 255, 255))
    white.putalpha(alpha)
    return white


def _logo(variant: str) -> Image.Image:
    colour = {"a": (20, 90, 200), "b": (200, 40, 40), "c": (20, 90, 200)}[variant]
    letter = "Q" if variant == "c" else "P"
    image = Image.new("RGBA", (640, 640), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((40, 40, 600, 600), fill=(*colour, 255))
    draw.ellipse((90, 90, 550, 550), fill=(255, 255, 255, 255))
    draw.text((190, 120), letter, fill=(*colour, 255), font=_font(360))
    return image


def _invoice(text_px: int, variant: str) -> Image.Image:
    """One template; b changes every amount, c one amount of a."""
    image = Image.new("RGB", (1600, 1200), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font, big = _font(text_px), _font(text_px * 2)
    draw.rectangle((0, 0, 1600, 140), fill=(235, 240, 248))
    draw.text((80, 40), "INVOICE", fill=(30, 40, 80), font=big)
    draw.text((1100, 50), "Acme Supplies Ltd.", fill=(30, 40, 80), font=font)
    rng = np.random.default_rng(7 if variant in "ac" else 8)
    top, step = 220, round(text_px * 2.2)
    rows = min(30, (1050 - top) // step)
    total = 0
    for row in range(rows):
        y = top + row * step
        if row % 2:
            draw.rectangle((60, y - 4, 1540, y + step - 6), fill=(246, 246, 246))
        cents = int(rng.integers(100, 99_999))
        if variant == "c" and row == rows // 2:
            cents = (cents * 7 + 12_345) % 99_000 + 1_000  # another amount on one line
        total += cents
        draw.text((80, y), f"Item {row + 1:02d}  widget, standard", fill=(20, 20, 20), font=font)
        draw.text((1000, y), f"{1 + row % 4}", fill=(20, 20, 20), font=font)
        draw.text((1300, y), f"{cents / 100:10.2f}", fill=(20, 20, 20), font=font)
    y = top + rows * step + 10
    draw.line((60, y, 1540, y), fill=(0, 0, 0), width=2)
    draw.text((1100, y + 10), f"TOTAL {total / 100:12.2f}", fill=(0, 0, 0), font=font)
    return image


def _screenshot(variant: str) -> Image.Image:
    image = Image.new("RGB", (1280, 800), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    font = _font(14)
    draw.rectangle((0, 0, 1280, 36), fill=(50, 54, 62))
    draw.text((16, 10), "Files - Documents", fill=(230, 230, 230), font=font)
    draw.rectangle((0, 36, 240, 800), fill=(236, 238, 242))
    for k, place in enumerate(("Home", "Desktop", "Documents", "Pictures", "Music", "Trash")):
        draw.text((24, 60 + 32 * k), place, fill=(40, 40, 40), font=font)
    names = ["report", "budget", "notes", "plan", "draft", "minutes", "summary", "letter"]
    rng = np.random.default_rng(11 if variant in "ac" else 12)
    selected = 3 if variant == "c" else 5
    for row in range(20):
        y = 56 + row * 36
        if row == selected:
            draw.rectangle((240, y - 8, 1280, y + 26), fill=(53, 132, 228))
        colour = (255, 255, 255) if row == selected else (30, 30, 30)
        name = f"{names[int(rng.integers(0, len(names)))]}_{int(rng.integers(1, 999)):03d}.odt"
        draw.text((270, y), name, fill=colour, font=font)
        draw.text((900, y), f"{int(rng.integers(1, 999))} kB", fill=colour, font=font)
        draw.text((1040, y), f"2024-0{1 + row % 9}-1{row % 10}", fill=colour, font=font)
    return image


def _poster(variant: str) -> Image.Image:
    # Button colours of about the same luminance: a grayscale copy cannot tell them apart.
    button = {"a": (200, 60, 60), "b": (60, 100, 220), "c": (40, 130, 40)}[variant]
    image = Image.new("RGB", (1200, 900), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1200, 220), fill=(40, 40, 60))
    draw.text((80, 60), "Summer Sale", fill=(255, 255, 255), font=_font(90))
    draw.text((80, 300), "Everything in store", fill=(40, 40, 60), font=_font(48))
    draw.rounded_rectangle((80, 600, 560, 740), radius=30, fill=button)
    draw.text((150, 635), "SHOP NOW", fill=(255, 255, 255), font=_font(56))
    draw.ellipse((800, 450, 1100, 750), outline=(40, 40, 60), width=12)
    return image


def _drawing(variant: str) -> Image.Image:
    image = Image.new("RGB", (1400, 1000), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if variant == "c":  # a blank page with a small signature
        xs = np.linspace(1000, 1200, 60)
        ys = 880 + 12 * np.sin(xs / 9.0)
        draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=(20, 20, 120), width=3)
        return image
    for k in range(4):
        x = 120 + 320 * k
        draw.rectangle((x, 300, x + 200, 420), outline=(0, 0, 0), width=3)
        draw.text((x + 30, 345), f"step {k + 1}", fill=(0, 0, 0), font=_font(22))
        if k < 3:
            draw.line((x + 200, 360, x + 320, 360), fill=(0, 0, 0), width=3)
    if variant == "b":  # one more arrow, back from the last box to the first
        draw.line((1180, 420, 1180, 600, 220, 600, 220, 420), fill=(0, 0, 0), width=3)
    return image


def _photo(variant: str) -> Image.Image:
    import skimage.data

    picture = Image.fromarray(skimage.data.astronaut()).resize(
        (1536, 1536), Image.Resampling.LANCZOS
    )
    grain = np.random.default_rng(5).normal(0, 3, (1536, 1536, 3))
    image = Image.fromarray(np.clip(np.asarray(picture) + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if variant == "b":  # a small black bar over an eye (25x7 pixels)
        draw.rectangle((640, 292, 664, 298), fill=(0, 0, 0))
    if variant == "c":  # a camera's date stamp, 14-pixel digits
        draw.text((1360, 1490), "'19 5 4", fill=(255, 140, 0), font=_font(14))
    return image


#: family -> variant -> a function drawing it.
PICTURES: dict[str, dict[str, Callable[[], Image.Image]]] = {
    "overlay": {k: partial(_overlay, k) for k in ("vignette", "frame", "stamp", "star")},
    "logo": {v: partial(_logo, v) for v in "abc"},
    **{f"invoice-{px}": {v: partial(_invoice, px, v) for v in "abc"} for px in (11, 16, 24)},
    "screenshot": {v: partial(_screenshot, v) for v in "abc"},
    "poster": {v: partial(_poster, v) for v in "abc"},
    "drawing": {v: partial(_drawing, v) for v in "abc"},
    "photo": {v: partial(_photo, v) for v in "abc"},
}
#: How each family's original is stored: scans as JPEG, the rest as PNG.
ORIGINAL_FORMAT = {
    "invoice-11": "JPEG",
    "invoice-16": "JPEG",
    "invoice-24": "JPEG",
    "photo": "JPEG",
}


# ------------------------------------------------------------------------------ copies


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS)


def _jpeg(image: Image.Image, path: Path, quality: int, **params: object) -> Path:
    path = path.with_suffix(".jpg")
    image.convert("RGB").save(path, "JPEG", quality=quality, **params)
    return path


def _png(image: Image.Image, path: Path, **params: object) -> Path:
    path = path.with_suffix(".png")
    image.save(path, "PNG", **params)
    return path


def _rotated(image: Image.Image, path: Path) -> Path:
    stored = store_with_orientation(image, 6)
    if image.mode == "RGBA":
        return _png(stored, path, exif=exif_bytes(orientation=6))
    return _jpeg(stored, path, 95, exif=exif_bytes(orientation=6))


Copy = Callable[[Image.Image, Path], Path]

#: Copies of opaque pictures: copy kind -> writer (returns the path it wrote).
COPIES: dict[str, Copy] = {
    "jpeg_q70": lambda im, p: _jpeg(im, p, 70),
    "jpeg_q85": lambda im, p: _jpeg(im, p, 85),
    "jpeg_q95": lambda im, p: _jpeg(im, p, 95),
    "resize50_q85": lambda im, p: _jpeg(_scaled(im, 0.5), p, 85),
    "resize50_q90": lambda im, p: _jpeg(_scaled(im, 0.5), p, 90),
    "resize75_q70": lambda im, p: _jpeg(_scaled(im, 0.75), p, 70),
    "png": lambda im, p: _png(im, p),
    "exif_rotated": _rotated,
}
#: Copies of transparent pictures: all keep the alpha channel.
ALPHA_COPIES: dict[str, Copy] = {
    "png_resave": lambda im, p: _png(im, p, optimize=True),
    "resize50_png": lambda im, p: _png(_scaled(im, 0.5), p),
    "resize75_png": lambda im, p: _png(_scaled(im, 0.75), p),
    "webp_lossless": lambda im, p: _webp(im, p, lossless=True),
    "webp_q90": lambda im, p: _webp(im, p, quality=90),
    "exif_rotated": _rotated,
}


def _webp(image: Image.Image, path: Path, **params: object) -> Path:
    path = path.with_suffix(".webp")
    image.save(path, "WEBP", **params)
    return path


def build_set(folder: Path, families: list[str] | None = None) -> list[Item]:
    """Every family's variants and their copies, flat in ``folder``."""
    items = []
    for family, variants in PICTURES.items():
        if families is not None and family not in families:
            continue
        for variant, draw in variants.items():
            picture = draw()
            name = f"{family}-{variant}"
            base = folder / name
            if ORIGINAL_FORMAT.get(family) == "JPEG":
                original = _jpeg(picture, base, 92)
                copies = dict(COPIES)
            else:
                original = _png(picture, base)
                copies = dict(ALPHA_COPIES if picture.mode == "RGBA" else COPIES)
            if original.suffix == ".png":
                copies.pop("png", None)  # a PNG original's PNG copy: see png_resave
            items.append(Item(original, name, "original", family))
            for edit, write in copies.items():
                items.append(Item(write(picture, folder / f"{name}__{edit}"), name, edit, family))
    return items


def main() -> None:
    # argparse, so `--help` prints the usage instead of becoming a folder named "--help".
    parser = argparse.ArgumentParser(description="Write the hard-negative set into DIR.")
    parser.add_argument("dir", type=Path, help="folder to write the set into (created)")
    folder = parser.parse_args().dir
    folder.mkdir(parents=True, exist_ok=True)
    items = build_set(folder)
    families = sorted({i.family for i in items})
    originals = sorted({i.original for i in items})
    print(f"{len(items)} files: {len(originals)} pictures in {len(families)} families")


if __name__ == "__main__":
    main()
