"""The user's answers on a review (photodup_tui.answers), without Textual: applied to the
review at once, remembered by content in the decisions store, the recent hides kept for u."""

from __future__ import annotations

import itertools

from photodup_tui.answers import Answers, DecisionBook
from photodup_tui.engine.decisions import Decision, Decisions
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from photodup_tui.review_state import REMEMBERED, Review

_inodes = itertools.count(1)


def group(*paths: str) -> Group:
    def member(path: str, action: Action) -> Member:
        stat = FileStat(dev=1, ino=next(_inodes), size=1000, mtime_ns=1, ctime_ns=1)
        return Member(Photo(path, stat, content_hash=f"hash:{path}"), action, "rules")

    members = [member(paths[0], Action.KEEP), *(member(p, Action.DELETE) for p in paths[1:])]
    return Group(Kind.EXACT, members, reason="byte-identical", keeper=0)


def answers() -> tuple[Answers, list[str]]:
    """Answers on a review of two groups; the book is written at once, as a worker would."""
    review = Review([group("/p/a.jpg", "/p/a copy.jpg"), group("/p/b.jpg", "/p/b copy.jpg")])
    book = DecisionBook()
    writes: list[str] = []

    def write() -> None:
        writes.append("write")
        book.write()

    return Answers(review, book, write), writes


def test_a_hide_is_applied_remembered_and_undone_by_showing_again() -> None:
    given, writes = answers()
    given.not_duplicates(1)
    given.not_duplicates(0)
    assert sorted(given.review.hidden()) == [0, 1] and given.recent_hides == [1, 0]
    with Decisions() as store:
        assert store.decision_for(given.review.groups[0]) is Decision.NOT_DUPLICATES

    assert given.show_again(0)
    assert given.recent_hides == [1] and given.review.hidden() == [1]
    with Decisions() as store:
        assert store.decision_for(given.review.groups[0]) is None  # forgotten
        assert store.decision_for(given.review.groups[1]) is Decision.NOT_DUPLICATES
    assert not given.show_again(0)  # not hidden: nothing to do, nothing written
    assert len(writes) == 3


def test_a_chosen_keeper_is_remembered_once_and_a_clean_up_ends_the_undo_of_hides() -> None:
    given, writes = answers()
    message = given.choose_keeper(0, 1)
    assert message.endswith("Remembered for later scans.")
    with Decisions() as store:
        assert store.keeper_for(given.review.groups[0]) == 1
    assert not given.choose_keeper(0, 1).endswith("Remembered for later scans.")  # no change
    assert len(writes) == 1
    assert given.review.groups[0].members[1].why != REMEMBERED  # chosen now, not earlier

    given.not_duplicates(1)
    given.cleaned_up(["/p/a.jpg"])
    assert given.recent_hides == []  # u now puts the files back
    assert [m.photo.path for m in given.review.groups[0].members] == ["/p/a copy.jpg"]
