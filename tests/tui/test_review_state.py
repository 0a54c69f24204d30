"""The review rules the screens rely on: keepers, marks, rule 6, removal and restore."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

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


# ------------------------------------------------------------------ the caches stay right

_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["toggle", "keeper", "dismiss", "show", "rules", "unmark", "remove", "restore"]
        ),
        st.integers(0, 5),
        st.integers(0, 3),
    ),
    max_size=25,
)


def _library() -> list[Group]:
    sizes = (300, 100, 700, 100, 500, 900)
    kinds = (Kind.EXACT, Kind.NEAR, Kind.SIMILAR, Kind.NEAR, Kind.EXACT, Kind.NEAR)
    groups = []
    for n, (size, kind) in enumerate(zip(sizes, kinds, strict=True)):
        paths = [f"/lib/g{n}/{'ab'[m % 2]}{m}.jpg" for m in range(2 + n % 3)]
        groups.append(group(kind, *paths, size=size))
    # A hard link: group 4's second member is the same file as group 1's second.
    twin = groups[1].members[1]
    groups[4].members[1] = Member(
        Photo("/lib/g4/link.jpg", twin.photo.stat, content_hash="t"), Action.DELETE, "rules"
    )
    return groups


def _expected_visible(review: Review, sort: SortKey, needle: str) -> list[int]:
    """The review's rules computed from scratch, the slow way."""

    def shown(i: int) -> bool:
        g = review.groups[i]
        if i in review.dismissed or len(g.members) < 2:
            return False
        return (
            not needle
            or needle == g.kind.value
            or any(needle in m.photo.path.casefold() for m in g.members)
        )

    def key(i: int) -> tuple[object, ...]:
        g = review.groups[i]
        path, rank = g.keeper_member.photo.path, _RANK[g.kind]
        return {
            SortKey.RECLAIMABLE: (-g.reclaimable, rank, path),
            SortKey.KIND: (rank, -g.reclaimable, path),
            SortKey.FILES: (-len(g.members), -g.reclaimable, path),
            SortKey.PATH: (path,),
        }[sort]

    return sorted((i for i in range(len(review.groups)) if shown(i)), key=key)


def _expected_marked(review: Review) -> tuple[int, int, int]:
    files = groups = size = 0
    seen: set[tuple[int, int]] = set()
    for i in _expected_visible(review, SortKey.PATH, ""):
        victims = [m for m in review.groups[i].members if m.action is Action.DELETE]
        files, groups = files + len(victims), groups + bool(victims)
        for m in victims:
            if m.photo.stat.replica not in seen:
                seen.add(m.photo.stat.replica)
                size += m.photo.stat.size
    return files, size, groups


_RANK = {Kind.EXACT: 0, Kind.NEAR: 1, Kind.SIMILAR: 2}


@settings(max_examples=150, deadline=None)
@given(ops=_OPS)
def test_kept_totals_and_orders_match_a_fresh_computation(
    ops: list[tuple[str, int, int]],
) -> None:
    review = Review(_library())
    trashed: list[str] = []
    for op, g, m in ops:
        # Ask for the orders and filters between changes, so the caches have a past.
        for sort in SortKey:
            review.visible(sort)
        review.visible(SortKey.RECLAIMABLE, "g")
        members = review.groups[g].members
        if op == "toggle":
            review.toggle(g, m % len(members))
        elif op == "keeper":
            review.set_keeper(g, m % len(members))
        elif op == "dismiss":
            review.dismiss(g)
        elif op == "show":
            review.show_again(g)
        elif op == "rules":
            review.apply_rules()
        elif op == "unmark":
            review.unmark_all()
        elif op == "remove":
            victims = [x.photo.path for x in members if x.action is Action.DELETE][:1]
            review.remove(victims)
            trashed += victims
        elif trashed:
            review.restore([trashed.pop()])
        for sort in SortKey:
            for needle in ("", "g1", "/lib/g", "near", "a"):
                assert review.visible(sort, needle) == _expected_visible(review, sort, needle)
        marked = review.marked()
        assert (marked.files, marked.bytes, marked.groups) == _expected_marked(review)
        kinds = {kind: 0 for kind in Kind}
        for i in _expected_visible(review, SortKey.PATH, ""):
            kinds[review.groups[i].kind] += 1
        assert review.kinds() == kinds
