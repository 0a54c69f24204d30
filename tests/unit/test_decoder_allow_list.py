"""No parser outside the allow-list ever sees a file: the refusal comes before, not after.

``test_imaging`` checks the *outcome* for such files (``unsupported_format``), which a
late guard on the opened image's format gives as well, after the plugin parsed the
untrusted bytes, which is the risk the allow-list exists to remove.  Here every other
plugin's opener is replaced by one that records the call.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from photodupd.imaging import ALLOWED_FORMATS, ImageError, decode, load_preview
from photodupd.protocol import ErrorCode
from tests.photos import make_photo

Image.init()
#: Formats Pillow can write (in this build) that photodup must never parse.
FOREIGN = [f for f in ("PCX", "ICO", "PPM", "SGI", "TGA", "DDS", "QOI") if f in Image.SAVE]


def saved(fmt: str) -> bytes:
    buffer = io.BytesIO()
    make_photo(18, (64, 64)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every non-allow-listed plugin, made to record when Pillow asks it to open a file."""
    calls: list[str] = []

    def recording(fmt: str, factory: Callable[..., Any]) -> Callable[..., Any]:
        def open_it(*args: Any, **kwargs: Any) -> Any:
            calls.append(fmt)
            return factory(*args, **kwargs)

        return open_it

    for fmt, (factory, accept) in list(Image.OPEN.items()):
        if fmt not in ALLOWED_FORMATS:
            monkeypatch.setitem(Image.OPEN, fmt, (recording(fmt, factory), accept))
    yield calls


@pytest.mark.parametrize("fmt", FOREIGN)
def test_no_foreign_parser_runs_on_decode_or_preview(opened: list[str], fmt: str) -> None:
    data = saved(fmt)
    with pytest.raises(ImageError) as decoded:
        decode(data, is_data=True)
    with pytest.raises(ImageError) as previewed:
        load_preview(data, 64, is_data=True)
    assert decoded.value.code == previewed.value.code == ErrorCode.UNSUPPORTED_FORMAT
    assert opened == []


def test_the_recording_openers_do_record(opened: list[str]) -> None:
    """Not vacuous: opened the ordinary way, a foreign file does reach its plugin."""
    Image.open(io.BytesIO(saved("PCX"))).close()
    assert opened == ["PCX"]
