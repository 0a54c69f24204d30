"""Neighbour search at archive scale: millions of embeddings, more than memory holds.

``neighbours.neighbour_arrays`` holds the whole matrix (and, for the partitioned search, a
float32 copy of what fits).  10,000,000 x 1280 float16 embeddings are 25.6 GB: more than
this kind of machine has.  This search takes the matrix as it lies on disk (an
``np.memmap``, e.g. ``write_matrix``'s file; an in-memory array works too) and only ever
holds a pass's share of it:

1. **k-means** on a sample, as the partitioned search does (at most ``MAX_CELLS`` cells:
   past that, each vector's scores against every centroid cost more than the cells save).
2. **Assignment**, streamed: the matrix is read ``BLOCK_ROWS`` at a time (``os.pread``, so
   the file's pages never count in this process's memory), each row gets its home cell and
   the cells it may probe (centroid score within ``MAX_MARGIN`` of its best).  Centroids
   are scored on the rows' first coordinates, the rest bounded by Cauchy-Schwarz: only
   the cells that may be within the margin are scored whole (``_HeadScores``; the same
   cells as scoring every coordinate).  The first pass's rows (step 4) are copied as they
   come by.
3. **Pilot**: random cells and everything probing them are read and searched at every
   margin; the probe margin is chosen from the new pairs per margin step, by the partitioned
   search's rule (``neighbours._Pilot``).
4. **Passes**: the cells are taken in runs whose rows (home members and probers, float16
   as stored) fit in ``memory`` (``PASS_BYTES``: 55% of the machine's memory; 10M x 1280
   is ~24 GiB of rows, 2 passes with 24 GiB).  The first run is chosen before the
   assignment, from the k-means sample, and its rows kept as the assignment reads them
   (``_Early``, in ``EARLY_GROUPS`` groups of cells).  Every later pass reads the whole
   matrix once, in order (backwards, then forwards, and so on: what the page cache kept
   of the last read comes first), in a thread of its own while the pass before is
   searched, as the memory that pass frees allows (``_Budget``).  Nothing is written to
   disk.
5. **Search**, a pass at a time: within each cell, matrix products compare the home
   members with each other and with the vectors probing the cell, in float32 (converted a
   cell at a time), exactly as the in-memory search does.
   A big cell (10,000,000 photos in 1,000 cells: ~10,000 each, 50,000,000 pairs) is
   compared first as *sketches* (``SKETCH_MIN``): each row's residual from the cell's
   mean, projected to a quarter of the width; only pairs whose sketches score at least
   the pilot's sketch floor are scored, exactly, in float32.

The storage is float16, the values the cache keeps (``cache.quantise``): nothing is rounded
further, so every score is the same float32 dot product the in-memory search computes and
no pair below the threshold is ever reported (the sketches only choose which pairs are
scored; they never score one).  What can be missed is a pair whose photos never meet in a
cell (the margin, as in the partitioned search) or whose sketches score below the floor
(set from the pilot's pairs with room to spare, ``SKETCH_SLACK``).  Peak memory: the per-row cell facts (~12 bytes a row plus
~16 per probe), one pass's rows (``memory``; a cell bigger than that is a pass alone), the
float32 copies of the cells being searched, one block of similarities per core, and the
pairs found (capped at ``MAX_PER_PHOTO`` per photo).  Disk: nothing beyond the matrix.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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
    _rows_per_block,
    _Runner,
    _strongest,
    _where,
    assign_block,
    assigned,
)

#: ``group_photos`` takes this path above this many embeddings (it never changes the small
#: library's path): below, the in-memory search is faster and the matrix fits.
ARCHIVE_LIMIT = 2_000_000
MAX_CELLS = 1_000
BLOCK_ROWS = 32_768  # rows read (and scored against every centroid) at a time


def _memory_share(share: float) -> int:
    """This share of the machine's physical memory, in bytes (8 GiB where unknown)."""
    try:
        return int(share * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 8 * 2**30


#: Rows (as stored: float16) one search pass holds: its cells' home members and probers.
#: 10M x 1280 is ~24 GiB of them: with 24 GiB of memory, 2 passes (the rest of the search's
#: memory is ~1 GiB; what is left to the page cache keeps part of the last read).  Every
#: pass but the first costs a read of the whole matrix (its cells' rows lie all over it).
PASS_BYTES = _memory_share(0.55)
#: The first pass's rows are copied as the assignment reads them (no read of its own); its
#: cells are chosen before, from the k-means sample's assignment, and its buffer reserves
#: EARLY_ROOM times their estimated rows (address space: pages count once written).  Should
#: more arrive, the copy is dropped and the pass reads the matrix like the others.
EARLY_ROOM = 1.25
#: The first pass's cells are kept in this many groups (runs of cells, each its own
#: buffer), searched and freed one after another: the memory each frees goes to the next
#: pass's rows, read meanwhile (``_Reader``), so that read overlaps the search.
EARLY_GROUPS = 8
#: A block of which a pass wants fewer than 1 row in SPARSE_READ is read row (run) by row:
#: the last pass is often a remainder (10M x 1280: 1% of the rows), and the benchmark's
#: disk sustains ~50 MB/s, 8+ minutes for the whole 25.6 GB file.
SPARSE_READ = 8
PILOT_SHARE = 0.01  # the pilot's cells hold this share of the rows (at least PILOT_MIN)
#: A cell with at least SUB_MIN home members is split again where it is searched, into
#: sub-cells of about SUB_CELL: past a few thousand photos a cell's all-pairs products cost
#: more than scoring its members against a few sub-centroids, and near copies mostly share
#: their original's sub-cell.  Each vector then visits the sub-cells within a margin of its
#: best, the margin that keeps SUB_RECALL of the pilot's pairs (with at least
#: SUB_PILOT_PAIRS to judge by), unless that visits so much that the cell whole costs
#: little more (SUB_WORTH).
SUB_MIN = 3_000
SUB_CELL = 1_000
SUB_ITERATIONS = 6
SUB_RECALL = 0.998
SUB_PILOT_PAIRS = 500
SUB_WORTH = 0.8
#: A cell with at least SKETCH_MIN home members is searched through sketches: each row's
#: residual from the cell's mean, normalised and projected to ``_sketch_dim`` dimensions
#: (a fixed random orthonormal basis).  Within a cell the rows share their subject, and
#: what tells a near copy from a same-subject photo is in the residuals: near copies'
#: sketches score high, the others' about 0.  A cell's pairs of sketches are compared in
#: those few dimensions, and only the pairs scoring at least the pilot's sketch floor are
#: scored again, exactly, in float32: every reported score is still the exact one.  The
#: floor is the score SKETCH_MISS of the pilot's pairs fall below (with at least
#: SKETCH_PILOT_PAIRS to judge by; a quantile the pilot's sample pins down), lowered by
#: SKETCH_SLACK spreads of a sketch's score (1 / sqrt(width)), for the pairs further out
#: in the tail; below SKETCH_LOWEST it would let through too much to be worth it (cells
#: are then searched as before).  A block of pairs where more than SKETCH_DENSE pass is
#: scored exactly, whole.
SKETCH_MIN = 2_000
SKETCH_MISS = 0.01
SKETCH_SLACK = 2.0
SKETCH_PILOT_PAIRS = 500
SKETCH_LOWEST = 0.15
SKETCH_DENSE = 0.01
SKETCH_AXES = 8  # main directions of a cell's residuals left out of its sketches ...
SKETCH_SAMPLE = 1_000  # ... found on about this many of its members ...
SKETCH_ROUNDS = 3  # ... in this many rounds of subspace iteration
RESCORE_PAIRS = 65_536  # candidate pairs scored exactly at a time (two rows gathered each)
#: The assignment scores every row against every centroid (10M x 1,000 x 1280: 2.6e13
#: flops, a third of the search's CPU).  It scores them first on the rows' first ``head``
#: coordinates only (``_HeadScores``): the rest of a score is at most |x_tail| |c_tail|
#: (Cauchy-Schwarz), so a cell whose head score plus that bound is below a known score of
#: the row less MAX_MARGIN is neither its home nor a probe, and only the other cells are
#: scored on the rest: the same home and probes (up to float32 rounding, ASSIGN_SLACK).
#: A row with more than ASSIGN_FEW such cells (a row far from every centroid, e.g. in a
#: cell of two subjects) is scored on the rest against every centroid, as one product.  The
#: head is the share of ASSIGN_HEADS that costs least on the k-means sample, counting a
#: dot product gathered for one cell as ASSIGN_GATHER of the product's, and a share of
#: ASSIGN_OVERHEAD for the bounds (again for a row scored against every cell); none costing
#: under ASSIGN_WORTH of every full score: all scored whole.  On the benchmark's 1280-d
#: library (1,000 subjects) the head is 768 coordinates, ~0.83 of the full scores' CPU: a
#: fifth of the rows, in cells of two subjects, score ~0.5 with their home and are
#: scored whole.
ASSIGN_CHUNK = 2_048  # rows at a time: their rows x cells matrices stay in the cache
ASSIGN_FEW = 8
ASSIGN_HEADS = (0.5, 0.625, 0.75, 0.875)
ASSIGN_SLACK = 1e-4
ASSIGN_GATHER = 8.0
ASSIGN_OVERHEAD = 0.1
ASSIGN_WORTH = 0.9
ASSIGN_SAMPLE = 8_192  # sample rows the head is chosen on


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
    memory: int | None = None,
    cancel: threading.Event | None = None,
    tick: Tick | None = None,
    stats: SearchStats | None = None,
) -> Hits:
    """Every pair ``(i, j, cosine)``, ``i < j``, ``cosine >= threshold``, of the rows of
    ``matrix`` (L2-normalised, float16 or float32, typically an ``np.memmap``), sorted, as
    three arrays, like ``neighbour_arrays``.  ``memory``: the bytes of rows one pass over
    the matrix gathers (``PASS_BYTES``)."""
    found = _Found(len(matrix))
    stats = stats if stats is not None else SearchStats()
    stats.method = "archive"
    if len(matrix) < 2:
        return found.arrays()
    rows = _Rows(matrix)
    workers = _cores()
    try:
        with (
            ExitStack() as stack,
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(workers, thread_name_prefix="archive") as pool,
        ):
            stack.callback(rows.close)
            run = _Runner(pool, workers, cancel, tick)
            _search(rows, threshold, found, run, stats, memory or PASS_BYTES)
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

    def block(self, start: int, stop: int, into: np.ndarray | None = None) -> np.ndarray:
        """Rows ``start:stop`` as a fresh array, or in the first rows of ``into`` (reused
        between blocks: a fresh 84 MB array's pages are faulted in and zeroed each time,
        ~5 s of CPU for every read of a 25.6 GB file)."""
        if self._fd is None:
            return np.ascontiguousarray(self._matrix[start:stop], dtype=self.dtype)
        if into is None or len(into) < stop - start:
            into = np.empty((stop - start, self.dim), dtype=self.dtype)
        out = into[: stop - start]
        view = out.data.cast("B")
        done, offset = 0, self._offset + start * self.row_bytes
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"short read from the embeddings file at byte {offset + done}")
            done += got
        return out

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The rows ``ids`` (ascending), each run of consecutive ids read at once."""
        if self._fd is None or not len(ids):
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
    memory: int,
) -> None:
    n = rows.n
    rng = np.random.default_rng(SEED)
    with stats.phase("k-means"):
        # _kmeans only takes len() and sampled rows of what it is given.
        view = _SampleView(rows)
        centroids = _kmeans(cast(np.ndarray, view), min(MAX_CELLS, _cell_count(n)), rng, run)
    stats.cells = cells = len(centroids)
    with stats.phase("assignment"):
        early = _Early.planned(view.taken, centroids, rows, memory)
        scorer = _HeadScores.fitted(view.taken, centroids)
        plan = _assign(rows, centroids, run, early, scorer)
    stats.assign_head = scorer.head
    with stats.phase("pilot"):
        margin, sub_margin, sketch_floor = _pilot_margin(
            rows, plan, cells, threshold, run, rng, stats
        )
    stats.margin, stats.sub_margin, stats.sketch_floor = margin, sub_margin, sketch_floor
    keep = plan.probe_gaps <= margin
    stats.probes_per_vector = 1 + np.count_nonzero(keep) / n
    members = np.bincount(plan.home, minlength=cells)
    # A cell no row calls home has nothing to search: no pass reads its probers.
    entries = np.where(
        members > 0, members + np.bincount(plan.probe_cells[keep], minlength=cells), 0
    )
    search = _CellSearch(threshold, sub_margin, sketch_floor)
    kept = [group for group in early if group.whole()]  # each a pass, whatever its size
    in_kept = np.zeros(cells, dtype=bool)
    for group in kept:
        in_kept |= group.cells
    first = [np.flatnonzero(group.cells & (entries > 0)) for group in kept]
    passes = [*first, *_plan_passes(np.where(in_kept, 0, entries) * rows.row_bytes, memory)]
    stats.passes = len(passes)
    budget = _Budget(memory, sum(group.held_bytes() for group in kept))
    reader: _Reader | None = None

    def read(index: int) -> _Reader:
        # Each read runs the other way from the last (the assignment's: forwards): the
        # part of the file read last is what the page cache still holds.
        part = _Pass.of(passes[index], plan, cells, keep)
        stats.reads += 1
        return _Reader(rows, part, stats.reads % 2 == 1, budget)

    try:
        for index, chosen in enumerate(passes):
            with stats.phase("gather"):
                if index < len(kept):
                    part = _Pass.of(chosen, plan, cells, keep)
                    size = kept[index].held_bytes()
                    data, part.slots = kept[index].take(part, n)
                else:
                    reader = reader or read(index)
                    part, (data, part.slots) = reader.part, reader.result()
                    size, reader = data.nbytes, None
                following = max(index + 1, len(kept))
                if reader is None and following < len(passes):
                    # The next pass read is read while this one is searched, as the memory
                    # this one frees allows.
                    reader = read(following)
            with stats.phase("search"):
                _search_pass(part, data, search, found, run, stats, n)
            budget.give(size)
            del data, part  # before the next pass's rows are gathered
    finally:
        budget.stop()
        if reader is not None:
            reader.join()


class _Budget:
    """Bytes of rows held by passes (their buffers): a read waits until its rows fit in
    ``limit`` beside the others' (never for its own: a pass bigger than the memory)."""

    def __init__(self, limit: int, held: int) -> None:
        self._limit = limit
        self._held = held
        self._changed = threading.Condition()
        self._stopped = False

    def take(self, size: int, own: int) -> bool:
        """Reserve ``size`` more bytes for a read holding ``own``; False once stopped."""
        with self._changed:
            while not self._stopped and self._held + size > self._limit and self._held - own > 0:
                self._changed.wait(1.0)
            self._held += size
            return not self._stopped

    def give(self, size: int) -> None:
        with self._changed:
            self._held -= size
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()


class _Reader:
    """A pass's rows read in a thread of their own (``_gather``), within the budget."""

    def __init__(self, rows: _Rows, part: _Pass, backwards: bool, budget: _Budget) -> None:
        self.part = part
        self._out: tuple[np.ndarray, np.ndarray] | None = None
        self._error: BaseException | None = None

        def read() -> None:
            try:
                self._out = _gather(rows, part, backwards, budget)
            except BaseException as error:  # raised again in the searching thread
                self._error = error

        self._thread = threading.Thread(target=read, name="archive-read", daemon=True)
        self._thread.start()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._out is not None
        out, self._out = self._out, None
        return out

    def join(self) -> None:
        self._thread.join()


class _Early:
    """The first pass's rows, copied as the assignment reads them (``EARLY_ROOM``): its
    cells' home members and every row probing one of them within ``MAX_MARGIN`` (the probe
    margin is not known yet), in the order they came, each with its key (cell x N + row)."""

    def __init__(self, cells: np.ndarray, capacity: int, rows: _Rows) -> None:
        self.cells = cells
        self.data = np.empty((capacity, rows.dim), dtype=rows.dtype)  # untouched: no pages
        self._n = rows.n
        self._lock = threading.Lock()
        self._used = 0
        self._full = False
        self._keys: list[np.ndarray] = []
        self._starts: list[int] = []

    @staticmethod
    def planned(
        sample: np.ndarray, centroids: np.ndarray, rows: _Rows, memory: int
    ) -> list[_Early]:
        """The first run of cells (in cell order, as ``_plan_passes`` takes them) holding
        about an even share of the rows, should they take ``ceil(rows / memory)`` passes;
        every cell when they fit in one, in ``EARLY_GROUPS`` runs.  Sizes are the sample's,
        scaled to the matrix."""
        home, _, probe_cells, _ = assign_block(_float32(sample), centroids, 0)
        count = len(centroids)
        scale = rows.n / max(1, len(sample))
        sizes = np.bincount(home, minlength=count) + np.bincount(probe_cells, minlength=count)
        estimate = sizes * scale * rows.row_bytes
        total = float(estimate.sum())
        share = total / max(1, int(np.ceil(total / memory)))
        held = np.cumsum(estimate)
        taken = max(1, int(np.searchsorted(held, share * (1 + 1e-9), side="right")))
        groups: list[_Early] = []
        start = 0
        for k in range(1, EARLY_GROUPS + 1):  # runs of about equal estimated rows
            stop = max(start + 1, int(np.searchsorted(held, k / EARLY_GROUPS * held[taken - 1])))
            stop = taken if k == EARLY_GROUPS else min(stop, taken)
            if stop <= start:
                continue
            chosen = np.zeros(count, dtype=bool)
            chosen[start:stop] = True
            capacity = int(EARLY_ROOM * float(estimate[start:stop].sum()) / rows.row_bytes)
            groups.append(_Early(chosen, capacity + BLOCK_ROWS, rows))
            start = stop
        return groups

    def held_bytes(self) -> int:
        return self._used * self.data.shape[1] * self.data.itemsize

    def whole(self) -> bool:
        """Whether every row of the early cells was kept (none overflowed the buffer)."""
        return bool(self.cells.any()) and not self._full

    def keep(self, block: np.ndarray, start: int, assigned: Assigned) -> None:
        """The rows of this block (its first row: ``start``) that the early cells want."""
        if self._full or not self.cells.any():
            return
        home, probe_rows, probe_cells, _ = assigned
        members = np.flatnonzero(self.cells[home])
        probing = np.flatnonzero(self.cells[probe_cells])
        local = np.concatenate([members, probe_rows[probing].astype(np.int64) - start])
        cell = np.concatenate([home[members], probe_cells[probing]]).astype(np.int64)
        with self._lock:
            data, at = self.data, self._used
            if at + len(local) > len(data):  # more than reserved: give it up
                self._full = True
                self.data = self.data[:0].copy()  # freed once no thread writes to it
                self._keys, self._starts = [], []
                return
            self._used += len(local)
            self._keys.append(cell * self._n + (local + start))
            self._starts.append(at)
        data[at : at + len(local)] = block[local]  # each thread its own slots

    def take(self, part: _Pass, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The buffer, and where in it each of the pass's rows is (the pass's order); the
        buffer is the caller's from then on."""
        keys = np.concatenate([*self._keys, np.empty(0, np.int64)])
        slots = np.concatenate(
            [np.arange(a, a + len(k)) for a, k in zip(self._starts, self._keys, strict=True)]
            + [np.empty(0, np.int64)]
        )
        order = np.argsort(keys)
        keys, slots = keys[order], slots[order]
        wanted = np.repeat(part.cells, np.diff(part.bounds)) * n + part.ids
        at = np.minimum(np.searchsorted(keys, wanted), max(0, len(keys) - 1))
        if len(wanted) and (not len(keys) or not np.array_equal(keys[at], wanted)):
            raise RuntimeError("the first pass's rows were not all kept by the assignment")
        data = self.data
        self.data, self._keys, self._starts = data[:0].copy(), [], []
        return data, slots[at]


class _Buffers:
    """One block's buffer per thread, for ``_Rows.block``: used only until the work on
    that block returns."""

    def __init__(self, rows: _Rows) -> None:
        self._rows = rows
        self._local = threading.local()

    def mine(self) -> np.ndarray:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = np.empty((min(BLOCK_ROWS, self._rows.n), self._rows.dim), self._rows.dtype)
            self._local.buffer = buffer
        return cast(np.ndarray, buffer)


class _SampleView:
    """What ``neighbours._kmeans`` needs of the matrix: its length and sampled rows (the
    last taken are kept: ``_Early.planned`` sizes the cells on them)."""

    def __init__(self, rows: _Rows) -> None:
        self._rows = rows
        self.taken = np.empty((0, rows.dim), dtype=rows.dtype)

    def __len__(self) -> int:
        return self._rows.n

    def __getitem__(self, ids: np.ndarray) -> np.ndarray:
        self.taken = self._rows.take(ids)
        return self.taken


def _blocks(n: int) -> range:
    return range(0, n, BLOCK_ROWS)


def _assign(
    rows: _Rows, centroids: np.ndarray, run: _Runner, early: list[_Early], scorer: _HeadScores
) -> _Plan:
    buffers = _Buffers(rows)

    def assign(start: int) -> Assigned:
        block = rows.block(start, min(rows.n, start + BLOCK_ROWS), buffers.mine())
        done = scorer.assign(_float32(block), start)
        for group in early:
            group.keep(block, start, done)
        return done

    parts = list(run.map(assign, _blocks(rows.n)))
    return _Plan(
        home=np.concatenate([p[0] for p in parts]).astype(np.int32),
        probe_rows=np.concatenate([p[1] for p in parts]),
        probe_cells=np.concatenate([p[2] for p in parts]),
        probe_gaps=np.concatenate([p[3] for p in parts]).astype(np.float32),
    )


class _HeadScores:
    """Centroid scores of rows on their first ``head`` coordinates, and the cells that may
    still be a row's home or probe once the rest is bounded (``ASSIGN_HEADS``)."""

    def __init__(self, centroids: np.ndarray, head: int) -> None:
        self.centroids = centroids
        self.head = head
        self._tail = np.ascontiguousarray(centroids[:, head:])
        self._tail_norms = np.sqrt(np.einsum("ij,ij->i", self._tail, self._tail))
        # One more coordinate, |c_tail| against the row's |x_tail|: one product gives
        # each cell's head score plus its bound, head_c + |x_tail| |c_tail|.
        self._upper = np.ascontiguousarray(np.c_[centroids[:, :head], self._tail_norms])

    @staticmethod
    def fitted(sample: np.ndarray, centroids: np.ndarray) -> _HeadScores:
        """The head that costs least on (part of) the k-means sample, or every coordinate."""
        count, dim = centroids.shape
        rows = _float32(sample[:: max(1, len(sample) // ASSIGN_SAMPLE)])
        best, cost = dim, ASSIGN_WORTH
        for share in ASSIGN_HEADS:
            head = int(share * dim)
            if not 0 < head < dim or not len(rows):
                continue
            scorer = _HeadScores(centroids, head)
            counts = np.concatenate(
                [
                    np.count_nonzero(scorer.bounded(rows[k : k + ASSIGN_CHUNK])[2], axis=1)
                    for k in range(0, len(rows), ASSIGN_CHUNK)
                ]
            )
            many = counts > ASSIGN_FEW
            gathered = float(np.sum(np.where(many, 0, counts))) / len(rows)
            rest = (dim - head) / dim
            spent = head / dim + (rest + ASSIGN_OVERHEAD) * float(np.mean(many))
            spent += rest * gathered * ASSIGN_GATHER / count + ASSIGN_OVERHEAD
            if spent < cost:
                best, cost = head, spent
        return _HeadScores(centroids, best)

    def bounded(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each row's |x_tail|, its cells' upper bounds (rows x cells) and which cells may
        be within ``MAX_MARGIN`` of its best."""
        tail = rows[:, self.head :]
        reach = np.sqrt(np.einsum("ij,ij->i", tail, tail))
        upper = np.c_[rows[:, : self.head], reach] @ self._upper.T
        first = upper.argmax(axis=1)  # most likely the home: its exact score is a floor
        known = self._exact(rows, np.arange(len(rows)), first, upper, reach)
        # A cell c within MAX_MARGIN of the best scores at least known - MAX_MARGIN, and at
        # most its bound.
        return reach, upper, upper >= (known - MAX_MARGIN - ASSIGN_SLACK)[:, None]

    def _exact(
        self, rows: np.ndarray, i: np.ndarray, j: np.ndarray, upper: np.ndarray, reach: np.ndarray
    ) -> np.ndarray:
        """Row i's exact score against cell j, for each (i, j): the head score (the bound
        less |x_tail| |c_tail|) plus the tail's dot product."""
        head = upper[i, j] - reach[i] * self._tail_norms[j]
        return cast(np.ndarray, head + np.einsum("ij,ij->i", rows[i, self.head :], self._tail[j]))

    def assign(self, rows: np.ndarray, start: int) -> Assigned:
        """``assign_block``'s result for these float32 rows."""
        if self.head >= rows.shape[1]:
            return assign_block(rows, self.centroids, start)
        parts = [
            self._assign_chunk(rows[k : k + ASSIGN_CHUNK], start + k)
            for k in range(0, len(rows), ASSIGN_CHUNK)
        ]
        return cast(Assigned, tuple(np.concatenate([p[k] for p in parts]) for k in range(4)))

    def _assign_chunk(self, rows: np.ndarray, start: int) -> Assigned:
        reach, upper, open_ = self.bounded(rows)
        counts = np.count_nonzero(open_, axis=1)
        many = np.flatnonzero(counts > ASSIGN_FEW)
        few = np.flatnonzero(counts <= ASSIGN_FEW)
        home = np.empty(len(rows), dtype=np.int64)
        parts: list[Assigned] = []
        if len(many):  # every cell, the tail as one product
            heads = upper[many] - np.multiply.outer(reach[many], self._tail_norms)
            scores = heads + rows[many, self.head :] @ self._tail.T
            h, r, c, gap = assigned(scores, 0)
            home[many] = h
            parts.append((many[h[:0]], many[r].astype(np.int32), c, gap))
        # The others: their open cells alone, each home the best of them (the lowest cell
        # of equals, as argmax) and its probes the rest within MAX_MARGIN of it.
        r, c = _where(open_[few])
        r = few[r]
        score = self._exact(rows, r, c, upper, reach)
        order = np.lexsort((c, -score, r))  # by row, best first, lowest cell of equals
        r, c, score = r[order], c[order], score[order]
        lead = np.ones(len(r), dtype=bool)  # each row's first: its best
        lead[1:] = r[1:] != r[:-1]
        home[r[lead]] = c[lead]
        best = score[np.flatnonzero(lead)[np.cumsum(lead) - 1]]  # each row's best
        near = ~lead & (score >= best - MAX_MARGIN)
        parts.append((r[:0], r[near].astype(np.int32), c[near], (best - score)[near]))
        probe_rows = np.concatenate([p[1] for p in parts])
        probe_cells = np.concatenate([p[2] for p in parts]).astype(np.int32)
        order = np.lexsort((probe_cells, probe_rows))  # as assign_block gives them
        return (
            home,
            (probe_rows[order] + start).astype(np.int32),
            probe_cells[order],
            np.concatenate([p[3] for p in parts])[order].astype(np.float32),
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
) -> tuple[float, float | None, float | None]:
    """The probe margin between cells, the one between sub-cells (None: search cells
    whole) and the sketch floor (None: no sketches, ``SKETCH_MIN``).  Random cells (``PILOT_SHARE`` of the rows, more until they hold
    ``PILOT_PAIRS`` pairs) are searched whole against everything probing them up to
    ``MAX_MARGIN``, and each pair is marked with the margin it needed: the partitioned
    search's rule picks the cells' margin from those rings, and the sub-cells' margin keeps
    ``SUB_RECALL`` of the pairs found at it, the sketch floor all but ``SKETCH_MISS`` of
    them.  A pair may also be found from the other side
    (its home member probing the prober's cell), at a margin not seen here, so the margins
    are if anything wider than needed."""
    n = len(plan.home)
    sizes = np.bincount(plan.home, minlength=cells)
    order = rng.permutation(cells)
    held = np.cumsum(sizes[order])
    want = max(PILOT_SHARE * n, min(PILOT_MIN, n))
    taken = 0
    parts: list[_Needs] = []
    members = 0
    while taken < cells:
        upto = min(cells, int(np.searchsorted(held, want)) + 1)
        chosen = order[taken:upto]
        taken = upto
        members = int(held[taken - 1])
        parts.append(_pilot_pairs(rows, plan, cells, chosen, threshold, run))
        if sum(len(p.keys) for p in parts) >= PILOT_PAIRS or want >= n:
            break
        want *= 2
    needs = _Needs.merged(parts)
    cell_need = needs.per_pair()
    stats.pilot_pairs = len(cell_need)
    if len(cell_need) > DENSE_PAIRS * members:
        # Photos that all look alike: pairs everywhere; the per-photo cap decides.
        stats.rings = 1
        return MARGIN_STEP, None, None
    margin, stats.rings = _margin_from(cell_need)
    return margin, needs.sub_margin(margin), needs.sketch_floor(margin, rows.dim)


@dataclass
class _Needs:
    """Pairs the pilot found, one row per way it found each: the pair's key, the margin
    between cells that way needed, the one between sub-cells and the pair's sketch score
    in that cell (NaN: a cell too small for sketches)."""

    keys: np.ndarray
    cell: np.ndarray
    sub: np.ndarray
    sketch: np.ndarray

    @staticmethod
    def merged(parts: list[_Needs]) -> _Needs:
        return _Needs(
            np.concatenate([p.keys for p in parts]),
            np.concatenate([p.cell for p in parts]),
            np.concatenate([p.sub for p in parts]),
            np.concatenate([p.sketch for p in parts]),
        )

    def per_pair(self) -> np.ndarray:
        """Each pair's smallest margin between cells."""
        return _smallest_by_key(self.keys, self.cell)

    def sub_margin(self, margin: float) -> float | None:
        """The sub-cells' margin that keeps ``SUB_RECALL`` of the pairs found at ``margin``;
        None when too few pairs say."""
        ok = (self.cell <= margin + 1e-6) & ~np.isnan(self.sub)  # found in a split cell
        sub = _smallest_by_key(self.keys[ok], self.sub[ok])
        if len(sub) < SUB_PILOT_PAIRS:
            return None
        return float(np.quantile(sub, SUB_RECALL, method="higher")) + 1e-6

    def sketch_floor(self, margin: float, dim: int) -> float | None:
        """The sketch score that all but ``SKETCH_MISS`` of the pairs found at ``margin`` in
        cells searched through sketches reach, less ``SKETCH_SLACK`` spreads; None when too
        few pairs say, or when it is too low to be worth it (``SKETCH_LOWEST``)."""
        ok = (self.cell <= margin + 1e-6) & ~np.isnan(self.sketch)
        if np.count_nonzero(ok) < SKETCH_PILOT_PAIRS:
            return None
        slack = SKETCH_SLACK / np.sqrt(_sketch_dim(dim))
        floor = float(np.quantile(self.sketch[ok], SKETCH_MISS, method="lower") - slack)
        return floor if floor >= SKETCH_LOWEST else None


def _smallest_by_key(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    return values[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else values


def _pilot_pairs(
    rows: _Rows, plan: _Plan, cells: int, chosen: np.ndarray, threshold: float, run: _Runner
) -> _Needs:
    """Every pair of these cells' home members with each other and with their probers,
    with the margins each way needed (between cells: 0 both at home, else the prober's
    gap; between sub-cells: ``_Split.need``)."""
    n = len(plan.home)
    in_pilot = np.zeros(cells, dtype=bool)
    in_pilot[chosen] = True
    home_ids = np.flatnonzero(in_pilot[plan.home])
    probing = np.flatnonzero(in_pilot[plan.probe_cells])
    ids = np.union1d(home_ids, plan.probe_rows[probing])
    vectors = rows.take(ids)
    position = {int(cell): i for i, cell in enumerate(chosen.tolist())}
    home_by_cell: list[list[int]] = [[] for _ in chosen]
    for row, cell in zip(home_ids.tolist(), plan.home[home_ids].tolist(), strict=True):
        home_by_cell[position[cell]].append(row)
    probes_by_cell: list[list[int]] = [[] for _ in chosen]
    for k in probing.tolist():
        probes_by_cell[position[int(plan.probe_cells[k])]].append(k)

    def search(index: int) -> _Needs:
        home = np.array(home_by_cell[index], dtype=np.int64)
        members = _float32(vectors[np.searchsorted(ids, home)])
        k = np.array(probes_by_cell[index], dtype=np.int64)
        probers = plan.probe_rows[k].astype(np.int64)
        others = _float32(vectors[np.searchsorted(ids, probers)])
        split = _Split.of(members, others, int(chosen[index]))
        sketch = _Sketch(members) if len(members) >= SKETCH_MIN else None
        home_sketch = sketch.of(members) if sketch else None
        other_sketch = sketch.of(others) if sketch else None
        keys, cell_need, sub_need, sketch_score = [], [], [], []
        for i, j, _ in _compare_within(members, np.arange(len(home)), threshold):
            keys.append(home[i] * n + home[j])  # home is ascending: i < j, home[i] < home[j]
            cell_need.append(np.zeros(len(i), dtype=np.float32))
            sub_need.append(split.need_home(i, j) if split else _unsplit(len(i)))
            sketch_score.append(_dots(home_sketch, i, home_sketch, j))
        if len(k):
            local = np.arange(len(k))
            for a, j, _ in _compare(others, local, members, np.arange(len(home)), threshold):
                row, other = probers[a], home[j]
                keys.append(np.minimum(row, other) * n + np.maximum(row, other))
                cell_need.append(plan.probe_gaps[k[a]])
                sub_need.append(split.need_prober(a, j) if split else _unsplit(len(a)))
                sketch_score.append(_dots(other_sketch, a, home_sketch, j))
        if not keys:
            empty = np.empty(0, dtype=np.float32)
            return _Needs(np.empty(0, dtype=np.int64), empty, empty, empty)
        return _Needs(
            np.concatenate(keys),
            np.concatenate(cell_need),
            np.concatenate(sub_need),
            np.concatenate(sketch_score),
        )

    return _Needs.merged(list(run.map(search, range(len(chosen)))))


def _unsplit(count: int) -> np.ndarray:
    """The sub-cell margin of pairs in a cell searched whole: none (NaN)."""
    return np.full(count, np.nan, dtype=np.float32)


def _dots(
    left: np.ndarray | None, i: np.ndarray, right: np.ndarray | None, j: np.ndarray
) -> np.ndarray:
    """Row i of ``left`` dot row j of ``right`` for each (i, j); NaN without sketches."""
    if left is None or right is None:
        return _unsplit(len(i))
    return np.einsum("ij,ij->i", left[i], right[j]).astype(np.float32)


# ------------------------------------------------------------------------------ sketches


@functools.lru_cache(maxsize=4)
def _sketch_basis(dim: int) -> np.ndarray:
    """A fixed random orthonormal ``dim x _sketch_dim(dim)`` basis, scaled so that a
    sketch's dot product estimates the residuals' (cosine of unit residuals)."""
    width = _sketch_dim(dim)
    gaussian = np.random.default_rng([SEED, dim]).standard_normal((dim, width))
    basis, _ = np.linalg.qr(gaussian)
    return (basis * np.sqrt(dim / width)).astype(np.float32)


def _sketch_dim(dim: int) -> int:
    """A quarter of the dimensions, 32 to 256: a residual correlation of ~0.5 (a near copy
    at the 1280-d model's floor) then stands several deviations above a stranger's ~0."""
    return int(min(dim, max(32, min(256, dim // 4))))


class _Sketch:
    """Residuals from one cell's mean (its home members'), without their ``SKETCH_AXES``
    main directions, normalised and projected.  The main directions go because a cell may
    hold two or three subjects (k-means on a sample merges some): from their common mean,
    each subject's photos share a direction (towards their own subject) and their sketches
    would all score high; without it they are as unrelated as within one subject.  Within
    one subject the main directions of the residuals are noise: a few of hundreds."""

    def __init__(self, members: np.ndarray) -> None:
        self._centre = members.mean(axis=0, dtype=np.float32)
        basis = _sketch_basis(members.shape[1])
        self._axes = _main_axes(members[:: max(1, len(members) // SKETCH_SAMPLE)] - self._centre)
        self._basis = np.concatenate([basis, self._axes], axis=1)  # one product for both
        self._width = basis.shape[1]
        self._fold = self._axes.T @ basis  # what the axes add to a sketch
        self._centre_out = self._centre @ self._basis
        self._centre_norm = float(self._centre @ self._centre)

    def of(self, rows: np.ndarray) -> np.ndarray:
        # r = row - centre, r' = r - (r A) A^T (A: the axes, orthonormal); the sketch is
        # r' B / |r'| = (r B - (r A) A^T B) / sqrt(|r|^2 - |r A|^2): no rows x dim copy.
        out = rows @ self._basis - self._centre_out
        sketch, along = out[:, : self._width], out[:, self._width :]
        squares = np.einsum("ij,ij->i", rows, rows) - 2 * (rows @ self._centre)
        squares += self._centre_norm - np.einsum("ij,ij->i", along, along)
        sketch -= along @ self._fold
        return cast(np.ndarray, sketch / np.sqrt(np.maximum(squares, 1e-12))[:, None])


def _main_axes(residuals: np.ndarray) -> np.ndarray:
    """The ``SKETCH_AXES`` main directions of these residuals (``dim x SKETCH_AXES``,
    orthonormal), by a few rounds of subspace iteration from a fixed start."""
    dim = residuals.shape[1]
    axes = min(SKETCH_AXES, dim, len(residuals))
    start = np.random.default_rng([SEED, dim, 1]).standard_normal((dim, axes))
    q, _ = np.linalg.qr(start.astype(np.float32))
    for _ in range(SKETCH_ROUNDS):
        q, _ = np.linalg.qr(residuals.T @ (residuals @ q))
    return cast(np.ndarray, q.astype(np.float32))


def _sketched(
    members: np.ndarray,
    member_ids: np.ndarray,
    probers: np.ndarray,
    prober_ids: np.ndarray,
    threshold: float,
    floor: float,
    hits: list[Hits],
) -> float:
    """A cell's pairs (members with each other and with the probers) among those whose
    sketches score at least ``floor``, with their exact float32 cosines, added to ``hits``;
    returns the dot products that took (a sketch's for its share of the width)."""
    sketch = _Sketch(members)
    share = _sketch_dim(members.shape[1]) / members.shape[1]
    home = sketch.of(members)
    step = _rows_per_block(len(members))
    work = 0.0
    for start in range(0, len(members), step):
        stop = start + step
        sims = home[start:stop] @ home[start:].T  # this block with itself and every later one
        work += sims.size * share
        i, j = _where(sims >= floor)
        if len(i) > SKETCH_DENSE * sims.size:
            hits.append(
                _exact_block(
                    members[start:stop],
                    member_ids[start:stop],
                    members[start:],
                    member_ids[start:],
                    threshold,
                    upper=True,
                )
            )
            work += sims.size
            continue
        later = j > i  # both count from start
        i, j = i[later] + start, j[later] + start
        hits.append(_rescored(members, member_ids, i, members, member_ids, j, threshold))
    if not len(probers):
        return work
    away = sketch.of(probers)
    for start in range(0, len(probers), step):
        stop = start + step
        sims = away[start:stop] @ home.T
        work += sims.size * share
        i, j = _where(sims >= floor)
        if len(i) > SKETCH_DENSE * sims.size:
            hits.append(
                _exact_block(
                    probers[start:stop],
                    prober_ids[start:stop],
                    members,
                    member_ids,
                    threshold,
                    upper=False,
                )
            )
            work += sims.size
            continue
        hits.append(_rescored(probers, prober_ids, i + start, members, member_ids, j, threshold))
    return work


def _rescored(
    left: np.ndarray,
    left_ids: np.ndarray,
    i: np.ndarray,
    right: np.ndarray,
    right_ids: np.ndarray,
    j: np.ndarray,
    threshold: float,
) -> Hits:
    """The candidate pairs (left row i, right row j) scored exactly in float32, those at or
    above the threshold kept."""
    scores = np.empty(len(i), dtype=np.float32)
    for lo in range(0, len(i), RESCORE_PAIRS):
        hi = lo + RESCORE_PAIRS
        scores[lo:hi] = np.einsum("ij,ij->i", left[i[lo:hi]], right[j[lo:hi]])
    keep = scores >= threshold
    return left_ids[i[keep]], right_ids[j[keep]], scores[keep]


def _exact_block(
    left: np.ndarray,
    left_ids: np.ndarray,
    right: np.ndarray,
    right_ids: np.ndarray,
    threshold: float,
    *,
    upper: bool,
) -> Hits:
    """Every pair of ``left`` x ``right`` at or above the threshold, scored whole (only
    above the diagonal when ``upper``: left's row k is right's row k), at most
    ``MAX_PER_PHOTO`` per photo as the exact search keeps them."""
    sims = left @ right.T
    mask = sims >= threshold
    i, j = _strongest(sims, np.triu(mask, k=1) if upper else mask)
    return left_ids[i], right_ids[j], sims[i, j]


# ------------------------------------------------------------------------------ sub-cells


@dataclass
class _Split:
    """A big cell split again (spherical k-means on its home members, seeded by the cell so
    the pilot and the search split it alike): each member's sub-cell, and every member's
    and prober's score against every sub-centroid."""

    home_sub: np.ndarray
    home_scores: np.ndarray
    home_best: np.ndarray
    prober_scores: np.ndarray
    prober_best: np.ndarray

    @staticmethod
    def of(members: np.ndarray, probers: np.ndarray, cell: int) -> _Split | None:
        n = len(members)
        if n < SUB_MIN:
            return None
        rng = np.random.default_rng([SEED, cell])
        count = n // SUB_CELL
        centroids = members[np.sort(rng.choice(n, size=count, replace=False))]
        for _ in range(SUB_ITERATIONS):
            labels = np.argmax(members @ centroids.T, axis=1)
            order = np.argsort(labels, kind="stable")
            used, starts = np.unique(labels[order], return_index=True)
            centroids = centroids.copy()
            centroids[used] = np.add.reduceat(members[order], starts, axis=0)
            centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        scores = members @ centroids.T
        home_sub = np.argmax(scores, axis=1)
        others = probers @ centroids.T if len(probers) else np.empty((0, count), np.float32)
        return _Split(
            home_sub=home_sub,
            home_scores=scores,
            home_best=scores[np.arange(n), home_sub],
            prober_scores=others,
            prober_best=others.max(axis=1) if len(probers) else np.empty(0, np.float32),
        )

    def need_home(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The sub-margin at which members i and j meet: one visiting the other's sub-cell."""
        gap_i = self.home_best[i] - self.home_scores[i, self.home_sub[j]]
        gap_j = self.home_best[j] - self.home_scores[j, self.home_sub[i]]
        return np.minimum(gap_i, gap_j).astype(np.float32)

    def need_prober(self, a: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The sub-margin at which prober a visits member j's sub-cell."""
        return (self.prober_best[a] - self.prober_scores[a, self.home_sub[j]]).astype(np.float32)

    def pairs(
        self,
        members: np.ndarray,
        member_ids: np.ndarray,
        probers: np.ndarray,
        prober_ids: np.ndarray,
        margin: float,
        threshold: float,
    ) -> tuple[list[Hits], float] | None:
        """The cell's pairs, each sub-cell's members against each other and against the
        members and probers within ``margin`` of their best sub-cell, and the dot products
        that took; None when that would cost more than searching the cell whole
        (``SUB_WORTH``)."""
        count = self.home_scores.shape[1]
        home_visits = self.home_best[:, None] - self.home_scores <= margin
        home_visits[np.arange(len(members)), self.home_sub] = False
        prober_visits = self.prober_best[:, None] - self.prober_scores <= margin
        sizes = np.bincount(self.home_sub, minlength=count).astype(np.float64)
        visitors = home_visits.sum(axis=0) + prober_visits.sum(axis=0)
        whole = len(members) ** 2 / 2 + len(probers) * len(members)
        work = float(np.sum(sizes * sizes / 2 + visitors * sizes))
        if work > SUB_WORTH * whole:
            return None
        hits: list[Hits] = []
        for k in np.flatnonzero(sizes).tolist():
            mine = self.home_sub == k
            rows, ids = members[mine], member_ids[mine]
            hits.extend(_compare_within(rows, ids, threshold))
            guests_home, guests_away = home_visits[:, k], prober_visits[:, k]
            if guests_home.any() or guests_away.any():
                guests = np.concatenate([members[guests_home], probers[guests_away]])
                guest_ids = np.concatenate([member_ids[guests_home], prober_ids[guests_away]])
                hits.extend(_compare(guests, guest_ids, rows, ids, threshold))
        return hits, work


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


# ------------------------------------------------------------------------------ passes


def _plan_passes(cell_bytes: np.ndarray, budget: int) -> list[np.ndarray]:
    """The cells (with rows to search) in runs whose rows take at most ``budget`` bytes
    together, in cell order; a cell bigger than the budget is a pass alone."""
    passes: list[np.ndarray] = []
    chosen: list[int] = []
    held = 0
    for cell in np.flatnonzero(cell_bytes).tolist():
        size = int(cell_bytes[cell])
        if chosen and held + size > budget:
            passes.append(np.array(chosen, dtype=np.int64))
            chosen, held = [], 0
        chosen.append(cell)
        held += size
    if chosen:
        passes.append(np.array(chosen, dtype=np.int64))
    return passes


@dataclass
class _Pass:
    """The rows one pass gathers: every home member and every prober of its cells, by cell
    (``bounds``), ascending ids within one: a row probing two of the cells is there twice."""

    cells: np.ndarray
    ids: np.ndarray
    at_home: np.ndarray
    bounds: np.ndarray
    slots: np.ndarray | None = None  # where each row is in the pass's data (None: in order)

    @staticmethod
    def of(chosen: np.ndarray, plan: _Plan, cells: int, keep: np.ndarray) -> _Pass:
        """Cells ``chosen`` (ascending) of ``cells``; ``keep``: the probes within the margin."""
        home, probe_rows, probe_cells = plan.home, plan.probe_rows, plan.probe_cells
        in_pass = np.zeros(cells, dtype=bool)
        in_pass[chosen] = True
        members = np.flatnonzero(in_pass[home])
        probing = np.flatnonzero(in_pass[probe_cells] & keep)
        ids = np.concatenate([members, probe_rows[probing]]).astype(np.int64)
        cell = np.concatenate([home[members], probe_cells[probing]]).astype(np.int64)
        order = np.lexsort((ids, cell))
        ids, cell = ids[order], cell[order]
        bounds = np.searchsorted(cell, np.append(chosen, np.iinfo(np.int64).max))
        return _Pass(chosen, ids, home[ids] == cell, bounds)


def _gather(
    rows: _Rows, chosen: _Pass, backwards: bool, budget: _Budget | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The pass's rows in row order, and where each of the pass's (in its order) is among
    them, from one sequential read of the matrix, a block at a time (only from each block's
    first wanted row to its last; where that is mostly rows not wanted, ``SPARSE_READ``, the
    wanted ones alone), ``backwards`` when the last read went forwards: the part of the file
    it read last is what the page cache still holds (10M x 1280 is 25.6 GB; the benchmark's
    disk sustains ~50 MB/s at times).  Rows are written in the order they are read, so the
    buffer's pages are taken as they fill; each block waits for room in ``budget``."""
    by_row = np.argsort(chosen.ids, kind="stable")
    wanted = chosen.ids[by_row]
    slots = np.empty(len(by_row), dtype=np.int64)
    slots[by_row] = np.arange(len(by_row))
    data = np.empty((len(wanted), rows.dim), dtype=rows.dtype)  # no pages until written
    blocks = np.unique(wanted // BLOCK_ROWS).tolist()
    bounds = np.searchsorted(wanted, np.array([blocks, [b + 1 for b in blocks]]) * BLOCK_ROWS)
    buffer = np.empty((min(BLOCK_ROWS, rows.n), rows.dim), dtype=rows.dtype)
    own = 0
    for index in range(len(blocks) - 1, -1, -1) if backwards else range(len(blocks)):
        lo, hi = int(bounds[0, index]), int(bounds[1, index])
        size = (hi - lo) * rows.row_bytes
        if budget is not None and not budget.take(size, own):
            break  # the search stopped
        own += size
        first, last = int(wanted[lo]), int(wanted[hi - 1])
        if (hi - lo) * SPARSE_READ < last + 1 - first:
            data[lo:hi] = rows.take(wanted[lo:hi])  # the rows alone
        else:
            block = rows.block(first, last + 1, buffer)
            data[lo:hi] = block[wanted[lo:hi] - first]
    return data, slots


def _search_pass(
    chosen: _Pass,
    data: np.ndarray,
    search: _CellSearch,
    found: _Found,
    run: _Runner,
    stats: SearchStats,
    n: int,
) -> None:
    """Within each of the pass's cells: home members with each other and with the rows
    probing the cell (``_CellSearch``); ``data`` is the pass's rows (``_gather``)."""
    starts, ends = chosen.bounds[:-1], chosen.bounds[1:]
    homes = np.concatenate([[0], np.cumsum(chosen.at_home)])
    sizes = (homes[ends] - homes[starts]).astype(np.float64)
    work = sizes * (ends - starts - sizes) + sizes * sizes / 2

    def search_chunk(chunk: list[int]) -> tuple[list[Hits], float]:
        hits: list[Hits] = []
        done = 0.0
        for c in chunk:
            lo, hi = int(starts[c]), int(ends[c])
            mine, ids = chosen.at_home[lo:hi], chosen.ids[lo:hi]
            at = np.arange(lo, hi) if chosen.slots is None else chosen.slots[lo:hi]
            done += search.cell(
                int(chosen.cells[c]),
                (data[at[mine]].astype(np.float32), ids[mine]),  # one copy each
                (data[at[~mine]].astype(np.float32), ids[~mine]),
                work[c],
                hits,
            )
        return hits, done

    for hits, done in run.map(search_chunk, _chunks(work)):
        for hit in hits:
            found.add(hit)
        stats.work_share += done / (n * (n - 1) / 2)


@dataclass
class _CellSearch:
    """How a cell is searched: through sketches when the pilot set a sketch floor and the
    cell is big enough, else split into sub-cells when the pilot set their margin and that
    is worth it, else whole."""

    threshold: float
    sub_margin: float | None
    sketch_floor: float | None

    def cell(
        self,
        cell: int,
        home: tuple[np.ndarray, np.ndarray],
        probing: tuple[np.ndarray, np.ndarray],
        work: float,
        hits: list[Hits],
    ) -> float:
        """The cell's pairs added to ``hits``; returns the dot products it took (in
        full-width products: a sketch's count for its share of the width)."""
        (members, member_ids), (others, other_ids) = home, probing
        if self.sketch_floor is not None and len(members) >= SKETCH_MIN:
            return _sketched(
                members, member_ids, others, other_ids, self.threshold, self.sketch_floor, hits
            )
        split = _Split.of(members, others, cell) if self.sub_margin is not None else None
        if split is not None and self.sub_margin is not None:
            found_here = split.pairs(
                members, member_ids, others, other_ids, self.sub_margin, self.threshold
            )
            if found_here is not None:
                hits.extend(found_here[0])
                return found_here[1]
        hits.extend(_compare_within(members, member_ids, self.threshold))
        if len(others):
            hits.extend(_compare(others, other_ids, members, member_ids, self.threshold))
        return work
