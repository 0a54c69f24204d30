"""Socket activation as systemd does it, in miniature, for tests of photodupd's idle exit.

:class:`SocketActivator` holds a listening socket the way ``photodupd.socket`` does: it
starts photodupd with that socket as fd 3 (``LISTEN_PID``/``LISTEN_FDS``) whenever a
connection is waiting and no instance is running, and keeps the socket (and whatever is
queued on it) while an instance exits.  A real systemd is not available here.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.daemon.daemon_proc import ROOT, daemon_env

#: exec keeps the pid, so LISTEN_PID can name the daemon itself, as systemd does.
_EXEC = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)

DAEMON = ["-m", "photodupd.daemon_cli"]


class SocketActivator:
    """Start ``python PROGRAM ARGS`` (photodupd by default) on demand with the held socket."""

    def __init__(
        self, path: Path, state: Path, *args: str, program: list[str] | None = None
    ) -> None:
        self.path = path
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.command = [*(program or DAEMON), "--threads", "2", "--decode-workers", "2", *args]
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.instances: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="activator", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.listener.fileno(), select.POLLIN)
        while not self._stop.is_set():
            with self._lock:
                running = self.instances and self.instances[-1].poll() is None
            if running:
                self._stop.wait(0.02)  # like systemd, watch the socket only while none runs
                continue
            if poller.poll(20):  # a connection is waiting: start an instance
                self._spawn()

    def _spawn(self) -> None:
        log = self.state / f"photodupd-{len(self.logs)}-{time.monotonic_ns()}.log"
        with log.open("wb") as sink, self._lock:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _EXEC,
                    str(self.listener.fileno()),
                    *self.command,
                    # Never bound: the instance must serve the inherited socket.
                    "--socket",
                    str(self.state / "unused" / "x.sock"),
                ],
                pass_fds=[self.listener.fileno()],
                env=daemon_env(self.state),
                cwd=ROOT,
                stdout=sink,
                stderr=sink,
            )
            self.instances.append(process)
            self.logs.append(log)

    def started(self) -> int:
        with self._lock:
            return len(self.instances)

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for process in self.instances:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.listener.close()
