"""The blocking work behind the screens: each function runs inside a Textual thread worker.

Nothing here imports Textual.  Everything that can wait on the disk, the daemon or a child
process lives here, so the event loop only ever renders and handles keys.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from PIL import Image

from photodup_tui.engine.cache import Cache, CacheError
from photodup_tui.engine.daemon_features import DaemonFeatureSource
from photodup_tui.engine.daemon_launch import Report, ensure_daemon
from photodup_tui.engine.decisions import Decision, DecisionError, Decisions
from photodup_tui.engine.features import FeatureSource
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.safedelete import Plan
from photodup_tui.engine.safedelete.trash import TrashUnavailable, usable_location
from photodup_tui.engine.scan import Scanner, ScanProgress, ScanResult
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Group, Member
from photodupd import config as daemon_config
from photodupd import imaging, protocol
from photodupd.client import ConnectionLost, SyncClient
from photodupd.protocol import RemoteError

T = TypeVar("T")

#: A function that turns a status-line callback into a feature source (tests inject one).
SourceFactory = Callable[[Report, threading.Event], "OpenedSource"]


class Cancelled(Exception):
    """The user cancelled while we waited."""


# ------------------------------------------------------------------------------ daemon


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """What the status line says about photodupd."""

    state: str  # checking | starting | loading | ready | unloaded | failed | down | off
    model: str | None = None
    why: str = ""
    detail: str = ""  # last error, or what the launcher is doing
    images_per_s: float = 0.0


def poll_daemon(socket_path: Path | None, timeout: float = 2.0) -> DaemonStatus:
    """One ``status`` round trip; any failure to connect means "down"."""
    try:
        with SyncClient(socket_path, timeout=timeout, client_name="photodup-tui") as client:
            client.connect()
            status = client.call(protocol.STATUS)
    except (OSError, ConnectionLost, RemoteError):
        return DaemonStatus("down")
    return DaemonStatus(
        state=str(status.get("state") or "ready"),
        model=status.get("model") or None,
        why=str(status.get("why") or ""),
        detail=str(status.get("last_error") or ""),
        images_per_s=float(status.get("recent_images_per_s") or 0.0),
    )


#: How long a model load may take before the UI gives up waiting (CLIP on a slow disk).
LOAD_TIMEOUT = 600.0


class DaemonNotRunning(Exception):
    """Nobody answers on the socket: the model setting applies when photodupd starts."""


@dataclass(frozen=True, slots=True)
class ModelSwitch:
    model_id: str  # what photodupd serves now
    why: str  # photodupd's reason ("auto: CLIP weights found in the local cache")


def switch_model(socket_path: Path | None, name: str) -> ModelSwitch:
    """Ask the running photodupd to load ``name`` now (what ``photodup-ctl models use``
    does).  Blocks until the model is loaded; raises :class:`DaemonNotRunning`, or
    ``RemoteError`` (``model_unavailable``: e.g. CLIP weights not on this computer), in which
    case photodupd keeps serving the model it had."""
    fields: dict[str, Any] = {"model": name}
    try:
        weights = daemon_config.load().weights  # the config's weights file goes with CLIP
    except daemon_config.ConfigError:
        weights = None
    if weights is not None and name != "builtin":
        fields["weights"] = str(weights)
    with SyncClient(socket_path, timeout=5, client_name="photodup-tui") as client:
        try:
            client.connect()
        except (OSError, ConnectionLost) as exc:
            raise DaemonNotRunning(str(exc)) from None
        client.set_timeout(LOAD_TIMEOUT)
        result = client.call(protocol.LOAD, **fields)
    return ModelSwitch(str(result.get("id") or name), str(result.get("why") or ""))


def start_daemon(socket_path: Path | None, report: Report, lock: threading.Lock) -> None:
    """Start photodupd when nobody answers (the model then loads while the user looks)."""
    with lock:
        ensure_daemon(socket_path, report=report)


@dataclass(slots=True)
class OpenedSource:
    source: FeatureSource
    #: None with the daemon's model; otherwise why the scan runs without one
    fallback_reason: str | None = None


UNAVAILABLE = "photodupd is not available: "


def short_reason(exc: BaseException) -> str:
    """One line for the status line: the error's first line and, when the launcher appended
    the daemon's log, its last line (which says why)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


def open_feature_source(
    use_model: bool,
    socket_path: Path | None,
    report: Report,
    cancel: threading.Event,
    start_lock: threading.Lock | None = None,
) -> OpenedSource:
    """The daemon's model, or the no-model mode when the user chose it or the daemon fails.

    ``start_lock`` is held while the daemon is started, so the app's own start at launch and
    a scan never spawn two daemons at once.
    """
    if not use_model:
        return OpenedSource(LocalFeatureSource(), "the model is turned off in the settings")
    lock = start_lock or threading.Lock()

    def connect() -> DaemonFeatureSource:
        with lock:
            return DaemonFeatureSource(socket_path, report=report, start=True)

    try:
        source = run_cancellable(connect, cancel)
    except Cancelled:
        raise
    except Exception as exc:  # DaemonStartFailed, a broken socket, a bad reply ...
        return OpenedSource(
            LocalFeatureSource(), f"photodupd is not available: {short_reason(exc)}"
        )
    return OpenedSource(source)


def run_cancellable(fn: Callable[[], T], cancel: threading.Event, poll: float = 0.1) -> T:
    """Run ``fn`` in a daemon thread and wait for it, giving up when ``cancel`` is set.

    For calls with no cancel of their own (waiting for a model to load): the UI returns at
    once and the abandoned thread cannot hold the process open at exit.
    """
    box: list[Any] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append((True, fn()))
        except BaseException as exc:
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name="photodup-wait", daemon=True).start()
    while not done.wait(poll):
        if cancel.is_set():
            raise Cancelled
    ok, value = box[0]
    if not ok:
        raise value
    return cast(T, value)


# ------------------------------------------------------------------------------ scanning


@dataclass(slots=True)
class Scanned:
    result: ScanResult
    #: groups an earlier "not duplicates" / "keep all" answer hides, so the UI can list them
    #: and bring one back without scanning again
    hidden: list[tuple[Group, Decision]] = field(default_factory=list)
    #: (group, member index): the keeper the user chose in an earlier scan
    keepers: list[tuple[Group, int]] = field(default_factory=list)


class _KeepingHidden(Decisions):
    """The user's decisions, keeping the groups they hide instead of dropping them."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: list[tuple[Group, Decision]] = []

    def undecided(self, groups: Iterable[Group]) -> list[Group]:
        shown, self.hidden = self.split(groups)
        return shown


def run_scan(
    roots: Sequence[str],
    settings: ScanSettings,
    source: FeatureSource,
    progress: Callable[[ScanProgress], None],
    cancel: threading.Event,
) -> Scanned:
    """One scan with the user's cache and remembered decisions.

    A cache that cannot be opened never stops a scan: it runs on a throw-away one, and the
    result says so.
    """
    warnings: list[str] = []
    try:
        cache = Cache()
    except CacheError as exc:
        warnings.append(f"{exc}; this scan will not be remembered")
        cache = Cache(Path(tempfile.mkdtemp(prefix="photodup-cache-")) / "cache.sqlite")
    try:
        decisions: _KeepingHidden | None = _KeepingHidden()
    except (OSError, sqlite3.Error) as exc:
        warnings.append(f"your earlier 'not duplicates' answers cannot be read: {exc}")
        decisions = None
    keepers: list[tuple[Group, int]] = []
    try:
        result = Scanner(settings, source, cache, decisions).run(roots, progress, cancel)
        if decisions is not None:
            keepers = _remembered_keepers(decisions, result.groups, decisions.hidden, warnings)
    finally:
        cache.close()
        if decisions is not None:
            decisions.close()
    result.warnings[:0] = warnings
    return Scanned(result, decisions.hidden if decisions is not None else [], keepers)


def _remembered_keepers(
    store: Decisions,
    groups: Sequence[Group],
    hidden: Sequence[tuple[Group, Decision]],
    warnings: list[str],
) -> list[tuple[Group, int]]:
    """The keeper the user chose in an earlier scan, for each group that has one."""
    try:
        return store.keepers_for([*groups, *(g for g, _decision in hidden)])
    except sqlite3.Error as exc:
        warnings.append(f"your earlier keeper choices cannot be read: {exc}")
        return []


class DecisionBook:
    """The user's hide / show-again answers and keeper choices, written to the decisions
    store in the order they were given, from worker threads.

    The UI calls :meth:`want` on the event loop, then runs :meth:`write` in a worker.  Each
    write takes everything wanted so far, one writer at a time: a quick "hide, then show
    again" can never land in the store the wrong way round, whatever order the workers run.
    """

    def __init__(self, open_store: Callable[[], Decisions] = Decisions) -> None:
        self._open_store = open_store
        self._wanted: dict[int, tuple[Group, Decision | None]] = {}
        #: keeper choices, taken when made: a batch may change the group before the write
        self._keepers: list[tuple[Group, Member]] = []
        self._lock = threading.Lock()  # guards _wanted
        self._writing = threading.Lock()  # one writer at a time

    def want(self, group: Group, decision: Decision | None) -> None:
        """Remember ``decision`` for this group's photos; None forgets any that hides it."""
        with self._lock:
            self._wanted.pop(id(group), None)  # re-inserted: the latest answer is written last
            self._wanted[id(group)] = (group, decision)

    def want_keeper(self, group: Group) -> None:
        """Remember the group's keeper as the user's choice among its photos now."""
        snapshot = Group(group.kind, list(group.members), group.reason, group.keeper)
        with self._lock:
            self._keepers.append((snapshot, group.keeper_member))

    def write(self) -> None:
        """Write what is wanted; raises DecisionError (after writing the rest) if an answer
        cannot be kept, e.g. a photo without a content hash."""
        with self._writing:
            self._write_locked()

    def _write_locked(self) -> None:
        """:meth:`write`, for a caller that holds the writer's lock."""
        with self._lock:
            pending, self._wanted = list(self._wanted.values()), {}
            keepers, self._keepers = self._keepers, []
        if not pending and not keepers:
            return
        problems: list[str] = []
        with self._open_store() as store:
            for group, decision in pending:
                try:
                    if decision is None:
                        store.forget_covering(group)
                    else:
                        store.record(group, decision)
                except DecisionError as exc:
                    problems.append(str(exc))
            for group, keeper in keepers:
                try:
                    store.record_keeper(group, keeper)
                except DecisionError as exc:
                    problems.append(str(exc))
        if problems:
            raise DecisionError("; ".join(dict.fromkeys(problems)))

    def count(self) -> int:
        """How many answers the store remembers, once what is wanted now is written."""
        with self._writing:
            self._write_locked()
            with self._open_store() as store:
                return store.count()


# ------------------------------------------------------------------------------ actions


@dataclass(slots=True)
class PlanSummary:
    """What the confirm dialog says: exactly what the plan will do, and where files go."""

    plan: Plan
    files: int
    bytes: int
    trash_dirs: Counter[str] = field(default_factory=Counter)  # trash dir -> files
    no_trash: list[tuple[str, str]] = field(default_factory=list)  # (path, why not)
    by_kind: Counter[str] = field(default_factory=Counter)


def summarize(plan: Plan) -> PlanSummary:
    """Count the plan and find each file's trash (one lookup per device, nothing created)."""
    summary = PlanSummary(plan, files=len(plan.operations), bytes=plan.bytes_planned)
    per_device: dict[int, str | TrashUnavailable] = {}
    for op in plan.operations:
        summary.by_kind[op.group_kind.value] += 1
        dev = op.victim.stat.dev
        if dev not in per_device:
            try:
                per_device[dev] = usable_location(op.victim.path).trash_dir
            except (TrashUnavailable, OSError) as exc:
                per_device[dev] = TrashUnavailable(str(exc))
        where = per_device[dev]
        if isinstance(where, TrashUnavailable):
            summary.no_trash.append((op.victim.path, str(where)))
        else:
            summary.trash_dirs[where] += 1
    return summary


def open_in_viewer(path: str) -> str:
    """Start the system viewer without waiting for it; returns the command used."""
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    if shutil.which(opener) is None:
        raise FileNotFoundError(f"{opener} is not installed, so photodup cannot open files")
    subprocess.Popen(
        [opener, path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the viewer outlives us and never grabs our terminal
    )
    return opener


# ------------------------------------------------------------------------------ previews

PreviewLoader = Callable[[str, int], Image.Image]


class PreviewCache:
    """Decoded previews by path and mtime, least recently used first out."""

    def __init__(self, loader: PreviewLoader | None = None, capacity: int = 48) -> None:
        self._loader = loader or default_preview_loader
        self._capacity = capacity
        self._items: OrderedDict[tuple[str, int], Image.Image] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, max_side: int) -> Image.Image:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            stamp = 0  # the loader reports the real problem, or a test loader needs no file
        key = (path, stamp)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        image = self._loader(path, max_side)
        with self._lock:
            self._items[key] = image
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return image


def default_preview_loader(path: str, max_side: int) -> Image.Image:
    return imaging.load_preview(path, max_side)
