"""Fixtures for remote mode: a real sshd on 127.0.0.1 and a second photodupd behind it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from photodupd import protocol
from photodupd.client import ConnectionLost, SyncClient
from photodupd.protocol import RemoteError
from tests.remote.sshd import (
    REQUIRE_ENV,
    RemoteSide,
    Sshd,
    SshdUnavailable,
    make_remote_side,
    start_sshd,
)

#: The remote daemon's [daemon] table: the offline model, small pools (2 shared cores).
REMOTE_DAEMON = 'model = "builtin"\ndecode_workers = 1\nthreads = 2\nidle_unload = 0'


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    try:
        server = start_sshd()
    except SshdUnavailable as exc:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"sshd is required here ({REQUIRE_ENV} is set): {exc}")
        pytest.skip(f"no sshd to test remote mode against: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def remote_side() -> Iterator[RemoteSide]:
    """The other computer's photodup directories; its daemon is started by the first bridge
    and stopped (and waited for) at the end."""
    side = make_remote_side()
    side.configure(REMOTE_DAEMON)
    try:
        yield side
    finally:
        stop_daemon(side.socket)
        shutil.rmtree(side.home, ignore_errors=True)


def stop_daemon(socket_path: Path, timeout: float = 60.0) -> None:
    """Ask the daemon at ``socket_path`` to stop and wait until nothing answers there."""
    try:
        with SyncClient(socket_path, timeout=5) as client:
            client.connect()
            client.call(protocol.SHUTDOWN)
    except (OSError, ConnectionLost):
        return
    except RemoteError as exc:  # already stopping (its idle exit): wait for it all the same
        if exc.code != "shutting_down":
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with SyncClient(socket_path, timeout=2) as client:
                client.connect()
        except (OSError, ConnectionLost):
            return
        except RemoteError as exc:  # still draining: it answers hello with shutting_down
            if exc.code != "shutting_down":
                raise
        time.sleep(0.05)


def remote_status(side: RemoteSide) -> protocol.Status:
    """What the remote daemon says of itself, asked on its own socket (not over ssh)."""
    with SyncClient(side.socket, timeout=10) as client:
        client.connect()
        return client.call(protocol.STATUS)


def write_local_config(daemon: str) -> Path:
    """This computer's config.toml (the test's own config dir) with this [daemon] table."""
    folder = Path(os.environ["PHOTODUP_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(f"[daemon]\n{daemon}\n")
    return path


def client_config(sshd: Sshd, side: RemoteSide, **changes: str) -> str:
    """The [daemon] table that reaches ``side`` through ``sshd`` (``changes``: keys to set)."""
    values = {
        "ssh_command": sshd.ssh_command(),
        "remote_command": side.command(),
        "remote": sshd.host,
        **changes,
    }
    return "\n".join(f"{key} = {_toml(value)}" for key, value in values.items())


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
