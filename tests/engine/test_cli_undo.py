"""`photodup undo` says which batch it puts back before it does; `photodup undo --list`
shows every batch: when, by which command, how many files, what state."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from photodup_tui import cli
from photodup_tui.engine.safedelete import execute, make_plan
from photodup_tui.engine.types import Kind
from tests.safety.helpers import group, read, write


def trash_batch(root: Path, name: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """One batch that trashes a copy of ``name``, made as if by the command ``argv``."""
    keeper = write(root / name, name.encode() * 100)
    victim = write(root / "copies" / name, name.encode() * 100)
    monkeypatch.setattr(sys, "argv", argv)
    report = execute(make_plan([group(Kind.EXACT, keeper, victim)]), dry_run=False)
    assert [path for path, _where, _size in report.trashed] == [victim]
    return report.batch_id


def test_undo_list_shows_every_batch_and_which_one_undo_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    older = trash_batch(tmp_path, "a.jpg", ["photodup", "apply", "r1.json", "--yes"], monkeypatch)
    newer = trash_batch(tmp_path, "bb.jpg", ["photodup", str(tmp_path)], monkeypatch)

    assert cli.main(["undo", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["BATCH", "WHEN", "FILES", "SIZE", "STATE", "COMMAND"]
    first, second = lines[1], lines[2]  # newest first; * marks what `photodup undo` takes
    assert first.split()[:2] == ["*", newer]
    assert first.split()[4:7] == ["1", "600", "B"]
    assert first.split()[7] == "complete"
    assert first.endswith(f"photodup {tmp_path}")
    assert second.split()[0] == older
    assert second.endswith("photodup apply r1.json --yes")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", second)
    # The columns line up: every row's state starts where the header's STATE does.
    assert (
        len(
            {
                line.index(word)
                for line, word in zip(lines[:3], ["STATE", "complete", "complete"], strict=True)
            }
        )
        == 1
    )

    # Undo the newest; the list says so, and * moves to the older one.
    assert cli.main(["undo"]) == 0
    capsys.readouterr()
    assert cli.main(["undo", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == newer and "undone" in lines[1].split()
    assert lines[2].split()[:2] == ["*", older]


def test_undo_says_what_it_puts_back_before_it_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = trash_batch(
        tmp_path, "a.jpg", ["photodup", "apply", "report.json", "--yes"], monkeypatch
    )
    victim = tmp_path / "copies" / "a.jpg"
    assert not victim.exists()

    assert cli.main(["undo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        rf"batch {batch}: putting back 1 file \(500 B\) moved to the trash on "
        r"\d{4}-\d\d-\d\d \d\d:\d\d by `photodup apply report\.json --yes`",
        out[0],
    ), out[0]
    assert out[1] == f"restored {str(victim)!r}"
    assert read(victim) == b"a.jpg" * 100  # the disk: back in place, whole

    # Nothing left to put back: said plainly, exit 2 as before.
    assert cli.main(["undo"]) == cli.EXIT_USAGE
    assert "nothing to undo" in capsys.readouterr().err


def test_undo_of_a_named_batch_that_does_not_exist_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["undo", "20200101-000000-000000000-abcd"]) == cli.EXIT_USAGE
    assert "undo --list" in capsys.readouterr().err
    assert cli.main(["undo", "--list"]) == 0
    assert "no batches" in capsys.readouterr().out
    assert not os.path.exists(Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "files")
