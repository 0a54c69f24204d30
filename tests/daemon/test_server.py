"""The server's own rules: handshake, frame limits, fairness, peers, drain (rules 15-19)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from photodup_tui.engine.daemon_launch import daemon_decodes_raw
from photodupd import protocol, rawimage, sockets
from photodupd.client import AsyncClient, SyncClient
from photodupd.config import DaemonConfig
from photodupd.protocol import ErrorCode, RemoteError
from photodupd.server import CONTROL_SLOTS, Server
from photodupd.transport import CommandEndpoint, CommandLink, Ended, LinkFailed
from tests.daemon.stub_service import StubService


class Running:
    def __init__(
        self, server: Server, service: StubService, path: Path, listener: sockets.Listener
    ) -> None:
        self.server, self.service, self.path, self.listener = server, service, path, listener


@pytest.fixture
async def running(isolated_dirs: Path) -> AsyncIterator[Running]:
    config = DaemonConfig(
        socket=isolated_dirs / "d.sock", frame_timeout=1.0, idle_timeout=30.0, max_in_flight=4
    )
    listener = sockets.bind_listener(config.socket_path)
    service = StubService()
    server = Server(config, service)
    await server.start(listener.sock)
    yield Running(server, service, config.socket_path, listener)
    service.release.set()
    await server.shutdown(drain_timeout=2)
    listener.close()


async def raw_connection(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def read_doc(reader: asyncio.StreamReader) -> dict:
    header = await asyncio.wait_for(reader.readexactly(4), 5)
    return protocol.unpack(await reader.readexactly(protocol.frame_length(header)))


async def send_doc(writer: asyncio.StreamWriter, doc: dict) -> None:
    writer.write(protocol.pack(doc))
    await writer.drain()


async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict:
    await send_doc(writer, protocol.request(0, "hello", **protocol.hello("test")))
    return await read_doc(reader)


async def assert_closed(reader: asyncio.StreamReader) -> None:
    assert await asyncio.wait_for(reader.read(), 5) == b""


# ---------------------------------------------------------------- binding (rules 15, 17)


async def test_socket_is_0600_in_a_0700_dir(running: Running) -> None:
    st = os.lstat(running.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    dst = os.lstat(running.path.parent)
    assert stat.S_IMODE(dst.st_mode) == 0o700
    assert dst.st_uid == os.getuid()


async def test_second_bind_over_a_live_socket_refuses_and_leaves_it(running: Running) -> None:
    inode = os.lstat(running.path).st_ino
    with pytest.raises(sockets.AlreadyRunning):
        await asyncio.to_thread(sockets.bind_listener, running.path)
    assert os.lstat(running.path).st_ino == inode
    async with AsyncClient(running.path) as client:
        assert (await client.request("ping"))["pong"] is True


def test_live_socket_without_lock_is_probed_not_replaced(isolated_dirs: Path) -> None:
    # A foreign process answering on the path (no lock held by it) is still never unlinked.
    path = isolated_dirs / "live.sock"
    from photodupd import paths

    paths.ensure_private_dir(isolated_dirs)
    code = (
        "import asyncio,sys;"
        "from photodupd.server import Server;from photodupd.config import DaemonConfig;"
        "from tests.daemon.stub_service import StubService;import socket\n"
        "async def main():\n"
        f"  s=socket.socket(socket.AF_UNIX);s.bind({str(path)!r});s.listen();s.setblocking(False)\n"
        "  srv=Server(DaemonConfig(),StubService());await srv.start(s);print('up',flush=True);await asyncio.sleep(60)\n"
        "asyncio.run(main())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        with pytest.raises(sockets.AlreadyRunning):
            sockets.bind_listener(path)
        assert path.exists()
    finally:
        proc.kill()
        proc.wait()
    # The owner died without cleaning up: now the socket is stale and is replaced.
    listener = sockets.bind_listener(path)
    try:
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    finally:
        listener.close()
    assert not path.exists()


def test_refuses_a_runtime_dir_with_wrong_mode(isolated_dirs: Path) -> None:
    isolated_dirs.mkdir(mode=0o755)
    isolated_dirs.chmod(0o755)
    from photodupd import paths

    with pytest.raises(paths.UnsafeRuntimeDir, match="0755"):
        sockets.bind_listener(isolated_dirs / "d.sock")
    assert not (isolated_dirs / "d.sock").exists()


def test_refuses_a_runtime_dir_that_is_a_symlink(isolated_dirs: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    isolated_dirs.symlink_to(target)
    from photodupd import paths

    with pytest.raises(paths.UnsafeRuntimeDir, match="symlink"):
        sockets.bind_listener(isolated_dirs / "d.sock")
    assert list(target.iterdir()) == []


def test_refuses_a_runtime_dir_owned_by_someone_else(isolated_dirs: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by another user")
    isolated_dirs.mkdir(mode=0o700)
    os.chown(isolated_dirs, 65534, 65534)
    from photodupd import paths

    with pytest.raises(paths.UnsafeRuntimeDir, match="owned by uid 65534"):
        sockets.bind_listener(isolated_dirs / "d.sock")


def test_refuses_overlong_socket_paths(tmp_path: Path) -> None:
    from photodupd import paths

    with pytest.raises(paths.UnsafeRuntimeDir, match="longer than"):
        sockets.bind_listener(tmp_path / ("x" * 120) / "d.sock")


def test_stale_regular_file_is_not_replaced(isolated_dirs: Path) -> None:
    from photodupd import paths

    paths.ensure_private_dir(isolated_dirs)
    (isolated_dirs / "d.sock").write_text("precious")
    with pytest.raises(sockets.AlreadyRunning, match="not a socket"):
        sockets.bind_listener(isolated_dirs / "d.sock")
    assert (isolated_dirs / "d.sock").read_text() == "precious"


# ---------------------------------------------------------------- handshake


async def test_handshake_welcome(running: Running) -> None:
    reader, writer = await raw_connection(running.path)
    reply = await hello(reader, writer)
    assert reply["ok"] is True
    welcome = reply["result"]
    assert welcome["protocol"] == protocol.PROTOCOL_VERSION
    assert welcome["model"]["id"] == "stub:none"
    assert welcome["max_frame"] == protocol.MAX_FRAME
    writer.close()


async def test_the_welcome_says_whether_the_decoders_read_raw_files(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients ask the daemon, not their own rawpy: the daemon may run on another computer."""
    for blocked in (False, True):
        if blocked:
            monkeypatch.setitem(sys.modules, "rawpy", None)
        reader, writer = await raw_connection(running.path)
        welcome = (await hello(reader, writer))["result"]
        writer.close()
        assert welcome["decodes_raw"] is rawimage.available()
        told = await asyncio.to_thread(daemon_decodes_raw, running.path)
        assert told is welcome["decodes_raw"]
    assert told is False


async def test_version_mismatch_is_refused_and_closed(running: Running) -> None:
    reader, writer = await raw_connection(running.path)
    await send_doc(writer, protocol.request(0, "hello", protocol=99, client="future"))
    reply = await read_doc(reader)
    assert reply["ok"] is False and reply["error"]["code"] == ErrorCode.UNSUPPORTED_PROTOCOL
    await assert_closed(reader)


async def test_requests_before_hello_are_refused(running: Running) -> None:
    reader, writer = await raw_connection(running.path)
    await send_doc(writer, protocol.request(1, "ping"))
    reply = await read_doc(reader)
    assert reply["error"]["code"] == ErrorCode.HELLO_REQUIRED
    await assert_closed(reader)


async def test_unknown_op_keeps_the_connection(running: Running) -> None:
    async with AsyncClient(running.path) as client:
        with pytest.raises(RemoteError) as err:
            await client.request("frobnicate")
        assert err.value.code == ErrorCode.UNKNOWN_OP
        assert (await client.request("ping"))["pong"]


#: What each op needs besides its name to be served (the stub service serves them all).
OP_FIELDS: dict[str, dict[str, Any]] = {
    "hello": protocol.hello("test"),
    "features": {"items": [{"path": "/p/a.jpg"}]},
    "load": {"model": "builtin"},
    "pull": {"model": "clip:ViT-B-32"},
    "probe": {"data": b"\xff\xd8 an image"},
}


async def test_every_op_in_the_table_is_served(running: Running) -> None:
    """The op table in protocol.py is what the server serves: no op of it is unknown to the
    server or lacks a handler (which would answer ``internal``)."""
    async with AsyncClient(running.path) as client:
        for name in protocol.OPS:
            result = await client.request(name, **OP_FIELDS.get(name, {}))
            assert isinstance(result, dict), name


async def test_paths_that_name_no_file_are_per_item_errors(running: Running) -> None:
    """An empty path or a NUL in one fails that item; the others are served in order."""
    async with AsyncClient(running.path) as client:
        reply = await client.features(
            [{"path": "/p/a.jpg"}, {"path": ""}, {"path": "a\0b"}, {"path": b"/p/\xff.jpg"}]
        )
        assert reply["model"]["id"] == "stub:none"
        items = reply["items"]
        assert items[0] == {"ok": True, "echo": repr("/p/a.jpg")}
        assert items[3] == {"ok": True, "echo": repr(b"/p/\xff.jpg")}
        assert [i["error"]["code"] for i in items[1:3]] == [ErrorCode.BAD_PATH] * 2
        only_bad = await client.features([{"path": ""}, {"data": b""}])
        assert [i["error"]["code"] for i in only_bad["items"]] == ["bad_path", "not_an_image"]
        assert only_bad["model"]["id"] == "stub:none"


async def test_bad_request_fields_keep_the_connection(running: Running) -> None:
    async with AsyncClient(running.path) as client:
        with pytest.raises(RemoteError) as err:
            await client.request("features", items="nope")
        assert err.value.code == ErrorCode.BAD_REQUEST
        assert (await client.request("ping"))["pong"]


# ---------------------------------------------------------------- hostile frames (rule 18)


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (struct.pack(">I", 0xFFFFFFFF), ErrorCode.FRAME_TOO_LARGE),
        (struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1", ErrorCode.BAD_FRAME),
        (struct.pack(">I", 3) + b"\x93\x01\x02", ErrorCode.BAD_FRAME),  # an array, not a map
        (framed(msgpack.packb({"id": 1, "op": msgpack.ExtType(1, b"x")})), ErrorCode.BAD_FRAME),
        (framed(b"\x81\xa1a" + b"\x91" * 100_000 + b"\xc0"), ErrorCode.BAD_FRAME),
    ],
    ids=["4GiB-length", "garbage", "array", "ext-type", "deep-nesting"],
)
async def test_hostile_frame_gets_error_then_close_and_others_keep_being_served(
    running: Running, payload: bytes, code: ErrorCode
) -> None:
    async with AsyncClient(running.path) as bystander:
        reader, writer = await raw_connection(running.path)
        await hello(reader, writer)
        writer.write(payload)
        await writer.drain()
        reply = await read_doc(reader)
        assert reply["ok"] is False and reply["error"]["code"] == code
        await assert_closed(reader)
        assert (await bystander.request("ping"))["pong"] is True
    assert running.server.stats.bad_frames >= 1


async def test_map_of_two_million_int_keys_is_cheap_to_refuse(running: Running) -> None:
    body = b"\xdf" + struct.pack(">I", 2_000_000) + b"\x01\x02" * 2_000_000
    reader, writer = await raw_connection(running.path)
    await hello(reader, writer)
    writer.write(struct.pack(">I", len(body)) + body)
    await writer.drain()
    reply = await read_doc(reader)
    assert reply["error"]["code"] == ErrorCode.BAD_FRAME
    await assert_closed(reader)


async def test_slow_client_is_cut_off_while_others_are_served(running: Running) -> None:
    reader, writer = await raw_connection(running.path)
    await hello(reader, writer)
    frame = protocol.pack(protocol.request(1, "ping"))

    async def trickle() -> None:
        for byte in frame:
            if writer.is_closing():
                return
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.4)

    trickler = asyncio.create_task(trickle())
    async with AsyncClient(running.path) as other:
        for _ in range(5):
            assert (await other.request("ping"))["pong"]
    reply = await read_doc(reader)  # frame_timeout is 1 s in this fixture
    assert reply["error"]["code"] == ErrorCode.BAD_FRAME
    await assert_closed(reader)
    trickler.cancel()


# ---------------------------------------------------------------- fairness (rule 19)


async def test_in_flight_cap_per_connection(running: Running) -> None:
    running.service.release.clear()
    async with AsyncClient(running.path) as client:
        tasks = [
            asyncio.create_task(client.request("features", items=[{"path": f"/x/{i}"}]))
            for i in range(4)
        ]
        while running.service.started_features < 4:
            await asyncio.sleep(0.01)
        client.retry_for = 0  # see the refusal itself, not the retry
        with pytest.raises(RemoteError) as err:
            await client.request("features", items=[{"path": "/x/5"}])
        assert err.value.code == ErrorCode.TOO_MANY_IN_FLIGHT and err.value.retryable
        running.service.release.set()
        results = await asyncio.gather(*tasks)
    assert [r["items"][0]["echo"] for r in results] == [repr(f"/x/{i}") for i in range(4)]


@contextlib.asynccontextmanager
async def serving(isolated_dirs: Path, **settings: Any) -> AsyncIterator[Server]:
    """A server with its own config (``settings`` over the defaults) and the stub service."""
    config = DaemonConfig(socket=isolated_dirs / "c.sock", **settings)
    listener = sockets.bind_listener(config.socket_path)
    server = Server(config, StubService())
    await server.start(listener.sock)
    try:
        yield server
    finally:
        await server.shutdown(1)
        listener.close()


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` (a bound, not a pause)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def sync_status(path: Path) -> dict[str, Any]:
    with SyncClient(path, timeout=5) as client:
        client.connect()
        return dict(client.request("status"))


async def test_beyond_the_connection_cap_control_ops_still_get_through(
    isolated_dirs: Path,
) -> None:
    """Ordinary slots full: a newcomer lands on a control slot where ping/status/shutdown are
    served and anything else is a retryable busy, until an ordinary slot frees and it takes
    it.  Control slots all taken: a newcomer evicts the one quiet longest (busy, closed)."""
    async with serving(isolated_dirs, max_connections=3) as server:
        path = server.config.socket_path
        clients = [AsyncClient(path) for _ in range(3)]
        others = [AsyncClient(path) for _ in range(CONTROL_SLOTS - 1)]
        control = AsyncClient(path, retry_for=0)  # see the refusal itself, not the retry
        for c in [*clients, *others, control]:
            await c.connect()
        status = await control.status()
        assert status["connections"] == 3 + CONTROL_SLOTS
        assert status["control_connections"] == CONTROL_SLOTS
        with pytest.raises(RemoteError) as err:
            await control.features([{"path": "/x"}])
        assert err.value.code == ErrorCode.BUSY and err.value.retryable
        reader, writer = await raw_connection(path)
        assert (await hello(reader, writer))["ok"] is True
        evicted = await others[0].status()  # its connection was taken: it reconnected
        assert evicted["connections"] == 3 + CONTROL_SLOTS and others[0].reconnects == 1
        await clients[0].close()
        await wait_for(
            lambda: sum(not c.control for c in server.connections.values()) == 2, "a slot"
        )
        result = await control.features([{"path": "/x"}])
        assert result["items"][0]["echo"] == repr("/x")
        assert sum(c.control for c in server.connections.values()) == CONTROL_SLOTS - 1
        writer.close()
        for c in [*clients[1:], *others, control]:
            await c.close()


async def test_silent_connections_cannot_lock_out_status(isolated_dirs: Path) -> None:
    """Every slot, control slots included, taken by connections that never say hello: status
    still answers (the newcomer evicts the oldest silent control connection with a busy)."""
    async with serving(isolated_dirs, max_connections=3, hello_timeout=60.0) as server:
        path = server.config.socket_path
        silent = [await raw_connection(path) for _ in range(3 + CONTROL_SLOTS)]
        await wait_for(lambda: len(server.connections) == 3 + CONTROL_SLOTS, "all connections")
        status = await asyncio.to_thread(sync_status, path)
        assert status["connections"] == 3 + CONTROL_SLOTS
        assert status["control_connections"] == CONTROL_SLOTS
        evicted_reader = silent[3][0]  # the oldest on a control slot
        reply = await read_doc(evicted_reader)
        assert reply["error"]["code"] == ErrorCode.BUSY and reply["error"]["retryable"]
        await assert_closed(evicted_reader)
        for _reader, writer in silent:
            writer.close()


@pytest.mark.parametrize("sent", [b"", b"\0\0"], ids=["nothing", "half a header"])
async def test_a_connection_without_hello_is_closed_at_the_hello_deadline(
    isolated_dirs: Path, sent: bytes
) -> None:
    async with serving(isolated_dirs, hello_timeout=0.3, frame_timeout=30.0) as server:
        reader, writer = await raw_connection(server.config.socket_path)
        writer.write(sent)
        reply = await read_doc(reader)
        assert reply["id"] is None and reply["error"]["code"] == ErrorCode.HELLO_REQUIRED
        assert "no hello within 0.3 s" in reply["error"]["message"]
        await assert_closed(reader)
        assert server.stats.hello_timeouts == 1 and not server.connections
        async with AsyncClient(server.config.socket_path) as late:  # others are unaffected
            assert (await late.request("ping"))["pong"]


async def test_an_idle_connection_is_closed_after_its_last_request(isolated_dirs: Path) -> None:
    """The idle clock starts when the last request ends, not when the read began: a client
    that made a request and went quiet is closed too, and photodup's client reconnects."""
    async with serving(isolated_dirs, idle_timeout=0.3) as server:
        client = AsyncClient(server.config.socket_path)
        await client.connect()
        assert (await client.request("ping"))["pong"]
        await wait_for(lambda: not server.connections, "the idle connection to be closed")
        assert server.stats.idle_timeouts == 1
        result = await client.features([{"path": "/after"}])
        assert result["items"][0]["echo"] == repr("/after")
        assert server.stats.connections_total == 2
        await client.close()


async def test_a_request_in_flight_longer_than_the_idle_timeout_keeps_its_connection(
    isolated_dirs: Path,
) -> None:
    async with serving(isolated_dirs, idle_timeout=0.2) as server:
        service = server.service
        assert isinstance(service, StubService)
        service.release.clear()
        async with AsyncClient(server.config.socket_path, retry_for=0) as client:
            pending = asyncio.create_task(client.features([{"path": "/slow"}]))
            await wait_for(lambda: service.started_features == 1, "the request to start")
            await asyncio.sleep(0.6)  # three idle timeouts pass while the request is in flight
            assert len(server.connections) == 1
            service.release.set()
            assert (await pending)["items"][0]["echo"] == repr("/slow")
        assert server.stats.connections_total == 1 and server.stats.idle_timeouts == 0


async def test_the_client_reconnects_before_sending_into_an_idle_close(
    isolated_dirs: Path,
) -> None:
    """A request sent as the daemon closes an idle connection would be lost, and only
    idempotent ops are re-sent; so after half the announced idle timeout the client opens
    a new connection first, and a ``load`` (not idempotent) goes through."""
    async with serving(isolated_dirs, idle_timeout=600.0) as server:
        client = AsyncClient(server.config.socket_path, retry_for=0)
        welcome = await client.connect()
        assert welcome["idle_timeout"] == 600.0
        assert (await client.request("load", model="builtin"))["id"] == "stub:none"
        assert server.stats.connections_total == 1
        client._last_activity -= 301  # quiet for just over half the idle timeout
        assert (await client.request("load", model="builtin"))["id"] == "stub:none"
        assert server.stats.connections_total == 2
        await client.close()


async def test_requests_sent_while_the_client_reconnects_wait_for_its_hello(
    running: Running,
) -> None:
    """After a lost link the first request opens a new one and shakes hands; requests that
    arrive meanwhile (a scan has several in flight) must not go out before the hello: the
    daemon refuses them (``hello_required``, never retried).  Through the real bridge
    (``photodup-ctl bridge``, what ``ssh HOST`` runs), as in remote mode, where it was seen
    with ssh killed mid-scan."""

    def explain(ended: Ended) -> LinkFailed:
        return LinkFailed(f"the bridge ended: {ended.last_line()}")

    bridge = [sys.executable, "-m", "photodup_tui.ctl", "--socket", str(running.path)]
    endpoint = CommandEndpoint([*bridge, "bridge", "--no-start"], label="bridge", explain=explain)
    client = AsyncClient(endpoint=endpoint)
    await client.connect()
    assert isinstance(client._link, CommandLink)
    os.kill(client._link.pid, signal.SIGKILL)  # the link dies under the client (as ssh did)
    for _ in range(1000):  # until the client has seen it go (a bound on a hang)
        if client._writer is None:
            break
        await asyncio.sleep(0.01)
    assert client._writer is None
    first = asyncio.create_task(client.request("ping"))  # it reconnects
    while client._writer is None and not first.done():
        await asyncio.sleep(0)  # (a busy wait: the step after the new link is set is the one)
    # The new link is there; its hello may not be on it yet.  A request started now writes
    # at once if the client counts the link as ready.
    assert not first.done()
    second = await client.request("ping")
    assert second["pong"] and (await first)["pong"]
    assert client.reconnects == 1
    await client.close()


async def test_two_hundred_concurrent_clients(running: Running) -> None:
    async def one(i: int) -> str:
        async with AsyncClient(running.path) as client:
            result = await client.request("features", items=[{"path": f"/p/{i}"}])
            return str(result["items"][0]["echo"])

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert results == [repr(f"/p/{i}") for i in range(200)]
    assert running.server.stats.connections_total >= 200


async def test_client_vanishing_mid_request_does_not_hurt_the_server(running: Running) -> None:
    running.service.release.clear()
    reader, writer = await raw_connection(running.path)
    await hello(reader, writer)
    await send_doc(writer, protocol.request(1, "features", items=[{"path": "/a"}]))
    while running.service.started_features < 1:
        await asyncio.sleep(0.01)
    writer.transport.abort()
    running.service.release.set()
    async with AsyncClient(running.path) as client:
        assert (await client.request("ping"))["pong"]
    while running.server.connections:
        await asyncio.sleep(0.01)


async def test_pipelined_requests_on_one_connection(running: Running) -> None:
    async with AsyncClient(running.path) as client:
        results = await asyncio.gather(*(client.request("ping") for _ in range(50)))
    assert all(r["pong"] for r in results)


async def test_progress_notices_reach_the_client(running: Running) -> None:
    seen: list[int] = []
    async with AsyncClient(running.path) as client:
        result = await client.request(
            "pull", model="x", on_progress=lambda n: seen.append(n["done"])
        )
    assert result == {"path": "/nowhere"}
    assert seen and seen[-1] == 100


# ---------------------------------------------------------------- peers (rule 16)


def test_peer_decision() -> None:
    assert sockets.peer_allowed(1000, 1000)
    assert not sockets.peer_allowed(1001, 1000)
    assert not sockets.peer_allowed(None, 1000)


async def test_peer_uid_is_read_from_the_kernel(running: Running) -> None:
    with socket.socket(socket.AF_UNIX) as a:
        a.connect(str(running.path))
        assert sockets.peer_uid(a) == os.getuid()


@pytest.mark.skipif(
    os.getuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
async def test_other_uid_is_closed_before_a_byte_is_read(isolated_dirs: Path) -> None:
    # A socket anyone may reach, so that only the peer check stands in the way.
    open_dir = Path(os.path.dirname(isolated_dirs)) / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    Path(os.path.dirname(isolated_dirs)).chmod(0o755)
    path = open_dir / "o.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    path.chmod(0o777)
    sock.listen()
    sock.setblocking(False)
    server = Server(DaemonConfig(), StubService())
    await server.start(sock)
    code = (
        "import socket,struct,sys\n"
        f"s=socket.socket(socket.AF_UNIX);s.connect({str(path)!r})\n"
        f"b=bytes.fromhex({protocol.pack(protocol.request(0, 'hello', **protocol.hello('intruder'))).hex()!r})\n"
        "try:\n s.sendall(b)\nexcept OSError: pass\n"
        "try:\n data=s.recv(100)\nexcept ConnectionResetError: data=b''\n"
        "print('closed' if data==b'' else repr(data))\n"
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert out.strip() == b"closed", err.decode()  # closed, not a single byte of welcome
        assert server.stats.rejected_peers == 1
        assert server.stats.requests == 0
    finally:
        await server.shutdown(1)
        sock.close()


# ---------------------------------------------------------------- drain


async def test_shutdown_drains_in_flight_requests(running: Running) -> None:
    running.service.release.clear()
    async with AsyncClient(running.path) as client:
        pending = asyncio.create_task(client.request("features", items=[{"path": "/slow"}]))
        while running.service.started_features < 1:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(running.server.shutdown(drain_timeout=10))
        await asyncio.sleep(0.1)
        assert not stopping.done()
        with pytest.raises(OSError):
            await asyncio.open_unix_connection(str(running.path))
        running.service.release.set()
        result = await pending
        assert result["items"][0]["echo"] == repr("/slow")
        await stopping
    assert running.service.finished_features == 1


async def test_drain_timeout_cancels_stragglers(running: Running) -> None:
    running.service.release.clear()
    client = AsyncClient(running.path, retry_for=0)
    await client.connect()
    pending = asyncio.create_task(client.request("features", items=[{"path": "/stuck"}]))
    while running.service.started_features < 1:
        await asyncio.sleep(0.01)
    await running.server.shutdown(drain_timeout=0.2)
    from photodupd.client import DaemonUnavailable

    with pytest.raises(DaemonUnavailable):
        await asyncio.wait_for(pending, 5)
    await client.close()


async def test_sync_client_against_server(running: Running) -> None:
    def call() -> dict:
        with SyncClient(running.path, timeout=5) as client:
            client.connect()
            return client.request("status")

    status = await asyncio.to_thread(call)
    assert status["pid"] == os.getpid() and status["state"] == "ready"


async def test_config_replace_is_immutable() -> None:
    base = DaemonConfig()
    assert replace(base, threads=1).threads == 1 and base.threads >= 1
