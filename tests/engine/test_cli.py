"""The headless CLI: exit codes, reports, progress, fallback, apply/undo wiring."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from photodup_tui import cli, scan_session
from photodup_tui.engine.report import load_report
from tests.photos import make_photo, write_jpeg


def distinct(root: Path, count: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        write_jpeg(root / f"p{seed}.jpg", make_photo(100 + seed, (240, 180)))
    return root


def with_duplicate(root: Path) -> Path:
    distinct(root)
    (root / "dup").mkdir()
    shutil.copy2(root / "p0.jpg", root / "dup" / "p0 copy.jpg")
    return root


def test_no_duplicates_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = distinct(tmp_path / "lib")
    assert cli.main(["scan", str(lib), "--no-model"]) == cli.EXIT_NO_DUPLICATES
    out = capsys.readouterr().out
    assert "Scanned 3 photos" in out
    assert "Found 0 groups" in out


def test_a_second_scan_of_an_unchanged_library_says_its_grouping_was_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = with_duplicate(tmp_path / "lib")
    assert cli.main(["scan", str(lib), "--no-model"]) == cli.EXIT_DUPLICATES
    assert "grouping reused" not in capsys.readouterr().out
    assert cli.main(["scan", str(lib), "--no-model"]) == cli.EXIT_DUPLICATES
    out = capsys.readouterr().out
    assert "Found 1 group: 1 exact, 0 near, 0 similar (nothing changed since the last scan" in out


def test_duplicates_exit_1_and_the_json_report_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = with_duplicate(tmp_path / "lib")
    target = tmp_path / "report.json"
    csv_target = tmp_path / "report.csv"
    code = cli.main(
        ["scan", str(lib), "--no-model", "--json", str(target), "--csv", str(csv_target)]
    )
    assert code == cli.EXIT_DUPLICATES
    report = load_report(target)  # re-read from disk
    assert report.model == "local:phash-v1"
    assert report.roots == [str(lib)]
    (group,) = report.groups
    assert group.kind.value == "exact"
    assert {m.photo.path: m.action.value for m in group.members} == {
        str(lib / "p0.jpg"): "keep",
        str(lib / "dup" / "p0 copy.jpg"): "delete",
    }
    assert csv_target.read_text().count("\n") == 3
    out = capsys.readouterr().out
    assert "DELETE " + str(lib / "dup" / "p0 copy.jpg") in out
    assert f"photodup apply {target} --dry-run" in out


def test_json_to_stdout_moves_the_summary_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = with_duplicate(tmp_path / "lib")
    assert cli.main(["scan", str(lib), "--no-model", "--json", "-"]) == cli.EXIT_DUPLICATES
    captured = capsys.readouterr()
    assert json.loads(captured.out)["groups"][0]["kind"] == "exact"
    assert "Scanned 4 photos" in captured.err


def test_quiet_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lib = with_duplicate(tmp_path / "lib")
    assert cli.main(["scan", str(lib), "--no-model", "--quiet"]) == cli.EXIT_DUPLICATES
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["scan"],
        ["scan", "/definitely/not/here", "--no-model"],
        ["scan", ".", "--no-model", "--threshold", "70"],
        ["scan", ".", "--no-model", "--min-size", "-1"],
        ["scan", ".", "--bogus-flag"],
        ["apply", "report.json"],  # neither --dry-run nor --yes
        ["apply", "report.json", "--dry-run", "--yes"],
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == cli.EXIT_USAGE


def test_a_file_that_is_not_a_photo_is_a_usage_error_not_an_empty_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list")
    assert cli.main(["scan", str(notes), "--no-model"]) == cli.EXIT_USAGE
    assert "notes.txt: not a folder or a photo" in capsys.readouterr().err
    photo = write_jpeg(tmp_path / "one.jpg", make_photo(1, (64, 48)))
    assert cli.main(["scan", str(photo), "--no-model"]) == cli.EXIT_NO_DUPLICATES


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[scan]\nkeep_rules = ["resolution", "astrology"]\n')
    assert (
        cli.main(["scan", str(tmp_path), "--no-model", "--config", str(config)]) == cli.EXIT_USAGE
    )
    assert "astrology" in capsys.readouterr().err


def test_threshold_changes_what_counts_as_near(tmp_path: Path) -> None:
    lib = distinct(tmp_path / "lib")
    assert cli.main(["scan", str(lib), "--no-model", "-q"]) == cli.EXIT_NO_DUPLICATES
    report = tmp_path / "r.json"
    # 64 bits: every pHash is a "near" candidate of every other, but the same-picture
    # pixel check still says these are different photos...
    argv = ["scan", str(lib), "--no-model", "-q", "--threshold", "64", "--json", str(report)]
    assert cli.main(argv) == cli.EXIT_NO_DUPLICATES
    # ...and without the check the flag alone decides: it reached the grouping.
    config = tmp_path / "config.toml"
    config.write_text("[scan]\nsame_shot_check = false\n")
    assert cli.main([*argv, "--config", str(config)]) == cli.EXIT_DUPLICATES
    (group,) = load_report(report).groups
    assert group.kind.value == "near"
    assert len(group.members) == 3


def test_daemon_unavailable_falls_back_to_no_model_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: object, **kwargs: object) -> object:
        raise ConnectionRefusedError("photodupd did not answer within 60 s")

    monkeypatch.setattr(scan_session, "DaemonFeatureSource", unavailable)
    lib = with_duplicate(tmp_path / "lib")
    target = tmp_path / "report.json"
    argv = ["scan", str(lib), "--mode", "local", "--json", str(target)]
    assert cli.main(argv) == cli.EXIT_DUPLICATES
    err = capsys.readouterr().err
    assert "photodupd is unavailable (photodupd did not answer within 60 s)" in err
    assert "falling back to --no-model" in err
    assert load_report(target).model == "local:phash-v1"


def test_a_daemon_that_refuses_to_start_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real photodupd, started by the scan, refuses an unsafe runtime dir: the scan falls
    back to --no-model and quotes the daemon's reason, not only its exit status."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    runtime.chmod(0o755)
    monkeypatch.setenv("PHOTODUP_RUNTIME_DIR", str(runtime))
    lib = with_duplicate(tmp_path / "lib")
    assert cli.main(["scan", str(lib), "-q", "--mode", "local"]) == cli.EXIT_DUPLICATES
    err = capsys.readouterr().err
    assert "photodupd is unavailable (photodupd exited with status" in err
    assert "it must be 0700" in err
    assert "falling back to --no-model" in err


def test_unwritable_report_exits_3(tmp_path: Path) -> None:
    lib = with_duplicate(tmp_path / "lib")
    target = tmp_path / "no-such-dir" / "report.json"
    assert (
        cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(target)])
        == cli.EXIT_REPORT_FAILED
    )


PROGRAM = "import sys; from photodup_tui.cli import main; sys.exit(main())"


def test_subprocess_progress_is_sparse_lines_when_not_a_tty(tmp_path: Path) -> None:
    lib = with_duplicate(tmp_path / "lib")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, "scan", str(lib), "--no-model"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all("\r" not in line for line in lines)
    assert any(line.startswith("done: found 4") for line in lines)
    assert (
        "hashed" in lines[-1]
        and "cached" in lines[-1]
        and "embedded" in lines[-1]
        and "ETA" in lines[-1]
    )
    assert "Found 1 group: 1 exact" in done.stdout


def test_a_reader_that_goes_away_stops_the_output_quietly(tmp_path: Path) -> None:
    """`photodup scan ... | head -1`: the summary meets a closed pipe; no traceback."""
    lib = with_duplicate(tmp_path / "lib")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    target = tmp_path / "report.json"
    child = subprocess.Popen(
        [sys.executable, "-c", PROGRAM, "scan", str(lib), "--no-model", "--json", str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before the scan prints a line
    errors = child.stderr.read().decode()
    assert child.wait(timeout=120) == cli.EXIT_BROKEN_PIPE, errors
    assert "Traceback" not in errors and "BrokenPipe" not in errors
    assert len(load_report(target).groups) == 1  # the report was written all the same


def test_apply_dry_run_then_yes_then_undo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = with_duplicate(tmp_path / "lib")
    report = tmp_path / "report.json"
    victim = lib / "dup" / "p0 copy.jpg"
    cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(report)])
    assert cli.main(["apply", str(report), "--dry-run"]) == 0
    assert victim.exists()
    assert "would move 1 file to the trash" in capsys.readouterr().out
    assert cli.main(["apply", str(report), "--yes"]) == 0
    assert not victim.exists()
    assert (lib / "p0.jpg").exists()
    # The same report again: its victim is gone, so it is skipped, and the exit code says so.
    assert cli.main(["apply", str(report), "--yes"]) == cli.EXIT_APPLY_SKIPPED
    assert "is gone" in capsys.readouterr().out
    assert cli.main(["undo"]) == 0
    assert victim.exists()
    batch = next(line for line in capsys.readouterr().out.splitlines() if "restored," in line)
    assert cli.main(["undo", batch.split()[1].rstrip(":")]) == 0
    assert "already undone" in capsys.readouterr().out
    assert victim.exists()


def test_display_escapes_control_characters_and_bad_bytes() -> None:
    assert cli.display("/a/new\nline.jpg") == "/a/new\\nline.jpg"
    assert cli.display(os.fsdecode(b"/a/\xff.jpg")) == "/a/\\xff.jpg"
    assert cli.display("/a/café.jpg") == "/a/café.jpg"


@pytest.mark.parametrize("command", ["photodup", "photodup-ctl", "photodupd"])
def test_every_command_prints_the_installed_version(command: str) -> None:
    from importlib.metadata import version

    from photodupd import __version__

    done = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [command, __version__]
    assert version("photodup") == __version__


def test_the_summary_names_unreadable_files_and_counts_in_good_english(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    write_jpeg(lib / "fine.jpg", make_photo(3, (64, 48)))
    (lib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert cli.main(["scan", str(lib), "--no-model"]) == cli.EXIT_NO_DUPLICATES
    out = capsys.readouterr().out
    assert "Scanned 2 photos" in out and "1 error" in out and "1 errors" not in out
    assert f"could not read {lib / 'broken.jpg'}: " in out
    assert "Found 0 groups" in out


def test_a_keeper_chosen_in_the_tui_is_the_keeper_of_the_headless_report_and_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`photodup scan` then `apply` never trash the copy the user chose to keep (with `k`)."""
    from photodup_tui.engine.decisions import Decisions

    lib = with_duplicate(tmp_path / "lib")
    chosen = str(lib / "dup" / "p0 copy.jpg")
    report = tmp_path / "report.json"
    assert cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(report)]) == 1
    (group,) = load_report(report).groups
    assert group.keeper_member.photo.path != chosen  # the rules keep the other copy
    with Decisions() as store:
        store.record_keeper(group, next(m for m in group.members if m.photo.path == chosen))

    assert cli.main(["scan", str(lib), "--no-model", "-q", "--json", str(report)]) == 1
    (group,) = load_report(report).groups
    assert group.keeper_member.photo.path == chosen
    capsys.readouterr()
    status = cli.main(["apply", str(report), "--yes"])
    assert status == 0, capsys.readouterr().out
    assert os.path.exists(chosen) and not (lib / "p0.jpg").exists()
