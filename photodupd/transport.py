"""How a client reaches photodupd: one byte stream carrying protocol v1, whatever carries it.

An :class:`Endpoint` opens a :class:`Link`, a connected stream socket the clients in
:mod:`photodupd.client` speak the protocol over, the same way for every endpoint:

* :class:`UnixEndpoint`: the local daemon's Unix socket;
* :class:`CommandEndpoint`: a program whose stdin and stdout carry the protocol, e.g.
  ``ssh HOST photodup-ctl bridge`` (a remote daemon, :mod:`photodupd.remote`) or a private
  photodupd child of this process (``inline``, :func:`inline_endpoint`).  The program gets
  one end of a socket pair as both stdin and stdout, so the client holds an ordinary
  socket (timeouts, asyncio) and no socket file or runtime directory is involved.  Its
  stderr is kept (the last few KB) for the one-line reason it failed, which the endpoint's
  ``explain`` writes (ssh's words become "host unreachable", "login refused", ...).

Torch-free: the UI and ``photodup-ctl`` import this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from photodupd import paths

#: Most of a program's stderr kept for its error message.
STDERR_TAIL = 8 * 1024
#: How long a closed program gets to exit on its own before it is terminated, then killed.
EXIT_GRACE = 2.0


class LinkFailed(ConnectionError):
    """The endpoint cannot be reached; ``str()`` is the one-line reason.

    ``permanent``: trying again soon cannot help (no ssh, login refused, photodup not
    installed there, another protocol version); a dropped network may come back.  An
    OSError, so code that handles "nobody answers" on the Unix socket handles this too."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Ended:
    """How a command behind a link ended (or did not, yet)."""

    returncode: int | None  # None: still running
    stderr: str
    #: The first bytes the program wrote where a frame header was due, when they were not
    #: one (a login script that prints, a program that is not photodup).
    garbage: bytes | None = None
    missing_program: bool = False  # the program itself was not found

    def last_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


#: Turns how a command ended into the error the user reads.
Explain = Callable[[Ended], LinkFailed]


class Link:
    """One connection: a connected stream socket, closed with :meth:`close`."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def failure(self, garbage: bytes | None = None) -> LinkFailed | None:
        """Why the far side went away, when the link knows better than the socket did
        (a command's exit status and stderr); None when it does not."""
        return None


class Endpoint(Protocol):
    """Something a client connects to."""

    @property
    def label(self) -> str:
        """Where it is, for messages: "photodupd at PATH", "photodupd on HOST" ..."""

    @property
    def hello_timeout(self) -> float | None:
        """How long the first answer may take (None: the client's own timeout)."""

    def open(self, timeout: float | None) -> Link:
        """A new connection; raises OSError (or LinkFailed) when there is nobody to connect to."""


class UnixEndpoint:
    """The local daemon's socket."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else paths.default_socket_path()

    @property
    def label(self) -> str:
        return f"photodupd at {self.path}"

    @property
    def hello_timeout(self) -> float | None:
        return None

    def open(self, timeout: float | None) -> Link:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(self.path))
        except BaseException:
            sock.close()
            raise
        return Link(sock)


class CommandLink(Link):
    """A link to a program: its stdin and stdout are the other end of :attr:`sock`."""

    def __init__(
        self, sock: socket.socket, process: subprocess.Popen[bytes], explain: Explain
    ) -> None:
        super().__init__(sock)
        self.process = process
        self._explain = explain
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._lock = threading.Lock()
        self._drained = threading.Event()
        threading.Thread(target=self._drain, name="photodup-link-stderr", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        """Keep the last STDERR_TAIL bytes of the program's stderr (bounded, and the program
        never blocks on a full pipe)."""
        stream = self.process.stderr
        try:
            while stream is not None:
                chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
                if not chunk:
                    return
                with self._lock:
                    self._stderr.append(chunk)
                    self._stderr_size += len(chunk)
                    while self._stderr_size - len(self._stderr[0]) >= STDERR_TAIL:
                        self._stderr_size -= len(self._stderr.popleft())
        except (OSError, ValueError):
            return
        finally:
            self._drained.set()

    def stderr_text(self) -> str:
        with self._lock:
            data = b"".join(self._stderr)[-STDERR_TAIL:]
        return data.decode("utf-8", "replace")

    def ended(self, timeout: float = EXIT_GRACE, garbage: bytes | None = None) -> Ended:
        """Wait up to ``timeout`` for the program to exit and its stderr to be read."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        if self.process.returncode is not None:
            self._drained.wait(timeout)
        return Ended(self.process.returncode, self.stderr_text(), garbage)

    def failure(self, garbage: bytes | None = None) -> LinkFailed:
        return self._explain(self.ended(garbage=garbage))

    def close(self) -> None:
        """EOF to the program (it exits when its stdin ends), then terminate and kill if it
        lingers; always reaped."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        super().close()
        try:
            self.process.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(self.process, signal.SIGTERM)
            try:
                self.process.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(self.process, signal.SIGKILL)
                self.process.wait()
        if self.process.stderr is not None:
            self._drained.wait(EXIT_GRACE)
            with contextlib.suppress(OSError):
                self.process.stderr.close()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """The program was started in a group of its own: signal it and its children (an ssh's
    ProxyCommand, an inline child's decoders)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


class CommandEndpoint:
    """A program that speaks the protocol on its stdin and stdout, started per connection."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        label: str,
        explain: Explain,
        env: dict[str, str] | None = None,
        hello_timeout: float = 90.0,
    ) -> None:
        if not argv:
            raise ValueError("empty command")
        self.argv = list(argv)
        self._label = label
        self.explain = explain
        self.env = env
        self._hello_timeout = hello_timeout

    @property
    def label(self) -> str:
        return self._label

    @property
    def hello_timeout(self) -> float | None:
        """An ssh login, and a daemon started there, or a child importing torch."""
        return self._hello_timeout

    def open(self, timeout: float | None) -> CommandLink:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                self.argv,
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                stderr=subprocess.PIPE,
                env=self.env,
                close_fds=True,
                # Its own group: a Ctrl-C meant for the scan does not kill the link under
                # it (the scan decides), and close() can end its children too.
                start_new_session=True,
            )
        except FileNotFoundError:
            ours.close()
            raise self.explain(Ended(None, "", missing_program=True)) from None
        except OSError as exc:
            ours.close()
            raise LinkFailed(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        ours.settimeout(timeout)
        return CommandLink(ours, process, self.explain)


# ------------------------------------------------------------------------------ inline


def inline_endpoint(model: str = "auto", config_file: Path | None = None) -> CommandEndpoint:
    """A private photodupd for one scan (``mode = inline``): a child process that serves this
    one connection on its stdin/stdout and exits when it closes.  Same code as the daemon
    (:mod:`photodupd.inline`), so the same answers; no socket file, no runtime directory;
    torch is imported in the child only, so a model crash cannot take the UI down."""
    argv = [sys.executable, "-m", "photodupd.inline"]
    if model != "auto":
        argv += ["--model", model]
    if config_file is not None:
        argv += ["--config", os.fspath(config_file)]

    def explain(ended: Ended) -> LinkFailed:
        line = ended.last_line()
        if ended.missing_program:
            return LinkFailed(f"cannot run {sys.executable}", permanent=True)
        if ended.returncode is None:
            return LinkFailed(
                f"the inline model process stopped answering{': ' + line if line else ''}"
            )
        return LinkFailed(
            f"the inline model process exited with status {ended.returncode}"
            f"{': ' + line if line else ''}"
        )

    return CommandEndpoint(argv, label="photodupd inline (a private child)", explain=explain)
