"""Hypothesis state machine: random scans, edits, links, trash and undo on a real tree.

Invariants, re-read from the disk after every step:
* a batch never removes a content from outside the trash: the set of distinct contents
  under the library is the same before and after (every group keeps a copy, rule 1), even
  when the scan it acts on is stale;
* every file a batch or an undo moved is at its path or a complete trash entry with the
  same bytes, and the trash never holds a file without its info or an info without file;
* a dry run changes nothing at all.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from photodup_tui.engine.safedelete import BatchNotFound, execute, make_plan, undo
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from tests.safety.helpers import assert_accounted_for, snapshot, trash_entries

# Equal sizes, so edits can keep the size (the hard case for rule 4).
CONTENTS = [b"A" * 64, b"B" * 64, b"C" * 64, b"A" * 63 + b"Z"]
DIRS = ["d0", "d1", "d1/sub"]
NAMES = ["IMG_0001.JPG", "b.jpg", "-x y\n.jpg", "\udcff.jpg"]  # odd and undecodable names

slot = st.tuples(st.sampled_from(DIRS), st.sampled_from(NAMES))


class TrashMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = tempfile.mkdtemp(prefix="pd-state-")
        self.lib = os.path.join(self.base, "lib")
        for d in DIRS:
            os.makedirs(os.path.join(self.lib, d))
        os.symlink(self.lib, os.path.join(self.base, "alias"))  # the same root twice
        os.environ["XDG_DATA_HOME"] = os.path.join(self.base, "xdg")
        os.environ["PHOTODUP_STATE_DIR"] = os.path.join(self.base, "state")
        self.trash = os.path.join(self.base, "xdg", "Trash")
        self.groups: list[Group] = []

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def path(self, where: tuple[str, str]) -> str:
        return os.path.join(self.lib, *where)

    def files(self) -> list[str]:
        return sorted(os.fsdecode(p) for p in snapshot(self.lib))

    # -- the world changes ---------------------------------------------------------------

    @initialize(start=st.lists(st.tuples(slot, st.sampled_from(CONTENTS)), min_size=2, max_size=8))
    def some_photos(self, start: list[tuple[tuple[str, str], bytes]]) -> None:
        for where, content in start:
            self.create(where, content)

    @rule(where=slot, content=st.sampled_from(CONTENTS))
    def create(self, where: tuple[str, str], content: bytes) -> None:
        path = self.path(where)
        if not os.path.lexists(path):
            with open(path, "wb") as f:
                f.write(content)

    @rule(src=st.integers(0, 20), where=slot, link=st.booleans())
    def copy_or_link(self, src: int, where: tuple[str, str], link: bool) -> None:
        files, dst = self.files(), self.path(where)
        if not files or os.path.lexists(dst):
            return
        source = files[src % len(files)]
        if link:
            os.link(source, dst)
        else:
            shutil.copyfile(source, dst)

    @rule(target_=st.integers(0, 20), content=st.sampled_from(CONTENTS), keep_mtime=st.booleans())
    def edit(self, target_: int, content: bytes, keep_mtime: bool) -> None:
        files = self.files()
        if not files:
            return
        path = files[target_ % len(files)]
        before = os.lstat(path)
        with open(path, "r+b") as f:
            f.write(content)
        if keep_mtime:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    # -- photodup ------------------------------------------------------------------------

    @rule()
    def scan(self) -> None:
        """A naive scan: both roots, every path, grouped by bytes; first path kept."""
        by_content: dict[bytes, list[str]] = {}
        for root in (self.lib, os.path.join(self.base, "alias")):
            for dirpath, _dirs, names in os.walk(root):
                for name in sorted(names):
                    p = os.path.join(dirpath, name)
                    with open(p, "rb") as f:
                        by_content.setdefault(f.read(), []).append(p)
        self.groups = []
        for paths in by_content.values():
            if len(paths) < 2:
                continue
            members = [
                Member(Photo(p, FileStat.of(os.lstat(p))), Action.DELETE if i else Action.KEEP)
                for i, p in enumerate(paths)
            ]
            self.groups.append(Group(Kind.EXACT, members, "byte-identical"))

    @rule(which=st.integers(0, 10))
    def user_marks_a_whole_group(self, which: int) -> None:
        if self.groups:
            for m in self.groups[which % len(self.groups)].members:
                m.action = Action.DELETE

    @rule(dry=st.booleans())
    def trash_it(self, dry: bool) -> None:
        before = snapshot(self.lib)
        stats = {p: os.lstat(p) for p in before}
        report = execute(make_plan(self.groups), dry_run=dry)
        after = snapshot(self.lib)
        if dry:
            assert after == before
            assert {p: os.lstat(p) for p in after} == stats
            return
        assert set(after.values()) == set(before.values()), "a content left the library"
        assert_accounted_for(before, [self.trash])
        assert report.failed == []

    @rule()
    def undo_last(self) -> None:
        before = snapshot(self.lib)
        in_trash = {e.original: e.data for e in trash_entries(self.trash)}
        try:
            undo()
        except BatchNotFound:
            return
        after = snapshot(self.lib)
        assert set(after.values()) >= set(before.values())
        for path, data in before.items():  # nothing that stood there was overwritten
            assert after[path] == data
        assert_accounted_for(in_trash, [self.trash])

    @invariant()
    def trash_is_consistent(self) -> None:
        trash_entries(self.trash)  # asserts: no file without info, no info without file


@pytest.mark.timeout(240)
def test_random_scans_edits_links_trash_and_undo() -> None:
    run_state_machine_as_test(
        TrashMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
