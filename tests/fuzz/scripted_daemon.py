"""The production photodupd with scripted decoder faults, for hostile tests and the load bench.

It is ``photodupd.daemon_cli.main`` unchanged (flags, config file, socket
safety, signals, the built-in model), except that the decoder pool's
``decode_fn`` (its documented injection point) is
``tests.daemon.faulty_decoders:scripted``: the real decoder for every item but
a few data items that hang or crash the worker on command (``b"hang"``,
``b"segv"``, ``b"exit"``, ``b"raise"``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.daemon.daemon_proc import ROOT, DaemonProcess, daemon_env

SCRIPTED_DECODER = "tests.daemon.faulty_decoders:scripted"

#: InferenceService imports DecoderPool from its module when it starts, so replacing
#: the module attribute before main() is the constructor injection, done from outside.
LAUNCHER = f"""
import sys
from photodupd import daemon_cli, decodepool

class ScriptedDecoderPool(decodepool.DecoderPool):
    def __init__(self, workers, timeout, memory_mb, decode_fn=None):
        super().__init__(workers, timeout, memory_mb, decode_fn={SCRIPTED_DECODER!r})

decodepool.DecoderPool = ScriptedDecoderPool
sys.exit(daemon_cli.main(sys.argv[1:]))
"""


def config_text(values: dict[str, Any]) -> str:
    """A ``[daemon]`` table (numbers only, which is all the tests set)."""
    lines = ["[daemon]"]
    lines += [f"{key} = {value!r}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


class ScriptedDaemon(DaemonProcess):
    """Started through LAUNCHER with ``config`` as its config file; readiness, logs and
    shutdown as in :class:`DaemonProcess`."""

    def __init__(
        self,
        socket_path: Path,
        state: Path,
        config: dict[str, Any],
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        state.mkdir(parents=True, exist_ok=True)
        config_file = state / "config.toml"
        config_file.write_text(config_text(config))
        self.socket_path = socket_path
        self.log = state / f"photodupd-{time.monotonic_ns()}.log"
        self.args = [
            sys.executable,
            "-c",
            LAUNCHER,
            "--config",
            str(config_file),
            "--socket",
            str(socket_path),
            "--model",
            "builtin",
            *args,
        ]
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                self.args, env=env or daemon_env(state), stdout=sink, stderr=sink, cwd=ROOT
            )
