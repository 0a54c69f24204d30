"""Pairs of photos whose embeddings (or perceptual hashes) are close.

Embeddings are L2-normalised, so cosine is a dot product.  Up to ``exact_limit`` vectors an
exact search by blocked matrix products finds every pair; above it, an HNSW index (usearch,
cosine, int8) searches ``k`` neighbours per photo, with settings chosen so its pair recall
stays at 99% or more of the exact search (tests/engine/test_neighbours.py).  Every cosine
returned is recomputed exactly in float32, so the index can miss a pair but never invent one.

Perceptual hashes are compared exhaustively in blocks (XOR + popcount on 64-bit words).

All searches work in chunks: between chunks they call ``tick()`` (progress) and stop early
when ``cancel`` is set, returning the pairs found so far.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

#: Exact search up to here.  On 1280-d embeddings with 2 cores the blocked matmul took
#: ~170 CPU-s at 100k where the HNSW index (build + search) took ~370 CPU-s, so the index
#: only pays off beyond ~200k photos.  Configurable: ``exact_search_limit`` in [scan].
EXACT_LIMIT = 100_000
ANN_SLACK = 0.03  # cosine margin for the index's quantised distances
ANN_CHUNK = 4096  # vectors added or searched between cancel checks
BLOCK_BYTES = 64 * 1024 * 1024  # the size of one block of the similarity matrix

Pair = tuple[int, int, float]
Tick = Callable[[], None]


class _Stop:
    """Cancel check plus progress tick, called between chunks of work."""

    def __init__(self, cancel: threading.Event | None, tick: Tick | None) -> None:
        self._cancel = cancel
        self._tick = tick

    def __call__(self) -> bool:
        if self._tick is not None:
            self._tick()
        return self._cancel is not None and self._cancel.is_set()


def neighbours(
    embeddings: np.ndarray,
    threshold: float,
    k: int = 32,
    exact_limit: int = EXACT_LIMIT,
    *,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
) -> list[Pair]:
    """Every pair ``(i, j, cosine)`` with ``i < j`` and ``cosine >= threshold``.

    Exact up to ``exact_limit`` rows; approximate above, where each photo keeps its ``k``
    nearest neighbours (a pair is found when either side lists the other).
    """
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError("embeddings must be a 2-D array")
    if len(vectors) < 2:
        return []
    stop = _Stop(cancel, tick)
    if len(vectors) <= exact_limit:
        return exact_pairs(vectors, threshold, stop)
    return ann_pairs(vectors, threshold, k, stop)


def exact_pairs(
    vectors: np.ndarray, threshold: float, stop: Callable[[], bool] = lambda: False
) -> list[Pair]:
    n = len(vectors)
    rows = max(1, BLOCK_BYTES // (4 * n))
    pairs: list[Pair] = []
    for start in range(0, n, rows):
        if stop():
            break
        # Only the upper triangle: a row block against itself and everything after it.
        block = vectors[start : start + rows] @ vectors[start:].T
        i, j = np.nonzero(block >= threshold)
        keep = j > i
        i, j = i[keep], j[keep]
        cosines = block[i, j]
        pairs.extend(zip((i + start).tolist(), (j + start).tolist(), cosines.tolist(), strict=True))
    return pairs


def ann_pairs(
    vectors: np.ndarray, threshold: float, k: int, stop: Callable[[], bool] = lambda: False
) -> list[Pair]:
    from usearch.index import Index

    n, dim = vectors.shape
    k = min(k + 1, n)  # +1: a vector finds itself
    index = Index(
        ndim=dim,
        metric="cos",
        # int8 (VNNI where the CPU has it): ~1.7x faster than f16 at the same recall, a
        # quarter of f32's memory; its small cosine error is absorbed by ANN_SLACK.
        dtype="i8",
        # Measured on clustered data: M=16 with ef_search=64 sat right at 0.99 pair recall
        # and dipped to 0.988 on some multi-threaded builds; ef_search=128 keeps a margin.
        # M=12/ef=48 fell to 0.96.  At 100k x 1280-d the build matters too (one-sided recall
        # of true pairs, ef_add/ef_search): 64/128 0.967, 128/64 0.975, 128/128 0.995.
        connectivity=16,
        expansion_add=128,
        expansion_search=max(128, 4 * k),
    )
    threads = _threads()
    for start in range(0, n, ANN_CHUNK):
        if stop():
            return []
        end = min(n, start + ANN_CHUNK)
        index.add(np.arange(start, end, dtype=np.uint64), vectors[start:end], threads=threads)
    pairs: list[Pair] = []
    for start in range(0, n, ANN_CHUNK):
        if stop():
            break
        end = min(n, start + ANN_CHUNK)
        matches = index.search(vectors[start:end], k, threads=threads)
        pairs.extend(_verified(vectors, start, matches, threshold))
    # A pair is listed by both of its photos; keep one, in a stable order.
    unique = {(a, b): c for a, b, c in pairs}
    return [(a, b, c) for (a, b), c in sorted(unique.items())]


def _verified(vectors: np.ndarray, start: int, matches: Any, threshold: float) -> list[Pair]:
    """Candidate pairs from one chunk of search results, with exact cosines."""
    keys = np.asarray(matches.keys, dtype=np.int64)
    rows = len(keys)
    keys = keys.reshape(rows, -1)
    distances = np.asarray(matches.distances, dtype=np.float32).reshape(rows, -1)
    counts = np.asarray(getattr(matches, "counts", np.full(rows, keys.shape[1]))).reshape(rows)
    rank = np.arange(keys.shape[1])[None, :]
    valid = (rank < counts[:, None]) & (distances <= 1.0 - threshold + ANN_SLACK)
    src = np.broadcast_to(np.arange(start, start + rows)[:, None], keys.shape)[valid]
    dst = keys[valid]
    keep = src != dst
    a = np.minimum(src[keep], dst[keep])
    b = np.maximum(src[keep], dst[keep])
    cosines = np.einsum("ij,ij->i", vectors[a], vectors[b])
    ok = cosines >= threshold
    return list(zip(a[ok].tolist(), b[ok].tolist(), cosines[ok].tolist(), strict=True))


def hamming_pairs(
    hashes: np.ndarray,
    max_distance: int,
    *,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, distance)``, ``i < j``, of 64-bit hashes within ``max_distance`` bits."""
    values = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(values)
    pairs: list[tuple[int, int, int]] = []
    if n < 2:
        return pairs
    stop = _Stop(cancel, tick)
    rows = max(1, BLOCK_BYTES // (8 * n))
    for start in range(0, n, rows):
        if stop():
            break
        block = np.bitwise_count(values[start : start + rows, None] ^ values[None, start:])
        i, j = np.nonzero(block <= max_distance)
        keep = j > i
        i, j = i[keep], j[keep]
        distances = block[i, j]
        pairs.extend(
            zip((i + start).tolist(), (j + start).tolist(), distances.tolist(), strict=True)
        )
    return pairs


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _threads() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)
