"""The scan cache: what we learnt about each file, so a rescan only needs ``lstat``.

One SQLite database (WAL) at ``paths.cache_dir()/cache.sqlite``.  A row is valid while the
file's path, device, inode, size, mtime_ns and ctime_ns are what they were when it was
written; any change drops the file's row and all its features.  ctime is what makes this
safe: a file rewritten in place at the same size with its mtime put back (or deleted and
re-created on a reused inode) keeps every other field, but a user cannot set a ctime back
(``utime`` itself bumps it), so such a file always misses.  (Where a filesystem has no real
ctime, e.g. FAT, the act-time re-hash of near copies and keepers, ``safedelete/verify.py``,
still refuses what changed.)  Per model id a row holds the embedding (float16: half the
disk, far below the thresholds' resolution), the perceptual hash, pixel size, EXIF facts,
or the permanent error the decoder gave.  Per file, the pixel checks' thumbnail the same
decode made (``photodupd.pixelthumb``, about 9 KB a photo), when the source gave one (optional
data: a row without one only means the checks decode that file).  Pixel-check scores (``sameshot.py``) are kept by
the pair of file identities (``pixel_key``).  The last few groupings are kept by the
fingerprint of their inputs (``stored_groups.py``), so a rescan of an unchanged library
does not group it again.

Safety: writes are batched in transactions, so a killed scan leaves the last committed batch
and nothing half-written; a database that is not readable at all (corrupt, foreign, or an
unknown schema) is moved aside or rebuilt, because a cache can always be recomputed.  A
version 1 database (identity without ctime) is migrated in place: its rows get a NULL ctime,
which never matches, so each is recomputed the first time its file is scanned again.
Paths are stored as bytes (``os.fsencode``) so names that are not valid UTF-8 work.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.types import FileStat, Photo
from photodupd import paths, pixelthumb

#: 2: ctime_ns joined the file identity (version 1 databases are migrated, ``_migrate_v1``).
#: 3: the thumbs table (a version 2 database gains it, empty: its photos have no thumbnails).
SCHEMA_VERSION = 3
FILE_NAME = "cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL UNIQUE,
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER,  -- NULL: a row from before ctime joined the identity, never a match
    content_hash TEXT,
    partial_hash TEXT
);
CREATE TABLE IF NOT EXISTS features (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    embedding BLOB,
    phash INTEGER,
    width INTEGER,
    height INTEGER,
    format TEXT,
    taken TEXT,
    camera TEXT,
    exif_fields INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    PRIMARY KEY (file_id, model_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS thumbs (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    method TEXT NOT NULL,  -- pixelthumb.METHOD: another thumbnail, another row
    thumb BLOB NOT NULL,  -- pixelthumb.pack
    PRIMARY KEY (file_id, method)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS same_shot (
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    method TEXT NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (a, b, method)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groupings (
    fingerprint BLOB PRIMARY KEY,
    payload BLOB NOT NULL,
    used REAL NOT NULL
);
"""
#: Groupings kept (``stored_groups.py``): the newest few, for users who scan a few
#: different sets of folders in turn.
GROUPINGS_KEPT = 4


class CacheError(Exception):
    """The cache cannot be opened or written (disk full, permissions ...)."""


@dataclass(frozen=True, slots=True)
class CachedFile:
    content_hash: str | None
    partial_hash: str | None  # head+tail hash of the exact tier, so a rescan reads nothing
    features: FeatureResult | None  # for the model id asked about


@dataclass(frozen=True, slots=True)
class Record:
    """One file's facts to store; ``None`` fields leave what is stored alone."""

    path: str
    stat: FileStat
    content_hash: str | None = None
    partial_hash: str | None = None
    model_id: str | None = None
    features: FeatureResult | None = None
    #: The pixel checks' thumbnail (packed), kept under ``thumb_method``.
    thumb: bytes | None = None


def default_path() -> Path:
    return paths.cache_dir() / FILE_NAME


def quantise(embedding: np.ndarray) -> np.ndarray:
    """The embedding exactly as the cache gives it back, so fresh and cached scans agree:
    float16, which halves what a scan holds (1M x 512 embeddings: 1 GB, not 2).  Rounding a
    unit vector to float16 moves its cosines by ~1e-4, far below any threshold's resolution;
    the neighbour search computes them in float32.  Idempotent: a cached value comes back
    unchanged."""
    values = np.asarray(embedding)
    if values.dtype == np.float16:
        return values.copy()  # the cache's own bytes: already rounded (and read-only)
    return values.astype(np.float32).astype(np.float16)


_K = TypeVar("_K")
#: Keys in one ``IN (...)`` list (SQLite's default limit on parameters is 32,766).
_KEYS_PER_QUERY = 500


def _in_lists(keys: Sequence[_K]) -> Iterator[tuple[Sequence[_K], str]]:
    """``keys`` a few hundred at a time, each with its ``?,?,...`` list: a rescan asks about
    every file and every candidate pair of the library, one query per key would dominate."""
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        yield chunk, ",".join("?" * len(chunk))


def pixel_key(photo: Photo) -> str:
    """What pixel-check scores are stored under: the file's identity, ctime included, so a
    file rewritten in place is checked again.  (Not the content hash: a file whose size no
    other file shares is only hashed in full once it is in a group, so it would change keys
    between scans.)  ``purge`` builds the same string in SQL."""
    st = photo.stat
    return f"file:{_signed(st.dev)}:{_signed(st.ino)}:{st.size}:{st.mtime_ns}:{st.ctime_ns}"


def _identity(st: FileStat) -> tuple[int, int, int, int, int]:
    """What a row must still match for its facts to be this file's (see the module doc)."""
    return (st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns)


def _signed(value: int) -> int:
    """SQLite integers are signed 64-bit; inode numbers and hashes may use the top bit."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def _text(value: str | None) -> str | None:
    # EXIF strings may hold lone surrogates, which SQLite's UTF-8 cannot store.
    return None if value is None else value.encode("utf-8", "replace").decode("utf-8")


class Cache:
    """Thread-safe (one connection behind a lock): the scanner writes from its worker thread
    while feature callbacks arrive on others."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_path()
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except OSError as exc:
            raise CacheError(f"cannot open the cache {self.path}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError:
            # Not a database, or damaged beyond use: keep it for a post-mortem, start afresh.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process crash
            db.execute("PRAGMA foreign_keys=ON")
            if self._schema_version(db) != SCHEMA_VERSION:
                # One write transaction, the version read again inside it: two processes
                # opening an old cache at once must not both migrate it (the second ALTER
                # would fail and look like a corrupt file).
                db.execute("BEGIN IMMEDIATE")
                try:
                    self._ensure_schema(db)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @classmethod
    def _ensure_schema(cls, db: sqlite3.Connection) -> None:
        version = cls._schema_version(db)
        if version == 1:
            cls._migrate_v1(db)
        # Version 2 lacks only the thumbs table, which the schema below creates (empty).
        elif version not in (None, 2, SCHEMA_VERSION):
            # An unknown layout: the cache is disposable, so rebuild rather than migrate.
            for table in ("features", "thumbs", "files", "same_shot", "groupings"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
        # Statement by statement: ``executescript`` would commit the open transaction.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    @staticmethod
    def _migrate_v1(db: sqlite3.Connection) -> None:
        """Version 1 keyed files without ctime: such a row cannot prove its file was not
        rewritten in place since, so it gets a NULL ctime and misses (its features are
        recomputed once, then stored under the full identity).  Pixel scores and groupings
        were stored under keys without ctime, which no scan asks for any more: dropped."""
        db.execute("ALTER TABLE files ADD COLUMN ctime_ns INTEGER")
        db.execute("DELETE FROM same_shot")
        db.execute("DELETE FROM groupings")

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int | None:
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return None
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def lookup(self, photos: Sequence[Photo], model_id: str) -> dict[str, CachedFile]:
        """Valid cached facts by path; a file whose identity or stat moved is not returned."""
        found: dict[str, CachedFile] = {}
        by_key = {os.fsencode(photo.path): photo for photo in photos}
        keys = list(by_key)
        with self._lock:
            for chunk, marks in _in_lists(keys):
                rows = self._db.execute(
                    f"""SELECT f.dev, f.ino, f.size, f.mtime_ns, f.content_hash, x.embedding,
                           x.phash, x.width, x.height, x.format, x.taken, x.camera,
                           x.exif_fields, x.error_code, x.error_message, x.model_id,
                           f.partial_hash, f.path, f.ctime_ns
                    FROM files f LEFT JOIN features x ON x.file_id = f.id AND x.model_id = ?
                    WHERE f.path IN ({marks})""",
                    (model_id, *chunk),
                )
                for row in rows:
                    photo = by_key[row[17]]
                    stored = (_unsigned(row[0]), _unsigned(row[1]), row[2], row[3], row[18])
                    if stored != _identity(photo.stat):  # a NULL ctime (version 1) never matches
                        continue
                    features = _features(row) if row[15] else None
                    found[photo.path] = CachedFile(row[4], row[16], features)
        return found

    def thumbs(self, photos: Sequence[Photo]) -> dict[str, bytes]:
        """The stored thumbnails (packed, this :data:`pixelthumb.METHOD`) of these photos, by
        path; a file whose identity moved, or that has none, is left out."""
        found: dict[str, bytes] = {}
        by_key = {os.fsencode(photo.path): photo for photo in photos}
        with self._lock:
            for chunk, marks in _in_lists(list(by_key)):
                rows = self._db.execute(
                    f"""SELECT f.path, f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns, t.thumb
                    FROM files f JOIN thumbs t ON t.file_id = f.id AND t.method = ?
                    WHERE f.path IN ({marks})""",
                    (pixelthumb.METHOD, *chunk),
                )
                for row in rows:
                    photo = by_key[row[0]]
                    stored = (_unsigned(row[1]), _unsigned(row[2]), row[3], row[4], row[5])
                    if stored == _identity(photo.stat) and isinstance(row[6], bytes):
                        found[photo.path] = row[6]
        return found

    def paths_under(self, root: str) -> list[str]:
        """Every cached path at or below ``root`` (a folder or file path)."""
        prefix = os.fsencode(root.rstrip(os.sep) or os.sep)
        low = prefix if prefix.endswith(b"/") else prefix + b"/"
        high = low[:-1] + b"0"  # "0" sorts right after "/": the range holds root/...
        with self._lock:
            rows = self._db.execute(
                "SELECT path FROM files WHERE path = ? OR (path >= ? AND path < ?)",
                (prefix, low, high),
            ).fetchall()
        return [os.fsdecode(r[0]) for r in rows]

    def sizes_with_features(self, roots: Sequence[str], model_id: str) -> set[int]:
        """The sizes of the files at or below ``roots`` that have ``model_id``'s features
        (whether or not the file is still as cached): a scan that meets a new file of
        another size knows no cached file can be its byte-identical twin."""
        sizes: set[int] = set()
        with self._lock:
            for root in roots:
                prefix = os.fsencode(root.rstrip(os.sep) or os.sep)
                low = prefix if prefix.endswith(b"/") else prefix + b"/"
                high = low[:-1] + b"0"  # "0" sorts right after "/": the range holds root/...
                rows = self._db.execute(
                    """SELECT DISTINCT f.size FROM files f
                    JOIN features x ON x.file_id = f.id AND x.model_id = ?
                    WHERE f.path = ? OR (f.path >= ? AND f.path < ?)""",
                    (model_id, prefix, low, high),
                )
                sizes.update(int(row[0]) for row in rows)
        return sizes

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])

    # ------------------------------------------------------------------ writing

    def store(self, records: Iterable[Record]) -> int:
        """Write ``records`` in one transaction: all of them, or none after a crash."""
        written = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for record in records:
                    self._store_one(record)
                    written += 1
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return written

    def _store_one(self, record: Record) -> None:
        st = record.stat
        key = os.fsencode(record.path)
        identity = (_signed(st.dev), _signed(st.ino), st.size, st.mtime_ns, st.ctime_ns)
        row = self._db.execute(
            "SELECT id, dev, ino, size, mtime_ns, ctime_ns FROM files WHERE path = ?", (key,)
        ).fetchone()
        if row is not None and tuple(row[1:]) != identity:
            self._db.execute("DELETE FROM files WHERE id = ?", (row[0],))  # features cascade
            row = None
        if row is None:
            file_id = self._db.execute(
                "INSERT INTO files(path, dev, ino, size, mtime_ns, ctime_ns, content_hash,"
                " partial_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, *identity, record.content_hash, record.partial_hash),
            ).lastrowid
        else:
            file_id = row[0]
            if record.content_hash is not None or record.partial_hash is not None:
                self._db.execute(
                    "UPDATE files SET content_hash = coalesce(?, content_hash),"
                    " partial_hash = coalesce(?, partial_hash) WHERE id = ?",
                    (record.content_hash, record.partial_hash, file_id),
                )
        if record.features is not None and record.model_id is not None:
            self._store_features(file_id, record.model_id, record.features)
        if record.thumb is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO thumbs(file_id, method, thumb) VALUES (?, ?, ?)",
                (file_id, pixelthumb.METHOD, record.thumb),
            )

    def _store_features(self, file_id: int | None, model_id: str, result: FeatureResult) -> None:
        embedding = None
        if result.embedding is not None:
            embedding = np.asarray(result.embedding, dtype=np.float16).tobytes()
        self._db.execute(
            "INSERT OR REPLACE INTO features(file_id, model_id, embedding, phash, width, height,"
            " format, taken, camera, exif_fields, error_code, error_message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                file_id,
                model_id,
                embedding,
                None if result.phash is None else _signed(result.phash),
                result.width,
                result.height,
                _text(result.format),
                _text(result.taken),
                _text(result.camera),
                result.exif_fields,
                result.error_code,
                _text(result.error_message),
            ),
        )

    def forget(self, paths_to_drop: Iterable[str]) -> int:
        """Drop rows (and their features) for these paths, in one transaction."""
        keys = [(os.fsencode(p),) for p in paths_to_drop]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                # rowcount, not total_changes: the cascaded feature rows are not files.
                dropped = self._db.executemany("DELETE FROM files WHERE path = ?", keys).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return dropped

    def same_shot_scores(
        self, pairs: Iterable[tuple[str, str]], method: str
    ) -> dict[tuple[str, str], float]:
        """Stored scores for pairs of keys (either order), by the pair as asked; one query
        per few hundred first keys (``_in_lists``)."""
        asked: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for a, b in pairs:
            asked[(min(a, b), max(a, b))].append((a, b))
        firsts = sorted({a for a, _ in asked})
        found: dict[tuple[str, str], float] = {}
        with self._lock:
            for chunk, marks in _in_lists(firsts):
                rows = self._db.execute(
                    f"SELECT a, b, score FROM same_shot WHERE method = ? AND a IN ({marks})",
                    (method, *chunk),
                )
                for a, b, score in rows:
                    for pair in asked.get((a, b), ()):
                        found[pair] = float(score)
        return found

    def store_same_shot(self, scores: Iterable[tuple[str, str, float]], method: str) -> None:
        rows = [(min(a, b), max(a, b), method, s) for a, b, s in scores]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO same_shot VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def stored_groups(self, fingerprint: bytes) -> bytes | None:
        """The grouping stored under ``fingerprint``, if it is still kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT payload FROM groupings WHERE fingerprint = ?", (fingerprint,)
            ).fetchone()
            if row is None:
                return None
            with contextlib.suppress(sqlite3.Error):  # read-only cache: still a good answer
                self._db.execute(
                    "UPDATE groupings SET used = ? WHERE fingerprint = ?",
                    (time.time(), fingerprint),
                )
        return bytes(row[0])

    def store_groups(self, fingerprint: bytes, payload: bytes) -> None:
        """Keep a grouping; only the ``GROUPINGS_KEPT`` most recently used stay."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO groupings VALUES (?, ?, ?)",
                    (fingerprint, payload, time.time()),
                )
                self._db.execute(
                    "DELETE FROM groupings WHERE fingerprint NOT IN"
                    " (SELECT fingerprint FROM groupings ORDER BY used DESC LIMIT ?)",
                    (GROUPINGS_KEPT,),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def purge(self, roots: Iterable[str], seen: Iterable[str]) -> int:
        """After a complete walk of ``roots``: drop rows below them the walk did not see
        (deleted, moved, excluded, or now a hard-link alias).  Returns rows dropped."""
        seen_set = set(seen)
        stale = {p for root in roots for p in self.paths_under(root) if p not in seen_set}
        dropped = self.forget(sorted(stale)) if stale else 0
        # ``pixel_key`` in SQL.  Rows without a ctime (version 1) have no key: left out, as a
        # NULL in a NOT IN list would make every comparison unknown and purge nothing.
        keys = (
            "SELECT 'file:' || dev || ':' || ino || ':' || size || ':' || mtime_ns || ':' ||"
            " ctime_ns FROM files WHERE ctime_ns IS NOT NULL"
        )
        with self._lock:  # scores of files that are gone or changed
            self._db.execute(f"DELETE FROM same_shot WHERE a NOT IN ({keys}) OR b NOT IN ({keys})")
        return dropped


def _features(row: tuple[Any, ...]) -> FeatureResult:
    blob, phash = row[5], row[6]
    embedding = None
    if isinstance(blob, bytes):
        embedding = quantise(np.frombuffer(blob, dtype=np.float16))
    return FeatureResult(
        embedding=embedding,
        phash=None if phash is None else _unsigned(int(phash)),
        width=row[7],
        height=row[8],
        format=row[9],
        taken=row[10],
        camera=row[11],
        exif_fields=int(row[12] or 0),
        error_code=row[13],
        error_message=row[14],
    )
