"""Keep rules: each rule decides only when the rules before it tie, and says why."""

from __future__ import annotations

from dataclasses import replace

import pytest

from photodup_tui.engine.keeprules import KeepRules, is_raw_jpeg_pair
from photodup_tui.engine.settings import ScanSettings, SettingsError, from_mapping
from photodup_tui.engine.types import Photo
from tests.engine.helpers import photo

DEFAULT = KeepRules(ScanSettings())


def best(rules: KeepRules, *photos: Photo) -> Photo:
    ranked = rules.rank(list(photos))
    # The order of the input never matters.
    assert rules.rank(list(reversed(photos)))[0] is ranked[0]
    return ranked[0]


def test_reference_beats_resolution() -> None:
    ref = photo("/archive/a.jpg", width=100, height=100, reference=True)
    big = photo("/inbox/a.jpg", width=6000, height=4000)
    assert best(DEFAULT, ref, big) is ref
    assert DEFAULT.explain(ref, big) == "in a reference folder"


def test_resolution_beats_file_size() -> None:
    sharp = photo("/a.jpg", width=4000, height=3000, size=1_000)
    heavy = photo("/b.jpg", width=2000, height=1500, size=9_000_000)
    assert best(DEFAULT, sharp, heavy) is sharp
    assert DEFAULT.explain(sharp, heavy) == "higher resolution (4000x3000 vs 2000x1500)"


def test_file_size_beats_format() -> None:
    jpeg = photo("/a.jpg", size=3_000_000)
    png = photo("/a.png", fmt="PNG", size=2_000_000)
    assert best(DEFAULT, jpeg, png) is jpeg
    assert DEFAULT.explain(jpeg, png) == "larger file (3.0 MB vs 2.0 MB)"


@pytest.mark.parametrize(
    ("better", "worse"),
    [("HEIF", "PNG"), ("PNG", "JPEG"), ("TIFF", "JPEG"), ("JPEG", "WEBP"), ("MPO", "GIF")],
)
def test_format_priority(better: str, worse: str) -> None:
    a = photo("/x/a", fmt=better)
    b = photo("/x/b", fmt=worse)
    assert best(DEFAULT, a, b) is a
    assert DEFAULT.explain(a, b) == f"preferred format ({better} over {worse})"


def test_raw_is_recognised_by_extension_whatever_decoded_its_preview() -> None:
    raw = photo("/x/a.NEF", fmt="TIFF")
    heif = photo("/x/b.heic", fmt="HEIF")
    jpeg = photo("/x/c.jpg")
    assert best(DEFAULT, raw, jpeg) is raw
    assert DEFAULT.explain(raw, jpeg) == "preferred format (RAW over JPEG)"
    assert DEFAULT.rank([jpeg, heif, raw])[2] is jpeg


def test_format_beats_exif_and_exif_beats_date() -> None:
    png = photo("/a.png", fmt="PNG", exif_fields=0)
    jpeg = photo("/b.jpg", exif_fields=30)
    assert best(DEFAULT, png, jpeg) is png
    rich = photo("/c.jpg", exif_fields=30, taken="2022-01-01T00:00:00")
    old = photo("/d.jpg", exif_fields=3, taken="2001-01-01T00:00:00")
    assert best(DEFAULT, rich, old) is rich
    assert DEFAULT.explain(rich, old) == "richer EXIF (30 vs 3 tags)"


def test_oldest_capture_then_oldest_file() -> None:
    early = photo("/zz/long/path/a.jpg", taken="2001-01-01T00:00:00")
    late = photo("/a.jpg", taken="2002-01-01T00:00:00")
    assert best(DEFAULT, early, late) is early
    assert (
        DEFAULT.explain(early, late) == "taken earlier (2001-01-01T00:00:00 vs 2002-01-01T00:00:00)"
    )
    dated = photo("/zz/b.jpg", taken="2030-01-01T00:00:00")
    undated = photo("/b.jpg")
    assert best(DEFAULT, dated, undated) is dated  # a date beats no date
    older = photo("/zz/c.jpg", mtime_ns=1)
    newer = photo("/c.jpg", mtime_ns=2)
    assert best(DEFAULT, older, newer) is older
    assert DEFAULT.explain(older, newer) == "older file"


def test_path_patterns_then_shorter_path() -> None:
    rules = KeepRules(
        replace(ScanSettings(), prefer_paths=("*/Originals/*",), avoid_paths=("*/Downloads/*",))
    )
    original = photo("/home/me/Pictures/Originals/2020/a.jpg")
    short = photo("/a.jpg")
    assert best(rules, original, short) is original
    downloaded = photo("/d/Downloads/a.jpg")
    plain = photo("/d/Pictures/long/a.jpg")
    assert best(rules, downloaded, plain) is plain
    assert rules.explain(plain, downloaded) == "preferred path pattern"
    assert best(DEFAULT, original, short) is short
    assert DEFAULT.explain(short, original) == "shorter path"


def test_custom_order_from_config() -> None:
    settings = from_mapping({"keep_rules": ["format", "resolution"]})
    rules = KeepRules(settings)
    heif = photo("/a.heic", fmt="HEIF", width=100, height=100)
    jpeg = photo("/b.jpg", width=6000, height=4000)
    assert best(rules, heif, jpeg) is heif
    assert best(DEFAULT, heif, jpeg) is jpeg


def test_custom_format_priority() -> None:
    rules = KeepRules(replace(ScanSettings(), format_priority=(("WEBP",), ("JPEG",))))
    assert best(rules, photo("/a.webp", fmt="WEBP"), photo("/b.jpg")).path == "/a.webp"


def test_unknown_keep_rule_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="unknown keep rules"):
        from_mapping({"keep_rules": ["resolution", "vibes"]})


def test_undecodable_is_never_keeper_over_decodable_whatever_the_rules() -> None:
    broken = photo(
        "/archive/a.jpg", decodable=False, width=9000, height=9000, reference=True, size=10**9
    )
    fine = photo("/z/zz/a.jpg", width=10, height=10, size=1)
    assert best(DEFAULT, broken, fine) is fine
    assert DEFAULT.explain(fine, broken) == "decodable (the other is not)"


def test_ties_are_broken_by_path_so_order_never_matters() -> None:
    a = photo("/x/a.jpg")
    b = photo("/x/b.jpg")
    assert best(DEFAULT, b, a) is a
    assert DEFAULT.explain(a, b) == "first by path (every rule tied)"


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("/p/IMG_1.CR2", "/p/IMG_1.JPG", True),
        ("/p/img_1.nef", "/p/IMG_1.jpeg", True),
        ("/p/IMG_1.CR2", "/q/IMG_1.JPG", False),  # other folder
        ("/p/IMG_1.CR2", "/p/IMG_2.JPG", False),  # other stem
        ("/p/IMG_1.JPG", "/p/IMG_1.jpg", False),  # no RAW
        ("/p/IMG_1.CR2", "/p/IMG_1.PNG", False),  # not a JPEG
    ],
)
def test_raw_jpeg_pairs(first: str, second: str, expected: bool) -> None:
    assert is_raw_jpeg_pair(photo(first), photo(second)) is expected
    assert is_raw_jpeg_pair(photo(second), photo(first)) is expected
