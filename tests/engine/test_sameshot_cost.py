"""What the same-shot check costs: a quick rejection that never rejects what the full search
accepts, prepared (batched) transforms that give the per-pair scores, a per-scan budget,
and no pair scored twice (issue 21)."""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageEnhance, ImageOps

from photodup_tui.engine import sameshot, sameshot_check
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.sameshot import SAME_SHOT_MIN, SCALES
from photodup_tui.engine.sameshot_check import SameShotChecker
from photodup_tui.engine.types import Kind
from tests.engine.helpers import photo
from tests.engine.sources import ThumbnailModel
from tests.engine.test_scan import scan
from tests.photos import make_photo, write_jpeg

#: The quick search must clear QUICK_MIN by this much for every pair the full search
#: accepts (the calibrated sets keep at least this margin; see the README).
MARGIN = 0.1


def _edits(image: Image.Image, rng: np.random.Generator) -> list[Image.Image]:
    """Copies and edits of ``image`` as libraries gather them, with random amounts."""
    w, h = image.size
    out = []
    for _ in range(2):
        cut = rng.uniform(0.02, 0.12, 4)
        box = (cut[0] * w, cut[1] * h, w - cut[2] * w, h - cut[3] * h)
        out.append(image.crop(tuple(round(v) for v in box)))
    out.append(ImageOps.expand(image, border=int(rng.integers(8, 40)), fill=(255, 255, 255)))
    out.append(ImageOps.mirror(image))
    out.append(ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.7, 1.4))))
    out.append(ImageEnhance.Contrast(image).enhance(float(rng.uniform(0.7, 1.3))))
    out.append(image.convert("L"))
    out.append(image.resize((w // 2, h // 2), Image.Resampling.LANCZOS))
    return out


def _sources() -> list[Image.Image]:
    photographs = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.camera()]
    photographs.append(skimage.data.page())
    images = [Image.fromarray(p).convert("RGB") for p in photographs]
    return images + [make_photo(seed, (320, 240)) for seed in range(2)]


@pytest.fixture(scope="module")
def thumbs() -> list[list[sameshot.Thumb]]:
    """Per source picture: its thumbnail, then its edits' thumbnails."""
    rng = np.random.default_rng(21)
    return [
        [sameshot.thumbnail_from(im) for im in [source, *_edits(source, rng)]]
        for source in _sources()
    ]


def _full(a: sameshot.Thumb, b: sameshot.Thumb) -> sameshot.Scored:
    return sameshot.score_prepared(sameshot.Prepared(a), sameshot.Prepared(b), quick=False)


def test_the_quick_search_never_rejects_a_pair_the_full_search_accepts(
    thumbs: list[list[sameshot.Thumb]],
) -> None:
    accepted = 0
    pairs = [(f[0], edit) for f in thumbs for edit in f[1:]]
    pairs += [(f[i], f[i + 1]) for f in thumbs for i in range(1, len(f) - 1)]  # edit ~ edit
    for a, b in [*pairs, *[(b, a) for a, b in pairs]]:  # either may be the keeper
        full = _full(a, b)
        if full.value < SAME_SHOT_MIN:
            continue
        accepted += 1
        quick = sameshot.quick_prepared(sameshot.Prepared(a), sameshot.Prepared(b))
        assert quick.stage == "pending"
        assert quick.value >= sameshot.QUICK_MIN + MARGIN
        assert sameshot.score(a, b) == pytest.approx(full.value, abs=1e-6)
    assert accepted >= 0.8 * 2 * len(pairs)


def test_prepared_transforms_give_the_per_pair_search(
    thumbs: list[list[sameshot.Thumb]],
) -> None:
    """The coarse search from spectra made once per thumbnail (circular correlation at the
    coarse size) equals the per-pair search (linear correlation, padded per pair)."""
    flat = [t for family in thumbs for t in family[:4]]
    prepared = [sameshot.Prepared(t) for t in flat]
    for i, j in itertools.combinations(range(0, len(flat), 2), 2):
        a, b = prepared[i], prepared[j]
        batched = sameshot._coarse(a, b, sameshot.ALL_SCALES)
        alone = sameshot._search(a.small, b.small, SCALES, (False, True))
        assert batched[0] == pytest.approx(alone[0], abs=1e-4)
        assert batched[1:] == alone[1:]


def test_a_chunk_scores_each_pair_as_it_would_alone(thumbs: list[list[sameshot.Thumb]]) -> None:
    keeper = thumbs[0][0]
    candidates = [family[i] for family in thumbs for i in (0, 3)]  # its own edits, others
    chunk = sameshot_check.score_chunk([(keeper, c) for c in candidates])
    alone = [sameshot.score(keeper, c) for c in candidates]
    assert [s.value for s in chunk] == pytest.approx(alone, abs=1e-6)
    assert {s.stage for s in chunk} >= {"quick", "coarse", "fine"}
    # Named, prepared thumbnails are kept between chunks: the next chunk reuses them.
    keys = [("t/keeper", f"t/{i}") for i in range(len(candidates))]
    pairs = [(keeper, c) for c in candidates]
    for _ in range(2):
        kept = sameshot_check.score_chunk(pairs, True, keys)
        assert [s.value for s in kept] == pytest.approx(alone, abs=1e-6)
    assert "t/keeper" in sameshot_check._prepared


def _pair_files(tmp_path: Path) -> list[str]:
    image = make_photo(7, (320, 240))
    paths = []
    for name, edit in [("a", image), ("b", ImageOps.mirror(image)), ("c", make_photo(8))]:
        paths.append(str(write_jpeg(tmp_path / f"{name}.jpg", edit)))
    return paths


def test_no_pair_is_scored_twice_in_one_scan(tmp_path: Path) -> None:
    a, b, c = (photo(p, content_hash=p) for p in _pair_files(tmp_path))
    checker = SameShotChecker(isolate=False)
    first = checker([(a, b), (b, a), (a, c), (a, b)])
    assert first[0] is not None and first[0] >= SAME_SHOT_MIN
    assert first[1] == first[3] == first[0]
    assert checker.scored == 2  # (a, b) either way round, and (a, c)
    assert checker([(b, a), (c, a)]) == [first[0], first[2]]
    assert checker.scored == 2


class LookAlikes(ThumbnailModel):
    """A model to which every photo looks alike: each embedding is mostly one shared
    direction (pairwise cosine ~0.9), so every photo is a similar candidate of every other."""

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        def mixed(path: str, result: FeatureResult) -> None:
            if result.embedding is not None:
                shared = np.full(result.embedding.shape, 1.0, dtype=np.float32)
                vector = 3.0 * shared / np.linalg.norm(shared) + result.embedding
                result = replace(result, embedding=vector / np.linalg.norm(vector))
            on_result(path, result)

        super().compute(paths, mixed, cancel)


def _look_alike_folder(root: Path) -> Path:
    """Crops of one picture at many offsets: every pair passes the quick search."""
    root.mkdir()
    image = make_photo(5, (400, 300))
    for i in range(8):
        x, y = 4 * i, 3 * i
        write_jpeg(root / f"icon{i}.jpg", image.crop((x, y, x + 360, y + 270)), quality=85)
    return root


def test_the_budget_caps_full_searches_and_leaves_the_grouping_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _look_alike_folder(tmp_path / "alike")
    checkers: list[SameShotChecker] = []
    real_close = SameShotChecker.close

    def close(self: SameShotChecker) -> None:
        checkers.append(self)
        real_close(self)

    monkeypatch.setattr(SameShotChecker, "close", close)
    monkeypatch.setattr(sameshot_check, "PIXEL_CHECKS_MIN", 3)
    monkeypatch.setattr(sameshot_check, "PIXEL_CHECKS_PER_PHOTO", 0)
    capped = scan(folder, LookAlikes())
    (checker,) = checkers
    assert checker.budget == 3
    assert checker.searched <= 3
    assert checker.over_budget > 0 and checker.unanswered >= checker.over_budget
    assert any("budget of 3 pixel checks" in w for w in capped.warnings)
    assert not scan(folder, LookAlikes()).counts.groups_reused  # not stored as complete

    # The same folder within budget: every pair answered, the grouping stored and reused.
    monkeypatch.setattr(sameshot_check, "PIXEL_CHECKS_MIN", 1000)
    checkers.clear()
    whole = scan(folder, LookAlikes())
    assert checkers[0].over_budget == 0 and not whole.warnings
    assert checkers[0].unanswered == 0
    members = [m for g in whole.groups if g.kind is Kind.SIMILAR for m in g.members]
    assert len(members) > len([m for g in capped.groups for m in g.members])


def test_resampling_matrices_equal_pillows_resize() -> None:
    rng = np.random.default_rng(5)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(8, 40, 2))
        image = (rng.random((h, w)) * 255).astype(np.float32)
        scale = float(rng.choice(SCALES))
        assert sameshot._resampled(image, scale) == pytest.approx(
            sameshot._resized(image, scale), abs=1e-3
        )


def test_the_pool_scores_the_next_keepers_pairs_ahead_with_the_same_answers(
    tmp_path: Path,
) -> None:
    """While the grouping waits for one keeper's answers, the pool already scores the pairs
    prefetch() announced next; every answer and count is what scoring each question in
    turn gives, and a pair scored ahead but never asked is neither counted nor answered."""
    folder = _look_alike_folder(tmp_path / "alike")
    photos = [photo(str(p), content_hash=p.name) for p in sorted(folder.iterdir())]
    keepers = [[(photos[k], other) for other in photos if other is not photos[k]] for k in (0, 1)]
    unasked = [(photos[2], photos[j]) for j in (5, 6, 7)]  # its keeper "joined a family"
    reference = SameShotChecker(isolate=False)
    expected = [reference(pairs) for pairs in keepers]
    with SameShotChecker(workers=2, pool_after=0) as checker:
        checker.prefetch([*keepers[0], *keepers[1], *unasked])
        assert checker(keepers[0]) == expected[0]
        # The second keeper's pairs (but the one asked already) and the third's went to
        # the pool with the first keeper's.
        assert checker.given_ahead == len(keepers[1]) - 1 + len(unasked)
        assert checker(keepers[1]) == expected[1]
        counts = ("asked", "rejected", "coarse_rejected", "searched", "scored")
        assert [getattr(checker, n) for n in counts] == [getattr(reference, n) for n in counts]
    assert checker.ahead_unused == len(unasked)
    assert checker.unanswered == 0


def test_coarse_searches_of_many_pairs_at_once_equal_each_alone(
    thumbs: list[list[sameshot.Thumb]],
) -> None:
    """The batched coarse search (one transform for a keeper's candidates, the window
    normalisation per template size) gives exactly each pair's own result, whatever the
    mix of shapes (landscape, portrait, half-size, flat) in one batch; so do the scores."""
    flat = [t for family in thumbs for t in family]
    blank = sameshot.thumbnail_from(Image.new("RGB", (120, 90), (200, 200, 200)))
    portrait = sameshot.thumbnail_from(
        Image.fromarray(skimage.data.astronaut()).rotate(90, expand=True)
    )
    prepared = [sameshot.Prepared(t) for t in [*flat, blank, portrait]]
    keeper = prepared[0]
    pairs = [(keeper, p) for p in prepared[1:]] + [(p, keeper) for p in prepared[1:]]
    for scales in (sameshot.QUICK_SCALES, sameshot.OTHER_SCALES, sameshot.ALL_SCALES):
        assert sameshot._coarse_many(pairs, scales) == [
            sameshot._coarse(a, b, scales) for a, b in pairs
        ]
    together = sameshot.score_many(pairs)
    assert together == [sameshot.score_many([pair])[0] for pair in pairs]
    assert {s.stage for s in together} >= {"quick", "coarse", "fine"}


def test_scoring_processes_run_blas_on_one_thread() -> None:
    """The pool has a process per core: a BLAS thread per core in each of them (the search's
    resampling products) fights the others for the same cores."""
    import threadpoolctl

    with sameshot_check.SameShotChecker(workers=2) as checker:
        pool = checker._scoring_pool()
        assert pool is not None
        libraries = pool.submit(threadpoolctl.threadpool_info).result(timeout=60)
    blas = [lib for lib in libraries if lib["user_api"] == "blas"]
    assert blas and all(lib["num_threads"] == 1 for lib in blas)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")
def test_scoring_processes_keep_freed_memory_for_reuse() -> None:
    """The search makes and frees arrays of megabytes per chunk; glibc would give each back
    to the kernel and fault the next one in again, page by page.  A scoring process keeps a
    freed 40 MB array's memory (a process started without it, the control, gives it back)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.engine import memory_probe

    size = memory_probe.PROBE_BYTES
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as plain:
        control = plain.submit(memory_probe.bytes_kept_after_freeing).result(timeout=60)
    assert control <= 0.1 * size
    with sameshot_check.SameShotChecker(workers=2) as checker:
        pool = checker._scoring_pool()
        assert pool is not None
        kept = pool.submit(memory_probe.bytes_kept_after_freeing).result(timeout=60)
    assert kept >= 0.9 * size


def test_pairs_scored_in_the_scan_process_run_blas_on_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the pool starts (or with no pool) the scan scores pairs itself: there too
    BLAS must not start a thread per core beside the daemon's and the decoders' work."""
    import threadpoolctl

    seen: list[int] = []
    real = sameshot_check.score_chunk

    def spying(*args: Any, **kwargs: Any) -> Any:
        blas = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        seen.extend(lib["num_threads"] for lib in blas)
        return real(*args, **kwargs)

    monkeypatch.setattr(sameshot_check, "score_chunk", spying)
    a, b, _ = (photo(p, content_hash=p) for p in _pair_files(tmp_path))
    assert SameShotChecker(isolate=False)([(a, b)])[0] is not None
    assert seen and set(seen) == {1}
