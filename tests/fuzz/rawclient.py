"""A blocking client that writes whatever bytes it is given: the attacker's side of the socket.

The product's clients only ever send well-formed frames; attacks need a client
that does not.  Replies are still read with the protocol's own frame reader.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Any

from photodupd import protocol


class RawConnection:
    def __init__(self, path: Path | str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(os.fspath(path))
        except BaseException:
            self.sock.close()
            raise
        self._ids = 1000

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def reset(self) -> None:
        """Vanish abruptly: close with nothing flushed."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        self.close()

    def send(self, data: bytes) -> bool:
        """Write ``data``; False when the daemon had already closed its end."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def send_doc(self, document: dict[str, Any]) -> None:
        self.sock.sendall(protocol.pack(document))

    def recv_exactly(self, count: int) -> bytes:
        data = bytearray()
        while len(data) < count:
            chunk = self.sock.recv(min(count - len(data), 1 << 20))
            if not chunk:
                raise EOFError(f"closed after {len(data)} of {count} bytes")
            data += chunk
        return bytes(data)

    def read_doc(self) -> dict[str, Any]:
        length = protocol.frame_length(self.recv_exactly(protocol.HEADER.size))
        return protocol.unpack(self.recv_exactly(length))

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one well-formed request and return its (final) reply document."""
        request_id = self.next_id()
        self.send_doc(protocol.request(request_id, op, **fields))
        while True:
            reply = self.read_doc()
            if reply.get("id") == request_id and reply.get("op") != "progress":
                return reply

    def hello(self) -> dict[str, Any]:
        reply = self.request("hello", **protocol.hello("hostile-test"))
        assert reply["ok"] is True, reply
        return reply

    def ping(self) -> bool:
        reply = self.request("ping")
        return reply.get("ok") is True and reply["result"]["pong"] is True

    def closed_by_peer(self) -> bool:
        """True when the daemon has closed this connection (EOF or reset, nothing pending)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except OSError as exc:  # pragma: no cover - depends on the platform
            return exc.errno in (errno.ECONNRESET, errno.EPIPE)

    def read_until_closed(self) -> bytes:
        """Everything the daemon sends until it closes the connection."""
        data = bytearray()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)


def split_frames(data: bytes) -> list[dict[str, Any]]:
    """The documents in a byte stream the daemon wrote; raises if it is not whole frames."""
    documents = []
    offset = 0
    while offset < len(data):
        length = protocol.frame_length(data[offset : offset + protocol.HEADER.size])
        body = data[offset + protocol.HEADER.size : offset + protocol.HEADER.size + length]
        if len(body) != length:
            raise ValueError(f"a reply frame was cut: {len(body)} of {length} bytes")
        documents.append(protocol.unpack(body))
        offset += protocol.HEADER.size + length
    return documents
