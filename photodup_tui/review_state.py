"""The user's review of a scan: keepers, marks, hidden groups, what a batch removed.

Pure logic (no Textual), so every rule the screens rely on is tested without a terminal.

Marks follow safety rule 6: ``exact`` and ``near`` groups arrive with the keep rules'
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
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from photodup_tui.engine.decisions import Decision
from photodup_tui.engine.keeprules import dimensions
from photodup_tui.engine.types import Action, Group, Kind, Member, Photo

SIMILAR_NOTE = "not marked: in a similar group only you decide (space)"
REMEMBERED = "keeper: your choice in an earlier scan"
EDIT_NOTE = "not marked: an edit of the keeper you chose; only you decide (space)"


class SortKey(enum.StrEnum):
    RECLAIMABLE = "reclaimable"
    KIND = "kind"
    FILES = "files"
    PATH = "path"

    def next(self) -> SortKey:
        order = list(SortKey)
        return order[(order.index(self) + 1) % len(order)]


_KIND_RANK = {Kind.EXACT: 0, Kind.NEAR: 1, Kind.SIMILAR: 2}
#: The measurements grouping writes into a member's note: "near duplicate of the keeper
#: (pHash distance 2, cosine 0.991); keeper wins: ..." (``grouping._member``).
_MEASURES = re.compile(r"^(?:near duplicate of|similar to) the keeper \(([^)]*)\)")
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
class _AsScanned:
    """A group as the scan made it.  Members' verdicts are relations to *this* keeper, and
    its kind and reason hold while every member is still there (batches only take members
    away and undo only brings the same ones back, so the count says it)."""

    keeper: Member
    size: int
    kind: Kind
    reason: str


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
        self,
        groups: Sequence[Group],
        hidden: Sequence[tuple[Group, Decision]] = (),
        keepers: Sequence[tuple[Group, int]] = (),
    ) -> None:
        """``groups`` to review; ``hidden``: groups an earlier answer hides, which the user
        can bring back (they are kept at the end of :attr:`groups`, dismissed); ``keepers``:
        (group, member index) the user chose as keeper in an earlier scan."""
        self.groups = [*groups, *(group for group, _decision in hidden)]
        self._scanned = [
            _AsScanned(g.keeper_member, len(g.members), g.kind, g.reason) for g in self.groups
        ]
        for group in self.groups:
            if group.kind is Kind.SIMILAR:
                _unmark_similar(group)
        by_id = {id(group): n for n, group in enumerate(self.groups)}
        for group, member_index in keepers:
            if id(group) in by_id and 0 <= member_index < len(group.members):
                self._keep_remembered(by_id[id(group)], member_index)
        # What the review starts from, remembered keepers included: a (keep rules) returns here.
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

    def relation(self, group_index: int, member: Member) -> Kind | None:
        """How ``member`` matches the group's keeper now (None: it is the keeper).

        Exact when both content hashes are equal, whoever is keeper; otherwise the scan's
        verdict, which is a relation to the scan's keeper, so after the user chose another
        keeper: similar when either of the two is only an edit, near otherwise (what the
        safe-delete plan assumes too, ``victim_verdict``).
        """
        group = self.groups[group_index]
        keeper = group.keeper_member
        if member is keeper:
            return None
        mine, theirs = member.photo.content_hash, keeper.photo.content_hash
        if mine is not None and mine == theirs:
            return Kind.EXACT
        scanned = self._scanned[group_index]
        if keeper is scanned.keeper:
            return member.verdict or scanned.kind
        if member is scanned.keeper:
            return keeper.verdict or scanned.kind
        if Kind.SIMILAR in (member.verdict, keeper.verdict):
            return Kind.SIMILAR
        return Kind.NEAR if scanned.kind is Kind.EXACT else scanned.kind

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
                self._settle(index)

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
                    self._settle(index)
                count += 1
        return count

    # ------------------------------------------------------------------ what is left

    def _settle(self, index: int) -> None:
        """A batch took members away (or undo brought them back): the group's kind and
        reason describe the members it has now, never the ones that went."""
        group, scanned = self.groups[index], self._scanned[index]
        if len(group.members) == scanned.size:
            group.kind, group.reason = scanned.kind, scanned.reason
            return
        others = [
            (m, self.relation(index, m)) for m in group.members if m is not group.keeper_member
        ]
        markable = [k for _m, k in others if k is not None and k is not Kind.SIMILAR]
        group.kind = max(markable, key=_KIND_RANK.__getitem__) if markable else Kind.SIMILAR
        group.reason = self._reason_now(index, others)

    def _reason_now(self, index: int, others: list[tuple[Member, Kind | None]]) -> str:
        """Why what is left matches, in the words grouping uses (``grouping._reason``)."""
        group = self.groups[index]
        keeper = group.keeper_member.photo
        similar = [(m, k) for m, k in others if k is Kind.SIMILAR]
        markable = [(m, k) for m, k in others if k is not Kind.SIMILAR]
        told = markable or similar
        inexact = [(m, k) for m, k in told if k is not Kind.EXACT]
        if not inexact:
            text = "byte-identical"
        else:
            member, kind = min(inexact, key=lambda mk: group.scores.get(mk[0].photo.path, 0.0))
            text = f"{self._match_words(index, member, kind)}, {dimensions(keeper)} vs "
            text += dimensions(member.photo)
            if len(told) > 1:
                text += f" (weakest of {len(told)} matches)"
        if markable and similar:
            edits = "edit" if len(similar) == 1 else "edits"
            text += f"; {len(similar)} similar {edits} beside it, kept"
        return text

    def _match_words(self, index: int, member: Member, kind: Kind | None) -> str:
        """The scan's own measurements of this match ("pHash distance 2, cosine 0.991"),
        read from the rules' note on the member while the scan's keeper is still keeper."""
        if self.groups[index].keeper_member is self._scanned[index].keeper:
            rules = self._rules[index]
            for candidate, why in zip(rules.members, rules.whys, strict=True):
                found = _MEASURES.match(why) if candidate is member else None
                if found:
                    return found.group(1)
        score = self.groups[index].scores.get(member.photo.path)
        name = (kind or Kind.NEAR).value
        return name if score is None else f"{name}, similarity {score:.3f}"

    def _keep_remembered(self, index: int, member_index: int) -> None:
        """The keeper the user chose in an earlier scan, before the review starts.

        A swap like :meth:`set_keeper`; but the user did not choose this scan's marks, so
        a member that is only an edit of the new keeper is not left marked (rule 6).
        """
        group = self.groups[index]
        new, old = group.members[member_index], group.keeper_member
        if new is old:
            return  # the rules chose it this time too: their reason says more
        inherited = new.action if group.kind is not Kind.SIMILAR else Action.KEEP
        new.action, new.why = Action.KEEP, REMEMBERED
        old.action = inherited
        old.why = "the scan's keeper; you chose another in an earlier scan" + (
            ", so it is marked for the trash" if inherited is Action.DELETE else ""
        )
        group.keeper = member_index
        for member in group.members:
            if member.action is Action.DELETE and self.relation(index, member) is Kind.SIMILAR:
                member.action, member.why = Action.KEEP, EDIT_NOTE

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
            self._kinds[index] = self.groups[index].kind.value
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
