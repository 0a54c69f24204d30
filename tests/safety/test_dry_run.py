"""Rule 12: a dry run decides exactly what the real run then does, and changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

from photodup_tui.engine.safedelete import execute, make_plan
from photodup_tui.engine.types import Action, Group, Kind
from tests.safety.helpers import group, member, read, trash_entries, write

DATA = b"jpeg?" * 300


def full_state(root: Path) -> dict[bytes, tuple[int, int, int, int, bytes]]:
    """Every entry under root with inode, size, mtime, ctime and bytes: any change shows."""
    out = {}
    for dirpath, dirs, files in os.walk(os.fsencode(root)):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = read(p) if os.path.isfile(p) and not os.path.islink(p) else b""
            out[p] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, data)
    return out


def mixed_library(root: Path) -> list[Group]:
    """Groups that exercise every outcome: trashed, refused, skipped at act time."""
    k = write(root / "k/keep.jpg", DATA)
    ok = group(Kind.EXACT, k, write(root / "a/1.jpg", DATA), write(root / "b/1.jpg", DATA))
    changed_victim = write(root / "c/1.jpg", DATA)
    changed = group(Kind.EXACT, k, changed_victim)
    with open(changed_victim, "r+b") as f:
        f.write(b"J")
    whole = Group(
        Kind.EXACT,
        [member(write(root / "d/1.jpg", DATA)), member(write(root / "d/2.jpg", DATA))],
        "",
    )
    similar = group(Kind.SIMILAR, k, write(root / "e/1.jpg", DATA), decodable=True)
    twin = write(root / "f/1.jpg", DATA)
    os.link(twin, root / "f/2.jpg")
    twins = group(Kind.EXACT, k, twin, str(root / "f/2.jpg"))
    odd = group(Kind.EXACT, k, write(os.path.join(os.fsencode(root), b"g/\xff -x\n.jpg"), DATA))
    gone_keeper = write(root / "h/keep.jpg", DATA)
    keeper_gone = group(Kind.EXACT, gone_keeper, write(root / "h/1.jpg", DATA))
    os.unlink(gone_keeper)
    link = root / "i/link.jpg"
    link.parent.mkdir()
    link.symlink_to(k)
    symlinked = Group(Kind.EXACT, [member(k, Action.KEEP), member(str(link))], "")
    return [ok, changed, whole, similar, twins, odd, keeper_gone, symlinked]


def test_dry_run_equals_real_run_operation_for_operation(
    tmp_path: Path, home_trash: Path, journal_dir: Path
) -> None:
    groups = mixed_library(tmp_path / "lib")
    plan = make_plan(groups)
    before = full_state(tmp_path / "lib")

    dry = execute(plan, dry_run=True)
    assert full_state(tmp_path / "lib") == before  # not even a ctime moved
    assert not home_trash.exists() and not journal_dir.exists()
    assert dry.journal is None

    real = execute(plan, dry_run=False)
    assert [(p, size) for p, _w, size in dry.trashed] == [(p, s) for p, _w, s in real.trashed]
    for (_p, would_go, _s), (_p2, went, _s2) in zip(dry.trashed, real.trashed, strict=True):
        assert os.path.dirname(os.path.dirname(went)) == would_go  # <trash>/files/<name>
    assert dry.skipped == real.skipped
    assert dry.bytes_reclaimed == real.bytes_reclaimed == 4 * len(DATA)  # twins count once
    assert real.failed == [] and dry.failed == []

    # And the real run did exactly that on disk.
    entries = trash_entries(home_trash)
    assert sorted(e.original for e in entries) == sorted(
        os.fsencode(p) for p, _w, _s in real.trashed
    )
    assert len(real.trashed) == 5
    skipped_paths = {p for p, _r in real.skipped}
    assert all(os.path.lexists(p) for p in skipped_paths)
