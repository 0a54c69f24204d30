"""Start-up, the folder picker, and what the UI says when a step goes wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from photodup_tui import ui_settings
from photodup_tui.app import create_app
from photodup_tui.engine.safedelete.journal import JournalWriter, default_journal_dir, new_batch_id
from photodup_tui.screens.action import ActionScreen
from photodup_tui.screens.confirm import ConfirmScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.screens.start import StartScreen
from photodupd import paths
from tests.tui.conftest import SIZE, Library, idle, local_source


def quiet(**options: Any) -> dict[str, Any]:
    return {"watch_daemon": False, "cursor_blink": False, "source_factory": local_source, **options}


async def test_picking_a_folder_scans_it_and_remembers_it(library: Library) -> None:
    app = create_app(**quiet())
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, StartScreen)
        await pilot.press(*str(library.root), "enter")
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        assert app.result is not None and app.result.roots == [str(library.root)]
    with paths.config_file().open("rb") as fh:
        assert tomllib.load(fh)["ui"]["recent_roots"] == [str(library.root)]
    assert ui_settings.load().recent_roots == (str(library.root),)


async def test_a_missing_folder_is_explained_on_the_start_screen(tmp_path: Path) -> None:
    missing = tmp_path / "no such folder"
    app = create_app([str(missing)], **quiet())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        assert isinstance(app.screen, StartScreen)
        error = app.screen.query_one("#start-error", Static)
        assert "does not exist" in str(error.content)


async def test_an_interrupted_clean_up_is_reported_at_start() -> None:
    with JournalWriter.create(default_journal_dir(), new_batch_id(), []):
        pass  # no "end" record: what a killed batch leaves
    app = create_app(**quiet())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        titles = [n.title for n in app._notifications]
        assert "Interrupted clean-up found" in titles


async def test_a_trash_that_fails_leaves_the_file_and_says_why(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOTODUP_FAULT", "EXDEV@rename")  # every rename across "devices"
    app = create_app([str(library.root)], **quiet())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        await pilot.press("d")
        await idle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await idle(pilot)
        assert isinstance(app.screen, ActionScreen)
        report = app.screen.report
        assert report is not None
        assert report.trashed == []  # type: ignore[union-attr]
        problems = report.skipped + report.failed  # type: ignore[union-attr]
        assert problems and all(why for _path, why in problems)
    # Nothing moved: every photo is still where it was.
    assert library.copy.exists() and library.resized.exists() and library.original.exists()
