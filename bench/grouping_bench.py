"""Grouping benchmark: the engine's neighbour search + grouping on synthetic embeddings.

Usage::

    python bench/grouping_bench.py [--sizes 20000:1280,100000:1280] [--queries 2000]
                                   [--budget 240] [--out bench/results/grouping.md]
    python bench/grouping_bench.py --sizes 1000000:512 --budget 900

Each size ``N:DIM`` runs in a fresh process, so its peak RSS is its own.  The process first
builds what a scan of N photos holds when it starts grouping: N ``Photo`` records and a dict
of N separate float16 embeddings, L2-normalised and rounded exactly as the scan keeps them
(``cache.quantise``).  Embeddings are drawn around 1,000 "topics" (same-topic cosine about
0.5, like real photo embeddings, not the near-orthogonal noise of uniform random vectors);
20% of the photos belong to planted duplicate clusters of 2 to 4 (cosine to their original
spread evenly from the model's lowest threshold to 0.995, pHash a few bits apart, some
downscaled).

Then ``group_photos`` runs with the engine's default settings for a model of that dimension
(1280: the built-in EfficientNet-Lite0; 512: a CLIP ViT-B model).  Pair recall is measured
against exact search on ``--queries`` random photos: every pair with one of them at or above
the cosine floor, found by brute force on the very matrix the engine searched, must be among
the engine's pairs.  The brute-force check is excluded from the times.  Times are wall clock
and, beside them, the process's CPU time: on a shared machine the CPU time is the steadier
of the two (each row has the load average).  Peak RSS counts from when the library is built
(Linux VmHWM, reset then): the photos and embeddings count, generating them does not.

1,000,000 photos use dimension 512 (CLIP), not 1280: 1M x 1280 float16 is 2.6 GB by itself,
most of the 4 GB budget before anything else is counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, emit, machine_line, markdown_table, say, verdict
from archive_data import FLOOR_FOR_DIM

from photodup_tui.engine import grouping
from photodup_tui.engine.cache import quantise
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.neighbours import Hits, SearchStats
from photodup_tui.engine.settings import ScanSettings, Thresholds
from photodup_tui.engine.types import FileStat, Photo

DEFAULT_SIZES = "20000:1280,100000:1280"
MODEL_FOR_DIM = {1280: "builtin:efficientnet_lite0/imagenet", 512: "clip:ViT-B-32/openai"}
TOPICS = 1000
PLANTED = 0.20  # share of photos in planted duplicate clusters
CHUNK = 20_000  # rows generated at a time, so generation never outgrows the engine
CHECK_ROWS = 8_192  # library rows per brute-force matrix product (against every query)

#: Targets: (seconds, GiB) by size; pair recall >= 99% of exact search everywhere.
TIME_TARGETS = {100_000: 10.0, 1_000_000: 60.0}
MEMORY_TARGET_GIB = {1_000_000: 4.0}
RECALL_TARGET = 0.99


# ------------------------------------------------------------------------------ the library


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _quantised(rows: np.ndarray) -> np.ndarray:
    """Unit rows as the scan holds them (``cache.quantise``: float16)."""
    return quantise(_unit(rows))


def synthetic_library(
    n: int, dim: int, floor: float, rng: np.random.Generator
) -> tuple[list[Photo], dict[str, np.ndarray]]:
    topics = _unit(rng.standard_normal((TOPICS, dim), dtype=np.float32))
    photos: list[Photo] = []
    embeddings: dict[str, np.ndarray] = {}
    originals = int(n * (1 - PLANTED / 2.5))  # clusters average 3 photos: 2.5 copies per 3
    hashes = rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    base_rows: list[np.ndarray] = []
    for start in range(0, originals, CHUNK):
        count = min(CHUNK, originals - start)
        picked = topics[rng.integers(0, TOPICS, count)]
        noise = rng.standard_normal((count, dim), dtype=np.float32) / np.sqrt(dim)
        rows = _quantised(picked + noise)  # same-topic cosine about 0.5
        base_rows.append(rows)
        for offset, row in enumerate(rows):
            i = start + offset
            _add(photos, embeddings, i, row.copy(), int(hashes[i]), (4000, 3000))
    # Copies of the first originals, in clusters of 2 to 4, until the library has n photos.
    source = 0
    while len(photos) < n:
        row = base_rows[source // CHUNK][source % CHUNK].astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):
            if len(photos) >= n:
                break
            cosine = rng.uniform(floor + 0.005, 0.995)
            spread = np.sqrt(1 / cosine**2 - 1)  # |noise| that leaves this cosine
            noise = rng.standard_normal(dim, dtype=np.float32)
            noise -= noise.dot(row) * row  # orthogonal to the original
            copy = _quantised((row + spread * noise / np.linalg.norm(noise))[None, :])[0]
            flips = rng.choice(64, size=int(rng.integers(0, 5)), replace=False)
            phash = int(hashes[source]) ^ int(sum(1 << int(b) for b in flips))
            size = (4000, 3000) if rng.random() < 0.5 else (2000, 1500)
            _add(photos, embeddings, len(photos), copy, phash, size)
        source += 1
    return photos, embeddings


def _add(
    photos: list[Photo],
    embeddings: dict[str, np.ndarray],
    i: int,
    embedding: np.ndarray,
    phash: int,
    size: tuple[int, int],
) -> None:
    path = f"/photos/{i // 1000:04d}/IMG_{i:07d}.jpg"
    stamp = 1_600_000_000_000_000_000 + i * 1_000_000_000
    photos.append(
        Photo(
            path=path,
            stat=FileStat(
                dev=1, ino=i + 1, size=size[0] * size[1] // 4, mtime_ns=stamp, ctime_ns=stamp
            ),
            content_hash=f"{i:032x}",
            width=size[0],
            height=size[1],
            format="JPEG",
            phash=phash,
            exif_fields=12,
            decodable=True,
        )
    )
    embeddings[path] = embedding


# ------------------------------------------------------------------------------ the probe


class NeighbourProbe:
    """Stands in the engine's seat for ``neighbour_arrays``: calls the real one, times it, and
    then brute-forces sampled rows of the very matrix it searched (that time is kept apart)."""

    def __init__(self, queries: int, rng: np.random.Generator) -> None:
        self.real = grouping.neighbour_arrays
        self.queries = queries
        self.rng = rng
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.check_seconds = 0.0
        self.check_cpu_seconds = 0.0
        self.pairs = 0
        self.truth_pairs = 0
        self.recall = float("nan")
        self.stats = SearchStats()

    def __call__(
        self,
        embeddings: np.ndarray,
        threshold: float,
        *args: Any,  # exact_limit ...
        **options: Any,  # cancel, tick ...: passed through untouched
    ) -> Hits:
        _phase(f"search of {len(embeddings):,} {embeddings.dtype} vectors running")
        started, cpu = time.perf_counter(), time.process_time()
        pairs = self.real(embeddings, threshold, *args, stats=self.stats, **options)
        self.seconds = time.perf_counter() - started
        self.cpu_seconds = time.process_time() - cpu
        _phase(f"{self.stats.method} search done in {self.seconds:.1f} s; checking recall")
        self.pairs = len(pairs[0])
        started, cpu = time.perf_counter(), time.process_time()
        self._check(embeddings, threshold, pairs)
        self.check_seconds = time.perf_counter() - started
        self.check_cpu_seconds = time.process_time() - cpu
        _phase("recall checked; grouping")
        return pairs

    def _check(self, vectors: np.ndarray, threshold: float, pairs: Hits) -> None:
        n = len(vectors)
        sample = np.sort(self.rng.choice(n, size=min(self.queries, n), replace=False))
        chosen = np.zeros(n, dtype=bool)
        chosen[sample] = True
        queries = vectors[sample].astype(np.float32)
        truth: set[tuple[int, int]] = set()
        for start in range(0, n, CHECK_ROWS):  # float16 matrices are converted a block at a time
            block = vectors[start : start + CHECK_ROWS].astype(np.float32)
            hits_j, hits_q = np.nonzero(block @ queries.T >= threshold)
            for q, j in zip(sample[hits_q].tolist(), (hits_j + start).tolist(), strict=True):
                if q != j:
                    truth.add((min(q, j), max(q, j)))
        found_a, found_b, _ = pairs
        mine = chosen[found_a] | chosen[found_b]
        found = set(zip(found_a[mine].tolist(), found_b[mine].tolist(), strict=True))
        self.truth_pairs = len(truth)
        self.recall = len(truth & found) / len(truth) if truth else 1.0


# ------------------------------------------------------------------------------ one case


@dataclass
class CaseResult:
    n: int
    dim: int
    model_id: str
    floor: float
    search: str  # how the search went: method, cells, margin ...
    inputs_gib: float  # RSS once the library is built (what a scan holds before grouping)
    peak_gib: float  # peak RSS while grouping (VmHWM), photos and embeddings included
    neighbours_s: float
    neighbours_cpu_s: float
    total_s: float  # group_photos, without the brute-force check
    total_cpu_s: float
    phases: str  # the search's phases: wall and CPU seconds
    pairs: int
    groups: int
    truth_pairs: int
    recall: float
    load: str  # load average (1 min) before and after


def run_case(n: int, dim: int, queries: int, seed: int = 7) -> CaseResult:
    import psutil

    settings = ScanSettings()
    model_id = MODEL_FOR_DIM.get(dim, f"synthetic:{dim}")
    thresholds: Thresholds = settings.thresholds_for(model_id)
    floor = min(c for c in (thresholds.near_cosine, thresholds.similar_cosine) if c is not None)
    rng = np.random.default_rng(seed)
    photos, embeddings = synthetic_library(n, dim, floor, rng)
    inputs = psutil.Process().memory_info().rss
    _reset_peak()  # the peak that counts is while grouping, not while generating the library
    _phase(f"library built, RSS {inputs / 2**30:.2f} GiB; group_photos running")
    probe = NeighbourProbe(queries, rng)
    load_before = os.getloadavg()[0]
    grouping.neighbour_arrays = probe  # instrument, not replace
    try:
        started, cpu = time.perf_counter(), time.process_time()
        groups = grouping.group_photos(
            photos,
            embeddings,
            thresholds,
            KeepRules(settings),
            exact_limit=settings.exact_search_limit,
        )
        total = time.perf_counter() - started - probe.check_seconds
        total_cpu = time.process_time() - cpu - probe.check_cpu_seconds
    finally:
        grouping.neighbour_arrays = probe.real
    peak = _peak()
    stats = probe.stats
    search = stats.method
    if stats.cells:
        search += (
            f" ({stats.cells:,} cells, margin {stats.margin:.2f}, "
            f"{stats.probes_per_vector:.2f} cells/vector)"
        )
    return CaseResult(
        n=n,
        dim=dim,
        model_id=model_id,
        floor=floor,
        search=search,
        inputs_gib=inputs / 2**30,
        peak_gib=peak / 2**30,
        neighbours_s=probe.seconds,
        neighbours_cpu_s=probe.cpu_seconds,
        total_s=total,
        total_cpu_s=total_cpu,
        phases=", ".join(
            f"{name} {sec:.1f} s (CPU {stats.cpu_seconds[name]:.1f} s)"
            for name, sec in stats.seconds.items()
        ),
        pairs=probe.pairs,
        groups=len(groups),
        truth_pairs=probe.truth_pairs,
        recall=probe.recall,
        load=f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
    )


def _reset_peak() -> None:
    """Restart the kernel's peak-RSS count (VmHWM) at the current RSS (Linux 4.0+)."""
    with contextlib.suppress(OSError):  # not Linux: the peak covers building the library too
        Path("/proc/self/clear_refs").write_text("5")


def _peak() -> int:
    """Peak RSS in bytes since ``_reset_peak`` (else over the whole process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# ------------------------------------------------------------------------------ archive


@dataclass
class ArchiveResult:
    n: int
    dim: int
    floor: float
    search: str
    seconds: float
    cpu_seconds: float
    peak_gib: float  # VmHWM during the search (the matrix is on disk, read with pread)
    phases: str
    pairs: int
    truth_pairs: int  # brute force on the sampled queries
    recall: float
    planted_pairs: int  # every pair of every planted family at or above the floor
    planted_recall: float
    checked_pairs: int  # reported pairs re-scored from the file
    false_pairs: int
    load: str


def run_archive_case(
    n: int, dim: int, folder: Path, queries: int, memory: int | None = None, seed: int = 7
) -> ArchiveResult:
    """The archive search on the first ``n`` rows of ``folder``'s matrix (bench/archive_data.py);
    ``memory``: its pass memory in bytes (None: the engine's default)."""
    from photodup_tui.engine.archive import archive_arrays

    floor = FLOOR_FOR_DIM[dim]
    header = np.load(folder / f"embeddings-{dim}.f16", mmap_mode="r")
    matrix = np.memmap(
        header.filename, dtype=np.float16, mode="r", offset=header.offset, shape=(n, dim)
    )
    del header
    stats = SearchStats()
    load_before = os.getloadavg()[0]
    _reset_peak()
    _phase(f"archive search of {n:,} x {dim} running")
    started, cpu = time.perf_counter(), time.process_time()
    done = threading.Event()

    def report() -> None:  # how far a long run got, should it be stopped
        while not done.wait(30):
            _phase(
                f"progress: {time.process_time() - cpu:.0f} s CPU, peak {_peak() / 2**30:.2f} "
                f"GiB, margin {stats.margin} / {stats.sub_margin} / {stats.sketch_floor}, work share "
                f"{stats.work_share:.5f}, phases {stats.cpu_seconds}"
            )

    threading.Thread(target=report, daemon=True).start()
    a, b, scores = archive_arrays(matrix, floor, memory=memory, stats=stats)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    done.set()
    peak = _peak()
    load = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    _phase(f"search done in {seconds:.0f} s; checking")
    rng = np.random.default_rng(seed)
    truth, recall = _sampled_recall(matrix, floor, (a, b), queries, rng)
    planted, planted_recall = 0, float("nan")
    families = folder / f"family-{dim}.npy"
    if families.exists():  # written when the whole file is (bench/archive_data.py)
        family = np.asarray(np.load(families, mmap_mode="r")[:n])
        planted, planted_recall = _planted_recall(matrix, floor, (a, b), family)
    checked, false = _false_pairs(matrix, floor, (a, b, scores), rng)
    return ArchiveResult(
        n=n,
        dim=dim,
        floor=floor,
        search=(
            f"archive ({stats.cells:,} cells, margin {stats.margin:.2f}, "
            f"{stats.probes_per_vector:.2f} cells/vector, assigned on {stats.assign_head} of "
            f"{dim} coordinates, {stats.passes} passes, {stats.reads} reads, sub-cell margin "
            f"{'-' if stats.sub_margin is None else f'{stats.sub_margin:.4f}'}, sketch floor "
            f"{'-' if stats.sketch_floor is None else f'{stats.sketch_floor:.2f}'}, "
            f"{stats.work_share:.4%} of the exact search's products)"
        ),
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        peak_gib=peak / 2**30,
        phases=", ".join(
            f"{name} {sec:.1f} s (CPU {stats.cpu_seconds[name]:.1f} s)"
            for name, sec in stats.seconds.items()
        ),
        pairs=len(a),
        truth_pairs=truth,
        recall=recall,
        planted_pairs=planted,
        planted_recall=planted_recall,
        checked_pairs=checked,
        false_pairs=false,
        load=load,
    )


def _keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)


def _sampled_recall(
    matrix: np.ndarray,
    floor: float,
    pairs: tuple[np.ndarray, np.ndarray],
    queries: int,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Brute force for random query rows against every row (the file read in blocks)."""
    n = len(matrix)
    sample = np.sort(rng.choice(n, size=min(queries, n), replace=False))
    q = np.asarray(matrix[sample]).astype(np.float32)
    truth = [np.empty(0, dtype=np.int64)]
    step = 65_536
    for start in range(0, n, step):
        block = np.asarray(matrix[start : start + step]).astype(np.float32)
        j, k = np.nonzero(block @ q.T >= floor)
        j, qi = j + start, sample[k]
        keep = j != qi
        truth.append(_keys(qi[keep], j[keep], n))
    want = np.unique(np.concatenate(truth))
    have = _keys(*pairs, n)
    return len(want), float(np.isin(want, have).mean()) if len(want) else 1.0


def _planted_recall(
    matrix: np.ndarray, floor: float, pairs: tuple[np.ndarray, np.ndarray], family: np.ndarray
) -> tuple[int, float]:
    """Every pair inside every planted family, scored exactly; those at or above the floor
    must be found."""
    n = len(matrix)
    rows = np.flatnonzero(family >= 0)
    order = rows[np.argsort(family[rows], kind="stable")]
    fam = family[order]
    starts = np.flatnonzero(np.r_[True, fam[1:] != fam[:-1]])
    sizes = np.diff(np.r_[starts, len(fam)])
    left, right = [], []
    for size in range(2, int(sizes.max(initial=0)) + 1):
        groups = starts[sizes == size]
        for x in range(size):
            for y in range(x + 1, size):
                left.append(order[groups + x])
                right.append(order[groups + y])
    if not left:
        return 0, 1.0
    i, j = np.concatenate(left), np.concatenate(right)
    vectors = _rows(matrix, np.union1d(i, j))
    cos = _cosines(vectors, i, j)
    keep = cos >= floor
    want = _keys(i[keep], j[keep], n)
    return len(want), float(np.isin(want, _keys(*pairs, n)).mean()) if len(want) else 1.0


def _rows(matrix: np.ndarray, ids: np.ndarray) -> Any:
    """A lookup of these rows (as stored: float16 stays float16), read once in id order."""
    data = np.empty((len(ids), matrix.shape[1]), dtype=matrix.dtype)
    for start in range(0, len(ids), 65_536):
        data[start : start + 65_536] = matrix[ids[start : start + 65_536]]
    return lambda wanted: data[np.searchsorted(ids, wanted)]


def _cosines(vectors: Any, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Row i dot row j for each pair, in float32, 65,536 pairs at a time: all at once, the
    2.2M planted pairs of 10M x 1280 would be two 11 GB float32 arrays (the check alone
    peaked at 21 GB on a 24 GB machine)."""
    cos = np.empty(len(i), dtype=np.float32)
    for start in range(0, len(i), 65_536):
        a = vectors(i[start : start + 65_536]).astype(np.float32)
        b = vectors(j[start : start + 65_536]).astype(np.float32)
        cos[start : start + 65_536] = np.einsum("ij,ij->i", a, b)
    return cos


def _false_pairs(
    matrix: np.ndarray,
    floor: float,
    hits: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
    sample: int = 200_000,
) -> tuple[int, int]:
    """Reported pairs (all, or a random ``sample``) re-scored from the file: below the
    floor, or a reported cosine that is not the true one, is a false pair."""
    a, b, scores = hits
    picked = np.sort(rng.choice(len(a), size=min(sample, len(a)), replace=False))
    i, j = a[picked], b[picked]
    vectors = _rows(matrix, np.union1d(i, j))
    cos = _cosines(vectors, i, j)
    wrong = (cos < floor) | (np.abs(cos - scores[picked]) > 1e-5)
    return len(picked), int(np.count_nonzero(wrong))


def archive_report(results: list[ArchiveResult | str], queries: int) -> str:
    rows = []
    for r in results:
        if isinstance(r, str):
            rows.append([r, *(["-"] * 9)])
            continue
        rows.append(
            [
                f"{r.n:,} x {r.dim} (floor {r.floor:.2f})",
                r.search,
                f"{r.seconds:.0f} s (CPU {r.cpu_seconds:.0f} s)",
                f"{r.peak_gib:.2f} GiB",
                f"{r.pairs:,}",
                f"{r.recall:.2%} of {r.truth_pairs:,}",
                f"{r.planted_recall:.3%} of {r.planted_pairs:,}" if r.planted_pairs else "-",
                f"{r.false_pairs} of {r.checked_pairs:,}",
                r.load,
                verdict(
                    r.seconds < 600
                    and r.peak_gib < 16
                    and r.recall >= RECALL_TARGET
                    and r.false_pairs == 0
                ),
            ]
        )
    header = [
        "embeddings",
        "search",
        "time",
        "peak RSS",
        "pairs",
        f"recall ({queries:,} queries, brute force)",
        "recall (every planted pair)",
        "false pairs (re-scored)",
        "load avg",
        "< 10 min, < 16 GiB, recall >= 99%, no false pair",
    ]
    phases = [f"* {r.n:,} x {r.dim}: {r.phases}" for r in results if isinstance(r, ArchiveResult)]
    return "\n".join(
        [
            f"Archive grouping search (photodup_tui/engine/archive.py); {machine_line()}",
            "",
            markdown_table(header, rows),
            "",
            "The matrix is a float16 file (bench/archive_data.py) read with pread; peak RSS "
            "is the process's during the search.  Phases:",
            "",
            *phases,
        ]
    )


def _archive_child(
    spec: str, folder: Path, queries: int, budget: float, pass_gib: float | None
) -> ArchiveResult | str:
    command = [
        sys.executable, __file__, "--archive", str(folder), "--child", spec,
        "--queries", str(queries),
        *(["--pass-gib", str(pass_gib)] if pass_gib else []),
    ]  # fmt: skip
    data = _run_child(command, spec, budget)
    return data if isinstance(data, str) else ArchiveResult(**data)


# ------------------------------------------------------------------------------ report


def _targets(r: CaseResult) -> str:
    checks = [r.recall >= RECALL_TARGET]
    notes = [f"recall >= {RECALL_TARGET:.0%}"]
    if r.n in TIME_TARGETS:
        checks.append(r.total_s < TIME_TARGETS[r.n])
        notes.append(f"< {TIME_TARGETS[r.n]:.0f} s")
    if r.n in MEMORY_TARGET_GIB:
        checks.append(r.peak_gib <= MEMORY_TARGET_GIB[r.n])
        notes.append(f"<= {MEMORY_TARGET_GIB[r.n]:.0f} GiB")
    return f"{verdict(all(checks))} ({', '.join(notes)})"


def report(results: list[CaseResult | str], queries: int) -> str:
    rows = []
    for r in results:
        if isinstance(r, str):
            rows.append([r, *(["-"] * 11)])
            continue
        rows.append(
            [
                f"{r.n:,} x {r.dim}",
                r.search,
                f"{r.neighbours_s:.1f} s (CPU {r.neighbours_cpu_s:.1f} s)",
                f"{r.total_s:.1f} s (CPU {r.total_cpu_s:.1f} s)",
                f"{r.inputs_gib:.2f} GiB",
                f"{r.peak_gib:.2f} GiB",
                f"{r.pairs:,}",
                f"{r.groups:,}",
                f"{r.recall:.2%} of {r.truth_pairs:,}",
                f"{r.floor:.2f}",
                r.load,
                _targets(r),
            ]
        )
    header = [
        "embeddings",
        "search",
        "neighbours",
        "group_photos total",
        "RSS before",
        "peak RSS",
        "pairs",
        "groups",
        f"pair recall ({queries:,} queries)",
        "cosine floor",
        "load avg",
        "meets targets",
    ]
    phases = [f"* {r.n:,} x {r.dim}: {r.phases}" for r in results if isinstance(r, CaseResult)]
    return "\n".join(
        [
            f"Grouping benchmark (engine defaults: exact search up to "
            f"{ScanSettings().exact_search_limit:,}); {machine_line()}",
            "",
            markdown_table(header, rows),
            "",
            "RSS before: the photos and float16 embeddings a scan holds when grouping starts. "
            "Peak RSS: the process's peak from then on (VmHWM, so building the synthetic "
            "library does not count; the photos and embeddings do).  Recall: pairs at or above the cosine floor, found "
            "by brute force for random query photos on the matrix the engine searched.  "
            "The search's phases:",
            "",
            *phases,
        ]
    )


def _phase(message: str) -> None:
    """Child side: where the case is, so a case stopped by the budget can say how far it got."""
    print(f"phase: {message}", file=sys.stderr, flush=True)


def _child(spec: str, queries: int, budget: float) -> CaseResult | str:
    """Run one case in a fresh interpreter (its own peak RSS), stopped after ``budget`` seconds;
    a timeout, crash or OOM kill becomes a row that says so."""
    command = [sys.executable, __file__, "--child", spec, "--queries", str(queries)]
    data = _run_child(command, spec, budget)
    return data if isinstance(data, str) else CaseResult(**data)


def _run_child(command: list[str], spec: str, budget: float) -> dict[str, Any] | str:
    """The JSON a child case printed last, or the row saying how it stopped (``budget``
    seconds out, a crash, an OOM kill)."""
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, text=True, cwd=ROOT
        )
        try:
            out, _ = child.communicate(timeout=budget)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return f"{spec}: stopped after {budget:.0f} s ({_last_phase(errors)})"
        if child.returncode != 0:
            return f"{spec}: failed with exit {child.returncode} ({_last_phase(errors)})"
    data: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return data


def _last_phase(errors: IO[str]) -> str:
    errors.seek(0)
    lines = [line.strip() for line in errors if line.strip()]
    phases = [line.removeprefix("phase: ") for line in lines if line.startswith("phase: ")]
    last = phases[-1] if phases else "no progress reported"
    if lines and not lines[-1].startswith("phase: "):
        last += f"; last output: {lines[-1][:160]}"
    return last


def _parse(spec: str) -> tuple[int, int]:
    n, _, dim = spec.partition(":")
    return int(n), int(dim or 1280)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated N:DIM cases")
    parser.add_argument("--queries", type=int, default=2000, help="brute-force recall queries")
    parser.add_argument(
        "--budget", type=float, default=240.0, help="seconds before a case is stopped"
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--archive",
        type=Path,
        help="the archive search on the matrix in this folder (bench/archive_data.py)",
    )
    parser.add_argument(
        "--pass-gib",
        type=float,
        help="--archive: the search's pass memory in GiB (a small matrix searched in as many "
        "passes as a big one; default: the engine's)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.archive is not None:
        if args.child:
            n, dim = _parse(args.child)
            memory = int(args.pass_gib * 2**30) if args.pass_gib else None
            print(json.dumps(asdict(run_archive_case(n, dim, args.archive, args.queries, memory))))
            return
        done: list[ArchiveResult | str] = []
        for spec in args.sizes.split(","):
            say(f"archive search {spec} ...")
            done.append(
                _archive_child(spec.strip(), args.archive, args.queries, args.budget, args.pass_gib)
            )
        emit(archive_report(done, args.queries), args.out)
        return
    if args.child:
        n, dim = _parse(args.child)
        print(json.dumps(asdict(run_case(n, dim, args.queries))))
        return
    results: list[CaseResult | str] = []
    for spec in args.sizes.split(","):
        say(f"grouping {spec} ...")
        results.append(_child(spec.strip(), args.queries, args.budget))
    emit(report(results, args.queries), args.out)


if __name__ == "__main__":
    main()
