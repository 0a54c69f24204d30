"""The user's verdicts on groups, remembered by content so renames and moves do not undo them.

A decision is stored against the set of content hashes of the group's members.  A later group
is covered by a decision when all its content hashes are in the decided set: the same photos
under new names, or fewer of them, stay dismissed; a group that gained a photo the user never
saw comes back.  Lives in ``paths.state_dir()/decisions.sqlite`` (state, not cache: clearing
the cache must not forget what the user said).

The keeper the user chose in a group is remembered the same way: the group's content hashes
and the keeper's.  It applies to a later group that holds the keeper's content and at least
one other photo the user chose it over (a group that gained photos the user never saw still
gets it: they were preferred over the ones they saw).  The newest choice wins.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from photodup_tui.engine.types import Group, Member
from photodupd import paths

FILE_NAME = "decisions.sqlite"
SCHEMA_VERSION = 1


#: keeper hash -> (rank, newest first; content key; path) of each choice of that keeper
_KeeperRows = dict[str, list[tuple[int, str, str]]]


class Decision(enum.StrEnum):
    NOT_DUPLICATES = "not_duplicates"  # "these are different photos"
    KEEP_ALL = "keep_all"  # "duplicates, but I want every copy"


class DecisionError(Exception):
    """A decision cannot be recorded (e.g. a member has no content hash)."""


def content_key(group: Group) -> frozenset[str]:
    hashes = [m.photo.content_hash for m in group.members]
    if any(h is None for h in hashes):
        raise DecisionError("every member needs a content hash to remember a decision")
    return frozenset(h for h in hashes if h is not None)


def _key_text(hashes: Iterable[str]) -> str:
    return ",".join(sorted(hashes))


class Decisions:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else paths.state_dir() / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # user data: survive power loss too
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS decisions (
                key TEXT PRIMARY KEY, decision TEXT NOT NULL, created REAL NOT NULL);
            CREATE TABLE IF NOT EXISTS decision_hashes (
                key TEXT NOT NULL REFERENCES decisions(key) ON DELETE CASCADE,
                hash TEXT NOT NULL, PRIMARY KEY (hash, key)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS keepers (
                key TEXT PRIMARY KEY, keeper TEXT NOT NULL, path TEXT NOT NULL,
                created REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS keepers_by_keeper ON keepers(keeper);
            """
        )
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Decisions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(self, group: Group, decision: Decision) -> None:
        hashes = content_key(group)
        key = _key_text(hashes)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO decisions(key, decision, created) VALUES (?, ?, ?)",
                    (key, Decision(decision).value, time.time()),
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO decision_hashes(key, hash) VALUES (?, ?)",
                    [(key, h) for h in hashes],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget(self, group: Group) -> bool:
        """Drop the decision recorded for exactly this group's contents; True if there was one."""
        key = _key_text(content_key(group))
        with self._lock:
            cursor = self._db.execute("DELETE FROM decisions WHERE key = ?", (key,))
            return cursor.rowcount > 0

    def forget_covering(self, group: Group) -> int:
        """Drop every decision that hides this group (its own, or one taken on a larger group
        it is part of), so the next scan shows it again; returns how many were dropped."""
        try:
            hashes = content_key(group)
        except DecisionError:
            return 0  # nothing can cover it
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                keys = [key for key, _decision in self._covering(hashes)]
                self._db.executemany("DELETE FROM decisions WHERE key = ?", [(k,) for k in keys])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(keys)

    def count(self) -> int:
        """How many decisions are remembered, for any photos."""
        with self._lock:
            (count,) = self._db.execute("SELECT count(*) FROM decisions").fetchone()
        return int(count)

    def _covering(self, hashes: frozenset[str]) -> list[tuple[str, str]]:
        """(key, decision) of the decisions whose contents include all of ``hashes``; the
        caller holds the lock."""
        candidates = self._db.execute(
            "SELECT d.key, d.decision FROM decision_hashes h JOIN decisions d ON d.key = h.key"
            " WHERE h.hash = ?",
            (min(hashes),),
        ).fetchall()
        return [(key, decision) for key, decision in candidates if hashes <= set(key.split(","))]

    def record_keeper(self, group: Group, keeper: Member) -> None:
        """Remember that the user keeps ``keeper`` (a member of ``group``) over the others."""
        if keeper.photo.content_hash is None:
            raise DecisionError("the keeper needs a content hash to remember the choice")
        key = _key_text(content_key(group))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO keepers(key, keeper, path, created) VALUES (?, ?, ?, ?)",
                (key, keeper.photo.content_hash, keeper.photo.path, time.time()),
            )

    def keeper_for(self, group: Group) -> int | None:
        """The index of the member the user chose to keep in a group like this one, if any.

        The newest choice whose keeper's content is in the group together with another
        content it was chosen over, or, for a choice among byte-identical copies, a group of
        only those copies; among copies of the keeper, the one at the chosen path first.
        """
        return _chosen(group, self._keeper_rows())

    def keepers_for(self, groups: Iterable[Group]) -> list[tuple[Group, int]]:
        """(group, member index) for each group with a remembered keeper (:meth:`keeper_for`);
        one read of the store for any number of groups."""
        rows = self._keeper_rows()
        if not rows:
            return []
        found = []
        for group in groups:
            index = _chosen(group, rows)
            if index is not None:
                found.append((group, index))
        return found

    def _keeper_rows(self) -> _KeeperRows:
        """Every remembered keeper choice, by the keeper's hash.  The user makes these one
        k at a time: few enough to hold."""
        with self._lock:
            rows = self._db.execute(
                "SELECT keeper, key, path FROM keepers ORDER BY created DESC"
            ).fetchall()
        by_keeper: _KeeperRows = {}
        for newest_first, (keeper, key, path) in enumerate(rows):
            by_keeper.setdefault(keeper, []).append((newest_first, key, path))
        return by_keeper

    def decision_for(self, group: Group) -> Decision | None:
        try:
            hashes = content_key(group)
        except DecisionError:
            return None  # we could not have recorded one
        with self._lock:
            covering = self._covering(hashes)
        return Decision(covering[0][1]) if covering else None

    def undecided(self, groups: Iterable[Group]) -> list[Group]:
        """The groups the user has not already dismissed."""
        return self.split(groups)[0]

    def split(self, groups: Iterable[Group]) -> tuple[list[Group], list[tuple[Group, Decision]]]:
        """(the groups still to review, (group, decision) for those a decision hides)."""
        shown: list[Group] = []
        hidden: list[tuple[Group, Decision]] = []
        for group in groups:
            decision = self.decision_for(group)
            if decision is None:
                shown.append(group)
            else:
                hidden.append((group, decision))
        return shown, hidden


def _chosen(group: Group, rows: _KeeperRows) -> int | None:
    """See :meth:`Decisions.keeper_for`; ``rows`` from ``Decisions._keeper_rows``."""
    if len(group.members) < 2:
        return None
    by_hash: dict[str, list[int]] = {}
    for index, member in enumerate(group.members):
        if member.photo.content_hash is None:
            return None  # the group cannot be compared with what was stored
        by_hash.setdefault(member.photo.content_hash, []).append(index)
    choices = sorted(
        (rank, keeper, key, path)
        for keeper in by_hash.keys() & rows.keys()
        for rank, key, path in rows[keeper]
    )
    for _rank, keeper, key, path in choices:
        chosen_over = set(key.split(",")) & by_hash.keys()
        among_copies = key == keeper and len(by_hash) == 1
        if len(chosen_over) < 2 and not among_copies:
            continue  # nothing here the user chose it over
        copies = by_hash[keeper]
        at_path = [i for i in copies if group.members[i].photo.path == path]
        return (at_path or copies)[0]
    return None
