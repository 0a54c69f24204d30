"""What each screen looks like at 120x36 on fixed data (pytest-textual-snapshot).

Regenerate after an intended change with ``pytest tests/tui/test_snapshots.py
--snapshot-update`` and look at the SVGs in ``__snapshots__`` before keeping them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from textual.pilot import Pilot

from photodup_tui import ui_settings
from photodup_tui.app import PhotodupApp, create_app
from photodup_tui.engine.types import Kind
from photodup_tui.messages import ScanSourceReady
from photodup_tui.scan_session import UNAVAILABLE
from photodup_tui.screens.action import ActionScreen
from photodup_tui.screens.confirm import ConfirmScreen
from photodup_tui.screens.scan import ScanScreen
from tests.tui import fixed_data
from tests.tui.conftest import SIZE, idle

Snap = Callable[..., bool]


def app(**options: Any) -> PhotodupApp:
    defaults: dict[str, Any] = {
        "daemon_status": fixed_data.STATUS,
        "watch_daemon": False,
        "check_interrupted": False,
        "cursor_blink": False,
        "animations": False,
        "preview": "halfcell",
        "preview_loader": fixed_data.preview,
    }
    return create_app(**{**defaults, **options})


async def settle(pilot: Pilot[Any]) -> None:
    await idle(pilot)


def test_start_screen(snap_compare: Snap) -> None:
    recent = ui_settings.UiSettings(recent_roots=("/home/alex/Pictures", "/mnt/nas/photos"))
    assert snap_compare(app(ui=recent), terminal_size=SIZE, run_before=settle)


def test_scan_screen(snap_compare: Snap) -> None:
    async def scanning(pilot: Pilot[Any]) -> None:
        screen = ScanScreen([fixed_data.ROOT], autostart=False)
        await pilot.app.push_screen(screen)
        screen.show_progress(fixed_data.progress())
        screen.on_scan_source_ready(ScanSourceReady(fixed_data.MODEL, None))
        await idle(pilot)

    assert snap_compare(app(), terminal_size=SIZE, run_before=scanning)


def test_review_screen(snap_compare: Snap) -> None:
    assert snap_compare(app(result=fixed_data.result()), terminal_size=SIZE, run_before=settle)


def test_review_screen_with_nothing_found(snap_compare: Snap) -> None:
    empty = fixed_data.result(with_groups=False)
    assert snap_compare(app(result=empty), terminal_size=SIZE, run_before=settle)


def test_group_screen(snap_compare: Snap) -> None:
    async def open_group(pilot: Pilot[Any]) -> None:
        await pilot.press("enter")
        await idle(pilot)

    assert snap_compare(app(result=fixed_data.result()), terminal_size=SIZE, run_before=open_group)


def test_confirm_dialog(snap_compare: Snap) -> None:
    async def confirm(pilot: Pilot[Any]) -> None:
        await pilot.app.push_screen(ConfirmScreen(fixed_data.plan_summary(), [fixed_data.ROOT]))
        await idle(pilot)

    assert snap_compare(app(result=fixed_data.result()), terminal_size=SIZE, run_before=confirm)


def test_result_screen(snap_compare: Snap) -> None:
    async def done(pilot: Pilot[Any]) -> None:
        screen = ActionScreen("trash", [fixed_data.ROOT], report=fixed_data.run_report())
        await pilot.app.push_screen(screen)
        await idle(pilot)

    assert snap_compare(app(result=fixed_data.result()), terminal_size=SIZE, run_before=done)


def test_result_screen_after_failed_trash_operations(snap_compare: Snap) -> None:
    async def done(pilot: Pilot[Any]) -> None:
        report = fixed_data.run_report_with_failures()
        await pilot.app.push_screen(ActionScreen("trash", [fixed_data.ROOT], report=report))
        await idle(pilot)

    assert snap_compare(app(result=fixed_data.result()), terminal_size=SIZE, run_before=done)


def test_review_after_the_daemon_would_not_start(snap_compare: Snap) -> None:
    """The scan fell back to no model: the status line says photodupd is down and why, the
    review says what that costs.  The app derives both from the scan's fallback reason."""

    async def fell_back(pilot: Pilot[Any]) -> None:
        result = fixed_data.result()
        result.groups = [g for g in result.groups if g.kind is not Kind.SIMILAR]  # no model
        papp = cast(PhotodupApp, pilot.app)
        papp.show_review(result, fallback_reason=UNAVAILABLE + fixed_data.DAEMON_DOWN)
        await idle(pilot)

    assert snap_compare(app(daemon_status=None), terminal_size=SIZE, run_before=fell_back)


def test_help_screen(snap_compare: Snap) -> None:
    assert snap_compare(
        app(result=fixed_data.result()), press=["question_mark"], terminal_size=SIZE
    )


def test_errors_screen(snap_compare: Snap) -> None:
    assert snap_compare(app(result=fixed_data.result()), press=["e"], terminal_size=SIZE)


def test_settings_screen(snap_compare: Snap) -> None:
    assert snap_compare(app(result=fixed_data.result()), press=["comma"], terminal_size=SIZE)


def test_hidden_screen(snap_compare: Snap) -> None:
    assert snap_compare(
        app(result=fixed_data.result()), press=["n", "h"], terminal_size=SIZE, run_before=settle
    )
