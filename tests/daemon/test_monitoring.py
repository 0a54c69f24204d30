"""Monitoring a real photodupd: the request log line, the history in ``status --json``, the
``metrics`` text and the ``status --watch`` view in a real terminal (a pty)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from photodupd import probe, protocol
from photodupd.client import SyncClient
from tests.daemon.daemon_proc import ROOT, DaemonProcess
from tests.unit.test_metrics_and_watch import parse

pytestmark = pytest.mark.timeout(180)

CLIENT = "monitor-test/1.0"


#: Folders short_dir() made (sockets need short paths, so not under tmp_path).
_MADE: list[Path] = []


def short_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="pdm-"))
    path.chmod(0o700)
    _MADE.append(path)
    return path


@pytest.fixture(autouse=True, scope="module")
def _remove_short_dirs() -> Iterator[None]:
    yield
    while _MADE:
        shutil.rmtree(_MADE.pop(), ignore_errors=True)


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    folder = short_dir()
    proc = DaemonProcess(folder / "rt" / "d.sock", folder / "state", "--model", "builtin")
    try:
        proc.wait_hello()
        proc.wait_state("ready")
        yield proc
    finally:
        proc.terminate()


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "photodup_tui.ctl", "--socket", str(daemon.socket_path), *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def log_lines(daemon: DaemonProcess, needle: str, count: int = 1) -> list[str]:
    """The daemon's request lines holding ``needle``, once ``count`` of them are written (the
    line is logged just after the reply is sent, so it may trail the reply a little)."""
    deadline = time.monotonic() + 30
    while True:
        found = [line for line in daemon.output().splitlines() if needle in line]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def fields(line: str) -> dict[str, str]:
    _, _, rest = line.partition(" request ")
    return dict(field.split("=", 1) for field in rest.split())


def test_each_request_is_one_log_line_with_its_fields(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.jpg"
    with SyncClient(daemon.socket_path, timeout=60, client_name=CLIENT) as client:
        client.connect()
        reply = client.call(
            protocol.FEATURES, items=[{"data": probe.probe_photo()}, {"path": str(missing)}]
        )
        client.call(protocol.STATUS)
        with pytest.raises(protocol.RemoteError):
            client.call(protocol.LOAD, model="no-such-model")
    assert [item["ok"] for item in reply["items"]] == [True, False]
    [line] = log_lines(daemon, "op=features items=2 errors=1 ")
    assert "INFO request op=features" in line
    logged = fields(line)
    assert logged["client"] == CLIENT and int(logged["conn"]) > 0
    assert float(logged["wait_ms"]) == pytest.approx(reply["timing"]["wait_ms"], abs=0.06)
    assert float(logged["model_ms"]) == pytest.approx(reply["timing"]["model_ms"], abs=0.06)
    assert float(logged["total_ms"]) > 0
    [refused] = log_lines(daemon, "op=load")
    assert fields(refused)["error"] == "model_unavailable"
    # status is what the watch view sends every second: DEBUG, not in an INFO log.
    assert log_lines(daemon, "op=status", count=0) == []


def test_status_json_carries_the_history_and_latency(daemon: DaemonProcess) -> None:
    with SyncClient(daemon.socket_path, timeout=60) as client:
        client.connect()
        before = client.call(protocol.STATUS)["features_latency"]["total_count"]
        client.call(protocol.FEATURES, items=[{"data": probe.probe_photo()}] * 3)
    done = ctl(daemon, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["features_latency"]["total_count"] == before + 1
    latest = status["history"][-1]
    assert latest["images"] >= 3 and latest["requests"] >= 1
    assert latest["rss"] is not None and latest["rss"] > 0
    assert latest["p50_ms"] is not None and latest["p99_ms"] >= latest["p50_ms"]


def test_metrics_print_prometheus_text(daemon: DaemonProcess) -> None:
    done = ctl(daemon, "metrics")
    assert done.returncode == 0, done.stderr
    types, values = parse(done.stdout)
    assert values["photodupd_up"] == 1
    assert values["photodupd_images_served_total"] >= 1
    assert types["photodupd_features_duration_seconds"] == "summary"


def test_metrics_of_no_daemon_say_it_is_down() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "photodup_tui.ctl",
            "--socket",
            str(short_dir() / "x.sock"),
            "metrics",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert parse(done.stdout)[1] == {"photodupd_up": 0.0}


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {needle!r} in {bytes(seen)[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                chunk = b""
            assert chunk, f"the terminal closed before {needle!r}"
            seen += chunk


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_watch_draws_in_a_terminal_and_quits_on_a_key(daemon: DaemonProcess, key: bytes) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: photodup-ctl on the pty, as a user runs it, 100 columns wide
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            os.environ["PYTHONPATH"] = str(ROOT)
            os.execv(
                sys.executable,
                [
                    sys.executable,
                    "-m",
                    "photodup_tui.ctl",
                    "--socket",
                    str(daemon.socket_path),
                    "status",
                    "--watch",
                    "--interval",
                    "0.2",
                ],
            )
        finally:
            os._exit(127)  # never back into pytest in the child
    seen = bytearray()
    try:
        read_until(fd, b"q or Ctrl-C: quit", seen)
        frame = bytes(seen).decode(errors="replace")
        assert "\x1b[?1049h" in frame  # the alternate screen
        assert "builtin:efficientnet_lite0/imagenet" in frame and "images/s" in frame
        read_until(fd, b"q or Ctrl-C: quit", seen)  # a second frame: it redraws
        os.write(fd, key)
        read_until(fd, b"\x1b[?1049l", seen)  # the screen is given back
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_warning_level_quiets_the_request_log(tmp_path: Path) -> None:
    folder = short_dir()
    proc = DaemonProcess(
        folder / "rt" / "d.sock", folder / "state", "--model", "builtin", "--log-level", "WARNING"
    )
    try:
        proc.wait_hello()
        proc.wait_state("ready")
        with SyncClient(proc.socket_path, timeout=60) as client:
            client.connect()
            client.call(protocol.FEATURES, items=[{"data": probe.probe_photo()}])
            # Its history still counts what the log does not show.
            assert client.call(protocol.STATUS)["features_latency"]["total_count"] == 1
    finally:
        proc.terminate()
    assert " request " not in proc.output()
