"""Two daemons racing for one stale socket: exactly one listener survives (rule 17)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from photodupd.client import SyncClient
from tests.daemon.daemon_proc import ROOT, DaemonProcess

# The real bind path (sockets.bind_listener) and the real server, without the
# model: the race is about the socket, and this keeps 20 rounds fast.
LIGHT_DAEMON = """
import asyncio, sys
from pathlib import Path
from photodupd import sockets
from photodupd.config import DaemonConfig
from photodupd.server import Server
from tests.daemon.stub_service import StubService
try:
    listener = sockets.bind_listener(Path(sys.argv[1]))
except sockets.AlreadyRunning as exc:
    print("already", exc, flush=True)
    sys.exit(1)
async def main():
    server = Server(DaemonConfig(), StubService())
    await server.start(listener.sock)
    print("listening", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def make_stale_socket(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # bound, never unlinked: what a kill -9 leaves behind
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.mark.parametrize("round_", range(20))
def test_simultaneous_starts_over_a_stale_socket_leave_one_listener(round_: int) -> None:
    path = Path(tempfile.mkdtemp(prefix="pdr-")) / "rt" / "d.sock"
    make_stale_socket(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LIGHT_DAEMON, str(path)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    try:
        first_lines = [p.stdout.readline().decode().split()[0] for p in procs if p.stdout]
        assert sorted(first_lines) == ["already", "listening"]
        winner = procs[first_lines.index("listening")]
        loser = procs[first_lines.index("already")]
        assert loser.wait(10) == 1
        with SyncClient(path, timeout=5) as client:
            assert client.connect()["protocol"] == 1
        assert winner.poll() is None
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_real_daemons_started_together_leave_one_listener(tmp_path: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="pdr-")) / "rt" / "d.sock"
    make_stale_socket(path)
    daemons = [DaemonProcess(path, tmp_path / str(i), "--model", "builtin") for i in range(2)]
    try:
        deadline = time.monotonic() + 60
        while all(d.proc.poll() is None for d in daemons) and time.monotonic() < deadline:
            time.sleep(0.05)
        exited = [d for d in daemons if d.proc.poll() is not None]
        assert len(exited) == 1 and exited[0].proc.returncode == 1
        assert "already running" in exited[0].output()
        survivor = next(d for d in daemons if d.proc.poll() is None)
        assert survivor.wait_hello()["protocol"] == 1
    finally:
        for d in daemons:
            d.kill()


def test_daemon_refuses_to_start_in_an_unsafe_runtime_dir(tmp_path: Path) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="pdu-"))
    runtime.chmod(0o777)
    proc = DaemonProcess(runtime / "d.sock", tmp_path, "--model", "builtin")
    assert proc.proc.wait(60) == 3
    assert "0777" in proc.output() and "refusing to start" in proc.output()
    assert not (runtime / "d.sock").exists()
