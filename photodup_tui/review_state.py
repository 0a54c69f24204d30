"""The user's review of a scan: keepers, marks, hidden groups, what a batch removed.

Pure logic (no Textual), so every rule the screens rely on is tested without a terminal.

Marks follow RELIABILITY rule 6: ``exact`` and ``near`` groups arrive with the keep rules'
choice (non-keepers marked); in a ``similar`` group nothing is marked for the user, ever,
so every mark there comes from the user's own key press.  That is what makes it right to
call ``make_plan(..., allow_similar=True)`` with these groups.

Every key must stay cheap with 100,000 photos (bench/tui_bench.py), so nothing a key does
walks all the groups: the totals the summary shows are kept up to date one group at a time
(:class:`_Tally`), each sort order is computed once per change, and a filter that grows by
a letter only searches what the shorter one matched.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from photodup_tui.engine.decisions import Decision
from photodup_tui.engine.types import Action, Group, Kind, Member, Photo

SIMILAR_NOTE = "not marked: in a similar group only you decide (space)"


class SortKey(enum.StrEnum):
    RECLAIMABLE = "reclaimable"
    KIND = "kind"
    FILES = "files"
    PATH = "path"

    def next(self) -> SortKey:
        order = list(SortKey)
        return order[(order.index(self) + 1) % len(order)]


_KIND_RANK = {Kind.EXACT: 0, Kind.NEAR: 1, Kind.SIMILAR: 2}
_KIND_NAMES = {kind.value for kind in Kind}


@dataclass(frozen=True, slots=True)
class _Choice:
    """The keep rules' decision for one group.  Members are the same objects for the whole
    review (a batch removes them, undo puts the same ones back), so the choice survives
    removals; three tuples rather than a dict per group keep 100,000 photos light."""

    keeper: Member
    members: tuple[Member, ...]
    actions: tuple[Action, ...]
    whys: tuple[str, ...]

    @classmethod
    def of(cls, group: Group) -> _Choice:
        members = tuple(group.members)
        return cls(
            group.keeper_member,
            members,
            tuple(m.action for m in members),
            tuple(m.why for m in members),
        )


@dataclass(frozen=True, slots=True)
class Hidden:
    """Why a group is not shown: the user's answer, now or in an earlier session."""

    decision: Decision
    earlier: bool = False  # an earlier session's answer: the scan itself hid the group


@dataclass(slots=True)
class Marked:
    files: int = 0
    bytes: int = 0
    groups: int = 0
    by_kind: dict[Kind, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Share:
    """What one group adds to the totals; kept, so taking it out never recomputes it."""

    shown: bool
    kind: Kind
    victims: tuple[Photo, ...]  # the marked members' photos


class _Tally:
    """Shown groups by kind and what is marked in them, hard links counted once."""

    def __init__(self) -> None:
        self.kinds: Counter[Kind] = Counter()
        self.marked_by_kind: Counter[Kind] = Counter()
        self.groups_marked = 0
        self.files = 0
        self.bytes = 0
        self._replicas: Counter[tuple[int, int]] = Counter()

    def add(self, share: _Share, sign: int) -> None:
        if not share.shown:
            return
        self.kinds[share.kind] += sign
        if not share.victims:
            return
        self.groups_marked += sign
        self.marked_by_kind[share.kind] += sign * len(share.victims)
        self.files += sign * len(share.victims)
        for photo in share.victims:
            replica = photo.stat.replica
            before = self._replicas[replica]
            self._replicas[replica] = before + sign
            if before == 0 and sign > 0:
                self.bytes += photo.stat.size  # the first mark on these bytes frees them
            elif before == 1 and sign < 0:
                self.bytes -= photo.stat.size
                del self._replicas[replica]

    def marked(self) -> Marked:
        by_kind = {kind: n for kind, n in self.marked_by_kind.items() if n}
        return Marked(self.files, self.bytes, self.groups_marked, by_kind)


@dataclass(frozen=True, slots=True)
class _Visible:
    sort: SortKey | None
    needle: str
    version: int
    order: list[int]


class Review:
    def __init__(
        self, groups: Sequence[Group], hidden: Sequence[tuple[Group, Decision]] = ()
    ) -> None:
        """``groups`` to review; ``hidden``: groups an earlier answer hides, which the user
        can bring back (they are kept at the end of :attr:`groups`, dismissed)."""
        self.groups = [*groups, *(group for group, _decision in hidden)]
        for group in self.groups:
            if group.kind is Kind.SIMILAR:
                _unmark_similar(group)
        self._rules = [_Choice.of(g) for g in self.groups]
        #: index -> why it is hidden, the most recently hidden last
        self.dismissed: dict[int, Hidden] = {
            len(groups) + n: Hidden(decision, earlier=True)
            for n, (_group, decision) in enumerate(hidden)
        }
        #: path -> (group index, member) for files a batch moved away, so undo can return them
        self._removed: dict[str, tuple[int, Member]] = {}
        # Caches, each valid for one version of what it reads.
        self._version = 0  # bumped by every change to what is shown
        self._orders: dict[SortKey, list[int]] = {}  # every group, per sort; kept sorted
        self._bulk = False  # many groups change at once: drop the orders, sort again later
        self._last: _Visible | None = None
        self._haystacks = [_haystack(g) for g in self.groups]
        self._kinds = [g.kind.value for g in self.groups]
        self._flags = [self._shown(i) for i in range(len(self.groups))]
        self._reclaimable = [0] * len(self.groups)
        self._tally = _Tally()
        self._shares = [self._share(i) for i in range(len(self.groups))]
        for share in self._shares:
            self._tally.add(share, +1)

    # ------------------------------------------------------------------ what is shown

    def visible(self, sort: SortKey | None = SortKey.RECLAIMABLE, text: str = "") -> list[int]:
        """Indices of the groups still worth showing, filtered, and sorted unless ``sort`` is
        None (then in scan order, which is cheaper when only counting)."""
        needle = text.strip().casefold()
        last = self._last
        if last is not None and (last.sort, last.needle, last.version) == (
            sort,
            needle,
            self._version,
        ):
            return list(last.order)
        if (
            last is not None
            and (last.sort, last.version) == (sort, self._version)
            and last.needle in needle
            and needle not in _KIND_NAMES  # a kind's name matches by kind, not by path
        ):
            candidates: Iterable[int] = last.order  # a longer needle only narrows
        else:
            candidates = range(len(self.groups)) if sort is None else self._order(sort)
        flags, haystacks, kinds = self._flags, self._haystacks, self._kinds
        if needle:
            order = [
                i for i in candidates if flags[i] and (needle in haystacks[i] or needle == kinds[i])
            ]
        else:
            order = [i for i in candidates if flags[i]]
        self._last = _Visible(sort, needle, self._version, order)
        return list(order)

    def kinds(self) -> dict[Kind, int]:
        """Shown groups (filter aside) by kind."""
        return {kind: self._tally.kinds[kind] for kind in Kind}

    def marked(self, shown: Sequence[int] | None = None) -> Marked:
        """What ``d`` would act on, in ``shown`` (default: every group still shown)."""
        if shown is None:
            return self._tally.marked()
        tally = _Tally()
        for i in shown:
            tally.add(self._shares[i], +1)
        return tally.marked()

    def reclaimable(self, group_index: int) -> int:
        return self._reclaimable[group_index]

    def groups_to_act_on(self) -> list[Group]:
        """What ``make_plan`` gets: shown groups only (dismissed ones are never touched)."""
        return [self.groups[i] for i in self.visible(sort=None)]

    # ------------------------------------------------------------------ the user's keys

    def set_keeper(self, group_index: int, member_index: int) -> str:
        """Make a member the keeper; the old keeper takes the new one's mark (a swap).

        In a similar group the old keeper is never marked for the user (rule 6).
        """
        group = self.groups[group_index]
        new, old = group.members[member_index], group.keeper_member
        if new is old:
            return "This is already the keeper."
        with self._changing(group_index):
            inherited = new.action if group.kind is not Kind.SIMILAR else Action.KEEP
            new.action, new.why = Action.KEEP, "keeper: your choice"
            old.action = inherited
            old.why = "was the keeper; you chose another" + (
                ", so it is marked for the trash" if inherited is Action.DELETE else ""
            )
            group.keeper = member_index
        return f"Keeping {_name(new)}."

    def toggle(self, group_index: int, member_index: int) -> str:
        """Mark or unmark one member; the keeper cannot be marked (rule 1)."""
        group = self.groups[group_index]
        member = group.members[member_index]
        if member is group.keeper_member:
            return "That is the keeper. Press k on another photo to keep that one instead."
        with self._changing(group_index):
            if member.action is Action.DELETE:
                member.action, member.why = Action.KEEP, "unmarked by you"
                return f"Unmarked {_name(member)}."
            member.action, member.why = Action.DELETE, "marked by you"
            return f"Marked {_name(member)} for the trash."

    def apply_rules(self) -> int:
        """The keep rules' choice again in every exact and near group; similar ones untouched.
        Returns how many files are marked afterwards in those groups."""
        marked = 0
        with self._many_changes():
            for index, group in enumerate(self.groups):
                if group.kind is Kind.SIMILAR or index in self.dismissed:
                    continue
                with self._changing(index):
                    marked += _choose_again(group, self._rules[index])
        return marked

    def unmark_all(self) -> None:
        with self._many_changes():
            for index, group in enumerate(self.groups):
                if not any(m.action is Action.DELETE for m in group.members):
                    continue
                with self._changing(index):
                    for member in group.members:
                        if member.action is Action.DELETE:
                            member.action, member.why = Action.KEEP, "unmarked by you"

    def dismiss(self, group_index: int, decision: Decision = Decision.NOT_DUPLICATES) -> None:
        """Hide a group (the caller remembers the answer by content)."""
        with self._changing(group_index, reorders=False):
            self.dismissed.pop(group_index, None)  # re-inserted: the most recent comes last
            self.dismissed[group_index] = Hidden(decision)

    def show_again(self, group_index: int) -> Hidden | None:
        """Bring a hidden group back, as it was; returns why it was hidden (None: it was not)."""
        if group_index not in self.dismissed:
            return None
        with self._changing(group_index, reorders=False):
            return self.dismissed.pop(group_index)

    def hidden(self) -> list[int]:
        """Hidden groups that still have something to show, the most recently hidden first."""
        return [i for i in reversed(self.dismissed) if len(self.groups[i].members) >= 2]

    # ------------------------------------------------------------------ after a batch

    def remove(self, paths: Iterable[str]) -> None:
        """Drop members a batch moved to the trash; they come back with :meth:`restore`."""
        gone = set(paths)
        with self._many_changes():
            self._remove(gone)

    def _remove(self, gone: set[str]) -> None:
        for index, group in enumerate(self.groups):
            if not any(m.photo.path in gone for m in group.members):
                continue
            with self._changing(index):
                keeper = group.keeper_member
                kept = []
                for member in group.members:
                    if member.photo.path in gone and member is not keeper:
                        self._removed[member.photo.path] = (index, member)
                    else:
                        kept.append(member)
                group.members = kept
                group.keeper = kept.index(keeper)

    def restore(self, paths: Iterable[str]) -> int:
        """Put restored files back in their groups, unmarked; returns how many came back."""
        count = 0
        with self._many_changes():
            for path in paths:
                entry = self._removed.pop(path, None)
                if entry is None:
                    continue
                index, member = entry
                with self._changing(index):
                    member.action, member.why = Action.KEEP, "restored by undo"
                    self.groups[index].members.append(member)
                count += 1
        return count

    # ------------------------------------------------------------------ bookkeeping

    @contextmanager
    def _changing(self, index: int, reorders: bool = True) -> Iterator[None]:
        """Wrap every change to one group: its old share leaves the totals, the new one
        enters, the caches that read it follow.  The group leaves each sorted order and
        goes back in at its new place: two list operations, never a sort of everything."""
        self._tally.add(self._shares[index], -1)
        if reorders and not self._bulk:
            for order in self._orders.values():
                order.remove(index)
        try:
            yield
        finally:
            self._haystacks[index] = _haystack(self.groups[index])
            self._flags[index] = self._shown(index)
            self._shares[index] = self._share(index)
            self._tally.add(self._shares[index], +1)
            self._version += 1
            if reorders and not self._bulk:
                for sort, order in self._orders.items():
                    bisect.insort(order, index, key=partial(self._sort_key, sort=sort))

    @contextmanager
    def _many_changes(self) -> Iterator[None]:
        """Changes to many groups at once: sorting again later beats moving each group."""
        self._bulk, self._orders = True, {}
        try:
            yield
        finally:
            self._bulk = False
            self._version += 1

    def _share(self, index: int) -> _Share:
        group = self.groups[index]
        victims = tuple(m.photo for m in group.members if m.action is Action.DELETE)
        self._reclaimable[index] = sum(photo.stat.size for photo in victims)
        return _Share(self._shown(index), group.kind, victims)

    def _shown(self, index: int) -> bool:
        return index not in self.dismissed and len(self.groups[index].members) >= 2

    def _order(self, sort: SortKey) -> list[int]:
        """Every group in ``sort`` order, sorted once, then kept in order by :meth:`_changing`."""
        order = self._orders.get(sort)
        if order is None:
            order = sorted(range(len(self.groups)), key=partial(self._sort_key, sort=sort))
            self._orders[sort] = order
        return order

    def _sort_key(self, index: int, sort: SortKey) -> tuple[object, ...]:
        group = self.groups[index]
        path = group.keeper_member.photo.path
        if sort is SortKey.KIND:
            return (_KIND_RANK[group.kind], -self._reclaimable[index], path)
        if sort is SortKey.FILES:
            return (-len(group.members), -self._reclaimable[index], path)
        if sort is SortKey.PATH:
            return (path,)
        return (-self._reclaimable[index], _KIND_RANK[group.kind], path)


def _choose_again(group: Group, choice: _Choice) -> int:
    """Put back the keep rules' choice; returns how many members it marks."""
    rules = zip(choice.members, choice.actions, choice.whys, strict=True)
    chosen = {id(member): (action, why) for member, action, why in rules}
    positions = {id(member): n for n, member in enumerate(group.members)}
    keeper = choice.keeper if id(choice.keeper) in positions else group.keeper_member
    for member in group.members:
        member.action, member.why = chosen.get(id(member), (Action.KEEP, "kept"))
        if member is keeper:
            member.action = Action.KEEP
    group.keeper = positions[id(keeper)]
    return sum(m.action is Action.DELETE for m in group.members)


def _unmark_similar(group: Group) -> None:
    for member in group.members:
        if member.action is Action.DELETE:
            relation = member.why.split(";", 1)[0]
            member.action, member.why = Action.KEEP, f"{relation}; {SIMILAR_NOTE}"


def _haystack(group: Group) -> str:
    """What a filter searches: every member's path, case-folded ("\\n" never is typed)."""
    return "\n".join(m.photo.path for m in group.members).casefold()


def _name(member: Member) -> str:
    return member.photo.path.rsplit("/", 1)[-1]
