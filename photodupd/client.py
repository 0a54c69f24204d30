"""Clients of photodupd (torch-free).

:class:`AsyncClient` pipelines many requests on one connection (pending
requests keyed by id), reconnects with capped backoff when the daemon goes
away, and retries only idempotent requests.  :class:`SyncClient` is the small
blocking client used by ``photodup-ctl`` and by the daemon's own stale-socket
probe, where an event loop would only add start-up time.

Both speak over an :class:`~photodupd.transport.Endpoint`: the local daemon's Unix socket
by default, or a program's stdin/stdout (``ssh HOST photodup-ctl bridge``, an inline
child).  When such a program fails, the error is the endpoint's one-line reason
(:class:`~photodupd.transport.LinkFailed`), not a bare "connection lost".

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

from photodupd import __version__, protocol
from photodupd.protocol import ErrorCode, ProtocolError, RemoteError
from photodupd.transport import Endpoint, Link, LinkFailed, UnixEndpoint

ProgressCallback = Callable[[dict[str, Any]], None]
#: Read-ahead of the async client's stream: big frames are still read whole (readexactly).
STREAM_LIMIT = 64 * 1024
R = TypeVar("R")


class DaemonUnavailable(Exception):
    """No daemon answers at the socket (not running, or it died and did not come back).

    ``permanent``: trying again cannot help (see :class:`~photodupd.transport.LinkFailed`)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class ConnectionLost(Exception):
    """The connection dropped while a request was in flight."""


class _NotAFrame(ConnectionLost):
    """The far side sent bytes that are not a frame header (kept for the error message)."""

    def __init__(self, header: bytes, reason: ProtocolError) -> None:
        super().__init__(f"not a photodup frame: {reason.message}")
        self.header = header


def _frame_length(header: bytes) -> int:
    try:
        return protocol.frame_length(header)
    except ProtocolError as exc:
        raise _NotAFrame(header, exc) from None


def _endpoint(socket_path: Path | str | None, endpoint: Endpoint | None) -> Endpoint:
    if endpoint is not None and socket_path is not None:
        raise ValueError("give a socket path or an endpoint, not both")
    return endpoint if endpoint is not None else UnixEndpoint(socket_path)


def _hello_failure(link: Link, endpoint: Endpoint, exc: BaseException) -> Exception | None:
    """The error to raise when hello failed on ``link``: the endpoint's own reason when it
    has one (a command that exited), a clear word for another protocol version; None to
    raise ``exc`` as it is (the Unix socket: callers know its errors)."""
    if isinstance(exc, RemoteError) and exc.code == ErrorCode.UNSUPPORTED_PROTOCOL:
        if isinstance(endpoint, UnixEndpoint):
            return None
        return LinkFailed(
            f"{endpoint.label} speaks another protocol version ({exc.message})", permanent=True
        )
    if isinstance(exc, RemoteError):
        return None
    garbage = exc.header if isinstance(exc, _NotAFrame) else None
    return link.failure(garbage)


# ----------------------------------------------------------------------------------- sync


class SyncClient:
    """One blocking connection; one request at a time."""

    def __init__(
        self,
        socket_path: Path | str | None = None,
        *,
        endpoint: Endpoint | None = None,
        timeout: float | None = 10.0,
        client_name: str = f"photodup-ctl/{__version__}",
    ) -> None:
        self.endpoint = _endpoint(socket_path, endpoint)
        #: The Unix socket's path; None for other endpoints.
        self.path = self.endpoint.path if isinstance(self.endpoint, UnixEndpoint) else None
        self.timeout = timeout
        self.client_name = client_name
        self.welcome: protocol.Welcome | None = None
        self._sock: socket.socket | None = None
        self._link: Link | None = None
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
        link = self.endpoint.open(self.timeout)
        self._link, self._sock = link, link.sock
        first = self.endpoint.hello_timeout
        if first is not None and self.timeout is not None:
            link.sock.settimeout(max(first, self.timeout))
        try:
            welcome = self.call(protocol.HELLO, **protocol.hello(self.client_name))
        except (ConnectionLost, OSError, RemoteError) as exc:
            failure = _hello_failure(link, self.endpoint, exc)
            self.close()
            if failure is not None:
                raise failure from None
            raise
        link.sock.settimeout(self.timeout)
        self.welcome = welcome
        return welcome

    def set_timeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        if self._sock is not None:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        link, self._link, self._sock = self._link, None, None
        if link is not None:
            link.close()

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
        length = _frame_length(self._recv_exactly(protocol.HEADER.size))
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


class _NobodyThere(Exception):
    """Nothing listens at the Unix socket (absent, or refused): photodupd may be started."""


class AsyncClient:
    """Pipelined requests over one connection, with reconnect and idempotent retry."""

    def __init__(
        self,
        socket_path: Path | str | None = None,
        *,
        endpoint: Endpoint | None = None,
        client_name: str = f"photodup/{__version__}",
        connect_timeout: float = 5.0,
        retry_for: float = 30.0,
        max_backoff: float = 2.0,
        start_daemon: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``start_daemon``: called (then the connection tried once more) when nobody
        answers at the Unix socket, e.g. after photodupd's idle exit when no service manager
        holds the socket; it should start photodupd and return once it answers."""
        self.endpoint = _endpoint(socket_path, endpoint)
        #: The Unix socket's path; None for other endpoints.
        self.path = self.endpoint.path if isinstance(self.endpoint, UnixEndpoint) else None
        self.start_daemon = start_daemon
        self.client_name = client_name
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for
        self.max_backoff = max_backoff
        self.welcome: protocol.Welcome | None = None
        self.reconnects = 0  # connections opened after the first one
        self.bytes_sent = 0  # frames written, every connection
        self._opened = False
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], ProgressCallback | None]] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._greeted: asyncio.StreamWriter | None = None  # the writer whose hello was answered
        self._read_task: asyncio.Task[None] | None = None
        self._link: Link | None = None
        self._garbage: bytes | None = None  # what came where a frame header was due
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
        """Open and greeted: requests may go out on it.  A link whose hello is still in
        flight is not (the daemon refuses anything before hello, and a request written then
        would go first: the hello is sent from a task of its own when it has a deadline)."""
        writer = self._writer
        return writer is not None and not writer.is_closing() and self._greeted is writer

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
                reader, writer, link = await self._open(may_start=self.start_daemon is not None)
            except _NobodyThere:
                assert self.start_daemon is not None
                try:
                    # Under the connect lock: concurrent requests start one daemon, not several.
                    await self.start_daemon()
                except Exception as start_error:  # whatever the hook raises: it could not
                    raise DaemonUnavailable(
                        f"no {self.endpoint.label}, and it could not be started: {start_error}"
                    ) from None
                reader, writer, link = await self._open(may_start=False)
            if self._opened:
                self.reconnects += 1
            self._opened = True
            self._reader, self._writer, self._link = reader, writer, link
            self._garbage = None
            self._read_task = asyncio.create_task(self._read_loop(reader, writer))
            try:
                welcome = await asyncio.wait_for(
                    self._send(protocol.HELLO.name, protocol.hello(self.client_name), None),
                    self.endpoint.hello_timeout,
                )
            except (ConnectionLost, OSError, TimeoutError, RemoteError) as exc:
                await self._hello_failed(link, exc)
                raise  # (not reached: _hello_failed raises)
            self.welcome = cast(protocol.Welcome, welcome)
            self._greeted = writer
            return self.welcome

    async def _open(
        self, *, may_start: bool = False
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Link | None]:
        """A new connection; ``_NobodyThere`` (only with ``may_start``) when nothing listens
        at the Unix socket, so the caller can start photodupd and try once more."""
        label = self.endpoint.label
        try:
            if isinstance(self.endpoint, UnixEndpoint):
                # asyncio's own connect: never blocks the loop, even on a full backlog.
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(os.fspath(self.endpoint.path), limit=STREAM_LIMIT),
                    self.connect_timeout,
                )
                return reader, writer, None
            link = await asyncio.to_thread(self.endpoint.open, None)
        except LinkFailed as exc:
            raise DaemonUnavailable(str(exc), permanent=exc.permanent) from None
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if may_start and isinstance(self.endpoint, UnixEndpoint):
                raise _NobodyThere from None
            raise DaemonUnavailable(f"no {label}: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise DaemonUnavailable(f"no {label}: {exc}") from None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=link.sock, limit=STREAM_LIMIT)
        except BaseException:
            await asyncio.to_thread(link.close)
            raise
        return reader, writer, link

    async def _hello_failed(self, link: Link | None, exc: BaseException) -> None:
        """Raise what a failed hello means: the link's own reason when it has one."""
        await self._drop_connection(ConnectionLost("hello failed"), close_link=False)
        self._link = None
        failure: Exception | None = None
        if link is not None:
            if isinstance(exc, TimeoutError):
                await asyncio.to_thread(link.close)  # hung: ended first, then asked why
            elif self._garbage:
                exc = _NotAFrame(self._garbage, ProtocolError(ErrorCode.BAD_FRAME, "garbage"))
            failure = await asyncio.to_thread(_hello_failure, link, self.endpoint, exc)
            await asyncio.to_thread(link.close)
        if isinstance(failure, LinkFailed):
            raise DaemonUnavailable(str(failure), permanent=failure.permanent) from None
        if isinstance(exc, RemoteError):
            raise exc
        if isinstance(exc, TimeoutError):
            raise DaemonUnavailable(f"{self.endpoint.label} did not answer hello in time") from None
        raise DaemonUnavailable(f"{self.endpoint.label} did not answer hello: {exc}") from None

    async def close(self) -> None:
        self._closed = True
        await self._drop_connection(ConnectionLost("client closed"))

    async def _drop_connection(self, reason: Exception, *, close_link: bool = True) -> None:
        writer, task, link = self._writer, self._read_task, self._link
        self._writer = self._reader = None
        self._read_task = None
        if close_link:
            self._link = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._fail_pending(reason)
        if close_link and link is not None:
            await asyncio.to_thread(link.close)  # a command's process: ended and reaped

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
                body = await reader.readexactly(_frame_length(header))
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
            ConnectionLost,
            protocol.ProtocolError,
            OSError,
        ) as exc:
            if isinstance(exc, _NotAFrame):
                self._garbage = exc.header
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
                self.bytes_sent += len(frame)
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
                permanent = isinstance(exc, DaemonUnavailable) and exc.permanent
                if (
                    permanent
                    or self._closed
                    or op not in protocol.IDEMPOTENT_OPS
                    or time.monotonic() > deadline
                ):
                    raise DaemonUnavailable(str(exc), permanent=permanent) from None
            except RemoteError as exc:
                if not exc.retryable or time.monotonic() > deadline:
                    raise
            attempt += 1
            delay = min(self.max_backoff, 0.05 * 2 ** min(attempt, 10))
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def features(
        self, items: list[dict[str, Any]], *, thumbs: bool = False
    ) -> protocol.Features:
        """``thumbs``: ask for each file's pixel-check thumbnail too (``ItemOk.thumb``)."""
        if thumbs:
            return await self.call(protocol.FEATURES, items=items, thumbs=True)
        return await self.call(protocol.FEATURES, items=items)

    async def status(self) -> protocol.Status:
        return await self.call(protocol.STATUS)


def _as_exception(document: dict[str, Any]) -> Exception:
    try:
        _result_of(document)
    except RemoteError as exc:
        return exc
    return ConnectionLost("unexpected reply")
