"""The UI keeps handling keys while a scan runs, and stopping a scan keeps what it learnt."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from textual.widgets import Static

from photodup_tui.app import create_app
from photodup_tui.engine.cache import Cache
from photodup_tui.engine.cancellable import run_cancellable
from photodup_tui.engine.daemon_launch import Report
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.types import Kind
from photodup_tui.scan_session import OpenedSource
from photodup_tui.screens.help import HelpScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.screens.scan import ScanScreen
from photodup_tui.screens.start import StartScreen
from photodup_tui.widgets.scan_stats import ScanStats
from tests.tui.conftest import SIZE, Library, idle


class GatedSource:
    """A feature source that holds the scan in its feature phase until the test opens the
    gate (or the scan is cancelled): the scan is provably still running meanwhile."""

    model_id = "test:gated"
    decodes_raw = False

    def __init__(self) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        self.started.set()
        while not self.gate.wait(0.02):
            if cancel.is_set():
                return
        for path in paths:
            on_result(path, FeatureResult.failure("not_an_image", "gated test source"))

    def factory(self, report: Report, cancel: threading.Event) -> OpenedSource:
        return OpenedSource(self)


async def test_keys_are_handled_while_a_scan_runs(library: Library) -> None:
    source = GatedSource()
    app = create_app(
        [str(library.root)], source_factory=source.factory, watch_daemon=False, cursor_blink=False
    )
    async with app.run_test(size=SIZE) as pilot:
        assert await asyncio.to_thread(source.started.wait, 60)
        assert isinstance(app.screen, ScanScreen)
        scan = next(w for w in app.workers if w.name == "scan")

        # The scan is held inside the feature stage (the gate): a key handled now was handled
        # during the scan, whatever the machine's load (timings live in bench/tui_bench.py).
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)  # the key was handled ...
        assert scan.is_running  # ... while the scan is still running

        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ScanScreen)
        shown = app.screen.query_one(ScanStats).shown
        assert shown is not None and shown.files_found == 5  # progress reached the screen
        assert shown.phase == "features"

        source.gate.set()
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        assert app.result is not None and not app.result.cancelled


async def test_stopping_a_scan_keeps_what_it_learnt(library: Library) -> None:
    source = GatedSource()
    app = create_app(
        [str(library.root)], source_factory=source.factory, watch_daemon=False, cursor_blink=False
    )
    async with app.run_test(size=SIZE) as pilot:
        assert await asyncio.to_thread(source.started.wait, 60)
        await pilot.press("escape")
        await idle(pilot)

        assert isinstance(app.screen, ReviewScreen)
        result = app.result
        assert result is not None and result.cancelled
        banners = " ".join(str(b.content) for b in app.screen.query(".banner").results(Static))
        assert "stopped early" in banners
        # The exact tier finished before the stop: the byte-identical pair is there.
        assert app.review is not None
        kinds = [app.review.groups[i].kind for i in app.review.visible()]
        assert kinds == [Kind.EXACT]

    # What was learnt is in the cache on disk: every content hash the stopped scan computed.
    hashed = {p.path: p.content_hash for p in result.photos if p.content_hash}
    assert {str(library.original), str(library.copy)} <= set(hashed)
    with Cache() as cache:
        cached = cache.lookup(result.photos, source.model_id)
    assert {path: cached[path].content_hash for path in hashed if path in cached} == hashed


async def test_stopping_while_the_model_loads_returns_to_the_folder_picker(
    library: Library,
) -> None:
    model_loaded = threading.Event()  # never set: the "daemon" is still loading its model
    waiting = threading.Event()

    def slow_daemon(report: Report, cancel: threading.Event) -> OpenedSource:
        report("model builtin:efficientnet_lite0/imagenet: loading")
        waiting.set()
        run_cancellable(lambda: model_loaded.wait(60), cancel)
        raise AssertionError("unreachable: the wait above was cancelled")

    app = create_app(
        [str(library.root)], source_factory=slow_daemon, watch_daemon=False, cursor_blink=False
    )
    try:
        async with app.run_test(size=SIZE) as pilot:
            assert await asyncio.to_thread(waiting.wait, 60)
            assert isinstance(app.screen, ScanScreen)
            await pilot.press("escape")
            await idle(pilot)
            assert isinstance(app.screen, StartScreen)
            assert app.result is None  # no scan ran
    finally:
        model_loaded.set()
