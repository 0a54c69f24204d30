"""From reviewed groups to a list of operations (rules 1, 2, 3, 6, 7, 11, checked statically).

Everything here is decided from the groups and a few ``lstat`` calls; nothing is changed on
disk.  Whatever the plan refuses is kept in ``Plan.refused`` with the reason, so a dry run
and a real run report exactly the same list.  Rules 1-5 are checked again on disk at the
moment of acting (``verify``), so a stale or hand-edited plan cannot do harm either.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from photodup_tui.engine.safedelete.trash import is_in_trash_dir
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member


class OpKind(enum.StrEnum):
    TRASH = "trash"  # move the victim to the trash
    HARDLINK = "hardlink"  # trash the victim, put a hard link to the keeper at its path
    MOVE = "move"  # move the victim into a folder the user chose (same device only)


@dataclass(frozen=True, slots=True)
class FileRef:
    """A path, what ``lstat`` said about it when the groups were made, and the content hash
    of what the scan judged (re-checked before a non-exact op, ``verify.content_problem``)."""

    path: str
    stat: FileStat
    content_hash: str | None = None

    @classmethod
    def of(cls, member: Member) -> FileRef:
        return cls(member.photo.path, member.photo.stat, member.photo.content_hash)


@dataclass(frozen=True, slots=True)
class Operation:
    kind: OpKind
    group: int  # index of the group in the input, so the executor can skip whole groups
    #: The verdict that justifies this one deletion (``victim_verdict``): byte-identical ops
    #: are byte-compared before acting.  (Named for the group's kind, which it was before
    #: similar edits could share a group with deletable copies; journals keep the name.)
    group_kind: Kind
    victim: FileRef
    keeper: FileRef
    move_to: str | None = None  # MOVE only: the destination folder

    def describe(self) -> str:
        target = f" -> {self.move_to}" if self.kind is OpKind.MOVE else ""
        return f"{self.kind.value} {self.victim.path!r}{target} (keeps {self.keeper.path!r})"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "group": self.group,
            "group_kind": self.group_kind.value,
            "victim": _ref_to_json(self.victim),
            "keeper": _ref_to_json(self.keeper),
            "move_to": self.move_to,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Operation:
        return cls(
            kind=OpKind(d["kind"]),
            group=int(d["group"]),
            group_kind=Kind(d["group_kind"]),
            victim=_ref_from_json(d["victim"]),
            keeper=_ref_from_json(d["keeper"]),
            move_to=d.get("move_to"),
        )


@dataclass(slots=True)
class Plan:
    operations: list[Operation] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def bytes_planned(self) -> int:
        return sum(op.victim.stat.size for op in _one_per_replica(self.operations))

    def lines(self) -> list[str]:
        """The plan as text: what a dry run prints, one operation or refusal per line."""
        out = [op.describe() for op in self.operations]
        out += [f"refuse {path!r}: {reason}" for path, reason in self.refused]
        return out


class PlanError(ValueError):
    """The caller asked for something the plan cannot express (e.g. MOVE without a folder)."""


#: A further check of one deletion, given (victim, keeper): why it may not happen, or None.
#: ``photodup apply`` passes the vetting of a saved report (``vetting.py``).
Vet = Callable[[Member, Member], str | None]


def make_plan(
    groups: Sequence[Group],
    *,
    allow_similar: bool = False,
    reference_dirs: Sequence[str] = (),
    mode: OpKind = OpKind.TRASH,
    move_to: str | None = None,
    vet: Vet | None = None,
) -> Plan:
    """One operation per member marked DELETE that passes the static rules (and ``vet``).

    ``allow_similar`` must only be True when every ``similar`` group's marks come from the
    user's explicit choice for that group (the TUI's review), never from auto-selection.
    ``vet`` refuses more, after the static rules: its refusals land in ``Plan.refused`` too,
    so a dry run lists them like the real run.
    """
    if mode is OpKind.MOVE and not (move_to and os.path.isabs(move_to)):
        raise PlanError("moving needs an absolute destination folder")
    protected = _Protected(reference_dirs, move_to)
    kept = {m.photo.stat.replica for g in groups for m in g.members if m.action is Action.KEEP}
    plan = Plan()
    planned: set[object] = set()  # directory entries already planned, however spelled
    for index, group in enumerate(groups):
        victims = [m for m in group.members if m.action is Action.DELETE]
        if not victims:
            continue
        keeper, group_reason = _group_refusal(group, allow_similar)
        if group_reason is not None or keeper is None:
            plan.refused += [(m.photo.path, group_reason or "no keeper") for m in victims]
            continue
        for victim in victims:
            verdict = victim_verdict(victim, keeper, group)
            reason = _victim_refusal(victim, keeper, verdict, kept, protected, mode)
            if reason is None and vet is not None:
                reason = vet(victim, keeper)
            if reason is None and verdict is Kind.SIMILAR and not allow_similar:
                reason = "similar to the keeper: only deleted after your explicit choice (rule 6)"
            entry = _dir_entry(victim.photo.path)
            if reason is None and entry in planned:
                reason = "already planned (the same folder entry, reached by another path)"
            if reason is not None:
                plan.refused.append((victim.photo.path, reason))
                continue
            planned.add(entry)
            plan.operations.append(
                Operation(
                    kind=mode,
                    group=index,
                    group_kind=verdict,
                    victim=FileRef.of(victim),
                    keeper=FileRef.of(keeper),
                    move_to=move_to if mode is OpKind.MOVE else None,
                )
            )
    return plan


def victim_verdict(victim: Member, keeper: Member, group: Group) -> Kind:
    """The relation that must justify deleting ``victim`` while ``keeper`` stays.

    Byte-identical when both content hashes are known and equal (then compared byte for byte
    before acting, rule 5), whatever group they are in; similar when either of them is only
    an edit of the group's keeper (rule 6), e.g. after the user made a crop the keeper;
    otherwise the group's kind.
    """
    a, b = victim.photo.content_hash, keeper.photo.content_hash
    if a and b and a == b:
        return Kind.EXACT
    if Kind.SIMILAR in (victim.verdict, keeper.verdict):
        return Kind.SIMILAR
    return group.kind


def chosen_keeper(group: Group) -> Member | None:
    """The member that survives for the group: its keeper, or the first member kept when
    the user marked the keeper itself; None when every member is marked."""
    if group.keeper_member.action is Action.KEEP:
        return group.keeper_member
    return next((m for m in group.members if m.action is Action.KEEP), None)


def _group_refusal(group: Group, allow_similar: bool) -> tuple[Member | None, str | None]:
    """The member that must survive, or why no deletion in this group may happen."""
    if group.kind is Kind.SIMILAR and not allow_similar:
        return None, "similar group: only deleted after your explicit choice (rule 6)"
    keeper = chosen_keeper(group)
    if keeper is None:
        return None, "every member is marked for deletion; a group must keep one copy (rule 1)"
    if not os.path.isabs(keeper.photo.path):
        return None, "keeper path is not absolute"
    if _is_symlink(keeper.photo.path):
        return None, "keeper is a symlink (rule 3)"
    if (
        group.kind is not Kind.EXACT
        and keeper.photo.decodable is False
        and any(m.photo.decodable for m in group.members)
    ):
        return None, "keeper is undecodable but another member decodes (rule 7)"
    return keeper, None


def _victim_refusal(
    victim: Member,
    keeper: Member,
    kind: Kind,
    kept: set[tuple[int, int]],
    protected: _Protected,
    mode: OpKind,
) -> str | None:
    photo = victim.photo
    if not os.path.isabs(photo.path):
        return "not an absolute path"
    if photo.path == keeper.photo.path or photo.stat.replica == keeper.photo.stat.replica:
        return "same file as the keeper (same device and inode: hard link or repeated root)"
    if photo.stat.replica in kept:
        return "same file as a member you keep (same device and inode)"
    if kind is not Kind.EXACT and photo.decodable is False:
        return "undecodable: never deleted because of a similarity match (rule 7)"
    if (
        kind is Kind.EXACT
        and photo.content_hash
        and keeper.photo.content_hash
        and photo.content_hash != keeper.photo.content_hash
    ):
        return "content hash differs from the keeper's"
    if mode is OpKind.HARDLINK:
        if kind is not Kind.EXACT:
            return "hard-link replacement is only for byte-identical files"
        if photo.stat.dev != keeper.photo.stat.dev:
            return "hard link impossible: keeper is on another device"
    if photo.reference:
        return "in a reference folder (rule 11)"
    reason = protected.refusal(photo.path)
    if reason is not None:
        return reason
    if _is_symlink(photo.path):
        return "is a symlink (rule 3)"
    if kind is not Kind.EXACT and not (photo.content_hash and keeper.photo.content_hash):
        # Only bytes prove a near copy and its keeper are what the scan judged: the act
        # re-hashes both (``verify.content_problem``), which needs the scan's hashes.
        return (
            "no content hash recorded for it or its keeper: cannot prove they are still"
            " the photos that were judged"
        )
    return None


class _Protected:
    """Reference folders, trash folders and the move destination: never targets (rule 11).

    Folders are compared by (dev, ino) of every ancestor, so another spelling of the same
    folder (symlinked parent, bind mount, different letter case) is caught too.
    """

    def __init__(self, reference_dirs: Iterable[str], move_to: str | None) -> None:
        self._dirs: dict[tuple[int, int], str] = {}
        for d in reference_dirs:
            self._add(d, "in reference folder")
        if move_to:
            self._add(move_to, "already in the destination folder")

    def _add(self, path: str, why: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return  # a folder that does not exist contains nothing
        self._dirs[(st.st_dev, st.st_ino)] = f"{why} {path!r} (rule 11)"

    def refusal(self, path: str) -> str | None:
        if is_in_trash_dir(path):
            return "inside a trash folder (rule 11)"
        for parent in _ancestors(path):
            try:
                st = os.stat(parent)
            except OSError:
                continue
            why = self._dirs.get((st.st_dev, st.st_ino))
            if why is not None:
                return why
        return None


def _ancestors(path: str) -> list[str]:
    out = []
    current = os.path.dirname(path)
    while True:
        out.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            return out
        current = parent


def _dir_entry(path: str) -> object:
    """One name in one folder, whatever the spelling: (folder dev, folder ino, name).

    Two hard links are two entries (both may go); the same root given twice, a symlinked
    or bind-mounted folder give one entry (it is planned once).
    """
    try:
        folder = os.stat(os.path.dirname(path))
    except OSError:
        return path
    return (folder.st_dev, folder.st_ino, os.path.basename(path))


def _is_symlink(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False  # gone or unreadable: verification at act time will say so


def _one_per_replica(ops: Iterable[Operation]) -> list[Operation]:
    seen: set[tuple[int, int]] = set()
    out = []
    for op in ops:
        if op.victim.stat.replica not in seen:
            seen.add(op.victim.stat.replica)
            out.append(op)
    return out


def _ref_to_json(ref: FileRef) -> dict[str, Any]:
    s = ref.stat
    return {
        "path": ref.path,
        "dev": s.dev,
        "ino": s.ino,
        "size": s.size,
        "mtime_ns": s.mtime_ns,
        "ctime_ns": s.ctime_ns,
        "content_hash": ref.content_hash,
    }


def _ref_from_json(d: dict[str, Any]) -> FileRef:
    return FileRef(
        d["path"],
        FileStat(
            int(d["dev"]), int(d["ino"]), int(d["size"]), int(d["mtime_ns"]), int(d["ctime_ns"])
        ),
        d.get("content_hash"),  # absent from journals written before it was recorded
    )
