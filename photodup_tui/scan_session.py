"""One scan, as the terminal UI and ``photodup scan`` both run it.

A :class:`ScanSession` chooses the features (photodupd's model, started if need be, or
perceptual hashes only when it cannot serve: the reason said once, to ``chosen``), opens
the cache and the user's remembered answers around the scan and closes them whatever
happens, runs the scanner with the caller's progress and cancel, and hands back what the
user answered in earlier scans: the groups they hid, the keepers they chose.

No Textual here: the TUI's scan worker and the CLI call :meth:`ScanSession.run` on a thread
of their own and hear about it through its callbacks.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from photodup_tui.engine.cache import Cache, CacheError
from photodup_tui.engine.cancellable import Cancelled, run_cancellable
from photodup_tui.engine.daemon_features import DaemonFeatureSource
from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.decisions import Decision, Decisions
from photodup_tui.engine.features import FeatureSource
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.scan import Scanner, ScanProgress, ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group
from photodup_tui.formatting import short_reason

#: How a scan's feature source opens: (the launcher's lines, cancel) -> the source.
SourceFactory = Callable[[Report, threading.Event], "OpenedSource"]

UNAVAILABLE = "photodupd is not available: "
MODEL_OFF = "the model is turned off in the settings"


@dataclass(slots=True)
class OpenedSource:
    source: FeatureSource
    #: None with the daemon's model; otherwise why the scan runs without one
    fallback_reason: str | None = None
    #: why photodupd could not serve, in one line, when that is the fallback's reason
    daemon_error: str | None = None


def open_feature_source(
    use_model: bool,
    socket_path: Path | None,
    report: Report,
    cancel: threading.Event,
    start_lock: threading.Lock | None = None,
    *,
    model: str = "auto",
) -> OpenedSource:
    """The daemon's model, or the no-model mode when the user chose it or the daemon fails.

    ``start_lock`` is held while the daemon is started, so the app's own start at launch and
    a scan never spawn two daemons at once.  ``model``: what a daemon started now loads
    (one already running serves what it serves).  Raises Cancelled when ``cancel`` comes
    while photodupd starts or loads its model.
    """
    if not use_model:
        return OpenedSource(LocalFeatureSource(), MODEL_OFF)
    lock = start_lock or threading.Lock()
    daemon_args = [] if model == "auto" else ["--model", model]

    def connect() -> DaemonFeatureSource:
        with lock:
            return DaemonFeatureSource(
                socket_path, report=report, start=True, daemon_args=daemon_args
            )

    try:
        source = run_cancellable(connect, cancel)
    except Cancelled:
        raise
    except Exception as exc:  # DaemonStartFailed, a broken socket, a bad reply ...
        why = short_reason(exc)
        return OpenedSource(LocalFeatureSource(), UNAVAILABLE + why, daemon_error=why)
    return OpenedSource(source)


def daemon_or_local(
    use_model: bool,
    socket_path: Path | None = None,
    start_lock: threading.Lock | None = None,
    model: str = "auto",
) -> SourceFactory:
    """:func:`open_feature_source` with these choices, for a :class:`ScanSession`."""

    def factory(report: Report, cancel: threading.Event) -> OpenedSource:
        return open_feature_source(use_model, socket_path, report, cancel, start_lock, model=model)

    return factory


@dataclass(slots=True)
class Scanned:
    result: ScanResult
    #: groups an earlier "not duplicates" / "keep all" answer hides, so the UI can list them
    #: and bring one back without scanning again
    hidden: list[tuple[Group, Decision]] = field(default_factory=list)
    #: (group, member index): the keeper the user chose in an earlier scan
    keepers: list[tuple[Group, int]] = field(default_factory=list)
    #: None with the daemon's model; otherwise why the scan ran without one
    fallback_reason: str | None = None


def _ignore(_value: object) -> None:
    pass


class ScanSession:
    """A scan's setting up and tearing down, the same for the TUI and the CLI.

    ``threshold``: a near-duplicate threshold for whichever model the scan ends up with
    (``photodup scan --threshold``).  ``cache_required``: a cache that cannot be opened
    stops the scan (CacheError: the CLI's configuration error); otherwise the scan runs on
    a throw-away cache, and its result says so.
    """

    def __init__(
        self,
        settings: ScanSettings,
        features: SourceFactory,
        *,
        threshold: float | None = None,
        cache_required: bool = False,
    ) -> None:
        self.settings = settings
        self.features = features
        self.threshold = threshold
        self.cache_required = cache_required

    def run(
        self,
        roots: Sequence[str],
        cancel: threading.Event,
        *,
        progress: Callable[[ScanProgress], None],
        report: Report = _ignore,
        chosen: Callable[[OpenedSource], None] = _ignore,
    ) -> Scanned:
        """Scan ``roots``.  ``report`` hears the launcher's lines while photodupd starts,
        ``chosen`` the feature source once it is known, ``progress`` the scan itself.

        Raises Cancelled when ``cancel`` comes before the scan starts (while photodupd
        starts); a cancel during the scan returns what was found so far.  Raises CacheError
        (``cache_required``) and SettingsError (a threshold the model cannot take) before
        anything is read.
        """
        opened = self.features(report, cancel)
        chosen(opened)
        settings = self.settings
        if self.threshold is not None:
            settings = settings.with_threshold(opened.source.model_id, self.threshold)
        scanned = self._scan(roots, settings, opened.source, progress, cancel)
        scanned.fallback_reason = opened.fallback_reason
        return scanned

    def _scan(
        self,
        roots: Sequence[str],
        settings: ScanSettings,
        source: FeatureSource,
        progress: Callable[[ScanProgress], None],
        cancel: threading.Event,
    ) -> Scanned:
        """The scan with the user's cache and remembered answers, both closed after it."""
        warnings: list[str] = []
        with contextlib.ExitStack() as stack:
            cache = stack.enter_context(self._open_cache(warnings))
            remembered = _Remembered.open(warnings)
            if remembered is not None:
                stack.callback(remembered.close)
            result = Scanner(settings, source, cache, remembered).run(roots, progress, cancel)
            hidden, keepers = (
                remembered.answers(result.groups, warnings) if remembered else ([], [])
            )
        result.warnings[:0] = warnings
        return Scanned(result, hidden, keepers)

    def _open_cache(self, warnings: list[str]) -> Cache:
        """The user's cache; a throw-away one when it cannot be opened (and not required)."""
        try:
            return Cache()
        except CacheError as exc:
            if self.cache_required:
                raise
            warnings.append(f"{exc}; this scan will not be remembered")
            return Cache(Path(tempfile.mkdtemp(prefix="photodup-cache-")) / "cache.sqlite")


class _Remembered(Decisions):
    """The user's earlier answers.  The groups they hide are kept, not dropped, so the UI
    can list them and bring one back without scanning again."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: list[tuple[Group, Decision]] = []

    @classmethod
    def open(cls, warnings: list[str]) -> _Remembered | None:
        """The store, or None when it cannot be read: the scan goes on without it."""
        try:
            return cls()
        except (OSError, sqlite3.Error) as exc:
            warnings.append(f"your earlier 'not duplicates' answers cannot be read: {exc}")
            return None

    def undecided(self, groups: Iterable[Group]) -> list[Group]:
        shown, self.hidden = self.split(groups)
        return shown

    def answers(
        self, groups: Sequence[Group], warnings: list[str]
    ) -> tuple[list[tuple[Group, Decision]], list[tuple[Group, int]]]:
        """The groups the user hid, and the keeper the user chose in an earlier scan for
        each group (shown or hidden) that has one."""
        try:
            keepers = self.keepers_for([*groups, *(g for g, _decision in self.hidden)])
        except sqlite3.Error as exc:
            warnings.append(f"your earlier keeper choices cannot be read: {exc}")
            keepers = []
        return self.hidden, keepers
