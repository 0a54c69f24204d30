"""Rule 13: a saved report is re-planned and re-verified when it is applied later."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from photodup_tui.engine import report as reports
from photodup_tui.engine.exact import full_hash
from photodup_tui.engine.safedelete import ReportError, apply_report
from photodup_tui.engine.types import FileStat, Kind
from tests.photos import jpeg_bytes, make_photo
from tests.safety.helpers import group, read, snapshot, trash_entries, write

#: A real photo: apply only acts on image files (the vetting reads their signature).
DATA = jpeg_bytes(make_photo(3, (64, 48)))


def report_member(path: str, action: str) -> dict[str, Any]:
    """As the scan writes it: lstat, content hash, and (for a copy) its verdict."""
    st = os.lstat(path)
    return {
        "path": path,
        "size": st.st_size,
        "width": 4000,
        "height": 3000,
        "format": "JPEG",
        "taken": None,
        "action": action,
        "dev": st.st_dev,
        "ino": st.st_ino,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "content_hash": full_hash(path, FileStat.of(st)),
        "keeper": action == "keep",
        "verdict": None if action == "keep" else "exact",
        "why": "test",
    }


def save_report(tmp_path: Path, groups: list[tuple[str, list[str], list[str]]]) -> Path:
    """groups: (kind, kept paths, deleted paths); written as the scan's JSON report."""
    data = {
        "version": 1,
        "model": "test",
        "roots": [str(tmp_path)],
        "groups": [
            {
                "kind": kind,
                "reason": "test",
                "scores": {},
                "members": [report_member(p, "keep") for p in keep]
                + [report_member(p, "delete") for p in delete],
            }
            for kind, keep, delete in groups
        ],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))  # ensure_ascii: surrogate escapes survive
    return path


def test_a_fresh_report_is_applied(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    report = save_report(tmp_path, [("exact", [a], [b])])
    dry = apply_report(report, dry_run=True)
    assert os.path.exists(b) and not home_trash.exists()
    real = apply_report(report, dry_run=False)
    assert [p for p, _w, _s in dry.trashed] == [p for p, _w, _s in real.trashed] == [b]
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(b)]
    assert os.path.exists(a)


def test_a_stale_report_does_nothing_to_changed_files(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    c = write(tmp_path / "p/c.jpg", DATA)
    d = write(tmp_path / "p/d.jpg", DATA)
    report = save_report(tmp_path, [("exact", [a], [b]), ("exact", [c], [d])])
    write(b, DATA)  # rewritten in place since the report: same bytes, new mtime/ctime
    os.rename(c, tmp_path / "p/tmp")  # keeper and victim swapped by hand
    os.rename(d, c)
    os.rename(tmp_path / "p/tmp", d)
    before = snapshot(tmp_path / "p")
    result = apply_report(report, dry_run=False)
    assert snapshot(tmp_path / "p") == before and trash_entries(home_trash) == []
    assert [r.split(" changed since the scan")[0] for _p, r in result.skipped] == [
        repr(b),
        f"keeper {c!r}",
    ]


def test_an_edited_report_cannot_empty_a_group_or_act_on_similar(
    tmp_path: Path, home_trash: Path
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    c = write(tmp_path / "p/c.jpg", DATA)
    path = save_report(tmp_path, [("exact", [a], [b]), ("similar", [c], [a])])
    data = json.loads(path.read_text())
    data["groups"][0]["members"][0]["action"] = "delete"  # the user "deletes" the keeper too
    path.write_text(json.dumps(data))
    before = snapshot(tmp_path / "p")
    result = apply_report(path, dry_run=False)
    assert snapshot(tmp_path / "p") == before
    reasons = [r for _p, r in result.skipped]
    assert "keep one copy" in reasons[0] and "keep one copy" in reasons[1]
    assert "explicit choice" in reasons[2]


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.pop("ino"),
        lambda m: m.update(dev="1"),
        lambda m: m.update(keeper=True),  # two keepers
        lambda m: m.update(action="shred"),
        lambda m: m.update(path=7),
    ],
)
def test_a_malformed_report_is_refused_before_anything_happens(
    tmp_path: Path, home_trash: Path, edit: Any
) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/b.jpg", DATA)
    path = save_report(tmp_path, [("exact", [a], [b])])
    data = json.loads(path.read_text())
    edit(data["groups"][0]["members"][1])
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError):
        apply_report(path, dry_run=False)
    assert os.path.exists(b) and not home_trash.exists()


def test_invalid_utf8_paths_survive_the_report(tmp_path: Path, home_trash: Path) -> None:
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(os.path.join(os.fsencode(tmp_path), b"p/\xe9t\xe9 \xff.jpg"), DATA)  # latin-1
    report = save_report(tmp_path, [("exact", [a], [b])])
    result = apply_report(report, dry_run=False)
    assert result.skipped == []
    [entry] = trash_entries(home_trash)
    assert entry.original == os.path.join(os.fsencode(tmp_path), b"p/\xe9t\xe9 \xff.jpg")


def test_reports_written_by_the_scan_are_applied_with_their_protections(
    tmp_path: Path, home_trash: Path
) -> None:
    """End to end with engine/report.py's writer: reference flags and folders hold."""
    ref = tmp_path / "archive"
    a = write(tmp_path / "p/a.jpg", DATA)
    b = write(tmp_path / "p/\udcff b.jpg", DATA)
    in_ref_folder = write(ref / "c.jpg", DATA)
    flagged = write(tmp_path / "p/flagged.jpg", DATA)
    g = group(Kind.EXACT, a, b, in_ref_folder, flagged)
    for m in g.members:
        m.photo.content_hash = full_hash(m.photo.path, m.photo.stat)
        m.verdict = None if m is g.keeper_member else Kind.EXACT
    g.members[3].photo.reference = True
    saved = reports.Report(1, "test", [str(tmp_path)], [g], reference_folders=[str(ref)])
    reports.write_json(saved, tmp_path / "r.json")

    result = apply_report(tmp_path / "r.json", dry_run=False)
    assert [e.original for e in trash_entries(home_trash)] == [os.fsencode(b)]
    assert read(in_ref_folder) == DATA and read(flagged) == DATA and read(a) == DATA
    assert [r for _p, r in result.skipped] == [
        f"in reference folder {str(ref)!r} (rule 11)",
        "in a reference folder (rule 11)",
    ]
