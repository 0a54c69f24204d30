"""The review rules the screens rely on: keepers, marks, rule 6, removal and restore."""

from __future__ import annotations

import itertools

from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from photodup_tui.review_state import Review, SortKey

_inodes = itertools.count(100)


def member(path: str, action: Action = Action.KEEP, size: int = 1000) -> Member:
    stat = FileStat(dev=1, ino=next(_inodes), size=size, mtime_ns=1, ctime_ns=1)
    return Member(Photo(path, stat, content_hash=path), action, "rules")


def group(kind: Kind, *paths: str, size: int = 1000) -> Group:
    members = [member(paths[0], size=size)]
    members += [member(p, Action.DELETE, size) for p in paths[1:]]
    return Group(kind, members, reason=kind.value, keeper=0, scores={p: 1.0 for p in paths})


def actions(g: Group) -> list[Action]:
    return [m.action for m in g.members]


def test_similar_groups_arrive_unmarked_and_stay_so_under_the_rules() -> None:
    similar = group(Kind.SIMILAR, "/a.jpg", "/a-edit.jpg")
    exact = group(Kind.EXACT, "/b.jpg", "/b-copy.jpg")
    review = Review([similar, exact])
    assert actions(similar) == [Action.KEEP, Action.KEEP]
    review.unmark_all()
    review.apply_rules()
    assert actions(similar) == [Action.KEEP, Action.KEEP]
    assert actions(exact) == [Action.KEEP, Action.DELETE]


def test_only_an_explicit_toggle_marks_a_similar_member() -> None:
    similar = group(Kind.SIMILAR, "/a.jpg", "/a-crop.jpg", "/a-bw.jpg")
    review = Review([similar])
    review.toggle(0, 2)
    assert actions(similar) == [Action.KEEP, Action.KEEP, Action.DELETE]
    # Choosing another keeper in a similar group never marks the old one for the user.
    review.set_keeper(0, 2)
    assert similar.keeper_member.photo.path == "/a-bw.jpg"
    assert actions(similar) == [Action.KEEP, Action.KEEP, Action.KEEP]


def test_changing_the_keeper_swaps_the_marks() -> None:
    near = group(Kind.NEAR, "/big.jpg", "/small.jpg", "/copy.jpg")
    review = Review([near])
    review.set_keeper(0, 1)
    assert near.keeper_member.photo.path == "/small.jpg"
    assert actions(near) == [Action.DELETE, Action.KEEP, Action.DELETE]
    assert near.keeper_member.why == "keeper: your choice"


def test_the_keeper_cannot_be_marked() -> None:
    exact = group(Kind.EXACT, "/a.jpg", "/b.jpg")
    review = Review([exact])
    message = review.toggle(0, 0)
    assert "keeper" in message
    assert exact.keeper_member.action is Action.KEEP


def test_apply_rules_restores_the_rules_choice_after_edits() -> None:
    near = group(Kind.NEAR, "/big.jpg", "/small.jpg")
    review = Review([near])
    review.set_keeper(0, 1)
    review.toggle(0, 0)  # unmark the old keeper
    assert review.apply_rules() == 1
    assert near.keeper_member.photo.path == "/big.jpg"
    assert actions(near) == [Action.KEEP, Action.DELETE]


def test_marked_counts_each_replica_once_and_skips_dismissed_groups() -> None:
    exact = group(Kind.EXACT, "/a.jpg", "/b.jpg", size=500)
    link = exact.members[1]
    exact.members.append(Member(Photo("/c.jpg", link.photo.stat), Action.DELETE, "hard link"))
    other = group(Kind.NEAR, "/x.jpg", "/y.jpg", size=700)
    review = Review([exact, other])
    marked = review.marked()
    assert (marked.files, marked.bytes, marked.groups) == (3, 1200, 2)
    review.dismiss(1)
    assert review.marked().bytes == 500
    assert review.groups_to_act_on() == [exact]


def test_removed_members_come_back_unmarked_on_restore() -> None:
    near = group(Kind.NEAR, "/big.jpg", "/small.jpg", "/copy.jpg")
    review = Review([near])
    review.remove(["/small.jpg", "/copy.jpg"])
    assert [m.photo.path for m in near.members] == ["/big.jpg"]
    assert review.visible() == []  # one photo left is no group
    assert review.restore(["/copy.jpg", "/not-ours.jpg"]) == 1
    assert review.visible() == [0]
    assert [(m.photo.path, m.action) for m in near.members] == [
        ("/big.jpg", Action.KEEP),
        ("/copy.jpg", Action.KEEP),
    ]


def test_sort_and_filter() -> None:
    small = group(Kind.EXACT, "/p/a.jpg", "/p/a2.jpg", size=10)
    big = group(Kind.NEAR, "/q/b.jpg", "/q/b2.jpg", "/q/b3.jpg", size=99)
    review = Review([small, big])
    assert review.visible(SortKey.RECLAIMABLE) == [1, 0]
    assert review.visible(SortKey.KIND) == [0, 1]
    assert review.visible(SortKey.PATH) == [0, 1]
    assert review.visible(SortKey.FILES) == [1, 0]
    assert review.visible(text="/Q/") == [1]
    assert review.visible(text="exact") == [0]
    assert SortKey.PATH.next() is SortKey.RECLAIMABLE
