"""Reports: the documented JSON schema, exact round trips of any file name, CSV."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from photodup_tui.engine import report as reports
from photodup_tui.engine.report import Report, ReportError, load_report
from photodup_tui.engine.types import Action, Group, Kind, Member
from tests.engine.helpers import photo

ODD_NAMES = [
    os.fsdecode(b"/p/invalid-\xff\xfe.jpg"),  # surrogate escapes
    "/p/new\nline.jpg",
    "/p/-dash 'single' \"double\".jpg",
    "/p/caf\u00e9 \u65e5\u672c.jpg",
]


def sample() -> Report:
    # No pHash, camera or EXIF count: the report does not carry them.
    keeper = photo(ODD_NAMES[0], content_hash="a" * 64, taken="2021-06-01T12:30:00", phash=None)
    victim = photo(
        ODD_NAMES[1], content_hash="a" * 64, width=None, height=None, decodable=None, phash=None
    )
    near_keeper = photo(ODD_NAMES[2], content_hash="b" * 64, reference=True, phash=None)
    near_victim = photo(
        ODD_NAMES[3], content_hash="c" * 64, fmt="WEBP", width=400, height=300, phash=None
    )
    groups = [
        Group(
            Kind.EXACT,
            [
                Member(keeper, Action.KEEP, "keeper: shorter path"),
                Member(victim, Action.DELETE, "byte-identical", Kind.EXACT),
            ],
            "byte-identical",
            keeper=0,
            scores={keeper.path: 1.0, victim.path: 1.0},
        ),
        Group(
            Kind.NEAR,
            [
                Member(near_victim, Action.DELETE, "near", Kind.NEAR),
                Member(near_keeper, Action.KEEP, "keeper"),
            ],
            "pHash distance 2, cosine 0.990, 4000x3000 vs 400x300",
            keeper=1,
            scores={near_keeper.path: 1.0, near_victim.path: 0.99},
        ),
    ]
    return Report(
        version=1,
        model="local:phash-v1",
        roots=["/p", os.fsdecode(b"/\xff")],
        groups=groups,
        reference_folders=["/p/ref"],
        errors=[(os.fsdecode(b"/p/bad\xff.jpg"), "not_an_image: nope")],
        created="2025-01-01T00:00:00+00:00",
    )


def test_json_has_the_documented_keys() -> None:
    document = json.loads(reports.to_json(sample()))
    assert set(document) == {
        "version",
        "model",
        "roots",
        "reference_dirs",
        "created",
        "groups",
        "errors",
    }
    assert document["version"] == 1
    group = document["groups"][1]
    assert set(group) == {"kind", "reason", "scores", "members"}
    member = group["members"][0]
    assert set(member) == {
        "path",
        "size",
        "width",
        "height",
        "format",
        "taken",
        "action",
        "keeper",
        "verdict",
        "why",
        "dev",
        "ino",
        "mtime_ns",
        "ctime_ns",
        "content_hash",
        "decodable",
        "reference",
    }
    assert [m["keeper"] for m in group["members"]] == [False, True]
    assert member["action"] == "delete"


def test_json_round_trips_every_field_and_any_file_name(tmp_path: Path) -> None:
    original = sample()
    target = tmp_path / "report.json"
    reports.write_json(original, target)
    text = target.read_bytes()
    text.decode("ascii")  # pure ASCII: any JSON reader accepts it
    loaded = load_report(target)
    assert loaded == original  # dataclass equality: every path, stat, action, why, score
    for name, member in zip(ODD_NAMES[:2], loaded.groups[0].members, strict=True):
        assert member.photo.path == name
        assert isinstance(member.photo.path, str)
    assert os.fsencode(loaded.groups[0].members[0].photo.path) == b"/p/invalid-\xff\xfe.jpg"


def test_safe_deletion_reads_our_report_the_same_way(tmp_path: Path) -> None:
    from photodup_tui.engine.safedelete import groups_from_report_dict

    original = sample()
    groups = groups_from_report_dict(json.loads(reports.to_json(original)))
    assert [[m.photo.path for m in g.members] for g in groups] == [
        [m.photo.path for m in g.members] for g in original.groups
    ]
    assert [g.keeper for g in groups] == [g.keeper for g in original.groups]
    assert [[m.photo.stat for m in g.members] for g in groups] == [
        [m.photo.stat for m in g.members] for g in original.groups
    ]


def test_csv_rows_and_raw_bytes_of_odd_names(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    reports.write_csv(sample(), target)
    raw = target.read_bytes()
    assert b"/p/invalid-\xff\xfe.jpg" in raw  # the name's own bytes, not an escape
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8", "surrogateescape"))))
    assert tuple(rows[0]) == reports.CSV_COLUMNS
    assert len(rows) == 5
    by_path = {row[3]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert set(by_path) == set(ODD_NAMES)
    assert by_path[ODD_NAMES[1]]["action"] == "delete"
    assert by_path[ODD_NAMES[2]]["keeper"] == "yes"
    assert by_path[ODD_NAMES[1]]["width"] == ""


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["groups"][0]["members"][0].update(keeper=False), "no member is the keeper"),
        (lambda d: d["groups"][0]["members"][1].update(keeper=True), "more than one keeper"),
        (lambda d: d["groups"][0]["members"][0].pop("ino"), "missing 'ino'"),
        (lambda d: d["groups"][0]["members"][0].update(size="12"), "size must be an integer"),
        (lambda d: d["groups"][0]["members"][0].update(action="shred"), "keep or delete"),
        (lambda d: d["groups"][0].update(kind="maybe"), "exact, near or similar"),
    ],
)
def test_load_refuses_malformed_reports(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(reports.to_json(sample()))
    mutate(document)
    target = tmp_path / "bad.json"
    target.write_text(json.dumps(document))
    with pytest.raises(ReportError, match=message):
        load_report(target)


def test_load_refuses_non_json(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    target.write_bytes(b"\xff not json")
    with pytest.raises(ReportError):
        load_report(target)
    with pytest.raises(ReportError, match="cannot read"):
        load_report(tmp_path / "missing.json")
