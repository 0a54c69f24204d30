"""Hiding a group ("not duplicates") is remembered by content, and the UI takes it back: u
right after, or the hidden-groups list (h), which also lists what earlier scans hid."""

from __future__ import annotations

import itertools
from typing import Any

from textual.widgets import Static

from photodup_tui.answers import DecisionBook
from photodup_tui.app import create_app
from photodup_tui.engine.decisions import Decision, Decisions
from photodup_tui.engine.types import FileStat, Group, Kind, Member, Photo
from photodup_tui.screens.group import GroupScreen
from photodup_tui.screens.hidden import HiddenScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.widgets.virtual_table import VirtualTable
from tests.tui import fixed_data
from tests.tui.conftest import SIZE, Library, idle, local_source

_inodes = itertools.count(1)


def quiet(**options: Any) -> dict[str, Any]:
    return {
        "watch_daemon": False,
        "cursor_blink": False,
        "check_interrupted": False,
        "source_factory": local_source,
        "preview": "none",
        **options,
    }


def stored(group: Group) -> Decision | None:
    with Decisions() as store:  # a fresh connection: what is on disk
        return store.decision_for(group)


def group_of(*hashes: str) -> Group:
    members = [
        Member(Photo(f"/p/{h}.jpg", FileStat(1, next(_inodes), 10, 1, 1), content_hash=h))
        for h in hashes
    ]
    return Group(Kind.NEAR, members, reason="test")


# ------------------------------------------------------------------------------ the store


def test_showing_again_forgets_an_answer_given_on_a_larger_group() -> None:
    with Decisions() as store:
        store.record(group_of("a", "b", "c"), Decision.NOT_DUPLICATES)
        smaller = group_of("a", "b")  # "c" was trashed since: the answer still hides it
        assert store.decision_for(smaller) is Decision.NOT_DUPLICATES
        assert store.forget_covering(smaller) == 1
        assert store.decision_for(group_of("a", "b", "c")) is None
        assert store.count() == 0


def test_the_book_writes_the_last_answer_for_a_group() -> None:
    book = DecisionBook()
    group, other = group_of("x", "y"), group_of("p", "q")
    book.want(group, Decision.NOT_DUPLICATES)
    book.want(other, Decision.KEEP_ALL)
    book.want(group, None)  # hidden, then shown again before anything was written
    book.write()
    assert stored(group) is None and stored(other) is Decision.KEEP_ALL
    book.want(other, None)
    assert book.count() == 0  # counting writes what is pending first


# ------------------------------------------------------------------------------ the UI


async def test_u_right_after_n_shows_the_group_again(library: Library) -> None:
    app = create_app([str(library.root)], **quiet())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        review = app.review
        assert review is not None and isinstance(app.screen, ReviewScreen)
        [index] = review.visible()
        group = review.groups[index]

        await pilot.press("n")
        await idle(pilot)  # the answer is written by a worker
        assert review.visible() == []
        assert stored(group) is Decision.NOT_DUPLICATES
        assert "Not duplicates" in [n.title for n in app._notifications]

        await pilot.press("u")
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)  # not the undo of a clean-up
        assert review.visible() == [index]
        assert stored(group) is None
        # With nothing hidden left, u is the clean-up undo again (and there is none).
        await pilot.press("u")
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        assert "Nothing to undo" in [n.title for n in app._notifications]


async def test_groups_hidden_in_an_earlier_scan_are_listed_and_come_back(
    library: Library,
) -> None:
    app = create_app([str(library.root)], **quiet())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        assert app.review is not None
        group = app.review.groups[app.review.visible()[0]]
        await pilot.press("n")
        await idle(pilot)

        await pilot.press("r")  # scan again: the store hides the group now
        await idle(pilot)
        review = app.review
        assert review is not None and review.visible() == []
        summary = str(app.screen.query_one("#summary", Static).content)
        assert "1 hidden (h)" in summary

        await pilot.press("h")
        hidden = app.screen
        assert isinstance(hidden, HiddenScreen)
        assert hidden.query_one(VirtualTable).row_count == 1
        cells = [str(c) for c in hidden._cells(0)]
        assert cells[2:4] == ["not duplicates", "earlier"]
        assert sorted(m.photo.path for m in review.groups[hidden.rows[0]].members) == sorted(
            m.photo.path for m in group.members
        )

        await pilot.press("enter")
        await idle(pilot)
        assert hidden.query_one(VirtualTable).row_count == 0
        assert stored(group) is None
        await pilot.press("escape")
        assert isinstance(app.screen, ReviewScreen)
        assert len(review.visible()) == 1

        await pilot.press("r")  # and the next scan shows it too
        await idle(pilot)
        assert app.review is not None and len(app.review.visible()) == 1


async def test_u_in_the_group_view_brings_the_hidden_group_back_in_place() -> None:
    app = create_app(**quiet(result=fixed_data.result(), preview_loader=fixed_data.preview))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        await pilot.press("enter")
        await idle(pilot)
        screen = app.screen
        assert isinstance(screen, GroupScreen)
        first = screen.group_index
        assert (screen.position, len(screen.order)) == (0, 3)

        await pilot.press("n")
        await idle(pilot)
        assert screen.group_index != first and len(screen.order) == 2
        assert stored(app.review.groups[first]) is Decision.NOT_DUPLICATES  # type: ignore[union-attr]

        await pilot.press("u")
        await idle(pilot)
        assert app.screen is screen
        assert (screen.group_index, screen.position, len(screen.order)) == (first, 0, 3)
        assert stored(app.review.groups[first]) is None  # type: ignore[union-attr]
