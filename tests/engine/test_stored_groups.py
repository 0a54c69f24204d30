"""A rescan of an unchanged library reuses the stored grouping; any change groups afresh."""

from __future__ import annotations

import os
import threading
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from photodup_tui.engine import stored_groups
from photodup_tui.engine.cache import GROUPINGS_KEPT, Cache
from photodup_tui.engine.decisions import Decision, Decisions
from photodup_tui.engine.sameshot_check import SameShotChecker
from photodup_tui.engine.scan import Scanner, ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Kind, Photo
from tests.engine.helpers import photo
from tests.engine.sources import ThumbnailModel
from tests.engine.test_report import sample
from tests.engine.test_scan import build_library, scan
from tests.photos import make_photo, write_jpeg


def _everything(result: ScanResult) -> list[object]:
    """All a scan tells about its groups, member by member."""
    return [
        (
            g.kind,
            g.reason,
            g.keeper,
            g.scores,
            [(m.photo.path, m.action, m.why, m.verdict) for m in g.members],
        )
        for g in result.groups
    ]


def _library(root: Path) -> Path:
    """build_library plus a cropped edit, so the pixel check has a similar pair to answer."""
    lib = build_library(root)
    write_jpeg(lib / "photo4-crop.jpg", make_photo(4, (320, 240)).crop((20, 15, 300, 225)))
    return lib


def test_an_unchanged_library_reuses_the_grouping(tmp_path: Path) -> None:
    lib = _library(tmp_path / "lib")
    first = scan(lib, ThumbnailModel())
    assert not first.counts.groups_reused
    assert {g.kind for g in first.groups} == {Kind.EXACT, Kind.NEAR, Kind.SIMILAR}
    second = scan(lib, ThumbnailModel())
    assert second.counts.groups_reused
    assert _everything(second) == _everything(first)
    # The reused groups are made of this scan's own photos, not copies of them.
    found = {id(p) for p in second.photos}
    assert all(id(m.photo) in found for g in second.groups for m in g.members)


def test_a_changed_file_groups_afresh(tmp_path: Path) -> None:
    lib = _library(tmp_path / "lib")
    scan(lib, ThumbnailModel())
    target = lib / "photo0.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    again = scan(lib, ThumbnailModel())
    assert not again.counts.groups_reused
    assert scan(lib, ThumbnailModel()).counts.groups_reused  # and stores the new grouping


def test_a_new_file_changes_the_groups(tmp_path: Path) -> None:
    lib = _library(tmp_path / "lib")
    scan(lib, ThumbnailModel())
    (lib / "photo0 (copy).jpg").write_bytes((lib / "photo0.jpg").read_bytes())
    again = scan(lib, ThumbnailModel())
    assert not again.counts.groups_reused
    members = {os.path.basename(m.photo.path) for g in again.groups for m in g.members}
    assert "photo0 (copy).jpg" in members


def test_changed_settings_group_afresh(tmp_path: Path) -> None:
    lib = _library(tmp_path / "lib")
    first = scan(lib, ThumbnailModel())
    strict = ScanSettings().with_threshold(ThumbnailModel.model_id, 0.9999)
    again = scan(lib, ThumbnailModel(), settings=strict)
    assert not again.counts.groups_reused
    assert _everything(again) != _everything(first)
    flipped = replace(ScanSettings(), keep_rules=("shorter_path",))
    assert not scan(lib, ThumbnailModel(), settings=flipped).counts.groups_reused


def test_remembered_decisions_still_apply_to_reused_groups(tmp_path: Path) -> None:
    lib = _library(tmp_path / "lib")
    first = scan(lib, ThumbnailModel())
    exact_group = next(g for g in first.groups if g.kind is Kind.EXACT)
    with Decisions() as decisions:
        decisions.record(exact_group, Decision.NOT_DUPLICATES)
        with Cache() as cache:
            result = Scanner(ScanSettings(), ThumbnailModel(), cache, decisions).run(
                [str(lib)], lambda _p: None, threading.Event()
            )
    assert result.counts.groups_reused
    assert result.counts.dismissed == 1
    assert len(result.groups) == len(first.groups) - 1


def test_a_cancelled_grouping_is_not_stored(tmp_path: Path) -> None:
    lib = _library(tmp_path / "lib")
    cancel = threading.Event()

    def cancel_when_grouping(progress: object) -> None:
        if getattr(progress, "phase", "") == "grouping":
            cancel.set()

    scan(lib, ThumbnailModel(), cancel=cancel, progress=cancel_when_grouping)
    assert cancel.is_set()
    assert not scan(lib, ThumbnailModel()).counts.groups_reused


def test_a_grouping_with_unanswered_pixel_checks_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = _library(tmp_path / "lib")
    # The crop's pixels cannot be read now (as if it were being rewritten): its pair with the
    # original goes unchecked, so this grouping is not the library's real one.
    real = SameShotChecker._thumbnails

    def without_crop(
        self: SameShotChecker, photos: list[Photo], announce: bool = False
    ) -> dict[str, object]:
        found = real(self, photos, announce)
        return {p: t for p, t in found.items() if not p.endswith("-crop.jpg")}

    monkeypatch.setattr(SameShotChecker, "_thumbnails", without_crop)
    first = scan(lib, ThumbnailModel())
    assert Kind.SIMILAR not in {g.kind for g in first.groups}
    monkeypatch.setattr(SameShotChecker, "_thumbnails", real)  # (undo() would undo isolation)
    second = scan(lib, ThumbnailModel())
    assert not second.counts.groups_reused
    assert Kind.SIMILAR in {g.kind for g in second.groups}


def test_fingerprint_covers_every_input() -> None:
    photos = [photo("/p/a.jpg"), photo("/p/b.jpg")]
    vectors = {"/p/a.jpg": np.ones(4, np.float16), "/p/b.jpg": np.zeros(4, np.float16)}
    settings = ScanSettings()

    def key(**changes: object) -> bytes:
        return stored_groups.fingerprint(
            changes.get("photos", photos),  # type: ignore[arg-type]
            changes.get("vectors", vectors),  # type: ignore[arg-type]
            str(changes.get("model", "m")),
            changes.get("settings", settings),  # type: ignore[arg-type]
            checked=bool(changes.get("checked", True)),
        )

    base = key()
    assert key() == base
    assert key(photos=list(reversed(photos))) == base  # the walk's order does not matter
    variants = [
        key(photos=photos[:1]),
        key(photos=[replace(photos[0], phash=1), photos[1]]),
        key(photos=[replace(photos[0], width=10), photos[1]]),
        key(photos=[replace(photos[0], taken="2020-01-01T00:00:00"), photos[1]]),
        key(photos=[replace(photos[0], reference=True), photos[1]]),
        key(photos=[replace(photos[0], decodable=False), photos[1]]),
        key(photos=[replace(photos[0], stat=replace(photos[0].stat, mtime_ns=1)), photos[1]]),
        key(photos=[replace(photos[0], path="/p/c.jpg"), photos[1]]),
        key(vectors={**vectors, "/p/b.jpg": np.full(4, 0.5, np.float16)}),
        key(vectors={"/p/a.jpg": vectors["/p/a.jpg"]}),
        key(model="other"),
        key(settings=replace(settings, delete_raw_jpeg_pairs=True)),
        key(checked=False),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_fingerprint_follows_the_grouping_code(monkeypatch: pytest.MonkeyPatch) -> None:
    photos = [photo("/p/a.jpg")]
    before = stored_groups.fingerprint(photos, {}, "m", ScanSettings(), checked=True)
    monkeypatch.setattr(stored_groups, "code_digest", lambda: b"another engine")
    assert stored_groups.fingerprint(photos, {}, "m", ScanSettings(), checked=True) != before


def test_encoding_round_trips_odd_names_and_refuses_what_does_not_fit() -> None:
    # The report tests' groups: names with invalid UTF-8 and newlines, a keeper that is not
    # first, a reference member, members with and without a verdict.
    groups = sample().groups
    photos = [m.photo for g in groups for m in g.members]
    payload = stored_groups.encode(groups)
    decoded = stored_groups.decode(payload, list(reversed(photos)))
    assert decoded == groups
    assert decoded is not None
    members = [m.photo for g in decoded for m in g.members]
    assert [id(p) for p in members] == [id(p) for p in photos]  # the very same objects
    assert stored_groups.decode(payload, photos[1:]) is None  # a member this scan did not find
    assert stored_groups.decode(b"\xc1 not zlib", photos) is None
    assert stored_groups.decode(zlib.compress(b"\xc1 not msgpack"), photos) is None
    another_format = zlib.compress(b"\x92\x63\x90")  # [99, []]
    assert stored_groups.decode(another_format, photos) is None


def test_the_cache_keeps_the_newest_groupings(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        for n in range(GROUPINGS_KEPT + 2):
            cache.store_groups(bytes([n]) * 16, b"payload %d" % n)
        assert cache.stored_groups(bytes([0]) * 16) is None
        assert cache.stored_groups(bytes([1]) * 16) is None
        newest = bytes([GROUPINGS_KEPT + 1]) * 16
        assert cache.stored_groups(newest) == b"payload %d" % (GROUPINGS_KEPT + 1)
    with Cache(tmp_path / "c.sqlite") as reopened:  # and they survive a restart
        assert reopened.stored_groups(newest) is not None


def test_a_cache_that_cannot_be_written_still_gives_its_grouping(tmp_path: Path) -> None:
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.store_groups(b"k" * 16, b"payload")
        cache._db.execute("PRAGMA query_only = ON")  # as a read-only cache file would be
        assert cache.stored_groups(b"k" * 16) == b"payload"
