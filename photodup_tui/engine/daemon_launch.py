"""Finding photodupd, or starting it when nobody answers, and waiting for its hello."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from photodupd import paths, protocol
from photodupd.client import ConnectionLost, SyncClient
from photodupd.protocol import ModelState

Report = Callable[[str], None]
SYSTEMD_LOG_HINT = "its log: journalctl --user -u photodupd"


class DaemonStartFailed(Exception):
    """photodupd could not be reached or started; the message says why (with its log)."""


def _hello(socket_path: Path | None) -> protocol.Welcome | None:
    try:
        with SyncClient(socket_path, timeout=5, client_name="photodup-launcher") as client:
            return client.connect()
    except (OSError, ConnectionLost):
        return None


def daemon_decodes_raw(socket_path: Path | None = None) -> bool:
    """Whether the daemon's decoders read RAW files, as its welcome says (False when it does
    not say: an older photodupd, or one that went away)."""
    welcome = _hello(socket_path)
    return bool(welcome.get("decodes_raw", False)) if welcome is not None else False


def log_file() -> Path:
    return paths.state_dir() / "photodupd.log"


def _start_with_systemd() -> bool:
    """Start the user socket unit when it is installed; systemd then starts the daemon."""
    if shutil.which("systemctl") is None:
        return False
    probe = subprocess.run(
        ["systemctl", "--user", "cat", "photodupd.socket"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return False
    started = subprocess.run(
        ["systemctl", "--user", "start", "photodupd.socket"], capture_output=True, check=False
    )
    return started.returncode == 0


def _spawn_detached(socket_path: Path, extra_args: list[str]) -> subprocess.Popen[bytes]:
    log = log_file()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "photodupd.daemon_cli",
                "--socket",
                os.fspath(socket_path),
                # Rotated by the daemon (10 MiB x 3); stderr still goes to the same file for
                # what comes before logging starts (a bad flag, an import error).
                "--log-file",
                os.fspath(log),
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,  # survives the UI's exit and its Ctrl-C
            close_fds=True,
        )


#: The most of the log a failed start quotes from (a crash loop can write a lot).
TAIL_BYTES = 64 * 1024


def _log_size() -> int:
    try:
        return log_file().stat().st_size
    except OSError:
        return 0


def _log_tail(since: int = 0, lines: int = 8) -> str:
    """The last ``lines`` lines the log got from byte ``since`` on: what this launch wrote,
    never an earlier run's lines (the log is appended to by every start).  A log that
    shrank meanwhile (rotated, truncated) is read from its start."""
    with contextlib.suppress(OSError), log_file().open("rb") as log:
        size = log.seek(0, os.SEEK_END)
        start = since if since <= size else 0
        log.seek(max(start, size - TAIL_BYTES))
        text = log.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])
    return ""


def ensure_daemon(
    socket_path: Path | None = None,
    *,
    report: Report | None = None,
    timeout: float = 60.0,
    extra_args: list[str] | None = None,
    use_systemd: bool = True,
) -> protocol.Welcome:
    """Return the daemon's welcome, starting photodupd first if nobody answers.

    Readiness is a real hello, retried with capped backoff: never a fixed sleep.
    """
    path = socket_path or paths.default_socket_path()
    say = report or (lambda _message: None)
    welcome = _hello(path)
    if welcome is not None:
        return welcome
    process: subprocess.Popen[bytes] | None = None
    log_start = _log_size()  # what is in the log already belongs to earlier runs
    if use_systemd and socket_path is None and _start_with_systemd():
        say("starting photodupd through systemd")
    else:
        say("starting photodupd")
        process = _spawn_detached(path, extra_args or [])
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        welcome = _hello(path)
        if welcome is not None:
            return welcome
        if process is not None and process.poll() is not None:
            # It exited: another daemon may have won a race (then hello works next
            # round), or it failed, and its log says why.
            welcome = _hello(path)
            if welcome is not None:
                return welcome
            raise DaemonStartFailed(
                f"photodupd exited with status {process.returncode}.\n"
                f"{_log_tail(log_start)}".strip()
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    where = _log_tail(log_start) if process is not None else SYSTEMD_LOG_HINT
    raise DaemonStartFailed(f"photodupd did not answer within {timeout:.0f} s.\n{where}".strip())


def wait_for_model(
    socket_path: Path | None = None,
    *,
    report: Report | None = None,
    timeout: float = 600.0,
) -> protocol.ActiveModel:
    """Poll ``status`` until the model is ready; returns the model it serves."""
    say = report or (lambda _message: None)
    deadline = time.monotonic() + timeout
    last_state = None
    with SyncClient(socket_path, timeout=10, client_name="photodup-launcher") as client:
        client.connect()
        while True:
            status = client.call(protocol.STATUS)
            state = status.get("state")
            model_id = status.get("model")
            if state != last_state:
                say(f"model {model_id or '(choosing)'}: {state}")
                last_state = state
            if state in (ModelState.READY, ModelState.UNLOADED) and model_id:
                # "unloaded" reloads on the first request; its id is already known.
                return {
                    "id": model_id,
                    "dim": status.get("dim"),
                    "name": status.get("model_name"),
                    "device": status.get("device"),
                    "why": status.get("why") or "",
                    "state": str(state),
                }
            if state == ModelState.FAILED:
                raise DaemonStartFailed(
                    f"photodupd could not load its model: {status.get('last_error')}"
                )
            if time.monotonic() > deadline:
                raise DaemonStartFailed(f"the model did not load within {timeout:.0f} s")
            time.sleep(0.1)
