"""A file rewritten in place is not the file that was judged (issue 11, hole 1).

The sneakiest change keeps everything ``lstat`` compares but ctime: the same inode, the same
size, the mtime put back.  Two layers stop it from trashing a unique photo as a "near" copy:

* the scan side: ctime is part of every identity the engine trusts across runs (cache rows,
  pixel-check scores, the stored grouping, the exact tier's fd check), so such a file is
  read again and judged afresh;
* the act side: a near victim and its keeper are hashed again right before acting and must
  give the content hashes recorded for what was judged, so even a scan fooled some other way
  (a filesystem whose ctime does not move, a hand-edited report) cannot act on them.

Everything is driven through the real CLI or the real engine and re-read from the disk.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

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

from photodup_tui import cli
from photodup_tui.engine import exact
from photodup_tui.engine.cache import SCHEMA_VERSION, Cache, Record, default_path, pixel_key
from photodup_tui.engine.features import FeatureResult
from photodup_tui.engine.local_features import LocalFeatureSource
from photodup_tui.engine.report import load_report
from photodup_tui.engine.safedelete import FileRef, Operation, OpKind, Plan, execute, make_plan
from photodup_tui.engine.scan import Scanner
from photodup_tui.engine.settings import ScanSettings
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Photo
from photodup_tui.engine.walk import Walker
from tests.photos import jpeg_bytes, make_photo
from tests.safety.helpers import (
    assert_accounted_for,
    content_hash,
    member,
    read,
    snapshot,
    trash_entries,
    write,
)

PICTURE, UNRELATED = 7, 999
JUDGED = "is not the photo that was judged (content changed since the scan)"


def original_and_reencode(root: Path) -> tuple[str, str]:
    """``A/IMG_0001.jpg`` and its q70 re-encode ``B/IMG_0001_q70.jpg``: a real near pair."""
    picture = make_photo(PICTURE, (320, 240))
    original = write(root / "A/IMG_0001.jpg", jpeg_bytes(picture, quality=95))
    reencode = write(root / "B/IMG_0001_q70.jpg", jpeg_bytes(picture, quality=70))
    return original, reencode


def unrelated_photo(size: int) -> bytes:
    """Another picture, padded after its EOI to exactly ``size`` bytes (still a valid JPEG)."""
    data = jpeg_bytes(make_photo(UNRELATED, (160, 120)), quality=50)
    assert len(data) < size
    return data + b"\0" * (size - len(data))


def rewrite_in_place(path: str, data: bytes) -> None:
    """Same inode, same size, mtime put back: only ctime (and the bytes) can tell."""
    before = os.lstat(path)
    assert len(data) == before.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.lstat(path)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )


def scan(lib: Path, report: Path) -> int:
    return cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(report)])


def first_scan(lib: Path, report: Path) -> tuple[str, str]:
    original, reencode = original_and_reencode(lib)
    assert scan(lib, report) == cli.EXIT_DUPLICATES
    (group,) = load_report(report).groups  # the premise: a near pair, the re-encode marked
    assert group.kind is Kind.NEAR
    assert {m.photo.path: m.action for m in group.members} == {
        original: Action.KEEP,
        reencode: Action.DELETE,
    }
    return original, reencode


def assert_untouched(lib: Path, before: dict[bytes, bytes], home_trash: Path) -> None:
    after = snapshot(lib)
    assert sorted(after) == sorted(before)  # the short message first: which path went
    assert after == before
    assert trash_entries(home_trash) == []


# ---------------------------------------------------------------- end to end, the CLI


@pytest.mark.parametrize("side", ["victim", "keeper"])
def test_a_rescan_does_not_trust_a_photo_rewritten_in_place(
    tmp_path: Path, home_trash: Path, side: str
) -> None:
    """The red team's repro: scan, rewrite one of the pair in place, scan, apply --yes.

    Victim side: the unique new photo would go to the trash as a "near copy".  Keeper side:
    its near copy, now the last version of the original picture, would go.
    """
    lib, report = tmp_path / "lib", tmp_path / "report.json"
    original, reencode = first_scan(lib, report)
    target = reencode if side == "victim" else original
    unique = unrelated_photo(os.lstat(target).st_size)
    rewrite_in_place(target, unique)

    scan(lib, report)
    before = snapshot(lib)
    assert cli.main(["apply", str(report), "--yes"]) == 0

    assert_untouched(lib, before, home_trash)
    assert read(target) == unique
    other = original if side == "victim" else reencode
    assert read(other) == before[os.fsencode(other)]


@pytest.mark.parametrize("side", ["victim", "keeper"])
def test_apply_refuses_a_near_pair_that_a_fooled_cache_grouped(
    tmp_path: Path, home_trash: Path, capsys: pytest.CaptureFixture[str], side: str
) -> None:
    """The act-time layer alone: the cache is made to believe the rewrite, as it would on a
    filesystem whose ctime does not move (FAT/exFAT give ``st_ctime`` from a field no write
    changes), so the rescan groups stale facts with fresh stats.  Re-hashing refuses."""
    lib, report = tmp_path / "lib", tmp_path / "report.json"
    original, reencode = first_scan(lib, report)
    target = reencode if side == "victim" else original
    judged = os.lstat(target)
    unique = unrelated_photo(judged.st_size)
    rewrite_in_place(target, unique)
    pretend_ctime_did_not_move(target, judged)

    scan(lib, report)
    (group,) = load_report(report).groups  # fooled: the stale pair, with today's stats
    assert {m.photo.path for m in group.members} == {original, reencode}
    before = snapshot(lib)
    # As the TUI acts on the scan's own groups (no report vetting): the re-hash refuses.
    run = execute(make_plan([group]), dry_run=False)
    assert_untouched(lib, before, home_trash)
    assert run.trashed == [] and any(f"{target!r} {JUDGED}" in why for _p, why in run.skipped)
    # Through a saved report, apply's own vetting refuses even earlier (the recomputed
    # same-picture check), and the act-time layer stays behind it.
    capsys.readouterr()
    assert cli.main(["apply", str(report), "--yes"]) == cli.EXIT_APPLY_SKIPPED
    assert_untouched(lib, before, home_trash)
    assert read(target) == unique
    assert "near verdict not confirmed" in capsys.readouterr().out


def pretend_ctime_did_not_move(path: str, judged: os.stat_result) -> None:
    """Make the cache's row and pixel scores for ``path`` carry its ctime of now."""
    now = os.lstat(path)
    old_key = pixel_key(Photo(path, FileStat.of(judged)))
    new_key = pixel_key(Photo(path, FileStat.of(now)))
    db = sqlite3.connect(default_path())
    with db:
        if "ctime_ns" in {row[1] for row in db.execute("PRAGMA table_info(files)")}:
            db.execute(
                "UPDATE files SET ctime_ns = ? WHERE path = ?", (now.st_ctime_ns, os.fsencode(path))
            )
        rows = db.execute(
            "SELECT a, b, method, score FROM same_shot WHERE a = ? OR b = ?", (old_key, old_key)
        ).fetchall()
        db.execute("DELETE FROM same_shot WHERE a = ? OR b = ?", (old_key, old_key))
        for a, b, method, score in rows:
            a, b = (new_key if a == old_key else a), (new_key if b == old_key else b)
            db.execute(
                "INSERT OR REPLACE INTO same_shot VALUES (?, ?, ?, ?)",
                (min(a, b), max(a, b), method, score),
            )
    db.close()


# ---------------------------------------------------------------- act time, the engine


@pytest.mark.parametrize("side", ["victim", "keeper"])
def test_a_near_pair_whose_bytes_are_not_the_hashed_ones_is_refused(
    tmp_path: Path, home_trash: Path, side: str
) -> None:
    """A plan with fresh stats but the content hash of what was judged before the rewrite:
    what a scan that trusted a stale cache hands over.  Dry run and real run both refuse."""
    original, reencode = original_and_reencode(tmp_path / "p")
    target = reencode if side == "victim" else original
    judged_hash = content_hash(target)
    rewrite_in_place(target, unrelated_photo(os.lstat(target).st_size))
    keeper = member(original, Action.KEEP, decodable=True)
    victim = member(reencode, decodable=True)
    stale = keeper if side == "keeper" else victim
    stale.photo.content_hash = judged_hash
    plan = make_plan([Group(Kind.NEAR, [keeper, victim], "test")])
    assert [op.victim.path for op in plan.operations] == [reencode]  # stats cannot tell
    before = snapshot(tmp_path / "p")

    dry = execute(plan, dry_run=True)
    real = execute(plan, dry_run=False)

    assert_untouched(tmp_path / "p", before, home_trash)
    assert dry.skipped == real.skipped and real.trashed == []
    ((path, why),) = real.skipped
    assert path == reencode and f"{target!r} {JUDGED}" in why


def test_the_same_near_pair_unchanged_is_trashed(tmp_path: Path, home_trash: Path) -> None:
    """The control: with the hashes of what is on disk, the near copy goes, the keeper stays."""
    original, reencode = original_and_reencode(tmp_path / "p")
    data = read(reencode)
    group = Group(
        Kind.NEAR,
        [member(original, Action.KEEP, decodable=True), member(reencode, decodable=True)],
        "test",
    )
    report = execute(make_plan([group]), dry_run=False)
    assert report.skipped == [] and not os.path.lexists(reencode)
    assert [e.data for e in trash_entries(home_trash)] == [data]
    assert os.path.exists(original)


@pytest.mark.parametrize("missing", ["victim", "keeper"])
def test_a_near_pair_without_a_recorded_hash_is_refused_by_the_plan(
    tmp_path: Path, home_trash: Path, missing: str
) -> None:
    original, reencode = original_and_reencode(tmp_path / "p")
    keeper = member(original, Action.KEEP, decodable=True)
    victim = member(reencode, decodable=True)
    (keeper if missing == "keeper" else victim).photo.content_hash = None
    plan = make_plan([Group(Kind.NEAR, [keeper, victim], "test")])
    assert plan.operations == []
    ((path, why),) = plan.refused
    assert path == reencode and "no content hash recorded" in why
    before = snapshot(tmp_path / "p")
    dry, real = execute(plan, dry_run=True), execute(plan, dry_run=False)
    assert dry.skipped == real.skipped == plan.refused
    assert_untouched(tmp_path / "p", before, home_trash)


def test_a_hand_made_near_operation_without_hashes_is_refused_at_act_time(
    tmp_path: Path, home_trash: Path
) -> None:
    """A plan that never went through ``make_plan`` (or a journal from before hashes were
    recorded) still cannot act on a near victim it cannot prove."""
    original, reencode = original_and_reencode(tmp_path / "p")
    keeper = FileRef(original, FileStat.of(os.lstat(original)))
    victim = FileRef(reencode, FileStat.of(os.lstat(reencode)))
    plan = Plan([Operation(OpKind.TRASH, 0, Kind.NEAR, victim, keeper)])
    before = snapshot(tmp_path / "p")
    report = execute(plan, dry_run=False)
    assert_untouched(tmp_path / "p", before, home_trash)
    ((_, why),) = report.skipped
    assert "no recorded content hash" in why


def test_operations_keep_their_hashes_in_the_journal_and_old_journals_still_load(
    tmp_path: Path,
) -> None:
    original, reencode = original_and_reencode(tmp_path / "p")
    group = Group(
        Kind.NEAR,
        [member(original, Action.KEEP, decodable=True), member(reencode, decodable=True)],
        "test",
    )
    (op,) = make_plan([group]).operations
    assert op.victim.content_hash == content_hash(reencode)
    assert op.keeper.content_hash == content_hash(original)
    assert Operation.from_json(op.to_json()) == op
    old = op.to_json()
    for ref in (old["victim"], old["keeper"]):
        del ref["content_hash"]
    loaded = Operation.from_json(old)
    assert loaded.victim.content_hash is None and loaded.keeper.content_hash is None


# ---------------------------------------------------------------- the scan's identities


def walked(path: str) -> Photo:
    (photo,) = Walker(ScanSettings()).walk([path])
    return photo


def test_a_same_size_same_inode_rewrite_with_restored_mtime_is_a_cache_miss(
    tmp_path: Path,
) -> None:
    original, _ = original_and_reencode(tmp_path / "p")
    before = walked(original)
    facts = FeatureResult(None, 0x1234, 320, 240, "JPEG", None, None, 0)
    with Cache(tmp_path / "c.sqlite") as cache:
        cache.store([Record(original, before.stat, "old-hash", "p", "m", facts)])
        assert original in cache.lookup([before], "m")
        rewrite_in_place(original, unrelated_photo(before.stat.size))
        after = walked(original)
        assert after.stat.replica == before.stat.replica
        assert (after.stat.size, after.stat.mtime_ns) == (before.stat.size, before.stat.mtime_ns)
        assert cache.lookup([after], "m") == {}
    assert pixel_key(after) != pixel_key(before)  # pixel-check scores are asked again too


def test_the_exact_tier_gives_no_hash_to_a_file_rewritten_since_the_walk(tmp_path: Path) -> None:
    original, _ = original_and_reencode(tmp_path / "p")
    photo = walked(original)
    rewrite_in_place(original, unrelated_photo(photo.stat.size))
    with pytest.raises(exact.FileChanged):
        exact.full_hash(original, photo.stat)
    with pytest.raises(exact.FileChanged):
        exact.partial_hash(original, photo.stat)


#: The cache's layout before ctime joined the identity (schema version 1).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE files (
    id INTEGER PRIMARY KEY, path BLOB NOT NULL UNIQUE, dev INTEGER NOT NULL,
    ino INTEGER NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    content_hash TEXT, partial_hash TEXT
);
CREATE TABLE features (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL, embedding BLOB, phash INTEGER, width INTEGER, height INTEGER,
    format TEXT, taken TEXT, camera TEXT, exif_fields INTEGER NOT NULL, error_code TEXT,
    error_message TEXT, PRIMARY KEY (file_id, model_id)
) WITHOUT ROWID;
CREATE TABLE same_shot (
    a TEXT NOT NULL, b TEXT NOT NULL, method TEXT NOT NULL, score REAL NOT NULL,
    PRIMARY KEY (a, b, method)
) WITHOUT ROWID;
CREATE TABLE groupings (fingerprint BLOB PRIMARY KEY, payload BLOB NOT NULL, used REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_version_1_cache_is_migrated_in_place_and_its_rows_never_match(tmp_path: Path) -> None:
    """Rows written without ctime cannot prove their file was not rewritten since: they
    miss (and are replaced when the file is scanned again); the database is kept."""
    a, b = original_and_reencode(tmp_path / "p")
    photos = [walked(a), walked(b)]
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    for i, photo in enumerate(photos):
        st = photo.stat
        db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, 'stale-hash', NULL)",
            (i + 1, os.fsencode(photo.path), st.dev, st.ino, st.size, st.mtime_ns),
        )
        db.execute(
            "INSERT INTO features(file_id, model_id, exif_fields) VALUES (?, 'm', 0)", (i + 1,)
        )
    db.execute("INSERT INTO same_shot VALUES ('file:1:2:3:4', 'file:1:2:3:5', 'x', 0.9)")
    db.execute("INSERT INTO groupings VALUES (x'00', x'00', 0)")
    db.commit()
    db.close()

    with Cache(path) as cache:
        assert cache.count() == 2  # migrated in place, not moved aside or rebuilt
        assert cache.lookup(photos, "m") == {}
        assert cache.stored_groups(b"\0") is None  # keyed without ctime: unreachable
        cache.store([Record(a, photos[0].stat, content_hash="fresh", model_id=None)])
        assert cache.lookup(photos, "m")[a].content_hash == "fresh"
        key = pixel_key(photos[0])
        cache.store_same_shot([(key, "file:gone", 0.5), (key, pixel_key(photos[1]), 0.7)], "x")
        cache.purge([], [])  # b's row still has no ctime: it must not stop the purge
        assert cache.same_shot_scores([(key, "file:gone")], "x") == {}
    assert not list(tmp_path.glob("c.sqlite.corrupt-*"))
    db = sqlite3.connect(path)
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)
    db.close()


def test_a_rewrite_is_a_new_stored_grouping_fingerprint() -> None:
    from photodup_tui.engine import stored_groups

    photo = Photo("/p/a.jpg", FileStat(1, 2, 3, 4, 5))
    moved = replace(photo, stat=replace(photo.stat, ctime_ns=6))
    keys = [
        stored_groups.fingerprint([p], {}, "m", ScanSettings(), checked=True)
        for p in (photo, moved)
    ]
    assert keys[0] != keys[1]


# ---------------------------------------------------------------- random sequences

LIBRARY_PICTURES = (PICTURE, PICTURE + 1)
OTHER_PICTURES = (UNRELATED, UNRELATED + 1)


@functools.cache
def picture_bytes(seed: int, quality: int, small: bool = False) -> bytes:
    return jpeg_bytes(make_photo(seed, (160, 120) if small else (320, 240)), quality=quality)


class RewriteMachine(RuleBasedStateMachine):
    """Real scans (the engine, its cache, --no-model features), in-place rewrites that keep
    size, inode and mtime (or a delete and re-create at the same size and mtime, which may
    get the inode back), and real trash runs on the last scan's groups.

    Invariant: a trash run never takes the last file showing a picture.  Each file's picture
    is known because this machine wrote it; a near copy trashed beside its keeper leaves the
    picture in the library, a "near copy" that is really another photo does not.
    """

    def __init__(self) -> None:
        super().__init__()
        self.base = tempfile.mkdtemp(prefix="pd-rewrite-")
        self.lib = os.path.join(self.base, "lib")
        os.environ["XDG_DATA_HOME"] = os.path.join(self.base, "xdg")
        os.environ["PHOTODUP_STATE_DIR"] = os.path.join(self.base, "state")
        self.trash = os.path.join(self.base, "xdg", "Trash")
        self.cache = Cache(Path(self.base) / "cache.sqlite")
        self.picture: dict[str, int] = {}  # path -> the seed of the picture it shows
        self.groups: list[Group] = []

    def teardown(self) -> None:
        self.cache.close()
        shutil.rmtree(self.base, ignore_errors=True)

    @initialize()
    def two_pictures_each_with_a_reencode(self) -> None:
        for seed in LIBRARY_PICTURES:
            for name, quality in ((f"A/{seed}.jpg", 95), (f"B/{seed}_q70.jpg", 70)):
                path = write(os.path.join(self.lib, name), picture_bytes(seed, quality))
                self.picture[path] = seed

    @rule()
    def scan(self) -> None:
        scanner = Scanner(ScanSettings(), LocalFeatureSource(workers=1), self.cache)
        self.groups = scanner.run([self.lib], lambda _p: None, threading.Event()).groups

    @rule(which=st.integers(0, 7), seed=st.sampled_from(OTHER_PICTURES), recreate=st.booleans())
    def rewrite(self, which: int, seed: int, recreate: bool) -> None:
        paths = sorted(self.picture)
        path = paths[which % len(paths)]
        st_before = os.lstat(path)
        data = picture_bytes(seed, 40, small=True)
        data += b"\0" * (st_before.st_size - len(data))
        if recreate:
            os.unlink(path)
            write(path, data)
            os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
        else:
            rewrite_in_place(path, data)
        self.picture[path] = seed

    @rule()
    def trash_it(self) -> None:
        before = snapshot(self.lib)
        pictures = set(self.picture.values())
        execute(make_plan(self.groups), dry_run=False)
        for path in [p for p in self.picture if not os.path.lexists(p)]:
            del self.picture[path]
        assert set(self.picture.values()) == pictures, "a picture left the library"
        assert_accounted_for(before, [self.trash])

    @invariant()
    def trash_is_consistent(self) -> None:
        trash_entries(self.trash)


@pytest.mark.timeout(240)
def test_random_scans_rewrites_and_trash_runs_never_lose_a_picture() -> None:
    run_state_machine_as_test(
        RewriteMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
