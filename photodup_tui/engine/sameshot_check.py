"""Pixel checks for candidate pairs: thumbnails decoded in worker processes, same-shot
scores computed in a pool of worker processes (one per core: the search is pure numpy
under the GIL, ~4 ms a pair), both remembered.

The grouping asks about the pairs that embeddings or hashes call ``near`` (same picture?)
or ``similar`` (same shot?); see :mod:`photodup_tui.engine.sameshot`.  A near pair of mostly
flat or transparent pictures is proven again at full detail (:func:`detail_pair`: both files
decoded at the smaller one's own size, in a worker process), and a near family whose keeper
is a PNG holding exactly a JPEG member's pixels gets the JPEG, the original, as its keeper
(:func:`resave_pair`).  Thumbnails are
decoded by the same hardened decoder as everything else (``photodupd.imaging``), in worker
processes, so a decoder crash costs a check, never the scan.  Scores are cached by the pair
of file identities (``cache.pixel_key``), so a rescan asks nothing twice.  A pair that cannot be checked (a file that fails to decode
now, a cancelled scan) gets no score, and so no verdict from it.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import numpy as np

from photodup_tui.engine import sameshot
from photodup_tui.engine.cache import Cache, CacheError, pixel_key
from photodup_tui.engine.types import Photo

_T = TypeVar("_T")

#: Cache keys of the two checks: a change to the thumbnails or the search gives new scores.
METHOD = (
    f"ncc-{sameshot.THUMB_SIDE}-{sameshot.COARSE_SIDE}-detail{sameshot.BLUR_FACTOR}"
    f"-quick{sameshot.QUICK_MIN}-v5"
)
NEAR_METHOD = (
    f"same-picture-rms-{sameshot.THUMB_SIDE}-regions-detail{sameshot.DETAIL_SIDE}-alpha-v2"
)
#: Thumbnails are decoded from a preview this big (JPEG draft mode keeps it cheap).
PREVIEW_SIDE = 4 * sameshot.THUMB_SIDE
CHUNK = 16
#: Progress steps, as the scan's progress reports name them.
DECODING = "thumbnails for the same-shot check"
COMPARING = "comparing similar photos pixel by pixel"
COMPARING_NEAR = "checking near duplicates pixel by pixel"


def thumbnail_file(path: str) -> sameshot.Thumb | None:
    """Worker side: the thumbnail of one file, or None when it does not decode."""
    from photodupd import imaging

    try:
        return sameshot.thumbnail_from(imaging.load_preview(path, PREVIEW_SIDE, alpha=True))
    except Exception:  # undecodable now: the pair simply goes unchecked
        return None


def detail_pair(path_a: str, path_b: str, size: tuple[int, int]) -> float | None:
    """Worker side: :func:`sameshot.same_detail` of two files, both decoded to fit ``size``
    (the smaller one's own size, see :func:`sameshot.detail_size`), or None when either
    does not decode."""
    from PIL import Image

    from photodupd import imaging

    try:
        pictures = []
        for path in (path_a, path_b):
            picture = imaging.load_preview(path, max(size), alpha=True)
            if picture.size != size:  # the larger one's aspect ratio may be a pixel off
                picture = picture.resize(size, Image.Resampling.BILINEAR)
            pictures.append(picture)
        return sameshot.same_detail(*pictures)
    except Exception:  # undecodable now: the pair goes unchecked, never guessed
        return None


#: A lossless re-save may differ from its original by this many levels: JPEG decoders round
#: their transforms a level or two apart.  A JPEG saved from a PNG differs by far more.
RESAVE_TOLERANCE = 2


def resave_pair(lossless: str, original: str, size: tuple[int, int]) -> bool | None:
    """Worker side: whether ``lossless`` holds exactly the pixels of ``original`` (both
    decoded at full size, ``size``, EXIF orientation applied), or None when either does not
    decode.  Transparency counts: an original has none."""
    from photodupd import imaging

    try:
        pictures = [
            imaging.load_preview(path, max(size), alpha=True) for path in (lossless, original)
        ]
    except Exception:  # undecodable now: no answer, the keep rules decide
        return None
    a, b = pictures
    if a.size != b.size or a.mode != b.mode:
        return False
    difference = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
    return bool(difference.max(initial=0) <= RESAVE_TOLERANCE)


def thumbnail_chunk(paths: Sequence[str]) -> list[sameshot.Thumb | None]:
    return [thumbnail_file(p) for p in paths]


#: Prepared thumbnails a scoring process keeps between chunks (~100 KB each): in a folder
#: of look-alikes a photo is in a few dozen pairs, as a keeper and as others' candidate.
PREPARED_KEPT = 256
_prepared: OrderedDict[str, sameshot.Prepared] = OrderedDict()


def score_chunk(
    pairs: Sequence[tuple[sameshot.Thumb, sameshot.Thumb]],
    full: bool = True,
    keys: Sequence[tuple[str, str]] | None = None,
) -> list[sameshot.Scored]:
    """Worker side: same-shot scores of thumbnail pairs; with ``full=False`` only the quick
    search (a pair it does not reject comes back as stage ``pending``).

    Each thumbnail is prepared (transformed) once: a keeper's sixteen candidates share its
    spectra.  ``keys`` name each pair's thumbnails (unique to one checker and path); then
    the last PREPARED_KEPT prepared thumbnails are kept for later chunks too.  Without
    keys, a thumbnail sent in several pairs of one message is one object here (pickle
    keeps shared references), and its identity is the key within the chunk."""
    chunk: dict[object, sameshot.Prepared] = {}

    def of(thumb: sameshot.Thumb, key: str | None) -> sameshot.Prepared:
        if key is None:
            found = chunk.get(id(thumb))
            if found is None:
                found = chunk[id(thumb)] = sameshot.Prepared(thumb)
            return found
        found = _prepared.get(key)
        if found is None:
            found = _prepared[key] = sameshot.Prepared(thumb)
            while len(_prepared) > PREPARED_KEPT:
                _prepared.popitem(last=False)
        else:
            _prepared.move_to_end(key)
        return found

    named: Sequence[tuple[str | None, str | None]] = keys or [(None, None)] * len(pairs)
    measure = sameshot.score_prepared if full else sameshot.quick_prepared
    return [measure(of(a, ka), of(b, kb)) for (a, b), (ka, kb) in zip(pairs, named, strict=True)]


#: Full same-shot searches (coarse and fine) a scan may run: this many per photo, and at
#: least PIXEL_CHECKS_MIN.  A folder where everything looks alike to the model gives every
#: keeper CHECKS_PER_KEEPER candidates; the quick search rejects most of them cheaply, and
#: the budget bounds what is left, so the pixel checks grow with the library, not with its
#: look-alike density.  Pairs past it get no score (no similar verdict), the grouping is not
#: stored as complete, and the scan warns (``SameShotChecker.over_budget``).
PIXEL_CHECKS_PER_PHOTO = 4
PIXEL_CHECKS_MIN = 1000


def budget_for(photos: int) -> int:
    """The full same-shot searches a scan of ``photos`` photos may run."""
    return max(PIXEL_CHECKS_MIN, PIXEL_CHECKS_PER_PHOTO * photos)


#: Same-shot checks at once below which the pool is not worth its messages.
POOL_MIN_PAIRS = 4


class SameShotChecker:
    """Callable the grouping uses: scores for pairs of photos, None where unknown."""

    def __init__(
        self,
        cache: Cache | None = None,
        workers: int | None = None,
        cancel: threading.Event | None = None,
        stage: Callable[[str, int], None] | None = None,
        advance: Callable[[int], None] | None = None,
        isolate: bool = True,
        budget: int | None = None,
    ) -> None:
        """``stage(step, total)`` and ``advance(done)`` report progress (thumbnails decoded,
        then pairs compared); ``isolate=False`` decodes in this process: for trusted files
        (tests, benchmarks); ``budget``: the full same-shot searches allowed (see
        :func:`budget_for`; None: no limit)."""
        self.cache = cache
        self.workers = workers or _cpus()
        self.cancel = cancel
        self.stage = stage
        self.advance = advance
        self.isolate = isolate
        self.decoded = 0  # thumbnails decoded, for tests and reports
        self.scored = 0  # pairs scored (not from the cache)
        self.budget = budget
        #: Same-shot pairs asked about that had no score yet (not cached, not computed).
        self.asked = 0
        self.rejected = 0  # ... rejected by the quick search (sameshot.QUICK_MIN)
        self.coarse_rejected = 0  # ... by the coarse search (sameshot.COARSE_MIN)
        self.searched = 0  # ... given the full search (coarse and fine): what the budget counts
        #: Same-shot pairs left unscored because the budget was spent: each is unanswered,
        #: so the grouping is not stored, and the scan warns.
        self.over_budget = 0
        self._over: set[tuple[str, str]] = set()
        self._token = uuid.uuid4().hex
        self.detailed = 0  # near pairs proven at full detail (sameshot.same_detail)
        #: Pairs asked about that got no score (undecodable now, cancelled): a grouping
        #: that rests on them is not stored for reuse (stored_groups.py).
        self.unanswered = 0
        # Within one checker (one scan) nothing is decoded or scored twice.
        self._thumbs: dict[str, sameshot.Thumb | None] = {}
        self._keys = _Keys()
        self._checks = {
            METHOD: _Check(METHOD, sameshot.score, self._keys),
            NEAR_METHOD: _Check(NEAR_METHOD, sameshot.same_picture, self._keys),
        }
        self._scorers: ProcessPoolExecutor | None = None  # started on first use, see close()
        #: Workers decoding files at full detail (near pairs, re-saves), also until close().
        self._decoders: ProcessPoolExecutor | None = None
        # Per check: thumbnails prefetch() announced, and how many pairs may be scored.
        self._wanted: dict[str, tuple[list[str], int]] = {}

    def close(self) -> None:
        """Stop the scoring workers (the checker still works after, in this process)."""
        _prepared.clear()  # what this process kept when it scored a few pairs itself
        for pool in (self._scorers, self._decoders):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._scorers = self._decoders = None

    def __enter__(self) -> SameShotChecker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prefetch(self, pairs: Sequence[tuple[Photo, Photo]], *, near: bool = False) -> None:
        """Any of ``pairs`` may be asked about: their cached scores are read at once, and
        the thumbnails of the others are decoded in parallel, all together, when the first
        unscored pair is asked about.  Not before: the grouping asks only about some of
        them, and a rescan asks only about pairs it already has scores for."""
        check = self._checks[NEAR_METHOD if near else METHOD]
        check.known.update(self._cached(pairs, check.method))
        unknown = [pair for pair in pairs if not check.has(*pair)]
        needed = sorted({p.path for pair in unknown for p in pair} - set(self._thumbs))
        self._wanted[check.method] = (needed, len(unknown))

    def _decode_wanted(self, check: _Check) -> None:
        needed, unknown = self._wanted.pop(check.method, ([], 0))
        if needed and self.stage is not None:
            self.stage(DECODING, len(needed))
        self._thumbnails(needed)
        if unknown and self.stage is not None:
            # At most: only keepers' pairs are asked.
            near = check.method == NEAR_METHOD
            self.stage(COMPARING_NEAR if near else COMPARING, unknown)

    def __call__(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
        """Same-shot scores (:func:`sameshot.score`) for ``similar`` candidates."""
        return self._run(self._checks[METHOD], pairs)

    def near(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
        """Same-picture scores (:func:`sameshot.same_picture`) for ``near`` candidates."""
        return self._run(self._checks[NEAR_METHOD], pairs)

    def _run(self, check: _Check, pairs: Sequence[tuple[Photo, Photo]]) -> list[float | None]:
        asked = [pair for pair in pairs if not check.has(*pair)]
        check.known.update(self._cached(asked, check.method))
        todo = _distinct([pair for pair in pairs if not check.has(*pair)])
        if todo:
            self._decode_wanted(check)
        thumbs = self._thumbnails(sorted({p.path for pair in todo for p in pair}))
        ready = [(a, b) for a, b in todo if a.path in thumbs and b.path in thumbs]
        fresh: list[tuple[str, str, float]] = []
        for (a, b), value in self._scores(check, ready, thumbs):
            check.computed[(a.path, b.path)] = check.computed[(b.path, a.path)] = value
            self.scored += 1
            fresh.append((*self._keys.pair(a, b), value))
        if fresh and self.cache is not None:
            # A cache is an optimisation only: failing to write one loses nothing.
            with contextlib.suppress(CacheError, OSError, sqlite3.Error):
                self.cache.store_same_shot(fresh, check.method)
        scores = [check.get(a, b) for a, b in pairs]
        self.unanswered += scores.count(None)
        return scores

    def _scores(
        self,
        check: _Check,
        pairs: list[tuple[Photo, Photo]],
        thumbs: dict[str, sameshot.Thumb],
    ) -> list[tuple[tuple[Photo, Photo], float]]:
        """Scores of ``pairs`` (thumbnails at hand), in the pool when that pays; fewer when
        the scan is cancelled meanwhile."""
        if check.method == NEAR_METHOD:
            return self._near_scores(pairs, thumbs)
        fresh = [pair for pair in pairs if _unordered(pair) not in self._over]
        self.asked += len(fresh)
        left = None if self.budget is None else max(0, self.budget - self.searched)
        if left is not None and left < len(fresh):
            # Not enough budget for them all: the quick search first, and the full search
            # for the most promising survivors (highest quick score) while budget lasts.
            quick = self._scored(check, fresh, thumbs, full=False)
            done = [(pair, s) for pair, s in quick if s.stage != "pending"]
            waiting = sorted(
                (item for item in quick if item[1].stage == "pending"),
                key=lambda item: -item[1].value,
            )
            for pair, _ in waiting[left:]:
                self._over.add(_unordered(pair))
            self.over_budget += len(waiting[left:])
            self._advance(len(waiting[left:]))
            done += self._scored(check, [pair for pair, _ in waiting[:left]], thumbs, full=True)
        else:
            done = self._scored(check, fresh, thumbs, full=True)
        for _, scored in done:
            self.rejected += scored.stage == "quick"
            self.coarse_rejected += scored.stage == "coarse"
            self.searched += scored.stage in ("coarse", "fine")
        return [(pair, scored.value) for pair, scored in done]

    def _scored(
        self,
        check: _Check,
        pairs: list[tuple[Photo, Photo]],
        thumbs: dict[str, sameshot.Thumb],
        full: bool,
    ) -> list[tuple[tuple[Photo, Photo], sameshot.Scored]]:
        """:func:`score_chunk` of ``pairs``, in the pool when that pays; fewer when the scan
        is cancelled meanwhile."""
        scorers = self._scoring_pool()
        if scorers is not None and len(pairs) >= POOL_MIN_PAIRS and not self._cancelled():
            # One chunk per worker: few messages, and a keeper's pairs share its spectra.
            share = -(-len(pairs) // self.workers)
            chunks = [pairs[i : i + share] for i in range(0, len(pairs), share)]
            try:
                futures = [
                    scorers.submit(
                        score_chunk,
                        [(thumbs[a.path], thumbs[b.path]) for a, b in c],
                        full,
                        [self._prepared_keys(pair) for pair in c],
                    )
                    for c in chunks
                ]
                done: list[tuple[tuple[Photo, Photo], sameshot.Scored]] = []
                for chunk, future in zip(chunks, futures, strict=True):
                    done.extend(zip(chunk, future.result(), strict=True))
                    if full:
                        self._advance(len(chunk))
                return done
            except BrokenProcessPool:  # a worker was killed (memory?): score here instead
                self._scorers = None
        done = []
        for a, b in pairs:
            if self._cancelled():
                break
            keys = [self._prepared_keys((a, b))]
            done.append(((a, b), score_chunk([(thumbs[a.path], thumbs[b.path])], full, keys)[0]))
            if full:
                self._advance(1)
        return done

    def _prepared_keys(self, pair: tuple[Photo, Photo]) -> tuple[str, str]:
        """Names of a pair's prepared thumbnails in the scoring processes: this checker's
        token and the path (one checker decodes a path once, so its thumbnail never
        changes under the name; another checker, another scan, never shares it)."""
        return (f"{self._token}/{pair[0].path}", f"{self._token}/{pair[1].path}")

    def _near_scores(
        self, pairs: list[tuple[Photo, Photo]], thumbs: dict[str, sameshot.Thumb]
    ) -> list[tuple[tuple[Photo, Photo], float]]:
        """Same-picture scores: the thumbnails first (cheap, in this process); a pair they
        call the same picture that is mostly flat (a document, a screenshot, a logo) or has
        transparency is then proven at full detail (:func:`detail_pair`, in a worker).  A
        pair whose detail check could not be made gets no score."""
        coarse: list[tuple[tuple[Photo, Photo], float]] = []
        jobs: list[tuple[str, str, tuple[int, int]]] = []
        waiting: list[int] = []
        for a, b in pairs:
            if self._cancelled():
                break
            ta, tb = thumbs[a.path], thumbs[b.path]
            value = sameshot.same_picture(ta, tb)
            if value >= sameshot.SAME_PICTURE_MIN and sameshot.needs_detail(ta, tb):
                size = sameshot.detail_size(_full_size(a, ta), _full_size(b, tb))
                jobs.append((a.path, b.path, size))
                waiting.append(len(coarse))
            else:
                self._advance(1)
            coarse.append(((a, b), value))
        details = self._pooled(detail_pair, jobs)
        self.detailed += sum(d is not None for d in details)
        lost: set[int] = set()
        for index, detail in zip(waiting, details, strict=True):
            if detail is None:
                lost.add(index)
            else:
                pair, value = coarse[index]
                coarse[index] = (pair, min(value, detail))
        return [scored for index, scored in enumerate(coarse) if index not in lost]

    def resaves(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[bool | None]:
        """For each (lossless, original) pair: is the first a lossless re-save of the second's
        pixels (:func:`resave_pair`, in workers)?  None where it could not be told."""
        jobs = [(a.path, b.path, _full_size(b, None)) for a, b in pairs]
        return self._pooled(resave_pair, jobs, progress=False)

    def _pooled(
        self,
        function: Callable[[str, str, tuple[int, int]], _T | None],
        jobs: list[tuple[str, str, tuple[int, int]]],
        progress: bool = True,
    ) -> list[_T | None]:
        """``function(*job)`` of each job, in worker processes unless ``isolate`` is off;
        None where it could not be made (a decoder crash, a cancelled scan)."""
        found: list[_T | None] = [None] * len(jobs)
        if not jobs:
            return found
        if not self.isolate:
            for i, job in enumerate(jobs):
                if self._cancelled():
                    break
                found[i] = function(*job)
                if progress:
                    self._advance(1)
            return found
        context = multiprocessing.get_context("spawn")
        lost: list[int] = []
        if self._decoders is None:  # kept for the scan: each keeper asks about a few pairs
            self._decoders = ProcessPoolExecutor(self.workers, mp_context=context)
        futures = [self._decoders.submit(function, *job) for job in jobs]
        for i, future in enumerate(futures):
            if self._cancelled():
                future.cancel()
                continue
            try:
                found[i] = future.result()
                if progress:
                    self._advance(1)
            except BrokenProcessPool:
                lost.append(i)
        if lost:  # the pool is broken: a fresh one next time
            self._decoders.shutdown(wait=True, cancel_futures=True)
            self._decoders = None
        for i in lost:  # a crash costs its own pair only: retried alone, in a fresh worker
            if self._cancelled():
                break
            try:
                with ProcessPoolExecutor(1, mp_context=context) as alone:
                    found[i] = alone.submit(function, *jobs[i]).result()
            except BrokenProcessPool:
                found[i] = None
        return found

    def _scoring_pool(self) -> ProcessPoolExecutor | None:
        if not self.isolate or self.workers < 2:
            return None
        if self._scorers is None:
            context = multiprocessing.get_context("spawn")
            self._scorers = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._scorers

    def _advance(self, done: int) -> None:
        if self.advance is not None:
            self.advance(done)

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _cached(
        self, pairs: Sequence[tuple[Photo, Photo]], method: str
    ) -> dict[tuple[str, str], float]:
        if self.cache is None:
            return {}
        keys = [self._keys.pair(a, b) for a, b in pairs]
        try:
            return self.cache.same_shot_scores(keys, method)
        except (CacheError, OSError, sqlite3.Error):  # unreadable cache: compute instead
            return {}

    def _thumbnails(self, paths: list[str]) -> dict[str, sameshot.Thumb]:
        missing = [p for p in paths if p not in self._thumbs]
        if missing and not self._cancelled():
            if not self.isolate:
                found = {}
                for path in missing:
                    found[path] = thumbnail_file(path)
                    self._advance(1)
            else:
                found = self._in_workers(missing)
            self.decoded += sum(t is not None for t in found.values())
            self._thumbs.update(found)
        return {p: t for p in paths if (t := self._thumbs.get(p)) is not None}

    def _in_workers(self, paths: list[str]) -> dict[str, sameshot.Thumb | None]:
        """Chunks of files per task, in parallel.  A decoder crash breaks the pool and loses
        the chunks in flight: their files are then retried one at a time, each in a fresh
        worker, so only a file that crashes on its own goes without a thumbnail."""
        found: dict[str, sameshot.Thumb | None] = {}
        chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
        context = multiprocessing.get_context("spawn")
        lost: list[str] = []
        with ProcessPoolExecutor(self.workers, mp_context=context) as pool:
            futures = [(c, pool.submit(thumbnail_chunk, c)) for c in chunks]
            for chunk, future in futures:
                if self._cancelled():
                    future.cancel()
                    continue
                try:
                    found.update(zip(chunk, future.result(), strict=True))
                    self._advance(len(chunk))
                except BrokenProcessPool:
                    lost.extend(chunk)
        for path in lost:
            if self._cancelled():
                break
            try:
                with ProcessPoolExecutor(1, mp_context=context) as alone:
                    found[path] = alone.submit(thumbnail_file, path).result()
            except BrokenProcessPool:
                found[path] = None
        return found


def _unordered(pair: tuple[Photo, Photo]) -> tuple[str, str]:
    a, b = pair[0].path, pair[1].path
    return (a, b) if a <= b else (b, a)


def _distinct(pairs: list[tuple[Photo, Photo]]) -> list[tuple[Photo, Photo]]:
    """``pairs`` without repeats, either way round: one scan never scores a pair twice."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for pair in pairs:
        key = _unordered(pair)
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept


class _Check:
    """One kind of pixel check: its scores from the cache (by content hashes) and from this
    scan (by paths)."""

    def __init__(
        self,
        method: str,
        measure: Callable[[sameshot.Thumb, sameshot.Thumb], float],
        keys: _Keys,
    ) -> None:
        self.method = method
        self.measure = measure
        self.keys = keys
        self.known: dict[tuple[str, str], float] = {}
        self.computed: dict[tuple[str, str], float] = {}

    def get(self, a: Photo, b: Photo) -> float | None:
        key = self.keys.pair(a, b)
        if key in self.known:
            return self.known[key]
        if (key[1], key[0]) in self.known:
            return self.known[(key[1], key[0])]
        return self.computed.get((a.path, b.path))

    def has(self, a: Photo, b: Photo) -> bool:
        return self.get(a, b) is not None


class _Keys:
    """Cache keys of photos (``pixel_key``), made once per path: a rescan looks up every
    candidate pair, each photo in dozens of them."""

    def __init__(self) -> None:
        self._by_path: dict[str, str] = {}

    def of(self, photo: Photo) -> str:
        key = self._by_path.get(photo.path)
        if key is None:
            key = self._by_path[photo.path] = pixel_key(photo)
        return key

    def pair(self, a: Photo, b: Photo) -> tuple[str, str]:
        return (self.of(a), self.of(b))


def _full_size(photo: Photo, thumb: sameshot.Thumb | None) -> tuple[int, int]:
    """A photo's (width, height) as the scan found it; when unknown, as big as the detail
    check looks, in the thumbnail's shape."""
    if photo.width and photo.height:
        return (photo.width, photo.height)
    h, w = thumb.shape[:2] if thumb is not None else (1, 1)
    factor = sameshot.DETAIL_SIDE / max(h, w, 1)
    return (max(1, round(w * factor)), max(1, round(h * factor)))


def _cpus() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cpus or 1)
