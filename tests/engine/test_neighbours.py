"""Neighbour search: the exact search finds every pair above the threshold; the partitioned
search finds >= 99% of them and never a false one, on clustered data, on data without
clusters (where it may fall back to the exact search), on bursts of equal embeddings."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from photodup_tui.engine import neighbours as nb

PAIRS = set[tuple[int, int]]
Pair = tuple[int, int, float]


def neighbours(
    vectors: np.ndarray,
    threshold: float,
    exact_limit: int = nb.EXACT_LIMIT,
    **options: Any,  # cancel, tick, stats
) -> list[Pair]:
    """The search's three arrays as one sorted list of (i, j, cosine), for comparing."""
    a, b, scores = nb.neighbour_arrays(vectors, threshold, exact_limit, **options)
    return list(zip(a.tolist(), b.tolist(), scores.tolist(), strict=True))


def hamming_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    a, b, distances = nb.hamming_arrays(hashes, max_distance)
    return list(zip(a.tolist(), b.tolist(), distances.tolist(), strict=True))


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def near_copies(rows: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of each row at exactly the given cosine to it (noise orthogonal to the row)."""
    noise = rng.standard_normal(rows.shape).astype(np.float32)
    noise -= np.sum(noise * rows, axis=1, keepdims=True) * rows
    noise = unit(noise)
    sines = np.sqrt(1 - cosines**2)[:, None]
    return unit(cosines[:, None] * rows + sines * noise)


def library(n: int, dim: int, floor: float, *, topics: int = 100, seed: int = 0) -> np.ndarray:
    """What a photo library looks like to a model: photos around ``topics`` subjects
    (same-subject cosine ~0.5, bench/grouping_bench.py), and 20% of them near copies of
    another photo at cosines spread from ``floor`` to 0.995.  float16, as scans hold them."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((topics, dim)))
    originals = int(n * 0.8)
    noise = rng.standard_normal((originals, dim)).astype(np.float32) / np.sqrt(dim)
    photos = unit(centres[rng.integers(0, topics, originals)] + noise)
    sources = photos[rng.integers(0, originals, n - originals)]
    copies = near_copies(sources, rng.uniform(floor + 0.002, 0.995, n - originals), rng)
    return np.concatenate([photos, copies]).astype(np.float16)


def truth(vectors: np.ndarray, threshold: float) -> PAIRS:
    full = vectors.astype(np.float32)
    i, j = np.nonzero(np.triu(full @ full.T >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def pairs_of(found: list[Pair]) -> PAIRS:
    return {(i, j) for i, j, _ in found}


def assert_true_pairs(found: list[Pair], vectors: np.ndarray, threshold: float) -> None:
    """Sorted, i < j, each cosine exact and at or above the threshold: no false pairs."""
    assert found == sorted(found)
    full = vectors.astype(np.float32)
    i = np.array([p[0] for p in found], dtype=np.int64)
    j = np.array([p[1] for p in found], dtype=np.int64)
    cosines = np.array([p[2] for p in found])
    assert np.all(i < j)
    assert np.allclose(cosines, np.sum(full[i] * full[j], axis=1), atol=1e-5)
    assert np.all(cosines >= threshold)


def partitioned(vectors: np.ndarray, threshold: float) -> tuple[list[Pair], nb.SearchStats]:
    stats = nb.SearchStats()
    found = neighbours(vectors, threshold, exact_limit=0, stats=stats)
    return found, stats


def test_exact_search_finds_exactly_the_pairs_above_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nb, "TILE", 300)  # many uneven tiles, on both cores
    for dtype in (np.float32, np.float16):
        vectors = library(1500, 64, 0.8, seed=1).astype(dtype)
        stats = nb.SearchStats()
        found = neighbours(vectors, 0.8, exact_limit=10_000, stats=stats)
        assert stats.method == "exact"
        assert pairs_of(found) == truth(vectors, 0.8)
        assert len(found) > 200  # the data really has pairs to find
        assert_true_pairs(found, vectors, 0.8)


@pytest.mark.parametrize(
    ("n", "dim", "floor"),
    # CLIP's floor (0.80-0.85) and the built-in model's (0.65-0.70)
    [(6000, 512, 0.85), (6000, 512, 0.80), (6000, 512, 0.70), (4000, 1280, 0.65)],
)
def test_partitioned_search_finds_99_percent_of_clustered_pairs(
    n: int, dim: int, floor: float
) -> None:
    vectors = library(n, dim, floor, seed=dim)
    expected = truth(vectors, floor)
    found, stats = partitioned(vectors, floor)
    assert stats.method == "partitioned"
    assert stats.work_share < 0.3  # it did not just compare everything
    assert len(expected) > 600
    recall = len(pairs_of(found) & expected) / len(expected)
    assert recall >= 0.99, (recall, stats)
    assert_true_pairs(found, vectors, floor)


def test_pairs_just_above_the_threshold_are_found_and_just_below_are_not() -> None:
    rng = np.random.default_rng(2)
    background = library(4000, 256, 0.8, seed=2).astype(np.float32)
    picked = rng.choice(4000, 300, replace=False)
    above = near_copies(background[picked[:150]], np.full(150, 0.8 + 2e-3, np.float32), rng)
    below = near_copies(background[picked[150:]], np.full(150, 0.8 - 2e-3, np.float32), rng)
    vectors = np.concatenate([background, above, below])
    found, stats = partitioned(vectors, 0.8)
    assert stats.method == "partitioned"
    planted = [
        (min(a, b), max(a, b)) for a, b in zip(picked.tolist(), range(4000, 4300), strict=True)
    ]
    hits = pairs_of(found)
    assert len(hits & set(planted[:150])) >= 0.99 * 150
    assert not hits & set(planted[150:])
    assert_true_pairs(found, vectors, 0.8)


def test_data_without_clusters_is_searched_well_or_exactly() -> None:
    rng = np.random.default_rng(3)
    # Uniform random photos, each 20% with a near copy: no cluster for a cell to follow.
    photos = unit(rng.standard_normal((4000, 512)))
    copies = near_copies(photos[:800], rng.uniform(0.70, 0.99, 800).astype(np.float32), rng)
    vectors = np.concatenate([photos, copies])
    expected = truth(vectors, 0.7)
    found, stats = partitioned(vectors, 0.7)
    assert len(pairs_of(found) & expected) >= 0.99 * len(expected)
    assert_true_pairs(found, vectors, 0.7)
    # Few dimensions and a low threshold: pairs at every margin, so no partition finds them
    # cheaply and the search falls back to comparing everything, exactly.
    flat = unit(rng.standard_normal((3000, 16)))
    found, stats = partitioned(flat, 0.7)
    assert stats.method == "exact (fallback)"
    assert pairs_of(found) == truth(flat, 0.7)


def kth_strongest(scored: dict[tuple[int, int], float]) -> dict[int, float]:
    """Each photo's ``MAX_PER_PHOTO``-th highest pair score (-inf with fewer pairs)."""
    by_photo: dict[int, list[float]] = {}
    for pair, score in scored.items():
        for photo in pair:
            by_photo.setdefault(photo, []).append(score)
    return {
        photo: sorted(scores, reverse=True)[nb.MAX_PER_PHOTO - 1]
        if len(scores) >= nb.MAX_PER_PHOTO
        else -np.inf
        for photo, scores in by_photo.items()
    }


def assert_strongest_of_either(
    kept: PAIRS, scored: dict[tuple[int, int], float], tolerance: float
) -> None:
    """``kept`` is the pairs among the ``MAX_PER_PHOTO`` strongest of either of their
    photos; scores within ``tolerance`` of a photo's cut may fall either way (the search's
    float32 products are blocked differently from the reference's)."""
    cut = kth_strongest(scored)
    for pair, score in scored.items():
        margin = max(score - cut[pair[0]], score - cut[pair[1]])
        if margin > tolerance:
            assert pair in kept, (pair, margin)
        elif margin < -tolerance:
            assert pair not in kept, (pair, margin)
    assert kept <= scored.keys()


def test_a_burst_of_equal_embeddings_keeps_each_photos_strongest() -> None:
    vectors = library(5000, 512, 0.85, seed=4)
    vectors[1000:1500] = vectors[1000]  # one burst photographed 500 times, identically
    found, stats = partitioned(vectors, 0.85)
    assert stats.method == "partitioned"
    burst = range(1000, 1500)
    degree = {photo: 0 for photo in burst}
    for i, j, cosine in found:
        if i in degree and j in degree:
            degree[i] += 1
            degree[j] += 1
            assert cosine > 0.999
    # Every frame keeps as many of its equals as the cap allows, and no more than the cap
    # lets through (a pair stays when either photo counts it among its strongest).
    assert min(degree.values()) >= nb.MAX_PER_PHOTO
    assert sum(degree.values()) // 2 <= len(burst) * nb.MAX_PER_PHOTO
    expected = {(i, j) for i, j in truth(vectors, 0.85) if i not in degree and j not in degree}
    assert len(pairs_of(found) & expected) >= 0.99 * len(expected)


@pytest.mark.parametrize(
    ("n", "exact_limit"),
    [(400, 5000), (2600, 5000), (2600, 1000)],  # one product; two tiles; the partition's pilot
)
def test_photos_that_all_look_alike_keep_their_strongest_neighbours(
    n: int, exact_limit: int
) -> None:
    """A library where almost every two photos pass the threshold (pages of one scanner):
    the search keeps, exactly, each photo's MAX_PER_PHOTO strongest pairs, not n^2 / 2;
    above the exact limit the pilot sees the density in its first ring and goes exact."""
    rng = np.random.default_rng(n)
    centre = unit(rng.standard_normal((1, 256)))
    vectors = near_copies(np.repeat(centre, n, axis=0), rng.uniform(0.9, 0.99, n), rng)
    full = vectors.astype(np.float32) @ vectors.astype(np.float32).T
    scored = {
        (i, j): float(full[i, j])
        for i, j in zip(*np.nonzero(np.triu(full >= 0.8, k=1)), strict=True)
    }
    assert len(scored) > n * nb.MAX_PER_PHOTO * 3  # the cap has work to do
    stats = nb.SearchStats()
    found = neighbours(vectors, 0.8, exact_limit=exact_limit, stats=stats)
    assert_strongest_of_either(pairs_of(found), scored, tolerance=1e-5)
    if n > exact_limit:
        assert (stats.method, stats.rings) == ("exact (fallback)", 1)
    assert_true_pairs(found, vectors, 0.8)


def test_the_cap_also_holds_for_perceptual_hashes() -> None:
    rng = np.random.default_rng(5)
    base = int(rng.integers(0, 2**63))
    hashes = np.array(
        [base ^ sum(1 << int(b) for b in rng.choice(64, 3, replace=False)) for _ in range(700)],
        dtype=np.uint64,
    )
    distance = {
        (i, j): bin(int(hashes[i]) ^ int(hashes[j])).count("1")
        for i in range(len(hashes))
        for j in range(i + 1, len(hashes))
    }
    close = {pair: -d for pair, d in distance.items() if d <= 6}
    assert len(close) > len(hashes) * nb.MAX_PER_PHOTO * 2
    found = hamming_pairs(hashes, 6)
    kept = {(i, j) for i, j, _ in found}
    assert all(d == distance[(i, j)] for i, j, d in found)
    # Ties are broken arbitrarily, so compare how strong, not which: each photo's strongest
    # distances are kept, and no photo keeps fewer than the cap allows.
    # (Each photo's distances gathered in one pass: a scan of all pairs per photo is
    # quadratic in the pairs and took most of this test's time.)
    mine: dict[int, list[int]] = {photo: [] for photo in range(len(hashes))}
    for (i, j), d in distance.items():
        if d <= 6:
            mine[i].append(d)
            mine[j].append(d)
    kept_mine: dict[int, list[int]] = {photo: [] for photo in range(len(hashes))}
    for i, j in kept:
        kept_mine[i].append(distance[(i, j)])
        kept_mine[j].append(distance[(i, j)])
    for photo in range(len(hashes)):
        strongest = sorted(mine[photo])[: nb.MAX_PER_PHOTO]
        assert sorted(kept_mine[photo])[: nb.MAX_PER_PHOTO] == strongest


def test_same_input_gives_the_same_pairs() -> None:
    vectors = library(3000, 128, 0.8, seed=5)
    assert partitioned(vectors, 0.8)[0] == partitioned(vectors.copy(), 0.8)[0]


@pytest.mark.parametrize("exact_limit", [0, 10_000])
def test_searches_tick_from_the_calling_thread_and_stop_when_cancelled(
    exact_limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nb, "TILE", 500)  # the exact search: 55 tiles
    vectors = library(5000, 64, 0.8, seed=6)
    callers: set[int] = set()
    ticks = 0

    def count() -> None:
        nonlocal ticks
        ticks += 1
        callers.add(threading.get_ident())

    everything = neighbours(vectors, 0.8, exact_limit=exact_limit, tick=count)
    assert callers == {threading.get_ident()}
    total, ticks = ticks, 0
    assert total >= 10
    cancel = threading.Event()

    def cancel_late() -> None:
        nonlocal ticks
        ticks += 1
        if ticks == total - 5:  # in the last phase: pairs have been found by then
            cancel.set()

    partial = neighbours(vectors, 0.8, exact_limit=exact_limit, cancel=cancel, tick=cancel_late)
    assert ticks == total - 5  # no tick, so no chunk, once cancelled
    assert partial
    assert set(partial) < set(everything)  # what was found is right, just not all
    assert neighbours(vectors, 0.8, exact_limit=exact_limit, cancel=cancel) == []


@pytest.mark.parametrize("exact_limit", [0, 10_000])
def test_tiny_inputs(exact_limit: int) -> None:
    def search(rows: list[list[float]]) -> list[Pair]:
        return neighbours(np.array(rows, np.float32).reshape(-1, 2), 0.9, exact_limit)

    assert search([]) == []
    assert search([[1, 0]]) == []
    assert [(i, j) for i, j, _ in search([[1, 0], [1, 0]])] == [(0, 1)]
    assert [(i, j) for i, j, _ in search([[1, 0], [0, 1], [0.99, 0.141]])] == [(0, 2)]
    with pytest.raises(ValueError, match="2-D"):
        neighbours(np.zeros(5, np.float32), 0.5)


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=400).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips, base[:50] ^ (flips[:50] * np.uint64(3))])
    pairs = hamming_pairs(hashes, 4)
    values = [int(h) for h in hashes]
    expected = {
        (i, j, (values[i] ^ values[j]).bit_count())
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if (values[i] ^ values[j]).bit_count() <= 4
    }
    assert set(pairs) == expected
    assert len(expected) >= 400
