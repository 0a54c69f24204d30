"""Hypothesis state machine: real scans, edits, links, trash and undo on a real tree.

The groups come from the product's own scanner (``Scanner``, what ``photodup scan
--no-model`` runs, with its cache kept from one scan to the next), so content hashes,
verdicts and keepers are the product's, never the test's.  Contents share a size, so edits
keep it (the hard case for rule 4), and an edit may put the mtime back; a file may change
between a scan and the batch that acts on it, or between two scans.

Invariants, re-read from the disk:
* a batch never removes a content from outside the trash: the set of distinct contents
  under the library is the same before and after (every group keeps a copy, rule 1), even
  when the scan it acts on is stale;
* every file a batch or an undo moved is at its path or a complete trash entry with the
  same bytes, and the trash never holds a file without its info or an info without file;
* a group whose files all still look as the scan saw them (every stat field) but whose
  byte-identical victim no longer matches its keeper is stopped by the byte compare (rule 5),
  and it says so: nothing else can tell;
* a dry run changes nothing at all, and decides as a real run would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from photodup_tui.engine.cache import Cache
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.safedelete import BatchNotFound, Plan, execute, make_plan, undo
from photodup_tui.engine.safedelete.plan import FileRef, Operation
from photodup_tui.engine.scan import Scanner
from photodup_tui.engine.settings import LOCAL_MODEL_ID, ScanSettings
from photodup_tui.engine.types import Action, FileStat, Group, Kind
from photodupd.imaging import ImageError, decode_item
from photodupd.protocol import FeatureItem
from tests.safety.helpers import assert_accounted_for, read, snapshot, trash_entries

# Small contents of one size: the first and the last differ only in their last byte.
SMALL = [b"A" * 64, b"B" * 64, b"A" * 63 + b"Z"]
# Larger than the exact tier's head and tail reads (64 KiB each): these two differ only in
# the middle, so their partial hashes are equal and only the full hash tells them apart.
_BIG = bytes(range(256)) * 640
_MID = len(_BIG) // 2
BIG = [_BIG, _BIG[:_MID] + bytes([_BIG[_MID] ^ 0xFF]) + _BIG[_MID + 1 :]]
CONTENTS = SMALL + BIG
DIRS = ["d0", "d1", "d1/sub"]
NAMES = ["IMG_0001.JPG", "b.jpg", "-x y\n.jpg", "\udcff.jpg"]  # odd and undecodable names
BYTE_COMPARE = "byte compare with the keeper failed: contents differ (rule 5)"

slot = st.tuples(st.sampled_from(DIRS), st.sampled_from(NAMES))


class NoModelFeatures:
    """``--no-model``'s features: the function its decoder processes run
    (``photodupd.imaging.decode_item``), here in this process, because a decoder process per
    scan costs a quarter of a second and a run makes hundreds of scans.  No content here is
    an image, so every file is undecodable and only the exact tier groups them."""

    model_id = LOCAL_MODEL_ID

    def compute(
        self,
        paths: Sequence[str],
        on_result: Callable[[str, FeatureResult], None],
        cancel: threading.Event,
    ) -> None:
        for path in paths:
            try:
                result = FeatureResult.from_decoded(decode_item(FeatureItem(path=path)))
            except ImageError as exc:
                result = FeatureResult.failure(str(exc.code), exc.message)
            on_result(path, result)


def put(path: str, content: bytes, keep_mtime: bool) -> None:
    """Other bytes in place (same inode); with ``keep_mtime`` the mtime is put back after,
    as some tools do."""
    before = os.lstat(path)
    with open(path, "wb") as f:
        f.write(content)
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def unchanged(ref: FileRef) -> bool:
    """The file at ``ref.path`` is, by every stat field, the one the scan saw."""
    try:
        return FileStat.of(os.lstat(ref.path)) == ref.stat
    except OSError:
        return False


def only_the_byte_compare_can_stop(plan: Plan) -> list[str]:
    """Victims of the groups that look untouched to every stat check, yet hold an exact
    victim whose bytes are no longer its keeper's (a rescan trusted a stale cache row)."""
    by_group: dict[int, list[Operation]] = defaultdict(list)
    for op in plan.operations:
        by_group[op.group].append(op)
    stopped = []
    for ops in by_group.values():
        if not all(unchanged(ref) for op in ops for ref in (op.keeper, op.victim)):
            continue  # a stat check comes first and stops the group
        if any(
            op.group_kind is Kind.EXACT and read(op.victim.path) != read(op.keeper.path)
            for op in ops
        ):
            stopped += [op.victim.path for op in ops]
    return stopped


class TrashMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = tempfile.mkdtemp(prefix="pd-state-")
        self.lib = os.path.join(self.base, "lib")
        for d in DIRS:
            os.makedirs(os.path.join(self.lib, d))
        self.alias = os.path.join(self.base, "alias")
        os.symlink(self.lib, self.alias)  # the same root twice
        os.environ["XDG_DATA_HOME"] = os.path.join(self.base, "xdg")
        os.environ["PHOTODUP_STATE_DIR"] = os.path.join(self.base, "state")
        os.environ["PHOTODUP_CACHE_DIR"] = os.path.join(self.base, "cache")
        self.trash = os.path.join(self.base, "xdg", "Trash")
        self.groups: list[Group] = []

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    def path(self, where: tuple[str, str]) -> str:
        return os.path.join(self.lib, *where)

    def files(self) -> list[str]:
        return sorted(os.fsdecode(p) for p in snapshot(self.lib))

    def pick(self, index: int) -> str | None:
        files = self.files()
        return files[index % len(files)] if files else None

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
        source, dst = self.pick(src), self.path(where)
        if source is None or os.path.lexists(dst):
            return
        if link:
            os.link(source, dst)
        else:
            shutil.copyfile(source, dst)

    @rule(target_=st.integers(0, 20), content=st.sampled_from(CONTENTS), keep_mtime=st.booleans())
    def rewrite(self, target_: int, content: bytes, keep_mtime: bool) -> None:
        path = self.pick(target_)
        if path is not None:
            put(path, content, keep_mtime)

    @rule(which=st.integers(0, 20), content=st.sampled_from(CONTENTS))
    def grouped_file_edited_unseen_then_rescan(self, which: int, content: bytes) -> None:
        """A grouped file gets other bytes of its size, its mtime is put back, and the library
        is scanned again: only the ctime tells, so a cache that ignored it would hand the
        rescan the old content hash."""
        paths = [m.photo.path for g in self.groups for m in g.members]
        if paths:
            path = paths[which % len(paths)]
            if os.path.isfile(path) and os.path.getsize(path) == len(content):
                put(path, content, keep_mtime=True)
                self.scan()

    @rule(target_=st.integers(0, 20), keep_mtime=st.booleans())
    def flip_last_byte(self, target_: int, keep_mtime: bool) -> None:
        """Same size, same everything but the very last byte."""
        path = self.pick(target_)
        if path is not None:
            before = os.lstat(path)
            with open(path, "r+b") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)[0]
                f.seek(-1, os.SEEK_END)
                f.write(bytes([last ^ 1]))
            if keep_mtime:
                os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    # -- photodup ------------------------------------------------------------------------

    @rule()
    def scan(self) -> None:
        """The product's scan of both spellings of the library, as the CLI runs it."""
        with Cache() as cache:
            scanner = Scanner(ScanSettings(), NoModelFeatures(), cache)
            result = scanner.run([self.lib, self.alias], lambda _p: None, threading.Event())
        assert not result.cancelled and result.warnings == []
        self.groups = result.groups

    @rule(which=st.integers(0, 10))
    def user_marks_a_whole_group(self, which: int) -> None:
        if self.groups:
            for m in self.groups[which % len(self.groups)].members:
                m.action = Action.DELETE

    @rule(dry=st.booleans())
    def trash_it(self, dry: bool) -> None:
        before = snapshot(self.lib)
        stats = {p: os.lstat(p) for p in before}
        plan = make_plan(self.groups)
        must_stop = only_the_byte_compare_can_stop(plan)
        report = execute(plan, dry_run=dry)
        reasons = defaultdict(list)
        for path, why in report.skipped:
            reasons[path].append(why)
        for path in must_stop:
            event("the byte compare stopped a group")
            assert reasons[path] == [BYTE_COMPARE], (path, reasons[path])
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


def run_machine(examples: int, steps: int) -> None:
    run_state_machine_as_test(
        TrashMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


@pytest.mark.timeout(240)
def test_random_scans_edits_links_trash_and_undo() -> None:
    run_machine(examples=60, steps=30)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_random_scans_edits_links_trash_and_undo_long_run() -> None:
    run_machine(examples=2000, steps=50)
