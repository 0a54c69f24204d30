"""A real OpenSSH server on 127.0.0.1 for remote-mode tests and the remote benchmark.

Debian's ``openssh-server`` (``/usr/sbin/sshd``), started in the foreground with a
throwaway host key, one authorized key and a free port, all in a temporary directory; the
client side is a ``ssh_command`` line with that port, key and known-hosts file.  The
"remote" photodupd runs as the same user with runtime, state and config directories of its
own (``remote_command`` sets them with ``env``), so it really is a second daemon.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
#: CI sets this: an sshd that cannot start is then a failure, not a skip.
REQUIRE_ENV = "PHOTODUP_REQUIRE_SSHD"


class SshdUnavailable(Exception):
    """sshd is not installed here, or would not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@dataclass
class Sshd:
    """A running sshd and what a client needs to log in to it."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]
    client_key: Path
    known_hosts: Path

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def ssh_command(self, *, port: int | None = None, key: Path | None = None) -> str:
        """The ``[daemon] ssh_command`` that logs in here (``port``/``key``: other ones)."""
        words = [
            "ssh",
            "-p",
            str(port or self.port),
            "-i",
            str(key or self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "LogLevel=ERROR",
        ]
        return shlex.join(words)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_sshd(timeout: float = 20.0) -> Sshd:
    """An sshd on a free port of 127.0.0.1, answering once it is ready (a real SSH banner,
    never a sleep).  Raises SshdUnavailable when it cannot run here."""
    if (
        not os.path.exists(SSHD)
        or shutil.which("ssh") is None
        or shutil.which("ssh-keygen") is None
    ):
        raise SshdUnavailable(
            f"{SSHD}, ssh or ssh-keygen is missing (apt-get install openssh-server)"
        )
    directory = Path(tempfile.mkdtemp(prefix="pd-sshd-"))
    host_key, client_key = directory / "host_key", directory / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = directory / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {directory / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "PermitUserEnvironment no",
                "PrintMotd no",
                "LogLevel ERROR",
                "MaxStartups 100:30:200",
                "MaxSessions 100",
                "",
            ]
        )
    )
    if os.getuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
    )
    log.close()
    server = Sshd(directory, port, process, client_key, directory / "known_hosts")
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            output = (directory / "sshd.log").read_text(errors="replace")
            server.stop()
            raise SshdUnavailable(f"sshd exited {process.returncode}: {output.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as probe:
                probe.settimeout(2.0)
                if probe.recv(4) == b"SSH-":
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise SshdUnavailable(f"sshd did not answer on port {port} within {timeout:.0f} s")
        time.sleep(0.02)


@dataclass
class RemoteSide:
    """The "other computer": its own photodup directories, reached through ``command``."""

    home: Path

    @property
    def runtime(self) -> Path:
        return self.home / "rt"

    def env(self) -> dict[str, str]:
        return {
            "PYTHONPATH": str(ROOT),
            "PHOTODUP_RUNTIME_DIR": str(self.runtime),
            "PHOTODUP_CONFIG_DIR": str(self.home / "config"),
            "PHOTODUP_CACHE_DIR": str(self.home / "cache"),
            "PHOTODUP_STATE_DIR": str(self.home / "state"),
            "XDG_RUNTIME_DIR": str(self.home / "xdg"),
        }

    def command(self, program: str = "-m photodup_tui.ctl bridge") -> str:
        """``remote_command``: this Python, this source tree, these directories."""
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env().items())
        return f"env {assignments} {shlex.quote(sys.executable)} {program}"

    def configure(self, daemon: str) -> None:
        """The remote user's config.toml ``[daemon]`` table."""
        folder = self.home / "config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.toml").write_text(f"[daemon]\n{daemon}\n")

    @property
    def socket(self) -> Path:
        return self.runtime / "photodupd.sock"


def make_remote_side() -> RemoteSide:
    home = Path(tempfile.mkdtemp(prefix="pd-remote-"))
    home.chmod(0o700)
    return RemoteSide(home)
