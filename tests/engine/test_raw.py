"""RAW files in a scan: without rawpy they are compared byte for byte only, with one warning
and no errors; with rawpy their previews join the comparison.  Either way a RAW+JPEG pair
is never marked for deletion and byte-identical RAWs form an exact group."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.scan import ScanResult
from photodup_tui.engine.types import Action, Kind
from photodupd import imaging, rawimage
from photodupd.imaging import ImageError
from photodupd.protocol import ErrorCode
from tests.dng import dng_bytes
from tests.engine.sources import Counting
from tests.engine.test_scan import scan
from tests.photos import make_photo, write_jpeg

NO_RAWPY_WARNING = (
    "2 RAW files compared byte for byte only: install photodup[raw] to compare their previews"
)


def camera_card(root: Path) -> Path:
    """What a camera set to RAW+JPEG leaves, a backup copy of one RAW, and another photo."""
    (root / "backup").mkdir(parents=True)
    shot = make_photo(21, (768, 1024))
    (root / "IMG_0001.DNG").write_bytes(dng_bytes(shot, orientation=6))
    write_jpeg(root / "IMG_0001.JPG", shot, quality=92)
    shutil.copy2(root / "IMG_0001.DNG", root / "backup" / "IMG_0001.DNG")
    write_jpeg(root / "IMG_0002.JPG", make_photo(22, (1024, 768)), quality=92)
    return root


def by_name(result: ScanResult) -> dict[str, tuple[str, str]]:
    """Relative path -> (group kind, action) for every grouped file."""
    root = os.path.commonpath(result.roots)
    return {
        os.path.relpath(m.photo.path, root): (group.kind.value, m.action.value)
        for group in result.groups
        for m in group.members
    }


@pytest.fixture
def no_rawpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process cannot import rawpy, as in the default install."""
    monkeypatch.setitem(sys.modules, "rawpy", None)


@pytest.mark.usefixtures("no_rawpy")
def test_without_rawpy_raws_are_compared_byte_for_byte_with_one_warning(tmp_path: Path) -> None:
    card = camera_card(tmp_path / "card")
    source = Counting(LocalFeatureSource(workers=1))
    result = scan(card, source)

    assert result.errors == []
    assert result.warnings == [NO_RAWPY_WARNING]
    assert sorted(os.path.basename(p) for p in source.requested) == ["IMG_0001.JPG", "IMG_0002.JPG"]
    # The byte-identical RAWs are found; the RAW+JPEG pair is not marked (not grouped at all).
    assert by_name(result) == {
        "IMG_0001.DNG": ("exact", "keep"),
        "backup/IMG_0001.DNG": ("exact", "delete"),
    }
    raws = [p for p in result.photos if p.path.endswith(".DNG")]
    assert len(raws) == 2
    assert all(p.decodable is None and p.error is None for p in raws)  # never tried

    # Every scan says it once more (nothing was cached for the RAWs) and asks for nothing else.
    again = Counting(LocalFeatureSource(workers=1))
    rescan = scan(card, again)
    assert rescan.errors == []
    assert rescan.warnings == [NO_RAWPY_WARNING]
    assert again.requested == []
    assert by_name(rescan) == by_name(result)


def test_raws_go_to_decoders_that_read_them_even_when_this_process_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon (here: decoder processes with rawpy) says whether it reads RAW files; the
    scan asks it, not this process's own rawpy (a daemon on another computer)."""
    pytest.importorskip(
        "rawpy", reason="rawpy (the photodup[raw] extra) is not installed; the test extra has it"
    )
    monkeypatch.setitem(sys.modules, "rawpy", None)  # this process: no rawpy
    assert not rawimage.available()
    card = camera_card(tmp_path / "card")
    source = Counting(LocalFeatureSource(workers=1), decodes_raw=True)
    result = scan(card, source)
    assert result.warnings == []
    assert result.errors == []
    assert {os.path.basename(p) for p in source.requested} >= {"IMG_0001.DNG"}
    raw = next(p for p in result.photos if p.path == str(card / "IMG_0001.DNG"))
    assert (raw.format, raw.decodable) == ("RAW", True)


def test_raws_stay_out_when_the_decoders_cannot_read_them_even_if_this_process_can(
    tmp_path: Path,
) -> None:
    pytest.importorskip(
        "rawpy", reason="rawpy (the photodup[raw] extra) is not installed; the test extra has it"
    )
    card = camera_card(tmp_path / "card")
    source = Counting(LocalFeatureSource(workers=1), decodes_raw=False)
    result = scan(card, source)
    assert result.warnings == [NO_RAWPY_WARNING]
    assert not any(p.endswith(".DNG") for p in source.requested)


@pytest.mark.usefixtures("no_rawpy")
def test_without_rawpy_the_decoder_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0003.dng"
    path.write_bytes(dng_bytes(make_photo(23, (320, 240))))
    assert not rawimage.available()
    with pytest.raises(ImageError) as caught:
        imaging.decode(path)
    assert caught.value.code is ErrorCode.UNSUPPORTED_FORMAT
    assert "photodup[raw]" in caught.value.message


@pytest.mark.usefixtures("no_rawpy")
def test_without_rawpy_a_card_without_raws_gets_no_warning(tmp_path: Path) -> None:
    card = camera_card(tmp_path / "card")
    for raw in card.rglob("*.DNG"):
        raw.unlink()
    result = scan(card, LocalFeatureSource(workers=1))
    assert result.warnings == []
    assert result.errors == []


def test_with_rawpy_the_preview_is_compared_and_the_pair_is_kept(tmp_path: Path) -> None:
    pytest.importorskip(
        "rawpy", reason="rawpy (the photodup[raw] extra) is not installed; the test extra has it"
    )
    card = camera_card(tmp_path / "card")
    source = Counting(LocalFeatureSource(workers=1))
    result = scan(card, source)

    assert result.errors == []
    assert result.warnings == []
    raw = next(p for p in result.photos if p.path == str(card / "IMG_0001.DNG"))
    assert (raw.format, raw.width, raw.height, raw.decodable) == ("RAW", 768, 1024, True)
    assert raw.taken == "2021-06-01T12:30:00"
    # One group: the RAW keeps, its backup is a byte-identical extra, and the camera's JPEG
    # matches by picture but stays: it is the RAW's pair.
    assert len(result.groups) == 1
    group = result.groups[0]
    assert group.keeper_member.photo.path == str(card / "IMG_0001.DNG")
    assert by_name(result) == {
        "IMG_0001.DNG": (group.kind.value, "keep"),
        "backup/IMG_0001.DNG": (group.kind.value, "delete"),
        "IMG_0001.JPG": (group.kind.value, "keep"),
    }
    pair = next(m for m in group.members if m.photo.path.endswith(".JPG"))
    assert pair.verdict is not Kind.EXACT
    assert "RAW+JPEG pair" in pair.why
    assert next(m for m in group.members if "backup" in m.photo.path).action is Action.DELETE
