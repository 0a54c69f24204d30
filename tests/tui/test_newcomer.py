"""The rough edges a new user hit (issue 17), each driven through the real app with Pilot;
what the disk holds is read back from the disk."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from photodup_tui import daemon_supervisor, ui_settings
from photodup_tui.app import create_app
from photodup_tui.engine.daemon_control import DaemonStatus
from photodup_tui.engine.safedelete import execute, make_plan
from photodup_tui.engine.scan import ScanResult
from photodup_tui.engine.types import Action, FileStat, Group, Kind, Member, Photo
from photodup_tui.review_state import REMEMBERED
from photodup_tui.screens.confirm import UndoConfirmScreen
from photodup_tui.screens.group import GroupScreen
from photodup_tui.screens.hidden import HiddenScreen
from photodup_tui.screens.review import ReviewScreen
from photodup_tui.widgets.daemon_status import DaemonStatusLine
from photodup_tui.widgets.group_table import GroupTable
from photodup_tui.widgets.member_card import MemberCard
from photodup_tui.widgets.metadata_table import MetadataTable
from photodupd.protocol import RemoteError
from tests.safety.helpers import group as disk_group
from tests.safety.helpers import read, write
from tests.tui import fixed_data
from tests.tui.conftest import SIZE, Library, idle, local_source, trash_files

ROOT = fixed_data.ROOT
_inodes = itertools.count(9000)


def quiet(**options: Any) -> dict[str, Any]:
    return {
        "watch_daemon": False,
        "cursor_blink": False,
        "check_interrupted": False,
        "preview": "none",
        "daemon_status": fixed_data.STATUS,
        **options,
    }


def on_disk(**options: Any) -> dict[str, Any]:
    """A real scan of a generated folder, without a model."""
    return {**quiet(source_factory=local_source), "daemon_status": None, **options}


def photo(name: str, content: str, size: int = 1_000_000) -> Photo:
    stat = FileStat(dev=2049, ino=next(_inodes), size=size, mtime_ns=1, ctime_ns=1)
    return Photo(f"{ROOT}/{name}", stat, content_hash=content, width=800, height=600)


def with_copy_and_edit() -> Group:
    """A keeper, its byte-identical copy and a grey edit: an exact group, the edit beside it."""
    return Group(
        Kind.EXACT,
        [
            Member(photo("beach.jpg", "h1"), Action.KEEP, "keeper: shorter path"),
            Member(
                photo("Backup/beach.jpg", "h1"),
                Action.DELETE,
                "byte-identical to the keeper; keeper wins: shorter path",
                Kind.EXACT,
            ),
            Member(
                photo("beach-grey.jpg", "h2"),
                Action.KEEP,
                "similar to the keeper (cosine 0.902, same shot 0.97); similar photos are "
                "only shown, you decide",
                Kind.SIMILAR,
            ),
        ],
        reason="byte-identical; 1 similar edit beside it, kept",
        scores={f"{ROOT}/beach.jpg": 1.0, f"{ROOT}/Backup/beach.jpg": 1.0},
    )


def with_copy_inside_a_near_group() -> Group:
    """A near group whose second member is a byte-identical copy of the keeper."""
    return Group(
        Kind.NEAR,
        [
            Member(photo("dune.jpg", "h3"), Action.KEEP, "keeper: higher resolution"),
            Member(photo("Backup/dune.jpg", "h3"), Action.DELETE, "byte-identical", Kind.EXACT),
            Member(photo("dune-small.jpg", "h4", 200_000), Action.DELETE, "near", Kind.NEAR),
        ],
        reason="pHash distance 2, cosine 0.991, 800x600 vs 800x600",
        scores={f"{ROOT}/Backup/dune.jpg": 1.0, f"{ROOT}/dune-small.jpg": 0.991},
    )


def result_of(*groups: Group) -> ScanResult:
    photos = [m.photo for g in groups for m in g.members]
    return dataclasses.replace(fixed_data.result(), groups=list(groups), photos=photos)


# ------------------------------------------------------------------------------ bugs


async def test_hiding_a_group_under_a_filter_keeps_keys_out_of_the_filter_box() -> None:
    app = create_app(**quiet(result=fixed_data.result()))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        review = app.review
        assert review is not None
        await pilot.press("slash", "c", "a", "t", "enter")
        [cat] = review.visible(text="cat")
        box = app.screen.query_one("#filter", Input)

        await pilot.press("n")  # the only group the filter shows: the list is empty now
        await idle(pilot)
        assert app.focused is not box
        await pilot.press("u")  # what the toast suggests
        await idle(pilot)
        assert box.value == "cat"  # not "catu"
        assert review.visible(text="cat") == [cat]  # the group is back
        assert app.focused is app.screen.query_one(GroupTable)

        # Hiding again does not pile another copy of the long explanation on the screen.
        await pilot.press("n")
        await idle(pilot)
        titles = [n.title for n in app._notifications]
        assert titles.count("Not duplicates") == 1, titles


async def test_back_from_a_group_the_cursor_is_on_the_group_last_seen() -> None:
    app = create_app(**quiet(result=fixed_data.result()))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        review = app.review
        assert review is not None
        order = review.visible()
        await pilot.press("enter")
        await idle(pilot)
        await pilot.press("right_square_bracket", "right_square_bracket")
        await idle(pilot)
        assert isinstance(app.screen, GroupScreen) and app.screen.group_index == order[2]
        await pilot.press("escape")
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)
        assert app.screen.query_one(GroupTable).current_group() == order[2]


async def test_a_failed_model_switch_is_told_once_and_the_status_line_stays_current(
    monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path
) -> None:
    def refuse(socket_path: Path | None, name: str) -> None:
        raise RemoteError(
            "model_unavailable",
            f"CLIP weights for {name} are not in the local cache "
            "(/root/.cache/huggingface/hub); photodup-ctl models pull clip:ViT-B-32",
        )

    monkeypatch.setattr(daemon_supervisor, "switch_model", refuse)
    app = create_app(
        socket_path=isolated_dirs / "nobody.sock",
        watch_daemon=False,
        start_daemon=False,
        check_interrupted=False,
    )
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        serving = fixed_data.STATUS  # ready, the built-in model
        app.daemon_status = serving
        app.apply_settings(app.scan_settings, app.ui, model="clip:ViT-B-32", previous_model=None)
        await idle(pilot)
        [failure] = [n for n in app._notifications if n.severity == "error"]
        assert "not in the local cache" in failure.message  # the error: in a notification
        # The status line says what photodupd serves: the model it had, no stale error.
        assert app.daemon_status == serving
        line = str(app.screen.query_one(DaemonStatusLine).content)
        assert "clip" not in line.casefold() and "not switched" not in line
        assert fixed_data.MODEL in line


async def test_a_long_status_wraps_instead_of_losing_its_end() -> None:
    home = os.path.expanduser("~")
    detail = (
        "photodupd exited during start-up: the model auto could not be loaded because "
        f"CLIP weights are not in the local cache ({home}/.cache/huggingface/hub/"
        "models--timm--vit_base_patch32_clip_224.openai); photodup-ctl models pull fixes it"
    )
    status = DaemonStatus("down", detail=detail)
    app = create_app(**quiet(result=fixed_data.result(), daemon_status=status))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        line = app.screen.query_one(DaemonStatusLine)
        assert line.size.height >= 2  # wrapped, not cut at the terminal's edge
        assert "(~/.cache/huggingface/hub/" in str(line.content)


async def test_the_list_describes_what_is_left_after_a_clean_up() -> None:
    edited, pair = with_copy_and_edit(), with_copy_inside_a_near_group()
    app = create_app(**quiet(result=result_of(edited, pair)))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        # What a batch reports back (ActionScreen calls this with the trashed paths).
        app.after_trash([f"{ROOT}/Backup/beach.jpg", f"{ROOT}/Backup/dune.jpg"])
        app.screen.refresh_all()
        await idle(pilot)
        table = app.screen.query_one(GroupTable)
        rows = {table.render_line(y).text.split()[0]: table.render_line(y).text for y in (1, 2)}
        # The keeper and its grey edit are left: a similar pair, not "exact, byte-identical".
        assert rows["similar"].split()[1] == "2"
        assert "byte-identical" not in rows["similar"]
        assert "cosine 0.902" in rows["similar"]
        # The near group lost its exact copy; the re-saved one is still marked.
        assert rows["near"].split()[1:3] == ["2", "1"]
        summary = str(app.screen.query_one("#summary", Static).content)
        assert "2 groups: 0 exact · 1 near · 1 similar" in summary


async def test_a_byte_identical_copy_in_a_near_group_says_so() -> None:
    app = create_app(**quiet(result=result_of(with_copy_inside_a_near_group())))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        await pilot.press("enter")
        await idle(pilot)
        table = app.screen.query_one(MetadataTable)
        match = [str(cell) for cell in table.get_row_at(1)]
        assert match == ["Match", "the keeper", "exact: byte-identical", "near: re-saved/resized"]
        captions = [
            str(c.query_one(".card-caption", Static).content) for c in app.screen.query(MemberCard)
        ]
        assert captions[1] == "2 ✗ TO TRASH · exact"
        assert captions[2] == "3 ✗ TO TRASH · near"


async def test_a_small_terminal_shows_one_large_preview_and_flips_through_them() -> None:
    app = create_app(
        **quiet(result=fixed_data.result(), preview="halfcell", preview_loader=fixed_data.preview)
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await idle(pilot)
        await pilot.press("enter")
        await idle(pilot)
        screen = app.screen
        assert isinstance(screen, GroupScreen) and screen.compact
        group = screen.review.groups[screen.group_index]

        def shown() -> list[MemberCard]:
            return [card for card in screen.query(MemberCard) if card.display]

        [card] = shown()
        assert card.member is group.keeper_member
        assert card.region.width >= 36 and card.region.height >= 14  # a preview worth seeing
        table = screen.query_one(MetadataTable)
        assert table.region.right <= 80 and table.region.height >= 11  # every fact, uncut
        await pilot.press("right")
        await idle(pilot)
        [card] = shown()
        assert card.member is group.members[1]
        assert card.border_title == "← 2 of 3 →"

    # A roomy terminal keeps the side-by-side view.
    app = create_app(**quiet(result=fixed_data.result()))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await idle(pilot)
        assert isinstance(app.screen, GroupScreen) and not app.screen.compact
        assert len([c for c in app.screen.query(MemberCard) if c.display]) == 3
        await pilot.resize_terminal(80, 24)  # made smaller while open: one at a time
        await idle(pilot)
        assert app.screen.compact
        assert len([c for c in app.screen.query(MemberCard) if c.display]) == 1


async def test_headers_match_the_keys_and_the_sort_arrow_fits() -> None:
    app = create_app(**quiet(result=fixed_data.result()))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        await pilot.press("s", "s")  # reclaimable -> kind -> files
        await idle(pilot)
        assert "Files ▼" in app.screen.query_one(GroupTable).render_line(0).text
        await pilot.press("n", "h")
        await idle(pilot)
        assert isinstance(app.screen, HiddenScreen)
        title = str(app.screen.query_one("#hidden-title", Static).content)
        footer_keys = {
            key
            for key, active in app.screen.active_bindings.items()
            if active.binding.action == "show_again" and active.binding.show
        }
        assert footer_keys and all(key in title for key in footer_keys), (footer_keys, title)


# ------------------------------------------------------------------------------ surprises


async def test_undo_says_which_clean_up_comes_back_and_asks_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keeper = write(tmp_path / "photos" / "a.jpg", b"same bytes")
    victim = write(tmp_path / "photos" / "copy" / "a.jpg", b"same bytes")
    # A batch another command made: `photodup apply` in a shell, not this TUI.
    monkeypatch.setattr(sys, "argv", ["photodup", "apply", "report.json", "--yes"])
    done = execute(make_plan([disk_group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert [p for p, _where, _size in done.trashed] == [victim]
    monkeypatch.setattr(sys, "argv", ["photodup"])
    xdg = Path(os.environ["XDG_DATA_HOME"])

    app = create_app(**quiet(result=fixed_data.result()))
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        await pilot.press("u")
        await idle(pilot)
        assert isinstance(app.screen, UndoConfirmScreen)
        body = str(app.screen.query_one("#dialog-body", Static).content)
        assert "Put back 1 file (10 B)" in body
        assert "by `photodup apply report.json --yes`" in body
        assert done.batch_id in body
        await pilot.press("n")  # changed my mind: nothing moves
        await idle(pilot)
        assert not os.path.exists(victim) and len(trash_files(xdg)) == 1

        await pilot.press("u")
        await idle(pilot)
        await pilot.press("y")
        await idle(pilot)
    assert read(victim) == b"same bytes" and read(keeper) == b"same bytes"
    assert trash_files(xdg) == {}


async def test_a_keeper_chosen_by_hand_survives_a_rescan(library: Library) -> None:
    app = create_app([str(library.root)], **on_disk())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        review = app.review
        assert review is not None
        [index] = review.visible()
        group = review.groups[index]
        await pilot.press("enter")
        await idle(pilot)
        paths = [m.photo.path for m in group.members]
        for _ in range((paths.index(str(library.copy)) - group.keeper) % len(paths)):
            await pilot.press("right")
        await pilot.press("k")
        await idle(pilot)  # the choice is written by a worker
        assert group.keeper_member.photo.path == str(library.copy)

        await pilot.press("escape", "r")  # scan again
        await idle(pilot)
        review = app.review
        assert review is not None and isinstance(app.screen, ReviewScreen)
        [index] = review.visible()
        again = review.groups[index]
        assert again is not group  # a new scan's group ...
        assert again.keeper_member.photo.path == str(library.copy)  # ... with the user's keeper
        assert again.keeper_member.why == REMEMBERED
        marked = {m.photo.path for m in again.members if m.action is Action.DELETE}
        assert str(library.original) in marked and str(library.copy) not in marked


async def test_a_photo_given_as_the_path_is_not_a_recent_folder(library: Library) -> None:
    app = create_app([str(library.original)], **on_disk())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
        assert isinstance(app.screen, ReviewScreen)  # it was scanned ...
    assert ui_settings.load().recent_roots == ()  # ... and is no folder to offer again

    app = create_app([str(library.root)], **on_disk())
    async with app.run_test(size=SIZE) as pilot:
        await idle(pilot)
    assert ui_settings.load().recent_roots == (str(library.root),)
