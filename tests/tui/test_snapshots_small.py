"""What an 80x24 terminal shows (pytest-textual-snapshot): the group view with one large
preview, and the undo question.  Regenerate with ``--snapshot-update`` after an intended
change and look at the SVGs before keeping them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from photodup_tui.engine.safedelete import BatchInfo
from photodup_tui.engine.undo_preview import UndoPreview
from photodup_tui.screens.confirm import UndoConfirmScreen
from tests.tui import fixed_data
from tests.tui.conftest import idle
from tests.tui.test_snapshots import app

Snap = Callable[..., bool]
SMALL = (80, 24)


def test_group_screen_on_a_small_terminal(snap_compare: Snap) -> None:
    async def open_group(pilot: Pilot[Any]) -> None:
        await pilot.press("enter")
        await idle(pilot)
        await pilot.press("right")
        await idle(pilot)

    assert snap_compare(app(result=fixed_data.result()), terminal_size=SMALL, run_before=open_group)


def test_undo_question_on_a_small_terminal(snap_compare: Snap) -> None:
    batch = BatchInfo(
        batch_id="20250131-120000-000000001-abcd",
        created="2025-01-31T12:00:00",
        journal=Path("/nonexistent"),
        operations=3,
        acted=2,
        restored=0,
        state="complete",
    )
    target = UndoPreview(
        batch,
        files=2,
        bytes=5_724_000,
        moved_bytes=5_724_000,
        command="photodup apply report.json --yes",
        moved=False,
    )

    async def ask(pilot: Pilot[Any]) -> None:
        await pilot.app.push_screen(UndoConfirmScreen(target))
        await idle(pilot)

    assert snap_compare(app(result=fixed_data.result()), terminal_size=SMALL, run_before=ask)
