"""Neighbour search at archive scale: millions of embeddings, more than memory holds.

``neighbours.neighbour_arrays`` holds the whole matrix (and, for the partitioned search, a
float32 copy of what fits).  10,000,000 x 1280 float16 embeddings are 25.6 GB: more than
this kind of machine has.  This search takes the matrix as it lies on disk (an
``np.memmap``, e.g. ``cache.write_matrix``'s file; an in-memory array works too) and only
ever holds one bucket of it:

1. **k-means** on a sample, as the partitioned search does (at most ``MAX_CELLS`` cells:
   past that, each vector's scores against every centroid cost more than the cells save).
2. **Assignment**, streamed: the matrix is read ``BLOCK_ROWS`` at a time (``os.pread``, so
   the file's pages never count in this process's memory), each row gets its home cell and
   the cells it may probe (centroid score within ``MAX_MARGIN`` of its best).
3. **Pilot**: random cells and everything probing them are read and searched at every
   margin; the probe margin is chosen from the new pairs per margin step, by the partitioned
   search's rule (``neighbours._Pilot``).
4. **Buckets**, streamed: a second pass writes each row, as the float16 it already is, into
   the bucket file of its home cell and of each cell it probes at that margin (an external
   distribution sort: sequential reads, appends).  A bucket is a run of cells of about
   ``BUCKET_BYTES``.
5. **Search**, a bucket at a time: within each cell, matrix products compare the home
   members with each other and with the vectors probing the cell, in float32 (converted a
   cell at a time), exactly as the in-memory search does.

The storage is float16, the values the cache keeps (``cache.quantise``): nothing is rounded
further, so every score is the same float32 dot product the in-memory search computes and
no pair below the threshold is ever reported (re-scoring is not needed: nothing was
approximated).  What can be missed is a pair whose photos never meet in a cell (the margin,
as in the partitioned search).  Peak memory: the per-row cell facts (~12 bytes a row plus
~16 per probe), one bucket, one block of similarities per core, and the pairs found
(capped at ``MAX_PER_PHOTO`` per photo).  Disk: the bucket files, about (1 + probes per
row) x the matrix, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from threadpoolctl import threadpool_limits

from photodup_tui.engine.neighbours import (
    DENSE_PAIRS,
    MARGIN_STEP,
    MAX_MARGIN,
    PILOT_MIN,
    PILOT_PAIRS,
    QUIET_RINGS,
    RING_SHARE,
    SEED,
    Assigned,
    Hits,
    SearchStats,
    Tick,
    _Cancelled,
    _cell_count,
    _chunks,
    _compare,
    _compare_within,
    _cores,
    _float32,
    _Found,
    _kmeans,
    _Runner,
    assign_block,
)

#: ``group_photos`` takes this path above this many embeddings (it never changes the small
#: library's path): below, the in-memory search is faster and the matrix fits.
ARCHIVE_LIMIT = 2_000_000
MAX_CELLS = 1_000
BLOCK_ROWS = 32_768  # rows read (and scored against every centroid) at a time
BUCKET_BYTES = 512 * 1024 * 1024  # float16 rows in one bucket file
PILOT_SHARE = 0.01  # the pilot's cells hold this share of the rows (at least PILOT_MIN)
DISK_SLACK = 1.1  # free space wanted beyond the bucket files' size


class NotEnoughDisk(OSError):
    """The bucket files would not fit where they were to be written."""


def write_matrix(vectors: Sequence[np.ndarray], path: Path) -> np.memmap:
    """``vectors`` (one per photo, e.g. the scan's float16 embeddings) as one float16 matrix
    in the file ``path``, written ``BLOCK_ROWS`` at a time (never stacked in memory, and
    with plain writes: pages written through a mapping would count in this process's
    memory), and opened read-only as an ``np.memmap`` for ``archive_arrays``."""
    dim = len(vectors[0])
    with open(path, "wb") as out:
        for start in range(0, len(vectors), BLOCK_ROWS):
            block = np.stack(vectors[start : start + BLOCK_ROWS]).astype(np.float16)
            out.write(block.tobytes())
    return np.memmap(path, dtype=np.float16, mode="r", shape=(len(vectors), dim))


def archive_arrays(
    matrix: np.ndarray,
    threshold: float,
    *,
    workdir: Path | None = None,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
    stats: SearchStats | None = None,
) -> Hits:
    """Every pair ``(i, j, cosine)``, ``i < j``, ``cosine >= threshold``, of the rows of
    ``matrix`` (L2-normalised, float16 or float32, typically an ``np.memmap``), sorted, as
    three arrays, like ``neighbour_arrays``.  Bucket files go to a fresh folder in
    ``workdir`` (default: the temp dir), removed before returning."""
    rows = _Rows(matrix)
    n = rows.n
    found = _Found(n)
    stats = stats if stats is not None else SearchStats()
    stats.method = "archive"
    if n < 2:
        return found.arrays()
    workers = _cores()
    try:
        with (
            ExitStack() as stack,
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(workers, thread_name_prefix="archive") as pool,
        ):
            stack.callback(rows.close)
            run = _Runner(pool, workers, cancel, tick)
            _search(rows, threshold, found, run, stats, workdir)
    except _Cancelled:
        pass
    with stats.phase("pairs"):
        return found.arrays()


class _Rows:
    """The matrix, read a block at a time: ``os.pread`` from its file when it is an
    ``np.memmap`` (the page cache holds what was read, not this process), else slices."""

    def __init__(self, matrix: np.ndarray) -> None:
        if matrix.ndim != 2:
            raise ValueError("embeddings must be a 2-D array")
        self.n, self.dim = matrix.shape
        self.dtype = np.float16 if matrix.dtype == np.float16 else np.dtype(np.float32)
        self._matrix = matrix
        self._fd: int | None = None
        filename = getattr(matrix, "filename", None)
        if (
            isinstance(matrix, np.memmap)
            and filename is not None
            and matrix.flags.c_contiguous
            and matrix.dtype == self.dtype
        ):
            self._fd = os.open(filename, os.O_RDONLY)
            self._offset = int(matrix.offset)
        self.row_bytes = self.dim * np.dtype(self.dtype).itemsize

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a fresh array."""
        if self._fd is None:
            return np.ascontiguousarray(self._matrix[start:stop], dtype=self.dtype)
        out = np.empty((stop - start, self.dim), dtype=self.dtype)
        view = memoryview(out).cast("B")
        done, offset = 0, self._offset + start * self.row_bytes
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"short read from the embeddings file at byte {offset + done}")
            done += got
        return out

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The rows ``ids`` (ascending), each run of consecutive ids read at once."""
        if self._fd is None:
            return np.ascontiguousarray(self._matrix[ids], dtype=self.dtype)
        out = np.empty((len(ids), self.dim), dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(ids)], strict=True):
            out[lo:hi] = self.block(int(ids[lo]), int(ids[hi - 1]) + 1)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class _Plan:
    """Every row's home cell and its probes (row, cell, gap), sorted by row."""

    home: np.ndarray
    probe_rows: np.ndarray
    probe_cells: np.ndarray
    probe_gaps: np.ndarray


def _search(
    rows: _Rows,
    threshold: float,
    found: _Found,
    run: _Runner,
    stats: SearchStats,
    workdir: Path | None,
) -> None:
    n = rows.n
    rng = np.random.default_rng(SEED)
    with stats.phase("k-means"):
        centroids = _kmeans(_SampleView(rows), min(MAX_CELLS, _cell_count(n)), rng, run)
    stats.cells = len(centroids)
    with stats.phase("assignment"):
        plan = _assign(rows, centroids, run)
    with stats.phase("pilot"):
        margin = _pilot_margin(rows, plan, len(centroids), threshold, run, rng, stats)
    stats.margin = margin
    keep = plan.probe_gaps <= margin
    probe_rows, probe_cells = plan.probe_rows[keep], plan.probe_cells[keep]
    stats.probes_per_vector = 1 + len(probe_rows) / n
    folder = Path(tempfile.mkdtemp(prefix="photodup-archive-", dir=workdir))
    try:
        with stats.phase("buckets"):
            buckets = _write_buckets(rows, plan.home, probe_rows, probe_cells, folder, run)
        with stats.phase("search"):
            for bucket in buckets:
                _search_bucket(rows, bucket, plan.home, threshold, found, run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class _SampleView:
    """What ``neighbours._kmeans`` needs of the matrix: its length and sampled rows."""

    def __init__(self, rows: _Rows) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return self._rows.n

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        return self._rows.take(ids)


def _blocks(n: int) -> range:
    return range(0, n, BLOCK_ROWS)


def _assign(rows: _Rows, centroids: np.ndarray, run: _Runner) -> _Plan:
    def assign(start: int) -> Assigned:
        block = rows.block(start, min(rows.n, start + BLOCK_ROWS))
        return assign_block(_float32(block), centroids, start)

    parts = list(run.map(assign, _blocks(rows.n)))
    return _Plan(
        home=np.concatenate([p[0] for p in parts]).astype(np.int32),
        probe_rows=np.concatenate([p[1] for p in parts]),
        probe_cells=np.concatenate([p[2] for p in parts]),
        probe_gaps=np.concatenate([p[3] for p in parts]).astype(np.float32),
    )


# ------------------------------------------------------------------------------ pilot


def _pilot_margin(
    rows: _Rows,
    plan: _Plan,
    cells: int,
    threshold: float,
    run: _Runner,
    rng: np.random.Generator,
    stats: SearchStats,
) -> float:
    """The probe margin: random cells (``PILOT_SHARE`` of the rows, more until they hold
    ``PILOT_PAIRS`` pairs) are searched against everything probing them up to
    ``MAX_MARGIN``, and each pair is marked with the margin it needed; then the partitioned
    search's rule picks the margin from those rings.  A pair may also be found from the
    other side (its home member probing the prober's cell), at a margin not seen here, so
    the margin is if anything wider than needed."""
    n = len(plan.home)
    sizes = np.bincount(plan.home, minlength=cells)
    order = rng.permutation(cells)
    held = np.cumsum(sizes[order])
    want = max(PILOT_SHARE * n, min(PILOT_MIN, n))
    taken = 0
    needed = np.empty(0, dtype=np.float32)
    members = 0
    while taken < cells:
        upto = min(cells, int(np.searchsorted(held, want)) + 1)
        chosen = order[taken:upto]
        taken = upto
        members = int(held[taken - 1])
        more = _pilot_pairs(rows, plan, cells, chosen, threshold, run)
        needed = np.concatenate([needed, more])
        if len(needed) >= PILOT_PAIRS or want >= n:
            break
        want *= 2
    stats.pilot_pairs = len(needed)
    if len(needed) > DENSE_PAIRS * members:
        # Photos that all look alike: pairs everywhere; the per-photo cap decides.
        stats.rings = 1
        return MARGIN_STEP
    margin, stats.rings = _margin_from(needed)
    return margin


def _pilot_pairs(
    rows: _Rows, plan: _Plan, cells: int, chosen: np.ndarray, threshold: float, run: _Runner
) -> np.ndarray:
    """The margin each pair of these cells' home members needed (0: both at home; else the
    prober's gap), one value per pair."""
    in_pilot = np.zeros(cells, dtype=bool)
    in_pilot[chosen] = True
    home_ids = np.flatnonzero(in_pilot[plan.home])
    probing = np.flatnonzero(in_pilot[plan.probe_cells])
    ids = np.union1d(home_ids, plan.probe_rows[probing])
    vectors = rows.take(ids)
    position = {int(cell): i for i, cell in enumerate(chosen.tolist())}
    home_by_cell = [[] for _ in chosen]  # type: list[list[int]]
    for row, cell in zip(home_ids.tolist(), plan.home[home_ids].tolist(), strict=True):
        home_by_cell[position[cell]].append(row)
    probes_by_cell = [[] for _ in chosen]  # type: list[list[int]]
    for k in probing.tolist():
        probes_by_cell[position[int(plan.probe_cells[k])]].append(k)

    def search(index: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        home = np.array(home_by_cell[index], dtype=np.int64)
        members = _float32(vectors[np.searchsorted(ids, home)])
        keys, needs = [], []
        for a, b, _ in _compare_within(members, home, threshold):
            keys.append(np.minimum(a, b) * len(plan.home) + np.maximum(a, b))
            needs.append(np.zeros(len(a), dtype=np.float32))
        k = np.array(probes_by_cell[index], dtype=np.int64)
        if len(k):
            probers = plan.probe_rows[k].astype(np.int64)
            gaps = plan.probe_gaps[k]
            others = _float32(vectors[np.searchsorted(ids, probers)])
            for a, b, _ in _compare(others, np.arange(len(k)), members, home, threshold):
                row = probers[a]
                keys.append(np.minimum(row, b) * len(plan.home) + np.maximum(row, b))
                needs.append(gaps[a])
        return keys, needs

    keys: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    needs: list[np.ndarray] = [np.empty(0, dtype=np.float32)]
    for part_keys, part_needs in run.map(search, range(len(chosen))):
        keys += part_keys
        needs += part_needs
    all_keys, all_needs = np.concatenate(keys), np.concatenate(needs)
    order = np.lexsort((all_needs, all_keys))  # by pair, smallest margin first
    all_keys, all_needs = all_keys[order], all_needs[order]
    first = np.r_[True, all_keys[1:] != all_keys[:-1]]
    return all_needs[first]


def _margin_from(needed: np.ndarray) -> tuple[float, int]:
    """``neighbours._Pilot``'s rule on pairs marked with the margin they needed: widen
    ``MARGIN_STEP`` at a time until ``QUIET_RINGS`` steps in a row each add at most
    ``RING_SHARE`` of the pairs seen; pairs still coming at ``MAX_MARGIN``: that margin."""
    steps = round(MAX_MARGIN / MARGIN_STEP)
    ring = np.clip(np.ceil(needed / MARGIN_STEP - 1e-6).astype(np.int64), 1, steps + 1)
    counts = np.bincount(ring, minlength=steps + 2)
    seen, quiet = int(counts[1]), 0
    for k in range(2, steps + 1):
        if quiet == QUIET_RINGS and seen >= PILOT_PAIRS:
            return (k - 1) * MARGIN_STEP, k - 1
        new = int(counts[k])
        seen += new
        quiet = quiet + 1 if new <= RING_SHARE * seen else 0
    return MAX_MARGIN, steps


# ------------------------------------------------------------------------------ buckets


@dataclass
class _Bucket:
    """One bucket file: its rows' ids and cells, in file order."""

    path: Path
    ids: np.ndarray
    cells: np.ndarray


def _write_buckets(
    rows: _Rows,
    home: np.ndarray,
    probe_rows: np.ndarray,
    probe_cells: np.ndarray,
    folder: Path,
    run: _Runner,
) -> list[_Bucket]:
    """Each row into the bucket of its home cell and of each cell it probes."""
    cells = int(home.max()) + 1
    entries = np.bincount(home, minlength=cells) + np.bincount(probe_cells, minlength=cells)
    total = int(entries.sum()) * rows.row_bytes
    free = shutil.disk_usage(folder).free
    if total * DISK_SLACK > free:
        raise NotEnoughDisk(
            f"the archive search needs {total / 2**30:.1f} GiB in {folder}, "
            f"{free / 2**30:.1f} GiB free"
        )
    per_bucket = max(1, BUCKET_BYTES // rows.row_bytes)
    bucket_of = (np.cumsum(entries) - entries) // per_bucket  # by cell, runs of cells
    count = int(bucket_of.max()) + 1
    ids: list[list[np.ndarray]] = [[] for _ in range(count)]
    cells_of: list[list[np.ndarray]] = [[] for _ in range(count)]
    paths = [folder / f"bucket-{b:05d}.f16" for b in range(count)]
    probe_starts = np.searchsorted(probe_rows, np.r_[np.arange(0, rows.n, BLOCK_ROWS), rows.n])

    def load(index: int) -> np.ndarray:
        start = index * BLOCK_ROWS
        return rows.block(start, min(rows.n, start + BLOCK_ROWS))

    with ExitStack() as stack:
        files: list[BinaryIO] = [stack.enter_context(open(p, "wb")) for p in paths]
        blocks = run.map(load, range(len(probe_starts) - 1))
        for index, block in enumerate(blocks):
            start = index * BLOCK_ROWS
            lo, hi = probe_starts[index], probe_starts[index + 1]
            entry_rows = np.r_[np.arange(start, start + len(block)), probe_rows[lo:hi]]
            entry_cells = np.r_[home[start : start + len(block)], probe_cells[lo:hi]]
            entry_bucket = bucket_of[entry_cells]
            order = np.argsort(entry_bucket, kind="stable")
            bounds = np.searchsorted(entry_bucket[order], np.arange(count + 1))
            for b in np.flatnonzero(np.diff(bounds)).tolist():
                picked = order[bounds[b] : bounds[b + 1]]
                files[b].write(block[entry_rows[picked] - start].tobytes())
                ids[b].append(entry_rows[picked].astype(np.int32))
                cells_of[b].append(entry_cells[picked].astype(np.int32))
    return [
        _Bucket(paths[b], np.concatenate(ids[b]), np.concatenate(cells_of[b]))
        for b in range(count)
        if ids[b]
    ]


def _read_bucket(bucket: _Bucket, rows: _Rows) -> np.ndarray:
    data = np.fromfile(bucket.path, dtype=rows.dtype)
    bucket.path.unlink()  # read once: its disk space goes back at once
    return data.reshape(len(bucket.ids), rows.dim)


def _search_bucket(
    rows: _Rows,
    bucket: _Bucket,
    home: np.ndarray,
    threshold: float,
    found: _Found,
    run: _Runner,
) -> None:
    """Within each of the bucket's cells: home members with each other and with the rows
    probing the cell."""
    data = _read_bucket(bucket, rows)
    order = np.argsort(bucket.cells, kind="stable")  # by cell, ascending ids within one
    cells = np.unique(bucket.cells)
    at_home = home[bucket.ids] == bucket.cells
    starts = np.searchsorted(bucket.cells[order], cells)
    ends = np.searchsorted(bucket.cells[order], cells, side="right")
    sizes = np.array(
        [np.count_nonzero(at_home[order[s:e]]) for s, e in zip(starts, ends, strict=True)],
        dtype=np.float64,
    )
    work = sizes * (ends - starts - sizes) + sizes * sizes / 2

    def search(chunk: list[int]) -> list[Hits]:
        hits: list[Hits] = []
        for c in chunk:
            picked = order[starts[c] : ends[c]]
            mine = at_home[picked]
            members, member_ids = picked[mine], bucket.ids[picked[mine]].astype(np.int64)
            vectors = _float32(data[members])
            hits.extend(_compare_within(vectors, member_ids, threshold))
            probers = picked[~mine]
            if len(probers):
                prober_ids = bucket.ids[probers].astype(np.int64)
                hits.extend(
                    _compare(_float32(data[probers]), prober_ids, vectors, member_ids, threshold)
                )
        return hits

    for hits in run.map(search, _chunks(work)):
        for hit in hits:
            found.add(hit)
