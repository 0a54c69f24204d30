"""What the review says about a group after a clean-up took some of it, each member's own
match to the keeper, and keeper choices remembered from an earlier scan."""

from __future__ import annotations

import itertools

from photodup_tui.engine.decisions import Decisions
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from photodup_tui.review_state import EDIT_NOTE, REMEMBERED, Review

_inodes = itertools.count(500)


def photo(path: str, content: str, size: int = 1000, dims: tuple[int, int] = (800, 600)) -> Photo:
    stat = FileStat(dev=1, ino=next(_inodes), size=size, mtime_ns=1, ctime_ns=1)
    return Photo(path, stat, content_hash=content, width=dims[0], height=dims[1])


def family() -> Group:
    """A keeper, its byte-identical copy, a re-saved copy and a grey edit (as grouping
    builds one: the kind is near, the edit rides along, unmarked)."""
    keeper = Member(photo("/p/a.jpg", "h-a"), Action.KEEP, "keeper: higher resolution")
    copy = Member(
        photo("/p/b/a.jpg", "h-a"),
        Action.DELETE,
        "byte-identical to the keeper; keeper wins: shorter path",
        Kind.EXACT,
    )
    resaved = Member(
        photo("/p/a-small.jpg", "h-s", 400, (400, 300)),
        Action.DELETE,
        "near duplicate of the keeper (pHash distance 2, cosine 0.991); keeper wins: size",
        Kind.NEAR,
    )
    grey = Member(
        photo("/p/a-grey.jpg", "h-g"),
        Action.KEEP,
        "similar to the keeper (pHash distance 9, cosine 0.912, same shot 0.95); "
        "similar photos are only shown, you decide",
        Kind.SIMILAR,
    )
    return Group(
        Kind.NEAR,
        [keeper, copy, resaved, grey],
        reason="pHash distance 2, cosine 0.991, 800x600 vs 400x300 (weakest of 2 matches); "
        "1 similar edit beside it, kept",
        scores={
            "/p/a.jpg": 1.0,
            "/p/b/a.jpg": 1.0,
            "/p/a-small.jpg": 0.991,
            "/p/a-grey.jpg": 0.912,
        },
    )


def test_what_is_left_after_a_clean_up_has_its_own_kind_and_reason() -> None:
    group = family()
    review = Review([group])
    assert review.kinds()[Kind.NEAR] == 1

    review.remove(["/p/a-small.jpg"])  # the re-saved copy went: an exact group is left
    assert group.kind is Kind.EXACT
    assert group.reason == "byte-identical; 1 similar edit beside it, kept"
    assert review.kinds() == {Kind.EXACT: 1, Kind.NEAR: 0, Kind.SIMILAR: 0}
    assert review.visible(text="exact") == [0]  # the kind filter follows too

    review.remove(["/p/b/a.jpg"])  # and the copy: only the keeper and its edit are left
    assert group.kind is Kind.SIMILAR
    assert group.reason == "pHash distance 9, cosine 0.912, same shot 0.95, 800x600 vs 800x600"
    assert "byte-identical" not in group.reason
    assert review.kinds() == {Kind.EXACT: 0, Kind.NEAR: 0, Kind.SIMILAR: 1}
    assert review.marked().files == 0

    # Undo brings them back: the group is what the scan made again.
    review.restore(["/p/a-small.jpg", "/p/b/a.jpg"])
    assert group.kind is Kind.NEAR
    assert group.reason.startswith("pHash distance 2, cosine 0.991")
    assert review.kinds()[Kind.NEAR] == 1


def test_a_group_with_one_photo_left_disappears() -> None:
    group = family()
    review = Review([group])
    review.remove(["/p/b/a.jpg", "/p/a-small.jpg", "/p/a-grey.jpg"])
    assert review.visible() == []
    assert sum(review.kinds().values()) == 0


def test_each_member_has_its_own_match_to_the_keeper() -> None:
    group = family()
    review = Review([group])
    relations = [review.relation(0, m) for m in group.members]
    assert relations == [None, Kind.EXACT, Kind.NEAR, Kind.SIMILAR]

    # The copy becomes the keeper: the old keeper is byte-identical to it, the edit is
    # still only an edit, the re-saved copy near.
    review.set_keeper(0, 1)
    relations = [review.relation(0, m) for m in group.members]
    assert relations == [Kind.EXACT, None, Kind.NEAR, Kind.SIMILAR]


def test_a_keeper_chosen_in_an_earlier_scan_is_kept_again() -> None:
    first = family()
    Review([first]).set_keeper(0, 2)  # the user keeps the re-saved copy
    with Decisions() as store:
        store.record_keeper(first, first.members[2])

    again = family()  # the next scan: the same photos, the rules' keeper first again
    with Decisions() as store:
        chosen = store.keeper_for(again)
    assert chosen == 2
    review = Review([again], keepers=[(again, 2)])
    assert again.keeper_member.photo.path == "/p/a-small.jpg"
    assert again.keeper_member.why == REMEMBERED
    # The rules' keeper takes its mark (a swap); the copy stays marked.
    assert [m.action for m in again.members] == [
        Action.DELETE,
        Action.DELETE,
        Action.KEEP,
        Action.KEEP,
    ]
    # a (keep rules) starts from the remembered choice, not from the scan's.
    review.unmark_all()
    review.apply_rules()
    assert again.keeper_member.photo.path == "/p/a-small.jpg"


def test_a_remembered_edit_as_keeper_leaves_nothing_marked_against_it() -> None:
    group = family()
    Review([group], keepers=[(group, 3)])  # the grey edit, chosen in an earlier scan
    assert group.keeper_member.photo.path == "/p/a-grey.jpg"
    # Everything else is only similar to an edit: rule 6, nothing marked for the user.
    assert [m.action for m in group.members] == [Action.KEEP] * 4
    assert {m.why for m in group.members[1:3]} == {EDIT_NOTE}


def test_the_store_applies_a_choice_only_where_it_was_made() -> None:
    group = family()
    with Decisions() as store:
        store.record_keeper(group, group.members[2])
        # A group with the chosen photo and another it was chosen over: applies.
        pair = Group(Kind.NEAR, [family().members[0], family().members[2]], "test")
        assert store.keeper_for(pair) == 1
        # The chosen photo with photos the user never compared it with: does not apply.
        strangers = Group(
            Kind.NEAR, [Member(photo("/q/x.jpg", "h-x")), family().members[2]], "test"
        )
        assert store.keeper_for(strangers) is None

        # A choice among byte-identical copies: the copy at the chosen path.
        copies = Group(Kind.EXACT, [family().members[0], family().members[1]], "test")
        store.record_keeper(copies, copies.members[1])
        again = Group(Kind.EXACT, [family().members[0], family().members[1]], "test")
        assert store.keeper_for(again) == 1
        # The newest choice wins.
        store.record_keeper(again, again.members[0])
        assert store.keeper_for(again) == 0
