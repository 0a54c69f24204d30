"""The user's review of a scan: keepers, marks, dismissed groups, what a batch removed.

Pure logic (no Textual), so every rule the screens rely on is tested without a terminal.

Marks follow RELIABILITY rule 6: ``exact`` and ``near`` groups arrive with the keep rules'
choice (non-keepers marked); in a ``similar`` group nothing is marked for the user, ever,
so every mark there comes from the user's own key press.  That is what makes it right to
call ``make_plan(..., allow_similar=True)`` with these groups.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from photodup_tui.engine.types import Action, Group, Kind, Member

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


@dataclass(frozen=True, slots=True)
class _Choice:
    """The keep rules' decision for one group, by path, so it survives removals."""

    keeper: str
    actions: dict[str, tuple[Action, str]]

    @classmethod
    def of(cls, group: Group) -> _Choice:
        return cls(
            group.keeper_member.photo.path,
            {m.photo.path: (m.action, m.why) for m in group.members},
        )


@dataclass(slots=True)
class Marked:
    files: int = 0
    bytes: int = 0
    groups: int = 0
    by_kind: dict[Kind, int] = field(default_factory=dict)


class Review:
    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups = list(groups)
        for group in self.groups:
            if group.kind is Kind.SIMILAR:
                _unmark_similar(group)
        self._rules = [_Choice.of(g) for g in self.groups]
        self.dismissed: set[int] = set()
        #: path -> (group index, member) for files a batch moved away, so undo can return them
        self._removed: dict[str, tuple[int, Member]] = {}

    # ------------------------------------------------------------------ what is shown

    def visible(self, sort: SortKey | None = SortKey.RECLAIMABLE, text: str = "") -> list[int]:
        """Indices of the groups still worth showing, filtered, and sorted unless ``sort`` is
        None (then in scan order, which is cheaper when only counting)."""
        needle = text.strip().casefold()
        shown = [
            i
            for i, g in enumerate(self.groups)
            if i not in self.dismissed and len(g.members) >= 2 and _matches(g, needle)
        ]
        if sort is None:
            return shown
        return sorted(shown, key=lambda i: _sort_key(self.groups[i], sort))

    def marked(self, shown: Sequence[int] | None = None) -> Marked:
        """What ``d`` would act on, in ``shown`` (default: every group still shown)."""
        total = Marked()
        seen: set[tuple[int, int]] = set()
        for i in self.visible(sort=None) if shown is None else shown:
            group = self.groups[i]
            victims = [m for m in group.members if m.action is Action.DELETE]
            if not victims:
                continue
            total.groups += 1
            total.by_kind[group.kind] = total.by_kind.get(group.kind, 0) + len(victims)
            for member in victims:
                total.files += 1
                if member.photo.stat.replica not in seen:  # a hard link frees nothing twice
                    seen.add(member.photo.stat.replica)
                    total.bytes += member.photo.stat.size
        return total

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
        if member.action is Action.DELETE:
            member.action, member.why = Action.KEEP, "unmarked by you"
            return f"Unmarked {_name(member)}."
        member.action, member.why = Action.DELETE, "marked by you"
        return f"Marked {_name(member)} for the trash."

    def apply_rules(self) -> int:
        """The keep rules' choice again in every exact and near group; similar ones untouched.
        Returns how many files are marked afterwards in those groups."""
        marked = 0
        for index, group in enumerate(self.groups):
            if group.kind is Kind.SIMILAR or index in self.dismissed:
                continue
            choice = self._rules[index]
            keeper = next((m for m in group.members if m.photo.path == choice.keeper), None)
            keeper = keeper or group.keeper_member
            for member in group.members:
                action, why = choice.actions.get(member.photo.path, (Action.KEEP, "kept"))
                member.action, member.why = action, why
                if member is keeper:
                    member.action = Action.KEEP
            group.keeper = group.members.index(keeper)
            marked += sum(m.action is Action.DELETE for m in group.members)
        return marked

    def unmark_all(self) -> None:
        for group in self.groups:
            for member in group.members:
                if member.action is Action.DELETE:
                    member.action, member.why = Action.KEEP, "unmarked by you"

    def dismiss(self, group_index: int) -> None:
        self.dismissed.add(group_index)

    # ------------------------------------------------------------------ after a batch

    def remove(self, paths: Iterable[str]) -> None:
        """Drop members a batch moved to the trash; they come back with :meth:`restore`."""
        gone = set(paths)
        for index, group in enumerate(self.groups):
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
        for path in paths:
            entry = self._removed.pop(path, None)
            if entry is None:
                continue
            index, member = entry
            member.action, member.why = Action.KEEP, "restored by undo"
            self.groups[index].members.append(member)
            count += 1
        return count


def _unmark_similar(group: Group) -> None:
    for member in group.members:
        if member.action is Action.DELETE:
            relation = member.why.split(";", 1)[0]
            member.action, member.why = Action.KEEP, f"{relation}; {SIMILAR_NOTE}"


def _matches(group: Group, needle: str) -> bool:
    if not needle:
        return True
    if needle == group.kind.value:
        return True
    return any(needle in m.photo.path.casefold() for m in group.members)


def _sort_key(group: Group, sort: SortKey) -> tuple[object, ...]:
    path = group.keeper_member.photo.path
    if sort is SortKey.KIND:
        return (_KIND_RANK[group.kind], -group.reclaimable, path)
    if sort is SortKey.FILES:
        return (-len(group.members), -group.reclaimable, path)
    if sort is SortKey.PATH:
        return (path,)
    return (-group.reclaimable, _KIND_RANK[group.kind], path)


def _name(member: Member) -> str:
    return member.photo.path.rsplit("/", 1)[-1]
