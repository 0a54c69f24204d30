"""A failed daemon start quotes what that start wrote to the log, never an earlier run's lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from photodup_tui.engine import daemon_launch
from photodup_tui.engine.daemon_launch import DaemonStartFailed, ensure_daemon, log_file

OLD_RUN = "2024-01-01 old run: cannot load clip:ViT-B-32 (this is from yesterday)"


def test_a_failed_start_quotes_only_its_own_log_lines(isolated_dirs: Path) -> None:
    log = log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\n".join([OLD_RUN] * 20) + "\n")
    before = log.stat().st_size

    with pytest.raises(DaemonStartFailed) as failure:
        ensure_daemon(
            isolated_dirs.parent / "d.sock",
            extra_args=["--no-such-option"],  # argparse refuses it and exits 2
            timeout=60,
            use_systemd=False,
        )

    message = str(failure.value)
    assert "exited with status 2" in message
    assert "--no-such-option" in message  # argparse's complaint, from this launch
    assert "old run" not in message
    # The log itself still holds both runs: only the quote is limited to this launch.
    text = log.read_text()
    assert text.count(OLD_RUN) == 20 and len(text.encode()) > before


def test_the_tail_reads_from_the_offset_or_from_the_start_of_a_shrunk_log(
    isolated_dirs: Path,
) -> None:
    log = log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("earlier\n")
    offset = log.stat().st_size
    with log.open("a") as sink:
        sink.write("".join(f"line {n}\n" for n in range(12)))
    assert daemon_launch._log_tail(offset, lines=3) == "line 9\nline 10\nline 11"
    assert daemon_launch._log_tail(log.stat().st_size) == ""  # nothing new: nothing quoted

    log.write_text("after a rotation\n")  # shorter than the remembered offset
    assert daemon_launch._log_tail(offset + 50) == "after a rotation"
    log.unlink()
    assert daemon_launch._log_tail(0) == ""  # no log at all
