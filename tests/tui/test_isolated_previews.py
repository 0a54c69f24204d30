"""Previews are decoded in an isolated worker process (docs/safety.md rule 21): a file that
crashes, hangs or balloons the decoder costs its preview, never the app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from photodup_tui.previews import PreviewCache
from photodupd import imaging
from photodupd.imagebase import ImageError
from photodupd.previewdecode import IsolatedPreviewLoader
from tests.photos import make_photo

SCRIPTED = "tests.tui.faulty_previews:scripted"


@pytest.fixture
def photo(tmp_path: Path) -> str:
    path = tmp_path / "photo.jpg"
    make_photo(3, (640, 480)).save(path, quality=90)
    return str(path)


@pytest.fixture
def scripted_loader() -> Iterator[IsolatedPreviewLoader]:
    loader = IsolatedPreviewLoader(timeout=2.0, memory_mb=1024, function=SCRIPTED)
    yield loader
    loader.close()


def test_the_default_preview_is_decoded_outside_this_process(
    photo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = imaging.load_preview(photo, 200)

    def not_here(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a preview was decoded in the app's process")

    monkeypatch.setattr(imaging, "load_preview", not_here)
    cache = PreviewCache()
    try:
        image = cache.get(photo, 200)
    finally:
        cache.close()
    assert image.size == expected.size
    assert np.array_equal(np.asarray(image), np.asarray(expected))


@pytest.mark.parametrize(
    ("suffix", "code"),
    [(".segv", "decoder_crashed"), (".hang", "timeout"), (".alloc", "too_large")],
)
def test_a_decoder_that_crashes_hangs_or_balloons_costs_only_its_preview(
    scripted_loader: IsolatedPreviewLoader, photo: str, tmp_path: Path, suffix: str, code: str
) -> None:
    hostile = tmp_path / f"hostile{suffix}"
    hostile.write_bytes(Path(photo).read_bytes())
    with pytest.raises(ImageError) as failure:
        scripted_loader(str(hostile), 200)
    assert failure.value.code == code
    # A fresh worker serves the next preview.
    assert scripted_loader(photo, 200).size == imaging.load_preview(photo, 200).size


def test_a_file_that_is_no_image_is_an_image_error(
    scripted_loader: IsolatedPreviewLoader, tmp_path: Path
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(ImageError) as failure:
        scripted_loader(str(text), 200)
    assert failure.value.code == "not_an_image"
