"""Pairs of photos whose embeddings (or perceptual hashes) are close.

Embeddings are L2-normalised, so cosine is a dot product.  Up to ``exact_limit`` vectors an
exact search by blocked matrix products is fast and finds every pair; above it, an HNSW
index (usearch, cosine) searches ``k`` neighbours per photo, with search settings chosen so
its pair recall stays at 99% or more of the exact search (tests/engine/test_neighbours.py).

Perceptual hashes are compared exhaustively in blocks (XOR + popcount on 64-bit words).
"""

from __future__ import annotations

import os

import numpy as np

EXACT_LIMIT = 20_000
ANN_SLACK = 0.03  # cosine margin for the index's quantised distances
BLOCK_BYTES = 64 * 1024 * 1024  # the size of one block of the similarity matrix

Pair = tuple[int, int, float]


def neighbours(
    embeddings: np.ndarray,
    threshold: float,
    k: int = 32,
    exact_limit: int = EXACT_LIMIT,
) -> list[Pair]:
    """Every pair ``(i, j, cosine)`` with ``i < j`` and ``cosine >= threshold``.

    Exact below ``exact_limit`` rows; approximate above, where each photo keeps its ``k``
    nearest neighbours (a pair is found when either side lists the other).
    """
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError("embeddings must be a 2-D array")
    if len(vectors) < 2:
        return []
    if len(vectors) <= exact_limit:
        return exact_pairs(vectors, threshold)
    return ann_pairs(vectors, threshold, k)


def exact_pairs(vectors: np.ndarray, threshold: float) -> list[Pair]:
    n = len(vectors)
    rows = max(1, BLOCK_BYTES // (4 * n))
    pairs: list[Pair] = []
    for start in range(0, n, rows):
        # Only the upper triangle: row block against itself and everything after it.
        block = vectors[start : start + rows] @ vectors[start:].T
        i, j = np.nonzero(block >= threshold)
        keep = j > i
        i, j = i[keep], j[keep]
        cosines = block[i, j]
        pairs.extend(zip((i + start).tolist(), (j + start).tolist(), cosines.tolist(), strict=True))
    return pairs


def ann_pairs(vectors: np.ndarray, threshold: float, k: int) -> list[Pair]:
    from usearch.index import Index

    n, dim = vectors.shape
    k = min(k + 1, n)  # +1: a vector finds itself
    index = Index(
        ndim=dim,
        metric="cos",
        # int8 (VNNI where the CPU has it): ~1.7x faster than f16 and a quarter of the
        # memory of f32; its small cosine error is absorbed by the slack below.
        dtype="i8",
        connectivity=16,
        expansion_add=128,
        expansion_search=max(128, 2 * k),
    )
    threads = _threads()
    index.add(np.arange(n, dtype=np.uint64), vectors, threads=threads)
    matches = index.search(vectors, k, threads=threads)
    keys = np.asarray(matches.keys, dtype=np.int64).reshape(n, -1)
    distances = np.asarray(matches.distances, dtype=np.float32).reshape(n, -1)
    counts = np.asarray(getattr(matches, "counts", np.full(n, k))).reshape(n)
    rank = np.arange(keys.shape[1])[None, :]
    # The index works in int8: keep candidates with some slack, then recompute exactly.
    valid = (rank < counts[:, None]) & (distances <= 1.0 - threshold + ANN_SLACK)
    src = np.broadcast_to(np.arange(n)[:, None], keys.shape)[valid]
    dst = keys[valid]
    keep = src != dst
    a = np.minimum(src[keep], dst[keep])
    b = np.maximum(src[keep], dst[keep])
    unique = np.unique(a * n + b)
    a, b = unique // n, unique % n
    pairs: list[Pair] = []
    step = 65_536
    for s in range(0, len(a), step):
        aa, bb = a[s : s + step], b[s : s + step]
        cosines = np.einsum("ij,ij->i", vectors[aa], vectors[bb])
        ok = cosines >= threshold
        pairs.extend(zip(aa[ok].tolist(), bb[ok].tolist(), cosines[ok].tolist(), strict=True))
    return pairs


def hamming_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, distance)``, ``i < j``, of 64-bit hashes within ``max_distance`` bits."""
    values = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(values)
    pairs: list[tuple[int, int, int]] = []
    if n < 2:
        return pairs
    rows = max(1, BLOCK_BYTES // (8 * n))
    for start in range(0, n, rows):
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
