"""Archive-scale synthetic embeddings on disk, for ``grouping_bench.py --archive``.

The same library as ``grouping_bench.synthetic_library`` (1,000 topics, same-topic cosine
~0.5, 20% of the photos in planted duplicate families of 2-4 whose copies sit at a cosine
spread evenly from the model's floor to 0.995 from their original, float16 as the cache
keeps them), written as one memory-mapped ``N x DIM`` float16 matrix instead of N Python
arrays: 10,000,000 x 1280 is 25.6 GB, more than this machine's memory.

It is made in chunks of ``CHUNK`` rows, each holding its originals and their copies in a
shuffled order, so every prefix of whole chunks is itself such a library (develop on the
first 1M rows of the 10M file).  ``family.npy`` holds, for each row, the row of its family's
original (-1: no planted copy), so the benchmark can check every planted pair exactly.

Usage::

    python bench/archive_data.py DIR --rows 10000000 --dim 512
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

TOPICS = 1000
PLANTED = 0.20  # share of photos in planted families (an original and 1-3 copies)
CHUNK = 50_000
SEED = 7
FLOOR_FOR_DIM = {512: 0.80, 1280: 0.65}  # the engine's cosine floor for that model


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _chunk(
    start: int, count: int, topics: np.ndarray, floor: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` float16 rows (originals and their copies, shuffled) and their family."""
    dim = topics.shape[1]
    originals = int(count * (1 - PLANTED / 2.5))
    noise = rng.standard_normal((originals, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    base = _unit(topics[rng.integers(0, len(topics), originals)] + noise).astype(np.float16)
    copies = count - originals
    per_source = rng.integers(1, 4, copies)  # 1-3 copies of each of the first originals
    sources = np.repeat(np.arange(copies), per_source)[:copies]
    rows = base[sources].astype(np.float32)
    cosine = rng.uniform(floor + 0.005, 0.995, copies).astype(np.float32)
    spread = np.sqrt(1 / cosine**2 - 1)
    away = rng.standard_normal((copies, dim), dtype=np.float32)
    away -= np.sum(away * rows, axis=1, keepdims=True) * rows  # orthogonal to the original
    away /= np.linalg.norm(away, axis=1, keepdims=True)
    copy = _unit(rows + spread[:, None] * away).astype(np.float16)
    family = np.full(count, -1, dtype=np.int64)
    family[sources] = sources
    family[originals:] = sources
    order = rng.permutation(count)
    where = np.empty(count, dtype=np.int64)
    where[order] = np.arange(count)  # new position of each generated row
    out = np.concatenate([base, copy])[order]
    fam = family[order]
    fam[fam >= 0] = where[fam[fam >= 0]] + start
    return out, fam


def generate(folder: Path, rows: int, dim: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    floor = FLOOR_FOR_DIM[dim]
    topics = _unit(np.random.default_rng(SEED).standard_normal((TOPICS, dim), dtype=np.float32))
    path = folder / f"embeddings-{dim}.f16"
    matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(rows, dim))
    offset = int(matrix.offset)
    del matrix  # only for the header: rows go in with plain writes (pages written through
    # a mapping count in this process's memory, and 25.6 GB of them crowd out the rest)
    family = np.empty(rows, dtype=np.int64)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY)
    try:
        for index, start in enumerate(range(0, rows, CHUNK)):
            count = min(CHUNK, rows - start)
            rng = np.random.default_rng([SEED, dim, index])
            block, fam = _chunk(start, count, topics, floor, rng)
            data = block.tobytes()
            written = 0
            while written < len(data):
                at = offset + start * dim * 2 + written
                written += os.pwrite(fd, data[written:], at)
            family[start : start + count] = fam
            if index % 20 == 0:
                print(
                    f"{start + count:,} rows, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
    finally:
        os.close(fd)
    np.save(folder / f"family-{dim}.npy", family)
    meta = {"rows": rows, "dim": dim, "floor": floor, "chunk": CHUNK, "seed": SEED}
    (folder / f"meta-{dim}.json").write_text(json.dumps(meta))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    generate(args.folder, args.rows, args.dim)


if __name__ == "__main__":
    main()
