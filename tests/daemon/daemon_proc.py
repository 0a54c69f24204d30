"""Run photodupd as a real subprocess for end-to-end tests, with readiness by hello."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from photodupd.client import ConnectionLost, SyncClient

ROOT = Path(__file__).resolve().parents[2]


def daemon_env(state: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PHOTODUP_CONFIG_DIR=str(state / "config"),
        PHOTODUP_CACHE_DIR=str(state / "cache"),
        PHOTODUP_STATE_DIR=str(state / "state"),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.pop("NOTIFY_SOCKET", None)
    return env


class DaemonProcess:
    def __init__(
        self, socket_path: Path, state: Path, *args: str, env: dict[str, str] | None = None
    ) -> None:
        self.socket_path = socket_path
        self.log = state / f"photodupd-{time.monotonic_ns()}.log"
        state.mkdir(parents=True, exist_ok=True)
        self.args = [
            sys.executable,
            "-m",
            "photodupd.daemon_cli",
            "--socket",
            str(socket_path),
            "--threads",
            "2",
            "--decode-workers",
            "2",
            *args,
        ]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                self.args, env=env or daemon_env(state), stdout=sink, stderr=sink, cwd=ROOT
            )

    def wait_hello(self, timeout: float = 60.0) -> dict:
        """Readiness is a real hello (the socket answers), retried until the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"photodupd exited {self.proc.returncode}: {self.output()}")
            try:
                with SyncClient(self.socket_path, timeout=5) as client:
                    return client.connect()
            except (OSError, ConnectionLost):
                time.sleep(0.05)
        raise TimeoutError(f"photodupd did not answer: {self.output()}")

    def wait_state(self, wanted: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        with SyncClient(self.socket_path, timeout=5) as client:
            client.connect()
            while time.monotonic() < deadline:
                status = client.request("status")
                if status["state"] == wanted:
                    return dict(status)
                if status["state"] == "failed" and wanted != "failed":
                    raise RuntimeError(f"model failed: {status.get('last_error')}")
                time.sleep(0.05)
        raise TimeoutError(f"state never became {wanted}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 40.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
