"""The exact tier: size, then partial hash, then full hash; files that change are refused."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest
import xxhash

from photodup_tui.engine import exact
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Photo
from photodup_tui.engine.walk import Walker
from tests.engine.helpers import photo as make


def walk(root: Path) -> list[Photo]:
    return list(Walker(ScanSettings()).walk([str(root)]))


def exact_clusters(photos: Iterable[Photo]) -> list[list[Photo]]:
    """Photos sharing a content hash, two or more per cluster, in walk order."""
    by_hash: dict[str, list[Photo]] = defaultdict(list)
    for photo in photos:
        if photo.content_hash is not None:
            by_hash[photo.content_hash].append(photo)
    return [members for members in by_hash.values() if len(members) > 1]


def full_hashes(photos: list[Photo]) -> dict[str, str]:
    """Run the tier as the scanner does; returns path -> content hash."""
    read: list[str] = []
    candidates = exact.candidates_for_full_hash(
        photos, threading.Event(), lambda p, d, e: read.append(p.path)
    )
    out: dict[str, str] = {}

    def done(photo: Photo, digest: str | None, error: str | None) -> None:
        assert error is None
        assert digest is not None
        photo.content_hash = digest
        out[photo.path] = digest

    exact.hash_all(candidates, exact.full_hash, threading.Event(), done)
    return out


def test_byte_identical_files_group_and_others_do_not(tmp_path: Path) -> None:
    body = os.urandom(300_000)
    (tmp_path / "a.jpg").write_bytes(body)
    (tmp_path / "b.jpg").write_bytes(body)
    # Same size, same head and tail, different middle: only the full hash tells.
    (tmp_path / "c.jpg").write_bytes(body[:150_000] + b"X" + body[150_001:])
    # Same size, different head: the partial hash rules it out, no full read.
    (tmp_path / "d.jpg").write_bytes(b"Y" + body[1:])
    (tmp_path / "e.jpg").write_bytes(body[:1000])  # unique size: never read
    photos = walk(tmp_path)
    hashes = full_hashes(photos)
    names = {os.path.basename(p) for p in hashes}
    assert names == {"a.jpg", "b.jpg", "c.jpg"}
    expected = hashlib.blake2b(body, digest_size=32).hexdigest()
    assert hashes[str(tmp_path / "a.jpg")] == hashes[str(tmp_path / "b.jpg")] == expected
    assert hashes[str(tmp_path / "c.jpg")] != expected
    clusters = exact_clusters(photos)
    assert [sorted(os.path.basename(p.path) for p in c) for c in clusters] == [["a.jpg", "b.jpg"]]


def test_cached_hashes_take_part_without_being_read_again(tmp_path: Path) -> None:
    body = os.urandom(200_000)
    (tmp_path / "a.jpg").write_bytes(body)  # hashed by an earlier scan
    (tmp_path / "b.jpg").write_bytes(body)  # new identical copy
    (tmp_path / "c.jpg").write_bytes(b"Z" + body[1:])  # new, same size, other head
    photos = {os.path.basename(p.path): p for p in walk(tmp_path)}
    photos["a.jpg"].content_hash = hashlib.blake2b(body, digest_size=32).hexdigest()
    known = {photos["a.jpg"].path: exact.partial_hash(photos["a.jpg"].path, photos["a.jpg"].stat)}
    read: list[str] = []
    candidates = exact.candidates_for_full_hash(
        list(photos.values()), threading.Event(), lambda p, d, e: read.append(p.path), known
    )
    assert [p.path for p in candidates] == [photos["b.jpg"].path]
    assert sorted(read) == [photos["b.jpg"].path, photos["c.jpg"].path]  # a.jpg not re-read


def test_known_partials_spare_every_read(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.jpg").write_bytes(b"%05d" % i * 1000)  # same size, all different
    photos = walk(tmp_path)
    known = {p.path: exact.partial_hash(p.path, p.stat) for p in photos}
    read: list[str] = []
    candidates = exact.candidates_for_full_hash(
        photos, threading.Event(), lambda p, d, e: read.append(p.path), known
    )
    assert candidates == []
    assert read == []


def test_small_and_boundary_sizes_hash_like_hashlib(tmp_path: Path) -> None:
    for size in (
        1,
        exact.PARTIAL_BYTES - 1,
        exact.PARTIAL_BYTES,
        exact.PARTIAL_BYTES + 1,
        2 * exact.PARTIAL_BYTES,
        2 * exact.PARTIAL_BYTES + 1,
        3 * exact.CHUNK + 7,
    ):
        data = os.urandom(size)
        path = tmp_path / f"f{size}.jpg"
        path.write_bytes(data)
        (photo,) = [p for p in walk(tmp_path) if p.path == str(path)]
        assert (
            exact.full_hash(photo.path, photo.stat)
            == hashlib.blake2b(data, digest_size=32).hexdigest()
        )
        assert exact.partial_hash(photo.path, photo.stat) == head_and_tail_hash(data)


def head_and_tail_hash(data: bytes) -> str:
    """xxh3-128 of the first 64 KiB and of the last 64 KiB that are not part of the first:
    the whole file when it is at most 128 KiB."""
    part = exact.PARTIAL_BYTES
    tail = data[-part:] if len(data) > 2 * part else data[part:]
    return xxhash.xxh3_128(data[:part] + tail).hexdigest()


@pytest.mark.parametrize("where", ["head", "tail"])
def test_partial_hash_sees_a_change_in_the_head_or_the_tail(tmp_path: Path, where: str) -> None:
    data = os.urandom(3 * exact.PARTIAL_BYTES)
    at = 0 if where == "head" else len(data) - 1
    other = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "b.jpg").write_bytes(other)
    a, b = sorted(walk(tmp_path), key=lambda p: p.path)
    assert exact.partial_hash(a.path, a.stat) == head_and_tail_hash(data)
    assert exact.partial_hash(b.path, b.stat) == head_and_tail_hash(other)
    assert exact.partial_hash(a.path, a.stat) != exact.partial_hash(b.path, b.stat)


def test_file_changed_after_the_walk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    (photo,) = walk(tmp_path)
    path.write_bytes(b"two")  # same size, new mtime
    os.utime(path, ns=(photo.stat.mtime_ns + 1_000_000, photo.stat.mtime_ns + 1_000_000))
    with pytest.raises(exact.FileChanged):
        exact.full_hash(photo.path, photo.stat)


def test_replaced_file_same_size_and_mtime_is_refused_by_inode(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    (photo,) = walk(tmp_path)
    replacement = tmp_path / "new.tmp"
    replacement.write_bytes(b"two")
    os.utime(replacement, ns=(photo.stat.mtime_ns, photo.stat.mtime_ns))
    keep_inode_busy = open(path, "rb")  # noqa: SIM115 - so the inode number is not reused
    try:
        os.replace(replacement, path)
        with pytest.raises(exact.FileChanged):
            exact.full_hash(photo.path, photo.stat)
    finally:
        keep_inode_busy.close()


def test_symlink_swapped_in_is_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    (photo,) = walk(tmp_path)
    (tmp_path / "other").write_bytes(b"one")
    path.unlink()
    os.symlink(tmp_path / "other", path)
    with pytest.raises(OSError):
        exact.full_hash(photo.path, photo.stat)


def test_fifo_swapped_in_does_not_hang(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"one")
    (photo,) = walk(tmp_path)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(exact.FileChanged):
        exact.full_hash(photo.path, photo.stat)


def test_vanished_file_is_an_error_for_that_file_only(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"same bytes")
    photos = walk(tmp_path)
    (tmp_path / "b.jpg").unlink()
    results: dict[str, tuple[str | None, str | None]] = {}
    exact.hash_all(
        photos,
        exact.full_hash,
        threading.Event(),
        lambda p, d, e: results.__setitem__(p.path, (d, e)),
    )
    assert results[str(tmp_path / "b.jpg")][0] is None
    assert results[str(tmp_path / "b.jpg")][1]
    assert results[str(tmp_path / "a.jpg")][0] == results[str(tmp_path / "c.jpg")][0] is not None


@pytest.mark.parametrize("seed", range(20))
def test_the_incremental_tier_asks_for_the_reads_the_whole_walk_would(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exact.Tier, fed files one by one with its reads answered in any order, asks for the
    same partial and full hashes as candidates_for_full_hash over the finished walk (some
    files with a cached content hash, some with a cached partial hash), and ends settled."""
    rng = random.Random(seed)
    photos = []
    for index in range(rng.randint(2, 30)):
        cached = rng.random() < 0.2
        one = make(f"/p/{index:02d}", size=rng.randint(1, 5))
        one.content_hash = f"cached-{rng.randint(0, 2)}" if cached else None
        photos.append(one)
    digest = {p.path: f"partial-{rng.randint(0, 2)}" for p in photos}
    known = {p.path: digest[p.path] for p in photos if rng.random() < 0.3}

    monkeypatch.setattr(exact, "partial_hash", lambda path, _stat: digest[path])
    asked: list[str] = []
    whole = exact.candidates_for_full_hash(
        photos, threading.Event(), lambda p, _d, _e: asked.append(p.path), known
    )

    tier = exact.Tier()
    partials: list[Photo] = []
    fulls: list[Photo] = []
    order = list(photos)
    rng.shuffle(order)
    waiting: list[Photo] = []
    for one in order:
        new_partials, new_fulls = tier.add(one, known.get(one.path))
        partials += new_partials
        fulls += new_fulls
        waiting += new_partials
        while waiting and rng.random() < 0.5:  # some reads come back during the walk
            done = waiting.pop(rng.randrange(len(waiting)))
            fulls += tier.partial_done(done, digest[done.path])
    for done in waiting:
        fulls += tier.partial_done(done, digest[done.path])
    for one in fulls:
        tier.full_done(one, "whatever")
    assert sorted(p.path for p in partials) == sorted(asked)
    assert sorted(p.path for p in fulls) == sorted(p.path for p in whole)
    assert (tier.partials_asked, tier.fulls_asked) == (len(asked), len(whole))
    assert tier.pending == 0 and all(tier.settled(p.stat.size) for p in photos)
