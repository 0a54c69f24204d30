"""photodupd's idle exit: the timer, what holds it back, and that nothing in flight is lost.

In-process tests drive :class:`photodupd.server.Server` with a stub service; the end-to-end
ones run real daemons under a small socket activator (tests/daemon/activation.py), the way
systemd restarts photodupd on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import stat
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil
import pytest

from photodupd import protocol, sockets
from photodupd.client import AsyncClient, SyncClient
from photodupd.config import DaemonConfig
from photodupd.server import Server
from tests.daemon.activation import SocketActivator
from tests.daemon.daemon_proc import DaemonProcess
from tests.daemon.stub_service import StubService
from tests.daemon.test_daemon_e2e import short_dir
from tests.photos import make_photo, write_jpeg

pytestmark = pytest.mark.timeout(180)


class Idle:
    """A server on a socket of its own, whose idle exit sets ``exited``."""

    def __init__(self, server: Server, service: StubService, listener: sockets.Listener) -> None:
        self.server, self.service, self.listener = server, service, listener
        self.path = listener.path
        self.exited = asyncio.Event()


async def start_idle(config: DaemonConfig, listener: sockets.Listener) -> Idle:
    service = StubService()
    server = Server(config, service)
    idle = Idle(server, service, listener)
    server.on_idle_exit = idle.exited.set
    await server.start(listener.sock, bound=listener)
    return idle


@pytest.fixture
async def own_socket(isolated_dirs: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start servers on a bound socket; every one is shut down and closed afterwards."""
    started: list[Idle] = []

    async def factory(**overrides: Any) -> Idle:
        config = DaemonConfig(socket=isolated_dirs / "d.sock", **overrides)
        idle = await start_idle(config, sockets.bind_listener(config.socket_path))
        started.append(idle)
        return idle

    yield factory
    for idle in started:
        idle.service.release.set()
        await idle.server.shutdown(drain_timeout=2)
        idle.listener.close()


def blocking_client(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(path))
    return sock


def send(sock: socket.socket, request_id: int, op: str, **fields: Any) -> None:
    sock.sendall(protocol.pack(protocol.request(request_id, op, **fields)))


def receive(sock: socket.socket) -> dict[str, Any]:
    """One reply (blocking: run it in a thread while the server's loop works)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed by the daemon")
            data += chunk
        return data

    return protocol.unpack(exactly(protocol.frame_length(exactly(protocol.HEADER.size))))


class Receiver(threading.Thread):
    """Reads ``count`` replies in the background, so that the test can ``await`` the server
    inline (its first step then runs before the loop looks at any socket)."""

    def __init__(self, sock: socket.socket, count: int) -> None:
        super().__init__(daemon=True)
        self.sock, self.count = sock, count
        self.replies: list[dict[str, Any]] = []
        self.start()

    def run(self) -> None:
        with contextlib.suppress(OSError):
            for _ in range(self.count):
                self.replies.append(receive(self.sock))

    async def result(self) -> list[dict[str, Any]]:
        await asyncio.to_thread(self.join, 30)
        return self.replies


HELLO = protocol.hello("idle-test")
ITEMS = [{"data": b"x"}]


# ---------------------------------------------------------------- the timer (in process)


async def test_status_shows_the_timer_and_control_ops_do_not_restart_it(
    own_socket: Callable[..., Any],
) -> None:
    idle = await own_socket(idle_exit=0.5)
    async with AsyncClient(idle.path, retry_for=0) as client:
        status = await client.status()
        assert 0 <= status["idle_exit_in"] <= 0.5
        # Polling status does not keep the daemon from counting down to its exit ...
        while (await client.status())["idle_exit_in"] > 0:
            assert not idle.exited.is_set()
        # ... but the exit waits for a quiet moment: a client between its hello and its first
        # request is never cut off.
        assert not idle.exited.is_set()
    await asyncio.wait_for(idle.exited.wait(), 30)


async def test_requests_in_flight_stop_the_clock_and_work_restarts_it(
    own_socket: Callable[..., Any],
) -> None:
    idle = await own_socket(idle_exit=300.0)
    idle.service.release.clear()  # features requests stay in flight until released
    async with AsyncClient(idle.path, retry_for=0) as client:
        held = asyncio.ensure_future(client.features(ITEMS))
        while idle.service.started_features == 0:
            await asyncio.sleep(0.01)
        idle.server._last_work -= 1000  # as if the clock had run out long ago
        status = await client.status()
        assert status["idle_exit_in"] == 300.0  # stopped at its full length
        assert not idle.server._idle_exit_due()
        idle.service.release.set()
        await held
        # The end of the work restarted the clock.
        assert 299 < (await client.status())["idle_exit_in"] <= 300


async def test_idle_exit_zero_never_exits(own_socket: Callable[..., Any]) -> None:
    idle = await own_socket(idle_exit=0.0)
    async with AsyncClient(idle.path, retry_for=0) as client:
        assert (await client.status())["idle_exit_in"] is None
    idle.server._last_work -= 10**6
    assert not idle.server._idle_exit_due()


# ---------------------------------------------------------------- racing the exit (in process)


async def test_a_request_read_as_the_idle_exit_begins_is_answered(
    own_socket: Callable[..., Any],
) -> None:
    """A features request already sent when the daemon decides to exit: answered by this
    process (not refused, not dropped), and the path and lock are free for the next one."""
    idle = await own_socket(idle_exit=300.0)
    sock = blocking_client(idle.path)
    send(sock, 0, "hello", **HELLO)
    assert (await asyncio.to_thread(receive, sock))["ok"]
    # The request is in the kernel's buffer, unread, when the exit begins: the server's
    # loop has not run since.
    send(sock, 1, "features", items=ITEMS)
    receiver = Receiver(sock, 1)
    await asyncio.wait_for(idle.server.shutdown(idle=True), 30)
    (reply,) = await receiver.result()
    assert reply["id"] == 1 and reply["ok"], reply
    assert reply["result"]["items"][0]["ok"]
    assert await asyncio.to_thread(sock.recv, 1) == b""  # then closed, being quiet
    sock.close()
    assert not os.path.lexists(idle.path)
    # A new photodupd can bind the path at once (no lock left behind, nothing unlinked later).
    successor = sockets.bind_listener(idle.path)
    try:
        idle.listener.close()
        assert stat.S_ISSOCK(os.lstat(idle.path).st_mode)
    finally:
        successor.close()


async def test_connections_queued_on_our_socket_are_served_not_reset(
    own_socket: Callable[..., Any],
) -> None:
    idle = await own_socket(idle_exit=300.0)
    queued = blocking_client(idle.path)  # in the backlog: the loop has not accepted it
    send(queued, 0, "hello", **HELLO)
    send(queued, 1, "features", items=ITEMS)
    receiver = Receiver(queued, 2)
    await asyncio.wait_for(idle.server.shutdown(idle=True), 30)
    welcome, reply = await receiver.result()
    assert welcome["ok"] and reply["id"] == 1 and reply["ok"], reply
    assert idle.server.stats.connections_total == 1
    queued.close()


async def test_an_inherited_socket_and_its_queue_wait_for_the_next_instance(
    isolated_dirs: Path,
) -> None:
    """The systemd path: the exiting instance leaves the socket listening and what is queued
    on it; a client whose quiet connection was closed retries on the next instance."""
    folder = short_dir()
    path = folder / "activated.sock"
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # systemd's own copy
    held.bind(str(path))
    held.listen(16)
    config = DaemonConfig(socket=folder / "unused.sock", idle_exit=300.0)

    def inherited() -> sockets.Listener:
        sock = socket.socket(fileno=os.dup(held.fileno()))
        sock.setblocking(False)
        return sockets.Listener(sock=sock, path=None, inherited=True)

    first_listener = inherited()
    first = await start_idle(config, first_listener)
    client = AsyncClient(path, retry_for=60)
    second: Idle | None = None
    try:
        await client.connect()
        assert (await client.features(ITEMS))["items"][0]["ok"]
        queued = blocking_client(path)
        send(queued, 0, "hello", **HELLO)
        await first.server.shutdown(idle=True)
        first_listener.close()
        assert path.exists()
        # The quiet connection was closed; the client's next request waits in the backlog
        # (connect succeeds: the socket still listens) until the next instance serves it.
        retried = asyncio.ensure_future(client.features(ITEMS))
        second = await start_idle(config, inherited())
        assert (await asyncio.wait_for(retried, 30))["items"][0]["ok"]
        assert client.reconnects == 1
        assert (await asyncio.to_thread(receive, queued))["ok"]  # queued before the exit
        assert first.server.stats.connections_total == 1  # the client's first connection
        queued.close()
    finally:
        await client.close()
        if second is not None:
            await second.server.shutdown(drain_timeout=2)
            second.listener.close()
        held.close()


# ---------------------------------------------------------------- real daemons


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    return write_jpeg(folder / "photo.jpg", make_photo(21, (640, 480)))


def cosine(a: dict[str, Any], b: dict[str, Any]) -> float:
    x = np.frombuffer(a["items"][0]["embedding"], dtype="<f4")
    y = np.frombuffer(b["items"][0]["embedding"], dtype="<f4")
    return float(x @ y)


def features_and_pid(path: Path, photo: Path) -> tuple[dict[str, Any], int]:
    with SyncClient(path, timeout=120) as client:
        client.connect()
        reply = dict(client.request("features", items=[{"path": str(photo)}]))
        return reply, int(client.request("status")["pid"])


def test_idle_exit_under_socket_activation_and_the_next_connection_starts_a_new_process(
    tmp_path: Path, photo: Path
) -> None:
    folder = short_dir()
    path = folder / "activated.sock"
    activator = SocketActivator(path, tmp_path, "--model", "builtin", "--idle-exit", "1")
    try:
        reply, pid = features_and_pid(path, photo)
        assert reply["items"][0]["ok"]
        first = activator.instances[0]
        assert pid == first.pid
        assert first.wait(120) == 0, activator.output()  # a clean exit: no restart fight
        assert "no requests for 1 s" in activator.output()
        assert stat.S_ISSOCK(os.lstat(path).st_mode), "the socket stays systemd's"
        assert not (tmp_path / "unused").exists(), "the daemon must not bind its own socket"
        again, second_pid = features_and_pid(path, photo)
        assert again["items"][0]["ok"] and again["model"] == reply["model"]
        assert activator.started() == 2 and second_pid == activator.instances[1].pid
        assert cosine(again, reply) > 0.9999
    finally:
        activator.close()


#: photodupd with a pause at the moment it decides to exit: it tells the test (a byte on the
#: first FIFO), then waits until the test has sent its request (a byte on the second).
#: Armed once: the next instance exits, when idle, without asking.
RACING = """
import os, sys
from photodupd import daemon_cli, server
decide = server.Server._idle_exit_due
def paused(self):
    due = decide(self)
    armed = sys.argv[1] + ".armed"
    if due and os.path.exists(armed):
        os.unlink(armed)
        with open(sys.argv[1], "wb") as fifo:
            fifo.write(b"!")
        with open(sys.argv[2], "rb") as fifo:
            fifo.read(1)
    return due
server.Server._idle_exit_due = paused
sys.exit(daemon_cli.main(sys.argv[3:]))
"""


def test_a_features_request_sent_as_the_daemon_decides_to_exit_is_answered(
    tmp_path: Path, photo: Path
) -> None:
    folder = short_dir()
    path = folder / "activated.sock"
    deciding, go = folder / "deciding", folder / "go"
    os.mkfifo(deciding)
    os.mkfifo(go)
    Path(f"{deciding}.armed").touch()
    program = ["-c", RACING, str(deciding), str(go)]
    activator = SocketActivator(
        path, tmp_path, "--model", "builtin", "--idle-exit", "1", program=program
    )

    def wait_for_the_decision() -> None:
        # Non-blocking opens, so that a daemon that never gets there fails the test rather
        # than leaving a thread stuck in open() (a FIFO's open waits for the other end).
        fd = os.open(deciding, os.O_RDONLY | os.O_NONBLOCK)
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            for _ in range(1200):
                if poller.poll(100) and os.read(fd, 1) == b"!":
                    return
            raise AssertionError(f"photodupd never decided to exit:\n{activator.output()}")
        finally:
            os.close(fd)

    def let_it_go() -> None:
        for _ in range(600):
            try:
                fd = os.open(go, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: the daemon has not opened its end yet
                threading.Event().wait(0.05)
                continue
            os.write(fd, b"!")
            os.close(fd)
            return
        raise AssertionError("photodupd never waited for the go")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with AsyncClient(path, retry_for=120) as client:
            first = await client.features([{"path": str(photo)}])
            await asyncio.to_thread(wait_for_the_decision)
            racing = asyncio.ensure_future(client.features([{"path": str(photo)}]))
            # One step of the request's task writes its frame into the socket; then the
            # daemon goes on with its exit.
            await asyncio.sleep(0)
            assert client._pending, "the request was sent"
            await asyncio.to_thread(let_it_go)
            return first, await racing

    try:
        first, raced = asyncio.run(scenario())
        assert raced["items"][0]["ok"], raced
        assert cosine(raced, first) > 0.9999
        assert activator.instances[0].wait(120) == 0, activator.output()
    finally:
        activator.close()


def live_children(pid: int) -> list[psutil.Process]:
    """The daemon's child processes as the OS sees them (zombies are gone already)."""
    alive = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
    return alive


def test_decoders_start_on_first_use_and_stop_with_the_model(tmp_path: Path, photo: Path) -> None:
    sock = short_dir() / "rt" / "d.sock"
    proc = DaemonProcess(sock, tmp_path, "--model", "builtin", "--idle-unload", "1")
    try:
        proc.wait_hello()
        status = proc.wait_state("ready")
        assert live_children(proc.proc.pid) == [] and status["decoder"]["pids"] == []
        reply, _pid = features_and_pid(sock, photo)
        assert reply["items"][0]["ok"]
        assert len(live_children(proc.proc.pid)) == 2
        proc.wait_state("unloaded", timeout=60)
        stopped = threading.Event()
        with SyncClient(sock) as client:
            client.connect()
            for _ in range(600):  # readiness: the pool reports its workers reaped
                if client.request("status")["decoder"]["pids"] == []:
                    stopped.set()
                    break
                stopped.wait(0.05)
        assert stopped.is_set()
        assert live_children(proc.proc.pid) == []
        again, _pid = features_and_pid(sock, photo)
        assert cosine(again, reply) > 0.9999
        assert len(live_children(proc.proc.pid)) == 2
    finally:
        assert proc.terminate() == 0, proc.output()


def test_ctl_status_shows_the_idle_timer() -> None:
    from photodup_tui.ctl import format_status

    assert "idle exit   in 1m 15s unless a request comes" in format_status(
        cast(protocol.Status, {"idle_exit_in": 75.2})
    )
    assert "idle exit   never (idle_exit = 0)" in format_status(
        cast(protocol.Status, {"idle_exit_in": None})
    )
