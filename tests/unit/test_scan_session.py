"""One scan as the TUI and ``photodup scan`` both run it (photodup_tui.scan_session), without
Textual: the feature source and its fallback, the cache and the remembered answers around
the scan, closed whatever happens."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from photodup_tui import scan_session
from photodup_tui.engine.cache import CacheError
from photodup_tui.engine.cancellable import Cancelled
from photodup_tui.engine.daemon_launch import DaemonStartFailed
from photodup_tui.engine.decisions import Decision, Decisions
from photodup_tui.engine.placement import Placement
from photodup_tui.engine.scan import ScanProgress
from photodup_tui.engine.settings import ScanSettings, SettingsError
from photodup_tui.scan_session import (
    MODEL_OFF,
    UNAVAILABLE,
    OpenedSource,
    ScanSession,
    daemon_or_local,
)
from tests.engine.sources import ThumbnailModel
from tests.photos import make_photo, write_jpeg

#: These tests are about the local daemon and the fallback to no model (auto would go on
#: to an inline model: see tests/remote/test_modes.py).
LOCAL = Placement(mode="local")

LAUNCH_FAILURE = (
    "photodupd exited with status 3.\n"
    "photodupd: starting\n"
    "photodupd: refusing to start: /run/user/1000/photodup has mode 0755, it must be 0700"
)


def library(root: Path) -> Path:
    """Three distinct photos and a byte-identical copy of the first."""
    root.mkdir(parents=True)
    for seed in range(3):
        write_jpeg(root / f"p{seed}.jpg", make_photo(100 + seed, (240, 180)))
    (root / "copy").mkdir()
    shutil.copy2(root / "p0.jpg", root / "copy" / "p0.jpg")
    return root


def thumbnails(report: object, cancel: threading.Event) -> OpenedSource:
    return OpenedSource(ThumbnailModel())


def open_files_under(folder: Path) -> list[str]:
    """What this process holds open under ``folder``, as the kernel says (not the code)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed meanwhile
            continue
        if target.startswith(str(folder)):
            held.append(target)
    return held


needs_proc = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads open files from /proc/self/fd"
)


@pytest.fixture
def cache_dir() -> Path:
    return Path(os.environ["PHOTODUP_CACHE_DIR"])


def test_a_daemon_that_cannot_start_is_said_once_with_why_and_the_scan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuses(*args: object, **kwargs: object) -> object:
        raise DaemonStartFailed(LAUNCH_FAILURE)

    monkeypatch.setattr(scan_session, "DaemonFeatureSource", refuses)
    monkeypatch.setattr(scan_session, "LocalFeatureSource", ThumbnailModel)  # no process pool
    told: list[OpenedSource] = []
    session = ScanSession(ScanSettings(), daemon_or_local(use_model=True, placement=LOCAL))

    scanned = session.run(
        [str(library(tmp_path / "photos"))], threading.Event(), progress=print, chosen=told.append
    )

    [opened] = told  # said once, before the scan
    why = (
        "photodupd exited with status 3. refusing to start: /run/user/1000/photodup has mode "
        "0755, it must be 0700"
    )
    assert opened.daemon_error == why  # first line and the log's last, in one line
    assert opened.fallback_reason == UNAVAILABLE + why
    assert scanned.fallback_reason == opened.fallback_reason
    assert not [w for w in scanned.result.warnings if "photodupd" in w]  # not said again
    assert scanned.result.model_id == ThumbnailModel.model_id
    assert [g.kind.value for g in scanned.result.groups] == ["exact"]


def test_the_model_turned_off_needs_no_daemon_and_says_so(tmp_path: Path) -> None:
    told: list[OpenedSource] = []
    factory = daemon_or_local(use_model=False, socket_path=tmp_path / "d.sock")
    opened = factory(told.append, threading.Event())  # type: ignore[arg-type]
    assert opened.fallback_reason == MODEL_OFF and opened.daemon_error is None
    assert told == [] and not (tmp_path / "d.sock").exists()


@needs_proc
def test_the_cache_and_the_answers_are_closed_when_the_scan_fails(
    tmp_path: Path, cache_dir: Path
) -> None:
    photos = library(tmp_path / "photos")
    state = Path(os.environ["PHOTODUP_STATE_DIR"])

    def the_ui_went_away(progress: ScanProgress) -> None:
        assert open_files_under(cache_dir), "the scan reads the cache while it runs"
        raise RuntimeError("the screen is gone")

    session = ScanSession(ScanSettings(), thumbnails)
    with pytest.raises(RuntimeError, match="the screen is gone"):
        session.run([str(photos)], threading.Event(), progress=the_ui_went_away)
    assert open_files_under(cache_dir) == []
    assert open_files_under(state) == []  # the decisions store too


@needs_proc
def test_the_cache_is_closed_after_a_cancelled_scan(tmp_path: Path, cache_dir: Path) -> None:
    cancel = threading.Event()
    cancel.set()  # escape pressed as the scan began
    session = ScanSession(ScanSettings(), thumbnails)
    scanned = session.run([str(library(tmp_path / "photos"))], cancel, progress=print)
    assert scanned.result.cancelled
    assert open_files_under(cache_dir) == []


@needs_proc
def test_a_cancel_while_photodupd_starts_opens_no_cache(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    never = threading.Event()
    monkeypatch.setattr(scan_session, "DaemonFeatureSource", lambda *a, **k: never.wait(60))
    cancel = threading.Event()
    cancel.set()
    session = ScanSession(ScanSettings(), daemon_or_local(use_model=True, placement=LOCAL))
    try:
        with pytest.raises(Cancelled):
            session.run([str(library(tmp_path / "photos"))], cancel, progress=print)
    finally:
        never.set()
    assert open_files_under(cache_dir) == []


def test_an_unusable_cache_stops_the_cli_but_not_the_tui(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("PHOTODUP_CACHE_DIR", str(not_a_folder))
    photos = [str(library(tmp_path / "photos"))]

    cli = ScanSession(ScanSettings(), thumbnails, cache_required=True)
    with pytest.raises(CacheError):
        cli.run(photos, threading.Event(), progress=print)

    tui = ScanSession(ScanSettings(), thumbnails)
    scanned = tui.run(photos, threading.Event(), progress=print)
    assert [g.kind.value for g in scanned.result.groups] == ["exact"]
    assert any("will not be remembered" in w for w in scanned.result.warnings)


def test_earlier_answers_come_back_hidden_groups_and_chosen_keepers(tmp_path: Path) -> None:
    photos = [str(library(tmp_path / "photos"))]
    session = ScanSession(ScanSettings(), thumbnails)
    first = session.run(photos, threading.Event(), progress=print)
    [group] = first.result.groups
    other = next(m for m in group.members if m is not group.keeper_member)
    with Decisions() as store:
        store.record_keeper(group, other)

    second = session.run(photos, threading.Event(), progress=print)
    [(again, member)] = second.keepers
    assert again.members[member].photo.path == other.photo.path
    assert second.hidden == []

    with Decisions() as store:
        store.record(group, Decision.NOT_DUPLICATES)
    third = session.run(photos, threading.Event(), progress=print)
    assert third.result.groups == [] and third.result.counts.dismissed == 1
    [(hidden, decision)] = third.hidden
    assert decision is Decision.NOT_DUPLICATES
    assert {m.photo.path for m in hidden.members} == {m.photo.path for m in group.members}


def test_a_threshold_applies_to_the_model_the_scan_ends_up_with(tmp_path: Path) -> None:
    """``photodup scan --threshold 6``: a pHash distance without a model, and no cosine."""
    photos = [str(library(tmp_path / "photos"))]
    hashes_only = ScanSession(ScanSettings(), daemon_or_local(use_model=False), threshold=6)
    assert hashes_only.run(photos, threading.Event(), progress=print).result.groups

    with_model = ScanSession(ScanSettings(), thumbnails, threshold=6)
    with pytest.raises(SettingsError, match=f"for {ThumbnailModel.model_id} is a cosine"):
        with_model.run(photos, threading.Event(), progress=print)


def test_the_view_models_load_without_textual() -> None:
    """The CLI runs a ScanSession on a machine without the TUI's dependencies."""
    modules = "photodup_tui.scan_session, photodup_tui.daemon_supervisor, photodup_tui.answers"
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if 'textual' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
