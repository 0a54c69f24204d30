"""A real Ray cluster started apart from the test process, as a user starts one
(``ray start --head``), and stopped by killing exactly what it started.

Private in every way that matters on a shared machine: its own ``--temp-dir`` (short: Ray's
Unix socket paths must stay under 107 bytes), free ports, its own token file for Ray's token
authentication (never ``~/.ray``), and its own session so that teardown ends only its
processes (``ray stop`` would end every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

#: How long the head may take to answer (Ray's own start takes a few seconds).
READY_WITHIN = 90.0
#: How long its processes get to end on SIGTERM before they are killed.
STOP_GRACE = 1.0


def free_port() -> int:
    """A TCP port nothing listens on now (Ray binds the node's address, not only loopback)."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


@dataclass
class RayHead:
    """``ray start --head`` in a session of its own; :meth:`stop` ends all it started."""

    temp_dir: Path
    gcs_port: int
    client_port: int
    env: dict[str, str]
    session_id: int = 0
    node_ip: str = ""
    _starter: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, cpus: int = 2) -> RayHead:
        """``ray start --head`` launched; :meth:`wait_ready` waits until it answers (other
        work, such as a baseline scan, can run meanwhile)."""
        temp_dir = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
        token = temp_dir / "token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        env = dict(os.environ)
        # Ray 2.60 turns token authentication on for a new cluster, with ~/.ray/auth_token
        # (made if missing): the test's cluster has a token of its own instead.
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
        env.pop("RAY_AUTH_TOKEN", None)
        env.pop("RAY_ADDRESS", None)
        # The Ray Client server starts a Python process per client and gives it 30 s to
        # answer; on this shared 2-core machine under load that start alone can take longer.
        env["RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"] = "120"
        head = cls(temp_dir / "r", free_port(), free_port(), env)
        head._launch(cpus)
        return head

    def _launch(self, cpus: int) -> None:
        command = [  # the `ray` console script, run by this interpreter
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-port={free_port()}",
            f"--num-cpus={cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]
        with (self.temp_dir.parent / "start.log").open("wb") as sink:
            self._starter = subprocess.Popen(
                command, env=self.env, stdout=sink, stderr=sink, start_new_session=True
            )
        # Its session: every process Ray starts for this head.
        self.session_id = self._starter.pid

    def wait_ready(self) -> None:
        """Until ``ray start`` is done and the Ray Client server accepts connections.

        Ray resolves 127.0.0.1 to the machine's own address and binds there, so the address
        is read from what ``ray start`` launched."""
        assert self._starter is not None
        log = self.temp_dir.parent / "start.log"
        if self._starter.wait(READY_WITHIN) != 0:
            raise RuntimeError(f"ray start failed: {log.read_text(errors='replace')}")
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            host = self._client_server_host()
            if host:
                with socket.socket() as probe:
                    probe.settimeout(1.0)
                    if probe.connect_ex((host, self.client_port)) == 0:
                        self.node_ip = host
                        return
            time.sleep(0.1)
        raise TimeoutError(f"the Ray head at port {self.gcs_port} never answered")

    def _client_server_host(self) -> str:
        for proc in self.processes():
            try:
                args = proc.cmdline()
            except psutil.Error:
                continue
            if "ray.util.client.server" in args:
                for arg in args:
                    if arg.startswith("--host="):
                        return arg.split("=", 1)[1]
        return ""

    @property
    def auth_env(self) -> dict[str, str]:
        """What a driver needs in its environment to be let in (the head's token)."""
        return {name: self.env[name] for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}

    @property
    def gcs_address(self) -> str:
        return f"{self.node_ip}:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        return f"ray://{self.node_ip}:{self.client_port}"

    def client_server_log(self, tail: int = 4000) -> str:
        """The end of the Ray Client server's logs (why a ray:// driver was turned away)."""
        out = []
        for log in sorted(self.temp_dir.glob("session_*/logs/ray_client_server*")):
            out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def processes(self) -> list[psutil.Process]:
        """This head's live processes: those of its session, and any that name its temp dir.

        Its dead ones are reaped on the way when they are this process's children: a Ray
        started in this process (test_ray.py's, earlier in the run) makes it the subreaper
        of orphans, and ``ray start`` leaves its head's processes orphaned."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status", "ppid"]):
            try:
                mine = os.getsid(proc.pid) == self.session_id or any(
                    str(self.temp_dir) in arg for arg in proc.info["cmdline"] or ()
                )
            except (OSError, psutil.Error):
                continue
            if not mine or proc.pid == os.getpid():
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                if proc.info["ppid"] == os.getpid():
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(proc.pid, os.WNOHANG)
                continue
            found.append(proc)
        return found

    def stop(self) -> None:
        """SIGTERM to all its processes, SIGKILL to what is left after a grace."""
        if self._starter is not None and self._starter.poll() is None:
            self._starter.kill()  # still starting: it goes too
            self._starter.wait()
        procs = self.processes()
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=STOP_GRACE)
