"""Remembered decisions follow content, not names."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

from photodup_tui.engine.cache import Cache
from photodup_tui.engine.decisions import Decision, Decisions
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.scan import Scanner, ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group, Kind, Member
from tests.engine.helpers import photo
from tests.photos import make_photo, write_jpeg


def group(*hashes: str) -> Group:
    return Group(
        Kind.NEAR, [Member(photo(f"/p/{i}.jpg", content_hash=h)) for i, h in enumerate(hashes)], ""
    )


def test_decisions_persist_and_cover_subsets_not_supersets(tmp_path: Path) -> None:
    with Decisions(tmp_path / "d.sqlite") as decisions:
        decisions.record(group("h1", "h2", "h3"), Decision.NOT_DUPLICATES)
        decisions.record(group("h9", "h9"), Decision.KEEP_ALL)
    with Decisions(tmp_path / "d.sqlite") as decisions:  # re-read from disk
        assert decisions.decision_for(group("h3", "h1", "h2")) is Decision.NOT_DUPLICATES
        assert decisions.decision_for(group("h1", "h2")) is Decision.NOT_DUPLICATES
        assert decisions.decision_for(group("h1", "h2", "h4")) is None  # a new photo: ask again
        assert decisions.decision_for(group("h9", "h9", "h9")) is Decision.KEEP_ALL
        assert decisions.forget(group("h1", "h2", "h3"))
        assert decisions.decision_for(group("h1", "h2")) is None


def test_default_location_is_the_state_dir() -> None:
    with Decisions() as decisions:
        assert decisions.path.parent == Path(os.environ["PHOTODUP_STATE_DIR"])


def scan(root: Path) -> ScanResult:
    with Cache() as cache, Decisions() as decisions:
        scanner = Scanner(ScanSettings(), LocalFeatureSource(workers=1), cache, decisions)
        return scanner.run([str(root)], lambda _p: None, threading.Event())


def test_a_dismissed_group_stays_dismissed_after_a_rename(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    image = make_photo(11, (320, 240))
    write_jpeg(lib / "a.jpg", image, quality=92)
    write_jpeg(lib / "a-small.jpg", image.resize((160, 120), Image.Resampling.LANCZOS), quality=80)
    first = scan(lib)
    assert len(first.groups) == 1
    with Decisions() as decisions:
        decisions.record(first.groups[0], Decision.NOT_DUPLICATES)
    os.rename(lib / "a-small.jpg", lib / "renamed.jpg")
    (lib / "moved").mkdir()
    os.rename(lib / "a.jpg", lib / "moved" / "a.jpg")
    second = scan(lib)
    assert second.groups == []
    assert second.counts.dismissed == 1
    # A new copy of the photo is news: the group comes back with it.
    write_jpeg(lib / "another.jpg", image.resize((200, 150), Image.Resampling.LANCZOS), quality=70)
    third = scan(lib)
    assert len(third.groups) == 1
    assert len(third.groups[0].members) == 3
