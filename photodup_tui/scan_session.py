"""One scan, as the terminal UI and ``photodup scan`` both run it.

A :class:`ScanSession` chooses the features (photodupd's model where the user placed it:
remote, local, inline, or in ``auto`` the first of those that serves; perceptual hashes
only when none can: each step down said once with why, to ``chosen``), opens
the cache and the user's remembered answers around the scan and closes them whatever
happens, runs the scanner with the caller's progress and cancel, and hands back what the
user answered in earlier scans: the groups they hid, the keepers they chose.

No Textual here: the TUI's scan worker and the CLI call :meth:`ScanSession.run` on a thread
of their own and hear about it through its callbacks.
"""

from __future__ import annotations

import contextlib
import functools
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
from photodup_tui.engine.placement import Placement, open_inline, open_ray, open_remote
from photodup_tui.engine.scan import Scanner, ScanProgress, ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group
from photodup_tui.formatting import short_reason

#: How a scan's feature source opens: (the launcher's lines, cancel) -> the source.
SourceFactory = Callable[[Report, threading.Event], "OpenedSource"]

UNAVAILABLE = "photodupd is not available: "
MODEL_OFF = "the model is turned off in the settings"


#: Which mode served a scan without a model.
NO_MODEL = "none"


@dataclass(slots=True)
class OpenedSource:
    source: FeatureSource
    #: None with the daemon's model; otherwise why the scan runs without one
    fallback_reason: str | None = None
    #: why photodupd could not serve, in one line, when that is the fallback's reason
    daemon_error: str | None = None
    #: where the model runs: "remote", "local", "inline", "ray", or "none"
    mode: str = "local"
    #: each step down before this source (auto: remote -> local -> inline), in one line with
    #: why; the last step, to no model, is ``daemon_error``
    steps: list[str] = field(default_factory=list)
    #: what ``daemon_error`` is about, as the fallback's warning names it
    unavailable: str = "photodupd"

    def served_by(self) -> str:
        """Which model served the scan and where, for the status line and the summary;
        "" without a model (the fallback reason says why)."""
        if self.mode == NO_MODEL:
            return ""
        detail = getattr(self.source, "served_by", None)
        where = detail() if callable(detail) else "the local photodupd (local)"
        return f"{self.source.model_id} on {where}"


def open_feature_source(
    use_model: bool,
    socket_path: Path | None,
    report: Report,
    cancel: threading.Event,
    start_lock: threading.Lock | None = None,
    *,
    model: str = "auto",
    placement: Placement | None = None,
) -> OpenedSource:
    """The model where ``placement`` puts it (default: ``auto``), or the no-model mode when
    the user chose it or no mode can serve.

    ``start_lock`` is held while the local daemon is started, so the app's own start at
    launch and a scan never spawn two daemons at once.  ``model``: what a daemon started now
    loads (one already running serves what it serves).  Raises Cancelled when ``cancel``
    comes while photodupd starts or loads its model.
    """
    if not use_model:
        return OpenedSource(LocalFeatureSource(), MODEL_OFF, mode=NO_MODEL)
    placement = placement or Placement()
    order = placement.order()
    steps: list[str] = []
    why = ""
    for index, mode in enumerate(order):
        try:
            opener = functools.partial(
                _open, mode, placement, socket_path, report, cancel, start_lock, model
            )
            source = run_cancellable(opener, cancel)
        except Cancelled:
            raise
        except Exception as exc:  # DaemonStartFailed, ssh's reasons, a bad reply ...
            why = short_reason(exc)
            if index + 1 < len(order):
                following = placement.describe(order[index + 1])
                steps.append(
                    f"{placement.describe(mode)} is unavailable ({why}); trying {following}"
                )
                report(steps[-1])
            continue
        return OpenedSource(source, mode=mode, steps=steps)
    # A Ray cluster is no photodupd: the warning names what did not answer.
    last = placement.describe(order[-1]) if order[-1] == "ray" else "photodupd"
    return OpenedSource(
        LocalFeatureSource(),
        UNAVAILABLE + why,
        daemon_error=why,
        mode=NO_MODEL,
        steps=steps,
        unavailable=last,
    )


def _open(
    mode: str,
    placement: Placement,
    socket_path: Path | None,
    report: Report,
    cancel: threading.Event,
    start_lock: threading.Lock | None,
    model: str,
) -> FeatureSource:
    if mode == "remote":
        return open_remote(placement, report, cancel)
    if mode == "inline":
        return open_inline(placement, model, report, cancel)
    if mode == "ray":
        return open_ray(placement, model, report, cancel)
    daemon_args = [] if model == "auto" else ["--model", model]
    with start_lock or threading.Lock():
        return DaemonFeatureSource(socket_path, report=report, start=True, daemon_args=daemon_args)


def daemon_or_local(
    use_model: bool,
    socket_path: Path | None = None,
    start_lock: threading.Lock | None = None,
    model: str = "auto",
    placement: Placement | None = None,
) -> SourceFactory:
    """:func:`open_feature_source` with these choices, for a :class:`ScanSession`."""

    def factory(report: Report, cancel: threading.Event) -> OpenedSource:
        return open_feature_source(
            use_model, socket_path, report, cancel, start_lock, model=model, placement=placement
        )

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
    #: which model served the scan, and where (OpenedSource.served_by), after the scan: a
    #: remote source adds what it uploaded per photo
    served_by: str = ""


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
        try:
            chosen(opened)
            settings = self.settings
            if self.threshold is not None:
                settings = settings.with_threshold(opened.source.model_id, self.threshold)
            scanned = self._scan(roots, settings, opened.source, progress, cancel)
        finally:
            # A source with a connection of its own (remote, inline) ends it with the scan.
            close = getattr(opened.source, "close", None)
            if callable(close):
                close()
        scanned.fallback_reason = opened.fallback_reason
        scanned.served_by = opened.served_by()
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
