"""The exact tier: byte-identical files, found without decoding a pixel.

Cheapest test first: only files that share a size can be identical; among those, an xxh3
hash of the first and last 64 KiB rules most out; the survivors get a full streamed BLAKE2b
(256-bit), which is the ``content_hash`` everything else keys on (decisions, reports, the
byte compare before deleting).

Every read re-checks the file against the walk's ``lstat``: it is opened without following
symlinks, and its ``fstat`` before and after reading must show the same device, inode, size,
mtime and ctime, else the file changed under us and gets no hash.  (ctime, because a user
can put an mtime back but not a ctime: ``utime`` itself bumps it.)
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import xxhash

from photodup_tui.engine.types import FileStat, Photo

PARTIAL_BYTES = 64 * 1024
CHUNK = 1024 * 1024
#: A few reads in flight hide latency on SSDs and network mounts without thrashing a disk.
HASH_THREADS = 4


class FileChanged(Exception):
    """The file is not the one the walk saw (replaced, grown, touched, or now a symlink)."""


@contextmanager
def open_verified(path: str, expected: FileStat) -> Iterator[int]:
    """Open ``path`` read-only, refusing symlinks and anything but the file the walk saw."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    # O_NONBLOCK: if a FIFO was swapped in since the walk, open must not hang.
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    try:
        _check(fd, expected)
        yield fd
        _check(fd, expected)
    finally:
        os.close(fd)


def _check(fd: int, expected: FileStat) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FileChanged("no longer a regular file")
    if FileStat.of(st) != expected:
        raise FileChanged("changed since it was found")


def partial_hash(path: str, expected: FileStat) -> str:
    """xxh3-128 of the first and last 64 KiB (the whole file when it is smaller)."""
    digest = xxhash.xxh3_128()
    with open_verified(path, expected) as fd:
        head = os.pread(fd, PARTIAL_BYTES, 0)
        digest.update(head)
        if expected.size > PARTIAL_BYTES:
            tail_at = max(PARTIAL_BYTES, expected.size - PARTIAL_BYTES)
            digest.update(os.pread(fd, PARTIAL_BYTES, tail_at))
    return digest.hexdigest()


def full_hash(path: str, expected: FileStat) -> str:
    """BLAKE2b-256 of the whole file, streamed."""
    digest = hashlib.blake2b(digest_size=32)
    with open_verified(path, expected) as fd:
        offset = 0
        while chunk := os.pread(fd, CHUNK, offset):
            digest.update(chunk)
            offset += len(chunk)
        if offset != expected.size:
            raise FileChanged("size changed while reading")
    return digest.hexdigest()


def _reason(exc: OSError | FileChanged) -> str:
    if isinstance(exc, FileChanged):
        return str(exc)
    return exc.strerror or str(exc)


def hash_one(
    photo: Photo, hasher: Callable[[str, FileStat], str], cancel: threading.Event
) -> tuple[Photo, str | None, str | None]:
    """(photo, digest, error); neither digest nor error when ``cancel`` came first."""
    if cancel.is_set():
        return photo, None, None
    try:
        return photo, hasher(photo.path, photo.stat), None
    except (OSError, FileChanged) as exc:
        return photo, None, _reason(exc)


def hash_all(
    photos: Sequence[Photo],
    hasher: Callable[[str, FileStat], str],
    cancel: threading.Event,
    on_done: Callable[[Photo, str | None, str | None], None],
) -> None:
    """Run ``hasher`` over ``photos`` on a few threads; ``on_done(photo, digest, error)``
    is called from this thread, in completion order.  Stops early when cancelled."""

    def job(photo: Photo) -> tuple[Photo, str | None, str | None]:
        return hash_one(photo, hasher, cancel)

    with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="photodup-hash") as pool:
        for photo, digest, error in pool.map(job, photos):
            if digest is not None or error is not None:
                on_done(photo, digest, error)


def candidates_for_full_hash(
    photos: Iterable[Photo],
    cancel: threading.Event,
    on_partial: Callable[[Photo, str | None, str | None], None],
    known_partials: Mapping[str, str] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> list[Photo]:
    """The photos whose content hash is worth computing.

    A photo is a candidate when it has no content hash yet and another replica has the same
    size and the same partial hash.  Partial hashes come from ``known_partials`` (by path,
    from the cache) when possible, so a rescan reads nothing; ``on_partial(photo, digest,
    error)`` reports each one computed here, after ``on_total(count)`` said how many there
    will be (for a determinate progress bar).  Photos with a (cached) content hash are never
    fully re-read, but take part in the comparison through their partial hash.
    """
    known = known_partials or {}
    by_size: dict[int, list[Photo]] = defaultdict(list)
    for photo in photos:
        by_size[photo.stat.size].append(photo)
    needs_partial: list[Photo] = []
    by_partial: dict[tuple[int, str], list[Photo]] = defaultdict(list)
    for bucket in by_size.values():
        if len(bucket) < 2 or all(p.content_hash is not None for p in bucket):
            continue
        for photo in bucket:
            if photo.path in known:
                by_partial[(photo.stat.size, known[photo.path])].append(photo)
            else:
                needs_partial.append(photo)

    def record(photo: Photo, digest: str | None, error: str | None) -> None:
        if digest is not None:
            by_partial[(photo.stat.size, digest)].append(photo)
        else:
            photo.error = error
        on_partial(photo, digest, error)

    if on_total is not None:
        on_total(len(needs_partial))
    hash_all(needs_partial, partial_hash, cancel, record)
    return [
        p
        for bucket in by_partial.values()
        if len(bucket) > 1
        for p in bucket
        if p.content_hash is None
    ]


class Tier:
    """The exact tier as the walk finds files, for a scan that overlaps its phases.

    It asks for the very reads :func:`candidates_for_full_hash` would ask for over the whole
    walk (a partial hash for each file of a size some other file has, unless all of them
    have a content hash; a full hash for each file without one whose size and partial hash
    some other file shares), but as soon as the files that call for them are found.  It
    does not read: ``add`` and ``partial_done`` return the reads to make, and the caller
    reports each one back (``partial_done``, ``full_done``).

    A size is *settled* when none of its reads is outstanding: then any two of its files
    that did not fail a read are known to differ (different partial or content hash) or to
    be identical (same content hash).  Until the walk ends a settled size can come unsettled
    again: a newcomer of that size calls for reads of its own.
    """

    def __init__(self) -> None:
        self._by_size: dict[int, list[Photo]] = defaultdict(list)
        self._active: set[int] = set()  # sizes whose files need partial hashes
        self._by_partial: dict[tuple[int, str], list[Photo]] = defaultdict(list)
        self._known: dict[str, str] = {}  # cached partial hashes of files not yet active
        self._partial_of: dict[str, str] = {}  # the partial hashes in use, by path
        self._pending: dict[int, int] = defaultdict(int)  # outstanding reads, by size
        self._pending_full: dict[tuple[int, str], int] = defaultdict(int)  # by (size, partial)
        self.partials_asked = 0
        self.fulls_asked = 0
        self.partials_done = 0  # reads reported back (a digest or an error)
        self.fulls_done = 0
        self._full_asked: set[str] = set()
        self.failed: set[str] = set()  # paths whose read failed: they take no further part

    @property
    def pending(self) -> int:
        """Reads asked for and not reported back yet."""
        return sum(self._pending.values())

    def settled(self, size: int) -> bool:
        return self._pending.get(size, 0) == 0

    def partial_of(self, photo: Photo) -> str | None:
        """The partial hash the tier compares ``photo`` by, once known."""
        return self._partial_of.get(photo.path)

    def resolved(self, photo: Photo) -> bool:
        """Whether ``photo``'s relation to every file of its size whose partial hash is known
        is known: its own is known, and no full read of a file sharing it is outstanding."""
        partial = self._partial_of.get(photo.path)
        return partial is not None and not self._pending_full.get((photo.stat.size, partial))

    def add(self, photo: Photo, known_partial: str | None) -> tuple[list[Photo], list[Photo]]:
        """A file the walk found: (files to partial-hash, files to fully hash) now."""
        size = photo.stat.size
        bucket = self._by_size[size]
        bucket.append(photo)
        if known_partial is not None:
            self._known[photo.path] = known_partial
        if size in self._active:
            newcomers = [photo]
        elif len(bucket) < 2 or all(p.content_hash is not None for p in bucket):
            return [], []
        else:
            self._active.add(size)
            newcomers = bucket
        partials: list[Photo] = []
        fulls: list[Photo] = []
        for member in newcomers:
            digest = self._known.pop(member.path, None)
            if digest is None:
                partials.append(member)
            else:
                fulls += self._partial_known(member, digest)
        self.partials_asked += len(partials)
        self._pending[size] += len(partials) + len(fulls)
        return partials, fulls

    def partial_done(self, photo: Photo, digest: str | None) -> list[Photo]:
        """A partial hash read (None: the read failed): the files to fully hash now."""
        size = photo.stat.size
        self._pending[size] -= 1
        self.partials_done += 1
        if digest is None:
            self.failed.add(photo.path)
            return []
        fulls = self._partial_known(photo, digest)
        self._pending[size] += len(fulls)
        return fulls

    def full_done(self, photo: Photo, digest: str | None) -> None:
        """A full hash read (None: the read failed)."""
        self._pending[photo.stat.size] -= 1
        self._pending_full[(photo.stat.size, self._partial_of[photo.path])] -= 1
        self.fulls_done += 1
        if digest is None:
            self.failed.add(photo.path)

    def dropped(self, photo: Photo, full: bool) -> None:
        """A read that never ran (the scan was cancelled)."""
        self._pending[photo.stat.size] -= 1
        if full:
            self._pending_full[(photo.stat.size, self._partial_of[photo.path])] -= 1

    def _partial_known(self, photo: Photo, digest: str) -> list[Photo]:
        key = (photo.stat.size, digest)
        self._partial_of[photo.path] = digest
        group = self._by_partial[key]
        group.append(photo)
        if len(group) < 2:
            return []
        fulls = [p for p in group if p.content_hash is None and p.path not in self._full_asked]
        self._full_asked.update(p.path for p in fulls)
        self.fulls_asked += len(fulls)
        self._pending_full[key] += len(fulls)
        return fulls
