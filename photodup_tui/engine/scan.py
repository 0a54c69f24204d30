"""One scan, start to finish: walk -> cache -> exact tier -> features -> groups.

``Scanner.run`` is blocking and thread-friendly: the TUI calls it from a thread worker, the
CLI from its main thread.  It never prints; it reports :class:`ScanProgress` on a time budget
(about every 0.25 s, and once at the end), always from the thread that called ``run``.
Setting ``cancel`` stops the scan at the next file: everything learnt so far is already in
the cache, and the result holds the groups that what was learnt supports.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from photodup_tui.engine import exact, stored_groups
from photodup_tui.engine.cache import Cache, Record, quantise
from photodup_tui.engine.decisions import Decisions
from photodup_tui.engine.features import PERMANENT_ERRORS, FeatureResult, FeatureSource
from photodup_tui.engine.grouping import group_photos
from photodup_tui.engine.keeprules import KeepRules
from photodup_tui.engine.sameshot_check import SameShotChecker, budget_for
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group, Photo, ScanCounts, ScanResult
from photodup_tui.engine.walk import Walker, has_raw_suffix
from photodupd import rawimage

PROGRESS_INTERVAL = 0.25
CACHE_BATCH = 500
CACHE_BATCH_SECONDS = 1.0
#: The two parts of the hashing phase, as progress reports name them.
QUICK_CHECK = "quick check of files that share a size"
FULL_READ = "reading possible copies in full"


@dataclass(frozen=True, slots=True)
class ScanProgress:
    phase: str  # walking | hashing | features | grouping | done | cancelled
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
    """Counters shared with worker threads, and the time budget for reporting them."""

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
        self._phase_done = 0
        self._phase_total: int | None = None
        self._step = ""
        self._phase_start = self._scan_start = time.monotonic()
        self._last = 0.0
        self.error_files: list[tuple[str, str]] = []  # the run's own list, shared

    def start_phase(self, phase: str, total: int | None, step: str = "") -> None:
        with self._lock:
            self.phase, self._phase_total, self._phase_done = phase, total, 0
            self._step = step
            self._phase_start = time.monotonic()
        self.report(force=True)

    def step(self, done: int = 1, **increments: int) -> None:
        """Advance the phase by ``done`` items and add ``increments`` to the named counters."""
        with self._lock:
            self._phase_done += done
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_INTERVAL:
            return
        self._last = now
        stats = self._walker.stats
        with self._lock:
            elapsed = max(now - self._phase_start, 1e-6)
            done = self._phase_done
            if self.phase in ("walking", "done", "cancelled"):  # whole-scan rate
                done = stats.files_found
                elapsed = max(now - self._scan_start, 1e-6) if self.phase != "walking" else elapsed
            rate = done / elapsed
            eta = None
            if self._phase_total is not None and rate > 0:
                eta = max(0.0, (self._phase_total - self._phase_done) / rate)
            phase_done = stats.files_found if self.phase == "walking" else self._phase_done
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

        return SameShotChecker(
            self.scanner.cache,
            cancel=self.cancel,
            stage=stage,
            advance=advance,
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
        for photo in self.walker.walk(roots, self.cancel):
            photos.append(photo)
            self.tracker.report()
        walk_complete = not self.cancel.is_set()

        self._use_cache(photos, model_id)
        if not self.cancel.is_set():
            self._exact_tier(photos)
        if not self.cancel.is_set():
            self._features(photos)
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

    # ------------------------------------------------------------------ phases

    def _use_cache(self, photos: list[Photo], model_id: str) -> None:
        cached = self.scanner.cache.lookup(photos, model_id) if photos else {}
        for photo in photos:
            entry = cached.get(photo.path)
            if entry is None:
                continue
            photo.content_hash = entry.content_hash
            if entry.partial_hash is not None:
                self.partials[photo.path] = entry.partial_hash
            if entry.features is not None:
                _apply(photo, entry.features, self.embeddings)
                self.tracker.cache_hits += 1
                if not entry.features.ok:  # known bad: say so again, but ask no one
                    self.error(photo.path, photo.error or "undecodable")

    def _exact_tier(self, photos: list[Photo]) -> None:
        self.tracker.start_phase("hashing", None, QUICK_CHECK)

        def partial_done(photo: Photo, digest: str | None, error: str | None) -> None:
            self.tracker.step(hashed=1)
            if digest is not None:
                self.writer.add(Record(photo.path, photo.stat, partial_hash=digest))
            else:
                self.error(photo.path, error or "unreadable")
            self.tracker.report()

        def partial_total(count: int) -> None:
            self.tracker.start_phase("hashing", count, QUICK_CHECK)

        full = exact.candidates_for_full_hash(
            photos, self.cancel, partial_done, self.partials, on_total=partial_total
        )
        self.tracker.start_phase("hashing", len(full), FULL_READ)
        self._full_hashes(full)

    def _full_hashes(self, photos: Sequence[Photo]) -> None:
        def done(photo: Photo, digest: str | None, error: str | None) -> None:
            self.tracker.step(hashed=1)
            self._hashed(photo, digest, error)
            self.tracker.report()

        exact.hash_all(photos, exact.full_hash, self.cancel, done)
        self.tracker.report(force=True)  # the bar ends full, not at its last timed report

    def _hashed(self, photo: Photo, digest: str | None, error: str | None) -> None:
        if digest is not None:
            photo.content_hash = digest
            self.writer.add(Record(photo.path, photo.stat, content_hash=digest))
        else:
            photo.error = error
            self.error(photo.path, error or "unreadable")

    def _features(self, photos: list[Photo]) -> None:
        """Features once per content: byte-identical replicas share their representative's."""
        todo = self._askable(self._representatives(photos))
        if not todo:
            return
        self.tracker.start_phase("features", len(todo))
        self.tracker.requested += len(todo)
        finished = threading.Event()
        failure: list[BaseException] = []

        def on_result(path: str, result: FeatureResult) -> None:
            replicas = todo.get(path)
            if replicas is None:
                return  # not a path we asked about: ignore rather than guess
            self._features_done(replicas, result)

        def compute() -> None:
            try:
                self.source.compute(list(todo), on_result, self.cancel)
            except BaseException as exc:  # reported as a warning; partial results are kept
                failure.append(exc)
            finally:
                finished.set()

        worker = threading.Thread(target=compute, name="photodup-features", daemon=True)
        worker.start()
        # Progress comes from this thread, whatever thread the source calls back on.
        while not finished.wait(PROGRESS_INTERVAL):
            self.tracker.report()
        worker.join()
        self.tracker.report(force=True)
        if failure:
            self.warnings.append(f"feature computation stopped early: {failure[0]}")

    def _askable(self, todo: dict[str, list[Photo]]) -> dict[str, list[Photo]]:
        """Without rawpy no decoder here reads RAW files: rather than an error for each on every
        scan, they are left out of the feature stage with one warning.  They keep the exact
        tier and RAW+JPEG pairing; ``decodable`` stays None (never tried), so they never join
        a group by similarity, and nothing is cached: a scan after installing rawpy asks."""
        raw = [path for path in todo if has_raw_suffix(path)]
        if not raw or rawimage.available():
            return todo
        files = sum(len(todo.pop(path)) for path in raw)
        self.warnings.append(
            f"{files} RAW {'file' if files == 1 else 'files'} compared byte for byte only: "
            "install photodup[raw] to compare their previews"
        )
        return todo

    def _representatives(self, photos: list[Photo]) -> dict[str, list[Photo]]:
        """Representative path -> the replicas it stands for (representative first), for every
        content whose features neither the cache nor a replica already gave us."""
        by_content: dict[str, list[Photo]] = defaultdict(list)
        todo: dict[str, list[Photo]] = {}
        for photo in photos:
            if photo.error is not None and photo.decodable is None:
                continue  # unreadable or changed during the exact tier
            if photo.content_hash is None:
                if photo.decodable is None:
                    todo[photo.path] = [photo]
            else:
                by_content[photo.content_hash].append(photo)
        for replicas in by_content.values():
            known = next((p for p in replicas if p.decodable is not None), None)
            if known is None:
                replicas.sort(key=lambda p: p.path)  # stable choice: the next scan asks no one
                todo[replicas[0].path] = replicas
                continue
            for other in replicas:
                if other.decodable is None:
                    _copy_features(known, other, self.embeddings)
        return todo

    def _features_done(self, replicas: list[Photo], result: FeatureResult) -> None:
        representative = replicas[0]
        _apply(representative, result, self.embeddings)
        for other in replicas[1:]:
            _copy_features(representative, other, self.embeddings)
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
