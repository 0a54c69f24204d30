"""The archive search (engine/archive.py): a memory-mapped float16 matrix searched a pass
(the cells whose rows fit in its memory) at a time finds the exact search's pairs, never a
pair below the threshold, keeps its rows in float16 and its reads in blocks, writes
nothing, and group_photos uses it only above its limit."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from photodup_tui.engine import archive, grouping, neighbours
from photodup_tui.engine.grouping import group_photos
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.neighbours import MAX_PER_PHOTO, SearchStats
from photodup_tui.engine.settings import ScanSettings, Thresholds
from photodup_tui.engine.types import Group
from tests.engine.helpers import photo
from tests.engine.test_neighbours import library, near_copies

Pairs = set[tuple[int, int]]


@pytest.fixture(autouse=True)
def small_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks and passes, so that a test-sized matrix streams through many of each."""
    monkeypatch.setattr(archive, "BLOCK_ROWS", 4096)
    monkeypatch.setattr(archive, "PASS_BYTES", 2 * 1024 * 1024)


def on_disk(vectors: np.ndarray, folder: Path) -> np.memmap:
    return archive.write_matrix(list(vectors), folder / "matrix.f16")


def search(
    matrix: np.ndarray, threshold: float, folder: Path, memory: int | None = None
) -> tuple[Any, SearchStats]:
    stats = SearchStats()
    hits = archive.archive_arrays(matrix, threshold, memory=memory, stats=stats)
    assert [p.name for p in folder.iterdir()] in ([], ["matrix.f16"])  # nothing written
    return hits, stats


def truth(vectors: np.ndarray, threshold: float) -> Pairs:
    """Every pair at or above the threshold, by brute force a block of rows at a time."""
    full = vectors.astype(np.float32)
    pairs: Pairs = set()
    for start in range(0, len(full), 2048):
        i, j = np.nonzero(full[start : start + 2048] @ full.T >= threshold)
        i += start
        pairs |= set(zip(i[i < j].tolist(), j[i < j].tolist(), strict=True))
    return pairs


def as_pairs(a: np.ndarray, b: np.ndarray) -> Pairs:
    return set(zip(a.tolist(), b.tolist(), strict=True))


def test_finds_the_exact_searchs_pairs_with_their_exact_cosines(tmp_path: Path) -> None:
    vectors = library(20_000, 256, 0.80, seed=3)
    matrix = on_disk(vectors, tmp_path)
    (a, b, scores), stats = search(matrix, 0.80, tmp_path)
    want = truth(vectors, 0.80)
    found = as_pairs(a, b)
    assert stats.method == "archive" and stats.cells > 100
    assert len(want) > 3000
    assert len(found & want) >= 0.99 * len(want)
    assert found <= want  # no false pair
    full = vectors.astype(np.float32)
    assert np.allclose(scores, np.sum(full[a] * full[b], axis=1), atol=1e-6)
    assert np.all(a < b) and np.all(np.diff(a * len(vectors) + b) > 0)  # sorted, unique
    assert stats.passes >= 4  # 20,000 x 256 float16 is 10 MB, 2 MB a pass


def test_the_assignment_on_head_coordinates_gives_every_home_and_probe() -> None:
    """Centroids scored on the rows' first coordinates, the rest bounded (Cauchy-Schwarz):
    the same home cell and probes (MAX_MARGIN) as scoring every coordinate, whatever the
    head, for rows near one centroid (few cells left to score exactly) and rows between
    two (a midpoint centroid: every cell scored)."""
    vectors = library(12_000, 256, 0.80, topics=30, seed=12).astype(np.float32)
    rng = np.random.default_rng(12)
    picks = vectors[rng.choice(len(vectors), 60, replace=False)]
    middles = picks[:10] + picks[10:20]
    centroids = np.concatenate([picks, middles / np.linalg.norm(middles, axis=1)[:, None]])
    want = neighbours.assign_block(vectors, centroids, 1_000)
    assert len(want[1]) > 1_000  # rows with probes
    for head in (16, 128, 192, 255):
        scorer = archive._HeadScores(centroids, head)
        got = scorer.assign(vectors, 1_000)
        for k in range(3):
            assert np.array_equal(got[k], want[k]), (head, k)
        assert np.allclose(got[3], want[3], atol=1e-5)
        _, _, open_ = scorer.bounded(vectors)
        counts = np.count_nonzero(open_, axis=1)
        if head >= 192:  # most rows left with a few cells to score, some with many
            assert np.mean(counts <= archive.ASSIGN_FEW) > 0.5
            assert np.any((counts > 1) & (counts <= archive.ASSIGN_FEW))
            assert np.any(counts > archive.ASSIGN_FEW)


def test_a_head_assignment_gives_the_pairs_of_a_whole_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = library(20_000, 256, 0.80, seed=13)
    matrix = on_disk(vectors, tmp_path)
    monkeypatch.setattr(archive, "ASSIGN_WORTH", 0.0)  # never worth it: every coordinate
    (a1, b1, s1), whole = search(matrix, 0.80, tmp_path)
    monkeypatch.setattr(archive, "ASSIGN_WORTH", 10.0)  # always
    monkeypatch.setattr(archive, "ASSIGN_HEADS", (0.5,))
    (a2, b2, s2), head = search(matrix, 0.80, tmp_path)
    assert whole.assign_head == 256 and head.assign_head == 128
    assert len(a1) > 3000
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(s1, s2)


def test_big_cells_are_split_and_still_give_the_exact_searchs_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells of ~1,000 photos (as 10M photos in 1,000 cells have ~10,000) split into
    sub-cells: far fewer dot products, the same pairs but a few, never a false one."""
    vectors = library(20_000, 128, 0.80, topics=40, seed=6)
    matrix = on_disk(vectors, tmp_path)
    monkeypatch.setattr(archive, "MAX_CELLS", 20)
    monkeypatch.setattr(archive, "SUB_MIN", 10**9)
    (a0, b0, _), whole = search(matrix, 0.80, tmp_path)
    monkeypatch.setattr(archive, "SUB_MIN", 400)
    monkeypatch.setattr(archive, "SUB_CELL", 150)
    monkeypatch.setattr(archive, "SUB_PILOT_PAIRS", 100)
    (a, b, scores), split = search(matrix, 0.80, tmp_path)
    want = truth(vectors, 0.80)
    found = as_pairs(a, b)
    assert whole.sub_margin is None and split.sub_margin is not None
    assert split.work_share < 0.7 * whole.work_share
    assert as_pairs(a0, b0) <= want and len(as_pairs(a0, b0)) >= 0.99 * len(want)
    assert found <= want  # no false pair
    assert len(found) >= 0.99 * len(want)
    full = vectors.astype(np.float32)
    assert np.allclose(scores, np.sum(full[a] * full[b], axis=1), atol=1e-6)


def test_big_cells_are_searched_through_sketches_with_exact_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cells of ~1,000 photos around one subject each (10M photos in 1,000 cells have
    ~10,000, whose sub-cells barely help): their pairs are compared as residual sketches, a
    quarter of the width, and only those passing the pilot's sketch floor are scored
    exactly.  The exact search's pairs but a few, never a false one, exact cosines."""
    vectors = library(12_000, 512, 0.80, topics=12, seed=8)
    matrix = on_disk(vectors, tmp_path)
    monkeypatch.setattr(archive, "MAX_CELLS", 12)
    monkeypatch.setattr(archive, "SKETCH_MIN", 10**9)
    (a0, b0, _), whole = search(matrix, 0.80, tmp_path)
    monkeypatch.setattr(archive, "SKETCH_MIN", 400)
    monkeypatch.setattr(archive, "SKETCH_PILOT_PAIRS", 100)
    (a, b, scores), sketched = search(matrix, 0.80, tmp_path)
    want = truth(vectors, 0.80)
    found = as_pairs(a, b)
    assert whole.sketch_floor is None
    assert sketched.sketch_floor is not None and sketched.sketch_floor > 0.15
    assert sketched.work_share < 0.5 * whole.work_share  # the sketches are a quarter wide
    assert len(want) > 1000
    assert as_pairs(a0, b0) <= want and len(as_pairs(a0, b0)) >= 0.99 * len(want)
    assert found <= want  # no false pair
    assert len(found) >= 0.99 * len(want)
    full = vectors.astype(np.float32)
    assert np.allclose(scores, np.sum(full[a] * full[b], axis=1), atol=1e-6)
    assert np.all(a < b) and np.all(np.diff(a * len(vectors) + b) > 0)


@pytest.fixture
def whole_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per block the sketched search scored whole (``archive._exact_block``)."""
    calls: list[int] = []
    real = archive._exact_block

    def spy(*args: Any, **options: Any) -> Any:
        calls.append(1)
        return real(*args, **options)

    monkeypatch.setattr(archive, "_exact_block", spy)
    return calls


def test_a_cell_of_two_subjects_is_still_searched_through_sketches(
    whole_blocks: list[int],
) -> None:
    """k-means merges some subjects into one cell (10M photos of 1,000 subjects: ~100 cells
    of two).  From their common mean each subject's photos share a direction; the sketches
    leave the cell's main directions out, so strangers still score low: no block falls
    back to being scored whole, and the pairs are the exact search's."""
    vectors = library(6_000, 512, 0.80, topics=2, seed=11)
    full = vectors.astype(np.float32)
    ids = np.arange(len(full))
    hits: list[Any] = []
    work = archive._sketched(full, ids, full[:0], ids[:0], 0.80, 0.3, hits)
    assert not whole_blocks
    assert work < 0.5 * len(full) ** 2 / 2
    a, b, scores = (np.concatenate([h[k] for h in hits]) for k in range(3))
    found, want = as_pairs(np.minimum(a, b), np.maximum(a, b)), truth(vectors, 0.80)
    assert len(want) > 500
    assert found <= want and len(found) >= 0.99 * len(want)
    assert np.allclose(scores, np.sum(full[a] * full[b], axis=1), atol=1e-6)


def test_a_sketch_floor_that_lets_through_most_pairs_scores_them_exactly(
    whole_blocks: list[int],
) -> None:
    """Photos that all look alike: nearly every pair of sketches passes a low floor, so
    the blocks are scored whole (and cut per photo) instead of pair by pair."""
    rng = np.random.default_rng(5)
    centre = rng.standard_normal(128).astype(np.float32)
    vectors = centre + 0.3 * rng.standard_normal((1_500, 128)).astype(np.float32) / np.sqrt(128)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(len(vectors))
    hits: list[Any] = []
    work = archive._sketched(vectors, ids, vectors[:0], ids[:0], 0.9, -1.0, hits)
    assert whole_blocks
    assert work >= len(vectors) ** 2 / 2  # scored whole, and counted so
    a, b, scores = (np.concatenate([h[k] for h in hits]) for k in range(3))
    full = vectors @ vectors.T
    assert np.count_nonzero(np.triu(full >= 0.9, k=1)) > 100_000
    assert 1_000 < len(a) <= 2 * MAX_PER_PHOTO * len(vectors)  # cut per photo
    assert np.all(a < b) and np.all(scores >= 0.9)
    assert np.allclose(scores, full[a, b], atol=1e-6)


def test_pairs_just_below_the_threshold_are_never_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    background = library(12_000, 128, 0.8, seed=2).astype(np.float32)
    picked = rng.choice(len(background), 600, replace=False)
    above = near_copies(background[picked[:300]], np.full(300, 0.8 + 2e-3, np.float32), rng)
    below = near_copies(background[picked[300:]], np.full(300, 0.8 - 2e-3, np.float32), rng)
    vectors = np.concatenate([background, above, below]).astype(np.float16)
    (a, b, scores), _ = search(on_disk(vectors, tmp_path), 0.8, tmp_path)
    planted = [(int(p), len(background) + k) for k, p in enumerate(picked.tolist())]
    found = as_pairs(a, b)
    assert len(found & set(planted[:300])) >= 0.99 * 300
    assert not found & set(planted[300:])
    assert np.all(scores >= 0.8)
    full = vectors.astype(np.float32)
    assert np.all(np.sum(full[a] * full[b], axis=1) >= 0.8)


def test_streams_float16_blocks_and_gathers_passes_within_their_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matrix is read a block (or a sampled run) at a time, never whole; the first
    pass's rows are copied as the assignment reads them (in EARLY_GROUPS passes), each
    later pass reads the matrix again; each pass holds its cells' rows in float16, within
    its memory but for a cell bigger than it, every home member once and every prober once
    per cell it probes."""
    vectors = library(20_000, 128, 0.80, seed=5)
    matrix = on_disk(vectors, tmp_path)
    reads: list[int] = []
    buffers: set[int] = set()  # the arrays blocks were read into
    directions: list[bool] = []
    gathered: list[Any] = []
    searched: list[tuple[Any, np.ndarray]] = []
    block, gather, search_pass = archive._Rows.block, archive._gather, archive._search_pass

    def counted_block(self: Any, start: int, stop: int, into: Any = None) -> np.ndarray:
        reads.append(stop - start)
        if into is not None:
            buffers.add(id(into))
        return block(self, start, stop, into)

    def seen_gather(rows: Any, part: Any, backwards: bool, budget: Any = None) -> Any:
        gathered.append(part)
        directions.append(backwards)
        return gather(rows, part, backwards, budget)

    def seen_search_pass(part: Any, data: np.ndarray, *args: Any) -> None:
        searched.append((part, data))
        search_pass(part, data, *args)

    monkeypatch.setattr(archive._Rows, "block", counted_block)
    monkeypatch.setattr(archive, "_gather", seen_gather)
    monkeypatch.setattr(archive, "_search_pass", seen_search_pass)
    (a, _, _), stats = search(matrix, 0.80, tmp_path)
    assert len(a) > 0
    assert max(reads) <= archive.BLOCK_ROWS < len(vectors)
    early = archive.EARLY_GROUPS
    assert len(searched) == stats.passes == stats.reads + early >= early + 4
    # The first passes read nothing: the assignment kept their rows.
    assert gathered == [part for part, _ in searched[early:]]
    # The assignment read forwards; then backwards, forwards, ...: each read starts with
    # the part of the file the last read ended with (what the page cache holds).
    assert directions == [k % 2 == 0 for k in range(stats.reads)]
    # One buffer a thread for the assignment and for each read: not a fresh array a block.
    assert 0 < len(buffers) <= 2 + stats.reads < len(reads) // 2
    entries = 0
    for index, (part, data) in enumerate(searched):
        rows = data[part.slots]
        assert data.dtype == np.float16
        assert np.array_equal(rows, vectors[part.ids])  # each row where the pass says
        # The first pass's cells were sized on the k-means sample: about an even share.
        room = archive.EARLY_ROOM / early if index < early else 1
        assert rows.nbytes <= room * archive.PASS_BYTES or len(part.cells) == 1
        entries += len(part.ids)
    cells = np.concatenate([part.cells for part, _ in searched])
    assert len(np.unique(cells)) == len(cells)  # each cell searched in one pass only
    assert entries == round(len(vectors) * stats.probes_per_vector)


def test_the_next_pass_is_read_while_the_first_is_searched_within_the_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first pass's groups are searched one after another, each freeing its rows; the
    next pass's rows are read meanwhile, never holding more than the memory beside the
    rows still held (a block at a time)."""
    vectors = library(20_000, 128, 0.80, seed=5)
    matrix = on_disk(vectors, tmp_path)
    read_some = threading.Event()
    read_during: list[bool] = []
    held: list[int] = []
    block, search_pass, take = archive._Rows.block, archive._search_pass, archive._Budget.take

    def counted_block(self: Any, start: int, stop: int, into: Any = None) -> np.ndarray:
        if threading.current_thread().name == "archive-read":
            read_some.set()
        return block(self, start, stop, into)

    def waiting_search_pass(part: Any, *args: Any) -> None:
        if len(read_during) < archive.EARLY_GROUPS:  # one of the first pass's groups
            read_during.append(len(read_during) == 0 or read_some.wait(10))
        search_pass(part, *args)

    def seen_take(self: Any, size: int, own: int) -> bool:
        done = take(self, size, own)
        held.append(self._held - size)  # what was held beside this block
        return done

    monkeypatch.setattr(archive._Rows, "block", counted_block)
    monkeypatch.setattr(archive, "_search_pass", waiting_search_pass)
    monkeypatch.setattr(archive._Budget, "take", seen_take)
    (a, _, _), stats = search(matrix, 0.80, tmp_path)
    assert len(a) > 0 and stats.reads >= 4
    assert read_during == [True] * archive.EARLY_GROUPS  # a read began before the 2nd
    assert held and max(held) <= archive.PASS_BYTES


def test_the_first_pass_copied_by_the_assignment_gives_the_pairs_of_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All the rows in one pass: the assignment keeps them, no read follows.  With no room
    to keep them (the copy overflows and is given up), the pass reads the matrix: the same
    rows in the same order, so the same pairs and scores."""
    vectors = library(20_000, 128, 0.80, seed=7)
    matrix = on_disk(vectors, tmp_path)
    monkeypatch.setattr(archive, "EARLY_GROUPS", 1)
    (a1, b1, s1), kept = search(matrix, 0.80, tmp_path, memory=2**40)
    monkeypatch.setattr(archive, "EARLY_ROOM", 0.0)  # room for one block's rows
    (a2, b2, s2), read = search(matrix, 0.80, tmp_path, memory=2**40)
    assert (kept.passes, kept.reads) == (1, 0)
    assert (read.passes, read.reads) == (1, 1)
    assert len(a1) > 3000
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(s1, s2)


def test_many_passes_give_the_same_pairs_as_one(tmp_path: Path) -> None:
    """Gathering the cells a few at a time (2 MB of rows a pass) or all at once (one pass)
    searches each cell with the same rows in the same order: the same pairs, scores."""
    vectors = library(20_000, 128, 0.80, seed=7)
    matrix = on_disk(vectors, tmp_path)
    (a1, b1, s1), one = search(matrix, 0.80, tmp_path, memory=2**40)
    (a2, b2, s2), many = search(matrix, 0.80, tmp_path)
    assert one.reads == 0 and many.passes >= 4 and many.reads >= 3
    assert len(a1) > 3000
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(s1, s2)


def test_a_cell_bigger_than_a_pass_is_searched_in_a_pass_alone(tmp_path: Path) -> None:
    """Memory for less than one cell's rows: every cell is a pass of its own (over budget),
    and the pairs are still those of one pass."""
    vectors = library(8_000, 64, 0.85, seed=9)
    matrix = on_disk(vectors, tmp_path)
    (a1, b1, s1), whole = search(matrix, 0.85, tmp_path, memory=2**40)
    (a2, b2, s2), alone = search(matrix, 0.85, tmp_path, memory=1)
    assert whole.reads == 0 and alone.passes == alone.cells > 1  # every cell has members
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.array_equal(s1, s2)


def test_a_pass_of_few_rows_reads_those_rows_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that wants a few rows of each block (the remainder after full passes) reads
    just those (each run of consecutive rows at once), not the blocks they lie in."""
    vectors = library(20_000, 64, 0.85, seed=4)
    rows = archive._Rows(on_disk(vectors, tmp_path))
    home = np.arange(len(vectors)) % 50
    probe_rows = np.array([7, 8, 9, 12_345], dtype=np.int32)
    probe_cells = np.array([3, 3, 1, 3], dtype=np.int32)
    plan = archive._Plan(home, probe_rows, probe_cells, np.zeros(4, np.float32))
    part = archive._Pass.of(np.array([3]), plan, 50, np.ones(4, dtype=bool))
    read: list[int] = []
    block = archive._Rows.block

    def counted_block(self: Any, start: int, stop: int, into: Any = None) -> np.ndarray:
        read.append(stop - start)
        return block(self, start, stop, into)

    monkeypatch.setattr(archive._Rows, "block", counted_block)
    data, slots = archive._gather(rows, part, False)
    data = data[slots]
    rows.close()
    want = np.r_[np.arange(3, len(vectors), 50), [7, 8, 12_345]]  # 9 probes another cell
    assert sorted(part.ids.tolist()) == sorted(want.tolist())
    assert np.array_equal(data, vectors[part.ids])
    assert part.at_home.sum() == len(want) - 3
    assert sum(read) == len(want)  # only the wanted rows ...
    assert len(read) == len(want) - 1  # ... 7 and 8 in one read


def test_a_pass_read_backwards_reads_its_blocks_from_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = library(20_000, 64, 0.85, seed=4)
    rows = archive._Rows(on_disk(vectors, tmp_path))
    plan = archive._Plan(
        np.arange(len(vectors)) % 2, *(np.empty(0, t) for t in (np.int32, np.int32, np.float32))
    )
    part = archive._Pass.of(np.array([0, 1]), plan, 2, np.empty(0, dtype=bool))
    starts: list[int] = []
    block = archive._Rows.block

    def counted_block(self: Any, start: int, stop: int, into: Any = None) -> np.ndarray:
        starts.append(start)
        return block(self, start, stop, into)

    monkeypatch.setattr(archive._Rows, "block", counted_block)
    for backwards in (False, True):
        starts.clear()
        data, slots = archive._gather(rows, part, backwards)
        assert np.array_equal(data[slots], vectors[part.ids])
        assert len(starts) == -(-len(vectors) // archive.BLOCK_ROWS) > 1
        assert starts == sorted(starts, reverse=backwards)
    rows.close()


def test_passes_are_runs_of_cells_within_the_memory() -> None:
    sizes = np.array([5, 0, 3, 4, 20, 1])
    passes = archive._plan_passes(sizes, 8)
    assert [p.tolist() for p in passes] == [[0, 2], [3], [4], [5]]  # 20 > 8: alone
    assert archive._plan_passes(np.zeros(3, dtype=np.int64), 8) == []
    assert [p.tolist() for p in archive._plan_passes(sizes, 10**6)] == [[0, 2, 3, 4, 5]]


def test_an_in_memory_matrix_gives_the_same_pairs(tmp_path: Path) -> None:
    vectors = library(8_000, 64, 0.85, seed=9)
    (a1, b1, s1), _ = search(on_disk(vectors, tmp_path), 0.85, tmp_path)
    (a2, b2, s2), _ = search(vectors, 0.85, tmp_path)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2) and np.allclose(s1, s2)


def test_cancel_stops_between_chunks(tmp_path: Path) -> None:
    import threading

    vectors = library(8_000, 64, 0.85, seed=2)
    cancel = threading.Event()
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            cancel.set()

    a, _, _ = archive.archive_arrays(on_disk(vectors, tmp_path), 0.85, cancel=cancel, tick=tick)
    assert len(ticks) == 3  # nothing ran after the cancel was seen
    assert len(a) < len(truth(vectors, 0.85))


def test_tiny_inputs(tmp_path: Path) -> None:
    for rows in (np.empty((0, 8), np.float16), np.ones((1, 8), np.float16)):
        a, b, scores = archive.archive_arrays(rows, 0.5)
        assert len(a) == len(b) == len(scores) == 0


# ------------------------------------------------------------------------------ grouping


THRESHOLDS = Thresholds(near_cosine=0.95, near_phash=10, similar_cosine=0.85, similar_phash=None)
RULES = KeepRules(ScanSettings())


def shapes(groups: list[Group]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    return [
        (g.kind.value, [(m.photo.path, m.action.value, str(m.verdict)) for m in g.members])
        for g in groups
    ]


def planted_library() -> tuple[list[Any], dict[str, np.ndarray]]:
    vectors = library(6_000, 64, 0.85, seed=4)
    photos = [photo(f"/a/{i:05d}.jpg", width=4000 - i % 7, phash=i % 3) for i in range(6_000)]
    return photos, {p.path: v for p, v in zip(photos, vectors, strict=True)}


def test_group_photos_searches_an_archive_only_above_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos, embeddings = planted_library()
    calls: list[int] = []
    real = grouping.archive_arrays

    def spy(matrix: np.ndarray, *args: Any, **options: Any) -> Any:
        calls.append(len(matrix))
        assert isinstance(matrix, np.memmap) and matrix.dtype == np.float16
        return real(matrix, *args, **options)

    monkeypatch.setattr(grouping, "archive_arrays", spy)
    small = group_photos(photos, embeddings, THRESHOLDS, RULES)
    assert calls == []  # the library's own path, unchanged
    big = group_photos(
        photos, embeddings, THRESHOLDS, RULES, archive_limit=1_000, archive_dir=tmp_path
    )
    assert calls == [6_000]
    assert len(small) > 100
    assert shapes(big) == shapes(small)
    assert list(tmp_path.iterdir()) == []  # matrix and buckets removed
