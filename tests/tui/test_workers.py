"""The blocking helpers behind the screens, on real files and real processes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from photodup_tui.engine.cancellable import Cancelled, run_cancellable
from photodup_tui.engine.daemon_control import poll_daemon
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.placement import Placement
from photodup_tui.engine.safedelete import make_plan
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from photodup_tui.plan_summary import summarize
from photodup_tui.previews import PreviewCache, open_in_viewer
from photodup_tui.scan_session import open_feature_source
from tests.photos import make_photo
from tests.tui.conftest import Library


def _member(path: Path, action: Action) -> Member:
    photo = Photo(str(path), FileStat.of(os.lstat(path)), content_hash="same")
    return Member(photo, action, "test")


def test_summary_counts_the_plan_and_names_the_trash(library: Library) -> None:
    group = Group(
        Kind.EXACT,
        [_member(library.original, Action.KEEP), _member(library.copy, Action.DELETE)],
        reason="byte-identical",
    )
    summary = summarize(make_plan([group]))
    assert summary.files == 1
    assert summary.bytes == library.copy.stat().st_size
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash"
    assert dict(summary.trash_dirs) == {str(trash): 1}
    assert summary.by_kind == {"exact": 1}
    assert library.copy.exists() and not trash.exists()  # summarising changes nothing


def test_run_cancellable_returns_raises_and_gives_up() -> None:
    never = threading.Event()
    assert run_cancellable(lambda: 42, never) == 42
    with pytest.raises(ZeroDivisionError):
        run_cancellable(lambda: 1 // 0, never)
    release, cancel = threading.Event(), threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_cancellable(lambda: release.wait(60), cancel)
    release.set()


def test_poll_says_down_when_nobody_answers(isolated_dirs: Path) -> None:
    assert poll_daemon(isolated_dirs / "nobody.sock").state == "down"


def test_the_scan_falls_back_to_no_model_when_the_daemon_cannot_start(
    isolated_dirs: Path,
) -> None:
    too_long = isolated_dirs / ("x" * 120) / "d.sock"  # photodupd refuses such a socket path
    reports: list[str] = []
    opened = open_feature_source(
        True, too_long, reports.append, threading.Event(), placement=Placement(mode="local")
    )
    assert isinstance(opened.source, LocalFeatureSource)
    assert opened.fallback_reason is not None
    assert "photodupd is not available" in opened.fallback_reason
    assert reports == ["starting photodupd"]


def test_model_off_means_no_daemon_at_all(isolated_dirs: Path) -> None:
    opened = open_feature_source(False, isolated_dirs / "d.sock", print, threading.Event())
    assert isinstance(opened.source, LocalFeatureSource)
    assert not (isolated_dirs / "d.sock").exists()


def test_preview_cache_keeps_recent_images_and_reloads_changed_files(tmp_path: Path) -> None:
    calls: list[str] = []

    def loader(path: str, side: int) -> object:
        calls.append(path)
        return make_photo(len(calls), (side, side))

    cache = PreviewCache(loader, capacity=2)  # type: ignore[arg-type]
    a, b, c = (str(tmp_path / n) for n in "abc")
    first = cache.get(a, 16)
    assert cache.get(a, 16) is first
    cache.get(b, 16)
    cache.get(c, 16)  # a is the least recently used: it goes
    cache.get(a, 16)
    assert calls == [a, b, c, a]


def test_open_in_viewer_says_when_there_is_no_viewer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(FileNotFoundError, match="not installed"):
        open_in_viewer("/tmp/x.jpg")
