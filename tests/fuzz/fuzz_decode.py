#!/usr/bin/env python3
"""Fuzz photodupd's image decoder (the code every decoder worker runs).

Run as a script it is an atheris (libFuzzer) harness::

    python tests/fuzz/fuzz_decode.py -max_total_time=600 -rss_limit_mb=3072 /tmp/decode-corpus

An empty corpus directory is first filled with small files of every allowed
format (with EXIF), plus the hostile images of ``hostile_inputs``.  The
property, :func:`check_decode`: :func:`photodupd.imaging.decode_item` either
returns a well-formed result or raises :class:`ImageError` with a protocol
code and a one-line message; never another exception, never a native crash
(libFuzzer reports those), never more memory than ``-rss_limit_mb``.

In-process on purpose: the daemon isolates this code in worker processes, so a
crash here costs one item there, but it is still a bug worth finding.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from photodupd.imaging import (  # noqa: E402
    ALLOWED_FORMATS,
    ImageError,
    PreprocessSpec,
    decode_item,
)
from photodupd.protocol import ErrorCode, FeatureItem  # noqa: E402
from tests.fuzz import hostile_inputs  # noqa: E402
from tests.photos import encode, exif_bytes, jpeg_bytes, make_photo  # noqa: E402

SPEC = PreprocessSpec()
#: A mutated header may claim tens of megapixels; a lower limit keeps each input quick.
#: The real limit is proven separately (tests/unit/test_imaging.py, test_hostile.py).
FUZZ_MAX_PIXELS = 4_000_000


def seeds() -> list[bytes]:
    small = make_photo(20, (48, 32))
    exif = exif_bytes(orientation=6, make="Fuzz", taken="2020:01:01 00:00:00")
    files = [
        jpeg_bytes(small, exif=exif),
        encode(small, "PNG"),
        encode(small, "GIF"),
        encode(small, "WEBP"),
        encode(small, "TIFF", exif=exif),
        encode(small, "BMP"),
        encode(small, "HEIF"),
    ]
    files += hostile_inputs.malformed_exif_jpegs().values()
    files += hostile_inputs.truncated_images().values()
    return files


def check_decode(data: bytes) -> None:
    """Decode ``data`` as the daemon's workers do; only a well-formed result or ImageError."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = FUZZ_MAX_PIXELS
    try:
        result = decode_item(FeatureItem(data=data), SPEC)
    except ImageError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.message and "\n" not in exc.message and "Traceback" not in exc.message
        return
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    assert result.width > 0 and result.height > 0
    assert result.width * result.height <= FUZZ_MAX_PIXELS
    assert result.pixels is not None and result.pixels.shape == (SPEC.size, SPEC.size, 3)
    assert 0 <= result.phash < 2**64
    assert result.format in ALLOWED_FORMATS


def _decoder_modules() -> list[ModuleType]:
    """imaging itself and the Python side of every Pillow plugin it lets run."""
    import importlib

    import photodupd.imaging

    names = [
        "PIL.Image",
        "PIL.ImageFile",
        "PIL.JpegImagePlugin",
        "PIL.MpoImagePlugin",
        "PIL.PngImagePlugin",
        "PIL.GifImagePlugin",
        "PIL.TiffImagePlugin",
        "PIL.WebPImagePlugin",
        "PIL.BmpImagePlugin",
        "PIL.ExifTags",
        "pillow_heif.as_plugin",
    ]
    modules = [photodupd.imaging]
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:  # a plugin this Pillow build does not have
            continue
    return modules


def _seed_corpus(argv: list[str]) -> None:
    for argument in argv[1:]:
        folder = Path(argument)
        if argument.startswith("-") or not folder.is_dir() or any(folder.iterdir()):
            continue
        for number, seed in enumerate(seeds()):
            (folder / f"seed-{number:03d}").write_bytes(seed)


def main(argv: list[str]) -> None:
    import warnings

    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    from tests.fuzz.instrument import instrument_modules

    # As in a decoder worker: nobody reads warnings; bombs stay errors (imaging does that).
    warnings.simplefilter("ignore")
    instrument_modules(atheris, _decoder_modules())
    _seed_corpus(argv)
    atheris.Setup(argv, check_decode)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
