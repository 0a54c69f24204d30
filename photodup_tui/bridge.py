"""``photodup-ctl bridge``: protocol v1 on stdin/stdout, relayed to this user's photodupd.

What a remote scan runs on the computer with the model (``ssh HOST photodup-ctl bridge``,
:mod:`photodupd.remote`).  It starts the daemon the way photodup does when nobody answers
(the user's systemd socket unit when it is installed, else a detached photodupd), connects
to its socket as any local client would, and copies frames both ways until either side
closes.  The daemon sees an ordinary client of its own user: every limit it has applies.

Frames are relayed whole and checked: each 4-byte length is validated
(:func:`photodupd.protocol.frame_length`: not zero, not over MAX_FRAME) before its body is
copied, in pieces of at most :data:`CHUNK` bytes, so nothing is ever buffered beyond one
piece whatever either side sends.  A bad length from the client ends the bridge (the
daemon would close such a connection too); nothing but frames is ever written to stdout.

Errors go to stderr as one line starting with ``photodup-ctl bridge:``, which the client
shows as the reason (``photodupd on HOST: ...``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

from photodup_tui.engine.daemon_launch import ensure_daemon
from photodup_tui.formatting import short_reason
from photodupd import paths, protocol
from photodupd.protocol import ProtocolError
from photodupd.remote import BRIDGE_PREFIX

#: Largest piece of a frame copied at once.
CHUNK: Final = 1 << 20

EXIT_OK = 0
EXIT_FAILED = 1


def say(message: str) -> None:
    """One line on stderr for the client to show (never stdout: that carries frames)."""
    print(f"{BRIDGE_PREFIX}{' '.join(message.split())}", file=sys.stderr, flush=True)


def run(
    socket_path: Path | None = None, *, start: bool = True, stdin: int = 0, stdout: int = 1
) -> int:
    """Relay ``stdin``/``stdout`` (fds) to the daemon at ``socket_path`` (default: this
    user's), starting it first when ``start``.  Returns the exit status."""
    path = socket_path or paths.default_socket_path()
    if start:
        try:
            ensure_daemon(socket_path)
        except Exception as exc:  # DaemonStartFailed (with its log's words), an unsafe dir ...
            say(f"photodupd did not start there: {short_reason(exc)}")
            return EXIT_FAILED
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.fspath(path))
    except OSError as exc:
        sock.close()
        if start:
            say(f"cannot connect to photodupd at {path}: {exc.strerror or exc}")
        else:
            say(f"photodupd is not running there (nothing answers at {path})")
        return EXIT_FAILED
    with sock:
        return relay(sock, stdin, stdout)


def relay(sock: socket.socket, stdin: int, stdout: int) -> int:
    """Copy frames stdin -> ``sock`` and ``sock`` -> stdout until one side ends."""
    done = threading.Event()
    failures: list[str] = []

    def pump(read: Read, write: Write, who: str) -> None:
        try:
            while _copy_frame(read, write):
                pass
        except ProtocolError as exc:
            failures.append(f"bad frame from the {who}: {exc.message}")
        except OSError:
            pass  # a side went away: the other ends with it
        finally:
            done.set()

    up = threading.Thread(
        target=pump, args=(_fd_reader(stdin), _socket_writer(sock), "client"), daemon=True
    )
    down = threading.Thread(
        target=pump, args=(_socket_reader(sock), _fd_writer(stdout), "daemon"), daemon=True
    )
    up.start()
    down.start()
    done.wait()
    # Whichever side ended, the other is told: the daemon sees its client leave (and drops
    # that client's requests), the client sees EOF on our stdout when we exit.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    down.join(5.0)
    for failure in failures:
        say(failure)
    return EXIT_FAILED if failures else EXIT_OK


#: Reads up to n bytes (b"" at the end of the stream); writes all of them.
Read = Callable[[int], bytes]
Write = Callable[[bytes], None]


def _fd_reader(fd: int) -> Read:
    return lambda n: os.read(fd, n)


def _socket_reader(sock: socket.socket) -> Read:
    return sock.recv


def _fd_writer(fd: int) -> Write:
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    return write


def _socket_writer(sock: socket.socket) -> Write:
    return sock.sendall


def _read_exactly(read: Read, n: int, *, at_start: bool = False) -> bytes | None:
    """``n`` bytes; None on a clean EOF before the first byte when ``at_start``."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = read(n - len(chunks))
        if not chunk:
            if at_start and not chunks:
                return None
            raise ConnectionResetError("the stream ended inside a frame")
        chunks += chunk
    return bytes(chunks)


def _copy_frame(read: Read, write: Write) -> bool:
    """Copy one frame; False at a clean end of the stream."""
    header = _read_exactly(read, protocol.HEADER.size, at_start=True)
    if header is None:
        return False
    length = protocol.frame_length(header)  # ProtocolError: zero, or over MAX_FRAME
    write(header)
    left = length
    while left:
        piece = _read_exactly(read, min(left, CHUNK))
        assert piece is not None
        write(piece)
        left -= len(piece)
    return True
