"""Connection slots of a real photodupd (issue 11, hole 9): connections that never say hello,
or say it and then nothing, can neither lock ``photodup-ctl`` out nor hold a slot for good;
and a path that names no file is that item's error, not the request's.

The production daemon (``python -m photodupd.daemon_cli``, the built-in model) with a config
file that shortens the hello deadline; everything else is at its default, notably
``max_connections`` (256), so the red team's 300 silent connections are the attack here.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from photodupd.client import SyncClient
from photodupd.config import DaemonConfig
from photodupd.protocol import ErrorCode
from photodupd.server import CONTROL_SLOTS
from tests.daemon.daemon_proc import ROOT, DaemonProcess, daemon_env
from tests.fuzz import hostile_inputs as hostile
from tests.fuzz.rawclient import RawConnection, split_frames
from tests.fuzz.scripted_daemon import config_text

pytestmark = pytest.mark.timeout(300)

MAX_CONNECTIONS = DaemonConfig().max_connections
SILENT = 300
#: Short so the test is quick, long enough that the first checks run before it passes even
#: on a loaded machine (opening 300 connections takes a fraction of a second).
HELLO_TIMEOUT = 2.0
CONFIG = {"hello_timeout": HELLO_TIMEOUT, "idle_timeout": 120.0, "idle_unload": 0.0}


def start_daemon(base: Path, state: Path) -> DaemonProcess:
    state.mkdir(parents=True, exist_ok=True)
    config_file = state / "config.toml"
    config_file.write_text(config_text(CONFIG))
    return DaemonProcess(
        base / "rt" / "d.sock", state, "--config", str(config_file), "--model", "builtin"
    )


@contextlib.contextmanager
def running_daemon(state: Path) -> Iterator[DaemonProcess]:
    base = Path(tempfile.mkdtemp(prefix="pdc-"))  # socket paths must stay short
    base.chmod(0o700)
    proc = start_daemon(base, state)
    try:
        proc.wait_hello(timeout=120)
        yield proc
    finally:
        proc.terminate()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the tests that leave it as they found it."""
    with running_daemon(tmp_path_factory.mktemp("slots")) as proc:
        yield proc


@pytest.fixture
def own(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon of the test's own (it gets stopped)."""
    with running_daemon(tmp_path / "state") as proc:
        yield proc


def status(daemon: DaemonProcess) -> dict[str, Any]:
    with SyncClient(daemon.socket_path, timeout=30) as client:
        client.connect()
        return dict(client.request("status"))


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "photodup_tui.ctl", "--socket", str(daemon.socket_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=daemon_env(daemon.log.parent),
        cwd=ROOT,
        check=False,
    )


def photo(folder: Path) -> Path:
    path = folder / "photo.jpg"
    path.write_bytes(hostile.good_image())
    return path


def test_silent_connections_neither_lock_out_status_nor_outlast_the_hello_deadline(
    shared: DaemonProcess, tmp_path: Path
) -> None:
    daemon = shared
    silent = [RawConnection(daemon.socket_path, timeout=30) for _ in range(SILENT)]
    try:
        # Every ordinary slot is held by a silent connection, yet status answers at once,
        # from a control slot (the newcomer evicts the oldest silent one there).
        now = status(daemon)
        assert now["connections"] > MAX_CONNECTIONS
        assert 1 <= now["control_connections"] <= CONTROL_SLOTS
        # Each silent connection is told why and closed: hello_required at the deadline,
        # or busy when a newcomer took its control slot.  A read that never ends (today's
        # idle_timeout) fails here with a socket timeout.
        codes = []
        for conn in silent:
            (reply,) = split_frames(conn.read_until_closed())
            codes.append(reply["error"]["code"])
        assert set(codes) <= {ErrorCode.HELLO_REQUIRED, ErrorCode.BUSY}
        assert codes.count(ErrorCode.HELLO_REQUIRED) >= MAX_CONNECTIONS
    finally:
        for conn in silent:
            conn.close()
    # The slots are free again: a normal features request is served.
    with SyncClient(daemon.socket_path, timeout=120) as client:
        client.connect()
        (item,) = client.request("features", items=[{"path": str(photo(tmp_path))}])["items"]
        assert item["ok"] is True and len(item["embedding"]) > 0
        after = client.request("status")
    assert after["connections"] == 1 and after["hello_timeouts"] >= MAX_CONNECTIONS


def test_photodup_ctl_status_and_stop_get_through_when_every_slot_is_held(
    own: DaemonProcess,
) -> None:
    """300 clients that said hello and went quiet (idle_timeout is 120 s here): ordinary
    slots and control slots all held, and still photodup-ctl status and stop work."""
    daemon = own
    quiet = []
    try:
        for _ in range(SILENT):
            conn = RawConnection(daemon.socket_path, timeout=30)
            quiet.append(conn)
            with contextlib.suppress(EOFError, OSError):  # refused: all slots are taken
                conn.hello()
        shown = ctl(daemon, "status", "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["connections"] > MAX_CONNECTIONS
        stopped = ctl(daemon, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert daemon.proc.wait(60) == 0, daemon.output()[-3000:]
    finally:
        for conn in quiet:
            conn.close()


def test_empty_and_nul_paths_are_per_item_errors(shared: DaemonProcess, tmp_path: Path) -> None:
    daemon = shared
    good = str(photo(tmp_path))
    with SyncClient(daemon.socket_path, timeout=120) as client:
        client.connect()
        reply = client.request("features", items=[{"path": good}, {"path": ""}, {"path": "a\0b"}])
    first, empty, nul = reply["items"]
    assert first["ok"] is True and len(first["embedding"]) == 4 * reply["model"]["dim"]
    for item in (empty, nul):
        assert item["ok"] is False and item["error"]["code"] == ErrorCode.BAD_PATH
