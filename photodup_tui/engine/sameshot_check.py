"""Pixel checks for candidate pairs: thumbnails from the scan, same-shot scores computed in
a pool of worker processes (one per core: the search is pure numpy under the GIL, ~4 ms a
pair), both remembered.

The grouping asks about the pairs that embeddings or hashes call ``near`` (same picture?)
or ``similar`` (same shot?); see :mod:`photodup_tui.engine.sameshot`.  A near pair the
thumbnails accept is proven again at full detail (:func:`pixeljobs.details`: both files
decoded at the smaller one's own size, a keeper once for all its pairs), and a near family
whose keeper is a PNG holding exactly a JPEG member's pixels gets the JPEG, the original,
as its keeper (:func:`resave_pair`).  Thumbnails come with each photo's features: the daemon's decoders
make them in the decode that feeds the model (``photodupd.pixelthumb``), the scan keeps them
in memory and in its cache (:class:`ThumbSource`), so a scan decodes no photo here for them.
Every decode this module still needs (a photo without a thumbnail: an older daemon or cache
row; the full-detail and re-save checks) runs in isolated decoder processes
(:mod:`photodup_tui.engine.pixeljobs` in a :class:`photodupd.decodepool.IsolatedPool`: the
daemon's memory cap and timeout), so a hostile file costs its own check, never the scan, and
is never decoded in this process.  Scores are cached by the pair
of file identities (``cache.pixel_key``), so a rescan asks nothing twice.  A pair that cannot be checked (a file that fails to decode
now, a cancelled scan) gets no score, and so no verdict from it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import sqlite3
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any, Protocol

from threadpoolctl import threadpool_limits

from photodup_tui.engine import pixeljobs, sameshot
from photodup_tui.engine.cache import Cache, CacheError, pixel_key
from photodup_tui.engine.types import Photo
from photodupd import pixelthumb
from photodupd.config import DaemonConfig
from photodupd.decodepool import IsolatedPool
from photodupd.imagebase import ImageError

#: The isolated decoders' job function, and their limits: the daemon's decoders' own.
PIXEL_JOBS = "photodup_tui.engine.pixeljobs:pixel_job"
DEFAULT_TIMEOUT = DaemonConfig().decode_timeout
DEFAULT_MEMORY_MB = DaemonConfig().decode_memory_mb

#: Cache keys of the two checks: a change to the thumbnails or the search gives new scores.
METHOD = (
    f"ncc-{sameshot.THUMB_SIDE}-{sameshot.COARSE_SIDE}-detail{sameshot.BLUR_FACTOR}"
    f"-quick{sameshot.QUICK_MIN}-v5"
)
NEAR_METHOD = (
    f"same-picture-rms-{sameshot.THUMB_SIDE}-regions-detail{sameshot.DETAIL_SIDE}-alpha"
    f"-means{sameshot.LEVEL_REDUCTION}-v5"
)
#: Thumbnails are made from a preview this big (photodupd.pixelthumb).
PREVIEW_SIDE = pixelthumb.PREVIEW_SIDE
#: Progress steps, as the scan's progress reports name them.
DECODING = "thumbnails for the same-shot check"
COMPARING = "comparing similar photos pixel by pixel"
COMPARING_NEAR = "checking near duplicates pixel by pixel"


RESAVE_TOLERANCE = pixeljobs.RESAVE_TOLERANCE


def thumbnail_file(path: str) -> sameshot.Thumb | None:
    """The thumbnail of one file, decoded in this process (trusted files only), or None when
    it does not decode."""
    try:
        return pixeljobs.thumbnail(path)
    except Exception:  # undecodable now: the pair simply goes unchecked
        return None


def detail_pair(path_a: str, path_b: str, size: tuple[int, int]) -> float | None:
    """:func:`pixeljobs.detail` in this process (trusted files only), or None when either
    file does not decode."""
    try:
        return pixeljobs.detail(path_a, path_b, size)
    except Exception:  # undecodable now: the pair goes unchecked, never guessed
        return None


def resave_pair(lossless: str, original: str, size: tuple[int, int]) -> bool | None:
    """:func:`pixeljobs.resave` in this process (trusted files only), or None when either
    file does not decode."""
    try:
        return pixeljobs.resave(lossless, original, size)
    except Exception:  # undecodable now: no answer, the keep rules decide
        return None


class ThumbSource(Protocol):
    """Where the checker finds the thumbnails the scan already has (packed,
    :func:`photodupd.pixelthumb.pack`): this scan's feature results and the cache."""

    def thumbs(self, photos: Sequence[Photo]) -> Mapping[str, bytes]:
        """The thumbnails at hand of these photos, by path (any may be missing)."""
        ...

    def keep(self, made: Sequence[tuple[Photo, bytes]]) -> None:
        """Thumbnails the checker had to decode, for the next scan."""
        ...


#: Prepared thumbnails a scoring process keeps between chunks (~190 KB each once searched:
#: ~200 MB at most, until the scan closes its pool): in a folder of look-alikes a photo is
#: in a few dozen pairs, as a keeper and as others' candidate, spread over the workers.  On
#: the Adwaita icons (bench/lookalike_bench.py) 256 made each worker prepare 8,371
#: thumbnails for 2,459 photos; 1,024 makes it 5,191: ~15% less scoring CPU.
PREPARED_KEPT = 1024
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
    prepared = [(of(a, ka), of(b, kb)) for (a, b), (ka, kb) in zip(pairs, named, strict=True)]
    if full:
        return sameshot.score_many(prepared)
    return [sameshot.quick_prepared(a, b) for a, b in prepared]


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


#: A keeper's full-detail checks go to one isolated decoder in jobs of at most this many
#: pairs: the keeper is decoded once for them all, and a file that hangs its decoder costs
#: that job's pairs only (unanswered, never guessed).
DETAIL_GROUP = 4

#: Same-shot checks at once below which the pool is not worth its messages.
POOL_MIN_PAIRS = 4
#: Once the pool runs, it scores this many of the prefetched pairs ahead of the pair the
#: grouping asked about last, AHEAD_CHUNK to a message.  The grouping asks keeper by keeper
#: and waits for each keeper's answers before it knows the next keeper's candidates; the
#: pairs it will probably ask next are known (prefetch), and the scores do not depend on
#: when they are computed, so the workers go on with them meanwhile instead of waiting.
#: A pair scored ahead that is never asked (its keeper joined a family meanwhile) is
#: wasted work, at most the window's; the answers, the counts and the budget are those of
#: the pairs asked, as without it.
AHEAD_PAIRS = 64
AHEAD_CHUNK = 8
#: Pairs scored in this process before the scoring pool starts: its workers take about a
#: second to start (fresh interpreters importing numpy), ~200 pairs' work; most scans of a
#: camera's photos ask a few dozen pairs and never need it.
POOL_AFTER_PAIRS = 64
#: A grouping with at least this many similar candidate pairs starts the scoring pool before
#: its near checks (``expect_similar``): the workers' start then overlaps those checks, which
#: hold one core.  About a sixth of the candidate pairs are asked about (the Adwaita icons:
#: 13,521 of 86,307; the camera set: 38 of 272), so this many mean ~170 pairs to score, past
#: POOL_AFTER_PAIRS; the speed issue's camera and mixed sets (272 and 426) stay below.
WARM_POOL_EDGES = 1024


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
        thumbs: ThumbSource | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = DEFAULT_MEMORY_MB,
        decode_fn: str = PIXEL_JOBS,
        budget: int | None = None,
        pool_after: int = POOL_AFTER_PAIRS,
    ) -> None:
        """``stage(step, total)`` and ``advance(done)`` report progress (thumbnails decoded,
        then pairs compared); ``thumbs`` gives the thumbnails the scan has; the rest, and the
        full-detail checks, are decoded in isolated processes (``timeout``, ``memory_mb``:
        each decode's limits; ``decode_fn`` is for tests that need a decoder which
        misbehaves).  ``isolate=False`` decodes in this process: for trusted files (tests,
        benchmarks); ``budget``: the full same-shot searches allowed (see
        :func:`budget_for`; None: no limit); ``pool_after``: pairs scored here before the
        scoring pool starts."""
        self.cache = cache
        self.workers = workers or _cpus()
        self.cancel = cancel
        self.stage = stage
        self.advance = advance
        self.isolate = isolate
        self.source = thumbs
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.decode_fn = decode_fn
        self.received = 0  # thumbnails the scan gave (made by the features' decode)
        self.decoded = 0  # thumbnails decoded for the checks, for tests and reports
        self.scored = 0  # pairs scored (not from the cache)
        self.budget = budget
        self.pool_after = pool_after
        self._scored_here = 0  # pairs scored in this process, for pool_after
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
        #: Near pairs whose checks have started (near_ahead), until near() collects them.
        self._started: dict[tuple[str, str], _Started] = {}
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
        #: Isolated decoders (thumbnails the scan lacks, full detail, re-saves), until close().
        self._decoders: IsolatedPool[Any] | None = None
        # Per check: photos whose thumbnails prefetch() announced, and how many pairs may
        # be scored.
        self._wanted: dict[str, tuple[list[Photo], int]] = {}
        #: The same-shot pairs prefetch() announced, and those given to the pool ahead.
        self._ahead = _Ahead([])
        #: Thumbnails as the scoring workers need them: the same-shot score reads only the
        #: grayscale (colour and alpha would double what each message carries).
        self._gray: dict[str, sameshot.Thumb] = {}
        self.given_ahead = 0  # pairs given to the pool before they were asked about
        self.ahead_unused = 0  # ... and never asked (wasted work), for reports

    def close(self) -> None:
        """Stop the scoring workers and the decoders (the checker still works after: it
        starts them again when needed)."""
        _prepared.clear()  # what this process kept when it scored a few pairs itself
        self.ahead_unused += len(self._ahead.given)
        self._ahead = _Ahead([])
        if self._scorers is not None:
            self._scorers.shutdown(wait=True, cancel_futures=True)
        if self._decoders is not None:
            self._decoders.close()
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
        self._look_up(check, pairs)
        unknown = [pair for pair in pairs if not check.has(*pair)]
        needed = _photos(unknown, skip=self._thumbs)
        self._wanted[check.method] = (needed, len(unknown))
        check.prefetched += len(pairs)
        check.prefetched_known += len(pairs) - len(unknown)
        if not near:
            self._ahead = _Ahead(unknown)

    def expect_similar(self, edges: int) -> None:
        """The grouping found ``edges`` similar candidate pairs: with WARM_POOL_EDGES or
        more, start the scoring pool now (its workers import numpy meanwhile) and score in
        it from the first pair, instead of after ``pool_after`` pairs scored here.  Not on a
        rescan: when the cache held most of the near pairs prefetched (made by an earlier
        scan), it holds the similar ones too, and the pool may never be needed."""
        if edges < WARM_POOL_EDGES or self._cancelled():
            return
        near = self._checks[NEAR_METHOD]
        if 2 * near.prefetched_known > near.prefetched:
            return
        scorers = self._scoring_pool()
        if scorers is not None:
            # A spawned pool starts a process per task waiting for one, up to its size.
            for _ in range(self.workers):
                scorers.submit(int)

    def _decode_wanted(self, check: _Check) -> None:
        needed, unknown = self._wanted.pop(check.method, ([], 0))
        self._thumbnails(needed, announce=True)
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
        self._look_up(check, pairs)
        todo = _distinct([pair for pair in pairs if not check.has(*pair)])
        if todo:
            self._decode_wanted(check)
        thumbs = self._thumbnails(_photos(todo))
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
        started = self._scorers is not None or self._scored_here >= self.pool_after
        scorers = self._scoring_pool() if started else None
        if scorers is not None and full and not self._cancelled():
            try:
                return self._scored_ahead(check, pairs, thumbs, scorers)
            except BrokenProcessPool:  # a worker was killed (memory?): score here instead
                self._scorers = None
                self._ahead.given.clear()
                scorers = None
        if scorers is not None and len(pairs) >= POOL_MIN_PAIRS and not self._cancelled():
            # One chunk per worker: few messages, and a keeper's pairs share its spectra.
            share = -(-len(pairs) // self.workers)
            chunks = [pairs[i : i + share] for i in range(0, len(pairs), share)]
            try:
                futures = [self._submit(scorers, c, thumbs, full) for c in chunks]
                done: list[tuple[tuple[Photo, Photo], sameshot.Scored]] = []
                for chunk, future in zip(chunks, futures, strict=True):
                    done.extend(zip(chunk, future.result(), strict=True))
                    if full:
                        self._advance(len(chunk))
                return done
            except BrokenProcessPool:  # a worker was killed (memory?): score here instead
                self._scorers = None
        done = []
        # Here too BLAS on one thread, as in the pool (one_blas_thread): the scan's other
        # work (the daemon, the decoders) holds the other cores.
        with threadpool_limits(limits=1, user_api="blas"):
            for a, b in pairs:
                if self._cancelled():
                    break
                keys = [self._prepared_keys((a, b))]
                scored = score_chunk([(thumbs[a.path], thumbs[b.path])], full, keys)[0]
                done.append(((a, b), scored))
                self._scored_here += 1
                if full:
                    self._advance(1)
        return done

    def _submit(
        self,
        scorers: ProcessPoolExecutor,
        pairs: list[tuple[Photo, Photo]],
        thumbs: Mapping[str, sameshot.Thumb],
        full: bool,
    ) -> Future[list[sameshot.Scored]]:
        """:func:`score_chunk` of ``pairs`` in the pool."""
        sent = [(self._grayscale(a, thumbs), self._grayscale(b, thumbs)) for a, b in pairs]
        keys = [self._prepared_keys(pair) for pair in pairs]
        return scorers.submit(score_chunk, sent, full, keys)

    def _grayscale(self, photo: Photo, thumbs: Mapping[str, sameshot.Thumb]) -> sameshot.Thumb:
        """The thumbnail of ``photo`` without its colour and alpha, made once per path."""
        found = self._gray.get(photo.path)
        if found is None:
            found = self._gray[photo.path] = replace(thumbs[photo.path], chroma=None, alpha=None)
        return found

    def _scored_ahead(
        self,
        check: _Check,
        pairs: list[tuple[Photo, Photo]],
        thumbs: dict[str, sameshot.Thumb],
        scorers: ProcessPoolExecutor,
    ) -> list[tuple[tuple[Photo, Photo], sameshot.Scored]]:
        """Full same-shot scores of ``pairs`` from the pool: those it was given ahead, the
        others given now (one chunk per worker); then the pool is given the pairs that
        follow in the prefetched order (AHEAD_PAIRS) while the answers are awaited."""
        ahead = self._ahead
        new = [pair for pair in pairs if _ordered(pair) not in ahead.given]
        share = max(1, -(-len(new) // self.workers))
        for i in range(0, len(new), share):
            ahead.give(new[i : i + share], self._submit(scorers, new[i : i + share], thumbs, True))
        ahead.asked(pairs)
        if ahead.next == 0:  # the first question: nothing waits in the pool yet
            self._give_ahead(check, scorers)
        done = [(pair, ahead.take(pair)) for pair in pairs]
        # A candidate the check confirms joins the keeper's family: the grouping asks
        # nothing more about it (as a keeper or a candidate), so nothing is given ahead
        # for it.  The pool still holds the window given with the last question.
        ahead.joined.update(b.path for (_, b), s in done if s.value >= sameshot.SAME_SHOT_MIN)
        self._give_ahead(check, scorers)
        self._advance(len(done))
        return done

    def _give_ahead(self, check: _Check, scorers: ProcessPoolExecutor) -> None:
        """Give the pool the prefetched pairs up to AHEAD_PAIRS past the furthest one asked,
        but those scored or known already, and none when the budget is nearly spent (the
        pairs past it are chosen by their quick scores, not in this order)."""
        ahead = self._ahead
        if self.budget is not None and self.searched + 2 * AHEAD_PAIRS >= self.budget:
            return
        while ahead.next < min(len(ahead.pairs), ahead.reached + 1 + AHEAD_PAIRS):
            chunk: list[tuple[Photo, Photo]] = []
            while len(chunk) < AHEAD_CHUNK and ahead.next < len(ahead.pairs):
                pair = ahead.pairs[ahead.next]
                ahead.next += 1
                a, b = pair
                if (
                    _ordered(pair) not in ahead.given
                    and a.path not in ahead.joined
                    and b.path not in ahead.joined
                    and not check.has(a, b)
                    and _unordered(pair) not in self._over
                    and self._thumbs.get(a.path) is not None
                    and self._thumbs.get(b.path) is not None
                ):
                    chunk.append(pair)
            if chunk:
                self.given_ahead += len(chunk)
                thumbs = {
                    p.path: t
                    for pair in chunk
                    for p in pair
                    if (t := self._thumbs[p.path]) is not None
                }
                ahead.give(chunk, self._submit(scorers, chunk, thumbs, True))

    def _prepared_keys(self, pair: tuple[Photo, Photo]) -> tuple[str, str]:
        """Names of a pair's prepared thumbnails in the scoring processes: this checker's
        token and the path (one checker decodes a path once, so its thumbnail never
        changes under the name; another checker, another scan, never shares it)."""
        return (f"{self._token}/{pair[0].path}", f"{self._token}/{pair[1].path}")

    def near_ahead(self, pairs: Sequence[tuple[Photo, Photo]]) -> None:
        """Start the same-picture checks of ``pairs`` without waiting: the grouping names the
        next keepers' pairs while it waits for this one's, so the isolated decoders always
        have full-detail checks queued; :meth:`near` collects them.  Pairs known already (the
        cache, this scan) or started are skipped."""
        check = self._checks[NEAR_METHOD]
        todo = [pair for pair in _distinct(list(pairs)) if _unordered(pair) not in self._started]
        self._look_up(check, todo)
        todo = [pair for pair in todo if not check.has(*pair)]
        if not todo or self._cancelled():
            return
        self._decode_wanted(check)
        thumbs = self._thumbnails(_photos(todo))
        self._start_near([(a, b) for a, b in todo if a.path in thumbs and b.path in thumbs], thumbs)

    def _start_near(
        self, pairs: list[tuple[Photo, Photo]], thumbs: dict[str, sameshot.Thumb]
    ) -> None:
        """The thumbnails' verdict on each pair (cheap, here), and for those it calls the same
        picture the full-detail check, queued in the isolated decoders a keeper at a time
        (:func:`pixeljobs.details`, at most DETAIL_GROUP pairs a job)."""
        by_keeper: dict[str, list[tuple[Photo, Photo]]] = {}
        for a, b in pairs:
            ta, tb = thumbs[a.path], thumbs[b.path]
            value = sameshot.same_picture(ta, tb)
            self._started[_unordered((a, b))] = _Started(value)
            if value >= sameshot.SAME_PICTURE_MIN:
                by_keeper.setdefault(a.path, []).append((a, b))
        for keeper, kept in by_keeper.items():
            for i in range(0, len(kept), DETAIL_GROUP):
                group = kept[i : i + DETAIL_GROUP]
                others = [_detail_job(a, b, thumbs[a.path], thumbs[b.path]) for a, b in group]
                job = self._submit_decode(("details", keeper, others))
                for index, pair in enumerate(group):
                    self._started[_unordered(pair)].job = (job, index)

    def _near_scores(
        self, pairs: list[tuple[Photo, Photo]], thumbs: dict[str, sameshot.Thumb]
    ) -> list[tuple[tuple[Photo, Photo], float]]:
        """Same-picture scores: the thumbnails first; a pair they call the same picture is
        then proven at full detail (started here unless :meth:`near_ahead` did).  A pair
        whose detail check could not be made gets no score."""
        self._start_near([p for p in pairs if _unordered(p) not in self._started], thumbs)
        scored: list[tuple[tuple[Photo, Photo], float]] = []
        for pair in pairs:
            if self._cancelled():
                break
            started = self._started.pop(_unordered(pair))
            self._advance(1)
            if started.job is None:
                scored.append((pair, started.value))
                continue
            detail = _answer(*started.job)
            if detail is not None:
                self.detailed += 1
                scored.append((pair, min(started.value, detail)))
        return scored

    def _submit_decode(self, job: tuple[Any, ...]) -> Future[Any]:
        """One job in the isolated decoders (made here at once when ``isolate`` is off)."""
        if self.isolate:
            return self._decoder_pool().submit(job)
        future: Future[Any] = Future()
        try:
            future.set_result(pixeljobs.pixel_job(job))
        except Exception as error:  # undecodable: no answer, never a guess
            future.set_exception(error)
        return future

    def resaves(self, pairs: Sequence[tuple[Photo, Photo]]) -> list[bool | None]:
        """For each (lossless, original) pair: is the first a lossless re-save of the second's
        pixels (:func:`resave_pair`, in the isolated decoders)?  None where it could not be
        told."""
        jobs = [("resave", a.path, b.path, _full_size(b, None)) for a, b in pairs]
        return [r if isinstance(r, bool) else None for r in self._isolated(jobs, progress=False)]

    def _isolated(self, jobs: list[tuple[Any, ...]], progress: bool = True) -> list[Any]:
        """Each :func:`pixeljobs.pixel_job` in the isolated decoders (in this process when
        ``isolate`` is off); None where it could not be made: a file that does not decode, a
        decoder that crashed, overran its time or memory (that job only), a cancelled
        scan."""
        found: list[Any] = [None] * len(jobs)
        if not jobs:
            return found
        if not self.isolate:
            for i, job in enumerate(jobs):
                if self._cancelled():
                    break
                with contextlib.suppress(Exception):  # undecodable: no answer
                    found[i] = pixeljobs.pixel_job(job)
                if progress:
                    self._advance(1)
            return found
        pool = self._decoder_pool()
        futures: list[Future[Any]] = [pool.submit(job) for job in jobs]
        for i, future in enumerate(futures):
            if self._cancelled():
                future.cancel()
                continue
            with contextlib.suppress(ImageError, CancelledError):
                found[i] = future.result()
            if progress:
                self._advance(1)
        return found

    def _decoder_pool(self) -> IsolatedPool[Any]:
        """Started on first use and kept for the scan: each keeper asks about a few pairs."""
        if self._decoders is None:
            self._decoders = IsolatedPool(
                self.workers, self.timeout, self.memory_mb, self.decode_fn, object
            )
        return self._decoders

    def _scoring_pool(self) -> ProcessPoolExecutor | None:
        if not self.isolate or self.workers < 2:
            return None
        if self._scorers is None:
            context = multiprocessing.get_context("spawn")
            self._scorers = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=start_scorer
            )
        return self._scorers

    def _advance(self, done: int) -> None:
        if self.advance is not None:
            self.advance(done)

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _look_up(self, check: _Check, pairs: Sequence[tuple[Photo, Photo]]) -> None:
        """Read the cached scores of ``pairs`` with none yet into ``check.known``; a pair is
        looked up once per scan (prefetch reads them all, and the near checks ask again
        keeper by keeper: three thousand queries of an empty cache on the icons)."""
        if self.cache is None:
            return
        fresh = [
            pair
            for pair in pairs
            if _unordered(pair) not in check.looked_up and not check.has(*pair)
        ]
        if not fresh:
            return
        keys = [self._keys.pair(a, b) for a, b in fresh]
        try:
            check.known.update(self.cache.same_shot_scores(keys, check.method))
        except (CacheError, OSError, sqlite3.Error):  # unreadable cache: compute instead
            return
        check.looked_up.update(_unordered(pair) for pair in fresh)

    def _thumbnails(self, photos: list[Photo], announce: bool = False) -> dict[str, sameshot.Thumb]:
        """The thumbnails of ``photos`` by path: from the scan (its feature results, its
        cache) when it has them, else decoded in the isolated decoders (and handed to the
        scan for the next one).  ``announce``: say how many must be decoded (progress)."""
        missing = [p for p in photos if p.path not in self._thumbs]
        if missing and not self._cancelled():
            given = self._given(missing)
            self.received += len(given)
            self._thumbs.update(given)
            rest = [p for p in missing if p.path not in given]
            if rest and announce and self.stage is not None:
                self.stage(DECODING, len(rest))
            self._decode_thumbnails(rest)
        return {p.path: t for p in photos if (t := self._thumbs.get(p.path)) is not None}

    def _given(self, photos: list[Photo]) -> dict[str, sameshot.Thumb]:
        """The scan's thumbnails of ``photos``; one that does not unpack (a damaged cache, a
        daemon's bytes that are no thumbnail) is as good as none: it is decoded here."""
        if self.source is None:
            return {}
        try:
            packed = self.source.thumbs(photos)
        except (CacheError, OSError, sqlite3.Error):  # unreadable cache: decode instead
            return {}
        found: dict[str, sameshot.Thumb] = {}
        for path, data in packed.items():
            with contextlib.suppress(ImageError):
                found[path] = pixelthumb.unpack(data)
        return found

    def _decode_thumbnails(self, photos: list[Photo]) -> None:
        """Decode the thumbnails of ``photos`` (isolated), none twice in one checker."""
        if not photos or self._cancelled():
            return
        results = self._isolated([("thumb", p.path) for p in photos])
        made: list[tuple[Photo, bytes]] = []
        for photo, packed in zip(photos, results, strict=True):
            thumb = None
            if isinstance(packed, bytes):
                with contextlib.suppress(ImageError):
                    thumb = pixelthumb.unpack(packed)
                    made.append((photo, packed))
            self._thumbs[photo.path] = thumb
        self.decoded += len(made)
        if made and self.source is not None:
            # For the next scan; a cache is an optimisation only.
            with contextlib.suppress(CacheError, OSError, sqlite3.Error):
                self.source.keep(made)


@dataclass(slots=True)
class _Started:
    """A near pair being checked: the thumbnails' verdict, and the full-detail job that
    will prove it (a job of :func:`pixeljobs.details` and this pair's place in its answer)."""

    value: float
    job: tuple[Future[Any], int] | None = None


def start_scorer() -> None:
    """A scoring process's start: BLAS on one thread, freed memory kept for reuse."""
    one_blas_thread()
    keep_freed_memory()


def one_blas_thread() -> None:
    """BLAS on one thread.  The pool has a process per core, and the search's small matrix
    products (resampling a thumbnail) would otherwise each wake a thread per core: on a
    loaded machine that made the fine search 6x slower."""
    threadpool_limits(limits=1, user_api="blas")


#: glibc gives a freed block over its mmap threshold (128 KB, adapting up to 32 MB) back
#: to the kernel, and the next array of that size is faulted in again page by page: the
#: search's temporaries (a chunk's correlation stacks, a few MB each, made and freed per
#: chunk) cost the scoring processes a fifth of their CPU in the kernel.  A scoring process
#: takes arrays under HEAP_MMAP_MAX from its heap and gives the heap back only above
#: HEAP_TRIM free: the Adwaita icons' chunks through a pool of two took 12.0-12.7 s instead
#: of 15.4-15.6 s, system CPU 0.5-0.6 s instead of 5.3-5.5 s, the same scores.  Both are
#: needed: either alone turns glibc's adaptive thresholds off and made it slower.
HEAP_MMAP_MAX = 256 * 1024 * 1024
HEAP_TRIM = 512 * 1024 * 1024
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Raise this process's C library malloc thresholds (HEAP_MMAP_MAX, HEAP_TRIM): True when
    it took them (glibc); on any other C library nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no mallopt (musl): its own allocator decides
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    taken = mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM) == 1 and taken


def _detail_job(
    a: Photo, b: Photo, ta: sameshot.Thumb, tb: sameshot.Thumb
) -> tuple[str, tuple[int, int], bool]:
    """The other side of a keeper's ``details`` job: its path, the size both are compared at,
    and whether their shapes are compared (:func:`sameshot.needs_structure`)."""
    size = sameshot.detail_size(_full_size(a, ta), _full_size(b, tb))
    return (b.path, size, sameshot.needs_structure(ta, tb))


def _answer(job: Future[Any], index: int) -> float | None:
    """A pair's full-detail score from its keeper's job; None when the job failed (the
    keeper does not decode, a decoder crashed or overran) or the pair's file did not."""
    try:
        found = job.result()
    except (ImageError, CancelledError):
        return None
    value = found[index] if isinstance(found, list) and index < len(found) else None
    return float(value) if isinstance(value, int | float) else None


class _Ahead:
    """The same-shot pairs the grouping may ask about, in the order it asks them (keeper by
    keeper, strongest candidate first; each pair once, either way round), and those given
    to the scoring pool, by (keeper, candidate) path: a score is used for the pair exactly
    as it was computed, never the other way round."""

    def __init__(self, pairs: Sequence[tuple[Photo, Photo]]) -> None:
        self.pairs = _distinct(list(pairs))
        self.index = {_ordered(pair): i for i, pair in enumerate(self.pairs)}
        self.next = 0  # the first pair not yet considered for giving ahead
        self.reached = -1  # the furthest pair (in ``pairs``) asked about
        self.joined: set[str] = set()  # candidates confirmed: in a family now (by path)
        self.given: dict[tuple[str, str], tuple[Future[list[sameshot.Scored]], int]] = {}

    def give(
        self, pairs: Sequence[tuple[Photo, Photo]], future: Future[list[sameshot.Scored]]
    ) -> None:
        for i, pair in enumerate(pairs):
            self.given[_ordered(pair)] = (future, i)

    def asked(self, pairs: Sequence[tuple[Photo, Photo]]) -> None:
        for pair in pairs:
            self.reached = max(self.reached, self.index.get(_ordered(pair), -1))

    def take(self, pair: tuple[Photo, Photo]) -> sameshot.Scored:
        """The answer for ``pair``, waiting for it; it leaves the pairs given ahead."""
        future, i = self.given.pop(_ordered(pair))
        return future.result()[i]


def _ordered(pair: tuple[Photo, Photo]) -> tuple[str, str]:
    return (pair[0].path, pair[1].path)


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
        #: Pairs (by path, either way round) whose cached score was looked up.
        self.looked_up: set[tuple[str, str]] = set()
        #: Pairs prefetched, and how many of them had a score already (cached).
        self.prefetched = 0
        self.prefetched_known = 0
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


def _photos(
    pairs: Sequence[tuple[Photo, Photo]], skip: Mapping[str, object] | None = None
) -> list[Photo]:
    """The photos of ``pairs``, once each (by path, in path order), but those in ``skip``."""
    found = {p.path: p for pair in pairs for p in pair if skip is None or p.path not in skip}
    return [found[path] for path in sorted(found)]


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
