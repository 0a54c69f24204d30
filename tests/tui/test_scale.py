"""A big library stays responsive: the per-key cost does not grow with the number of groups
(a ratio between 2,000 and 20,000 photos, never an absolute time), and keys are handled
while a worker floods the scan screen with progress.  bench/tui_bench.py measures the same
at 100,000 photos."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from bench.tui_bench import build_result, key_to_handled
from photodup_tui.app import PhotodupApp, create_app
from photodup_tui.engine.scan import ScanProgress
from photodup_tui.messages import ScanProgressed
from photodup_tui.screens.errors import ErrorsScreen
from photodup_tui.screens.help import HelpScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.screens.scan import ScanScreen
from photodup_tui.widgets.group_table import GroupTable
from tests.tui.conftest import SIZE

#: O(1) work per key gives a ratio near 1; O(N) work gives about 10 for 10 times the photos.
MAX_RATIO = 4.0


def app_on(photos: int) -> PhotodupApp:
    return create_app(
        result=build_result(photos),
        watch_daemon=False,
        check_interrupted=False,
        cursor_blink=False,
        preview="none",
    )


async def per_key_costs(photos: int) -> dict[str, float]:
    """Fastest seconds from key to handled, for the keys used over and over on a list.

    The fastest of several presses, not the median: a key's latency is bimodal (about
    1.5 ms, or about 11 ms when the press lands while the app is painting), so a median of
    a few presses flips between the two modes at random, while work that grows with the
    library is in every press, the fastest included."""
    app = app_on(photos)
    samples: dict[str, list[float]] = {"down": [], "n": [], "u": [], "s": []}
    async with app.run_test(size=SIZE):
        while not (isinstance(app.screen, ReviewScreen) and app.screen.query(GroupTable)):
            await asyncio.sleep(0.01)
        screen = app.screen
        table = screen.query_one(GroupTable)
        review = screen.review
        for _ in range(4):  # every sort order computed once, as a user's first s does
            before = screen.sort
            await key_to_handled(app, "s", lambda b=before: screen.sort != b)
        for _ in range(8):
            before = screen.sort
            samples["s"].append(await key_to_handled(app, "s", lambda b=before: screen.sort != b))
        for step in range(1, 41):
            samples["down"].append(
                await key_to_handled(app, "down", lambda s=step: table.cursor == s)
            )
        for _ in range(6):
            hidden = len(review.dismissed)
            samples["n"].append(
                await key_to_handled(app, "n", lambda h=hidden: len(review.dismissed) > h)
            )
            samples["u"].append(
                await key_to_handled(app, "u", lambda h=hidden: len(review.dismissed) == h)
            )
    return {name: min(values) for name, values in samples.items()}


async def test_keys_cost_the_same_on_a_ten_times_bigger_library() -> None:
    """Up to three tries: a busy machine can slow one run down, an O(N) key slows them all."""
    tries = []
    for _ in range(3):
        small = await per_key_costs(2_000)
        big = await per_key_costs(20_000)
        ratios = {name: big[name] / small[name] for name in small}
        tries.append(ratios)
        if all(ratio < MAX_RATIO for ratio in ratios.values()):
            return
    raise AssertionError(f"keys got slower with the library: {tries}")


async def test_keys_are_handled_while_a_worker_floods_the_scan_screen() -> None:
    """The worker posts a progress message every millisecond (the engine posts four a
    second), a fixed number of them; every key must be handled before it is done: messages
    coalesce, and keys never queue behind them."""
    app = app_on(20_000)
    budget = 10_000
    async with app.run_test(size=SIZE):
        scan = ScanScreen(["/home/alex/Pictures"], autostart=False)
        await app.push_screen(scan)
        posted = 0
        stop = threading.Event()

        def flood() -> None:
            nonlocal posted
            errors: list[tuple[str, str]] = []
            while posted < budget and not stop.is_set():
                if posted % 10 == 0:
                    errors.append((f"/home/alex/Pictures/bad/{posted}.jpg", "not_an_image"))
                progress = ScanProgress(
                    "features", 20_000, 10**10, 20_000, 0, posted, len(errors), "/p", 40.0,
                    10.0, posted, budget, "", tuple(errors),
                )  # fmt: skip
                scan.post_message(ScanProgressed(progress))
                posted += 1
                stop.wait(0.001)  # the pace of the flood, not a wait for the UI

        worker = app.run_worker(flood, thread=True, name="flood", exit_on_error=False)
        keys: list[tuple[str, Any]] = [
            ("e", lambda: isinstance(app.screen, ErrorsScreen)),
            ("escape", lambda: app.screen is scan),
            ("question_mark", lambda: isinstance(app.screen, HelpScreen)),
            ("escape", lambda: app.screen is scan),
        ]
        try:
            for key, effect in keys * 3:
                await key_to_handled(app, key, effect)
                assert posted < budget, f"key {key!r} was handled only after the flood ended"
        finally:
            stop.set()
            await worker.wait()
        assert scan.latest.phase_done > 0  # the screen kept showing progress meanwhile
