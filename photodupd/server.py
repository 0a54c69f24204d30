"""The asyncio Unix-socket server of photodupd (torch-free).

It owns connections, framing, the handshake, limits and dispatch of the ops in
:data:`photodupd.protocol.OPS` (one handler each); the work itself is done by an
injected service (``photodupd.inference.InferenceService`` in production), so
this module never imports torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from photodupd import __version__, protocol, rawimage, sockets
from photodupd.config import DaemonConfig
from photodupd.history import MONITORING_OPS, Finished, History, log_line
from photodupd.protocol import CodedError, ErrorCode, ProtocolError, Request

log = logging.getLogger("photodupd.server")

WRITE_TIMEOUT = 30.0
STREAM_LIMIT = 64 * 1024  # a client that stops reading its replies is dropped after this
#: Connections let in beyond ``max_connections`` so that ``photodup-ctl status``/``stop``
#: always get through.  On these only the op table's control ops are served
#: (:data:`protocol.CONTROL_OPS`; anything else is a retryable ``busy`` until an ordinary
#: slot frees, then the connection takes it), they are closed after ``hello_timeout`` of
#: silence even after hello, and a newcomer finding them all taken evicts one with nothing
#: in flight (one still without hello first, else the longest quiet): idle connections hold
#: the reserve only until the next client arrives.
CONTROL_SLOTS = 4
#: An idle exit (``idle_exit``) also waits until no connection was opened and no frame
#: read for this long, so a client between its hello and its first request (photodup-ctl,
#: a scan's launcher and then its feature client) is never cut off.  Control requests
#: (status, ping) hold the exit back only this long; they never restart the idle clock.
EXIT_GRACE = 2.0
#: During an idle exit, how long a quiet connection is watched for a request already on
#: its way before it is closed; one that arrives later meets a closed connection and is
#: retried by the client against the next photodupd.
LAST_LOOK = 0.05


class Service(Protocol):
    """What the server needs from the inference side.  Its failures are
    :class:`~photodupd.protocol.ServiceError`, answered as error replies."""

    def model_info(self) -> protocol.ActiveModel: ...
    def status(self) -> protocol.ServiceStatus: ...
    def models(self) -> list[protocol.ModelRow]: ...
    async def features(
        self, items: list[protocol.FeatureItem], thumbs: bool = False
    ) -> protocol.Features: ...
    async def load(self, name: str, weights: str | None = None) -> protocol.ModelInfo: ...
    async def pull(self, name: str, progress: Callable[[int, int], None]) -> protocol.Pulled: ...
    async def probe(self, item: protocol.FeatureItem) -> protocol.Probed: ...


#: Serves one op: the request in, the op's result out (or a CodedError).
Handler = Callable[["Connection", Request], Awaitable[object]]


@dataclass
class ServerStats:
    started: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    connections_total: int = 0
    rejected_peers: int = 0
    rejected_busy: int = 0
    hello_timeouts: int = 0
    idle_timeouts: int = 0
    requests: int = 0
    request_errors: int = 0
    bad_frames: int = 0


class Connection:
    """One client: its writer, its in-flight request tasks, its handshake state."""

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.tasks: set[asyncio.Task[None]] = set()
        self.greeted = False
        self.control = False  # on a reserved control slot (CONTROL_SLOTS)
        self.write_lock = asyncio.Lock()
        self.closed = False
        self.opened = time.monotonic()
        self.last_active = self.opened  # last frame read or request finished
        self.client: str | None = None  # what its hello called the client (the request log)

    def track(self, task: asyncio.Task[None]) -> None:
        """Count ``task`` as in flight until it ends; its end restarts the idle clock."""
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.last_active = time.monotonic()

    async def send(self, document: dict[str, Any]) -> None:
        if self.closed:
            return
        frame = protocol.pack(document)
        try:
            async with self.write_lock:
                self.writer.write(frame)
                await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT)
        except (ConnectionError, TimeoutError, OSError) as exc:
            # The client vanished or stopped reading: stop serving it.
            log.info("connection %d: dropped while writing (%s)", self.number, type(exc).__name__)
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


class Server:
    """Serve the protocol on a listener until :meth:`shutdown`."""

    def __init__(self, config: DaemonConfig, service: Service) -> None:
        self.config = config
        self.service = service
        self.stats = ServerStats()
        self.history = History()  # every finished request: the request log and status' history
        self._rss_sampled = 0.0
        self.connections: dict[int, Connection] = {}
        self._numbers = iter(range(1, 1 << 62))
        self._server: asyncio.AbstractServer | None = None
        self._listener: socket.socket | None = None
        self._bound: sockets.Listener | None = None
        self._draining = False
        self._idle_exiting = False  # draining for an idle exit: requests read are served
        self._exit_started: asyncio.Future[None] | None = None  # wakes quiet connections
        self._idle_watch: asyncio.Task[None] | None = None
        self._connection_tasks: set[asyncio.Task[Any]] = set()
        self._stopped = asyncio.Event()
        self._own_uid = os.getuid()
        # The idle clock: the last request other than a control op (received or finished),
        # and the last sign of any client at all (a connection or a frame), see EXIT_GRACE.
        self._last_work = time.monotonic()
        self._last_contact = self._last_work
        self._working = 0  # requests in flight other than control ops
        self.socket_path: str | None = None
        self.on_shutdown_request: Callable[[], None] | None = None
        #: Called once when ``idle_exit`` seconds passed without a request (see
        #: :meth:`_idle_exit_due`); the daemon then shuts down with ``idle=True``.
        self.on_idle_exit: Callable[[], None] | None = None
        self._handlers: dict[str, Handler] = {
            protocol.HELLO.name: self._op_hello,
            protocol.PING.name: self._op_ping,
            protocol.STATUS.name: self._op_status,
            protocol.MODELS.name: self._op_models,
            protocol.FEATURES.name: self._op_features,
            protocol.LOAD.name: self._op_load,
            protocol.PULL.name: self._op_pull,
            protocol.SHUTDOWN.name: self._op_shutdown,
            protocol.PROBE.name: self._op_probe,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(
        self, listener: socket.socket, *, bound: sockets.Listener | None = None
    ) -> None:
        """Serve ``listener``.  ``bound``: the :class:`~photodupd.sockets.Listener` it came
        from, so that :meth:`shutdown` can hand its path and lock over to the next photodupd
        at once (and serve what is queued) rather than when this process ends."""
        self.socket_path = str(listener.getsockname()) or None
        self._exit_started = asyncio.get_running_loop().create_future()
        self._bound = bound
        if bound is not None:
            # asyncio closes the socket it serves when it stops; a duplicate keeps ours open
            # so that shutdown can still take the connections queued on it.
            self._listener = listener
            listener = listener.dup()
            listener.setblocking(False)
        self._server = await asyncio.start_unix_server(
            # asyncio re-listens with backlog 100 unless told otherwise; bursts of
            # clients (a scan starting 200 workers) need more.
            self._on_connect,
            sock=listener,
            # Small read-ahead: asyncio buffers up to 2x limit per connection even
            # when nobody reads, so MAX_FRAME here let one client that pipelines
            # without reading park 128 MiB.  readexactly() still reads big frames.
            limit=STREAM_LIMIT,
            backlog=1024,
        )
        if self.config.idle_exit > 0:
            self._idle_watch = asyncio.create_task(self._watch_idle())

    async def serve_connected(self, sock: socket.socket) -> None:
        """Serve one client already connected on ``sock`` until it leaves: the private
        daemon of an inline scan (:mod:`photodupd.inline`), whose one client is its parent.
        Every rule a listener's client meets applies, the peer check included."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)
        await self._on_connect(reader, writer)

    async def shutdown(self, drain_timeout: float | None = None, *, idle: bool = False) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then close everything.

        A socket of our own is unlinked and its lock released first, so a new photodupd can
        start at once; connections already queued on it are still accepted.  An inherited
        socket is left to systemd/launchd: what is queued waits for the next instance.

        ``idle``: an idle exit.  Requests read from open connections are then served rather
        than refused (a client that sent one just as the exit began gets its answer), and
        each connection is closed once it is quiet (see :data:`LAST_LOOK`).
        """
        if self._draining:
            await self._stopped.wait()
            return
        self._draining = True
        self._idle_exiting = idle
        if self._idle_watch is not None and self._idle_watch is not asyncio.current_task():
            self._idle_watch.cancel()
        deadline = time.monotonic() + (
            self.config.drain_timeout if drain_timeout is None else drain_timeout
        )
        if idle and self._exit_started is not None and not self._exit_started.done():
            self._exit_started.set_result(None)  # wakes connections waiting for a request
        await self._stop_accepting()
        while idle and self._connection_tasks and time.monotonic() < deadline:
            # Each connection closes itself once quiet; one accepted just now joins the set
            # when its task first runs, hence the loop.
            await asyncio.wait(
                set(self._connection_tasks), timeout=max(0.0, deadline - time.monotonic())
            )
        in_flight = [t for c in self.connections.values() for t in c.tasks]
        if in_flight:
            left = max(0.0, deadline - time.monotonic())
            log.info("draining %d in-flight request(s), up to %.0f s", len(in_flight), left)
            _done, pending = await asyncio.wait(in_flight, timeout=left)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for conn in list(self.connections.values()):
            conn.close()
        self._stopped.set()

    async def _stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()  # no more accept(); closes asyncio's duplicate (see start)
        bound, listener = self._bound, self._listener
        if bound is None or listener is None:
            return
        if not bound.inherited:
            bound.hand_over()  # nobody new can connect; the next photodupd may bind the path
            for sock in _accept_queued(listener):
                # Connected before the path went away: served, not reset.
                reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)
                self._track_connection(asyncio.ensure_future(self._on_connect(reader, writer)))
            listener.close()

    def _track_connection(self, task: asyncio.Task[Any]) -> None:
        """Count a connection's task until it ends (an idle exit waits for them)."""
        self._connection_tasks.add(task)
        task.add_done_callback(self._connection_tasks.discard)

    # ------------------------------------------------------------------ idle exit

    def idle_exit_in(self) -> float | None:
        """Seconds until an idle exit if no request comes (None: ``idle_exit`` is 0); the
        full ``idle_exit`` while requests are in flight, as the clock restarts after them."""
        if self.config.idle_exit <= 0:
            return None
        if self._working:
            return self.config.idle_exit
        return max(0.0, self._last_work + self.config.idle_exit - time.monotonic())

    def _in_flight(self) -> int:
        return sum(len(c.tasks) for c in self.connections.values())

    def _idle_exit_due(self) -> bool:
        """Time to exit: ``idle_exit`` seconds since the last request (other than control
        ops), nothing in flight, no client contact for :data:`EXIT_GRACE`, and no model
        loading (the first load is work too; a service manager waits for its readiness)."""
        if self._draining or self.idle_exit_in() != 0 or self._in_flight():
            return False
        if time.monotonic() < self._last_contact + EXIT_GRACE:
            return False
        return self.service.model_info().get("state") != protocol.ModelState.LOADING

    async def _watch_idle(self) -> None:
        while not self._draining:
            if self._idle_exit_due():
                log.info(
                    "no requests for %g s: exiting until a client needs us", self.config.idle_exit
                )
                if self.on_idle_exit is not None:
                    self.on_idle_exit()
                return
            left = self.idle_exit_in() or 0.0
            grace = self._last_contact + EXIT_GRACE - time.monotonic()
            # Wake when the clock (or the grace) runs out; a model still loading is looked
            # at again a little later.
            await asyncio.sleep(max(left, grace, 0.25))

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket | None = writer.get_extra_info("socket")
        try:
            uid = sockets.peer_uid(sock) if sock is not None else None
        except OSError:
            uid = None
        if not sockets.peer_allowed(uid, self._own_uid):
            # Rule 16: closed before a single byte is read.
            self.stats.rejected_peers += 1
            log.warning("refused a connection from uid %s", uid)
            writer.close()
            return
        self._last_contact = time.monotonic()
        task = asyncio.current_task()
        if task is not None and task not in self._connection_tasks:
            self._track_connection(task)
        number = next(self._numbers)
        conn = Connection(number, writer)
        if self._draining and not self._idle_exiting:
            await conn.send(
                protocol.error_reply(None, ErrorCode.SHUTTING_DOWN, "photodupd is stopping")
            )
            conn.close()
            return
        admitted, evicted = self._admit(conn)
        for refused in evicted if admitted else [conn]:
            self.stats.rejected_busy += 1
            await refused.send(
                protocol.error_reply(
                    None, ErrorCode.BUSY, "too many connections; try again shortly"
                )
            )
            refused.close()
        if not admitted:
            return
        self.stats.connections_total += 1
        try:
            await self._serve_connection(conn, reader)
        except asyncio.CancelledError:
            # asyncio.run() cancels connection tasks left at exit; that is a close.
            pass
        finally:
            self.connections.pop(number, None)
            for task in list(conn.tasks):
                task.cancel()
            conn.close()

    def _admit(self, conn: Connection) -> tuple[bool, list[Connection]]:
        """Give ``conn`` an ordinary slot, else a control slot (evicting an idle control
        connection when all are taken, see CONTROL_SLOTS); also returns the evicted."""
        controls = [c for c in self.connections.values() if c.control]
        evicted: list[Connection] = []
        if len(self.connections) - len(controls) >= self.config.max_connections:
            if len(controls) >= CONTROL_SLOTS:
                idle = [c for c in controls if not c.tasks]
                if not idle:
                    return False, []
                victim = min(idle, key=lambda c: (c.greeted, c.last_active))
                # Out of the table now, so the count stays exact; its task ends on the close.
                del self.connections[victim.number]
                evicted.append(victim)
            conn.control = True
        self.connections[conn.number] = conn
        return True, evicted

    def _promote(self, conn: Connection) -> bool:
        """Move a control connection to an ordinary slot if one is free."""
        ordinary = sum(1 for c in self.connections.values() if not c.control)
        if ordinary >= self.config.max_connections:
            return False
        conn.control = False
        return True

    def _idle_timeout(self, conn: Connection) -> float:
        # A control connection does one quick thing; a slot of the reserve is not for keeping.
        return self.config.hello_timeout if conn.control else self.config.idle_timeout

    def _silence_allowed(self, conn: Connection) -> float:
        """Seconds from now that ``conn`` may stay silent before it is closed."""
        now = time.monotonic()
        if not conn.greeted:
            return conn.opened + self.config.hello_timeout - now
        if conn.tasks:
            # Never idle while work is in flight; look again this much later (the last
            # task's end restarts the clock from then).
            return self._idle_timeout(conn)
        return conn.last_active + self._idle_timeout(conn) - now

    async def _first_byte(self, conn: Connection, reader: asyncio.StreamReader) -> bytes | None:
        """The first byte of the next frame; None when the client left or stayed silent too
        long after hello.  Before hello, silence past ``hello_timeout`` is a ProtocolError
        (the client is told why, then closed)."""
        read = asyncio.ensure_future(reader.readexactly(1))
        try:
            while not read.done():
                if self._idle_exiting:
                    if await self._request_coming(conn, read):
                        continue
                    break
                allowed = self._silence_allowed(conn)
                if allowed <= 0:
                    break
                wake: set[asyncio.Future[Any]] = {read}
                if self._exit_started is not None and not self._exit_started.done():
                    wake.add(self._exit_started)
                await asyncio.wait(wake, timeout=allowed, return_when=asyncio.FIRST_COMPLETED)
            if read.done():
                return read.result()
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        finally:
            read.cancel()  # not done: timed out, or this task is being cancelled
        if self._idle_exiting:
            log.debug("connection %d: quiet, closed for the idle exit", conn.number)
            return None
        if not conn.greeted:
            raise ProtocolError(ErrorCode.HELLO_REQUIRED, self._no_hello_message())
        self.stats.idle_timeouts += 1
        log.info("connection %d: idle for %.0f s, closing", conn.number, self._idle_timeout(conn))
        return None

    async def _request_coming(self, conn: Connection, read: asyncio.Future[bytes]) -> bool:
        """During an idle exit: should ``conn`` stay open a little longer?  Yes while its
        requests are in flight (their replies go out first), or when a request is arriving
        (bytes in the stream or the kernel's buffer: a request read is a request answered)."""
        if conn.tasks:
            waiting: set[asyncio.Future[Any]] = {read, *conn.tasks}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            return True
        await asyncio.wait({read}, timeout=LAST_LOOK)
        return read.done() or _has_unread(conn.writer)

    def _no_hello_message(self) -> str:
        return f"no hello within {self.config.hello_timeout:g} s; closing"

    async def _read_frame(self, conn: Connection, reader: asyncio.StreamReader) -> bytes | None:
        """Next frame body, or None when the client left or idled out.

        Before hello, the whole of it must arrive within ``hello_timeout`` of connecting.
        After hello, the first byte may take up to ``idle_timeout`` counted from the end of
        the last request (forever while requests are in flight); once a frame has begun, all
        of it must arrive within ``frame_timeout`` so a trickling client cannot hold a slot.
        """
        first = await self._first_byte(conn, reader)
        if first is None:
            return None
        limit, code, message = (
            self.config.frame_timeout,
            ErrorCode.BAD_FRAME,
            "frame not completed in time",
        )
        hello_left = self._silence_allowed(conn)
        if not conn.greeted and hello_left < limit:
            limit, code, message = hello_left, ErrorCode.HELLO_REQUIRED, self._no_hello_message()

        async def rest() -> bytes:
            header = first + await reader.readexactly(protocol.HEADER.size - 1)
            length = protocol.frame_length(header)
            return await reader.readexactly(length)

        try:
            return await asyncio.wait_for(rest(), limit)
        except TimeoutError:
            raise ProtocolError(code, message) from None
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _serve_connection(self, conn: Connection, reader: asyncio.StreamReader) -> None:
        while not conn.closed:
            try:
                body = await self._read_frame(conn, reader)
                if body is None:
                    return
                request = protocol.parse_request(protocol.unpack(body))
            except ProtocolError as exc:
                if exc.code is ErrorCode.HELLO_REQUIRED:  # the hello deadline passed
                    self.stats.hello_timeouts += 1
                    log.debug("connection %d: %s", conn.number, exc.message)
                else:
                    self.stats.bad_frames += 1
                # Frame-level damage: we cannot trust the stream any more.
                await conn.send(protocol.error_reply(None, exc.code, exc.message))
                if exc.code is ErrorCode.BAD_REQUEST:
                    continue
                conn.close()
                return
            self.stats.requests += 1
            conn.last_active = self._last_contact = time.monotonic()
            if not conn.greeted:
                if not await self._handshake(conn, request):
                    conn.close()
                    return
                continue
            if request.op not in protocol.CONTROL_OPS:
                self._last_work = conn.last_active  # control ops never restart the idle clock
            if len(conn.tasks) >= self.config.max_in_flight:
                await self._reply_error(
                    conn,
                    request.id,
                    ErrorCode.TOO_MANY_IN_FLIGHT,
                    f"at most {self.config.max_in_flight} requests in flight per connection",
                )
                continue
            if conn.control and request.op not in protocol.CONTROL_OPS and not self._promote(conn):
                await self._reply_error(
                    conn,
                    request.id,
                    ErrorCode.BUSY,
                    "all connection slots are taken; this one may only ping, status or "
                    "shutdown until one frees",
                )
                continue
            conn.track(asyncio.create_task(self._run(conn, request)))

    async def _handshake(self, conn: Connection, request: Request) -> bool:
        if request.op != protocol.HELLO.name:
            await self._reply_error(conn, request.id, ErrorCode.HELLO_REQUIRED, "send hello first")
            return False
        version = request.fields.get("protocol")
        # type() and not ==: True == 1 and 1.0 == 1 are not protocol 1.
        if type(version) is not int or version != protocol.PROTOCOL_VERSION:
            await self._reply_error(
                conn,
                request.id,
                ErrorCode.UNSUPPORTED_PROTOCOL,
                f"this daemon speaks protocol {protocol.PROTOCOL_VERSION}, the client asked for "
                f"{version!r}; upgrade the older of the two",
            )
            return False
        conn.greeted = True
        client = request.fields.get("client")
        conn.client = client if isinstance(client, str) else None
        await conn.send(protocol.ok_reply(request.id, self._welcome(conn)))
        return True

    def _welcome(self, conn: Connection) -> protocol.Welcome:
        return protocol.welcome_result(
            __version__,
            self.service.model_info(),
            self._idle_timeout(conn),
            decodes_raw=rawimage.available(),
        )

    async def _reply_error(
        self, conn: Connection, request_id: int | None, code: ErrorCode, message: str
    ) -> None:
        self.stats.request_errors += 1
        await conn.send(protocol.error_reply(request_id, code, message))

    # ------------------------------------------------------------------ dispatch

    async def _run(self, conn: Connection, request: Request) -> None:
        started = time.perf_counter()
        outcome: object = "cancelled"  # what _finished records if this never ends
        work = request.op not in protocol.CONTROL_OPS  # status or ping: no work for the clock
        self._working += work
        try:
            outcome = await self._serve_request(conn, request)
        finally:
            if work:
                self._working -= 1
                self._last_work = time.monotonic()  # the idle clock runs from the end of work
            self._finished(conn, request, outcome, time.perf_counter() - started)

    async def _serve_request(self, conn: Connection, request: Request) -> object:
        """Answer one request; returns its result, or the ErrorCode of its error reply."""
        if self._draining and not self._idle_exiting:
            await self._reply_error(
                conn, request.id, ErrorCode.SHUTTING_DOWN, "photodupd is stopping"
            )
            return ErrorCode.SHUTTING_DOWN
        handler = self._handlers.get(request.op)
        if handler is None:
            await self._reply_error(
                conn, request.id, ErrorCode.UNKNOWN_OP, f"unknown op {request.op!r}"
            )
            return ErrorCode.UNKNOWN_OP
        try:
            result = await handler(conn, request)
        except CodedError as exc:
            await self._reply_error(conn, request.id, exc.code, exc.message)
            return exc.code
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: say what, keep serving, never send a traceback
            log.exception("request %s (%s) failed", request.id, request.op)
            await self._reply_error(
                conn, request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"
            )
            return ErrorCode.INTERNAL
        await conn.send(protocol.ok_reply(request.id, result))
        return result

    def _finished(
        self, conn: Connection, request: Request, outcome: object, seconds: float
    ) -> None:
        """The request log's line and the history's count for one finished request."""
        done = finished_request(conn, request, outcome, seconds)
        level = logging.DEBUG if request.op in MONITORING_OPS else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, log_line(done))
        self.history.record(done)
        now = time.monotonic()
        if request.op not in MONITORING_OPS and now - self._rss_sampled >= 1.0:
            self._rss_sampled = now  # at most once a second: a burst of requests pays nothing
            self.history.sample_rss(_rss())

    async def _op_hello(self, conn: Connection, request: Request) -> protocol.Welcome:
        return self._welcome(conn)

    async def _op_ping(self, conn: Connection, request: Request) -> protocol.Pong:
        return {"pong": True, "time": time.time()}

    async def _op_status(self, conn: Connection, request: Request) -> protocol.Status:
        server = self.server_status()
        self.history.sample_rss(server["rss"])
        return {**self.service.status(), **server, **self.history.status()}

    def server_status(self) -> protocol.ServerStatus:
        rss = _rss()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": time.monotonic() - self.stats.started_monotonic,
            "idle_exit_in": self.idle_exit_in(),
            "socket": self.socket_path,
            "connections": len(self.connections),
            "control_connections": sum(1 for c in self.connections.values() if c.control),
            "connections_total": self.stats.connections_total,
            "requests": self.stats.requests,
            "request_errors": self.stats.request_errors,
            "bad_frames": self.stats.bad_frames,
            "rejected_peers": self.stats.rejected_peers,
            "rejected_busy": self.stats.rejected_busy,
            "hello_timeouts": self.stats.hello_timeouts,
            "idle_timeouts": self.stats.idle_timeouts,
            "in_flight_requests": self._in_flight(),
            "rss": rss,
            "draining": self._draining,
        }

    async def _op_models(self, conn: Connection, request: Request) -> protocol.Models:
        return {"models": self.service.models(), "active": self.service.model_info()}

    async def _op_features(self, conn: Connection, request: Request) -> protocol.Features:
        parsed = protocol.parse_feature_items(request.fields)
        thumbs = protocol.parse_thumbs(request.fields)
        items = [item for item in parsed if isinstance(item, protocol.FeatureItem)]
        # Only an opt-in asks for thumbnails: a service that predates them is still called
        # as it expects.
        reply = await (
            self.service.features(items, thumbs=True) if thumbs else self.service.features(items)
        )
        if len(items) == len(parsed):
            return reply
        # Items refused by the parser are answered in their places, the rest as served.
        served = iter(reply["items"])
        reply["items"] = [
            next(served) if isinstance(item, protocol.FeatureItem) else item.reply()
            for item in parsed
        ]
        return reply

    async def _op_load(self, conn: Connection, request: Request) -> protocol.ModelInfo:
        name = request.fields.get("model")
        weights = request.fields.get("weights")
        if not isinstance(name, str) or not name:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'model' must be a model name")
        if weights is not None and not isinstance(weights, str):
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'weights' must be a path")
        return await self.service.load(name, weights)

    async def _op_pull(self, conn: Connection, request: Request) -> protocol.Pulled:
        name = request.fields.get("model")
        if not isinstance(name, str) or not name:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "'model' must be a model name")
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            # May be called from a download thread; send at most ~4 notices a second.
            now = time.monotonic()
            if now - last[0] < 0.25 and done < total:
                return
            last[0] = now
            notice = protocol.progress_notice(request.id, done=done, total=total)
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(conn.send(notice)))

        return await self.service.pull(name, progress)

    async def _op_probe(self, conn: Connection, request: Request) -> protocol.Probed:
        return await self.service.probe(protocol.parse_probe_item(request.fields))

    async def _op_shutdown(self, conn: Connection, request: Request) -> protocol.Stopping:
        if self.on_shutdown_request is not None:
            # After this reply is sent: the shutdown waits for in-flight work, us included.
            asyncio.get_running_loop().call_soon(self.on_shutdown_request)
        return {"stopping": True}


def _rss() -> int | None:
    with contextlib.suppress(Exception):
        import psutil

        return int(psutil.Process().memory_info().rss)
    return None


def finished_request(
    conn: Connection, request: Request, outcome: object, seconds: float
) -> Finished:
    """What the request log says of a request: its result (or error code) read for items,
    failed items and the timing a features reply carries."""
    error = str(outcome) if isinstance(outcome, ErrorCode | str) else None
    items = failed = 0
    wait_ms = model_ms = None
    if error is None and isinstance(outcome, dict) and request.op == protocol.FEATURES.name:
        replies = outcome.get("items")
        if isinstance(replies, list):
            items = len(replies)
            failed = sum(1 for item in replies if not (isinstance(item, dict) and item.get("ok")))
        timing = outcome.get("timing")
        if isinstance(timing, dict):
            wait_ms, model_ms = timing.get("wait_ms"), timing.get("model_ms")
    return Finished(
        op=request.op,
        connection=conn.number,
        client=conn.client,
        total_ms=seconds * 1000.0,
        items=items,
        failed_items=failed,
        error=error,
        wait_ms=wait_ms if isinstance(wait_ms, float | int) else None,
        model_ms=model_ms if isinstance(model_ms, float | int) else None,
    )


def _accept_queued(listener: socket.socket) -> list[socket.socket]:
    """The connections waiting in ``listener``'s backlog, accepted (non-blocking)."""
    accepted: list[socket.socket] = []
    listener.setblocking(False)
    while True:
        try:
            sock, _address = listener.accept()
        except (BlockingIOError, InterruptedError):
            return accepted
        except OSError as exc:  # e.g. out of file descriptors: the rest are reset
            log.warning("could not take a queued connection at exit: %s", exc)
            return accepted
        sock.setblocking(False)
        accepted.append(sock)


def _has_unread(writer: asyncio.StreamWriter) -> bool:
    """True when the kernel holds bytes (or the peer's close) not yet read from this
    connection; poll, not select, so any descriptor number works."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False
