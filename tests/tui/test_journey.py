"""The whole journey with Pilot on a generated folder: scan, review, change the keeper, trash,
undo; after each step the disk itself is read back."""

from __future__ import annotations

import os
from pathlib import Path

from photodup_tui.app import PhotodupApp, create_app
from photodup_tui.engine.types import Action, Kind
from photodup_tui.scan_session import open_feature_source
from photodup_tui.screens.action import ActionScreen
from photodup_tui.screens.confirm import ConfirmScreen, UndoConfirmScreen
from photodup_tui.screens.group import GroupScreen
from photodup_tui.screens.review import ReviewScreen
from tests.tui.conftest import SIZE, Library, idle, local_source, trash_files


async def journey(app: PhotodupApp, library: Library) -> None:
    before = library.snapshot()
    xdg = Path(os.environ["XDG_DATA_HOME"])
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        review = app.review
        assert review is not None
        shown = [review.groups[i] for i in review.visible()]
        assert len(shown) == 1, [g.reason for g in shown]
        group = shown[0]
        paths = [m.photo.path for m in group.members]
        assert sorted(paths) == sorted(
            str(p) for p in (library.original, library.copy, library.resized)
        )
        assert group.kind is Kind.NEAR

        # Open the group, move to the backup copy and keep that one instead.
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, GroupScreen)
        keeper_path = group.keeper_member.photo.path
        assert keeper_path != str(library.copy)  # the rules prefer the shorter-path original
        steps = (paths.index(str(library.copy)) - group.keeper) % len(paths)
        for _ in range(steps):
            await pilot.press("right")
        await pilot.press("k")
        await pilot.pause()
        assert group.keeper_member.photo.path == str(library.copy)
        victims = {m.photo.path for m in group.members if m.action is Action.DELETE}
        assert victims == {str(library.original), str(library.resized)}

        # Trash: the confirm dialog says what will happen; y does it.
        await pilot.press("d")
        await idle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.summary.files == 2
        await pilot.press("y")
        await idle(pilot)
        assert isinstance(app.screen, ActionScreen)

        # The disk: victims gone from their paths and whole in the trash; the rest untouched.
        assert not library.original.exists() and not library.resized.exists()
        assert library.copy.read_bytes() == before[library.copy]
        for other in library.others:
            assert other.read_bytes() == before[other]
        in_trash = trash_files(xdg)
        assert in_trash[library.original.name] == before[library.original]
        assert in_trash[library.resized.name] == before[library.resized]

        # Back on the review, the group is gone (one photo left); u brings the files back.
        await pilot.press("escape")
        await pilot.pause()
        assert app.review is not None and app.review.visible() == []
        await pilot.press("u")
        await idle(pilot)
        assert isinstance(app.screen, UndoConfirmScreen)  # it says what comes back first
        assert app.screen.target.files == 2
        assert library.snapshot() != before  # nothing moved yet
        await pilot.press("y")
        await idle(pilot)
        assert library.snapshot() == before
        assert trash_files(xdg) == {}
        await pilot.press("escape")
        await pilot.pause()
        assert app.review.visible() != []  # the restored photos are reviewable again


async def test_journey_without_model(library: Library) -> None:
    app = create_app(
        [str(library.root)],
        source_factory=local_source,
        watch_daemon=False,
        preview="unicode",
        cursor_blink=False,
    )
    await journey(app, library)


async def test_journey_with_daemon(library: Library, daemon_socket: Path) -> None:
    app = create_app(
        [str(library.root)],
        source_factory=lambda report, cancel: open_feature_source(
            True, daemon_socket, report, cancel
        ),
        socket_path=daemon_socket,
        start_daemon=False,
        preview="unicode",
        cursor_blink=False,
    )
    await journey(app, library)
    assert app.fallback_reason is None  # the daemon's model did the work
    assert app.result is not None and app.result.model_id.startswith("builtin:")
    # The status line polled the same daemon all along.
    assert app.daemon_status.state == "ready"
    assert app.daemon_status.model == app.result.model_id
