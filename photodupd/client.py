"""Clients of photodupd (torch-free).

:class:`AsyncClient` pipelines many requests on one connection (pending
requests keyed by id), reconnects with capped backoff when the daemon goes
away, and retries only idempotent requests.  :class:`SyncClient` is the small
blocking client used by ``photodup-ctl`` and by the daemon's own stale-socket
probe, where an event loop would only add start-up time.

Both ``call`` an op of :data:`photodupd.protocol.OPS` and return its result typed
with the op's shape; ``request`` is the same with the op's name, untyped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

from photodupd import __version__, paths, protocol
from photodupd.protocol import RemoteError

ProgressCallback = Callable[[dict[str, Any]], None]
R = TypeVar("R")


class DaemonUnavailable(Exception):
    """No daemon answers at the socket (not running, or it died and did not come back)."""


class ConnectionLost(Exception):
    """The connection dropped while a request was in flight."""


def _socket_path(path: Path | str | None) -> Path:
    return Path(path) if path is not None else paths.default_socket_path()


# ----------------------------------------------------------------------------------- sync


class SyncClient:
    """One blocking connection; one request at a time."""

    def __init__(
        self,
        socket_path: Path | str | None = None,
        *,
        timeout: float | None = 10.0,
        client_name: str = f"photodup-ctl/{__version__}",
    ) -> None:
        self.path = _socket_path(socket_path)
        self.timeout = timeout
        self.client_name = client_name
        self.welcome: protocol.Welcome | None = None
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> protocol.Welcome:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.path))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.welcome = welcome = self.call(protocol.HELLO, **protocol.hello(self.client_name))
        return welcome

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _recv_exactly(self, n: int) -> bytes:
        assert self._sock is not None
        chunks = bytearray()
        while len(chunks) < n:
            chunk = self._sock.recv(min(n - len(chunks), 1 << 20))
            if not chunk:
                raise ConnectionLost("the daemon closed the connection")
            chunks += chunk
        return bytes(chunks)

    def read_document(self) -> dict[str, Any]:
        length = protocol.frame_length(self._recv_exactly(protocol.HEADER.size))
        return protocol.unpack(self._recv_exactly(length))

    def call(
        self, op: protocol.Op[R], *, on_progress: ProgressCallback | None = None, **fields: Any
    ) -> R:
        """:meth:`request` ``op``; its result has the op's shape (this package's daemon
        answers in it, and nothing checks it on the way in)."""
        return cast(R, self.request(op.name, on_progress=on_progress, **fields))

    def request(
        self, op: str, *, on_progress: ProgressCallback | None = None, **fields: Any
    ) -> Any:
        if self._sock is None:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        self._sock.sendall(protocol.pack(protocol.request(request_id, op, **fields)))
        while True:
            document = self.read_document()
            if document.get("id") not in (request_id, None):
                continue
            if document.get("op") == "progress":
                if on_progress is not None:
                    on_progress(document)
                continue
            return _result_of(document)


def _result_of(document: dict[str, Any]) -> Any:
    if document.get("ok") is True:
        return document.get("result")
    error = document.get("error") or {}
    raise RemoteError(
        str(error.get("code", "internal")),
        str(error.get("message", "no message")),
        bool(error.get("retryable", False)),
    )


# ---------------------------------------------------------------------------------- async


class AsyncClient:
    """Pipelined requests over one connection, with reconnect and idempotent retry."""

    def __init__(
        self,
        socket_path: Path | str | None = None,
        *,
        client_name: str = f"photodup/{__version__}",
        connect_timeout: float = 5.0,
        retry_for: float = 30.0,
        max_backoff: float = 2.0,
        start_daemon: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``start_daemon``: called (then the connection tried once more) when nobody
        answers at the socket, e.g. after photodupd's idle exit when no service manager
        holds the socket; it should start photodupd and return once it answers."""
        self.path = _socket_path(socket_path)
        self.start_daemon = start_daemon
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for
        self.max_backoff = max_backoff
        self.welcome: protocol.Welcome | None = None
        self.reconnects = 0  # connections opened after the first one
        self._opened = False
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], ProgressCallback | None]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._last_activity = 0.0  # monotonic time of the last request sent or answered

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> protocol.Welcome:
        """Open the connection and shake hands; raises DaemonUnavailable if nobody answers."""
        async with self._connect_lock:
            if self.connected and self.welcome is not None:
                return self.welcome
            if self._writer is not None or self._read_task is not None:
                # The old connection is going (its transport is closing): end its read loop
                # and its requests first, so that nothing of it touches the new one.
                await self._drop_connection(ConnectionLost("connection to photodupd lost"))
            try:
                reader, writer = await self._open()
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if self.start_daemon is None:
                    raise DaemonUnavailable(f"no photodupd at {self.path}: {exc}") from None
                try:
                    # Under the connect lock: concurrent requests start one daemon, not several.
                    await self.start_daemon()
                except Exception as start_error:  # whatever the hook raises: it could not
                    raise DaemonUnavailable(
                        f"no photodupd at {self.path}, and it could not be started: {start_error}"
                    ) from None
                try:
                    reader, writer = await self._open()
                except (OSError, TimeoutError) as again:
                    raise DaemonUnavailable(f"no photodupd at {self.path}: {again}") from None
            except (OSError, TimeoutError) as exc:
                raise DaemonUnavailable(f"no photodupd at {self.path}: {exc}") from None
            if self._opened:
                self.reconnects += 1
            self._opened = True
            self._reader, self._writer = reader, writer
            self._read_task = asyncio.create_task(self._read_loop(reader, writer))
            try:
                welcome = await self._send(
                    protocol.HELLO.name, protocol.hello(self.client_name), None
                )
            except (ConnectionLost, OSError) as exc:
                raise DaemonUnavailable(
                    f"photodupd at {self.path} did not answer hello: {exc}"
                ) from None
            self.welcome = cast(protocol.Welcome, welcome)
            return self.welcome

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_unix_connection(os.fspath(self.path), limit=64 * 1024),
            self.connect_timeout,
        )

    async def close(self) -> None:
        self._closed = True
        await self._drop_connection(ConnectionLost("client closed"))

    async def _drop_connection(self, reason: Exception) -> None:
        writer, task = self._writer, self._read_task
        self._writer = self._reader = None
        self._read_task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._fail_pending(reason)

    def _fail_pending(self, reason: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(reason)

    def _quiet_too_long(self) -> bool:
        """True when the daemon may be about to close this connection as idle: nothing in
        flight for half the ``idle_timeout`` its welcome announced.  A request sent then
        could cross the close, and only idempotent ones are re-sent after a lost connection,
        so the caller reconnects first."""
        idle = self.welcome.get("idle_timeout") if self.welcome is not None else None
        if not isinstance(idle, int | float) or isinstance(idle, bool) or self._pending:
            return False
        return time.monotonic() - self._last_activity >= idle / 2

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(protocol.HEADER.size)
                body = await reader.readexactly(protocol.frame_length(header))
                document = protocol.unpack(body)
                request_id = document.get("id")
                entry = self._pending.get(request_id) if isinstance(request_id, int) else None
                if entry is None:
                    if request_id is None and document.get("ok") is False:
                        # A connection-level error: it names no request, so all fail.
                        self._fail_pending(_as_exception(document))
                    continue
                future, on_progress = entry
                if document.get("op") == "progress":
                    if on_progress is not None:
                        on_progress(document)
                    continue
                del self._pending[request_id]  # type: ignore[arg-type]
                if not future.done():
                    try:
                        future.set_result(_result_of(document))
                    except RemoteError as exc:
                        future.set_exception(exc)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            protocol.ProtocolError,
            OSError,
        ) as exc:
            # The daemon closed (restart, idle timeout) or broke the stream: the next request
            # reconnects.  Closing our end too, or its file descriptor stays open.
            if self._writer is writer:
                self._writer = None
            writer.close()
            self._fail_pending(ConnectionLost(f"connection to photodupd lost: {exc}"))

    async def _send(
        self, op: str, fields: dict[str, Any], on_progress: ProgressCallback | None
    ) -> Any:
        writer = self._writer
        if writer is None:
            raise ConnectionLost("not connected")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (future, on_progress)
        self._last_activity = time.monotonic()
        try:
            frame = protocol.pack(protocol.request(request_id, op, **fields))
            async with self._write_lock:
                writer.write(frame)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                future.exception()  # the read loop failed it too: this error says it already
            raise ConnectionLost(str(exc)) from None
        except BaseException:
            self._pending.pop(request_id, None)
            raise
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)
            self._last_activity = time.monotonic()

    async def call(
        self, op: protocol.Op[R], *, on_progress: ProgressCallback | None = None, **fields: Any
    ) -> R:
        """:meth:`request` ``op``; its result has the op's shape (this package's daemon
        answers in it, and nothing checks it on the way in)."""
        return cast(R, await self.request(op.name, on_progress=on_progress, **fields))

    async def request(
        self, op: str, *, on_progress: ProgressCallback | None = None, **fields: Any
    ) -> Any:
        """Send one request and wait for its result.

        Idempotent ops survive a daemon restart: the connection is re-opened
        with capped exponential backoff (with jitter) and the request re-sent,
        for up to ``retry_for`` seconds.  Retryable errors (``busy``) are
        retried the same way.  Anything else is raised at once.
        """
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            try:
                if self.connected and self._quiet_too_long():
                    await self._drop_connection(ConnectionLost("idle connection replaced"))
                if not self.connected:
                    await self.connect()
                return await self._send(op, fields, on_progress)
            except (ConnectionLost, DaemonUnavailable) as exc:
                if self._closed or op not in protocol.IDEMPOTENT_OPS or time.monotonic() > deadline:
                    raise DaemonUnavailable(str(exc)) from None
            except RemoteError as exc:
                if not exc.retryable or time.monotonic() > deadline:
                    raise
            attempt += 1
            delay = min(self.max_backoff, 0.05 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def features(self, items: list[dict[str, Any]]) -> protocol.Features:
        return await self.call(protocol.FEATURES, items=items)

    async def status(self) -> protocol.Status:
        return await self.call(protocol.STATUS)


def _as_exception(document: dict[str, Any]) -> Exception:
    try:
        _result_of(document)
    except RemoteError as exc:
        return exc
    return ConnectionLost("unexpected reply")
