"""Pairs of photos whose embeddings (or perceptual hashes) are close.

Embeddings are L2-normalised, so cosine is a dot product.  Grouping needs every pair at or
above one fairly high cosine (the lowest threshold in use), not each photo's k nearest
neighbours, and photo embeddings are clustered.  So:

* up to ``exact_limit`` vectors, blocked matrix products compare every pair;
* above it the vectors are partitioned (an inverted file): spherical k-means on a sample
  gives a few hundred cells (1,000 at 1M).  Each vector lives in its best cell (its *home*)
  and also *probes* the other cells whose centroids score within ``margin`` of its best.
  Within each cell, matrix products compare the home members with each other and with the
  probing vectors.  A pair is found when one of its photos probes the other's home.

The margin is measured on the data at hand, by a pilot: random cells are searched with the
margin widened a step at a time.  A pair first found at a step needs that margin, so the new
pairs per step show how fast the ones still missing thin out; the pilot stops when two steps
in a row add next to nothing (``_Pilot``), and the other cells are searched at that margin.
Where pairs keep coming up to ``MAX_MARGIN`` (data without cluster structure, a threshold so
low that pairs are everywhere) or the partition would cost more than half of the exact
search, the exact search runs instead.  Every cosine is a float32 dot product (float16 input
is converted block by block), so the partition can miss a pair but never invents one.

Perceptual hashes are compared exhaustively in blocks (XOR + popcount on 64-bit words).

Each photo keeps at most ``MAX_PER_PHOTO`` neighbours, its strongest: a pair stays when it
is among the strongest of either of its photos.  Grouping never asks for more (a keeper's
pixel checks stop at 16 candidates), and without the cap a library whose photos all look
alike to the model (scanned pages, a thousand frames of one scene, tiny icons) has a pair
for almost every two photos: 200 million at 20,000 photos, tens of GB as Python tuples.
Every block of similarities is cut to its strongest per row and per column as it is
computed (a pair among a photo's strongest overall is among its strongest in any block),
and what is collected is cut again whenever it grows, so memory stays O(N x cap).

Work runs in chunks on one thread per core, each chunk's matrix products single-threaded:
OpenBLAS's own threads wait on each other after every product, which on small products and
a busy machine made the search several times slower (bench/README.md).  Between chunks the
calling thread calls ``tick()`` (progress) and stops early when ``cancel`` is set, returning
the pairs found so far.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

#: Exact search up to here (every pair found, 0.3-0.4 s); the partition above.  Measured on
#: the benchmark's library: at 3,000 x 1280 the two cost the same, at 5,000 the partition
#: takes 0.6x the CPU time, at 20,000 0.15x.  Configurable: ``exact_search_limit`` in [scan].
EXACT_LIMIT = 5_000
#: Up to here one matrix product in the calling thread: pools and BLAS limits cost more.
SMALL = 512
BLOCK_BYTES = 32 * 1024 * 1024  # the size of one block of a similarity matrix
TILE = 2048  # the exact search compares TILE x TILE vectors at a time
CELL_WORK = 1 << 22  # dot products per chunk of the partitioned search (cells batched)

#: cells = this x cube root of N: 271 at 20,000, 1,000 at 1M.  More cells are purer and
#: need a smaller margin (the benchmark's library, 20,000 x 1280 at cosine 0.70: 283 cells
#: compare each vector in 1.9 cells, 141 in 6.8), but every vector is scored against every
#: centroid, and at 1M that assignment (N x cells) is the biggest cost: sqrt(N) cells there,
#: more than sqrt(N) below.
CELLS_PER_CUBE_ROOT = 10.0
KMEANS_SAMPLE_PER_CELL = 32
#: Lloyd iterations, each on this share of the sample: the first ones only need to get the
#: centroids roughly right, so they run on part of it (2/3 of the work of 6 full ones).
KMEANS_SCHEDULE = (0.25, 0.25, 0.5, 1.0, 1.0, 1.0)
MARGIN_STEP = 0.01  # cosine: the pilot widens the probe margin this much at a time ...
RING_SHARE = 0.001  # ... until QUIET_RINGS steps in a row each add at most this share of
QUIET_RINGS = 2  # the pairs found
MAX_MARGIN = 0.12  # pairs still coming at this margin: no useful partition, go exact
MAX_PROBES = 32  # cells a vector may be compared in, its home included
PILOT_SHARE = 0.15  # the pilot cells hold this share of the vectors ...
PILOT_MIN = 2_000  # ... and at least this many ...
PILOT_PAIRS = 200  # ... and more cells until its pairs are enough to judge the margin by
#: Pairs per pilot vector in its first ring above which the library is dense (photos that
#: all look alike): the exact search then, at once.  Photo libraries have well under one
#: (the grouping benchmark's: 0.1); a library of look-alikes has most photos at the
#: MAX_PER_PHOTO cap.
DENSE_PAIRS = 8
FALLBACK_SHARE = 0.5  # partition search work above this share of the exact search: go exact
FLOAT32_COPY_BYTES = 768 * 1024 * 1024  # float16 input converted up front up to this size
MAX_PER_PHOTO = 64  # neighbours a photo keeps (its strongest), see the module docstring
PRUNE_AT = 4_000_000  # pairs collected before they are cut to MAX_PER_PHOTO per photo again
SEED = 20_240_601  # k-means and sampling are seeded: the same library gives the same pairs

Tick = Callable[[], None]
Hits = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, cosine) arrays
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class SearchStats:
    """How one search went (benchmarks, tests): filled in when passed to ``neighbours``."""

    method: str = ""  # "exact", "partitioned", or "exact (fallback)"
    cells: int = 0
    margin: float = 0.0  # the probe margin the pilot chose
    sub_margin: float | None = None  # the archive search's margin between sub-cells
    sketch_floor: float | None = None  # the archive search's sketch score floor
    rings: int = 0  # margin steps the pilot searched
    pilot_pairs: int = 0  # pairs the pilot found
    probes_per_vector: float = 0.0  # cells each vector is compared in, on average
    passes: int = 0  # the archive search's passes (runs of cells searched together)
    reads: int = 0  # ... and its reads of the whole matrix for them (the first: none)
    assign_head: int = 0  # the archive assignment's coordinates scored for every cell
    work_share: float = 0.0  # dot products in the cells / those of the exact search
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by phase
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # the process's CPU time

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            spent = time.process_time() - cpu
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + spent


class _Cancelled(Exception):
    """Raised between chunks when the caller cancelled; the pairs found so far stand."""


class _Runner:
    """Runs chunks of work on one thread per core; the calling thread ticks, checks for
    cancellation between results, and keeps the results in order."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        workers: int,
        cancel: threading.Event | None,
        tick: Tick | None,
    ) -> None:
        self._pool = pool
        self._workers = workers
        self._cancel = cancel
        self._tick = tick

    def check(self) -> None:
        if self._tick is not None:
            self._tick()
        if self._cancel is not None and self._cancel.is_set():
            raise _Cancelled

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``work(item)`` for each item, results in order; a few chunks in flight at a time
        (memory stays bounded) and never a new one once cancelled."""
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                if len(pending) > self._workers:
                    self.check()
                    yield pending.popleft().result()
                pending.append(self._pool.submit(work, item))
            while pending:
                self.check()
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def neighbour_arrays(
    embeddings: np.ndarray,
    threshold: float,
    exact_limit: int = EXACT_LIMIT,
    *,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
    stats: SearchStats | None = None,
) -> Hits:
    """Every pair ``(i, j, cosine)`` with ``i < j`` and ``cosine >= threshold``, sorted, as
    three arrays (no Python object per pair: a dense library has millions).

    ``embeddings``: one L2-normalised row per photo, float16 (kept as is: half the memory) or
    anything numpy converts to float32.  Exact up to ``exact_limit`` rows; above, the
    partitioned search finds >= 99% of the pairs (tests/engine/test_neighbours.py).
    """
    vectors = np.asarray(embeddings)
    if vectors.dtype != np.float16:
        vectors = vectors.astype(np.float32, copy=False)
    vectors = np.ascontiguousarray(vectors)
    if vectors.ndim != 2:
        raise ValueError("embeddings must be a 2-D array")
    if len(vectors) < 2:
        return _Found(0).arrays()
    stats = stats if stats is not None else SearchStats()
    if len(vectors) <= SMALL:
        # A few photos (a folder, a test, a pair judged alone): one product, no threads.
        stats.method = "exact"
        rows = vectors.astype(np.float32)
        small = _Found(len(rows))
        small.add(_upper(rows @ rows.T, np.arange(len(rows)), threshold))
        return small.arrays()
    found = _Found(len(vectors))
    workers = _cores()
    try:
        with (
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(workers, thread_name_prefix="neighbours") as pool,
        ):
            run = _Runner(pool, workers, cancel, tick)
            if len(vectors) <= exact_limit:
                stats.method = "exact"
                with stats.phase("exact"):
                    _exact(vectors, threshold, found, run)
            else:
                _partitioned(vectors, threshold, found, run, stats)
    except _Cancelled:
        pass
    with stats.phase("pairs"):
        return found.arrays()


class _Found:
    """Pairs collected as arrays; duplicates (one pair seen from two cells) merged, and each
    photo cut to its ``MAX_PER_PHOTO`` strongest, whenever they grow past ``PRUNE_AT``."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._a: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._count = 0
        self._prune_at = PRUNE_AT

    def add(self, hits: Hits) -> None:
        a, b, scores = hits
        if len(a):
            self._a.append(np.minimum(a, b).astype(np.int64))
            self._b.append(np.maximum(a, b).astype(np.int64))
            self._scores.append(scores)
            self._count += len(a)
            if self._count > self._prune_at:
                self._merge()
                # What survives a cut stays: the next cut waits for as much again.
                self._prune_at = self._count + PRUNE_AT

    def arrays(self) -> Hits:
        """Unique pairs ``(i, j, score)``, ``i < j``, sorted by (i, j), at most
        ``MAX_PER_PHOTO`` per photo."""
        self._merge()
        if not self._a:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0)
        return self._a[0], self._b[0], self._scores[0]

    def _merge(self) -> None:
        if not self._a:
            return
        keys = np.concatenate(self._a) * self._n + np.concatenate(self._b)
        keys, first = np.unique(keys, return_index=True)
        scores = np.concatenate(self._scores)[first]
        a, b = keys // self._n, keys % self._n
        keep = _strongest_per_photo(a, b, scores)
        self._a, self._b, self._scores = [a[keep]], [b[keep]], [scores[keep]]
        self._count = int(np.count_nonzero(keep))


def _strongest_per_photo(a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Which of these unique pairs are among the ``MAX_PER_PHOTO`` strongest of ``a`` or of
    ``b`` (ties broken by position, so the cut is exact even among equal scores)."""
    count = len(a)
    if count <= MAX_PER_PHOTO:
        return np.ones(count, dtype=bool)
    ends = np.concatenate([a, b])
    order = np.lexsort((-np.concatenate([scores, scores]), ends))  # by photo, strongest first
    ends = ends[order]
    rank = np.arange(len(ends)) - np.searchsorted(ends, ends, side="left")
    keep = np.zeros(count, dtype=bool)
    keep[order[rank < MAX_PER_PHOTO] % count] = True
    return keep


def _strongest(scores: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) where ``mask`` holds, cut to the ``MAX_PER_PHOTO`` highest ``scores`` of each
    row and of each column (a pair stays when it is among the highest of either)."""
    i, j = _where(mask)
    if len(i) <= MAX_PER_PHOTO:
        return i, j
    heavy_rows = np.flatnonzero(np.bincount(i, minlength=mask.shape[0]) > MAX_PER_PHOTO)
    heavy_cols = np.flatnonzero(np.bincount(j, minlength=mask.shape[1]) > MAX_PER_PHOTO)
    if not len(heavy_rows) and not len(heavy_cols):
        return i, j
    by_row = mask.copy()
    if len(heavy_rows):
        ranked = np.where(mask[heavy_rows], scores[heavy_rows], -np.inf)  # only candidates
        top = np.argpartition(ranked, -MAX_PER_PHOTO, axis=1)[:, -MAX_PER_PHOTO:]
        chosen = np.zeros((len(heavy_rows), mask.shape[1]), dtype=bool)
        np.put_along_axis(chosen, top, True, axis=1)
        by_row[heavy_rows] &= chosen
    by_col = mask.copy()
    if len(heavy_cols):
        ranked = np.where(mask[:, heavy_cols], scores[:, heavy_cols], -np.inf)
        top = np.argpartition(ranked, -MAX_PER_PHOTO, axis=0)[-MAX_PER_PHOTO:]
        chosen = np.zeros((mask.shape[0], len(heavy_cols)), dtype=bool)
        np.put_along_axis(chosen, top, True, axis=0)
        by_col[:, heavy_cols] &= chosen
    i, j = np.nonzero(by_row | by_col)
    return i, j


def _where(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask (the same pairs, in the same order) through the flat
    one: numpy's 2-D nonzero is about ten times slower, and it runs on every block of
    similarities, where hits are few."""
    flat = np.flatnonzero(mask)
    return flat // mask.shape[1], flat % mask.shape[1]


def _cores() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)


def _float32(rows: np.ndarray) -> np.ndarray:
    return rows.astype(np.float32, copy=False)


def _rows_per_block(width: int, rows: int | None = None) -> int:
    """Rows whose ``rows x width`` float32 scores fit in one block; given the number of
    ``rows``, also at most an eighth of them, so that every core gets work."""
    step = max(1, BLOCK_BYTES // (4 * max(1, width)))
    return step if rows is None else min(step, max(256, -(-rows // 8)))


def _starts(n: int, step: int) -> range:
    return range(0, n, step)


# ------------------------------------------------------------------------------ exact


def _exact(vectors: np.ndarray, threshold: float, found: _Found, run: _Runner) -> None:
    """Every pair, in tiles of the upper triangle (each tile converted to float32 on its own,
    so float16 input never needs a float32 copy of the whole matrix)."""
    n = len(vectors)
    tiles = [(r, c) for r in range(0, n, TILE) for c in range(r, n, TILE)]

    def tile(corner: tuple[int, int]) -> Hits:
        r, c = corner
        rows = _float32(vectors[r : r + TILE])
        if r == c:  # a diagonal tile: each pair once, no self-pairs
            return _upper(rows @ rows.T, np.arange(r, r + len(rows)), threshold)
        sims = rows @ _float32(vectors[c : c + TILE]).T
        i, j = _strongest(sims, sims >= threshold)
        return i + r, j + c, sims[i, j]

    for hits in run.map(tile, tiles):
        found.add(hits)


# ------------------------------------------------------------------------------ partitioned


@dataclass
class _Cells:
    """Each cell's home members, and the vectors that may probe it (their centroid score
    within ``MAX_MARGIN`` of their best; home excluded) with how far below their best."""

    home_rows: np.ndarray  # vector ids sorted by home cell (ascending within a cell)
    home_bounds: np.ndarray  # cell c's home members: home_rows[home_bounds[c]:home_bounds[c+1]]
    probe_rows: np.ndarray  # vector ids sorted by probed cell
    probe_gaps: np.ndarray  # best score - this cell's score, in the same order
    probe_bounds: np.ndarray

    def home(self, cell: int) -> np.ndarray:
        return self.home_rows[self.home_bounds[cell] : self.home_bounds[cell + 1]]

    def probes(self, cell: int, low: float, high: float, probers: np.ndarray) -> np.ndarray:
        """Vectors probing ``cell`` at a margin in (low, high], of those ``probers`` allows."""
        start, end = self.probe_bounds[cell], self.probe_bounds[cell + 1]
        rows, gaps = self.probe_rows[start:end], self.probe_gaps[start:end]
        return rows[(gaps > low) & (gaps <= high) & probers[rows]]

    def work(self, low: float, high: float, probers: np.ndarray, homes: bool) -> np.ndarray:
        """Dot products per cell: its probes in (low, high] that ``probers`` allows, times its
        home members; ``homes``: plus home x home."""
        sizes = np.diff(self.home_bounds).astype(np.float64)
        rows, gaps = self.probe_rows, self.probe_gaps
        inside = (gaps > low) & (gaps <= high) & probers[rows]
        counts = np.diff(np.r_[0, np.cumsum(inside)][self.probe_bounds])
        return counts * sizes + (sizes * sizes / 2 if homes else 0.0)


def _partitioned(
    vectors: np.ndarray, threshold: float, found: _Found, run: _Runner, stats: SearchStats
) -> None:
    n = len(vectors)
    if vectors.dtype != np.float32 and vectors.nbytes * 2 <= FLOAT32_COPY_BYTES:
        # Each vector is read several times and numpy converts float16 to float32 slowly
        # (~3 ns a value): convert once when it fits.
        vectors = vectors.astype(np.float32)
    rng = np.random.default_rng(SEED)
    with stats.phase("k-means"):
        centroids = _kmeans(vectors, _cell_count(n), rng, run)
    stats.cells = len(centroids)
    with stats.phase("assignment"):
        cells = _assign(vectors, centroids, run)
    search = _Search(vectors, cells, threshold, found, run)
    pilot = _Pilot(search, rng)
    with stats.phase("pilot"):
        margin = pilot.widen(stats)
    if margin is not None:
        stats.margin = margin
        stats.probes_per_vector = 1 + float(np.count_nonzero(cells.probe_gaps <= margin)) / n
        work = cells.work(-1.0, margin, np.ones(n, dtype=bool), homes=True).sum()
        stats.work_share = float(work) / (n * (n - 1) / 2)
    if margin is None or stats.work_share > FALLBACK_SHARE:
        stats.method = "exact (fallback)"
        with stats.phase("exact"):
            _exact(vectors, threshold, found, run)
        return
    stats.method = "partitioned"
    with stats.phase("search"):
        # The pilot searched its cells, and its members' probes into the others.
        search(~pilot.cells, -1.0, margin, ~pilot.members, homes=True)


def _cell_count(n: int) -> int:
    return max(2, min(round(CELLS_PER_CUBE_ROOT * n ** (1 / 3)), n // 2))


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, 1e-12)


def _kmeans(vectors: np.ndarray, cells: int, rng: np.random.Generator, run: _Runner) -> np.ndarray:
    """Spherical k-means (unit centroids, cosine assignment) on a sample of the vectors."""
    n = len(vectors)
    size = min(n, cells * KMEANS_SAMPLE_PER_CELL)
    sample = _float32(vectors[np.sort(rng.choice(n, size=size, replace=False))])
    centroids = sample[rng.choice(size, size=cells, replace=False)]
    for share in KMEANS_SCHEDULE:
        rows = sample[: max(cells, int(share * size))]
        labels = _nearest(rows, centroids, run)
        members, bounds = _by_cell(np.arange(len(rows)), labels, cells)
        grouped = rows[members]
        # A cell nobody chose restarts at a random sample vector.
        updated = sample[rng.choice(size, size=cells, replace=False)]
        for c in np.flatnonzero(np.diff(bounds)):  # a loop of sums beats np.add.reduceat here
            updated[c] = grouped[bounds[c] : bounds[c + 1]].sum(axis=0)
        centroids = _unit_rows(updated)
    return centroids


def _nearest(rows: np.ndarray, centroids: np.ndarray, run: _Runner) -> np.ndarray:
    """Each row's best centroid, a block of rows per chunk."""
    step = _rows_per_block(len(centroids), len(rows))

    def best(start: int) -> np.ndarray:
        return np.argmax(rows[start : start + step] @ centroids.T, axis=1)

    return np.concatenate(list(run.map(best, _starts(len(rows), step))))


def _assign(vectors: np.ndarray, centroids: np.ndarray, run: _Runner) -> _Cells:
    """Every vector's home cell, and the cells it may probe (``MAX_PROBES - 1`` at most)."""
    n, count = len(vectors), len(centroids)
    step = _rows_per_block(count, n)

    def assign(start: int) -> Assigned:
        return assign_block(_float32(vectors[start : start + step]), centroids, start)

    parts = list(run.map(assign, _starts(n, step)))
    home = np.concatenate([part[0] for part in parts])
    home_rows, home_bounds = _by_cell(np.arange(n, dtype=np.int32), home, count)
    order, probe_bounds = _by_cell(
        np.arange(sum(len(part[1]) for part in parts)),
        np.concatenate([part[2] for part in parts]),
        count,
    )
    probe_rows = np.concatenate([part[1] for part in parts])[order]
    probe_gaps = np.concatenate([part[3] for part in parts])[order]
    return _Cells(home_rows, home_bounds, probe_rows, probe_gaps, probe_bounds)


#: One block's assignment: each row's home cell, and its probes as (row, cell, gap) arrays.
Assigned = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def assign_block(rows: np.ndarray, centroids: np.ndarray, start: int) -> Assigned:
    """Home cells of these float32 ``rows`` (ids from ``start``), and the other cells each
    may probe: centroid score within ``MAX_MARGIN`` of its best, ``MAX_PROBES`` at most."""
    return assigned(rows @ centroids.T, start)


def assigned(scores: np.ndarray, start: int) -> Assigned:
    """``assign_block``'s result from the rows' scores against every centroid (-inf: a
    cell known to be further than ``MAX_MARGIN`` from the row's best)."""
    home = scores.argmax(axis=1)
    best = scores[np.arange(len(scores)), home]
    # N x cells values: every pass over them counts, so no matrix of gaps, and only the
    # rows with a cell besides their home (few, on clustered data) are looked into.
    candidate = scores >= (best - MAX_MARGIN)[:, None]
    counts = np.count_nonzero(candidate, axis=1)
    several = np.flatnonzero(counts > 1)
    candidate = candidate[several]
    crowded = np.flatnonzero(counts[several] > MAX_PROBES)
    if len(crowded):  # keep the MAX_PROBES best, home included
        ranked = np.argsort(-scores[several[crowded]], axis=1)[:, :MAX_PROBES]
        candidate[crowded] = False
        candidate[crowded[:, None], ranked] = True
    r, c = np.nonzero(candidate)
    r = several[r]
    away = c != home[r]
    r, c = r[away], c[away]
    return home, (r + start).astype(np.int32), c.astype(np.int32), best[r] - scores[r, c]


def _by_cell(rows: np.ndarray, cells: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(cells, kind="stable")  # stable: ascending vector ids within a cell
    bounds = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=count), out=bounds[1:])
    return rows[order], bounds


class _Search:
    """Searches chosen cells of the partition; every pair found goes to ``found``."""

    def __init__(
        self, vectors: np.ndarray, cells: _Cells, threshold: float, found: _Found, run: _Runner
    ) -> None:
        self.vectors = vectors
        self.cells = cells
        self.threshold = threshold
        self.found = found
        self.run = run

    def __call__(
        self, chosen: np.ndarray, low: float, high: float, probers: np.ndarray, *, homes: bool
    ) -> np.ndarray:
        """Pairs in the ``chosen`` cells (bool by cell) between their home members and the
        ``probers`` (bool by vector) probing them at a margin in (low, high]; ``homes``: also
        among the home members.  Returns the pairs found as sorted unique keys i * N + j."""
        vectors, cells, threshold = self.vectors, self.cells, self.threshold
        work = cells.work(low, high, probers, homes)
        work[~chosen] = 0

        def search(chunk: list[int]) -> list[Hits]:
            hits: list[Hits] = []
            for c in chunk:
                home = cells.home(c)
                probes = cells.probes(c, low, high, probers)
                members = _float32(vectors[home])
                if homes:
                    hits.extend(_compare_within(members, home, threshold))
                if len(probes):
                    others = _float32(vectors[probes])
                    hits.extend(_compare(others, probes, members, home, threshold))
            return hits

        n = len(vectors)
        keys = [np.empty(0, dtype=np.int64)]
        for hits in self.run.map(search, _chunks(work)):
            for a, b, cosines in hits:
                self.found.add((a, b, cosines))
                keys.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
        return np.unique(np.concatenate(keys))


class _Pilot:
    """Picks the probe margin on random cells (the pilot), searching them as it goes.

    The pilot finds the pairs of its members both ways (anyone probing a pilot cell, and
    members probing the other cells) with a margin widened ``MARGIN_STEP`` at a time.  A
    pair first found at step k needs that margin, so the new pairs per step show how fast
    the pairs still missing thin out.  It stops once ``QUIET_RINGS`` steps in a row each
    added at most ``RING_SHARE`` of the pairs seen, with ``PILOT_PAIRS`` pairs seen at least
    (it takes in more cells until it has them).  With fewer pairs in the whole library it
    searches everything up to ``MAX_MARGIN``.
    """

    def __init__(self, search: _Search, rng: np.random.Generator) -> None:
        self._search = search
        cells = search.cells
        self._order = rng.permutation(len(cells.home_bounds) - 1)
        self._held = np.cumsum(np.diff(cells.home_bounds)[self._order])
        self._taken = 0  # cells of self._order in the pilot
        self.cells = np.zeros(len(self._order), dtype=bool)
        self.members = np.zeros(len(search.vectors), dtype=bool)
        self._seen = np.empty(0, dtype=np.int64)

    def widen(self, stats: SearchStats) -> float | None:
        """The margin for the other cells; None when the partition does not work here."""
        n = len(self.members)
        self._grow(max(PILOT_SHARE * n, min(PILOT_MIN, n)), -1.0)
        high, quiet, new = MARGIN_STEP, 0, 0
        self._ring(-1.0, high, homes=True)
        stats.rings = 1
        if len(self._seen) > DENSE_PAIRS * np.count_nonzero(self.members):
            # Photos that all look alike: pairs everywhere, at every margin.  Widening would
            # only collect millions of them to learn what the first ring already shows.
            stats.pilot_pairs = len(self._seen)
            return None
        while not (quiet == QUIET_RINGS and len(self._seen) >= PILOT_PAIRS):
            if len(self._seen) < PILOT_PAIRS and self._taken < len(self._order):
                self._grow(2 * self._held[self._taken - 1], high)  # too few pairs to judge
                quiet = 0
            if high >= MAX_MARGIN - 1e-9:
                # Few pairs in the whole library, or pairs at every margin: the last step
                # tells which.
                stats.pilot_pairs = len(self._seen)
                return high if new <= max(1.0, RING_SHARE * len(self._seen)) else None
            new = self._ring(high, high + MARGIN_STEP, homes=False)
            high += MARGIN_STEP
            stats.rings += 1
            quiet = quiet + 1 if new <= RING_SHARE * len(self._seen) else 0
        stats.pilot_pairs = len(self._seen)
        return high

    def _ring(self, low: float, high: float, *, homes: bool) -> int:
        """Search the pilot's pairs at a margin in (low, high]; how many are new."""
        everyone = np.ones(len(self.members), dtype=bool)
        found = np.union1d(
            self._search(self.cells, low, high, everyone, homes=homes),
            self._search(~self.cells, low, high, self.members, homes=False),
        )
        new = np.setdiff1d(found, self._seen, assume_unique=True)
        self._seen = np.union1d(self._seen, new)
        return len(new)

    def _grow(self, members: float, margin: float) -> None:
        """Take in random cells until the pilot holds ``members`` vectors, and search them up
        to ``margin`` (the pilot so far already probed them from its side)."""
        start = self._taken
        self._taken = min(len(self._order), int(np.searchsorted(self._held, members)) + 1)
        added = np.zeros_like(self.cells)
        added[self._order[start : self._taken]] = True
        newcomers = np.zeros_like(self.members)
        for cell in np.flatnonzero(added).tolist():
            newcomers[self._search.cells.home(cell)] = True
        if margin >= 0:
            self._seen = np.union1d(
                self._seen,
                np.union1d(
                    self._search(added, -1.0, margin, ~self.members, homes=True),
                    self._search(~(self.cells | added), -1.0, margin, newcomers, homes=False),
                ),
            )
        self.cells |= added
        self.members |= newcomers


def _chunks(work: np.ndarray) -> Iterator[list[int]]:
    """Cells with work to do, in chunks of about ``CELL_WORK`` dot products (a big cell is a
    chunk alone)."""
    chunk: list[int] = []
    total = 0.0
    for cell in np.flatnonzero(work).tolist():
        chunk.append(cell)
        total += work[cell]
        if total >= CELL_WORK:
            yield chunk
            chunk, total = [], 0.0
    if chunk:
        yield chunk


def _compare(
    rows: np.ndarray,
    row_ids: np.ndarray,
    cols: np.ndarray,
    col_ids: np.ndarray,
    threshold: float,
) -> Iterator[Hits]:
    """Pairs between ``rows`` and ``cols`` at or above the threshold, a block at a time."""
    step = _rows_per_block(len(cols))
    for start in range(0, len(rows), step):
        sims = rows[start : start + step] @ cols.T
        i, j = _strongest(sims, sims >= threshold)
        yield row_ids[i + start], col_ids[j], sims[i, j]


def _compare_within(rows: np.ndarray, row_ids: np.ndarray, threshold: float) -> Iterator[Hits]:
    """Pairs among ``rows`` at or above the threshold, a block at a time."""
    step = max(1, math.isqrt(BLOCK_BYTES // 4))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        # numpy computes a matrix times its own transpose with BLAS syrk: half the work.
        yield _upper(block @ block.T, row_ids[start : start + step], threshold)
        if start + step < len(rows):
            yield from _compare(
                block,
                row_ids[start : start + step],
                rows[start + step :],
                row_ids[start + step :],
                threshold,
            )


def _upper(sims: np.ndarray, ids: np.ndarray, threshold: float) -> Hits:
    """Pairs above the diagonal of a square block of similarities.  Only those enter the
    per-photo cut: a photo's row then holds its later neighbours and its column its earlier
    ones, so no share of the cut goes to a mirrored pair that is dropped afterwards."""
    i, j = _strongest(sims, np.triu(sims >= threshold, k=1))
    return ids[i], ids[j], sims[i, j]


# ------------------------------------------------------------------------------ hashes


def hamming_arrays(
    hashes: np.ndarray,
    max_distance: int,
    *,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
) -> Hits:
    """Every pair ``(i, j, distance)``, ``i < j``, of 64-bit hashes within ``max_distance``
    bits, sorted, as three arrays."""
    values = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(values)
    found = _Found(n)
    if n < 2:
        a, b, _ = found.arrays()
        return a, b, np.empty(0, dtype=np.int64)
    rows = max(1, BLOCK_BYTES // (8 * n))
    for start in range(0, n, rows):
        if tick is not None:
            tick()
        if cancel is not None and cancel.is_set():
            break
        block = np.bitwise_count(values[start : start + rows, None] ^ values[None, start:])
        # Column k of the block is row k: only pairs above that diagonal, each once (as in
        # _upper), enter the per-photo cut.
        close = np.triu(block <= max_distance, k=1)
        i, j = _strongest(-block.astype(np.int16), close)  # fewer differing bits first
        found.add((i + start, j + start, -block[i, j].astype(np.int16)))
    a, b, scores = found.arrays()
    return a, b, -scores.astype(np.int64)
