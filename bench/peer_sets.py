"""The two benchmark sets of bench/peers_bench.py, built reproducibly from real photographs.

Sources: the photographs bundled with scikit-image (``skimage.data``) and the two bundled with
scikit-learn (``sklearn.datasets.load_sample_images``: a Chinese temple and a flower); no
download.  They are small (300-800 px), so every "shot" is a crop of one of them upscaled to
camera size with a fixed, seeded sensor grain on top: the grain is what makes a 12 MP JPEG
weigh 3-5 MB like a camera's rather than a few hundred KB, and what a decoder has to chew.
Three crops of each photograph (different windows, like the shots of a burst) make 3 x 18
= 54 distinct "shots".

* ``camera``: each shot a 12 MP JPEG (4000x3000, q92, Make/Model/date in EXIF; one in five a
  portrait stored turned with orientation tag 6, as phones write them) plus the copies a
  camera library gathers: byte-identical copies, re-encodes (q80), half-size and 3000 px
  resizes, 90% crops.
* ``mixed``: each shot in one of four formats in turn: a 12 MP JPEG, a large PNG (3000x2250),
  a 12 MP WebP (q85) or a 12 MP HEIC (q80, pillow-heif), plus copies across formats (a HEIC
  exported as JPEG, a PNG as JPEG, a JPEG as WebP and as half-size PNG, ...) and a few
  byte-identical copies.

Every random choice is seeded; a finished set is cached under ``$TMPDIR/photodup-bench``
(written to a temporary folder first, renamed when complete) and reused by later runs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from _common import SHARED_PHOTOS, say
from PIL import Image

from tests.photos import exif_bytes, store_with_orientation

#: Bump when a recipe changes: a cached set of another version is rebuilt.
VERSION = 1
CAMERA_SIZE = (4000, 3000)
PNG_SIZE = (3000, 2250)
CROPS_PER_SOURCE = 3
GRAIN = 3.5  # standard deviation of the sensor grain, in 8-bit levels

#: skimage.data photographs used as sources (colour first; the grey ones become RGB).
SKIMAGE_SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "motorcycle_left",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "camera",
    "coins",
    "moon",
    "clock",
    "grass",
    "gravel",
    "brick",
    "page",
)
SKLEARN_SOURCES = ("china.jpg", "flower.jpg")
SETS = ("camera", "mixed")


@dataclass(frozen=True)
class Shot:
    """One distinct picture: a crop of a source photograph at camera size."""

    index: int
    name: str
    image: Image.Image  # RGB, landscape, CAMERA_SIZE


def set_folder(name: str) -> Path:
    return SHARED_PHOTOS / f"peers-{name}-v{VERSION}"


def build(name: str) -> Path:
    """The folder of set ``name`` ("camera" or "mixed"), built on first use."""
    if name not in SETS:
        raise ValueError(f"unknown set {name!r}; choose from {SETS}")
    folder = set_folder(name)
    if folder.is_dir():
        return folder
    partial = folder.with_name(folder.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    say(f"building the {name} set in {folder} (once; a few minutes) ...")
    jobs = [(name, index, partial) for index in range(len(_source_names()) * CROPS_PER_SOURCE)]
    with Pool(2) as pool:  # encoding 12 MP WebP and HEIC is slow: both cores, once
        pool.starmap(_write_shot, jobs, chunksize=1)
    os.replace(partial, folder)  # a set is complete or absent, never half there
    return folder


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ sources


def _source_names() -> list[str]:
    return [*SKIMAGE_SOURCES, *(Path(n).stem for n in SKLEARN_SOURCES)]


def _source(name: str) -> Image.Image:
    if name in SKIMAGE_SOURCES:
        import skimage.data

        if name == "motorcycle_left":
            pixels = skimage.data.stereo_motorcycle()[0]
        else:
            pixels = getattr(skimage.data, name)()
    else:
        from sklearn.datasets import load_sample_image  # type: ignore[import-untyped]

        pixels = load_sample_image(f"{name}.jpg")
    return Image.fromarray(np.asarray(pixels)).convert("RGB")


def _write_shot(set_name: str, index: int, folder: Path) -> None:
    source_name = _source_names()[index // CROPS_PER_SOURCE]
    frame = _camera_frame(_source(source_name), index)
    shot = Shot(index, f"{source_name}_{index % CROPS_PER_SOURCE}", frame)
    (_write_camera if set_name == "camera" else _write_mixed)(shot, folder)


def _camera_frame(source: Image.Image, seed: int) -> Image.Image:
    """A 4:3 window (70-85% of the source) upscaled to 12 MP, with seeded grain."""
    rng = np.random.default_rng(seed)
    w, h = source.size
    scale = rng.uniform(0.70, 0.85)
    cw = min(w, round(scale * min(w, h * 4 / 3)))
    ch = min(h, round(cw * 3 / 4))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    frame = source.crop((x, y, x + cw, y + ch)).resize(CAMERA_SIZE, Image.Resampling.BICUBIC)
    grain = rng.standard_normal((CAMERA_SIZE[1], CAMERA_SIZE[0], 1), dtype=np.float32) * GRAIN
    pixels = np.asarray(frame, np.float32) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


# ------------------------------------------------------------------------------ writers


def _exif(shot: Shot, orientation: int | None = None) -> bytes:
    day = 1 + shot.index % 28
    return exif_bytes(
        orientation=orientation,
        make="Canon",
        model="Canon EOS 80D",
        taken=f"2023:05:{day:02d} 10:{shot.index % 60:02d}:00",
    )


def _jpeg(image: Image.Image, path: Path, quality: int, exif: bytes = b"") -> None:
    image.save(path, "JPEG", quality=quality, exif=exif)


def _half(image: Image.Image) -> Image.Image:
    return image.reduce(2)


def _to_width(image: Image.Image, width: int) -> Image.Image:
    height = round(image.height * width / image.width)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _crop90(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((round(0.06 * w), round(0.04 * h), round(0.96 * w), round(0.94 * h)))


def _write_camera(shot: Shot, folder: Path) -> None:
    i, name, image = shot.index, shot.name, shot.image
    original = folder / f"IMG_{i:04d}.jpg"
    if i % 5 == 4:  # a portrait as phones store it: pixels turned, orientation tag 6
        upright = image.transpose(Image.Transpose.ROTATE_90)
        _jpeg(store_with_orientation(upright, 6), original, 92, _exif(shot, 6))
        image = upright
    else:
        _jpeg(image, original, 92, _exif(shot))
    edits: list[tuple[bool, str, Callable[[Path], object]]] = [
        (i % 4 == 0, "copy.jpg", lambda p: shutil.copyfile(original, p)),
        (i % 2 == 0, "q80.jpg", lambda p: _jpeg(image, p, 80)),
        (i % 3 == 0, "half.jpg", lambda p: _jpeg(_half(image), p, 90)),
        (i % 3 == 1, "crop.jpg", lambda p: _jpeg(_crop90(image), p, 90)),
        (i % 4 == 1, "3000px.jpg", lambda p: _jpeg(_to_width(image, 3000), p, 85)),
        (i % 6 == 2, "copy2.jpg", lambda p: shutil.copyfile(original, p)),
    ]
    _write_edits(folder, name, edits)
    say(f"  camera: {name}")


def _write_mixed(shot: Shot, folder: Path) -> None:
    i, name, image = shot.index, shot.name, shot.image
    kind = i % 4
    png = image.resize(PNG_SIZE, Image.Resampling.LANCZOS)
    if kind == 0:
        original = folder / f"{name}.jpg"
        _jpeg(image, original, 92, _exif(shot))
        copies = [
            (True, "as.webp", lambda p: _webp(image, p, 85)),
            (i % 8 == 0, "half.png", lambda p: _png(_half(image), p)),
            (i % 8 == 4, "copy.jpg", lambda p: shutil.copyfile(original, p)),
        ]
    elif kind == 1:
        original = folder / f"{name}.png"
        _png(png, original)
        copies = [
            (True, "as.jpg", lambda p: _jpeg(png, p, 90)),
            (i % 8 == 1, "half.webp", lambda p: _webp(_half(png), p, 80)),
            (i % 8 == 5, "copy.png", lambda p: shutil.copyfile(original, p)),
        ]
    elif kind == 2:
        original = folder / f"{name}.webp"
        _webp(image, original, 85)
        copies = [
            (True, "as.jpg", lambda p: _jpeg(image, p, 88)),
            (i % 8 == 2, "as.png", lambda p: _png(png, p)),
            (i % 8 == 6, "copy.webp", lambda p: shutil.copyfile(original, p)),
        ]
    else:
        original = folder / f"{name}.heic"
        _heic(image, original)
        copies = [
            (True, "export.jpg", lambda p: _jpeg(image, p, 90)),
            (i % 8 == 3, "half.heic", lambda p: _heic(_half(image), p)),
            (i % 8 == 7, "copy.heic", lambda p: shutil.copyfile(original, p)),
        ]
    copies.append((i % 3 == 0, "2000px.jpg", lambda p: _jpeg(_to_width(image, 2000), p, 85)))
    _write_edits(folder, name, copies)
    say(f"  mixed: {name}")


def _heic(image: Image.Image, path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    # x265's "fast" preset: the encode takes a quarter of the default's time; decoding (what
    # the benchmark measures) costs the same.
    image.save(path, "HEIF", quality=80, enc_params={"preset": "fast"})


def _webp(image: Image.Image, path: Path, quality: int) -> None:
    image.save(path, "WEBP", quality=quality, method=2)  # faster encode, same decoder work


def _png(image: Image.Image, path: Path) -> None:
    image.save(path, "PNG", compress_level=3)


def _write_edits(
    folder: Path, name: str, edits: list[tuple[bool, str, Callable[[Path], object]]]
) -> None:
    for wanted, suffix, write in edits:
        if wanted:
            write(folder / f"{name}__{suffix}")


if __name__ == "__main__":
    import sys

    for wanted in sys.argv[1:] or SETS:
        built = build(wanted)
        files = files_of(built)
        size = sum(f.stat().st_size for f in files)
        print(f"{wanted}: {built} {len(files)} files, {size / 1e6:.0f} MB")
