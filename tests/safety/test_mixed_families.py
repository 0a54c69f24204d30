"""A group may hold byte-identical copies, near copies and similar edits of one keeper.

Each deletion is judged by its own verdict (``victim_verdict``), not the group's kind:
byte-identical victims are byte-compared (rule 5), similar ones need the user's explicit
choice (rule 6), and the keeper survives (rule 1).  Everything is re-read from disk.
"""

from __future__ import annotations

from pathlib import Path

from photodup_tui.engine.safedelete import execute, make_plan
from photodup_tui.engine.safedelete.plan import victim_verdict
from photodup_tui.engine.types import Action, Group, Kind
from tests.safety.helpers import member, read, trash_entries, write

ORIGINAL = bytes(range(256)) * 64
NEAR_COPY = bytes(reversed(range(256))) * 32  # a smaller re-encode, say
EDIT = b"\x01" * 9000  # a crop


def family(tmp_path: Path, *, edit_action: Action = Action.KEEP) -> tuple[Group, dict[str, str]]:
    paths = {
        "keeper": write(tmp_path / "p/a.jpg", ORIGINAL),
        "copy": write(tmp_path / "backup/a.jpg", ORIGINAL),
        "near": write(tmp_path / "p/a_small.jpg", NEAR_COPY),
        "edit": write(tmp_path / "p/a_crop.jpg", EDIT),
    }
    keeper = member(paths["keeper"], Action.KEEP, decodable=True)
    copy = member(paths["copy"], decodable=True)
    copy.verdict = Kind.EXACT
    near = member(paths["near"], decodable=True)
    near.verdict = Kind.NEAR
    edit = member(paths["edit"], edit_action, decodable=True)
    edit.verdict = Kind.SIMILAR
    return Group(Kind.NEAR, [keeper, copy, near, edit], reason="test"), paths


def test_each_victim_is_judged_by_its_own_verdict(tmp_path: Path) -> None:
    group, _ = family(tmp_path, edit_action=Action.DELETE)
    keeper, copy, near, edit = group.members
    assert victim_verdict(copy, keeper, group) is Kind.EXACT  # same content hash
    assert victim_verdict(near, keeper, group) is Kind.NEAR
    assert victim_verdict(edit, keeper, group) is Kind.SIMILAR
    # The user keeps the crop instead: the original's copies are only similar to it.
    assert victim_verdict(copy, edit, group) is Kind.SIMILAR


def test_a_similar_edit_marked_in_a_near_group_needs_the_explicit_choice(
    tmp_path: Path, home_trash: Path
) -> None:
    group, paths = family(tmp_path, edit_action=Action.DELETE)
    plan = make_plan([group])  # as from a report, without --allow-similar
    planned = {op.victim.path: op.group_kind for op in plan.operations}
    assert planned == {paths["copy"]: Kind.EXACT, paths["near"]: Kind.NEAR}
    ((refused, why),) = plan.refused
    assert refused == paths["edit"] and "rule 6" in why
    report = execute(plan, dry_run=False)
    assert read(paths["keeper"]) == ORIGINAL and read(paths["edit"]) == EDIT
    assert sorted(e.data for e in trash_entries(home_trash)) == sorted([ORIGINAL, NEAR_COPY])
    assert report.bytes_reclaimed == len(ORIGINAL) + len(NEAR_COPY)


def test_user_marked_edit_goes_with_a_read_check_not_a_byte_compare(
    tmp_path: Path, home_trash: Path
) -> None:
    group, paths = family(tmp_path, edit_action=Action.DELETE)
    plan = make_plan([group], allow_similar=True)  # the TUI: every such mark is the user's
    assert {op.victim.path: op.group_kind for op in plan.operations}[paths["edit"]] is (
        Kind.SIMILAR
    )
    execute(plan, dry_run=False)
    assert read(paths["keeper"]) == ORIGINAL  # rule 1: the keeper stays
    assert len(trash_entries(home_trash)) == 3


def test_a_byte_identical_victim_that_differs_on_disk_stops_its_group(
    tmp_path: Path, home_trash: Path
) -> None:
    group, paths = family(tmp_path)
    # Same size, different bytes, and the scan saw the file as it is now (a rescan that
    # trusted a stale cache row): every stat matches, so only the byte compare can tell.
    write(paths["copy"], ORIGINAL[::-1])
    copy = group.members[1]
    stale_hash = group.keeper_member.photo.content_hash  # what the stale row said: a copy
    group.members[1] = member(paths["copy"], content_hash=stale_hash, decodable=True)
    group.members[1].verdict = copy.verdict
    report = execute(make_plan([group]), dry_run=False)
    assert read(paths["copy"]) == ORIGINAL[::-1] and read(paths["near"]) == NEAR_COPY
    assert trash_entries(home_trash) == []
    # The whole group stops, the near copy too, and the byte compare is what said no.
    refusal = "byte compare with the keeper failed: contents differ (rule 5)"
    assert sorted(report.skipped) == sorted([(paths["copy"], refusal), (paths["near"], refusal)])
