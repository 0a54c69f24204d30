"""The scanner end to end on real files: cache reuse, cancel, progress, errors."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from photodup_tui.engine.cache import Cache
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.scan import Scanner, ScanProgress, ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Action, Kind
from tests.engine.sources import Counting, ThumbnailModel, embed
from tests.photos import make_photo, write_image, write_jpeg


def build_library(root: Path, photos: int = 6) -> Path:
    """Distinct photos, plus: an exact copy, a resized near copy, a PNG re-format, a broken file."""
    root.mkdir(parents=True, exist_ok=True)
    for seed in range(photos):
        write_jpeg(root / f"photo{seed}.jpg", make_photo(seed, (320, 240)), quality=90)
    (root / "copies").mkdir()
    shutil.copy2(root / "photo1.jpg", root / "copies" / "photo1 (copy).jpg")
    small = make_photo(2, (320, 240)).resize((160, 120), Image.Resampling.LANCZOS)
    write_jpeg(root / "copies" / "photo2-small.jpg", small, quality=75)
    write_image(root / "copies" / "photo3.png", make_photo(3, (320, 240)), "PNG")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg" * 3)
    return root


def scan(
    root: Path | Sequence[Path],
    source: object,
    cancel: threading.Event | None = None,
    progress: Callable[[ScanProgress], None] | None = None,
    settings: ScanSettings | None = None,
) -> ScanResult:
    roots = [str(r) for r in (root if isinstance(root, list | tuple) else [root])]
    with Cache() as cache:
        scanner = Scanner(settings or ScanSettings(), source, cache)  # type: ignore[arg-type]
        return scanner.run(roots, progress or (lambda _p: None), cancel or threading.Event())


def summary(result: ScanResult) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (g.kind.value, sorted((os.path.basename(m.photo.path), m.action.value) for m in g.members))
        for g in result.groups
    ]


def test_no_model_scan_finds_exact_and_near_and_reports_the_broken_file(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")
    result = scan(lib, LocalFeatureSource(workers=1))
    assert sorted(summary(result)) == [
        ("exact", [("photo1 (copy).jpg", "delete"), ("photo1.jpg", "keep")]),
        ("near", [("photo2-small.jpg", "delete"), ("photo2.jpg", "keep")]),
        ("near", [("photo3.jpg", "delete"), ("photo3.png", "keep")]),
    ]
    assert [os.path.basename(p) for p, _ in result.errors] == ["broken.jpg"]
    assert result.counts.files == 10
    assert result.counts.groups == {"exact": 1, "near": 2}
    for group in result.groups:  # hashes for every member: decisions and apply need them
        assert all(m.photo.content_hash for m in group.members)


def test_rescan_of_an_unchanged_tree_asks_for_no_features(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")
    first_source = Counting(LocalFeatureSource(workers=1))
    first = scan(lib, first_source)
    # One request per content: the byte-identical copy shares its original's features.
    assert len(first_source.requested) == 9
    again = Counting(LocalFeatureSource(workers=1))
    second = scan(lib, again)
    assert again.requested == []
    assert again.calls == 0
    assert second.counts.hashed == 0  # content hashes came from the cache too
    assert summary(second) == summary(first)
    assert [p for p, _ in second.errors] == [p for p, _ in first.errors]  # known-bad, said again


def test_changed_file_is_the_only_one_asked_again(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")
    scan(lib, LocalFeatureSource(workers=1))
    target = lib / "photo4.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    source = Counting(LocalFeatureSource(workers=1))
    scan(lib, source)
    assert source.requested == [str(target)]


def test_deleted_files_are_purged_from_the_cache(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")
    scan(lib, LocalFeatureSource(workers=1))
    (lib / "photo5.jpg").unlink()
    scan(lib, LocalFeatureSource(workers=1))
    with Cache() as cache:
        cached = cache.paths_under(str(lib))
    assert str(lib / "photo5.jpg") not in cached
    assert str(lib / "photo4.jpg") in cached


def test_transient_errors_are_asked_again_permanent_ones_are_not(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib", photos=2)
    flaky = str(lib / "photo0.jpg")
    model = ThumbnailModel({flaky: FeatureResult.failure("timeout", "decoder too slow")})
    first = scan(lib, model)
    assert (flaky, "timeout: decoder too slow") in first.errors
    source = Counting(ThumbnailModel())
    second = scan(lib, source)
    assert source.requested == [flaky]  # broken.jpg's not_an_image was cached, the timeout not
    assert flaky not in {p for p, _ in second.errors}


def test_embeddings_give_near_groups_and_survive_the_cache(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")
    first = scan(lib, ThumbnailModel())
    kinds = {
        tuple(sorted(os.path.basename(m.photo.path) for m in g.members)): g.kind
        for g in first.groups
    }
    assert kinds[("photo2-small.jpg", "photo2.jpg")] is Kind.NEAR
    assert kinds[("photo1 (copy).jpg", "photo1.jpg")] is Kind.EXACT
    near = next(g for g in first.groups if g.kind is Kind.NEAR)
    assert "cosine" in near.reason and "pHash distance" in near.reason
    source = Counting(ThumbnailModel())
    second = scan(lib, source)
    assert source.requested == []
    assert summary(second) == summary(first)
    assert [g.scores for g in second.groups] == [g.scores for g in first.groups]


def test_hard_links_and_repeated_roots_are_one_replica(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib", photos=2)
    os.link(lib / "photo0.jpg", lib / "copies" / "hardlink.jpg")
    result = scan([lib, lib, lib / "copies"], LocalFeatureSource(workers=1))
    assert result.counts.aliases_skipped == 1
    everything = [m.photo.path for g in result.groups for m in g.members]
    assert str(lib / "copies" / "hardlink.jpg") not in everything
    replicas = [(m.photo.stat.dev, m.photo.stat.ino) for g in result.groups for m in g.members]
    assert len(replicas) == len(set(replicas))


def test_progress_is_on_a_time_budget_from_the_calling_thread(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(400):
        (lib / f"f{i:03d}.jpg").write_bytes(b"same size %03d" % i)
    seen: list[ScanProgress] = []
    threads: set[int] = set()

    def progress(p: ScanProgress) -> None:
        seen.append(p)
        threads.add(threading.get_ident())

    result = scan(lib, ThumbnailModel(), progress=progress)
    assert threads == {threading.get_ident()}
    assert seen[-1].phase == "done"
    assert seen[-1].files_found == 400
    assert seen[-1].errors == 400  # none of them is an image
    assert seen[-1].hashed == 400  # same size: every file got a partial hash
    assert len(seen) < 40  # phase changes plus ~4 per second, never one per file
    assert result.counts.files == 400
    # Same sizes, different bytes: the partial hashes are cached, so a rescan reads nothing.
    source = Counting(ThumbnailModel())
    again = scan(lib, source)
    assert again.counts.hashed == 0
    assert source.requested == []


def test_cancel_keeps_what_was_done_in_the_cache(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")
    cancel = threading.Event()
    done: list[str] = []

    class StopsAfterThree(ThumbnailModel):
        def compute(
            self,
            paths: Sequence[str],
            on_result: Callable[[str, FeatureResult], None],
            cancel: threading.Event,
        ) -> None:
            def counted(path: str, result: FeatureResult) -> None:
                on_result(path, result)
                done.append(path)
                if len(done) == 3:
                    cancel.set()

            super().compute(paths, counted, cancel)

    partial = scan(lib, StopsAfterThree(), cancel=cancel)
    assert partial.cancelled
    assert len(done) == 3
    source = Counting(ThumbnailModel())
    full = scan(lib, source)
    assert not full.cancelled
    assert set(source.requested).isdisjoint(done)  # those three came from the cache
    assert len(source.requested) == 9 - 3


def test_a_failing_source_is_a_warning_with_partial_results(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib")

    class DiesMidway(ThumbnailModel):
        def compute(
            self,
            paths: Sequence[str],
            on_result: Callable[[str, FeatureResult], None],
            cancel: threading.Event,
        ) -> None:
            for path in paths[:2]:
                on_result(path, embed(path))
            raise ConnectionError("daemon went away")

    result = scan(lib, DiesMidway())
    assert any("daemon went away" in w for w in result.warnings)
    assert [g.kind for g in result.groups] == [Kind.EXACT]  # the exact tier needs no model


def test_reference_folder_members_are_kept(tmp_path: Path) -> None:
    lib = build_library(tmp_path / "lib", photos=2)
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy2(lib / "photo0.jpg", archive / "photo0.jpg")
    settings = replace(ScanSettings(), reference_folders=(str(archive),))
    result = scan(lib, LocalFeatureSource(workers=1), settings=settings)
    group = next(
        g for g in result.groups if str(archive / "photo0.jpg") in {m.photo.path for m in g.members}
    )
    assert group.keeper_member.photo.path == str(archive / "photo0.jpg")
    assert group.keeper_member.photo.reference
    assert {m.photo.path: m.action for m in group.members}[str(lib / "photo0.jpg")] is Action.DELETE


@pytest.mark.parametrize("name", [b"new\nline.jpg", b"-dash.jpg", b"bad-\xff.jpg"])
def test_odd_names_scan_and_cache(tmp_path: Path, name: bytes) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    write_jpeg(lib / "a.jpg", make_photo(5, (200, 150)))
    shutil.copy2(os.fsencode(lib / "a.jpg"), os.path.join(os.fsencode(lib), name))
    result = scan(lib, LocalFeatureSource(workers=1))
    (group,) = result.groups
    assert {os.fsencode(os.path.basename(m.photo.path)) for m in group.members} == {b"a.jpg", name}
    source = Counting(LocalFeatureSource(workers=1))
    assert summary(scan(lib, source)) == summary(result)
    assert source.requested == []
