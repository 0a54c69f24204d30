"""One scan, start to finish: walk -> cache -> exact tier -> features -> groups.

The first four overlap (``_Pipeline``): a file's features are asked for while the walk and
the exact tier go on, as soon as no file holding features can be its byte-identical twin.

``Scanner.run`` is blocking and thread-friendly: the TUI calls it from a thread worker, the
CLI from its main thread.  It never prints; it reports :class:`ScanProgress` on a time budget
(about every 0.25 s, and once at the end), always from the thread that called ``run``.
Setting ``cancel`` stops the scan at the next file: everything learnt so far is already in
the cache, and the result holds the groups that what was learnt supports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from photodup_tui.engine import exact, stored_groups
from photodup_tui.engine.cache import Cache, CachedFile, Record, quantise
from photodup_tui.engine.decisions import Decisions
from photodup_tui.engine.features import (
    PERMANENT_ERRORS,
    FeatureResult,
    FeatureSource,
    PathFeed,
)
from photodup_tui.engine.grouping import group_photos
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.sameshot_check import SameShotChecker, budget_for
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group, Photo, ScanCounts, ScanResult
from photodup_tui.engine.walk import Walker, has_raw_suffix
from photodupd.config import DaemonConfig
from photodupd.config import load as load_daemon_config

PROGRESS_INTERVAL = 0.25
CACHE_BATCH = 500
CACHE_BATCH_SECONDS = 1.0
#: Files the walker hands over at a time (with one cache look-up), or what it found in
#: this long: small enough that the first requests go out while the walk goes on.
WALK_BATCH = 64
WALK_BATCH_SECONDS = 0.05
#: The two parts of the hashing phase, as progress reports name them.
QUICK_CHECK = "quick check of files that share a size"
FULL_READ = "reading possible copies in full"


@dataclass(frozen=True, slots=True)
class ScanProgress:
    #: walking | hashing | features | grouping | done | cancelled: the earliest stage still
    #: running (stages overlap: ``hashed`` and ``embedded`` move during earlier phases too)
    phase: str
    files_found: int
    bytes_found: int
    hashed: int  # files read by the exact tier (partial or full)
    cache_hits: int  # files whose features came from the cache
    embedded: int  # files whose features were computed in this scan
    errors: int
    current_dir: str
    rate: float  # files per second in the current phase
    eta_seconds: float | None  # None when the phase has no known total
    # Determinate progress: items of this phase done, of phase_total (None: no total is
    # known, as while walking or grouping).  Walking counts files found.
    phase_done: int = 0
    phase_total: int | None = None
    step: str = ""  # which part of a phase runs, for phases done in parts (hashing)
    #: (path, reason) of every file found unusable so far, in the order found: the UI lists
    #: them while the scan runs.  A snapshot: later reports carry the later ones too.
    error_files: tuple[tuple[str, str], ...] = ()


class _Progress:
    """Counters shared with worker threads, and the time budget for reporting them.

    The scan's stages overlap (files are hashed and pictures read while the walk goes on),
    but a report shows one phase: the earliest unfinished one, with its exact total once
    known.  Each stage counts its own items, so a picture read while the bar shows the
    hashing advances the features count ("Pictures read"), never the hashing bar.
    """

    def __init__(self, callback: Callable[[ScanProgress], None], walker: Walker) -> None:
        self._callback = callback
        self._walker = walker
        self._lock = threading.Lock()
        self.phase = "walking"
        self.hashed = 0
        self.cache_hits = 0
        self.embedded = 0
        self.requested = 0
        self.errors = 0
        self._stage = "walking"  # what the bar counts: the phase, or its step (hashing)
        self._done: dict[str, int] = defaultdict(int)  # items done, by stage
        self._since: dict[str, float] = {}  # when each stage started or did its first item
        self._credit: str | None = None  # the stage ``step`` credits, when not the shown one
        self._phase_total: int | None = None
        self._step = ""
        self._phase_start = self._scan_start = time.monotonic()
        self._last = 0.0
        self.error_files: list[tuple[str, str]] = []  # the run's own list, shared

    def start_phase(
        self, phase: str, total: int | None, step: str = "", fresh: bool = True
    ) -> None:
        """Show ``phase`` (``step``) from now on.  ``fresh``: its count starts at 0; else
        it keeps what the stage did while an earlier phase was shown."""
        now = time.monotonic()
        with self._lock:
            self.phase, self._phase_total, self._step = phase, total, step
            self._stage = step or phase
            self._phase_start = now
            if fresh:
                self._done[self._stage] = 0
                self._since[self._stage] = now
            else:
                self._since.setdefault(self._stage, now)
        self.report(force=True)

    def step(self, done: int = 1, stage: str | None = None, **increments: int) -> None:
        """Advance ``stage`` (by default the shown one) by ``done`` items and add
        ``increments`` to the named counters."""
        with self._lock:
            key = stage or self._credit or self._stage
            self._done[key] += done
            if done:
                self._since.setdefault(key, time.monotonic())
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    @contextlib.contextmanager
    def crediting(self, stage: str) -> Iterator[None]:
        """``step`` calls without a stage count for ``stage`` meanwhile (same thread)."""
        self._credit = stage
        try:
            yield
        finally:
            self._credit = None

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        stats = self._walker.stats
        with self._lock:
            phase_done = self._done[self._stage]
            done, since = phase_done, self._since.get(self._stage, now)
            if self.phase in ("walking", "done", "cancelled"):  # whole-scan rate
                done = stats.files_found
                since = self._phase_start if self.phase == "walking" else self._scan_start
            if self.phase == "walking":
                phase_done = stats.files_found
            rate = done / max(now - since, 1e-6)
            eta = None
            if self._phase_total is not None and rate > 0:
                eta = max(0.0, (self._phase_total - phase_done) / rate)
            snapshot = ScanProgress(
                phase=self.phase,
                files_found=stats.files_found,
                bytes_found=stats.bytes_found,
                hashed=self.hashed,
                cache_hits=self.cache_hits,
                embedded=self.embedded,
                errors=self.errors + len(stats.errors),
                current_dir=stats.current_dir,
                rate=rate,
                eta_seconds=eta,
                phase_done=phase_done,
                phase_total=self._phase_total,
                step=self._step,
                error_files=(*stats.errors, *self.error_files),
            )
        self._callback(snapshot)


class _CacheWriter:
    """Batches cache writes from any thread; a failing cache degrades to "no cache"."""

    def __init__(self, cache: Cache, warnings: list[str]) -> None:
        self._cache = cache
        self._warnings = warnings
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self._last_flush = time.monotonic()
        self._broken = False

    def add(self, record: Record) -> None:
        with self._lock:
            self._pending.append(record)
            due = time.monotonic() - self._last_flush >= CACHE_BATCH_SECONDS
            if len(self._pending) >= CACHE_BATCH or due:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if not batch or self._broken:
            return
        try:
            self._cache.store(batch)
        except Exception as exc:  # disk full, read-only ...: the scan goes on without a cache
            self._broken = True
            self._warnings.append(f"cache writes stopped: {exc}")


class Scanner:
    def __init__(
        self,
        settings: ScanSettings,
        feature_source: FeatureSource,
        cache: Cache,
        decisions: Decisions | None = None,
    ) -> None:
        self.settings = settings
        self.source = feature_source
        self.cache = cache
        self.decisions = decisions
        self.rules = KeepRules(settings)

    def run(
        self,
        roots: Sequence[str],
        progress: Callable[[ScanProgress], None],
        cancel: threading.Event,
    ) -> ScanResult:
        return _Run(self, progress, cancel).run(roots)


class _Run:
    """The state of one ``Scanner.run`` call."""

    def __init__(
        self, scanner: Scanner, progress: Callable[[ScanProgress], None], cancel: threading.Event
    ) -> None:
        self.scanner = scanner
        self.settings = scanner.settings
        self.source = scanner.source
        self.cancel = cancel
        self.walker = Walker(scanner.settings)
        self.tracker = _Progress(progress, self.walker)
        self.warnings: list[str] = []
        self.writer = _CacheWriter(scanner.cache, self.warnings)
        self.errors: list[tuple[str, str]] = []
        self.tracker.error_files = self.errors  # progress reports list them as they come
        self._errors_lock = threading.Lock()
        self.embeddings: dict[str, np.ndarray] = {}
        #: The pixel checks' thumbnails: this scan's (by path), and the cache's, read lazily.
        self.thumbs = _ScanThumbs(scanner.cache)
        self.partials: dict[str, str] = {}  # cached partial hashes, by path
        self.groups_reused = False  # the groups came from an earlier scan's stored grouping

    def _same_shot_checker(self, photos: int) -> SameShotChecker | None:
        if not self.settings.same_shot_check:
            return None

        def stage(step: str, total: int) -> None:
            self.tracker.start_phase("grouping", total, step)
            self.tracker.report(force=True)

        def advance(done: int) -> None:
            self.tracker.step(done)
            self.tracker.report()

        timeout, memory_mb = _decoder_limits()
        return SameShotChecker(
            self.scanner.cache,
            cancel=self.cancel,
            stage=stage,
            advance=advance,
            thumbs=self.thumbs,
            timeout=timeout,
            memory_mb=memory_mb,
            budget=budget_for(photos),
        )

    def _grouped(self, photos: list[Photo], model_id: str) -> list[Group]:
        """The groups: as stored by an earlier scan of the very same inputs, or computed
        (and stored when complete, see stored_groups.py)."""
        # Files that changed or vanished while we read them are left out.
        eligible = [p for p in photos if p.error is None or p.decodable is False]
        cache = self.scanner.cache
        key = stored_groups.fingerprint(
            eligible,
            self.embeddings,
            model_id,
            self.settings,
            checked=self.settings.same_shot_check,
        )
        try:
            payload = cache.stored_groups(key)
        except Exception:  # a cache problem never fails a scan: group afresh
            payload = None
        if payload is not None:
            groups = stored_groups.decode(payload, eligible)
            if groups is not None:
                self.groups_reused = True
                return groups
        checker = self._same_shot_checker(len(eligible))
        try:
            groups = self._group(eligible, model_id, checker)
        finally:
            if checker is not None:
                checker.close()
        if checker is not None and checker.over_budget:
            self.warnings.append(
                f"{checker.over_budget:,} similar pairs were not compared pixel by pixel: this "
                f"scan's budget of {checker.budget:,} pixel checks was spent (a folder of "
                "look-alikes); they get no similar verdict, and the grouping is redone next scan"
            )
        complete = not self.cancel.is_set() and (checker is None or checker.unanswered == 0)
        if complete:
            try:
                cache.store_groups(key, stored_groups.encode(groups))
            except Exception as exc:
                self.warnings.append(f"could not store the grouping for the next scan: {exc}")
        return groups

    def _group(
        self, eligible: list[Photo], model_id: str, checker: SameShotChecker | None
    ) -> list[Group]:
        return group_photos(
            eligible,
            self.embeddings,
            self.settings.thresholds_for(model_id),
            self.scanner.rules,
            delete_raw_jpeg_pairs=self.settings.delete_raw_jpeg_pairs,
            exact_limit=self.settings.exact_search_limit,
            cancel=self.cancel,
            tick=self.tracker.report,
            verify=checker,
        )

    def error(self, path: str, reason: str) -> None:
        with self._errors_lock:
            self.errors.append((path, reason))
        self.tracker.step(done=0, errors=1)

    def run(self, roots: Sequence[str]) -> ScanResult:
        started = time.monotonic()
        model_id = self.source.model_id
        self.tracker.report(force=True)
        photos: list[Photo] = []
        walk_complete = _Pipeline(self, model_id, roots).run(photos)
        self.writer.flush()

        self.tracker.start_phase("grouping", None)
        groups = self._grouped(photos, model_id)
        groups = self._hash_members(groups)
        self.writer.flush()
        counts = ScanCounts()
        if self.scanner.decisions is not None:
            try:
                undecided = self.scanner.decisions.undecided(groups)
            except Exception as exc:  # a damaged state db must not hide the results
                self.warnings.append(f"remembered decisions unavailable: {exc}")
                undecided = groups
            counts.dismissed = len(groups) - len(undecided)
            groups = undecided

        cancelled = self.cancel.is_set()
        if walk_complete and not cancelled:
            walked = _normalised([*self.settings.reference_folders, *roots])
            try:
                self.scanner.cache.purge(walked, (p.path for p in photos))
            except Exception as exc:  # a cache problem never fails a scan
                self.warnings.append(f"could not purge stale cache rows: {exc}")

        self._count(counts, groups)
        self.tracker.start_phase("cancelled" if cancelled else "done", None)
        return ScanResult(
            groups=groups,
            photos=photos,
            errors=self.walker.stats.errors + self.errors,
            counts=counts,
            elapsed=time.monotonic() - started,
            model_id=model_id,
            roots=_normalised(roots),
            cancelled=cancelled,
            warnings=self.warnings,
        )

    def _count(self, counts: ScanCounts, groups: list[Group]) -> None:
        stats = self.walker.stats
        counts.files, counts.bytes = stats.files_found, stats.bytes_found
        counts.hashed, counts.cache_hits = self.tracker.hashed, self.tracker.cache_hits
        counts.embedded = self.tracker.embedded
        counts.feature_requests = self.tracker.requested
        counts.groups_reused = self.groups_reused
        counts.symlinks_skipped = stats.symlinks_skipped
        counts.aliases_skipped = stats.aliases_skipped
        counts.trash_skipped = stats.trash_skipped
        by_kind: dict[str, int] = defaultdict(int)
        for group in groups:
            by_kind[group.kind.value] += 1
        counts.groups = dict(by_kind)
        counts.reclaimable = sum(g.reclaimable for g in groups)

    # ------------------------------------------------------------------ the pipeline's facts

    def _hashed(self, photo: Photo, digest: str | None, error: str | None) -> None:
        if digest is not None:
            photo.content_hash = digest
            self.writer.add(Record(photo.path, photo.stat, content_hash=digest))
        else:
            photo.error = error
            self.error(photo.path, error or "unreadable")

    def _features_done(self, replicas: list[Photo], result: FeatureResult) -> None:
        representative = replicas[0]
        _apply(representative, result, self.embeddings)
        if result.ok and result.thumb is not None:
            self.thumbs.made[representative.path] = result.thumb
        for other in replicas[1:]:
            _copy_features(representative, other, self.embeddings)
            self.thumbs.share(representative, other)
        if result.ok:
            self.tracker.step(embedded=1)
        else:
            self.tracker.step()
            self.error(representative.path, f"{result.error_code}: {result.error_message}")
        if result.ok or result.error_code in PERMANENT_ERRORS:
            self.writer.add(
                Record(
                    representative.path,
                    representative.stat,
                    content_hash=representative.content_hash,
                    model_id=self.source.model_id,
                    features=result,
                    thumb=result.thumb if result.ok else None,
                )
            )

    def _hash_members(self, groups: list[Group]) -> list[Group]:
        """Near and similar members need content hashes too (decisions, reports, revalidation).
        A member that cannot be hashed now leaves its group; a keeper takes the group along."""
        missing = [m.photo for g in groups for m in g.members if m.photo.content_hash is None]
        if missing:
            exact.hash_all(missing, exact.full_hash, self.cancel, self._hashed)
        kept: list[Group] = []
        for group in groups:
            keeper = group.keeper_member
            members = [m for m in group.members if m.photo.content_hash is not None]
            if keeper.photo.content_hash is None or len(members) < 2:
                continue
            group.members = members
            group.keeper = members.index(keeper)
            group.scores = {m.photo.path: group.scores[m.photo.path] for m in members}
            kept.append(group)
        return kept


def _decoder_limits() -> tuple[float, int]:
    """The limits the user set for photodupd's decoders (``[daemon] decode_timeout`` and
    ``decode_memory_mb``): the pixel checks' isolated decodes keep them too.  A config file
    that does not load leaves the defaults (the daemon and the CLI say why)."""
    try:
        config = load_daemon_config()
    except Exception:
        config = DaemonConfig()
    return config.decode_timeout, config.decode_memory_mb


class _ScanThumbs:
    """The pixel checks' thumbnails (packed) a scan has, for its SameShotChecker (a
    ``sameshot_check.ThumbSource``): those its feature results carried, in memory, and
    those of cached photos, read from the cache only when a check asks for them.  A
    byte-identical replica shares its representative's."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.made: dict[str, bytes] = {}  # this scan's, by path
        self._alias: dict[str, Photo] = {}  # a replica's path -> the photo its features are

    def share(self, source: Photo, replica: Photo) -> None:
        self._alias[replica.path] = self._alias.get(source.path, source)

    def thumbs(self, photos: Sequence[Photo]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        stored_for: dict[str, Photo] = {}
        for photo in photos:
            source = self._alias.get(photo.path, photo)
            packed = self.made.get(source.path)
            if packed is not None:
                found[photo.path] = packed
            else:
                stored_for[photo.path] = source
        if stored_for:
            sources = list({p.path: p for p in stored_for.values()}.values())
            stored = self.cache.thumbs(sources)
            for path, source in stored_for.items():
                if source.path in stored:
                    found[path] = stored[source.path]
        return found

    def keep(self, made: Sequence[tuple[Photo, bytes]]) -> None:
        for photo, packed in made:
            self.made[photo.path] = packed
        self.cache.store(Record(p.path, p.stat, thumb=packed) for p, packed in made)


class _Pipeline:
    """Walk, cache look-ups, the exact tier and feature requests of one scan, overlapped.

    Three kinds of threads feed one queue of events, all handled on the thread that called
    ``Scanner.run`` (so the scan's state needs no lock): the walker (with the cache's facts
    about each batch of files it finds), the hash threads (exact.Tier says which reads each
    new fact calls for), and the feature source's thread (its results).  Feature requests go
    out through a PathFeed as soon as a file's turn is sure:

    * A file is asked about at most once per content (a second copy stays free): it goes
      when no file of its size that holds features (asked about, or cached) could be its
      byte-identical twin.  The first file of a size goes at once; another waits until the
      reads of its size are done, then shares the features of the file it is identical to,
      or goes too.  The first one asked stands for its replicas.
    * Until the walk ends, a new file whose size a cached file under the roots has waits:
      the cached file, walked later, may be its twin, whose features are free.
    * RAW files without rawpy are never asked (see ``_askable``).
    """

    def __init__(self, scan: _Run, model_id: str, roots: Sequence[str]) -> None:
        self.scan = scan
        self.model_id = model_id
        self.roots = roots
        self.cancel = scan.cancel
        self.tracker = scan.tracker
        self.tier = exact.Tier()
        self.feed = PathFeed()
        self._events: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(exact.HASH_THREADS, thread_name_prefix="photodup-hash")
        self._walking = self._computing = True
        self._walk_complete = False
        self._stopped = False
        self._shown = "walking"  # the phase the reports show
        self._holders: dict[int, int] = defaultdict(int)  # by size: files that hold features
        self._holder_of: dict[str, Photo] = {}  # path -> the file whose features it has
        self._by_content: dict[str, Photo] = {}  # content hash -> the file holding features
        self._replicas: dict[str, list[Photo]] = {}  # asked path -> its replicas, it first
        self._answered: set[str] = set()
        self._waiting: dict[int, dict[str, Photo]] = defaultdict(dict)  # by size, by path
        self._blind: dict[int, list[Photo]] = defaultdict(list)  # holders whose partial is
        # not known yet, by size (pruned as they become known)
        self._read_errors: dict[str, str] = {}
        self._raw_left_out: list[str] = []
        self._raw_readable: bool | None = None
        self._cached_sizes = self._sizes_with_features()

    def _sizes_with_features(self) -> set[int] | None:
        """None when unknown: then no file is asked about before the walk ends."""
        settings = self.scan.settings
        try:
            roots = _normalised([*settings.reference_folders, *self.roots])
            return self.scan.scanner.cache.sizes_with_features(roots, self.model_id)
        except Exception:  # a cache problem never fails a scan: just overlap less
            return None

    # ------------------------------------------------------------------ the loop

    def run(self, photos: list[Photo]) -> bool:
        """Everything up to grouping; True when the walk went through every root."""
        self.photos = photos
        walker = threading.Thread(target=self._walk, name="photodup-walk", daemon=True)
        computer = threading.Thread(target=self._compute, name="photodup-features", daemon=True)
        walker.start()
        computer.start()
        try:
            while self._walking or self._computing or self.tier.pending:
                try:
                    event = self._events.get(timeout=PROGRESS_INTERVAL)
                except queue.Empty:
                    pass
                else:
                    event()
                if self.cancel.is_set():
                    self._stop()
                else:
                    self._next_phase()
                self.tracker.report()
        finally:
            self._stop()
            computer.join()
            self._pool.shutdown(wait=True)
        walker.join()
        self.tracker.requested += self.feed.total
        self.tracker.report(force=True)  # the bar ends full, not at its last timed report
        if self._raw_left_out:
            files = sum(len(self._replicas[path]) for path in self._raw_left_out)
            self.scan.warnings.append(
                f"{files} RAW {'file' if files == 1 else 'files'} compared byte for byte only: "
                "install photodup[raw] to compare their previews"
            )
        return self._walk_complete

    def _post(self, handler: Callable[..., None], *args: Any) -> None:
        self._events.put(functools.partial(handler, *args))

    def _stop(self) -> None:
        """No new reads or requests; those running finish and what they learn is kept."""
        if not self._stopped:
            self._stopped = True
            self.feed.close()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _next_phase(self) -> None:
        """Show the earliest stage still running, each with its exact total once it is known:
        the quick check's once the walk is done, the full reads' once the quick check is."""
        tier = self.tier
        if self._shown == "walking" and not self._walking:
            self._shown = QUICK_CHECK
            for size in list(self._waiting):  # those that waited for the walk to end
                self._reconsider(size)
            self.tracker.start_phase("hashing", tier.partials_asked, QUICK_CHECK, fresh=False)
        if self._shown == QUICK_CHECK and tier.partials_done == tier.partials_asked:
            self._shown = FULL_READ
            self.tracker.report(force=True)  # the quick check's bar ends full
            self.tracker.start_phase("hashing", tier.fulls_asked, FULL_READ, fresh=False)
        if self._shown == FULL_READ and tier.pending == 0:
            self._shown = "features"
            self.tracker.report(force=True)
            for size in list(self._waiting):
                self._reconsider(size)
            self.feed.close()  # every file is decided: nothing more to ask
            if self.feed.total:
                self.tracker.start_phase("features", self.feed.total, fresh=False)

    # ------------------------------------------------------------------ the threads

    def _walk(self) -> None:
        """The walker's thread: batches of files, with what the cache knows of them."""
        try:
            batch: list[Photo] = []
            started = time.monotonic()
            for photo in self.scan.walker.walk(self.roots, self.cancel):
                batch.append(photo)
                if len(batch) >= WALK_BATCH or time.monotonic() - started >= WALK_BATCH_SECONDS:
                    self._post(self._found, batch, self._lookup(batch))
                    batch, started = [], time.monotonic()
            if batch:
                self._post(self._found, batch, self._lookup(batch))
            self._walk_complete = not self.cancel.is_set()
        except BaseException as exc:
            self._post(_reraise, exc)
        finally:
            self._post(self._walk_ended)

    def _lookup(self, batch: list[Photo]) -> dict[str, CachedFile]:
        return self.scan.scanner.cache.lookup(batch, self.model_id)

    def _compute(self) -> None:
        """The feature source's thread: a streaming source starts on the first path the
        feed gives; another is given them all at once when the feed is closed."""
        source = self.scan.source

        def on_result(path: str, result: FeatureResult) -> None:
            self._post(self._answer, path, result)

        try:
            stream = getattr(source, "compute_feed", None)
            if callable(stream):
                stream(self.feed, on_result, self.cancel)
            else:
                paths = self._everything_fed()
                if paths and not self.cancel.is_set():
                    source.compute(paths, on_result, self.cancel)
        except BaseException as exc:  # reported as a warning; partial results are kept
            self._post(self._failed, exc)
        finally:
            self._post(self._computed)

    def _everything_fed(self) -> list[str]:
        paths: list[str] = []
        while not self.cancel.is_set():
            more = self.feed.take(1 << 30, timeout=PROGRESS_INTERVAL)
            if more is None:
                break
            paths += more
        return paths

    def _read(self, stage: str, photos: list[Photo]) -> None:
        hasher = exact.partial_hash if stage == QUICK_CHECK else exact.full_hash
        for photo in photos:
            if self._stopped:
                self.tier.dropped(photo, full=stage == FULL_READ)
                continue
            future = self._pool.submit(exact.hash_one, photo, hasher, self.cancel)
            future.add_done_callback(functools.partial(self._read_finished, stage, photo))

    def _read_finished(
        self, stage: str, photo: Photo, future: Future[tuple[Photo, str | None, str | None]]
    ) -> None:
        """On a hash thread (or here when already done): hand the outcome to the loop."""
        if future.cancelled():
            self._post(self.tier.dropped, photo, stage == FULL_READ)
            return
        _photo, digest, error = future.result()
        if digest is None and error is None:  # cancelled before it read
            self._post(self.tier.dropped, photo, stage == FULL_READ)
        elif stage == QUICK_CHECK:
            self._post(self._partial_hashed, photo, digest, error)
        else:
            self._post(self._full_hashed, photo, digest, error)

    # ------------------------------------------------------------------ events

    def _walk_ended(self) -> None:
        self._walking = False

    def _computed(self) -> None:
        self._computing = False

    def _failed(self, exc: BaseException) -> None:
        self.scan.warnings.append(f"feature computation stopped early: {exc}")

    def _found(self, batch: list[Photo], cached: dict[str, CachedFile]) -> None:
        self.photos.extend(batch)
        for photo in batch:  # cached features first: they make the batch's copies free
            entry = cached.get(photo.path)
            if entry is not None:
                self._use_cache(photo, entry)
        for photo in batch:
            partials, fulls = self.tier.add(photo, self.scan.partials.get(photo.path))
            self._read(QUICK_CHECK, partials)
            self._read(FULL_READ, fulls)
        for photo in batch:
            self._consider(photo)

    def _use_cache(self, photo: Photo, entry: CachedFile) -> None:
        photo.content_hash = entry.content_hash
        if entry.partial_hash is not None:
            self.scan.partials[photo.path] = entry.partial_hash
        if entry.features is None:
            return
        _apply(photo, entry.features, self.scan.embeddings)
        self.tracker.step(0, cache_hits=1)
        if not entry.features.ok:  # known bad: say so again, but ask no one
            self.scan.error(photo.path, photo.error or "undecodable")
        self._hold(photo)

    def _partial_hashed(self, photo: Photo, digest: str | None, error: str | None) -> None:
        self.tracker.step(stage=QUICK_CHECK, hashed=1)
        if digest is not None:
            self.scan.writer.add(Record(photo.path, photo.stat, partial_hash=digest))
        else:
            photo.error = error
            self._read_errors[photo.path] = error or "unreadable"
            self.scan.error(photo.path, error or "unreadable")
        self._read(FULL_READ, self.tier.partial_done(photo, digest))
        size = photo.stat.size
        if self._holder_of.get(photo.path) is photo or self.tier.settled(size):
            self._reconsider(size)  # a file others waited for (or everything) is known now
        elif (waiting := self._waiting[size].pop(photo.path, None)) is not None:
            self._consider(waiting)

    def _full_hashed(self, photo: Photo, digest: str | None, error: str | None) -> None:
        self.tracker.step(stage=FULL_READ, hashed=1)
        self.scan._hashed(photo, digest, error)
        self.tier.full_done(photo, digest)
        if digest is None:
            self._read_errors[photo.path] = error or "unreadable"
        elif self._holder_of.get(photo.path) is photo:
            self._by_content.setdefault(digest, photo)
        size, partial = photo.stat.size, self.tier.partial_of(photo)
        if self.tier.settled(size):
            self._reconsider(size)
        else:  # those sharing its partial hash may be decided now
            for other in list(self._waiting[size].values()):
                if self.tier.partial_of(other) == partial:
                    self._consider(self._waiting[size].pop(other.path))

    def _answer(self, path: str, result: FeatureResult) -> None:
        replicas = self._replicas.get(path)
        if replicas is None or path in self._answered:
            return  # not a path we asked about (or asked about once): ignore, not guess
        self._answered.add(path)
        with self.tracker.crediting("features"):
            self.scan._features_done(replicas, result)
        if (error := self._read_errors.get(path)) is not None:
            replicas[0].error = error  # it changed under the exact tier: not a member

    # ------------------------------------------------------------------ who is asked

    def _consider(self, photo: Photo) -> None:
        """Ask about ``photo`` now, give it its twin's features, or let it wait."""
        if (
            self._stopped
            or photo.path in self._holder_of
            or photo.decodable is not None
            or photo.error is not None  # unreadable, or changed during the exact tier
        ):
            return
        if self._undecided(photo):
            self._waiting[photo.stat.size][photo.path] = photo
            return
        twin = self._by_content.get(photo.content_hash) if photo.content_hash else None
        if twin is not None:
            self._share(photo, twin)
        else:
            self._ask(photo)

    def _undecided(self, photo: Photo) -> bool:
        """Whether a file holding features could still turn out byte-identical to ``photo``
        without its content hash saying so yet."""
        size = photo.stat.size
        if self._walking and (self._cached_sizes is None or size in self._cached_sizes):
            return True  # a cached twin may still be walked
        if not self._holders[size] or self.tier.settled(size):
            return False  # no file to be its twin, or every relation of its size known
        # Reads of its size are outstanding.  It is decided when its own partial hash is
        # known, so are those of the holders of its size, and no file sharing its partial
        # hash waits for a full read: then only a content hash can say "identical".
        if not self.tier.resolved(photo):
            return True
        blind = self._blind[size]
        blind[:] = [
            h for h in blind if self.tier.partial_of(h) is None and h.path not in self.tier.failed
        ]
        return bool(blind)

    def _reconsider(self, size: int) -> None:
        for photo in list(self._waiting.pop(size, {}).values()):
            self._consider(photo)

    def _hold(self, photo: Photo) -> None:
        """``photo`` holds (or will hold) the features of its content."""
        self._holder_of[photo.path] = photo
        self._holders[photo.stat.size] += 1
        if self.tier.partial_of(photo) is None:
            self._blind[photo.stat.size].append(photo)
        if photo.content_hash is not None:
            self._by_content.setdefault(photo.content_hash, photo)

    def _ask(self, photo: Photo) -> None:
        self._hold(photo)
        self._replicas[photo.path] = [photo]
        if self._askable(photo.path):
            self.feed.put(photo.path)
        else:
            self._raw_left_out.append(photo.path)

    def _share(self, photo: Photo, holder: Photo) -> None:
        """``photo`` is byte-identical to ``holder``: its features, once known, are free."""
        self._holder_of[photo.path] = holder
        replicas = self._replicas.get(holder.path)
        if replicas is not None:
            replicas.append(photo)  # _features_done gives them to it
        if holder.decodable is not None:  # known already (cached, or answered)
            _copy_features(holder, photo, self.scan.embeddings)
            self.scan.thumbs.share(holder, photo)

    def _askable(self, path: str) -> bool:
        """When the source's decoders cannot read RAW files (no rawpy where they run: the
        daemon says so in its welcome), rather than an error for each on every scan, RAW
        files are left out of the feature stage with one warning.  They keep the exact tier
        and RAW+JPEG pairing; ``decodable`` stays None (never tried), so they never join a
        group by similarity, and nothing is cached: a scan after installing rawpy asks."""
        return not has_raw_suffix(path) or self.scan.source.decodes_raw


def _reraise(exc: BaseException) -> None:
    raise exc


def _apply(photo: Photo, result: FeatureResult, embeddings: dict[str, np.ndarray]) -> None:
    photo.decodable = result.ok
    photo.error = None if result.ok else f"{result.error_code}: {result.error_message}"
    photo.phash = result.phash
    photo.width, photo.height = result.width, result.height
    photo.format = result.format
    photo.taken, photo.camera = result.taken, result.camera
    photo.exif_fields = result.exif_fields
    if result.ok and result.embedding is not None:
        embeddings[photo.path] = quantise(result.embedding)


def _copy_features(source: Photo, target: Photo, embeddings: dict[str, np.ndarray]) -> None:
    target.decodable, target.error = source.decodable, source.error
    target.phash = source.phash
    target.width, target.height, target.format = source.width, source.height, source.format
    target.taken, target.camera, target.exif_fields = (
        source.taken,
        source.camera,
        source.exif_fields,
    )
    if source.path in embeddings:
        embeddings[target.path] = embeddings[source.path]


def _normalised(roots: Sequence[str]) -> list[str]:
    return [os.path.abspath(os.fsdecode(r)) for r in roots]
