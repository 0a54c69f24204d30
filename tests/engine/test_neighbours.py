"""Neighbour search: the exact search finds every pair; the ANN index finds >= 99% of them."""

from __future__ import annotations

import threading

import numpy as np

from photodup_tui.engine import neighbours as nb


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clusters of 1-4 vectors around random centres; cosines inside a cluster ~0.75-0.98."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, n)
    owner = np.repeat(np.arange(n), sizes)[:n]
    centres = rng.normal(size=(n, dim)).astype(np.float32)
    spread = rng.uniform(0.15, 0.55, size=(n, 1)).astype(np.float32)
    vectors = centres[owner] + spread * rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def brute_force(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    sims = vectors @ vectors.T
    i, j = np.nonzero(np.triu(sims >= threshold, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def test_exact_search_finds_exactly_the_pairs_above_threshold() -> None:
    vectors = clustered(1500, 64, seed=1)
    nb_block = nb.BLOCK_BYTES
    try:
        nb.BLOCK_BYTES = 4 * 1500 * 7  # force many small, uneven blocks
        pairs = nb.neighbours(vectors, 0.8, exact_limit=10_000)
    finally:
        nb.BLOCK_BYTES = nb_block
    found = {(i, j) for i, j, _ in pairs}
    assert found == brute_force(vectors, 0.8)
    assert len(found) > 500  # the data really has pairs to find
    for i, j, cosine in pairs[:50]:
        assert i < j
        assert abs(cosine - float(vectors[i] @ vectors[j])) < 1e-5


def test_ann_recall_of_true_pairs_is_at_least_99_percent() -> None:
    vectors = clustered(3000, 256, seed=2)
    truth = brute_force(vectors, 0.8)
    pairs = nb.neighbours(vectors, 0.8, k=32, exact_limit=100)  # low cutover: use the index
    found = {(i, j) for i, j, _ in pairs}
    assert len(truth) > 1000
    recall = len(found & truth) / len(truth)
    assert recall >= 0.99, recall
    assert found <= truth  # cosines are recomputed exactly: no false pairs
    for i, j, cosine in pairs[:50]:
        assert abs(cosine - float(vectors[i] @ vectors[j])) < 1e-5


def test_tiny_inputs() -> None:
    assert nb.neighbours(np.zeros((0, 8), np.float32), 0.5) == []
    assert nb.neighbours(np.ones((1, 8), np.float32) / np.sqrt(8), 0.5) == []


def test_hamming_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, size=400, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, size=400).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips, base[:50] ^ (flips[:50] * np.uint64(3))])
    pairs = nb.hamming_pairs(hashes, 4)
    values = [int(h) for h in hashes]
    expected = {
        (i, j, (values[i] ^ values[j]).bit_count())
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if (values[i] ^ values[j]).bit_count() <= 4
    }
    assert set(pairs) == expected
    assert len(expected) >= 400


def test_searches_tick_and_stop_when_cancelled() -> None:
    vectors = clustered(2000, 32, seed=4)
    ticks: list[int] = []
    cancel = threading.Event()

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 2:
            cancel.set()

    saved = nb.BLOCK_BYTES
    try:
        nb.BLOCK_BYTES = 4 * 2000 * 100  # 100-row blocks: 20 of them
        partial = nb.neighbours(vectors, 0.8, exact_limit=10_000, cancel=cancel, tick=tick)
    finally:
        nb.BLOCK_BYTES = saved
    everything = nb.neighbours(vectors, 0.8, exact_limit=10_000)
    assert len(ticks) == 2  # one block searched, then the cancel was seen
    assert partial
    assert set(partial) < set(everything)  # what was found is right, just not all
    cancel.set()
    assert nb.neighbours(vectors, 0.8, exact_limit=100, cancel=cancel) == []
