"""What the user answers on a review: "not duplicates", "show it again", "keep this one".

:class:`Answers` applies each answer to the review at once and has it remembered by content,
so later scans know it; :class:`DecisionBook` writes them to the decisions store from
worker threads, in the order they were given.  No Textual here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from photodup_tui.engine.decisions import Decision, DecisionError, Decisions
from photodup_tui.engine.types import Group, Member
from photodup_tui.review_state import Review


class DecisionBook:
    """The user's hide / show-again answers and keeper choices, written to the decisions
    store in the order they were given, from worker threads.

    The UI calls :meth:`want` on the event loop, then runs :meth:`write` in a worker.  Each
    write takes everything wanted so far, one writer at a time: a quick "hide, then show
    again" can never land in the store the wrong way round, whatever order the workers run.
    """

    def __init__(self, open_store: Callable[[], Decisions] = Decisions) -> None:
        self._open_store = open_store
        self._wanted: dict[int, tuple[Group, Decision | None]] = {}
        #: keeper choices, taken when made: a batch may change the group before the write
        self._keepers: list[tuple[Group, Member]] = []
        self._lock = threading.Lock()  # guards _wanted
        self._writing = threading.Lock()  # one writer at a time

    def want(self, group: Group, decision: Decision | None) -> None:
        """Remember ``decision`` for this group's photos; None forgets any that hides it."""
        with self._lock:
            self._wanted.pop(id(group), None)  # re-inserted: the latest answer is written last
            self._wanted[id(group)] = (group, decision)

    def want_keeper(self, group: Group) -> None:
        """Remember the group's keeper as the user's choice among its photos now."""
        snapshot = Group(group.kind, list(group.members), group.reason, group.keeper)
        with self._lock:
            self._keepers.append((snapshot, group.keeper_member))

    def write(self) -> None:
        """Write what is wanted; raises DecisionError (after writing the rest) if an answer
        cannot be kept, e.g. a photo without a content hash."""
        with self._writing:
            self._write_locked()

    def _write_locked(self) -> None:
        """:meth:`write`, for a caller that holds the writer's lock."""
        with self._lock:
            pending, self._wanted = list(self._wanted.values()), {}
            keepers, self._keepers = self._keepers, []
        if not pending and not keepers:
            return
        problems: list[str] = []
        with self._open_store() as store:
            for group, decision in pending:
                try:
                    if decision is None:
                        store.forget_covering(group)
                    else:
                        store.record(group, decision)
                except DecisionError as exc:
                    problems.append(str(exc))
            for group, keeper in keepers:
                try:
                    store.record_keeper(group, keeper)
                except DecisionError as exc:
                    problems.append(str(exc))
        if problems:
            raise DecisionError("; ".join(dict.fromkeys(problems)))

    def count(self) -> int:
        """How many answers the store remembers, once what is wanted now is written."""
        with self._writing:
            self._write_locked()
            with self._open_store() as store:
                return store.count()


class Answers:
    """The user's answers on one review.  ``write`` has the book written (the app runs
    :meth:`DecisionBook.write` in a worker); the groups hidden since the last clean-up are
    kept, newest last, so u can show them again."""

    def __init__(self, review: Review, book: DecisionBook, write: Callable[[], object]) -> None:
        self.review = review
        self.book = book
        self._write = write
        self.recent_hides: list[int] = []

    def not_duplicates(self, group_index: int) -> None:
        """Hide a group; later scans will not show its photos as duplicates."""
        self.review.dismiss(group_index, Decision.NOT_DUPLICATES)
        self.recent_hides.append(group_index)
        self._remember(self.review.groups[group_index], Decision.NOT_DUPLICATES)

    def show_again(self, group_index: int) -> bool:
        """Bring a hidden group back and forget the answer that hid it; False: not hidden."""
        if self.review.show_again(group_index) is None:
            return False
        if group_index in self.recent_hides:
            self.recent_hides.remove(group_index)
        self._remember(self.review.groups[group_index], None)
        return True

    def choose_keeper(self, group_index: int, member_index: int) -> str:
        """Keep this member instead, remembered so a rescan keeps it too; what to tell."""
        group = self.review.groups[group_index]
        before = group.keeper_member
        message = self.review.set_keeper(group_index, member_index)
        if group.keeper_member is not before:
            self.book.want_keeper(group)
            self._write()
            message += " Remembered for later scans."
        return message

    def cleaned_up(self, trashed: Iterable[str]) -> None:
        """A batch moved these files to the trash: u now means "put the files back"."""
        self.recent_hides.clear()
        self.review.remove(trashed)

    def _remember(self, group: Group, decision: Decision | None) -> None:
        self.book.want(group, decision)
        self._write()
