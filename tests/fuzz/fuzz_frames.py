#!/usr/bin/env python3
"""Fuzz photodupd's frame reader and request decoder.

Run as a script it is an atheris (libFuzzer) harness::

    python tests/fuzz/fuzz_frames.py -max_total_time=600 /tmp/frames-corpus

An empty corpus directory is first filled with seeds (well-formed requests and
the hostile frames of ``hostile_inputs``).  Each input goes two ways:

* :func:`check_frame_bytes`: the pure path, ``frame_length`` -> ``unpack`` ->
  ``parse_request`` -> ``parse_feature_items``: nothing but ``ProtocolError``
  may escape, and whatever is accepted must respect every limit;
* :func:`check_exchange`: the same bytes, after a hello, written to a real
  :class:`photodupd.server.Server` (stub service) over its Unix socket, then
  end of input.  Everything the server writes back must be whole, well-formed
  frames, it must close the connection (no hang), and nothing may fail inside
  the server (its event loop's exception handler is watched).

``tests/fuzz/test_fuzz.py`` runs this for a few seconds in CI when atheris is
installed, and drives the same checks with hypothesis otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from photodupd import protocol, sockets  # noqa: E402
from photodupd.config import DaemonConfig  # noqa: E402
from photodupd.protocol import ProtocolError  # noqa: E402
from photodupd.server import Server  # noqa: E402
from tests.daemon.stub_service import StubService  # noqa: E402
from tests.fuzz import hostile_inputs  # noqa: E402
from tests.fuzz.rawclient import split_frames  # noqa: E402

#: A server that neither answers nor closes within this long is hung.
HANG_SECONDS = 10.0

HELLO = protocol.pack(protocol.request(0, "hello", **protocol.hello("fuzz")))


def seeds() -> list[bytes]:
    """Starting points: valid request frames, a pipelined stream and every hostile frame."""
    valid = [
        protocol.pack(protocol.request(1, "ping")),
        protocol.pack(protocol.request(2, "status")),
        protocol.pack(protocol.request(3, "models")),
        protocol.pack(protocol.request(4, "features", items=[{"path": "/x.jpg"}])),
        protocol.pack(protocol.request(5, "features", items=[{"data": b"\xff\xd8"}])),
        protocol.pack(protocol.request(6, "features", items=[{"path": b"/caf\xe9.jpg"}])),
        protocol.pack(protocol.request(7, "load", model="builtin")),
    ]
    hostile = [frame.payload[:4096] for frame in hostile_inputs.HOSTILE_FRAMES.values()]
    return [*valid, b"".join(valid), *hostile]


# ------------------------------------------------------------------------------ pure path


def check_frame_bytes(data: bytes) -> None:
    """Parse ``data`` as one frame the way the server does; only ProtocolError may escape."""
    try:
        length = protocol.frame_length(data[: protocol.HEADER.size])
    except ProtocolError:
        return
    assert 0 < length <= protocol.MAX_FRAME
    body = data[protocol.HEADER.size : protocol.HEADER.size + length]
    try:
        document = protocol.unpack(body)
        request = protocol.parse_request(document)
    except ProtocolError as exc:
        assert exc.message and isinstance(exc.code, protocol.ErrorCode)
        return
    assert isinstance(request.id, int) and 0 <= request.id < 2**63
    assert isinstance(request.op, str) and len(request.op) <= protocol.MAX_STR
    assert len(request.fields) < protocol.MAX_MAP_LEN
    # What was accepted can always be packed again, and says the same thing (compared as
    # bytes: a NaN in a document is never equal to itself).
    repacked = protocol.pack(document)
    assert protocol.pack(protocol.unpack(repacked[protocol.HEADER.size :])) == repacked
    if request.op == "features":
        try:
            items = protocol.parse_feature_items(request.fields)
        except ProtocolError:
            return
        assert 0 < len(items) <= protocol.MAX_ITEMS
        for item in items:
            if isinstance(item, protocol.ItemError):
                assert item.reply()["ok"] is False
                continue
            assert (item.path is None) != (item.data is None)
            if item.path is not None:
                raw = item.path if isinstance(item.path, bytes) else item.path.encode()
                assert raw and b"\0" not in raw
            else:
                assert item.data


# ------------------------------------------------------------------------------ live server


class LiveServer:
    """A real Server (stub service) on a private socket, on its own event-loop thread."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pdf-"))
        self.folder.chmod(0o700)
        self.path = self.folder / "rt" / "fuzz.sock"
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._record)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fuzz-server", daemon=True)
        self.config = DaemonConfig(socket=self.path, frame_timeout=5.0, idle_timeout=30.0)
        self.listener = sockets.bind_listener(self.path)
        self.server = Server(self.config, StubService())

    def _record(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.errors.append(str(context.get("exception") or context.get("message")))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.server.start(self.listener.sock))
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> LiveServer:
        self._thread.start()
        self._ready.wait(30)
        return self

    def close(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.shutdown(1.0), self._loop)
        with contextlib.suppress(Exception):
            future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.listener.close()


def check_exchange(server: LiveServer, data: bytes) -> None:
    """Write hello + ``data`` then end of input; the server must answer in whole frames,
    close, and report no internal error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(HANG_SECONDS)
        conn.connect(str(server.path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(HELLO + data)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        received = bytearray()
        while True:
            try:
                chunk = conn.recv(1 << 16)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"server hung on {data[:64]!r}") from None
            if not chunk:
                break
            received += chunk
    documents = split_frames(bytes(received))
    assert documents and documents[0]["ok"] is True  # the hello
    for document in documents[1:]:
        if document.get("op") == "progress":
            continue
        assert isinstance(document["ok"], bool)
        if not document["ok"]:
            protocol.ErrorCode(document["error"]["code"])  # a code the protocol knows
    if server.errors:
        raise AssertionError(f"server-side failure on {data[:64]!r}: {server.errors}")


# ------------------------------------------------------------------------------ atheris


def _seed_corpus(argv: list[str]) -> None:
    for argument in argv[1:]:
        folder = Path(argument)
        if argument.startswith("-") or not folder.is_dir() or any(folder.iterdir()):
            continue
        for number, seed in enumerate(seeds()):
            (folder / f"seed-{number:03d}").write_bytes(seed)


def main(argv: list[str]) -> None:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    import photodupd.server
    from tests.fuzz.instrument import instrument_modules

    instrument_modules(atheris, [protocol, photodupd.server])
    _seed_corpus(argv)
    server = LiveServer().start()

    def one_input(data: bytes) -> None:
        check_frame_bytes(data)
        check_exchange(server, data)

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
