"""The scan cache: valid only for the same file, crash-safe, stale rows purged."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from photodup_tui.engine.cache import Cache, Record, default_path, quantise
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import FileStat, Photo
from photodup_tui.engine.walk import Walker

MODEL = "test:model"


def walk(root: Path) -> list[Photo]:
    return sorted(Walker(ScanSettings()).walk([str(root)]), key=lambda p: p.path)


def features(seed: int, phash: int = 0xFEDC_BA98_7654_3210) -> FeatureResult:
    vector = np.random.default_rng(seed).normal(size=64).astype(np.float32)
    vector /= np.linalg.norm(vector)
    return FeatureResult(vector, phash, 640, 480, "JPEG", "2021-06-01T12:30:00", "Cam", 7)


def store(cache: Cache, photos: list[Photo]) -> None:
    cache.store(
        Record(p.path, p.stat, content_hash=f"hash-{i}", model_id=MODEL, features=features(i))
        for i, p in enumerate(photos)
    )


def test_default_location_honours_the_env_override(tmp_path: Path) -> None:
    assert default_path() == Path(os.environ["PHOTODUP_CACHE_DIR"]) / "cache.sqlite"
    with Cache() as cache:
        assert cache.path.exists()
    mode = sqlite3.connect(default_path()).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_hit_returns_what_was_stored(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.jpg").write_bytes(b"a")
    photos = walk(tmp_path / "lib")
    with Cache(tmp_path / "c.sqlite") as cache:
        store(cache, photos)
    with Cache(tmp_path / "c.sqlite") as cache:  # re-read from disk
        found = cache.lookup(walk(tmp_path / "lib"), MODEL)
    entry = found[photos[0].path]
    assert entry.content_hash == "hash-0"
    assert entry.features is not None
    expected = features(0)
    assert entry.features.phash == expected.phash  # top bit set: stored signed, read unsigned
    assert (entry.features.width, entry.features.height, entry.features.format) == (
        640,
        480,
        "JPEG",
    )
    assert (entry.features.taken, entry.features.camera, entry.features.exif_fields) == (
        "2021-06-01T12:30:00",
        "Cam",
        7,
    )
    assert entry.features.embedding is not None
    assert expected.embedding is not None
    assert np.array_equal(entry.features.embedding, quantise(expected.embedding))
    assert float(entry.features.embedding @ expected.embedding) > 0.999


def test_other_model_id_is_a_feature_miss_but_keeps_the_hash(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"a")
    photos = walk(tmp_path)
    with Cache(tmp_path / "c.sqlite") as cache:
        store(cache, photos)
        entry = cache.lookup(photos, "other:model")[photos[0].path]
    assert entry.content_hash == "hash-0"
    assert entry.features is None


@pytest.mark.parametrize("change", ["mtime", "size", "inode"])
def test_changed_file_is_a_miss_and_its_old_row_is_replaced(tmp_path: Path, change: str) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    path = lib / "a.jpg"
    path.write_bytes(b"abc")
    (before,) = walk(lib)
    with Cache(tmp_path / "c.sqlite") as cache:
        store(cache, [before])
        if change == "mtime":
            os.utime(path, ns=(before.stat.mtime_ns + 10**9, before.stat.mtime_ns + 10**9))
        elif change == "size":
            path.write_bytes(b"abcd")
            os.utime(path, ns=(before.stat.mtime_ns, before.stat.mtime_ns))
        else:  # same size and mtime, another inode (e.g. a restore from backup)
            other = lib / "new.tmp"
            other.write_bytes(b"xyz")
            os.utime(other, ns=(before.stat.mtime_ns, before.stat.mtime_ns))
            hold = open(path, "rb")  # noqa: SIM115 - keep the old inode number from reuse
            os.replace(other, path)
            hold.close()
        (after,) = walk(lib)
        assert after.stat != before.stat
        assert cache.lookup([after], MODEL) == {}
        cache.store([Record(after.path, after.stat, content_hash="new")])
        entry = cache.lookup([after], MODEL)[after.path]
        assert entry.content_hash == "new"
        assert entry.features is None  # the old file's features went with its row
        assert cache.count() == 1


def test_undecodable_result_and_odd_names_round_trip(tmp_path: Path) -> None:
    name = os.path.join(os.fsencode(tmp_path), b"bad-\xff-\n.jpg")
    with open(name, "wb") as fh:
        fh.write(b"not an image")
    (photo,) = walk(tmp_path)
    failure = FeatureResult.failure("not_an_image", "cannot identify image \udcff")
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.store([Record(photo.path, photo.stat, model_id=MODEL, features=failure)])
        entry = cache.lookup([photo], MODEL)[photo.path]
        assert os.fsencode(cache.paths_under(str(tmp_path))[0]) == name
    assert entry.features is not None
    assert entry.features.error_code == "not_an_image"
    assert entry.features.embedding is None


def test_purge_drops_rows_the_walk_no_longer_sees_under_its_roots_only(tmp_path: Path) -> None:
    lib, elsewhere, sibling = tmp_path / "lib", tmp_path / "elsewhere", tmp_path / "lib2"
    for folder in (lib, elsewhere, sibling):
        folder.mkdir()
        (folder / "a.jpg").write_bytes(b"a")
        (folder / "b.jpg").write_bytes(b"b")
    with Cache(tmp_path / "c.sqlite") as cache:
        store(cache, walk(lib) + walk(elsewhere) + walk(sibling))
        (lib / "b.jpg").unlink()
        dropped = cache.purge([str(lib)], [p.path for p in walk(lib)])
    assert dropped == 1
    with Cache(tmp_path / "c.sqlite") as cache:
        remaining = set(cache.paths_under(str(tmp_path)))
    assert str(lib / "b.jpg") not in remaining
    assert {str(lib / "a.jpg"), str(elsewhere / "b.jpg"), str(sibling / "b.jpg")} <= remaining


def test_corrupt_database_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a sqlite database" * 100)
    with Cache(path) as cache:
        assert cache.count() == 0
        cache.store([Record("/x.jpg", FileStat(1, 2, 3, 4, 5), content_hash="h")])
    assert list(tmp_path.glob("c.sqlite.corrupt-*"))
    with Cache(path) as cache:
        assert cache.count() == 1


def test_other_schema_version_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with Cache(path) as cache:
        cache.store([Record("/x.jpg", FileStat(1, 2, 3, 4, 5), content_hash="h")])
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with Cache(path) as cache:
        assert cache.count() == 0


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from photodup_tui.engine.cache import Cache, Record
    from photodup_tui.engine.types import FileStat

    cache = Cache(Path(sys.argv[1]))
    cache.store(Record(f"/committed/{i}.jpg", FileStat(1, i, 10, 20, 30), content_hash="c")
                for i in range(100))

    def records():
        for i in range(5000):
            if i == 2500:
                print("in-transaction", flush=True)
                sys.stdin.readline()  # parked mid-transaction until killed
            yield Record(f"/pending/{i}.jpg", FileStat(1, i, 10, 20, 30), content_hash="p")

    cache.store(records())
    """
)


def test_killed_writer_leaves_a_usable_database_with_only_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"in-transaction"  # real readiness signal
    child.send_signal(signal.SIGKILL)
    child.wait()
    with Cache(path) as cache:
        assert cache.count() == 100
        assert cache.paths_under("/pending") == []
        cache.store([Record("/after/crash.jpg", FileStat(1, 1, 1, 1, 1), content_hash="x")])
        assert cache.count() == 101
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
