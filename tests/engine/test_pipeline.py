"""The scan's overlapped stages: feature requests go out while the exact tier still reads,
each content is asked about once, progress stays exact, and a cancel stops it all.

The hashers are gated on what the feature source has seen (never on time), so each test
proves an order: on a scan that ran its stages one after the other the gate would only
open at its deadline, and the assertion after it fails."""

from __future__ import annotations

import shutil
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photodup_tui.engine import exact
from photodup_tui.engine.cache import Cache
from photodup_tui.engine.scan import FULL_READ, QUICK_CHECK, WALK_BATCH, ScanProgress
from photodup_tui.engine.types import FileStat, Kind
from tests.engine.sources import Counting, Streaming, ThumbnailModel
from tests.engine.test_scan import scan

#: How long a gated hasher waits for what it waits for: only reached when the scan does not
#: overlap its stages (the tests then fail), never in a passing run.
GATE = 5.0


def same_size_photos(root: Path, count: int) -> list[Path]:
    """``count`` different pictures in files of one size (BMP: the size follows the pixels)."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        pixels = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
        big = Image.fromarray(pixels).resize((64, 48), Image.Resampling.BILINEAR)
        path = root / f"scan{seed:02d}.bmp"
        big.save(path)
        paths.append(path)
    assert len({p.stat().st_size for p in paths}) == 1
    return paths


def gate_partial_hashes(
    monkeypatch: pytest.MonkeyPatch, opened: threading.Event, first_only: bool
) -> list[bool]:
    """Partial hashes wait (at most GATE seconds) for ``opened``; returns, per call, whether
    it was open when the call went on."""
    original = exact.partial_hash
    seen: list[bool] = []
    lock = threading.Lock()

    def gated(path: str, expected: FileStat) -> str:
        with lock:
            first = not seen
            seen.append(False)
            index = len(seen) - 1
        if first or not first_only:
            opened.wait(GATE)
        seen[index] = opened.is_set()
        return original(path, expected)

    monkeypatch.setattr(exact, "partial_hash", gated)
    return seen


def test_requests_go_out_while_files_of_one_size_are_still_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = same_size_photos(tmp_path / "lib", 8)
    source = Streaming(ThumbnailModel())
    hashed = gate_partial_hashes(monkeypatch, source.first_asked, first_only=True)
    result = scan(tmp_path / "lib", source)
    # The first quick-check read waited for a feature request: one went out meanwhile.
    assert hashed and hashed[0], "no feature request before the exact tier's reads finished"
    assert sorted(source.asked) == sorted(str(p) for p in files)  # all different: all asked
    assert all(p.decodable for p in result.photos)
    assert result.counts.hashed == len(files)


def test_a_byte_identical_copy_is_never_asked_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first file of a size goes at once; its copy, found later, shares its features."""
    lib = tmp_path / "lib"
    files = same_size_photos(lib / "a", 6)
    (lib / "b").mkdir()
    copy = shutil.copyfile(files[0], lib / "b" / "scan00 again.bmp")
    source = Streaming(ThumbnailModel())
    gate_partial_hashes(monkeypatch, source.first_asked, first_only=True)
    result = scan(lib, source)
    assert len(source.asked) == len(files)  # one request per content
    assert sorted(source.asked) == sorted(map(str, files))
    photos = {p.path: p for p in result.photos}
    assert photos[str(copy)].decodable and photos[str(copy)].content_hash is not None
    assert photos[str(copy)].content_hash == photos[str(files[0])].content_hash
    exact_groups = [g for g in result.groups if g.kind is Kind.EXACT]
    assert [sorted(m.photo.path for m in g.members) for g in exact_groups] == [
        sorted([str(files[0]), str(copy)])
    ]


def test_a_new_copy_of_a_cached_photo_is_not_asked_about_even_when_walked_first(
    tmp_path: Path,
) -> None:
    """The copy is walked (and handed over) before the cached original: it must wait for
    the walk to end rather than go at once as the first of its size."""
    lib = tmp_path / "lib"
    fillers = lib / "a"
    fillers.mkdir(parents=True)
    for index in range(WALK_BATCH + 5):  # more than one hand-over of the walker
        Image.new("RGB", (8 + index, 8), (index, 0, 0)).save(fillers / f"f{index:03d}.bmp")
    files = same_size_photos(lib / "b", 3)
    scan(lib, ThumbnailModel())
    copy = shutil.copyfile(files[1], fillers / "0-copy.bmp")  # walked first of all
    source = Streaming(ThumbnailModel())
    again = scan(lib, source)
    assert source.asked == []
    photos = {p.path: p for p in again.photos}
    assert photos[str(copy)].decodable and again.counts.embedded == 0


def test_progress_stays_exact_while_stages_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "lib"
    files = same_size_photos(lib, 8)
    shutil.copyfile(files[3], lib / "scan03 copy.bmp")
    answered = threading.Event()
    source = Streaming(ThumbnailModel(), answered=lambda _path: answered.set())
    gate_partial_hashes(monkeypatch, answered, first_only=True)
    seen: list[ScanProgress] = []
    result = scan(lib, source, progress=seen.append)

    # A picture read while the bar showed the quick check was counted, not on that bar.
    quick = [p for p in seen if p.step == QUICK_CHECK]
    assert quick[-1].embedded >= 1, "no picture was read while the files were hashed"
    by_stage: dict[str, list[ScanProgress]] = defaultdict(list)
    for p in seen:
        if p.phase_total is not None:
            by_stage[p.step or p.phase].append(p)
    expected = {QUICK_CHECK: len(files) + 1, FULL_READ: 2, "features": len(files)}
    assert {stage: {p.phase_total for p in ps} for stage, ps in by_stage.items()} == {
        stage: {total} for stage, total in expected.items()
    }
    for stage, reports in by_stage.items():
        done = [p.phase_done for p in reports]
        assert done == sorted(done), f"{stage} went backwards: {done}"
        assert done[-1] == expected[stage], f"{stage} did not end full"
    for field in ("files_found", "hashed", "embedded", "cache_hits"):
        values = [getattr(p, field) for p in seen]
        assert values == sorted(values), f"{field} went backwards"
    assert seen[-1].phase == "done" and result.counts.embedded == len(files)
    assert result.counts.hashed == len(files) + 1 + 2


def test_cancel_while_hashing_and_computing_keeps_what_was_learnt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = same_size_photos(tmp_path / "lib", 8)
    cancel = threading.Event()
    source = Streaming(ThumbnailModel(), answered=lambda _path: cancel.set())
    gate_partial_hashes(monkeypatch, cancel, first_only=False)
    result = scan(tmp_path / "lib", source, cancel=cancel)

    assert result.cancelled
    assert len(source.asked) == 1  # nothing asked once the cancel came
    assert result.counts.hashed < len(files)  # the reads not yet started never ran
    with Cache() as cache:
        known = cache.lookup(result.photos, source.model_id)
    assert known[source.asked[0]].features is not None  # the answer is kept
    with_partial = {path for path, entry in known.items() if entry.partial_hash is not None}
    assert len(with_partial) == result.counts.hashed  # and so is every read that finished
    # The next scan asks only about what the cancelled one did not learn.
    counting = Counting(ThumbnailModel())
    scan(tmp_path / "lib", counting)
    assert source.asked[0] not in counting.requested
    assert len(counting.requested) == len(files) - 1
