"""Determinate progress and the live error list: the engine's per-phase totals, the scan
screen's bar, the CLI's progress line, and errors listed while the scan still runs."""

from __future__ import annotations

import asyncio
import io
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import ProgressBar, Static

from photodup_tui.app import create_app
from photodup_tui.cli import progress_line
from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.scan import FULL_READ, QUICK_CHECK, ScanProgress
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.scan_session import OpenedSource, ScanSession
from photodup_tui.screens.errors import ErrorsScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.screens.scan import ScanScreen
from photodup_tui.widgets.scan_stats import ScanStats
from tests.engine.sources import ThumbnailModel, embed
from tests.tui.conftest import SIZE, Library, make_library


def broken_library(root: Path) -> tuple[Library, list[Path]]:
    """The usual library plus two files that are not images (first in path order)."""
    library = make_library(root)
    bad = root / "0-bad"
    bad.mkdir()
    broken = [bad / "broken1.jpg", bad / "broken2.jpg"]
    broken[0].write_bytes(b"not a jpeg at all")
    broken[1].write_bytes(b"this is not a jpeg either, and longer")
    return library, broken


class SteppedSource:
    """The test's "model": it answers only as many paths (in path order) as the test
    releases, so the scan provably runs while the test looks at the screen."""

    model_id = "test:stepped"
    decodes_raw = False

    def __init__(self) -> None:
        self.started = threading.Event()
        self.paths: list[str] = []
        self._releases: queue.Queue[int] = queue.Queue()

    def release(self, count: int = 1_000_000) -> None:
        self._releases.put(count)

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        self.paths = sorted(paths)
        self.started.set()
        done = 0
        while done < len(self.paths) and not cancel.is_set():
            try:
                count = self._releases.get(timeout=0.02)
            except queue.Empty:
                continue
            for path in self.paths[done : done + count]:
                on_result(path, embed(path))  # the broken files fail to decode here
            done += count

    def factory(self, report: Report, cancel: threading.Event) -> OpenedSource:
        return OpenedSource(self)


async def until(pilot: Pilot[Any], condition: Callable[[], bool], timeout: float = 30) -> None:
    """Let the app run until ``condition`` holds (progress arrives on a 0.25 s budget)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the screen never showed it"
        await pilot.pause(0.02)


def as_text(renderable: Any) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


# ------------------------------------------------------------------------------ engine


def test_each_phase_reports_its_total_and_ends_full(tmp_path: Path) -> None:
    library, broken = broken_library(tmp_path / "photos")
    seen: list[ScanProgress] = []
    session = ScanSession(ScanSettings(), lambda report, cancel: OpenedSource(ThumbnailModel()))
    scanned = session.run([str(library.root)], threading.Event(), progress=seen.append)
    result = scanned.result
    files = [p for p in library.root.rglob("*") if p.is_file()]
    sizes = Counter(p.stat().st_size for p in files)
    sharing_a_size = sum(1 for p in files if sizes[p.stat().st_size] > 1)

    walking = [p for p in seen if p.phase == "walking"]
    assert all(p.phase_total is None and p.phase_done == p.files_found for p in walking)
    quick = [p for p in seen if p.step == QUICK_CHECK and p.phase_total is not None]
    assert quick and {p.phase_total for p in quick} == {sharing_a_size}
    full = [p for p in seen if p.step == FULL_READ]
    assert {p.phase_total for p in full} == {2}  # the original and its byte-identical copy
    assert full[-1].phase_done == 2
    features = [p for p in seen if p.phase == "features"]
    # One request per content: the copy shares the original's features.
    assert {p.phase_total for p in features} == {len(files) - 1}
    assert features[-1].phase_done == len(files) - 1
    assert [p.phase_done for p in features] == sorted(p.phase_done for p in features)

    last = seen[-1]
    assert last.phase == "done" and last.phase_total is None
    assert sorted(last.error_files) == sorted(result.errors)
    assert {path for path, _why in result.errors} == {str(p) for p in broken}


def test_the_cli_line_leads_with_a_bar_when_the_phase_has_a_total() -> None:
    hashing = ScanProgress(
        "hashing", 5_000, 10**9, 1_234, 0, 0, 0, "/p", 300.0, 6.0, 1_234, 3_000, FULL_READ
    )
    line = progress_line(hashing)
    assert line.startswith("hashing: [########------------]  41% 1,234/3,000 · ETA 0:06 · ")
    walking = ScanProgress("walking", 5_000, 10**9, 0, 0, 0, 0, "/p", 300.0, None, 5_000)
    assert "[" not in progress_line(walking) and "found 5,000" in progress_line(walking)


# ------------------------------------------------------------------------------ the screen


async def test_the_bar_is_determinate_and_errors_are_listed_while_the_scan_runs(
    tmp_path: Path,
) -> None:
    library, broken = broken_library(tmp_path / "photos")
    source = SteppedSource()
    app = create_app(
        [str(library.root)], source_factory=source.factory, watch_daemon=False, cursor_blink=False
    )
    async with app.run_test(size=SIZE) as pilot:
        assert await asyncio.to_thread(source.started.wait, 60)
        screen = app.screen
        assert isinstance(screen, ScanScreen)
        stats = screen.query_one(ScanStats)
        total = len(source.paths)
        assert source.paths[:2] == [str(p) for p in broken]

        source.release(1)  # the first broken file fails to decode
        await until(pilot, lambda: stats.shown is not None and stats.shown.errors == 1)
        bar = screen.query_one("#scan-bar", ProgressBar)
        assert (bar.total, bar.progress) == (total, 1)
        label = str(screen.query_one("#scan-bar-label", Static).content)
        assert label.startswith(f"1 of {total} looked at")
        assert "1 file unreadable or undecodable · e lists them" in as_text(stats.content)

        await pilot.press("e")
        errors = app.screen
        assert isinstance(errors, ErrorsScreen) and errors.live
        assert errors.errors == [(str(broken[0]), errors.errors[0][1])]
        assert "so far" in str(errors.query_one("#errors-title", Static).content)

        source.release(1)  # the second one: the open list grows
        await until(pilot, lambda: len(errors.errors) == 2)
        scan = next(w for w in app.workers if w.name == "scan")
        assert scan.is_running  # listed during the scan, not after it
        assert [path for path, _why in errors.errors] == [str(p) for p in broken]

        source.release()  # the rest: the scan ends while the list is open
        await until(pilot, lambda: not errors.live)
        assert app.screen is errors  # not pulled away from under the user
        assert "The scan is done: escape to go on." in [n.message for n in app._notifications]
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
        assert app.result is not None
        assert sorted(path for path, _why in app.result.errors) == [str(p) for p in broken]
